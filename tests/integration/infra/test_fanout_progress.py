"""The fan-out's per-host progress session (`progress_script`, `_ProgressStream`): one long-lived
session per host answers the operator's ticks; a session killed mid-transfer is opened again and
the transfer completes; a killed host still goes silent, is failed and routed around; nothing of
the sessions stays on the hosts. The script itself is also run under a local bash."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from sealer.infra.connector import Exec
from sealer.infra.fanout import (
    FanoutResult,
    HostProgress,
    _Paths,
    _ProgressStream,
    fanout_copy,
    progress_script,
)
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
        # left by a killed session: no process can have this pid (above Linux's pid_max limit)
        (work / "prog4194305.pid").write_text("4194305\n")
        # a tick far longer than the test: every answer here is one to the operator's line
        proc = subprocess.Popen(["bash", "-c", progress_script(p, 600)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"-1\n"  # no spool yet
        assert beat.stat().st_mtime > 1_000_000  # the operator's line is the heartbeat
        pids = [f for f in os.listdir(work) if f.startswith("prog") and f.endswith(".pid")]
        assert len(pids) == 1  # its own: a clean-up can find and kill it
        assert "prog4194305.pid" not in pids  # the stale one is gone
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


def test_progress_script_answers_every_tick_on_its_own_without_touching_the_heartbeat(tmp_path: Path) -> None:
    p = _Paths(secrets.token_hex(4), str(tmp_path / "dst"), "root")
    work = Path(p.work)
    os.makedirs(work)
    try:
        beat = work / "beat"
        beat.touch()
        os.utime(beat, (1_000_000, 1_000_000))
        os.makedirs(Path(p.spool).parent)
        Path(p.spool).write_bytes(b"z" * 77)
        proc = subprocess.Popen(["bash", "-c", progress_script(p, 0.05)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        # nothing written: the host still reports, tick after tick
        assert [proc.stdout.readline() for _ in range(3)] == [b"77\n"] * 3
        # but only the operator's lines are its heartbeat (a host cut off must clean up)
        assert beat.stat().st_mtime == 1_000_000
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        subprocess.run(["rm", "-rf", p.work, str(tmp_path / "dst")], check=False)


def test_progress_script_without_its_work_dir_ends_at_once(tmp_path: Path) -> None:
    # a session opened after the clean-up (or the watchdog) removed the run's work dir
    p = _Paths(secrets.token_hex(4), str(tmp_path / "dst"), "root")
    assert not os.path.exists(p.work)
    cp = subprocess.run(["bash", "-c", progress_script(p, 1)], input=b"\n\n", capture_output=True, timeout=10)
    assert cp.returncode == 0 and cp.stdout == b""
    assert not os.path.exists(p.work)


# ------------------------------------------------------------------ the session, on local bash


class LocalSession:
    """Stands in for a host's SSH connection: `call` runs the script under local bash with the
    same contract as `_Host.call` (stdin streamed from an async iterator, stdout to on_stdout
    as it arrives, an Exec back when the command ends)."""

    def __init__(self, paths: _Paths) -> None:
        self.paths = paths
        self.name = "local"
        self.calls = 0

    async def call(self, script: str, stdin: Any = b"", *, sudo: bool = False, timeout: float | None = None,
                   shown: str = "", on_stdout: Any = None) -> Exec:
        self.calls += 1
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", script, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        w, r = proc.stdin, proc.stdout

        async def feed() -> None:
            try:
                async for chunk in stdin:
                    w.write(chunk)
                    await w.drain()
            except (BrokenPipeError, ConnectionResetError):
                return
            finally:
                w.close()

        async def pump() -> None:
            while chunk := await r.read(65536):
                on_stdout(chunk)

        try:
            await asyncio.gather(feed(), pump())
            err = await proc.stderr.read()
            return Exec(await proc.wait(), b"", err.decode())
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def _pids(p: _Paths) -> list[int]:
    """The pids of the progress loops that run now (a killed one's file may be left over)."""
    out = []
    for f in os.listdir(p.work):
        if f.startswith("prog"):
            pid = int(Path(p.work, f).read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 0)
                out.append(pid)
    return out


async def _until(cond: Any, what: str, limit: float = 30.0) -> None:
    # a bound so a broken stream fails the test instead of hanging it, not a timing assertion
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def paths(tmp_path: Path) -> Iterator[_Paths]:
    p = _Paths(secrets.token_hex(4), str(tmp_path / "dst"), "root")
    os.makedirs(p.work)
    Path(p.work, "beat").touch()
    os.makedirs(Path(p.spool).parent)
    yield p
    subprocess.run(["rm", "-rf", p.work], check=False)


def test_stream_answers_every_tick_and_ends_when_stopped(paths: _Paths) -> None:
    async def go() -> None:
        host = LocalSession(paths)
        s = _ProgressStream(cast(Any, host), tick=0.05, reopens=5)
        await _until(lambda: s.answers >= 1, "a first answer")
        assert s.size == -1
        Path(paths.spool).write_bytes(b"y" * 4321)
        await _until(lambda: s.size == 4321, "the spool's new size")
        assert s.answers >= 2 and host.calls == 1  # many answers, one session
        pid = _pids(paths)[0]
        s.stop()
        await asyncio.wait_for(s.task, 30)
        assert s.breaks == [] and host.calls == 1
        assert _pids(paths) == []  # the loop ended and removed its pid file
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    asyncio.run(go())


def test_a_killed_session_is_reopened_a_bounded_number_of_times(paths: _Paths) -> None:
    async def go() -> None:
        host = LocalSession(paths)
        s = _ProgressStream(cast(Any, host), tick=0.05, reopens=2)
        for k in range(3):
            opened = k + 1
            await _until(lambda: len(_pids(paths)) == 1 and s.opened == opened, f"session {k + 1} up")  # noqa: B023
            seen = s.answers
            await _until(lambda: s.answers > seen, f"answers over session {k + 1}")  # noqa: B023
            os.killpg(_pids(paths)[0], signal.SIGKILL)
            await _until(lambda: len(s.breaks) == k + 1, f"break {k + 1} noticed")  # noqa: B023
        # two reopens allowed: after the third break it stays closed (the host goes silent)
        await asyncio.wait_for(s.task, 30)
        assert s.opened == 3 and host.calls == 3 and len(s.breaks) == 3
        quiet = s.answers
        await asyncio.sleep(0.3)
        assert s.answers == quiet and host.calls == 3  # no per-tick sessions as a fall-back

    asyncio.run(go())


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


@pytest.mark.integration
@pytest.mark.testbed
@pytest.mark.slow
def test_a_cancelled_copy_leaves_no_progress_loop_or_other_process(
    testbed_factory: Any, tmp_path: Path
) -> None:
    tb: Testbed = testbed_factory(light=True, lab="h2a")
    hosts = tb.up(3)
    before = {h.name: footprint(tb, h) for h in hosts}
    for h in hosts:
        tb.shape(h, "20mbit")
    src = make_payload(tmp_path, big=24 * MB, small=10)
    looked: list[str] = []

    async def go() -> None:
        async with Fleet(known_hosts=tmp_path / "known_hosts", trust_user_known_hosts=False, ssh_config=False,
                         connect_timeout=5.0) as f:
            task: asyncio.Task[FanoutResult] | None = None

            def watch(p: HostProgress) -> None:
                last = p.host == hosts[-1].ip and p.state == "receiving"
                if last and p.received > p.total // 5 and not looked:
                    # the last host of the chain is receiving: every host has its progress loop now
                    looked.append(tb.run_on(hosts[-1], "ls /tmp/sealer-fanout-*/").stdout)
                    assert task is not None
                    task.cancel()  # as Ctrl-C does to the run

            task = asyncio.ensure_future(fanout_copy(f, targets(hosts), src, DST, chunk_bytes=1 * MB,
                                                     progress=watch))
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(go())
    assert looked and "prog" in looked[0], looked
    for h in hosts:
        now = footprint(tb, h)
        # pieces stay staged for a resume; nothing else of the run does
        assert {k: v for k, v in now.items() if k != "stage"} == {
            k: v for k, v in before[h.name].items() if k != "stage"}, h.name


@pytest.mark.integration
@pytest.mark.testbed
@pytest.mark.slow
def test_a_cut_off_host_goes_silent_and_its_watchdog_still_cleans_up(
    testbed_factory: Any, tmp_path: Path, sessions: Counter[tuple[str, str]]
) -> None:
    tb: Testbed = testbed_factory(light=True, lab="h2b")
    hosts = tb.up(3)
    before = {h.name: footprint(tb, h) for h in hosts}
    for h in hosts:
        tb.shape(h, "20mbit")
    src = make_payload(tmp_path, big=24 * MB, small=10)
    victim = hosts[1]
    cut: list[int] = []

    def watch(p: HostProgress) -> None:
        if p.host == victim.ip and p.state == "receiving" and not cut and p.received > p.total // 5:
            tb.cut_link(victim)  # packets vanish: its sessions stay open on its side, silent on ours
            cut.append(p.received)

    try:
        res = copy(tmp_path, hosts, src, chunk_bytes=1 * MB, progress=watch, stall_timeout=4.0,
                   host_idle_timeout=10.0, rounds=1)
        assert cut, "the victim never reached a fifth of the stream"
        by_host = {o.host: o for o in res.outcomes}
        err = by_host[victim.ip].error
        assert err is not None and "no answer for" in err.message, err  # the silence, not a lost connection
        # routed around: for its silence, or before that as slow (it falls behind its parent while
        # silent), whichever comes first on a loaded machine
        assert any(r.startswith(f"{victim.ip}: ") for r in res.reroutes), res.reroutes
        want = digest_tree(src)
        for h in hosts:
            if h is not victim:
                assert by_host[h.ip].ok, by_host[h.ip].error
                assert remote_digest(tb, h) == want
        assert sessions[(victim.ip, "progress")] <= 1 + 5
        # Still cut off (run_on enters the host's namespaces, not its network): its progress
        # loop never saw its session end, but the operator's heartbeat lines stopped, so the
        # watchdog removes the run's processes, key and work dir.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            fp = footprint(tb, victim)
            if fp["keys"] == "0" and not fp["tmp"] and fp["procs"] == before[victim.name]["procs"]:
                break
            time.sleep(1)
        fp = footprint(tb, victim)
        assert (fp["keys"], fp["tmp"], fp["procs"]) == ("0", "", before[victim.name]["procs"]), fp
    finally:
        tb.restore_link(victim)
