"""Env values (tokens, passwords) given to a remote command never show in another process's
command line or environment while it runs: any local user of the host can read those
(`ps`, /proc/<pid>/cmdline, /proc/<pid>/environ of their own processes)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sealer.infra.host import Target
from sealer.infra.local import LocalConnector

from .conftest import fleet, root_target, run

pytestmark = [pytest.mark.integration]

# Every /proc entry whose command line or environment holds the secret, as "<where> <comm>". The
# secret comes on stdin and is matched by the shell itself: a grep with it in its argv, or the
# scan's own command line, would show it.
SCAN = (
    "IFS= read -r S; for d in /proc/[0-9]*; do [ \"$d\" = /proc/$$ ] && continue; "
    'c=$(cat "$d/comm" 2>/dev/null); '
    "a=$(tr '\\0' '\\n' < \"$d/cmdline\" 2>/dev/null); e=$(tr '\\0' '\\n' < \"$d/environ\" 2>/dev/null); "
    'case "$a" in *"$S"*) echo "cmdline $c";; esac; case "$e" in *"$S"*) echo "environ $c";; esac; done'
)


def waiting_command(tag: str) -> str:
    # runs until the test has looked; its `sleep` is the command's own process, the one that
    # should have the variable
    return (
        f"sleep 600 & echo $! > /tmp/env-pid-{tag}; touch /tmp/env-ready-{tag}; wait $!; "
        f"rm -f /tmp/env-ready-{tag} /tmp/env-pid-{tag}; "
        'printf %s "$SECRET_TOKEN" | sha256sum | cut -c1-64; cat'
    )


def digest(secret: str) -> str:
    # the command prints a digest of what it got (its output goes to the host log, the value must not)
    return hashlib.sha256(secret.encode()).hexdigest()


def release(tag: str) -> str:
    return f"kill $(cat /tmp/env-pid-{tag})"


async def look_while_running(
    start: Callable[[], Any],
    exists: Callable[[str], bool],
    scan: Callable[[], str],
    go: Callable[[], object],
    tag: str,
) -> tuple[Any, str]:
    task = asyncio.ensure_future(start())
    try:
        for _ in range(600):  # until the command runs (the machine may be busy)
            if exists(f"/tmp/env-ready-{tag}") or task.done():
                break
            await asyncio.sleep(0.05)
        seen = scan()
    finally:
        go()
    return await task, seen


@pytest.mark.testbed
def test_env_secret_is_not_visible_to_other_processes_on_the_host(
    testbed_factory: Any, fleet_args: dict[str, Any]
) -> None:
    tb = testbed_factory(light=True)
    (h,) = tb.up(1)
    user, password = h.sudo_user
    cases = {
        "root": (root_target(h), False),
        "rootsudo": (root_target(h), True),
        "sudoer": (Target(h.ip, user=user, password=password), True),
        "plain": (Target(h.ip, user=user, password=password), False),
    }

    def ready(path: str) -> bool:
        return bool(tb.run_on(h, ["test", "-e", path], check=False).returncode == 0)

    async def one(f: Any, tag: str, target: Target, sudo: bool) -> tuple[Any, str, str]:
        secret = "tok-" + secrets.token_hex(12) + " 'quoted' $(not run)"
        result, seen = await look_while_running(
            lambda: f.run(target, waiting_command(tag), sudo=sudo, env={"SECRET_TOKEN": secret},
                          input="own stdin\n"),
            ready,
            lambda: tb.run_on(h, SCAN, input=secret + "\n").stdout,
            lambda: tb.run_on(h, release(tag)),
            tag,
        )
        return result, seen, secret

    async def go() -> dict[str, tuple[Any, str, str]]:
        async with fleet(fleet_args) as f:
            return {tag: await one(f, tag, target, sudo) for tag, (target, sudo) in cases.items()}

    for tag, (result, seen, secret) in run(go).items():
        assert result.ok, (tag, result.stderr)
        # the command got the value and its own stdin, untouched
        assert result.stdout == digest(secret) + "\nown stdin\n", tag
        lines = set(seen.splitlines())
        # the scan works: the command's own processes have it in their environment ...
        # ... and nothing else has it anywhere (not sshd, the login shell, sudo or `sh -c`)
        assert lines == {"environ sleep"}, (tag, lines)
    logs = "".join(p.read_text() for p in Path(fleet_args["logdir"]).glob("*.log"))
    assert "SECRET_TOKEN" in logs and "tok-" not in logs


def test_env_secret_is_not_visible_to_other_processes_locally(tmp_path: Path) -> None:
    tag = "local" + secrets.token_hex(4)
    secret = "tok-" + secrets.token_hex(12)
    target = Target("127.0.0.1")

    def scan() -> str:
        return subprocess.run(["/bin/sh", "-c", SCAN], input=secret + "\n", capture_output=True,
                              text=True).stdout

    def go() -> None:
        subprocess.run(["/bin/sh", "-c", release(tag)], check=True)

    async def main() -> tuple[Any, str]:
        async with LocalConnector(logdir=tmp_path / "logs") as c:
            return await look_while_running(
                lambda: c.run(target, waiting_command(tag), env={"SECRET_TOKEN": secret},
                              input="own stdin\n"),
                os.path.exists, scan, go, tag,
            )

    result, seen = asyncio.run(main())
    assert result.ok and result.stdout == digest(secret) + "\nown stdin\n"
    lines = set(seen.splitlines())
    assert lines == {"environ sleep"}, lines
