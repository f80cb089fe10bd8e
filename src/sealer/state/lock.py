"""The per-cluster lock: one apply/run/delete at a time on a cluster, and a clear word on who holds it.

An exclusive `flock` on `<cluster>/lock`; the file holds JSON about the holder (pid, host, user,
command, since). The kernel drops a flock when its holder dies, so a lock survives a crash only when
a child inherited the descriptor or the state sits on a shared file system; both are handled by
breaking the lock: unlinking the file (a locker re-checks after locking that it locked the file still
at the path, so a broken lock is never shared).
"""

from __future__ import annotations

import fcntl
import getpass
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from sealer.errors import LockHeldError, StateError

log = logging.getLogger(__name__)

_ATTEMPTS = 5


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a cluster lock."""

    pid: int
    host: str
    user: str
    command: str
    since: str  # ISO 8601, UTC
    start_ticks: int | None = None  # /proc/<pid>/stat starttime: tells a reused pid from the holder

    def describe(self) -> str:
        return f"{self.command!r} (pid {self.pid} on {self.host}, user {self.user}) since {self.since}"

    def on_this_machine(self) -> bool:
        return self.host == socket.gethostname()

    @classmethod
    def from_json(cls, text: str | bytes) -> LockHolder | None:
        """The holder a lock file or a Lease's holderIdentity records; None if it is not one."""
        try:
            data = json.loads(text)
            return cls(
                pid=int(data["pid"]),
                host=str(data["host"]),
                user=str(data["user"]),
                command=str(data["command"]),
                since=str(data["since"]),
                start_ticks=int(data["start_ticks"]) if data.get("start_ticks") is not None else None,
            )
        except (ValueError, KeyError, TypeError):
            return None

    def is_dead(self) -> bool:
        """True only when we can prove it: the holder ran on this machine and its process is gone."""
        if not self.on_this_machine():
            return False
        return not _process_alive(self.pid, self.start_ticks)


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 of proc(5), counted from field 3
    except (IndexError, ValueError):
        return None


def _process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[0] if fields else None


def _process_alive(pid: int, start_ticks: int | None) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, belongs to someone else
    if _process_state(pid) in ("Z", "X"):
        return False
    if start_ticks is not None:
        current = _start_ticks(pid)
        if current is not None and current != start_ticks:
            return False  # the pid was reused by an unrelated process
    return True


def _read_holder(fd: int) -> LockHolder | None:
    try:
        raw = os.pread(fd, 65536, 0)
    except OSError:
        return None
    if not raw.strip():
        return None
    return LockHolder.from_json(raw)


def current_holder_info(command: str) -> LockHolder:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    pid = os.getpid()
    return LockHolder(
        pid=pid,
        host=socket.gethostname(),
        user=user,
        command=command,
        since=datetime.now(UTC).isoformat(timespec="seconds"),
        start_ticks=_start_ticks(pid),
    )


def _unlock_hint(cluster: str) -> str:
    return (
        "wait for it to finish. If that process is gone (killed machine, state on a shared disk), "
        f"break the lock with `sealer unlock --cluster {cluster}`"
    )


class ClusterLock:
    """Context manager around the cluster lock; `previous_holder` is set when the last holder died
    while holding it (its operation did not finish: the engine resumes from the journal)."""

    def __init__(self, path: Path, cluster: str, command: str) -> None:
        self.path = path
        self.cluster = cluster
        self.command = command
        self.previous_holder: LockHolder | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise StateError(f"lock of cluster {self.cluster} is already held by this process")
        for _ in range(_ATTEMPTS):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as err:
                raise StateError(
                    f"cannot open the lock file {self.path}: {err.strerror or err}",
                    "check that SEALER_HOME is writable by you",
                )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                if holder is not None and holder.is_dead():
                    # The holder died but a child kept the descriptor open: the lock protects
                    # nothing any more. Break it and try again.
                    log.warning(
                        "cluster %s: breaking the lock of %s: that process is gone", self.cluster,
                        holder.describe(),
                    )
                    try:
                        _unlink_if_same(self.path, fd)
                    finally:
                        os.close(fd)
                    continue
                os.close(fd)
                if holder is None:
                    raise LockHeldError(
                        f"cluster {self.cluster} is locked by another sealer process "
                        "(it has not recorded who it is yet)",
                        _unlock_hint(self.cluster),
                    )
                raise LockHeldError(
                    f"cluster {self.cluster} is locked by {holder.describe()}", _unlock_hint(self.cluster)
                )
            except OSError as err:
                os.close(fd)
                raise StateError(
                    f"cannot lock {self.path}: {err.strerror}",
                    "the state directory must be on a file system that supports flock",
                )
            if not self._still_at_path(fd):
                os.close(fd)  # the lock was broken between our open and our flock: retry on the new file
                continue
            self.previous_holder = _read_holder(fd)
            holder = current_holder_info(self.command)
            payload = (json.dumps(asdict(holder)) + "\n").encode()
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, payload, 0)
                os.fsync(fd)
            except OSError as err:
                os.close(fd)
                raise StateError(
                    f"cannot record the lock holder in {self.path}: {err.strerror or err}",
                    "check free space on the file system of SEALER_HOME",
                )
            self._fd = fd
            return
        raise StateError(
            f"could not take the lock of cluster {self.cluster}: it kept changing under us",
            "another sealer process is fighting for it; try again",
        )

    def _still_at_path(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        fd = self._fd
        if fd is None:
            return
        self._fd = None
        try:
            # An empty lock file means "released cleanly"; a non-empty one found by the next holder
            # means its predecessor died mid-operation.
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> ClusterLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _unlink_if_same(path: Path, fd: int) -> bool:
    """Remove the lock file `fd` refers to, unless the path already names another file (someone
    broke it first and a new holder created a new one). Breakers serialise on a flock of the
    directory, so a check and its unlink are never split by another breaker."""
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        try:
            on_disk = os.stat(path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        if (on_disk.st_dev, on_disk.st_ino) != (mine.st_dev, mine.st_ino):
            return False
        os.unlink(path)
        return True
    finally:
        os.close(dir_fd)  # releases the directory flock


def read_lock_holder(path: Path) -> tuple[bool, LockHolder | None]:
    """(is it locked right now, who holds or last held it) without taking the lock."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, None
    try:
        holder = _read_holder(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True, holder
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, holder
    finally:
        os.close(fd)


def break_lock(path: Path, cluster: str, *, force: bool = False) -> str:
    """Break a stale lock; refuses a live holder on this machine, and a holder elsewhere without force.
    Returns a sentence saying what was done."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"cluster {cluster} is not locked"
    try:
        holder = _read_holder(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            if holder is not None:
                # Keep the record: the next apply uses it to say the last operation did not finish.
                return (
                    f"cluster {cluster} is not locked (the last holder, {holder.describe()}, "
                    "ended without finishing)"
                )
            return f"cluster {cluster} is not locked"
        who = holder.describe() if holder is not None else "an unidentified process"
        if holder is not None and holder.on_this_machine():
            if not holder.is_dead():
                raise StateError(
                    f"cluster {cluster} is locked by {who}, and that process is running",
                    f"let it finish, or stop it first (kill {holder.pid}); sealer will not break a live lock",
                )
        elif not force:
            raise StateError(
                f"cluster {cluster} is locked by {who}; sealer cannot check whether it is still running",
                f"make sure it is not, then run `sealer unlock --cluster {cluster} --force`",
            )
        if not _unlink_if_same(path, fd):
            return f"cluster {cluster}: the lock changed hands while looking at it; run unlock again to see"
        return f"broke the lock of cluster {cluster} held by {who}"
    finally:
        os.close(fd)
