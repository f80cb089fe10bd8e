"""The OpenSSH client driven against test hosts (independent of the product's own SSH code), with the
host key pinned from the test bed and passwords supplied through SSH_ASKPASS."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from .common import BASE, write_private
from .lab import TestHost

_ASKPASS = '#!/bin/sh\nprintf "%s\\n" "$TB_SSH_PASSWORD"\n'


def _askpass() -> Path:
    p = BASE / "askpass.sh"
    if not p.is_file() or p.read_text() != _ASKPASS:
        write_private(p, _ASKPASS, 0o700)
    return p


def ssh_argv(
    h: TestHost,
    known_hosts: Path,
    *,
    user: str = "root",
    password: str | None = None,
    connect_timeout: float = 5,
) -> list[str]:
    argv = [
        "ssh",
        "-F",
        "/dev/null",
        "-p",
        str(h.port),
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        f"ConnectTimeout={int(connect_timeout)}",
        "-o",
        "LogLevel=ERROR",
    ]
    if password is None:
        argv += [
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "PreferredAuthentications=publickey",
            "-i",
            str(h.root_key),
        ]
    else:
        argv += [
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
        ]
    return [*argv, f"{user}@{h.ip}"]


def ssh(
    h: TestHost,
    cmd: str,
    *,
    user: str = "root",
    password: str | None = None,
    input: str | None = None,
    timeout: float = 30,
    connect_timeout: float = 5,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` on the host with OpenSSH as `user` (root: the lab key; otherwise `password`)."""
    with tempfile.NamedTemporaryFile("w", prefix="tb-known-", suffix=".hosts") as kh:
        kh.write(h.known_hosts_line + "\n")
        kh.flush()
        env = dict(os.environ)
        if password is not None:
            env.update(
                SSH_ASKPASS=str(_askpass()),
                SSH_ASKPASS_REQUIRE="force",
                TB_SSH_PASSWORD=password,
                DISPLAY=env.get("DISPLAY", ":0"),
            )
        argv = ssh_argv(h, Path(kh.name), user=user, password=password, connect_timeout=connect_timeout)
        return subprocess.run(
            [*argv, cmd],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
