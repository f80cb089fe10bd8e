"""Pinned host keys: the cluster's known_hosts file (read, record under a file lock, forget) and
read-only lookups in ~/.ssh/known_hosts, in OpenSSH's file format.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sealer.errors import SealerError

DEFAULT_PORT = 22


class KnownHostsFileError(SealerError):
    """A known_hosts file cannot be read or written."""


def host_pattern(address: str, port: int | None) -> str:
    """OpenSSH's name for a host in known_hosts: `addr`, or `[addr]:port` off port 22."""
    if port and port != DEFAULT_PORT:
        return f"[{address}]:{port}"
    return address


def fingerprint(key: str) -> str:
    """SHA256 fingerprint of a "type base64" public key, as `ssh-keygen -l` prints it."""
    parts = key.split()
    if len(parts) < 2:
        raise ValueError(f"not a public key: {key!r}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"not a public key: {key!r}") from err
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def normalize_key(key: str) -> str:
    """ "type base64" without a comment, the form keys are compared in."""
    parts = key.split()
    if len(parts) < 2:
        raise ValueError(f"not a public key: {key!r}")
    return f"{parts[0]} {parts[1]}"


def _hashed_match(entry: str, name: str) -> bool:
    # |1|base64(salt)|base64(HMAC-SHA1(salt, name)) — OpenSSH's HashKnownHosts form.
    try:
        _, magic, salt_b64, digest_b64 = entry.split("|")
        if magic != "1":
            return False
        salt = base64.b64decode(salt_b64)
        digest = base64.b64decode(digest_b64)
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)


def _glob_match(pattern: str, name: str) -> bool:
    # OpenSSH patterns know only * and ?; brackets are literal ("[10.0.0.1]:2222").
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name) is not None


def patterns_match(patterns: str, name: str) -> bool:
    """OpenSSH pattern-list semantics: any positive match and no negated match."""
    matched = False
    for pattern in patterns.split(","):
        negate = pattern.startswith("!")
        pattern = pattern[1:] if negate else pattern
        hit = _hashed_match(pattern, name) if pattern.startswith("|") else _glob_match(pattern, name)
        if hit and negate:
            return False
        matched = matched or hit
    return matched


@dataclass(frozen=True)
class Entry:
    patterns: str
    key: str  # "type base64"
    marker: str | None = None  # "@revoked" / "@cert-authority"


def parse(text: str) -> list[Entry]:
    """Entries of a known_hosts text; malformed lines are skipped as OpenSSH does."""
    entries: list[Entry] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        marker = None
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
        if len(fields) < 3:
            continue
        entries.append(Entry(fields[0], f"{fields[1]} {fields[2]}", marker))
    return entries


def keys_for(entries: list[Entry], address: str, port: int | None) -> list[str]:
    name = host_pattern(address, port)
    return [e.key for e in entries if e.marker is None and patterns_match(e.patterns, name)]


_SPECIAL = frozenset("*?!|")


class HostIndex:
    """Entries indexed for lookups. sealer writes one plain name per line, so a cluster's file is
    a dict lookup per host instead of a pattern match per line per host (which made connecting
    to N hosts cost O(N^2)); wildcard, negated and hashed pattern lists are still matched one by
    one, and keys come back in file order as OpenSSH reads them."""

    def __init__(self, entries: list[Entry] | None = None) -> None:
        self._count = 0
        self._exact: dict[str, list[tuple[int, str]]] = {}
        self._other: list[tuple[int, Entry]] = []
        for entry in entries or ():
            self.add(entry)

    def add(self, entry: Entry) -> None:
        order, self._count = self._count, self._count + 1
        if entry.marker is not None:
            return  # @revoked / @cert-authority never pin a host's own key
        names = entry.patterns.split(",")
        if any(c in _SPECIAL for c in entry.patterns):
            self._other.append((order, entry))
            return
        for name in dict.fromkeys(names):
            self._exact.setdefault(name, []).append((order, entry.key))

    def keys_for(self, address: str, port: int | None) -> list[str]:
        name = host_pattern(address, port)
        hits = list(self._exact.get(name, ()))
        if self._other:
            hits += [(i, e.key) for i, e in self._other if patterns_match(e.patterns, name)]
            hits.sort(key=lambda hit: hit[0])
        return [key for _, key in hits]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing releases the flock


def _write_all(fd: int, data: bytes, offset: int) -> None:
    # os.write may write less than asked (a full disk, a signal): never leave half a line
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def _read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    # what changes whenever anyone appends to or rewrites the file (ctime too: a rewrite to the
    # same size within one mtime tick still moves it)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class KnownHostsFile:
    """The cluster's own known_hosts (0600). Records are appended under an exclusive flock so
    parallel sealer processes never interleave half lines.

    The parsed file is kept and re-read only when its inode, size or times change, so N hosts
    connecting (each looked up, each recorded) cost O(N) reads and parses in all, not O(N^2)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._index: HostIndex | None = None
        self._seen: tuple[int, int, int, int] | None = None
        self.reads = 0  # how often the file was read and parsed (tests and benchmarks count them)
        self.writes = 0  # how often keys were appended to it (one per record_many batch)

    def entries(self) -> list[Entry]:
        try:
            return parse(self.path.read_text(encoding="utf-8", errors="replace"))
        except FileNotFoundError:
            return []
        except OSError as err:
            raise KnownHostsFileError(f"cannot read {self.path}: {err.strerror}") from err

    def _load(self, fd: int) -> HostIndex:
        """The index of the open file, parsed again only if it changed since we last saw it."""
        seen = _stamp(os.fstat(fd))  # before reading: a change after this forces a re-read later
        if self._index is None or seen != self._seen:
            self._index, self._seen = None, None
            index = HostIndex(parse(_read_fd(fd)))
            self.reads += 1
            self._index, self._seen = index, seen
        return self._index

    def keys_for(self, address: str, port: int | None) -> list[str]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        except OSError as err:
            raise KnownHostsFileError(f"cannot read {self.path}: {err.strerror}") from err
        try:
            return self._load(fd).keys_for(address, port)
        except OSError as err:
            raise KnownHostsFileError(f"cannot read {self.path}: {err.strerror}") from err
        finally:
            os.close(fd)

    def record(self, address: str, port: int | None, key: str) -> bool:
        """Pin `key` for the host; False if it was pinned already (by us or a parallel run)."""
        return self.record_many([(address, port, key)])[0]

    def record_many(self, items: list[tuple[str, int | None, str]]) -> list[bool]:
        """Pin each (address, port, key) with one lock and at most one write for all of them;
        per item, False if it was pinned already (by us, an earlier item or a parallel run)."""
        keys = [normalize_key(key) for _, _, key in items]
        added: list[bool] = []
        try:
            with _locked(self.path) as fd:
                index = self._load(fd)
                lines: list[str] = []
                for (address, port, _), key in zip(items, keys, strict=True):
                    if key in index.keys_for(address, port):
                        added.append(False)
                        continue
                    self._seen = None  # the index holds lines not on disk until written
                    index.add(Entry(host_pattern(address, port), key))
                    lines.append(f"{host_pattern(address, port)} {key}\n")
                    added.append(True)
                if lines:
                    size = os.fstat(fd).st_size
                    prefix = "\n" if size and os.pread(fd, 1, size - 1) != b"\n" else ""
                    _write_all(fd, (prefix + "".join(lines)).encode(), size)
                    self.writes += 1
                    self._seen = _stamp(os.fstat(fd))
        except OSError as err:
            self._index, self._seen = None, None
            who = items[0][0] if len(items) == 1 else f"{len(items)} hosts"
            raise KnownHostsFileError(
                f"cannot record the host key of {who} in {self.path}: {err.strerror}",
                f"make {self.path.parent} writable by this user and check the disk has room",
            ) from err
        return added

    def forget(self, address: str, port: int | None = None) -> int:
        """Drop every key pinned for the host; returns how many lines went."""
        name = host_pattern(address, port)
        try:
            with _locked(self.path) as fd:
                lines = _read_fd(fd).splitlines(keepends=True)
                kept: list[str] = []
                removed = 0
                for line in lines:
                    fields = line.split()
                    if fields and not line.lstrip().startswith("#"):
                        pats = fields[1] if fields[0].startswith("@") and len(fields) > 1 else fields[0]
                        if patterns_match(pats, name):
                            removed += 1
                            continue
                    kept.append(line)
                if removed:
                    self._index, self._seen = None, None
                    data = "".join(kept).encode()
                    os.ftruncate(fd, 0)
                    _write_all(fd, data, 0)
                return removed
        except OSError as err:
            raise KnownHostsFileError(f"cannot edit {self.path}: {err.strerror}") from err


def user_known_hosts() -> list[Entry]:
    """~/.ssh/known_hosts (and known_hosts2), read-only: keys the operator already trusts."""
    found: list[Entry] = []
    for name in ("known_hosts", "known_hosts2"):
        path = Path.home() / ".ssh" / name
        try:
            found.extend(parse(path.read_text(encoding="utf-8", errors="replace")))
        except OSError:
            continue
    return found
