"""Logging in (key, password, passphrase-protected key) and becoming root with a sudo password,
on real sshd hosts; each failure is a clear error naming the host."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sealer.infra.errors import CommandTimeoutError, ConnectionRefusedHostError, HostAuthError, SudoError
from sealer.infra.host import Target

from .conftest import fleet, root_target, run

pytestmark = [pytest.mark.integration, pytest.mark.testbed]

PHRASE = "correct horse battery"


def keygen(path: Path, passphrase: str = "") -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def authorize(tb: Any, h: Any, user: str, pub: str) -> None:
    tb.run_on(
        h,
        f"install -d -m 700 -o {user} -g {user} /home/{user}/.ssh && "
        f"cat >> /home/{user}/.ssh/authorized_keys && chown {user}: /home/{user}/.ssh/authorized_keys",
        input=pub + "\n",
    )


def test_key_password_and_passphrase_logins(
    testbed_factory: Any, fleet_args: dict[str, Any], tmp_path: Path
) -> None:
    tb = testbed_factory(light=True)
    (h,) = tb.up(1)
    pw_user, pw = h.user_password_login
    locked = tmp_path / "locked"
    authorize(tb, h, pw_user, keygen(locked, PHRASE))
    stranger = tmp_path / "stranger"
    keygen(stranger)

    good = {
        "root by key": root_target(h),
        "password": Target(h.ip, user=pw_user, password=pw),
        "passphrase key": Target(h.ip, user=pw_user, pk=str(locked), pk_password=PHRASE),
    }
    bad = {
        "wrong password": Target(h.ip, user=pw_user, password="not-it"),
        "key not authorized": Target(h.ip, pk=str(stranger)),
        "wrong passphrase": Target(h.ip, user=pw_user, pk=str(locked), pk_password="nope"),
        "no passphrase": Target(h.ip, user=pw_user, pk=str(locked)),
        "missing key file": Target(h.ip, pk=str(tmp_path / "absent")),
        "closed port": Target(h.ip, port=2222, pk=str(h.root_key)),
    }

    async def go() -> tuple[list[Any], list[Any]]:
        async with fleet(fleet_args) as f:
            ok = await f.run_many(list(good.values()), "id -un")
            ko = await f.run_many(list(bad.values()), "id -un")
            return ok, ko

    ok, ko = run(go)
    assert [o.error for o in ok] == [None, None, None]
    assert [o.value.stdout.strip() for o in ok] == ["root", pw_user, pw_user]
    errors = dict(zip(bad, (o.error for o in ko), strict=True))
    assert all(str(e).startswith(h.ip) and e.hint for e in errors.values() if e is not None)
    assert isinstance(errors["wrong password"], HostAuthError)
    assert "authentication failed for user tbuser using password" in errors["wrong password"].message
    assert isinstance(errors["key not authorized"], HostAuthError)
    assert isinstance(errors["wrong passphrase"], HostAuthError)
    assert "wrong passphrase" in errors["wrong passphrase"].message
    assert isinstance(errors["no passphrase"], HostAuthError)
    assert "no passphrase" in errors["no passphrase"].message
    assert isinstance(errors["missing key file"], HostAuthError)
    assert isinstance(errors["closed port"], ConnectionRefusedHostError)
    assert str(errors["closed port"]) == f"{h.ip}:2222: connection refused on port 2222"


def test_sudo_with_password_as_non_root(
    testbed_factory: Any, fleet_args: dict[str, Any], tmp_path: Path
) -> None:
    tb = testbed_factory(light=True)
    (h,) = tb.up(1)
    user, password = h.sudo_user
    pw_user, pw = h.user_password_login
    sudoer = Target(h.ip, user=user, password=password)
    src = tmp_path / "payload"
    src.mkdir()
    (src / "tool").write_text("#!/bin/sh\necho tool\n")
    (src / "tool").chmod(0o755)

    async def go() -> dict[str, Any]:
        async with fleet(fleet_args) as f:
            out: dict[str, Any] = {}
            out["plain"] = await f.run(sudoer, "id -u")
            # stdin of the command must be exactly what we pass: the password line is sudo's only
            out["stdin"] = await f.run(sudoer, "id -u; cat", sudo=True, input="payload\n", env={"K": "v w"})
            out["env"] = await f.run(sudoer, 'printf "%s" "$K"', sudo=True, env={"K": "v w"})
            # while a sudo command runs, its password appears in no process's command line
            task = asyncio.ensure_future(f.run(sudoer, "sleep 3", sudo=True))
            for _ in range(100):  # until the command runs (the machine may be busy)
                out["ps"] = tb.run_on(h, "ps -eo args").stdout
                if "sleep 3" in out["ps"] or task.done():
                    break
                await asyncio.sleep(0.1)
            await task
            out["copy"] = await f.put(sudoer, src, "/opt/rootowned", sudo=True)
            out["owner"] = await f.run(sudoer, "stat -c '%U %a' /opt/rootowned/tool")
            out["wrong"] = await f.each(
                [Target(h.ip, user=user, password=password, sudo_password="wrong")],
                lambda t: f.run(t, "id -u", sudo=True),
            )
            # a timed-out root command is stopped on the host, not left running
            out["timeout"] = await f.each(
                [sudoer], lambda t: f.run(t, "sleep 41; echo never", sudo=True, timeout=1)
            )
            out["left"] = tb.run_on(h, "pgrep -fx 'sleep 41' || true").stdout
            out["none"] = await f.each(
                [Target(h.ip, user=pw_user, password=pw)], lambda t: f.run(t, "id -u", sudo=True)
            )
            return out

    out = run(go)
    assert out["plain"].stdout.strip() != "0"
    assert out["stdin"].stdout == "0\npayload\n"
    assert out["env"].stdout == "v w"
    assert "sleep 3" in out["ps"] and password not in out["ps"]
    assert out["copy"].files_sent == 1
    assert out["owner"].stdout.strip() == "root 755"
    wrong = out["wrong"][0].error
    assert isinstance(wrong, SudoError) and "incorrect sudo password" in wrong.message and h.ip in str(wrong)
    timed_out = out["timeout"][0].error
    assert isinstance(timed_out, CommandTimeoutError) and "within 1s" in timed_out.message
    assert out["left"] == ""
    refused = out["none"][0].error
    assert isinstance(refused, SudoError) and "may not run" in refused.message
    logs = "".join(p.read_text() for p in Path(fleet_args["logdir"]).glob("*.log"))
    assert "id -u; cat" in logs and password not in logs and "wrong" not in logs
