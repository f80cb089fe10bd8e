"""Pure planning for host-to-host fan-out: pieces of a tree, what each host still needs, the byte
layout of the one tar stream every host receives, the forwarding tree and how it re-forms.

No I/O here: the transfer side (fanout.py) reads files, talks to hosts and calls these.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE  # GNU tar's default: 20 blocks
# Files above this are sent as content-addressed chunks, so an interrupted transfer of a large
# file resumes at a chunk boundary instead of from its first byte. Joining chunks costs a copy
# on the host, so they are large: a cut re-sends at most this much of a file in flight.
CHUNK_BYTES = 64 << 20
OPERATOR = ""  # the parent name of a tree's roots: the operator machine feeds them


@dataclass(frozen=True)
class Piece:
    """One tar member of the stream: a whole small file (t/<rel>) or one chunk of a large one
    (c/<file sha256>.<index>). `sha256` is the digest of exactly these bytes."""

    name: str
    size: int
    sha256: str
    mode: int
    mtime: int
    source: str
    offset: int = 0  # where the bytes start in `source`


@dataclass(frozen=True)
class FileSpec:
    """A regular file of the tree and the pieces it is made of."""

    rel: str
    size: int
    sha256: str
    mode: int
    mtime: int
    pieces: tuple[Piece, ...]

    @property
    def chunked(self) -> bool:
        return len(self.pieces) != 1 or self.pieces[0].name.startswith("c/")


def small_name(rel: str) -> str:
    return "t/" + rel


def chunk_name(sha256: str, index: int) -> str:
    return f"c/{sha256}.{index}"


def split(
    rel: str,
    size: int,
    sha256: str,
    mode: int,
    mtime: int,
    source: str,
    chunk_sums: Sequence[str],
    chunk_bytes: int = CHUNK_BYTES,
) -> FileSpec:
    """The FileSpec of one file. chunk_sums: digests of its chunk_bytes-sized slices when
    size > chunk_bytes (ignored otherwise: a small file is one piece, named by its path)."""
    if size <= chunk_bytes:
        piece = Piece(small_name(rel), size, sha256, mode, mtime, source)
        return FileSpec(rel, size, sha256, mode, mtime, (piece,))
    count = -(-size // chunk_bytes)
    if len(chunk_sums) != count:
        raise ValueError(f"{rel}: {len(chunk_sums)} chunk digests for {count} chunks")
    pieces = tuple(
        Piece(
            chunk_name(sha256, i),
            min(chunk_bytes, size - i * chunk_bytes),
            chunk_sums[i],
            0o600,
            mtime,
            source,
            i * chunk_bytes,
        )
        for i in range(count)
    )
    return FileSpec(rel, size, sha256, mode, mtime, pieces)


# ---------------------------------------------------------------- what each host needs


@dataclass(frozen=True)
class HostNeed:
    """For one host: files to (re)create, the pieces it must receive, staged pieces already good,
    and staged leftovers (stale or corrupt) to delete before receiving."""

    files: tuple[FileSpec, ...]
    want: tuple[Piece, ...]
    staged_ok: frozenset[str]
    discard: tuple[str, ...]
    skipped: int  # files already equal at the destination

    @property
    def want_bytes(self) -> int:
        return sum(p.size for p in self.want)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def host_need(
    files: Sequence[FileSpec], dest: Mapping[str, tuple[str, int]], staged: Mapping[str, str]
) -> HostNeed:
    """dest: rel -> (sha256, mode) of regular files at the destination; staged: piece name ->
    sha256 of what the host kept from an earlier, interrupted transfer.

    A staged piece counts only if its digest is right: a corrupt or partial one is discarded
    and received again. That is what makes a re-run continue instead of start over."""
    todo: list[FileSpec] = []
    want: dict[str, Piece] = {}
    ok: set[str] = set()
    skipped = 0
    known: dict[str, str] = {}
    for spec in files:
        for p in spec.pieces:
            known[p.name] = p.sha256
        have = dest.get(spec.rel)
        if have is not None and have == (spec.sha256, spec.mode):
            skipped += 1
            continue
        todo.append(spec)
        for p in spec.pieces:
            if staged.get(p.name) == p.sha256:
                ok.add(p.name)
            else:
                want.setdefault(p.name, p)  # identical content in two files travels once
    useful = ok | set(want)
    # Keep a staged piece only if a file still to be made uses it with this digest.
    discard = tuple(sorted(n for n, sha in staged.items() if n not in useful or known.get(n) != sha))
    return HostNeed(tuple(todo), tuple(want.values()), frozenset(ok), discard, skipped)


# ---------------------------------------------------------------- the stream


def header(piece: Piece) -> bytes:
    """The tar header bytes of a piece (GNU format; long names get their extra blocks)."""
    info = tarfile.TarInfo(piece.name)
    info.size = piece.size
    info.mode = piece.mode
    info.mtime = piece.mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


@dataclass(frozen=True)
class Layout:
    """Where each piece's header starts in the stream, where the members end, and the stream's
    exact length (end-of-archive blocks and record padding included), so any host can be fed
    or re-fed from any offset.

    The length is a whole number of tar records: GNU tar reading a pipe takes whole records
    and exits right after the end-of-archive blocks, so a host's tar finds the end of the
    stream by itself (nothing has to count the bytes in front of it)."""

    pieces: tuple[Piece, ...]
    starts: tuple[int, ...]
    total: int
    end: int  # where the members end and the zero trailer begins

    @classmethod
    def of(cls, pieces: Iterable[Piece]) -> Layout:
        ordered = tuple(pieces)
        starts: list[int] = []
        pos = 0
        for p in ordered:
            starts.append(pos)
            pos += len(header(p)) + padded(p.size)
        return cls(ordered, tuple(starts), -(-(pos + 2 * BLOCK) // RECORD) * RECORD, pos)

    def first_at(self, offset: int) -> int:
        """Index of the piece that contains byte `offset` (len(pieces) if in the trailer)."""
        lo, hi = 0, len(self.starts)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.starts[mid] <= offset:
                lo = mid + 1
            else:
                hi = mid
        return max(lo - 1, 0) if self.starts and offset < self.end else len(self.pieces)


def union(needs: Iterable[HostNeed]) -> tuple[Piece, ...]:
    """Every piece some host of the group wants, once, in a stable order (path order, chunks
    after files; small pieces spread among the large ones, see `spread`), so all hosts of a
    group share one byte stream."""
    seen: dict[str, Piece] = {}
    for need in needs:
        for p in need.want:
            seen.setdefault(p.name, p)
    return spread(sorted(seen.values(), key=lambda p: (p.name.startswith("c/"), p.name)))


SMALL = 1 << 20  # below this a piece costs a host mostly per file (create, list, hash), not per byte


def spread(ordered: Sequence[Piece]) -> tuple[Piece, ...]:
    """The same pieces with the small ones spread evenly among the large ones.

    Every host of a chain reaches the same place in the stream within a second of the others,
    so a run of hundreds of small files makes all hosts pay their per-file costs (create,
    list, hash) at once: on shared CPUs that stalls the whole chain (measured: the last 10% of
    a payload ending in 600 small files took a third of the transfer time). Spread out, the
    same work overlaps the large pieces. A small piece counts as one file, a large one by its
    bytes: each large piece goes where the share of small files sent so far matches the share
    of large bytes sent up to its middle. Order within each kind is kept."""
    small = [p for p in ordered if p.size < SMALL]
    large = [p for p in ordered if p.size >= SMALL]
    if not small or not large:
        return tuple(ordered)
    large_total = sum(p.size for p in large)
    out: list[Piece] = []
    i = large_done = 0
    for p in large:
        target = (large_done + p.size / 2) / large_total
        while i < len(small) and i / len(small) < target:
            out.append(small[i])
            i += 1
        out.append(p)
        large_done += p.size
    out.extend(small[i:])
    return tuple(out)


# ---------------------------------------------------------------- the forwarding tree


@dataclass
class Tree:
    """Who feeds whom. parent[h] is OPERATOR for the roots. Children keep their order."""

    parent: dict[str, str] = field(default_factory=dict)

    def children(self, host: str) -> list[str]:
        return [h for h, p in self.parent.items() if p == host]

    def depth(self, host: str) -> int:
        d = 0
        while (host := self.parent[host]) != OPERATOR:
            d += 1
        return d

    def ancestors(self, host: str) -> list[str]:
        out = []
        while (host := self.parent[host]) != OPERATOR:
            out.append(host)
        return out


def plan_tree(hosts: Sequence[str], *, width: int = 1, degree: int = 1) -> Tree:
    """Hosts in breadth-first order under `width` operator streams, each host forwarding to at
    most `degree` others. width=degree=1 is a chain: every link carries the stream once, so the
    time to reach N hosts is about the time to reach one plus N small pipeline delays."""
    if width < 1 or degree < 1:
        raise ValueError("width and degree must be at least 1")
    tree = Tree()
    slots: list[str] = [OPERATOR] * width
    for i, host in enumerate(hosts):
        tree.parent[host] = slots[i]
        slots.extend([host] * degree)
    return tree


def reroute(tree: Tree, bad: str, offsets: Mapping[str, int], *, drop: bool) -> list[tuple[str, str]]:
    """Route around `bad`: its most advanced child takes its place under bad's parent, the other
    children hang under that child (it has at least as much of the stream as they have).
    drop=True removes bad from the tree (failed); False leaves it as a leaf (slow, still
    receiving). Returns the new (parent, child) links to start."""
    kids = tree.children(bad)
    new_links: list[tuple[str, str]] = []
    if kids:
        kids.sort(key=lambda h: -offsets.get(h, 0))
        lead, rest = kids[0], kids[1:]
        tree.parent[lead] = tree.parent[bad]
        new_links.append((tree.parent[bad], lead))
        for k in rest:
            tree.parent[k] = lead
            new_links.append((lead, k))
    if drop:
        del tree.parent[bad]
    return new_links


# ---------------------------------------------------------------- progress


@dataclass
class Meter:
    """A host's received bytes over time: rate (bytes/s, smoothed) and ETA."""

    total: int
    received: int = 0
    rate: float = 0.0
    last_t: float | None = None
    stalled_since: float | None = None
    alpha: float = 0.4

    def sample(self, t: float, received: int) -> None:
        if self.last_t is not None and t > self.last_t:
            inst = max(received - self.received, 0) / (t - self.last_t)
            self.rate = inst if self.rate == 0.0 else self.alpha * inst + (1 - self.alpha) * self.rate
        if received > self.received or self.last_t is None or received >= self.total:
            self.stalled_since = None
        elif self.stalled_since is None:
            self.stalled_since = self.last_t
        self.received = max(received, self.received)
        self.last_t = t

    def stalled_for(self, t: float) -> float:
        return 0.0 if self.stalled_since is None else t - self.stalled_since

    @property
    def eta(self) -> float | None:
        left = self.total - self.received
        if left <= 0:
            return 0.0
        return left / self.rate if self.rate > 0 else None


def slow_hosts(
    tree: Tree, meters: Mapping[str, Meter], *, ratio: float = 0.5, min_lag: int = 16 << 20
) -> list[str]:
    """Hosts that hold their subtree back: they forward to someone, fall more than min_lag bytes
    behind their parent, and receive at less than `ratio` times their parent's rate (the
    operator counts as infinitely fast). A spool on every host decouples links, so a slow host
    only slows its own subtree, and re-routing that subtree is all it takes."""
    out = []
    for host, parent in tree.parent.items():
        if not tree.children(host) or host not in meters:
            continue
        me = meters[host]
        if me.received >= me.total or me.last_t is None:
            continue
        if parent == OPERATOR:
            continue  # nothing faster to hang its children under
        up = meters.get(parent)
        if up is None or up.received - me.received < min_lag:
            continue
        if me.rate < ratio * up.rate:
            out.append(host)
    return out
