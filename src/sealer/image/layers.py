"""Applying OCI layer tarballs onto a directory, whiteouts included: how an image's rootfs is
materialised for distribution (apply/rootfs.py) and for a build's RUN work tree (image/build.py)."""

from __future__ import annotations

import posixpath
import shutil
import tarfile
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def apply_layer(blob: Path, root: Path, *, lenient: bool = False) -> None:
    """Apply one layer onto root. Entries are extracted with tarfile's "tar" filter (no absolute
    paths, nothing outside root); owners are kept, as extraction runs as root.

    lenient=True (a RUN work tree) skips device nodes and entries the filter refuses; otherwise a
    refused entry raises tarfile.FilterError, since a rootfs bound for hosts must be exactly the image.
    """
    with tarfile.open(blob, mode="r:*") as tar:
        for member in tar:
            name = posixpath.normpath(member.name.lstrip("/"))
            if name.startswith("..") or name == ".":
                continue
            base = posixpath.basename(name)
            parent = root / posixpath.dirname(name)
            if base == ".wh..wh..opq":  # opaque directory: drop what lower layers put there
                if parent.is_dir():
                    for child in parent.iterdir():
                        _remove(child)
                continue
            if base.startswith(".wh."):
                victim = parent / base[4:]
                if victim.exists() or victim.is_symlink():
                    _remove(victim)
                continue
            target = root / name
            if (target.exists() or target.is_symlink()) and not (member.isdir() and target.is_dir()):
                _remove(target)
            if lenient and (member.ischr() or member.isblk() or member.isfifo()):
                continue  # device nodes have no business in a ClusterImage work tree
            member.name = name
            try:
                tar.extract(member, root, set_attrs=True, filter="tar")
            except tarfile.FilterError:
                if not lenient:
                    raise
