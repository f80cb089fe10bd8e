"""The journal: records survive, torn writes are tolerated, and resume finds the finished steps."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealer.state import Journal, StepKey, digest_of


def test_operation_round_trip_and_finished_steps(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        op = journal.begin("apply", "sha256:plan1")
        d = digest_of({"image": "k8s:v1", "host": "10.0.0.2"})
        journal.step(op, "a1", "install", "start", host="10.0.0.1", digest="sha256:i")
        journal.step(op, "a1", "install", "done", host="10.0.0.1", digest="sha256:i")
        journal.step(op, "a2", "join", "start", host="10.0.0.2", digest=d)
        journal.step(op, "a2", "join", "failed", host="10.0.0.2", digest=d, error="kubeadm join: timeout")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    journal = Journal(path)
    assert journal.finished_steps(op) == {StepKey("a1", "install", "10.0.0.1", "sha256:i")}
    (operation,) = journal.operations()
    assert (operation.op, operation.kind, operation.plan, operation.status) == (op, "apply", "sha256:plan1",
                                                                                  "running")
    failed = [e for e in journal.entries() if e.status == "failed"]
    assert failed[0].error == "kubeadm join: timeout"


def test_resume_only_the_same_plan_of_an_unfinished_operation(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    assert journal.resumable("sha256:p") is None
    op = journal.begin("apply", "sha256:p")
    journal.step(op, "a1", "install", "done", host="10.0.0.1")
    resumed = journal.resumable("sha256:p")
    assert resumed is not None and resumed.op == op
    assert journal.resumable("sha256:other") is None  # the Clusterfile changed: start afresh
    # A re-run resumes the same op id and carries on.
    journal.step(op, "a2", "join", "done", host="10.0.0.2")
    journal.end(op, "done")
    assert journal.resumable("sha256:p") is None
    assert journal.operations()[-1].status == "done"
    assert journal.finished_steps(op) == {
        StepKey("a1", "install", "10.0.0.1", None), StepKey("a2", "join", "10.0.0.2", None),
    }


def test_a_step_that_failed_after_succeeding_is_not_finished(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    op = journal.begin("apply", "p")
    journal.step(op, "a1", "s", "done", host="h")
    journal.step(op, "a1", "s", "failed", host="h")
    assert journal.finished_steps(op) == frozenset()


def test_a_different_input_digest_is_a_different_step(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    op = journal.begin("apply", "p")
    journal.step(op, "a1", "copy-rootfs", "done", host="h", digest=digest_of({"image": "v1"}))
    finished = journal.finished_steps(op)
    assert StepKey("a1", "copy-rootfs", "h", digest_of({"image": "v1"})) in finished
    assert StepKey("a1", "copy-rootfs", "h", digest_of({"image": "v2"})) not in finished
    assert digest_of({"b": 1, "a": 2}) == digest_of({"a": 2, "b": 1})


def test_a_torn_last_line_is_skipped_and_the_next_record_starts_a_fresh_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    op = journal.begin("apply", "p")
    journal.step(op, "a1", "s", "done", host="h1")
    journal.close()
    with open(path, "ab") as handle:  # what a crash in the middle of a write leaves
        handle.write(b'{"v":1,"op":"' + op.encode() + b'","type":"step","act')
    assert Journal(path).finished_steps(op) == {StepKey("a1", "s", "h1", None)}
    again = Journal(path)
    again.step(op, "a1", "s", "done", host="h2")
    again.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["host"] == "h2"
    assert Journal(path).finished_steps(op) == {
        StepKey("a1", "s", "h1", None), StepKey("a1", "s", "h2", None),
    }


def test_missing_journal_reads_as_empty(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "none.jsonl")
    assert list(journal.entries()) == [] and journal.operations() == []


def test_resume_or_begin_is_the_engines_entry_point(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    first = journal.resume_or_begin("apply", "sha256:p")
    assert not first.resumed and first.finished == frozenset()
    journal.step(first.op, "a1", "install", "done", host="10.0.0.1", digest="d1")
    journal.step(first.op, "a2", "join", "failed", host="10.0.0.2", digest="d2", error="timeout")
    journal.end(first.op, "failed", error="a2 failed on 10.0.0.2")
    assert journal.operations()[-1].status == "failed"
    # The same plan again: carry on where it stopped.
    second = journal.resume_or_begin("apply", "sha256:p")
    assert second.resumed and second.op == first.op
    assert second.done(StepKey("a1", "install", "10.0.0.1", "d1"))
    assert not second.done(StepKey("a2", "join", "10.0.0.2", "d2"))
    assert journal.operations()[-1].status == "running"
    journal.end(second.op, "done")
    # Finished: the next apply is a new operation even with an identical plan.
    third = journal.resume_or_begin("apply", "sha256:p")
    assert not third.resumed and third.op != first.op


STEP_RECORDS = st.lists(
    st.tuples(
        st.sampled_from(["a1", "a2", "a3"]), st.sampled_from(["copy", "join"]),
        st.sampled_from(["10.0.0.1", "fd00::2", None]), st.sampled_from(["start", "done", "failed"]),
        st.sampled_from([None, "sha256:x"]),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=STEP_RECORDS, torn=st.binary(max_size=40).filter(lambda b: b"\n" not in b))
def test_finished_steps_are_exactly_those_whose_last_record_is_done(
    tmp_path: Path, records: list[tuple[str, str, str | None, str, str | None]], torn: bytes
) -> None:
    path = tmp_path / f"j-{abs(hash((tuple(records), torn)))}.jsonl"
    with Journal(path, durable=False) as journal:
        op = journal.begin("apply", "p")
        other = journal.begin("apply", "q")
        model: dict[StepKey, str] = {}
        for action, step, host, status, digest in records:
            journal.step(op, action, step, status, host=host, digest=digest)  # type: ignore[arg-type]
            journal.step(other, action, step, "done", host=host, digest=digest)  # noise from another op
            model[StepKey(action, step, host, digest)] = status
    with open(path, "ab") as handle:
        handle.write(torn)  # whatever a crash left
    expected = {key for key, status in model.items() if status == "done"}
    assert Journal(path).finished_steps(op) == expected
