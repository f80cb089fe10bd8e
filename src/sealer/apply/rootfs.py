"""The ClusterImage's rootfs for one platform, unpacked once on the operator machine into a cache
(`$SEALER_HOME/cache/rootfs/<image id>/`), split into what every host gets and the registry/ that
only master0 serves.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from sealer.errors import ImageError
from sealer.image.store import ImageStore, PlatformImage
from sealer.state.files import ensure_private_dir

COMPLETE = ".sealer-complete"


@dataclass(frozen=True)
class UnpackedImage:
    image_id: str  # config digest of this platform's image
    rootfs: Path  # everything but registry/
    registry: Path  # the registry/ directory (may be empty)

    def size(self, with_registry: bool) -> int:
        return _tree_size(self.rootfs) + (_tree_size(self.registry) if with_registry else 0)

    def read_metadata(self) -> str | None:
        """The deprecated `Metadata` file at the rootfs root, if the image has one."""
        path = self.rootfs / "Metadata"
        try:
            return path.read_text(errors="replace")
        except OSError:
            return None


def _tree_size(root: Path) -> int:
    total = 0
    for base, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, name)).st_size
    return total


def _apply_layer(blob: Path, root: Path) -> None:
    with tarfile.open(blob, mode="r:*") as tar:
        for member in tar:
            name = posixpath.normpath(member.name.lstrip("/"))
            if name.startswith("..") or name == ".":
                continue
            base = posixpath.basename(name)
            parent = root / posixpath.dirname(name)
            if base == ".wh..wh..opq":
                if parent.is_dir():
                    for child in parent.iterdir():
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child)
                        else:
                            child.unlink()
                continue
            if base.startswith(".wh."):
                victim = parent / base[4:]
                if victim.is_dir() and not victim.is_symlink():
                    shutil.rmtree(victim)
                elif victim.exists() or victim.is_symlink():
                    victim.unlink()
                continue
            target = root / name
            if (target.exists() or target.is_symlink()) and not (member.isdir() and target.is_dir()):
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            member.name = name
            # filter="tar" refuses absolute paths and links out of the tree; owners are kept as root.
            tar.extract(member, root, set_attrs=True, filter="tar")


def unpack(store: ImageStore, image: PlatformImage, cache: Path) -> UnpackedImage:
    """Unpack (or reuse) the image's layers under cache/<id>. A crash mid-way leaves no COMPLETE
    marker, so the next run starts the directory afresh."""
    image_id = image.id
    ident = image_id.split(":", 1)[-1]
    ensure_private_dir(cache)
    top = cache / ident
    done = UnpackedImage(image_id, top / "rootfs", top / "registry")
    if (top / COMPLETE).exists():
        return done
    if top.exists():
        shutil.rmtree(top)
    work = cache / f".{ident}.partial"
    if work.exists():
        shutil.rmtree(work)
    rootfs = work / "rootfs"
    rootfs.mkdir(parents=True)
    try:
        for layer in image.manifest.layers:
            # verified: a corrupted layer must never reach a host's rootfs
            _apply_layer(store.verified_blob_path(layer.digest), rootfs)
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
