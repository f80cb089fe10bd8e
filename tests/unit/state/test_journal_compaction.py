"""Journal compaction: over its bound and under the cluster lock, the journal is rewritten atomically
with the operations resume and `sealer status` read, and it answers every question as before."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealer.apply.lifecycle import cluster_status
from sealer.errors import StateError
from sealer.state import ClusterState, Journal, StepKey
from sealer.state import journal as journal_mod

PLANS = ("sha256:p1", "sha256:p2", "sha256:p3")


def _finished_op(journal: Journal, plan: str, n: int) -> str:
    op = journal.begin("apply", plan)
    journal.step(op, "a1", "copy", "start", host=f"10.0.0.{n % 250 + 1}", digest="d")
    journal.step(op, "a1", "copy", "done", host=f"10.0.0.{n % 250 + 1}", digest="d")
    journal.end(op, "done")
    return op


def _history(state: ClusterState, finished: int) -> str:
    """`finished` finished operations, then an unfinished one (a crash) with one done and one failed
    step; returns the unfinished operation's id."""
    journal = Journal(state.journal_path, durable=False)
    for n in range(finished):
        _finished_op(journal, PLANS[n % 2], n)
    op = journal.begin("apply", PLANS[2])
    journal.step(op, "a1", "copy", "done", host="10.0.0.1", digest="d1")
    journal.step(op, "a2", "join", "start", host="10.0.0.2", digest="d2")
    journal.step(op, "a2", "join", "failed", host="10.0.0.2", digest="d2", error="timeout")
    journal.close()
    return op


def _answers(journal: Journal) -> dict[str, Any]:
    ops = journal.operations()
    last = ops[-1] if ops else None
    return {
        "resumable": {plan: journal.resumable(plan) for plan in PLANS},
        "last": last,
        "finished": journal.finished_steps(last.op) if last else frozenset(),
    }


def test_over_the_bound_under_the_lock_resume_sees_exactly_the_same(tmp_path: Path) -> None:
    state = ClusterState("c1", home=tmp_path)
    state.ensure()
    op = _history(state, journal_mod.COMPACT_AFTER_OPS + 5)
    before = _answers(Journal(state.journal_path))
    status_before = cluster_status(state)
    size_before = state.journal_path.stat().st_size
    with state.lock("sealer apply"):
        journal = state.journal()
        run = journal.resume_or_begin("apply", PLANS[2])
        journal.close()
    assert run.resumed and run.op == op
    assert run.finished == {StepKey("a1", "copy", "10.0.0.1", "d1")}
    compacted = Journal(state.journal_path)
    ops = compacted.operations()
    # the latest (unfinished) operation and the newest finished ones, up to KEEP_OPS in all
    assert len(ops) == journal_mod.KEEP_OPS and ops[-1].op == op
    assert state.journal_path.stat().st_size < size_before
    assert stat.S_IMODE(state.journal_path.stat().st_mode) == 0o600
    after = _answers(compacted)
    assert after["resumable"] == before["resumable"]
    assert after["finished"] == before["finished"]
    assert after["last"] == before["last"]
    status_after = cluster_status(state)
    assert status_after["unfinished"] == status_before["unfinished"]
    assert status_after["lastOperation"] == status_before["lastOperation"]
    # no temporary file left beside it
    assert sorted(p.name for p in state.dir.iterdir()) == ["journal.jsonl", "lock"]


def test_below_the_bound_nothing_is_rewritten(tmp_path: Path) -> None:
    state = ClusterState("c1", home=tmp_path)
    state.ensure()
    _history(state, journal_mod.COMPACT_AFTER_OPS)
    inode = state.journal_path.stat().st_ino
    with state.lock("sealer apply"):
        journal = state.journal()
        journal.begin("apply", PLANS[0])
        journal.close()
    assert state.journal_path.stat().st_ino == inode
    assert len(Journal(state.journal_path).operations()) == journal_mod.COMPACT_AFTER_OPS + 2


def test_without_the_cluster_lock_it_is_never_compacted(tmp_path: Path) -> None:
    state = ClusterState("c1", home=tmp_path)
    state.ensure()
    _history(state, journal_mod.COMPACT_AFTER_OPS + 5)
    before = state.journal_path.read_bytes()
    journal = state.journal()
    op = journal.begin("apply", PLANS[0])
    journal.close()
    after = state.journal_path.read_bytes()
    assert after.startswith(before) and op.encode() in after[len(before):]


def test_the_lock_held_by_another_process_does_not_count(tmp_path: Path) -> None:
    # The lock file says "locked", but not by us: another sealer may be appending right now.
    state = ClusterState("c1", home=tmp_path)
    state.ensure()
    _history(state, journal_mod.COMPACT_AFTER_OPS + 5)
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            textwrap.dedent(
                f"""
                import sys
                from pathlib import Path
                from sealer.state import ClusterState
                with ClusterState("c1", home=Path({str(tmp_path)!r})).lock("sealer apply"):
                    print("locked", flush=True)
                    sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        inode = state.journal_path.stat().st_ino
        assert not Journal(state.journal_path).compact_if_needed()
        assert state.journal_path.stat().st_ino == inode
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)


def test_a_crash_during_the_rewrite_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = ClusterState("c1", home=tmp_path)
    state.ensure()
    _history(state, journal_mod.COMPACT_AFTER_OPS + 5)
    before = state.journal_path.read_bytes()
    real_replace = os.replace

    def dying_replace(src: Any, dst: Any) -> None:
        if Path(dst) == state.journal_path:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with state.lock("sealer apply"):
        journal = state.journal()
        with pytest.raises(StateError, match=r"journal\.jsonl"):
            journal.begin("apply", PLANS[0])
        journal.close()
    assert state.journal_path.read_bytes() == before
    assert sorted(p.name for p in state.dir.iterdir()) == ["journal.jsonl", "lock"]


def test_records_after_compaction_go_to_the_new_file(tmp_path: Path) -> None:
    # The journal object had the old file open for appending before it compacted.
    state = ClusterState("c1", home=tmp_path)
    state.ensure()
    _history(state, journal_mod.COMPACT_AFTER_OPS + 5)
    with state.lock("sealer apply"):
        journal = state.journal()
        old = journal.begin("apply", PLANS[0])  # compacts (the history was over the bound)
        journal.end(old, "done")
        new = journal.begin("apply", PLANS[1])
        journal.step(new, "a1", "copy", "done", host="10.0.0.9", digest="x")
        journal.close()
    reread = Journal(state.journal_path)
    assert [o.op for o in reread.operations()][-2:] == [old, new]
    assert reread.finished_steps(new) == {StepKey("a1", "copy", "10.0.0.9", "x")}


def test_the_byte_bound_compacts_a_few_huge_operations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_mod, "COMPACT_AFTER_BYTES", 200_000)
    monkeypatch.setattr(journal_mod, "KEEP_BYTES", 100_000)
    state = ClusterState("c1", home=tmp_path)
    state.ensure()
    journal = Journal(state.journal_path, durable=False)
    ops = []
    for n in range(6):  # ~60 kB each: 6 ops are over 200 kB, 10 is far from 50
        op = journal.begin("apply", PLANS[0])
        for host in range(300):
            journal.step(op, "a1", "copy", "done", host=f"10.0.{n}.{host % 250}", digest=f"d{host}")
        journal.end(op, "done")
        ops.append(op)
    journal.close()
    with state.lock("sealer apply"):
        assert Journal(state.journal_path).compact_if_needed()
        # one huge operation left and nothing else to drop: no rewrite at every begin
        assert not Journal(state.journal_path).compact_if_needed()
    assert [o.op for o in Journal(state.journal_path).operations()] == ops[-1:]


def test_one_operation_bigger_than_the_bound_is_kept_and_not_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_mod, "COMPACT_AFTER_BYTES", 10_000)
    state = ClusterState("c1", home=tmp_path)
    state.ensure()
    journal = Journal(state.journal_path, durable=False)
    op = journal.begin("apply", PLANS[0])
    for host in range(200):
        journal.step(op, "a1", "copy", "done", host=f"10.0.0.{host}", digest="d")
    journal.close()
    inode = state.journal_path.stat().st_ino
    with state.lock("sealer apply"):
        assert not Journal(state.journal_path).compact_if_needed()
    assert state.journal_path.stat().st_ino == inode


def test_torn_and_foreign_lines_do_not_survive_and_do_not_matter(tmp_path: Path) -> None:
    state = ClusterState("c1", home=tmp_path)
    state.ensure()
    op = _history(state, journal_mod.COMPACT_AFTER_OPS + 1)
    with open(state.journal_path, "ab") as handle:
        handle.write(b'{"v":1,"op":"x","type":"ste')  # a torn record
    before = _answers(Journal(state.journal_path))
    with state.lock("sealer apply"):
        assert Journal(state.journal_path).compact_if_needed()
    assert b'"type":"ste\n' not in state.journal_path.read_bytes()
    assert _answers(Journal(state.journal_path)) == before
    assert before["last"] is not None and before["last"].op == op


# Property: whatever the history, a compaction changes none of resume's or status's answers. ---------
@dataclass(frozen=True)
class _Op:
    plan: str
    steps: tuple[tuple[str, str, str], ...]  # (action, host, status)
    ending: str  # "done" | "failed" | "crash"
    resumed: bool


OPS = st.lists(
    st.builds(
        _Op,
        plan=st.sampled_from(PLANS),
        steps=st.lists(
            st.tuples(
                st.sampled_from(["a1", "a2"]), st.sampled_from(["10.0.0.1", "10.0.0.2"]),
                st.sampled_from(["start", "done", "failed"]),
            ),
            max_size=6,
        ).map(tuple),
        ending=st.sampled_from(["done", "failed", "crash"]),
        resumed=st.booleans(),
    ),
    min_size=1,
    max_size=12,
)


def _write(journal: Journal, ops: list[_Op]) -> None:
    for item in ops:
        run = journal.resume_or_begin("apply", item.plan)
        for action, host, status in item.steps:
            journal.step(run.op, action, "s", status, host=host, digest="d")  # type: ignore[arg-type]
        if item.ending != "crash":
            journal.end(run.op, item.ending)  # type: ignore[arg-type]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, keep=st.integers(min_value=1, max_value=4))
def test_compaction_never_changes_what_resume_and_status_see(
    ops: list[_Op], keep: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_mod, "COMPACT_AFTER_OPS", 0)
    monkeypatch.setattr(journal_mod, "KEEP_OPS", keep)
    with tempfile.TemporaryDirectory() as tmp:
        state = ClusterState("c1", home=Path(tmp))
        state.ensure()
        with state.lock("sealer apply"):
            journal = Journal(state.journal_path, durable=False)
            monkeypatch.setattr(journal, "compact_if_needed", lambda: False)  # write the history as is
            _write(journal, ops)
            journal.close()
            before = _answers(Journal(state.journal_path))
            status_before = cluster_status(state)
            Journal(state.journal_path).compact_if_needed()
            after = _answers(Journal(state.journal_path))
            assert after == before
            status_after = cluster_status(state)
        for key in ("unfinished", "lastOperation"):
            assert status_after[key] == status_before[key]
        # and the next operation is decided the same way: resume the same op, or begin a new one
        for plan in PLANS:
            assert Journal(state.journal_path).resumable(plan) == before["resumable"][plan]
