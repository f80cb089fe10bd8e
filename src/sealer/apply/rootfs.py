"""The ClusterImage's rootfs for one platform, unpacked once on the operator machine into a cache
(`$SEALER_HOME/cache/rootfs/<image id>/`), split into what every host gets and the registry/ that
only master0 serves.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
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
