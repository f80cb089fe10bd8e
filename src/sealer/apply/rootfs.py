"""The ClusterImage's rootfs for one platform, unpacked once on the operator machine into a cache
(`$SEALER_HOME/cache/rootfs/<image id>/`), split into what every host gets and the registry/ that
only master0 serves; and the pure part of distributing them (which payload goes to which hosts,
which goes host to host, how much disk that takes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sealer.errors import ImageError
from sealer.image.layers import apply_layer
from sealer.image.store import ImageStore, PlatformImage
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


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under root (what a copy of it writes)."""
    total = 0
    for base, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, name)).st_size
    return total


def unpack(store: ImageStore, image: PlatformImage, cache: Path) -> UnpackedImage:
    """Unpack (or reuse) the image's layers under cache/<id>. A crash mid-way leaves no COMPLETE
    marker, so the next run starts the directory afresh. Two sealer processes unpacking the same
    image (two clusters from one image) take turns on a lock file: the second reuses the first's."""
    image_id = image.id
    ident = image_id.split(":", 1)[-1]
    ensure_private_dir(cache)
    fd = os.open(cache / f".{ident}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _unpack_locked(store, image, cache / ident, cache / f".{ident}.partial")
    finally:
        os.close(fd)  # releases the lock


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
