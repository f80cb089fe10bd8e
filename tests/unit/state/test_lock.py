"""The cluster lock across real processes: who holds it, stale holders, breaking it safely."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealer.errors import LockHeldError, StateError
from sealer.state import ClusterState, LockHolder, break_lock, read_lock_holder
from sealer.state.lock import current_holder_info

HOLD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sealer.state import ClusterState
    lock = ClusterState("demo", Path(sys.argv[1])).lock("sealer apply -f Clusterfile")
    lock.acquire()
    print("locked", flush=True)
    sys.stdin.read()  # hold until the test closes our stdin
    lock.release()
    """
)

# Takes the lock, forks a child that inherits the descriptor, and dies without releasing: the
# holder is gone but the kernel lock lives on in the orphan.
ORPHAN = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from sealer.state import ClusterState
    lock = ClusterState("demo", Path(sys.argv[1])).lock("sealer apply (crashed)")
    lock.acquire()
    child = os.fork()
    if child == 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)  # let the test's pipes close; keep only the lock descriptor
        time.sleep(120)
        os._exit(0)
    print(child, flush=True)
    os._exit(1)
    """
)

FOREIGN = textwrap.dedent(
    """
    import fcntl, json, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"pid": 4242, "host": "ops-laptop-7", "user": "ana",
                             "command": "sealer apply", "since": "2026-01-01T00:00:00+00:00"}).encode())
    print("locked", flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    try:
        yield proc
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=30)


def test_second_locker_is_told_who_holds_the_lock_and_how_to_break_it(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    state = ClusterState("demo", tmp_path)
    with pytest.raises(LockHeldError) as err:
        state.lock("sealer apply -f other").acquire()
    message = err.value.message
    assert f"pid {holder.pid}" in message and "'sealer apply -f Clusterfile'" in message
    assert "cluster demo is locked by" in message and " since 20" in message
    assert err.value.hint and "sealer unlock --cluster demo" in err.value.hint
    locked, info = read_lock_holder(state.lock_path)
    assert locked and info is not None and info.pid == holder.pid


def test_lock_is_free_again_after_release(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=30)
    state = ClusterState("demo", tmp_path)
    with state.lock("sealer apply") as lock:
        assert lock.held
        assert lock.previous_holder is None  # released cleanly: no unfinished operation to report
        locked, info = read_lock_holder(state.lock_path)
        assert locked and info is not None and info.pid == os.getpid()
    assert not read_lock_holder(state.lock_path)[0]


def test_a_crashed_holder_is_reported_as_previous_holder(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from pathlib import Path
        from sealer.state import ClusterState
        ClusterState("demo", Path(sys.argv[1])).lock("sealer apply (will crash)").acquire()
        os._exit(3)
        """
    )
    assert subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=False).returncode == 3
    with ClusterState("demo", tmp_path).lock("sealer apply") as lock:
        assert lock.previous_holder is not None
        assert lock.previous_holder.command == "sealer apply (will crash)"


def test_a_dead_holder_whose_lock_lives_on_in_an_orphan_is_broken_automatically(tmp_path: Path) -> None:
    ClusterState("demo", tmp_path).ensure()
    out = subprocess.run(
        [sys.executable, "-c", ORPHAN, str(tmp_path)], capture_output=True, text=True, check=False
    )
    orphan = int(out.stdout.strip())
    try:
        state = ClusterState("demo", tmp_path)
        assert read_lock_holder(state.lock_path)[0], "the orphan should still hold the kernel lock"
        with state.lock("sealer apply") as lock:
            assert lock.held
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_unlock_refuses_a_live_holder_on_this_machine(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    state = ClusterState("demo", tmp_path)
    with pytest.raises(StateError, match="that process is running") as err:
        break_lock(state.lock_path, "demo", force=True)
    assert err.value.hint and f"kill {holder.pid}" in err.value.hint


def test_unlock_of_a_holder_on_another_machine_needs_force(tmp_path: Path) -> None:
    state = ClusterState("demo", tmp_path)
    state.ensure()
    proc = subprocess.Popen(
        [sys.executable, "-c", FOREIGN, str(state.lock_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeldError, match="pid 4242 on ops-laptop-7"):
            state.lock("sealer apply").acquire()
        with pytest.raises(StateError, match="cannot check whether it is still running") as err:
            break_lock(state.lock_path, "demo")
        assert err.value.hint and "--force" in err.value.hint
        assert "broke the lock of cluster demo" in break_lock(state.lock_path, "demo", force=True)
        with state.lock("sealer apply") as lock:  # the broken lock is not shared with the old holder
            assert lock.held
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def test_unlock_when_not_locked_says_so(tmp_path: Path) -> None:
    state = ClusterState("demo", tmp_path)
    state.ensure()
    assert break_lock(state.lock_path, "demo") == "cluster demo is not locked"


def test_holder_liveness_detects_pid_reuse() -> None:
    me = current_holder_info("x")
    assert not me.is_dead()
    assert me.start_ticks is not None
    reused = LockHolder(me.pid, me.host, me.user, me.command, me.since, start_ticks=me.start_ticks + 1)
    assert reused.is_dead()
    elsewhere = LockHolder(me.pid, "another-host", me.user, me.command, me.since)
    assert not elsewhere.is_dead()  # cannot be proven dead from here


def test_lock_record_is_json_with_the_documented_fields(tmp_path: Path) -> None:
    state = ClusterState("demo", tmp_path)
    with state.lock("sealer apply -f Clusterfile"):
        record = json.loads(state.lock_path.read_text())
    assert {"pid", "host", "user", "command", "since"} <= set(record)
    assert state.lock_path.read_text() == ""  # a clean release leaves no holder behind
