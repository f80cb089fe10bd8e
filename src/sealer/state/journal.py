"""The cluster journal: an append-only JSON-lines record of operations and their steps, for resume.

An operation (one `apply`) writes `begin` (or `resume` when it carries on an unfinished one), then a
`start` and a `done` or `failed` record for every step of every action, then `end`. A re-run of the
same plan resumes the unfinished operation and skips every step whose last record is `done` with
the same inputs digest. Writers hold the cluster lock, so records never interleave; a crash can only
tear the last line, which readers skip.

The file would grow forever, so when an operation begins under the cluster lock and the journal holds
more than COMPACT_AFTER_OPS finished operations or COMPACT_AFTER_BYTES, it is rewritten atomically
with only the operations resume and `sealer status` can still need (see `compaction_keeps`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

from sealer.errors import StateError
from sealer.state.files import atomic_write
from sealer.state.lock import current_holder_info, read_lock_holder

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1

# Compaction bounds. Every command reads the whole journal (resume, `sealer status`) and every
# operation copies it to master0, so it must stay small; but the last few operations are worth
# keeping for post-mortems. A record is ~200 bytes and a day-2 operation on a few hosts writes
# tens of them, so 50 operations are months of routine work and well under a megabyte; a 100-host
# operation writes ~1 MB, so the byte bound catches a few of those. Compaction keeps the latest
# KEEP_OPS operations (within KEEP_BYTES) and the bounds sit well above that, so it runs about
# once every 40 operations, not at every one.
COMPACT_AFTER_OPS = 50
COMPACT_AFTER_BYTES = 4 << 20
KEEP_OPS = 10
KEEP_BYTES = 1 << 20

StepStatus = Literal["start", "done", "failed"]
OpStatus = Literal["running", "done", "failed"]


def digest_of(value: Any) -> str:
    """A stable digest of a step's inputs (anything JSON-serialisable): same inputs, same digest."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class StepKey(NamedTuple):
    """Identifies one step of one action on one host with given inputs; what resume compares."""

    action: str
    step: str
    host: str | None
    digest: str | None


@dataclass(frozen=True)
class JournalEntry:
    op: str
    type: Literal["begin", "resume", "step", "end"]
    time: str
    action: str | None = None
    step: str | None = None
    host: str | None = None
    status: str | None = None
    digest: str | None = None
    error: str | None = None
    kind: str | None = None  # begin: what the operation is (apply, delete, upgrade, ...)
    plan: str | None = None  # begin: digest of the plan being executed

    @property
    def key(self) -> StepKey:
        return StepKey(self.action or "", self.step or "", self.host, self.digest)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"v": JOURNAL_VERSION, "op": self.op, "type": self.type, "time": self.time}
        for name in ("action", "step", "host", "status", "digest", "error", "kind", "plan"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data


@dataclass(frozen=True)
class Operation:
    """Summary of one operation read back from the journal."""

    op: str
    kind: str
    plan: str
    started: str
    status: OpStatus
    ended: str | None = None


@dataclass(frozen=True)
class Run:
    """An operation being executed: its id, the steps already done, whether it was resumed."""

    op: str
    finished: frozenset[StepKey]
    resumed: bool

    def done(self, key: StepKey) -> bool:
        return key in self.finished


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Journal:
    """Append and read `journal.jsonl`. Each record is fsynced (durable=True) before the call returns,
    so "done" on disk means the step really finished before any crash."""

    def __init__(self, path: Path, durable: bool = True) -> None:
        self.path = path
        self.durable = durable
        self._fd: int | None = None

    # writing -----------------------------------------------------------------------------------
    def _open(self) -> int:
        if self._fd is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            # A crash may have torn the last line; start ours on a fresh line so it stays parseable.
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as handle:
                    handle.seek(size - 1)
                    if handle.read(1) != b"\n":
                        os.write(fd, b"\n")
            self._fd = fd
        return self._fd

    def _append(self, entry: JournalEntry) -> None:
        line = json.dumps(entry.to_dict(), separators=(",", ":")) + "\n"
        fd = self._open()
        try:
            os.write(fd, line.encode())
            if self.durable:
                os.fsync(fd)
        except OSError as err:
            raise StateError(f"cannot append to {self.path}: {err.strerror}", "check free space")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def begin(self, kind: str, plan_digest: str) -> str:
        """Start an operation; returns its id."""
        self.compact_if_needed()
        op = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
        self._append(JournalEntry(op=op, type="begin", time=_now(), kind=kind, plan=plan_digest))
        return op

    def resume_or_begin(self, kind: str, plan_digest: str) -> Run:
        """What the engine calls first: carry on with the unfinished operation of this very plan
        (skipping its finished steps), or begin a new one."""
        previous = self.resumable(plan_digest)
        if previous is None:
            return Run(op=self.begin(kind, plan_digest), finished=frozenset(), resumed=False)
        self.compact_if_needed()
        self._append(JournalEntry(op=previous.op, type="resume", time=_now(), kind=kind, plan=plan_digest))
        return Run(op=previous.op, finished=self.finished_steps(previous.op), resumed=True)

    def step(
        self,
        op: str,
        action: str,
        step: str,
        status: StepStatus,
        *,
        host: str | None = None,
        digest: str | None = None,
        error: str | None = None,
    ) -> None:
        self._append(
            JournalEntry(
                op=op, type="step", time=_now(), action=action, step=step, host=host, status=status,
                digest=digest, error=error,
            )
        )

    def end(self, op: str, status: Literal["done", "failed"], error: str | None = None) -> None:
        self._append(JournalEntry(op=op, type="end", time=_now(), status=status, error=error))

    # reading -----------------------------------------------------------------------------------
    def entries(self) -> Iterator[JournalEntry]:
        try:
            lines = self.path.read_bytes().split(b"\n")
        except FileNotFoundError:
            return
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            entry = _parse(raw)
            if entry is None:
                # A crash mid-append tears a line. Skipping it is safe: at worst a finished step
                # looks unfinished and is redone, and every step is idempotent.
                log.warning("%s:%d: skipping an unreadable record (interrupted write?)", self.path, number)
                continue
            yield entry

    def operations(self) -> list[Operation]:
        ops: dict[str, Operation] = {}
        for entry in self.entries():
            if entry.type == "begin":
                ops[entry.op] = Operation(
                    op=entry.op, kind=entry.kind or "", plan=entry.plan or "", started=entry.time,
                    status="running",
                )
            elif entry.type == "resume" and entry.op in ops:
                old = ops[entry.op]
                ops[entry.op] = Operation(old.op, old.kind, old.plan, old.started, "running")
            elif entry.type == "end" and entry.op in ops:
                old = ops[entry.op]
                status: OpStatus = "done" if entry.status == "done" else "failed"
                ops[entry.op] = Operation(old.op, old.kind, old.plan, old.started, status, entry.time)
        return list(ops.values())

    def resumable(self, plan_digest: str) -> Operation | None:
        """The latest operation, if it did not finish and executed this very plan: resume it.
        A finished latest operation, or a different plan, means start afresh."""
        ops = self.operations()
        if not ops:
            return None
        last = ops[-1]
        if last.status != "done" and last.plan == plan_digest:
            return last
        return None

    def finished_steps(self, op: str) -> frozenset[StepKey]:
        """Steps of `op` whose latest record is `done`; a step that failed after an earlier success
        is not finished."""
        latest: dict[StepKey, str] = {}
        for entry in self.entries():
            if entry.op == op and entry.type == "step" and entry.status is not None:
                latest[entry.key] = entry.status
        return frozenset(key for key, status in latest.items() if status == "done")

    # compaction --------------------------------------------------------------------------------
    def _lock_held_by_us(self) -> bool:
        """Whether this process holds the cluster lock (the `lock` file beside the journal). Asked
        of the lock file itself, so a caller that forgot the lock can never compact under a writer."""
        locked, holder = read_lock_holder(self.path.with_name("lock"))
        if not locked or holder is None:
            return False
        me = current_holder_info("")
        return (holder.pid, holder.host, holder.start_ticks) == (me.pid, me.host, me.start_ticks)

    def compact_if_needed(self) -> bool:
        """Rewrite the journal without old operations when it is over a bound (module docstring).
        Only under the cluster lock, held by this process: without it another writer could append
        to the file being replaced. Returns whether the file was rewritten."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return False
        size = len(data)
        # Cheap first look (no JSON parsing at every begin): end records can only outnumber
        # finished operations, so few of them and a small file mean nothing to do.
        if data.count(b'"type":"end"') <= COMPACT_AFTER_OPS and size <= COMPACT_AFTER_BYTES:
            return False
        records = list(_records_of(data))
        begun, _, finished = _op_summary(records)
        if len(finished) <= COMPACT_AFTER_OPS and size <= COMPACT_AFTER_BYTES:
            return False
        keep = compaction_keeps(records)
        if len(keep) == len(begun):
            return False  # nothing to drop (one huge operation): a rewrite would gain nothing
        kept = [line for line, entry in records if entry.op in keep]
        if not self._lock_held_by_us():
            log.debug("%s: over its bound but the cluster lock is not held here; not compacted", self.path)
            return False
        self.close()  # our append descriptor would keep writing to the replaced file
        atomic_write(self.path, b"".join(line + b"\n" for line in kept))
        log.info(
            "%s: compacted from %d to %d records (%d operations kept)", self.path, len(records), len(kept),
            len(keep),
        )
        return True

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _records_of(data: bytes) -> Iterator[tuple[bytes, JournalEntry]]:
    """Each readable record with its raw line (a rewrite keeps the bytes as written)."""
    for raw in data.split(b"\n"):
        entry = _parse(raw)
        if entry is not None:
            yield raw.strip(), entry


def _parse(raw: bytes) -> JournalEntry | None:
    """One record from its line; None for a blank, torn or foreign line."""
    if not raw.strip():
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("type") not in ("begin", "resume", "step", "end"):
            raise ValueError("not a journal record")
        return JournalEntry(
            op=str(data["op"]),
            type=data["type"],
            time=str(data["time"]),
            action=data.get("action"),
            step=data.get("step"),
            host=data.get("host"),
            status=data.get("status"),
            digest=data.get("digest"),
            error=data.get("error"),
            kind=data.get("kind"),
            plan=data.get("plan"),
        )
    except (ValueError, KeyError, TypeError):
        return None


def compaction_keeps(records: list[tuple[bytes, JournalEntry]]) -> set[str]:
    """The operations a compacted journal keeps, whole: the latest one (what resume and `sealer
    status` read), every unfinished one (begun or resumed with no end after: a crash, kept for the
    post-mortem), and the newest finished ones, up to KEEP_OPS operations and KEEP_BYTES of records.
    "Latest" and "finished" are decided as `operations()` decides them."""
    begun, size, finished = _op_summary(records)
    keep: set[str] = set()
    if begun:
        keep.add(begun[-1])
    keep |= {op for op in begun if op not in finished}
    budget = KEEP_BYTES - sum(size[op] for op in keep)
    for op in reversed(begun):
        if len(keep) >= KEEP_OPS:
            break
        if op in keep:
            continue
        if size[op] > budget:
            break
        keep.add(op)
        budget -= size[op]
    return keep


def _op_summary(records: list[tuple[bytes, JournalEntry]]) -> tuple[list[str], dict[str, int], set[str]]:
    """(operation ids in the order `operations()` lists them, bytes of records per operation,
    the finished ones: those whose last begin/resume/end record is an end)."""
    order: dict[str, None] = {}
    size: dict[str, int] = {}
    last: dict[str, str] = {}
    for line, entry in records:
        size[entry.op] = size.get(entry.op, 0) + len(line) + 1
        if entry.type == "begin":
            order.setdefault(entry.op, None)  # a repeated begin keeps its place, as in operations()
            last[entry.op] = "begin"
        elif entry.type in ("resume", "end") and entry.op in order:
            last[entry.op] = entry.type
    finished = {op for op, kind in last.items() if kind == "end"}
    return list(order), size, finished
