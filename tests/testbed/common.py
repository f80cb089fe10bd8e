"""Shared helpers of the test bed: the scratch directory, command execution, locking and its error type."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

#: Everything the test bed creates on disk lives below this directory (override for CI caches).
BASE = Path(os.environ.get("SEALER_TESTBED_DIR", "/tmp/sealer-testbed"))

#: Lab ids become parts of interface names (IFNAMSIZ is 16 incl. NUL: "<lab>-main" must fit), so short.
LAB_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")


class TestbedError(RuntimeError):
    """A test-bed operation failed; the message names what, the hint says what to do."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message if not hint else f"{message}\n  hint: {hint}")
        self.message = message
        self.hint = hint


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | bytes | None = None,
    timeout: float | None = 60,
) -> subprocess.CompletedProcess[str]:
    """Run a command without a shell; on failure raise TestbedError with the command and its stderr."""
    data = input.decode() if isinstance(input, bytes) else input
    try:
        cp = subprocess.run(
            list(argv), input=data, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise TestbedError(f"command timed out after {timeout} s: {shlex.join(argv)}") from e
    except FileNotFoundError as e:
        raise TestbedError(
            f"{argv[0]}: not installed", "run scripts/setup (it installs the test bed's packages)"
        ) from e
    if check and cp.returncode != 0:
        detail = cp.stderr.strip() or cp.stdout.strip()
        raise TestbedError(f"command failed (exit {cp.returncode}): {shlex.join(argv)}\n{detail}")
    return cp


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on a file; released when the block ends or the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def write_private(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Write a file created with `mode` from the start, so a secret is never briefly world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, raw)
    finally:
        os.close(fd)
    os.chmod(path, mode)
