"""The fan-out's per-host progress session (`progress_script`, `_ProgressStream`): one long-lived
session per host answers the operator's ticks; a session killed mid-transfer is opened again and
the transfer completes; a killed host still goes silent, is failed and routed around; nothing of
the sessions stays on the hosts. The script itself is also run under a local bash."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sealer.infra.fanout import FanoutResult, HostProgress, _Paths, fanout_copy, progress_script
from sealer.infra.fleet import Fleet
from sealer.infra.ssh import SSHConnector
from tests.integration.fanout.test_fanout_testbed import (
    DST,
    digest_tree,
    footprint,
    make_payload,
    remote_digest,
    targets,
)
from tests.testbed import Testbed, TestHost

MB = 1 << 20


def copy(state: Path, hosts: list[TestHost], src: Path, **kw: Any) -> FanoutResult:
    async def go() -> FanoutResult:
        async with Fleet(known_hosts=state / "known_hosts", trust_user_known_hosts=False, ssh_config=False,
                         connect_timeout=5.0) as f:
            return await fanout_copy(f, targets(hosts), src, DST, **kw)

    return asyncio.run(go())


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str]]:
    """Every SSH session the fan-out opens, counted by (host, what it was for)."""
    seen: Counter[tuple[str, str]] = Counter()
    real = SSHConnector.exec

    async def counting(self: SSHConnector, host: Any, cmd: str, *args: Any, **kw: Any) -> Any:
        seen[(host.name, str(kw.get("shown")))] += 1
        return await real(self, host, cmd, *args, **kw)

    monkeypatch.setattr(SSHConnector, "exec", counting)
    return seen


# ------------------------------------------------------------------ the script, under local bash


def test_progress_script_answers_each_line_keeps_the_heartbeat_and_ends_with_stdin(tmp_path: Path) -> None:
    p = _Paths(secrets.token_hex(4), str(tmp_path / "dst"), "root")
    work = Path(p.work)
    os.makedirs(work)
    try:
        beat = work / "beat"
        beat.touch()
        os.utime(beat, (1_000_000, 1_000_000))
        os.makedirs(Path(p.spool).parent)
        proc = subprocess.Popen(["bash", "-c", progress_script(p)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"-1\n"  # no spool yet
        assert beat.stat().st_mtime > 1_000_000  # the operator's line is the heartbeat
        pids = [f for f in os.listdir(work) if f.startswith("prog") and f.endswith(".pid")]
        assert len(pids) == 1  # a clean-up can find and kill it
        Path(p.spool).write_bytes(b"x" * 12345)
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"12345\n"
        proc.stdin.close()  # the operator closes the session
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == b""
        assert not [f for f in os.listdir(work) if f.startswith("prog")]
    finally:
        subprocess.run(["rm", "-rf", p.work, str(tmp_path / "dst")], check=False)


def test_progress_script_without_its_work_dir_ends_at_once(tmp_path: Path) -> None:
    # a session opened after the clean-up (or the watchdog) removed the run's work dir
    p = _Paths(secrets.token_hex(4), str(tmp_path / "dst"), "root")
    assert not os.path.exists(p.work)
    cp = subprocess.run(["bash", "-c", progress_script(p)], input=b"\n\n", capture_output=True, timeout=10)
    assert cp.returncode == 0 and cp.stdout == b""
    assert not os.path.exists(p.work)


# ------------------------------------------------------------------ on the test bed


def _kill_progress(tb: Testbed, h: TestHost) -> str:
    """SIGKILL the host's progress session(s) by process group; returns the pids killed."""
    return tb.run_on(
        h,
        # run_on's shell is dash, whose kill takes no "--"
        'for f in /tmp/sealer-fanout-*/prog*.pid; do [ -f "$f" ] || continue; p=$(cat "$f"); '
        'kill -KILL "-$p" && echo "$p"; done; true',
    ).stdout.strip()


@pytest.mark.integration
@pytest.mark.testbed
@pytest.mark.slow
def test_one_progress_session_per_host_and_a_killed_one_is_reopened(
    testbed_factory: Any, tmp_path: Path, sessions: Counter[tuple[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    tb: Testbed = testbed_factory(light=True, lab="h2a")
    hosts = tb.up(3)
    before = {h.name: footprint(tb, h) for h in hosts}
    for h in hosts:
        tb.shape(h, "20mbit")  # about ten seconds of transfer: many ticks
    src = make_payload(tmp_path, big=24 * MB, small=10)
    victim = hosts[1]
    killed: list[tuple[str, int]] = []
    seen: list[HostProgress] = []

    def watch(p: HostProgress) -> None:
        seen.append(p)
        if p.host == victim.ip and p.state == "receiving" and not killed and p.received > p.total // 5:
            killed.append((_kill_progress(tb, victim), p.received))

    caplog.set_level(logging.INFO, logger="sealer.infra.fanout")
    started = time.monotonic()
    res = copy(tmp_path, hosts, src, chunk_bytes=1 * MB, progress=watch, stall_timeout=8.0)
    took = time.monotonic() - started
    assert killed and killed[0][0], "the victim's progress session was not found to kill"
    assert res.ok, [o.error for o in res.outcomes]
    assert not [r for r in res.reroutes if victim.ip in r], res.reroutes  # not mistaken for a dead host
    want = digest_tree(src)
    for h in hosts:
        assert remote_digest(tb, h) == want
        assert footprint(tb, h) == before[h.name]  # no progress loop (or anything) left behind
    assert any("progress session ended" in r.getMessage() and victim.ip in r.getMessage()
               for r in caplog.records)
    # the victim's progress went on after the kill, through the reopened session
    after = [p.received for p in seen if p.host == victim.ip and p.state == "receiving"
             and p.received > killed[0][1]]
    assert after, "no progress from the victim after its session was killed"
    # one session per host for the whole transfer (the victim's once more), not one per tick
    progress = {h.ip: sessions[(h.ip, "progress")] for h in hosts}
    assert progress == {h.ip: 2 if h is victim else 1 for h in hosts}, progress
    ticks = sum(1 for p in seen if p.state == "receiving")
    assert ticks > 2 * len(hosts), (ticks, took)  # the answers really were many ticks' worth


@pytest.mark.integration
@pytest.mark.testbed
@pytest.mark.slow
def test_a_killed_host_goes_silent_is_failed_and_routed_around(
    testbed_factory: Any, tmp_path: Path, sessions: Counter[tuple[str, str]]
) -> None:
    tb: Testbed = testbed_factory(light=True, lab="h2b")
    hosts = tb.up(4)
    before = {h.name: footprint(tb, h) for h in hosts}
    for h in hosts:
        tb.shape(h, "40mbit")
    src = make_payload(tmp_path, big=16 * MB, small=10)
    victim = hosts[1]
    stopped: list[int] = []

    def watch(p: HostProgress) -> None:
        if p.host == victim.ip and p.state == "receiving" and not stopped and p.received > p.total // 4:
            tb.stop_host(victim, hard=True)  # sshd and every process of the host gone: refused
            stopped.append(p.received)

    res = copy(tmp_path, hosts, src, chunk_bytes=1 * MB, progress=watch, stall_timeout=4.0, rounds=1)
    assert stopped, "the victim never reached a quarter of the stream"
    by_host = {o.host: o for o in res.outcomes}
    err = by_host[victim.ip].error
    assert err is not None
    assert err.host == victim.ip
    assert any(r.startswith(f"{victim.ip}: failed") for r in res.reroutes), res.reroutes
    want = digest_tree(src)
    for h in hosts:
        if h is not victim:
            assert by_host[h.ip].ok, by_host[h.ip].error
            assert remote_digest(tb, h) == want
            assert footprint(tb, h) == before[h.name]
    # the dead host's progress session was reopened a bounded number of times, not every tick
    assert 1 <= sessions[(victim.ip, "progress")] <= 1 + 5
    assert all(sessions[(h.ip, "progress")] == 1 for h in hosts if h is not victim)
