"""Copying files to hosts as one tar stream per host over the command channel.

A local manifest (sha256 per file, computed once) is compared with the remote's so equal files
are skipped; files are extracted into a staging dir beside the destination and renamed into
place, so an interrupted copy never leaves a half-written file at a destination path. The
remote side needs only sh, tar, coreutils and findutils.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sealer.errors import SealerError
from sealer.infra.connector import TransferStats
from sealer.infra.errors import DiskFullError, TransferError
from sealer.infra.hostlog import HostLog
from sealer.infra.shell import quote_path

CHUNK = 256 * 1024
STAGE_PREFIX = ".sealer-stage."
STAT_MARK = b"\0::sealer-stat::\0"
# The last member of every stream: a stream cut at a member boundary is still a valid tar, so
# the remote side moves nothing into place unless this arrived.
COMPLETE_MARK = STAGE_PREFIX + "complete"


class LocalSourceError(SealerError):
    """The local side of a copy is missing or unreadable."""


@dataclass(frozen=True)
class LocalEntry:
    """One thing to create remotely, relative to the destination root."""

    rel: str  # posix, no leading "./"; "." for the root directory itself
    kind: str  # "file" | "dir" | "symlink"
    mode: int  # permission bits (07777)
    size: int = 0
    sha256: str = ""
    link: str = ""
    source: str = ""
    mtime: int = 0


@dataclass(frozen=True)
class LocalTree:
    """What to copy: the destination root on the host and the entries below it."""

    root: str
    entries: tuple[LocalEntry, ...]

    @property
    def files(self) -> list[LocalEntry]:
        return [e for e in self.entries if e.kind == "file"]

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.files)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(path: Path, rel: str) -> LocalEntry:
    st = path.lstat()
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return LocalEntry(rel, "symlink", mode, link=os.readlink(path), mtime=int(st.st_mtime))
    if stat.S_ISDIR(st.st_mode):
        return LocalEntry(rel, "dir", mode, mtime=int(st.st_mtime))
    if stat.S_ISREG(st.st_mode):
        return LocalEntry(
            rel, "file", mode, size=st.st_size, sha256=_sha256(path), source=str(path), mtime=int(st.st_mtime)
        )
    raise LocalSourceError(
        f"{path}: cannot copy special files (sockets, fifos, devices)", "remove it from the source tree"
    )


def local_tree(src: str | os.PathLike[str], dst: str) -> LocalTree:
    """Scan src. A file lands at dst (or dst/<name> if dst ends with "/"); a directory's
    contents land under dst, which takes the directory's mode (like `cp -a src/. dst`)."""
    path = Path(src)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise LocalSourceError(f"{src}: no such file or directory", "check the source path")
    except OSError as err:
        raise LocalSourceError(f"{src}: {err.strerror}", None)
    try:
        if not stat.S_ISDIR(st.st_mode):
            if dst.endswith("/"):
                dst = dst + path.name
            remote = PurePosixPath(dst)
            name = remote.name
            if not name:
                raise LocalSourceError(f"destination {dst!r} names no file", "give a file path or a dir/")
            return LocalTree(str(remote.parent), (_entry(path.resolve(), name),))
        entries: list[LocalEntry] = [_entry(path, ".")]
        for base, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                full = Path(base) / name
                rel = full.relative_to(path).as_posix()
                entries.append(_entry(full, rel))
        return LocalTree(dst.rstrip("/") or "/", tuple(entries))
    except PermissionError as err:
        raise LocalSourceError(f"{err.filename}: permission denied", "run as a user who can read it")


# ---------------------------------------------------------------- remote manifest


def manifest_script(root: str) -> str:
    """Prints `sha256  name\\0`... then STAT_MARK then `mode type\\tname\\0`... for the regular
    files listed (NUL-separated) on stdin that exist under root."""
    return (
        f"cd {quote_path(root)} 2>/dev/null || exit 0; "
        't=$(mktemp) || exit 1; trap \'rm -f "$t"\' EXIT; cat > "$t"; '
        'xargs -0 -r -a "$t" sha256sum -z -- 2>/dev/null; '
        "printf '\\0::sealer-stat::\\0'; "
        "xargs -0 -r -a \"$t\" stat --printf '%a %F\\t%n\\0' -- 2>/dev/null; exit 0"
    )


@dataclass(frozen=True)
class RemoteFile:
    sha256: str
    mode: int
    regular: bool


def parse_manifest(output: bytes) -> dict[str, RemoteFile]:
    """Decode the output of `manifest_script` into name -> RemoteFile (regular files only)."""
    hashes_part, _, stats_part = output.partition(STAT_MARK)
    hashes: dict[str, str] = {}
    for record in hashes_part.split(b"\0"):
        if not record:
            continue
        digest, sep, name = record.partition(b"  ")
        if not sep:
            digest, sep, name = record.partition(b" *")
        if sep and len(digest) == 64:
            hashes[os.fsdecode(name)] = digest.decode("ascii", "replace")
    found: dict[str, RemoteFile] = {}
    for record in stats_part.split(b"\0"):
        head, sep, name = record.partition(b"\t")
        if not sep:
            continue
        mode_text, _, kind = head.decode("ascii", "replace").partition(" ")
        try:
            mode = int(mode_text, 8)
        except ValueError:
            continue
        key = os.fsdecode(name)
        found[key] = RemoteFile(
            hashes.get(key, ""), mode, kind == "regular file" or kind == "regular empty file"
        )
    return found


def needed(tree: LocalTree, remote: dict[str, RemoteFile]) -> list[LocalEntry]:
    """Entries to send: files whose remote copy is missing, differs in content or mode, or is
    not a regular file; every dir and symlink (cheap, and keeps modes and links right)."""
    out: list[LocalEntry] = []
    for entry in tree.entries:
        if entry.kind != "file":
            out.append(entry)
            continue
        have = remote.get(entry.rel)
        if have is None or not have.regular or have.sha256 != entry.sha256 or have.mode != entry.mode:
            out.append(entry)
    return out


def file_list(tree: LocalTree) -> bytes:
    return b"".join(os.fsencode(e.rel) + b"\0" for e in tree.files)


# ---------------------------------------------------------------- extraction


def extract_script(root: str, *, is_dir: bool) -> str:
    """Receive a tar on stdin into a staging dir under root, then move each entry into place.

    `mv` within one filesystem is rename(2): a destination path holds the old file or the whole
    new one, never a part. Stale stages of interrupted copies are removed first; the stage's
    name carries the pid of the shell that owns it."""
    q = quote_path(root)
    chmod_root = 'chmod --reference="$s" -- "$r"; ' if is_dir else ""
    return (
        "set -e; "
        f"r={q}; "
        'mkdir -p -- "$r"; '
        # stale stages: their copy's shell is gone, or they sat untouched for 10 minutes (a copy
        # whose connection died unnoticed by sshd); a live concurrent copy keeps its own stage
        f'for o in "$r"/{STAGE_PREFIX}*; do [ -d "$o" ] || continue; '
        f"p=${{o##*/{STAGE_PREFIX}}}; p=${{p%%.*}}; "
        'if [ ! -d "/proc/$p" ] || [ -n "$(find "$o" -maxdepth 0 -mmin +10)" ]; '
        'then rm -rf -- "$o"; fi; done; '
        f's=$(mktemp -d "$r/{STAGE_PREFIX}$$.XXXXXX"); '
        "trap 'rm -rf -- \"$s\"' EXIT; "
        'tar -x -p --no-same-owner -C "$s" -f -; '
        'cd "$s"; '
        f"[ -f {COMPLETE_MARK} ] || "
        '{ echo "sealer: incomplete transfer (stream cut short)" >&2; exit 1; }; '
        f"rm -f {COMPLETE_MARK}; "
        # one mkdir for every directory, then per directory one mv of all its non-dirs
        'find . -mindepth 1 -type d -print0 | (cd "$r" && xargs -0 -r mkdir -p --); '
        "find . -type d -print0 | xargs -0 -r sh -c "
        '\'r=$1; shift; for d; do find "$d" -mindepth 1 -maxdepth 1 ! -type d '
        '-exec mv -f -t "$r/$d" -- {} +; done\' sh "$r"; '
        # directory modes last, so a read-only dir does not block its own contents
        "find . -mindepth 1 -type d -exec sh -c "
        '\'r=$1; shift; for d; do chmod --reference="$d" -- "$r/$d"; done\' sh "$r" {} +; '
        + chmod_root
        + 'cd "$r"; '
    )


def _tarinfo(entry: LocalEntry) -> tarfile.TarInfo:
    info = tarfile.TarInfo("./" + entry.rel if entry.rel != "." else ".")
    info.mode = entry.mode
    info.mtime = entry.mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link
    else:
        info.type = tarfile.REGTYPE
        info.size = entry.size
    return info


async def tar_stream(entries: Iterable[LocalEntry]) -> AsyncIterator[bytes]:
    """A GNU tar byte stream of entries, produced chunk by chunk (nothing buffered whole)."""
    for entry in entries:
        info = _tarinfo(entry)
        yield info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
        if entry.kind != "file":
            continue
        remaining = entry.size
        try:
            with open(entry.source, "rb") as f:
                while remaining > 0:
                    chunk = f.read(min(CHUNK, remaining))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                    yield chunk
        except OSError as err:
            raise LocalSourceError(f"{entry.source}: {err.strerror}", None)
        if remaining:
            raise LocalSourceError(f"{entry.source}: file shrank while being copied", "copy again")
        pad = (-entry.size) % tarfile.BLOCKSIZE
        if pad:
            yield b"\0" * pad
    mark = tarfile.TarInfo("./" + COMPLETE_MARK)
    mark.mode = 0o600
    yield mark.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    yield b"\0" * (tarfile.BLOCKSIZE * 2)


# ---------------------------------------------------------------- orchestration

Stdin = bytes | AsyncIterator[bytes] | None
ExecBytes = Callable[[str, Stdin], Awaitable[tuple[int | None, bytes, str]]]
"""Run a shell command on one host (sudo already applied), feeding stdin, returning
(exit code, stdout bytes, stderr text)."""


def transfer_failure(host: str, what: str, stderr: str, root: str) -> TransferError:
    # GNU tar reports ENOSPC as either the errno text or, for a short write, "Wrote only N of M"
    if "No space left on device" in stderr or "Wrote only" in stderr:
        return DiskFullError(
            host,
            f"disk full while {what} {root}: no space left on device",
            "free space on the host (df -h) or choose another destination; nothing partial was left"
            " at the destination paths",
        )
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    detail = "; ".join(lines[-3:]) if lines else "no error output"
    hint = "check the destination path and permissions (use sudo for system paths)"
    if "cannot overwrite directory" in stderr:
        hint = "the destination path is a directory: end DST with '/' to copy into it"
    elif "Permission denied" in stderr:
        hint = "the login user cannot write there: copy with sudo or choose a writable destination"
    return TransferError(host, f"{what} {root} failed: {detail}", hint)


@dataclass(frozen=True)
class UploadPlan:
    entries: list[LocalEntry]
    skipped: int

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.entries if e.kind == "file")

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries if e.kind == "file")


async def plan_upload(host: str, execb: ExecBytes, tree: LocalTree) -> UploadPlan:
    """Ask the host which files it already has, equal; returns what still has to go."""
    files = tree.files
    if not files:
        return UploadPlan(list(tree.entries), 0)
    code, out, err = await execb(manifest_script(tree.root), file_list(tree))
    if code != 0:
        raise transfer_failure(host, "reading the manifest of", err, tree.root)
    todo = needed(tree, parse_manifest(out))
    sent = sum(1 for e in todo if e.kind == "file")
    return UploadPlan(todo, len(files) - sent)


BATCH_BYTES = 32 << 20


def batches(entries: list[LocalEntry], limit: int = BATCH_BYTES) -> list[list[LocalEntry]]:
    """Split entries into tar streams of about `limit` bytes each. Each batch lands on its own,
    so an interrupted copy keeps the batches already done and a re-copy skips them. Every batch
    carries all directory entries (headers only), so no batch gives a directory a default mode."""
    dirs = [e for e in entries if e.kind == "dir"]
    out: list[list[LocalEntry]] = []
    current: list[LocalEntry] = [e for e in entries if e.kind != "file"]
    size = 0
    for entry in entries:
        if entry.kind != "file":
            continue
        if size and size + entry.size > limit:
            out.append(current)
            current, size = list(dirs), 0
        current.append(entry)
        size += entry.size
    if current or not out:
        out.append(current)
    return out


async def send(
    host: str, execb: ExecBytes, tree: LocalTree, plan: UploadPlan, *, batch_bytes: int = BATCH_BYTES
) -> None:
    is_dir = any(e.rel == "." for e in tree.entries)
    script = extract_script(tree.root, is_dir=is_dir)
    for batch in batches(plan.entries, batch_bytes):
        code, _, err = await execb(script, tar_stream(batch))
        if code != 0:
            raise transfer_failure(host, "copying to", err or f"exit {code}", tree.root)


async def upload(
    host: str,
    execb: ExecBytes,
    tree: LocalTree,
    hlog: HostLog,
    *,
    sudo: bool,
    shown: str,
    batch_bytes: int = BATCH_BYTES,
) -> TransferStats:
    """Copy tree to the host (skipping files it already has, equal), noted in the host's log
    (`shown` names the copy there), the failure too."""
    start = time.monotonic()
    hlog.begin(f"copy {shown} -> {tree.root}", sudo=sudo, env_names=[])
    try:
        plan = await plan_upload(host, execb, tree)
        await send(host, execb, tree, plan, batch_bytes=batch_bytes)
    except SealerError as exc:
        hlog.end(None, time.monotonic() - start, f"failed: {exc.message}")
        raise
    duration = time.monotonic() - start
    hlog.end(0, duration, f"sent {plan.files} file(s), {plan.bytes} bytes; skipped {plan.skipped} equal")
    return TransferStats(host, plan.files, plan.skipped, plan.bytes, duration)


def download_script(src: str) -> str:
    """tar of one remote file or directory on stdout, named by its basename."""
    p = PurePosixPath(src)
    parent = str(p.parent) if str(p.parent) else "."
    return f"cd {quote_path(parent)} && tar -c -f - -- {quote_path(p.name)}"


async def prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


def with_preamble(preamble: bytes, stdin: Stdin) -> bytes | AsyncIterator[bytes]:
    """stdin for a wrapped command: the sudo password line (if any) goes first, then the data."""
    if stdin is None:
        return preamble
    if isinstance(stdin, bytes):
        return preamble + stdin
    return prepend(preamble, stdin)


async def download(host: str, execb: ExecBytes, src: str, dst: str | os.PathLike[str]) -> tuple[int, int]:
    """Fetch remote src into local dst; (files written, bytes received)."""
    code, data, err = await execb(download_script(src), None)
    if code != 0:
        raise transfer_failure(host, "reading", err, src)
    try:
        count = extract_download(data, Path(dst))
    except (OSError, tarfile.TarError) as exc:
        raise TransferError(
            host,
            f"cannot unpack {src} into {dst}: {exc}",
            "choose a destination that does not exist yet",
        ) from None
    return count, len(data)


def extract_download(data: bytes, dst: Path) -> int:
    """Unpack a one-member-rooted tar (file or dir) to dst, via a temp dir and a rename."""
    dst = dst.resolve()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".sealer-get.") as tmp:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = tar.getmembers()
            if not members:
                return 0
            tar.extractall(tmp, filter="data")
            top = members[0].name.split("/")[0]
        if dst.is_dir():
            dst = dst / top
        os.replace(Path(tmp) / top, dst)
        return sum(1 for m in members if m.isfile())
