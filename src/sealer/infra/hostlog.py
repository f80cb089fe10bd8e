"""Per-host output logs: `<logdir>/<host>.log`, appended as output arrives, mode 0600.

A log past ROTATE_BYTES when a run opens it becomes `<host>.log.1` (replacing the one before), so a
host's log for one kind of operation stays under about twice that, however many runs it sees.

Only commands and their output are written; passwords never reach these files because they
travel on stdin, not on the command line.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import IO

ROTATE_BYTES = 8 << 20  # a 300-host install logs well under this per host; day-2 runs add less


def _private_dirs(path: Path) -> None:
    # mkdir(parents=True) gives intermediate dirs the default mode; logs may hold secrets a
    # command printed, so every dir we create is 0700.
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)


def _rotate(path: Path) -> None:
    try:
        if path.stat().st_size > ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass


class HostLog:
    """One host's log file, opened on first write."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def _open(self) -> IO[str] | None:
        if self.path is None:
            return None
        if self._file is None:
            _private_dirs(self.path.parent)
            _rotate(self.path)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._file = os.fdopen(fd, "a", encoding="utf-8", errors="replace", buffering=1)
        return self._file

    def write(self, text: str) -> None:
        f = self._open()
        if f is not None:
            f.write(text)

    def begin(self, command: str, *, sudo: bool, env_names: list[str]) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        extra = " (sudo)" if sudo else ""
        if env_names:
            extra += f" env: {', '.join(env_names)}"
        self.write(f"--- {stamp} $ {command}{extra}\n")

    def end(self, exit_code: int | None, duration: float, note: str = "") -> None:
        status = f"exit {exit_code}" if exit_code is not None else "no exit status"
        self.write(f"--- {status} in {duration:.2f}s{(' ' + note) if note else ''}\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class HostLogs:
    """The log directory of one run; hands out one HostLog per host."""

    def __init__(self, logdir: str | os.PathLike[str] | None) -> None:
        self.logdir = Path(logdir) if logdir is not None else None
        self._logs: dict[str, HostLog] = {}

    def for_host(self, name: str) -> HostLog:
        log = self._logs.get(name)
        if log is None:
            safe = name.replace("/", "_").replace(":", "_")
            log = HostLog(self.logdir / f"{safe}.log" if self.logdir is not None else None)
            self._logs[name] = log
        return log

    def close(self) -> None:
        for log in self._logs.values():
            log.close()
        self._logs.clear()
