"""Disk hygiene on the operator machine: what `sealer prune` and `sealer rmi` drop that nothing else
ever cleans — the rootfs cache, the build cache, the image store's ingest leftovers and unused blobs.

Everything here is under $SEALER_HOME, and everything is safe while other sealer processes run:
rootfs cache entries are taken with their own lock (skipped while in use), the build cache and blob
GC only while no pull, load or build holds the store, ingest files only once idle for an hour.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealer.apply.rootfs import CachePrune, default_cache_dir, prune_cache, remove_path
from sealer.errors import ImageError
from sealer.image.build import default_build_cache, prune_build_cache
from sealer.image.store import ImageStore, default_store_root

# A pull writes its blob file chunk by chunk, so an ingest file untouched for this long has no
# writer left (HTTP read timeouts are minutes). Younger ones may belong to a live pull on a slow link.
INGEST_IDLE_SECONDS = 3600.0


@dataclass(frozen=True)
class Reclaimed:
    """One thing removed (or, on a dry run, to be removed)."""

    kind: str  # rootfs cache | unpack leftover | build cache (<kind>) | ingest leftover | unused blob
    path: Path
    size: int
    detail: str = ""  # the image id of a cache entry

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "bytes": self.size, "detail": self.detail}


@dataclass
class PruneReport:
    dry_run: bool
    removed: list[Reclaimed] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # sentences: what was left and why

    @property
    def total(self) -> int:
        return sum(r.size for r in self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dryRun": self.dry_run,
            "removed": [r.to_dict() for r in self.removed],
            "skipped": self.skipped,
            "bytes": self.total,
        }


@dataclass(frozen=True)
class PrunePaths:
    """Where the pruned data lives; the defaults follow $SEALER_HOME like the rest of sealer."""

    store: Path
    rootfs_cache: Path
    build_cache: Path

    @classmethod
    def default(cls) -> PrunePaths:
        return cls(default_store_root(), default_cache_dir(), default_build_cache())


def prune(
    *,
    all_rootfs: bool = False,
    build_unused_for: float | None = None,
    dry_run: bool = False,
    paths: PrunePaths | None = None,
    now: float | None = None,
) -> PruneReport:
    """`sealer prune`: rootfs cache entries of images no longer in the store (every one with
    `all_rootfs`) and every `.partial` leftover; the build cache (entries unused for
    `build_unused_for` seconds, or all); ingest files idle for an hour; blobs no image needs."""
    where = paths or PrunePaths.default()
    report = PruneReport(dry_run)
    now = time.time() if now is None else now
    # Opened (created if missing, as `sealer images` does) even with nothing in it: its lock is what
    # tells whether a build is running, whose work files must not be taken for leftovers.
    store = ImageStore(where.store)
    live = store.image_ids()
    _add_cache(report, prune_cache(where.rootfs_cache, keep=None if all_rootfs else live, dry_run=dry_run))
    for path, size in store.ingest_leftovers(INGEST_IDLE_SECONDS, now=now):
        if not dry_run:
            remove_path(path)
        report.removed.append(Reclaimed("ingest leftover", path, size))
    with store.exclusive() as idle:
        if not idle:
            report.skipped.append(
                "build cache and unused blobs: a pull, load or build is running right now; "
                "run `sealer prune` again when it has finished"
            )
            return report
        entries = prune_build_cache(where.build_cache, unused_for=build_unused_for, dry_run=dry_run, now=now)
        report.removed += [Reclaimed(f"build cache ({e.kind})", e.path, e.size) for e in entries]
        for path, size in store.unreferenced_blobs(delete=not dry_run):
            report.removed.append(Reclaimed("unused blob", path, size))
    return report


def drop_rootfs_cache(image_ids: set[str], *, store: ImageStore, cache: Path | None = None) -> PruneReport:
    """After `rmi`: remove the rootfs cache entries of `image_ids` that no image in the store still
    has (another name may share the same image), skipping entries a live process uses."""
    report = PruneReport(dry_run=False)
    gone = image_ids - store.image_ids()
    if gone:
        _add_cache(report, prune_cache(cache or default_cache_dir(), only=gone))
    return report


def image_ids_of(store: ImageStore, names: list[str]) -> set[str]:
    """The platform image ids the given names (as `rmi` takes them) resolve to in the store now."""
    ids: set[str] = set()
    for name in names:
        for record in store.find(name):
            try:
                ids |= {image.id for image in store.details(record).images}
            except ImageError:
                continue  # unreadable: its ids are unknown; `sealer prune` drops its cache entry later
    return ids


def _add_cache(report: PruneReport, result: CachePrune) -> None:
    for item in result.removed:
        kind = "unpack leftover" if item.partial else "rootfs cache"
        report.removed.append(Reclaimed(kind, item.path, item.size, item.image_id))
    for image_id in result.in_use:
        report.skipped.append(
            f"rootfs cache of {image_id[:19]}: in use by another sealer process (left in place)"
        )
