"""OCI archives (a tar of an OCI image layout): `sealer save` writes them, `sealer load` reads them.

Compatible with `skopeo copy ... oci-archive:FILE` in both directions. Loading streams the tar once,
verifies every blob by digest, and names images only after everything they need is in the store.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sealer.errors import ImageError
from sealer.image import oci
from sealer.image.oci import Descriptor
from sealer.image.reference import Reference, parse_reference
from sealer.image.store import ImageRecord, ImageStore, disk_error

COPY_BUFSIZE = 1 << 20

ArchiveProgress = Callable[[str, int], None]  # (what, bytes so far)


@dataclass
class LoadResult:
    names: list[str] = field(default_factory=list)
    blobs_loaded: int = 0
    blobs_present: int = 0
    bytes_loaded: int = 0


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0  # reproducible archives: same images, same bytes
    return info


def save(
    store: ImageStore, names: list[str], output: Path, progress: ArchiveProgress | None = None
) -> list[str]:
    """Write the named images (whole, every local platform) into one OCI archive at `output`."""
    if not names:
        raise ImageError("nothing to save", "name at least one image")
    records: list[ImageRecord] = []
    for name in names:
        rec = store.resolve(name)
        if rec.name not in {r.name for r in records}:
            records.append(rec)
    blobs: dict[str, None] = {}
    for rec in records:
        if missing := store.missing_blobs(rec.descriptor):
            raise ImageError(
                f"image {rec.name} is incomplete in the local store: blob {missing[0]} is missing",
                "pull or load it again, then save",
            )
        for digest in sorted(store.reachable(rec.descriptor)):
            if store.has_blob(digest):
                blobs[digest] = None
    entries = []
    for rec in records:
        ann = {oci.ANNOTATION_REF_NAME: rec.name, oci.ANNOTATION_CONTAINERD_NAME: rec.name}
        entries.append(rec.descriptor.with_annotations(ann).to_json())
    index = json.dumps({"schemaVersion": 2, "mediaType": oci.MEDIA_OCI_INDEX, "manifests": entries}).encode()
    layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
    output = output.resolve()
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    except OSError as err:
        raise ImageError(f"cannot write {output}: {err.strerror or err}")
    tmp = Path(tmp_name)
    done = 0
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT, bufsize=COPY_BUFSIZE) as tar,
        ):
            setattr(tar, "copybufsize", COPY_BUFSIZE)  # noqa: B010 (not in typeshed; 16 KiB copies are slow)
            tar.addfile(_tarinfo("oci-layout", len(layout)), io.BytesIO(layout))
            tar.addfile(_tarinfo("index.json", len(index)), io.BytesIO(index))
            for digest in blobs:
                path = store.blob_path(digest)
                size = path.stat().st_size
                with store.open_blob(digest) as reader:
                    # VerifyingReader raises at the end of a corrupt blob: never archive bad data.
                    tar.addfile(_tarinfo(f"blobs/sha256/{digest.split(':', 1)[1]}", size), reader)
                done += size
                if progress:
                    progress(digest, done)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise disk_error(err, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return [r.name for r in records]


def _entry_name(desc: Descriptor, archive: Path) -> str:
    name = desc.annotations.get(oci.ANNOTATION_CONTAINERD_NAME) or desc.annotations.get(
        oci.ANNOTATION_REF_NAME
    )
    if not name:
        raise ImageError(
            f"{archive}: an image in index.json ({desc.digest[:19]}) has no name",
            "re-create the archive with a name, e.g. skopeo copy ... oci-archive:FILE:registry/repo:tag",
        )
    if "/" not in name and ":" not in name and "@" not in name:
        raise ImageError(
            f"{archive}: image {desc.digest[:19]} is named only by the tag {name!r}, without a repository",
            "re-create the archive with a full name, e.g. skopeo copy ... oci-archive:FILE:registry/repo:tag",
        )
    ref: Reference = parse_reference(name)
    return str(ref)


def load(store: ImageStore, archive: Path, progress: ArchiveProgress | None = None) -> LoadResult:
    """Import every named image of an OCI archive (plain or gzip tar)."""
    result = LoadResult()
    index_data: bytes | None = None
    saw_layout = False
    saw_docker_manifest = False
    truncated_hint = (
        "the file is incomplete or damaged; copy it again (compare its sha256sum with the source)"
    )
    try:
        fileobj = archive.open("rb")
    except OSError as err:
        raise ImageError(f"cannot open archive {archive}: {err.strerror or err}")
    with store.ingest(), fileobj:
        try:
            with tarfile.open(fileobj=fileobj, mode="r|*", bufsize=COPY_BUFSIZE) as tar:
                for member in tar:
                    name = member.name.removeprefix("./").lstrip("/")
                    if not member.isfile():
                        continue
                    if name == "oci-layout":
                        saw_layout = True
                        continue
                    if name == "index.json":
                        f = tar.extractfile(member)
                        assert f is not None
                        index_data = f.read()
                        continue
                    if name == "manifest.json":
                        saw_docker_manifest = True
                        continue
                    parts = name.split("/")
                    if len(parts) != 3 or parts[0] != "blobs":
                        continue
                    if parts[1] != "sha256":
                        raise ImageError(f"{archive}: unsupported digest algorithm in {name}", "only sha256")
                    digest = oci.check_digest(f"sha256:{parts[2]}", f"{archive}: {name}")
                    if store.has_blob(digest, member.size):
                        result.blobs_present += 1
                        continue
                    f = tar.extractfile(member)
                    assert f is not None
                    with store.writer(digest, member.size) as w:
                        while data := f.read(COPY_BUFSIZE):
                            w.write(data)
                            if progress:
                                progress(digest, result.bytes_loaded + w.size)
                        if w.size != member.size:
                            raise tarfile.ReadError("unexpected end of data")
                        try:
                            w.commit()
                        except ImageError as err:
                            raise ImageError(f"{archive}: {name}: {err.message}", truncated_hint)
                    result.blobs_loaded += 1
                    result.bytes_loaded += member.size
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise ImageError(f"archive {archive} is truncated or not a valid tar: {err}", truncated_hint)
        except OSError as err:
            raise ImageError(f"cannot read archive {archive}: {err.strerror or err}")
        if index_data is None:
            if saw_docker_manifest:
                raise ImageError(
                    f"{archive} is a docker-archive, not an OCI archive",
                    f"convert it: skopeo copy docker-archive:{archive} oci-archive:{archive}.oci:<name>",
                )
            raise ImageError(
                f"{archive} has no index.json: it is not an OCI archive"
                + ("" if saw_layout else " (no oci-layout)"),
                "create archives with `sealer save` or `skopeo copy ... oci-archive:FILE:NAME`",
            )
        doc = oci.load_json(index_data, f"{archive}: index.json")
        raw = doc.get("manifests")
        if not isinstance(raw, list) or not raw:
            raise ImageError(f"{archive}: index.json lists no images")
        named: list[tuple[str, Descriptor]] = []
        for i, item in enumerate(raw):
            desc = Descriptor.from_json(item, f"{archive}: index.json manifests[{i}]")
            name = _entry_name(desc, archive)
            _check_complete(store, desc, archive)
            named.append((name, Descriptor(desc.media_type, desc.digest, desc.size)))
        for name, desc in named:
            store.tag(name, desc)
            result.names.append(name)
    return result


def _check_complete(store: ImageStore, desc: Descriptor, archive: Path) -> None:
    missing = store.missing_blobs(desc)
    if missing:
        raise ImageError(
            f"archive {archive} is incomplete: blob {missing[0]} (and {len(missing) - 1} more) is missing",
            "the archive was truncated or built wrongly; nothing was imported",
        )
