"""Mutual exclusion under contention: many processes, one critical section at a time, no lost update."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from sealer.errors import LockHeldError
    from sealer.state import ClusterState
    home, rounds = Path(sys.argv[1]), int(sys.argv[2])
    state = ClusterState("demo", home)
    marker, counter = home / "inside", home / "counter"
    done = 0
    while done < rounds:
        try:
            lock = state.lock(f"worker {os.getpid()}")
            lock.acquire()
        except LockHeldError:
            time.sleep(0.001)
            continue
        try:
            # O_EXCL fails if another process is inside the critical section too.
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            value = int(counter.read_text())
            counter.write_text(str(value + 1))
            os.unlink(marker)
        finally:
            lock.release()
        done += 1
    """
)


def test_many_processes_take_turns(tmp_path: Path) -> None:
    (tmp_path / "counter").write_text("0")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path), "25"], stderr=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    errors = [p.communicate(timeout=240)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    assert (tmp_path / "counter").read_text() == "150"
