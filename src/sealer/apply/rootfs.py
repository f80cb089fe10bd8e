"""The ClusterImage's rootfs for one platform, unpacked once on the operator machine into a cache
(`$SEALER_HOME/cache/rootfs/<image id>/`), split into what every host gets and the registry/ that
only master0 serves; and the pure part of distributing them (which payload goes to which hosts,
which goes host to host, how much disk that takes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tarfile
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sealer.errors import ImageError
from sealer.image.layers import apply_layer
from sealer.image.store import ImageStore, PlatformImage, sealer_home, tree_bytes
from sealer.state.files import ensure_private_dir

COMPLETE = ".sealer-complete"


@dataclass(frozen=True)
class UnpackedImage:
    image_id: str  # config digest of this platform's image
    rootfs: Path  # everything but registry/
    registry: Path  # the registry/ directory (may be empty)

    def size(self, with_registry: bool) -> int:
        return tree_bytes(self.rootfs) + (tree_bytes(self.registry) if with_registry else 0)

    def read_metadata(self) -> str | None:
        """The deprecated `Metadata` file at the rootfs root, if the image has one."""
        path = self.rootfs / "Metadata"
        try:
            return path.read_text(errors="replace")
        except OSError:
            return None


def unpack(store: ImageStore, image: PlatformImage, cache: Path) -> UnpackedImage:
    """Unpack (or reuse) the image's layers under cache/<id>. A crash mid-way leaves no COMPLETE
    marker, so the next run starts the directory afresh. Two sealer processes unpacking the same
    image (two clusters from one image) take turns on a lock file: the second reuses the first's.

    The entry is read long after this returns (the distribution), so this process keeps a shared
    hold on the lock file until it ends (or `release_cache_holds()`): `sealer prune` and `rmi` take
    it exclusively without waiting, and skip an entry in use instead of deleting it under a run."""
    image_id = image.id
    ident = image_id.split(":", 1)[-1]
    ensure_private_dir(cache)
    lock_path = cache / f".{ident}.lock"
    top, work = cache / ident, cache / f".{ident}.partial"
    # Threads of one process share the held descriptor, and flock does not tell them apart.
    with _held_guard:
        while True:
            fd = _held.pop(lock_path, None)
            if fd is None:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)  # waits while another process unpacks or prunes it
                if not _same_file(fd, lock_path):
                    os.close(fd)  # pruned meanwhile (the lock file went with the entry): start over
                    continue
                if not (top / COMPLETE).exists():
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    if not _same_file(fd, lock_path):
                        os.close(fd)
                        continue
                    _unpack_locked(store, image, top, work)
                    # Not atomic (flock drops, then takes): a prune may slip in, so look again.
                    fcntl.flock(fd, fcntl.LOCK_SH)
                    if not _same_file(fd, lock_path) or not (top / COMPLETE).exists():
                        os.close(fd)
                        continue
            except BaseException:
                os.close(fd)
                raise
            _held[lock_path] = fd
            return UnpackedImage(image_id, top / "rootfs", top / "registry")


# Lock files of the cache entries this process uses, held shared until it ends (see `unpack`).
_held: dict[Path, int] = {}
_held_guard = threading.Lock()


def release_cache_holds() -> None:
    """Let go of every rootfs cache entry this process uses (for long-lived callers and tests)."""
    with _held_guard:
        while _held:
            _, fd = _held.popitem()
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """Whether `fd` is still the file at `path` (a prune unlinks an entry's lock file with it)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _unpack_locked(store: ImageStore, image: PlatformImage, top: Path, work: Path) -> UnpackedImage:
    image_id = image.id
    done = UnpackedImage(image_id, top / "rootfs", top / "registry")
    if (top / COMPLETE).exists():
        return done
    if top.exists():
        shutil.rmtree(top)
    if work.exists():
        shutil.rmtree(work)
    rootfs = work / "rootfs"
    rootfs.mkdir(parents=True)
    try:
        for layer in image.manifest.layers:
            # verified: a corrupted layer must never reach a host's rootfs
            apply_layer(store.verified_blob_path(layer.digest), rootfs)
    except (OSError, tarfile.TarError) as err:
        shutil.rmtree(work, ignore_errors=True)
        raise ImageError(f"cannot unpack image {image_id}: {err}", "check free space in SEALER_HOME")
    registry = work / "registry"
    if (rootfs / "registry").is_dir():
        os.rename(rootfs / "registry", registry)
    else:
        registry.mkdir()
    (work / COMPLETE).write_text(image_id + "\n")
    os.rename(work, top)
    return done


# pruning the cache ------------------------------------------------------------------------------
_ENTRY = re.compile(r"^\.?([0-9a-f]{64,128})(\.partial|\.lock)?$")


def default_cache_dir() -> Path:
    """Where `sealer run` and friends unpack images: `$SEALER_HOME/cache/rootfs`."""
    return sealer_home() / "cache" / "rootfs"


@dataclass(frozen=True)
class CacheRemoval:
    """One thing a cache prune removed (or would remove, on a dry run)."""

    image_id: str
    path: Path
    size: int
    partial: bool  # a `.partial` leftover of an unpack that crashed


@dataclass
class CachePrune:
    removed: list[CacheRemoval] = field(default_factory=list)
    in_use: list[str] = field(default_factory=list)  # image ids skipped: a live process holds them


def prune_cache(
    cache: Path,
    *,
    keep: Collection[str] | None = None,
    only: Collection[str] | None = None,
    dry_run: bool = False,
) -> CachePrune:
    """Remove rootfs cache entries under `cache`: those of images not in `keep` (None: keep none),
    restricted to the image ids in `only` when given, and every `.partial` leftover. Each entry's
    lock is taken exclusively without waiting, as `unpack` takes it, so an entry being unpacked
    or used by a live sealer process is skipped (reported in `in_use`). Only names the cache
    itself creates are touched; a symlink is removed as a link, never followed."""
    keep_set = set(keep or ())
    only_set = None if only is None else set(only)
    idents: dict[str, list[Path]] = {}
    try:
        names = sorted(cache.iterdir())
    except FileNotFoundError:
        return CachePrune()
    for path in names:
        match = _ENTRY.match(path.name)
        if match is None or (path.name.startswith(".") != bool(match.group(2))):
            continue  # not a name the cache makes: leave it alone
        idents.setdefault(match.group(1), []).append(path)
    result = CachePrune()
    for ident, paths in idents.items():
        image_id = f"sha256:{ident}" if len(ident) == 64 else ident
        if only_set is not None and image_id not in only_set:
            continue
        kept = image_id in keep_set
        top, partial, lock_path = cache / ident, cache / f".{ident}.partial", cache / f".{ident}.lock"
        doomed = [p for p in ([partial] if kept else [top, partial]) if p in paths]
        if not doomed and (kept or lock_path not in paths):
            continue
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as err:
            raise ImageError(
                f"cannot open the rootfs cache lock {lock_path}: {err.strerror or err}",
                "check its owner and permissions (it must be a plain file)",
            ) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                result.in_use.append(image_id)
                continue
            if not _same_file(fd, lock_path):
                result.in_use.append(image_id)  # another prune took it away under us
                continue
            for path in doomed:
                size = tree_bytes(path) if path.is_dir() and not path.is_symlink() else _lsize(path)
                if not dry_run:
                    remove_path(path)
                result.removed.append(CacheRemoval(image_id, path, size, path == partial))
            if not kept and not dry_run:
                # Unlinked while held: a waiter on this file sees it is gone and opens a new one.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock_path)
        finally:
            os.close(fd)
    return result


def _lsize(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def remove_path(path: Path) -> None:
    """Remove a file, a symlink (never followed) or a directory tree that prune or rmi found; gone
    already is fine."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return
    except OSError as err:
        raise ImageError(
            f"cannot remove {path}: {err.strerror or err}",
            "check its owner and permissions; the command can be run again",
        ) from None


# distribution plan ---------------------------------------------------------------------------------
# `--distributor`: "ssh" sends every host its data straight from this machine; "fanout" sends each
# payload out of this machine once and lets the hosts pass it on (infra/fanout.py); "auto" fans out
# a payload only when at least AUTO_FANOUT_MIN_HOSTS hosts need it. Why that number:
# bench/run_distribute.py and docs/distribution.md ("The run pipeline").
DISTRIBUTORS = ("auto", "ssh", "fanout")
AUTO_FANOUT_MIN_HOSTS = 3
# Room for the runtime's own data on top of the image (containerd content, logs, etcd).
RUNTIME_MARGIN = 0.25


@dataclass(frozen=True)
class Payload:
    """One tree that a set of hosts needs at the same place: a platform's rootfs for the hosts of
    that platform, or the registry data for the hosts that serve the private registry."""

    kind: str  # "rootfs" | "registry"
    label: str  # for people: "rootfs", "rootfs (arm64)", "registry data"
    src: Path
    dst: str
    hosts: tuple[str, ...]  # host IPs, in the cluster's order


def payloads(
    rootfs_of: Mapping[str, tuple[str, UnpackedImage]],
    registry_hosts: Sequence[str],
    dst: str,
) -> list[Payload]:
    """What must travel: `rootfs_of` maps each host IP (in the cluster's order) to (arch, its
    platform's unpacked image); `registry_hosts` also get that image's registry/ directory."""
    arches = {arch for arch, _ in rootfs_of.values()}
    out: list[Payload] = []
    serving = [ip for ip in rootfs_of if ip in registry_hosts]
    for kind, members in (("rootfs", list(rootfs_of)), ("registry", serving)):
        groups: dict[Path, list[str]] = {}
        arch_of: dict[Path, str] = {}
        for ip in members:
            arch, unpacked = rootfs_of[ip]
            src = unpacked.rootfs if kind == "rootfs" else unpacked.registry
            groups.setdefault(src, []).append(ip)
            arch_of[src] = arch
        for src, ips in groups.items():
            name = "rootfs" if kind == "rootfs" else "registry data"
            label = f"{name} ({arch_of[src]})" if len(arches) > 1 else name
            out.append(Payload(kind, label, src, dst if kind == "rootfs" else f"{dst}/registry", tuple(ips)))
    return out


def fans_out(distributor: str, payload: Payload) -> bool:
    """Whether `payload` goes host to host under `distributor`. One host needing it is always one
    direct stream: nobody could pass it on, and the fan-out's set-up would be pure cost."""
    if distributor not in DISTRIBUTORS:
        raise ValueError(f"unknown distributor {distributor!r}")
    n = len(payload.hosts)
    if distributor == "ssh" or n < 2:
        return False
    return distributor == "fanout" or n >= AUTO_FANOUT_MIN_HOSTS


def disk_need(sizes: Mapping[str, int], fanned: Mapping[str, bool]) -> int:
    """Bytes a host's dataRoot filesystem must have free for its payloads (`sizes`: kind -> bytes;
    `fanned`: kind -> sent host to host). A fanned-out payload is held twice while it arrives (the
    spool and the extracted files, docs/distribution.md), then the spool goes; afterwards the
    runtime needs a margin on top of the data. The need is the larger of the two moments."""
    data = sum(sizes.values())
    spooled = sum(size for kind, size in sizes.items() if fanned.get(kind))
    return data + max(spooled, int(data * RUNTIME_MARGIN))
