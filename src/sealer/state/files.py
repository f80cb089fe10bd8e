"""Crash-safe file primitives for the state directory: private dirs and atomic, private writes.

Every file sealer keeps may hold secrets (passwords in a Clusterfile, admin.conf), so everything here
is created owner-only (dirs 0700, files 0600) whatever the process umask says.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from sealer.errors import StateError

DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) if needed and make sure only the owner can enter it."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if not path.is_dir():
            raise StateError(f"{path} exists but is not a directory", "move it away or set SEALER_HOME")
        # mkdir's mode is filtered by the umask and ignored for an existing dir: set it explicitly.
        if path.stat().st_mode & 0o777 != DIR_MODE:
            os.chmod(path, DIR_MODE)
    except FileExistsError:
        raise StateError(f"{path} exists but is not a directory", "move it away or set SEALER_HOME")
    except OSError as err:
        raise StateError(
            f"cannot create or secure state directory {path}: {err.strerror or err}",
            "check the owner of that directory, or point SEALER_HOME at a directory you own",
        )
    return path


def _fsync_dir(path: Path) -> None:
    # A rename is only durable once the directory entry itself is on disk.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, mode: int = FILE_MODE) -> None:
    """Replace `path` with `data` so that a reader (or a crash) sees the old file or the new one, never
    a mix: write a temporary file in the same directory, fsync it, rename it over the target."""
    payload = data.encode() if isinstance(data, str) else data
    directory = path.parent
    try:
        # mkstemp creates the file 0600, so the secret is never world-readable, not even briefly.
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise StateError(f"cannot write {path}: {err.strerror}", "check free space and permissions")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        if mode != FILE_MODE:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError):
            raise StateError(f"cannot write {path}: {err.strerror}", "check free space and permissions")
        raise


def read_text_or_none(path: Path) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise StateError(f"{path} is not UTF-8 text", "it was not written by sealer; move it away")
    except OSError as err:
        raise StateError(f"cannot read {path}: {err.strerror}", "check its permissions")


def remove_stale_temps(directory: Path) -> None:
    """Delete temporary files a crashed `atomic_write` left behind (they are never the real file)."""
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file():
            with contextlib.suppress(OSError):
                entry.unlink()
