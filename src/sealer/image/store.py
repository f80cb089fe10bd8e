"""The local image store: an OCI image layout under `<SEALER_HOME or ~/.sealer>/images`.

Blobs are content-addressed, verified on write (temp file + rename) and on read; `index.json` is the
only mutable file and is replaced atomically under an fcntl lock, after everything it names is on disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sealer.errors import ImageError
from sealer.image import oci
from sealer.image.oci import Descriptor, Index, Manifest, Platform
from sealer.image.reference import Reference, is_digest, parse_reference

OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}
READ_CHUNK = 1 << 20
# Manifests and configs are read whole into memory; anything bigger is not a manifest.
MAX_DOCUMENT_SIZE = 16 << 20


def sealer_home() -> Path:
    env = os.environ.get("SEALER_HOME")
    return Path(env) if env else Path.home() / ".sealer"


def default_store_root() -> Path:
    return sealer_home() / "images"


def disk_error(err: OSError, path: Path) -> ImageError:
    """An OSError from writing `path` as an ImageError a person can act on (ENOSPC above all)."""
    if err.errno == errno.ENOSPC:
        return ImageError(
            f"no space left on device while writing {path}",
            f"free space on the file system of {path.parent} (or set SEALER_HOME elsewhere) and retry; "
            "the store is unchanged",
        )
    if err.errno == errno.EDQUOT:
        return ImageError(f"disk quota exceeded while writing {path}", "free space and retry")
    return ImageError(f"cannot write {path}: {err.strerror or err}", "check permissions and free space")


class BlobWriter:
    """Streams one blob into the store: hashed as written, renamed into place only if the digest matches."""

    def __init__(self, store: ImageStore, expected_digest: str | None, expected_size: int | None) -> None:
        self._store = store
        self.expected_digest = expected_digest
        self.expected_size = expected_size
        self._hash = hashlib.sha256()
        self.size = 0
        fd, name = tempfile.mkstemp(prefix="blob-", dir=store.ingest_dir)
        self._tmp = Path(name)
        self._file: IO[bytes] | None = os.fdopen(fd, "wb")
        self.digest: str | None = None

    def write(self, data: bytes) -> None:
        assert self._file is not None, "write after commit/abort"
        if self.expected_size is not None and self.size + len(data) > self.expected_size:
            self.abort()
            raise ImageError(
                f"blob {self.expected_digest} is larger than its declared size {self.expected_size}",
                "the source is corrupt or not what its manifest says",
            )
        self._hash.update(data)
        self.size += len(data)
        try:
            self._file.write(data)
        except OSError as err:
            self.abort()
            raise disk_error(err, self._tmp)

    def commit(self) -> Descriptor:
        """Verify and move into place; returns a descriptor (media type left empty)."""
        assert self._file is not None, "commit after commit/abort"
        try:
            self._file.close()
        except OSError as err:
            self._file = None
            self._tmp.unlink(missing_ok=True)
            raise disk_error(err, self._tmp)
        self._file = None
        digest = "sha256:" + self._hash.hexdigest()
        if self.expected_digest is not None and digest != self.expected_digest:
            self._tmp.unlink(missing_ok=True)
            raise ImageError(
                f"digest mismatch: expected {self.expected_digest}, received content hashes to {digest}",
                "the source served corrupt or tampered data; nothing was stored — retry, or check the source",
            )
        if self.expected_size is not None and self.size != self.expected_size:
            self._tmp.unlink(missing_ok=True)
            raise ImageError(
                f"blob {digest} is {self.size} bytes, its descriptor says {self.expected_size}",
                "the transfer was truncated; retry",
            )
        target = self._store.blob_path(digest)
        if target.exists() and target.stat().st_size == self.size:
            self._tmp.unlink(missing_ok=True)  # de-duplicated: identical content already stored
        else:
            os.chmod(self._tmp, 0o644)
            os.replace(self._tmp, target)
        self.digest = digest
        return Descriptor("", digest, self.size)

    def abort(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._file is not None:
            self.abort()


class VerifyingReader:
    """A file-like reader over a stored blob that raises ImageError at EOF if the content is corrupt."""

    def __init__(self, path: Path, digest: str, size: int) -> None:
        self._path = path
        self._file = path.open("rb")
        self._hash = hashlib.sha256()
        self._digest = digest
        self._size = size
        self._read = 0

    def read(self, n: int = -1) -> bytes:
        data = self._file.read(n)
        self._hash.update(data)
        self._read += len(data)
        if not data or (n < 0) or self._read == self._size:
            self._check()
        return data

    def _check(self) -> None:
        actual = "sha256:" + self._hash.hexdigest()
        if self._read != self._size or actual != self._digest:
            raise _corrupt(self._digest, actual, str(self._path))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> VerifyingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


CORRUPT_HINT = (
    "the bad blob was deleted so it cannot be used again; `sealer pull` or `sealer load` the image "
    "to restore it (or `sealer rmi --force` it)"
)


def _corrupt(expected: str, actual: str, path: str) -> ImageError:
    # Delete it at once: a later pull then fetches it fresh instead of trusting a same-sized file.
    with contextlib.suppress(OSError):
        os.unlink(path)
    return ImageError(
        f"corrupt blob in the image store: {path} should hash to {expected}, it hashes to {actual}",
        CORRUPT_HINT,
    )


@dataclass
class ImageRecord:
    """One named entry of index.json."""

    name: str
    descriptor: Descriptor

    @property
    def reference(self) -> Reference:
        return parse_reference(self.name)


@dataclass
class PlatformImage:
    """One runnable image (manifest + config), possibly a member of an index."""

    descriptor: Descriptor
    manifest: Manifest
    config: dict[str, Any]
    platform: Platform | None

    @property
    def id(self) -> str:
        return self.manifest.config.digest


@dataclass
class ImageDetails:
    record: ImageRecord
    is_index: bool
    images: list[PlatformImage] = field(default_factory=list)
    missing_platforms: list[Platform] = field(default_factory=list)

    @property
    def id(self) -> str:
        # Docker's convention: a single-platform image is identified by its config digest.
        if not self.is_index and self.images:
            return self.images[0].id
        return self.record.descriptor.digest


class ImageStore:
    """An OCI image layout directory shared by every sealer process on this machine."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_store_root()
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.ingest_dir = self.root / "ingest"
        self.index_path = self.root / "index.json"
        self._verified: set[tuple[str, int, int, int]] = set()
        self._ensure()

    # ----------------------------------------------------------------- layout
    def _ensure(self) -> None:
        try:
            # exist_ok: another sealer process may create the store at the same moment
            self.root.mkdir(parents=True, mode=0o700, exist_ok=True)
            self.blobs_dir.mkdir(parents=True, exist_ok=True)
            self.ingest_dir.mkdir(exist_ok=True)
            layout = self.root / "oci-layout"
            if not layout.exists():
                self._atomic_write(layout, json.dumps(OCI_LAYOUT).encode())
            if not self.index_path.exists():
                with self._index_lock():
                    if not self.index_path.exists():
                        self._write_index([])
        except OSError as err:
            raise ImageError(
                f"cannot create the image store at {self.root}: {err.strerror or err}",
                "set SEALER_HOME to a writable directory",
            )

    def _atomic_write(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as err:
            Path(tmp).unlink(missing_ok=True)
            raise disk_error(err, path)

    @contextlib.contextmanager
    def _flock(self, name: str, mode: int) -> Iterator[bool]:
        fd = os.open(self.root / name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, mode)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def _index_lock(self) -> contextlib.AbstractContextManager[bool]:
        return self._flock("index.lock", fcntl.LOCK_EX)

    def ingest(self) -> contextlib.AbstractContextManager[bool]:
        """Hold while writing blobs that are not yet referenced by index.json, so GC leaves them alone."""
        return self._flock("gc.lock", fcntl.LOCK_SH)

    # ----------------------------------------------------------------- blobs
    def blob_path(self, digest: str) -> Path:
        oci.check_digest(digest, "blob")
        return self.blobs_dir / digest.split(":", 1)[1]

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        try:
            st = self.blob_path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def writer(self, expected_digest: str | None = None, expected_size: int | None = None) -> BlobWriter:
        if expected_digest is not None:
            oci.check_digest(expected_digest, "blob")
        try:
            return BlobWriter(self, expected_digest, expected_size)
        except OSError as err:
            raise disk_error(err, self.ingest_dir / "blob")

    def put_blob(self, data: bytes, expected_digest: str | None = None, media_type: str = "") -> Descriptor:
        with self.writer(expected_digest, None) as w:
            w.write(data)
            desc = w.commit()
        return Descriptor(media_type, desc.digest, desc.size)

    def put_blob_stream(
        self,
        chunks: Iterable[bytes],
        expected_digest: str | None = None,
        expected_size: int | None = None,
        media_type: str = "",
    ) -> Descriptor:
        with self.writer(expected_digest, expected_size) as w:
            for chunk in chunks:
                w.write(chunk)
            desc = w.commit()
        return Descriptor(media_type, desc.digest, desc.size)

    def put_blob_file(
        self, path: Path, expected_digest: str | None = None, media_type: str = ""
    ) -> Descriptor:
        """Copy a file (e.g. a layer tarball the builder produced) into the store."""

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as f:
                while data := f.read(READ_CHUNK):
                    yield data

        return self.put_blob_stream(chunks(), expected_digest, media_type=media_type)

    def _stat_blob(self, digest: str) -> tuple[Path, int]:
        path = self.blob_path(digest)
        try:
            return path, path.stat().st_size
        except FileNotFoundError:
            raise ImageError(
                f"blob {digest} is missing from the image store ({self.root})",
                "pull or load the image again",
            )

    def open_blob(self, digest: str, size: int | None = None) -> VerifyingReader:
        path, actual_size = self._stat_blob(digest)
        if size is not None and actual_size != size:
            raise _corrupt(digest, f"<{actual_size} bytes, expected {size}>", str(path))
        return VerifyingReader(path, digest, actual_size)

    def read_blob(self, digest: str, max_size: int = MAX_DOCUMENT_SIZE) -> bytes:
        path, size = self._stat_blob(digest)
        if size > max_size:
            raise ImageError(f"blob {digest} is {size} bytes, too large to be a manifest or config")
        data = path.read_bytes()
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise _corrupt(digest, actual, str(path))
        return data

    def verify_blob(self, digest: str) -> None:
        with self.open_blob(digest) as r:
            while r.read(READ_CHUNK):
                pass

    def verified_blob_path(self, digest: str) -> Path:
        """The path of a blob whose content was just checked against its digest (for readers that open
        files themselves, e.g. tarfile). Checked once per process while the file is unchanged."""
        path, _ = self._stat_blob(digest)
        st = path.stat()
        key = (digest, st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self._verified:
            self.verify_blob(digest)
            self._verified.add(key)
        return path

    def verify_image(self, record: ImageRecord) -> int:
        """Hash every local blob of an image (all local platforms); returns bytes checked."""
        total = 0
        for digest in sorted(self.reachable(record.descriptor)):
            if self.has_blob(digest):
                self.verify_blob(digest)
                total += self.blob_path(digest).stat().st_size
        return total

    def read_json(self, digest: str, what: str = "document") -> dict[str, Any]:
        return oci.load_json(self.read_blob(digest), f"{what} {digest}")

    # ----------------------------------------------------------------- documents
    def put_manifest(
        self, manifest: bytes, media_type: str | None = None, *, partial: bool = False
    ) -> Descriptor:
        """Store an image manifest or index after checking every blob it needs is already here.

        `partial` allows an index of which only some platforms are local (a single-platform pull).
        """
        doc = oci.load_json(manifest, "manifest")
        media = oci.detect_media_type(doc, media_type or "")
        if media in oci.INDEX_TYPES:
            children = Index.parse(manifest).manifests
            missing = [d for d in children if not self.has_blob(d.digest)]
            if missing and not (partial and len(missing) < len(children)):
                raise ImageError(f"index refers to manifest {missing[0].digest} which is not in the store")
        elif media in oci.MANIFEST_TYPES:
            for d in Manifest.parse(manifest).blobs():
                if not self.has_blob(d.digest, d.size):
                    raise ImageError(f"manifest refers to blob {d.digest} which is not in the store")
        else:
            raise ImageError(f"unsupported manifest media type {media!r}")
        return self.put_blob(manifest, media_type=media)

    def commit_image(
        self,
        name: Reference | str | None,
        config: dict[str, Any],
        layers: list[Descriptor],
        annotations: dict[str, str] | None = None,
    ) -> Descriptor:
        """Write an image's config and manifest for layers already in the store, then name it.

        The builder's last step: stream each layer in with `writer()`/`put_blob_file()` while holding
        `ingest()`, then call this (still inside `ingest()`); the name appears only now.
        """
        for layer in layers:
            if not layer.media_type:
                raise ImageError(f"layer {layer.digest} has no media type", "pass the layer's OCI media type")
        config_desc = self.put_blob(oci.encode_json(config), media_type=oci.MEDIA_OCI_CONFIG)
        desc = self.put_manifest(oci.new_manifest(config_desc, layers, annotations), oci.MEDIA_OCI_MANIFEST)
        if name is not None:
            self.tag(name, desc)
        return desc

    def commit_index(
        self,
        name: Reference | str | None,
        manifests: list[Descriptor],
        annotations: dict[str, str] | None = None,
    ) -> Descriptor:
        """Write a multi-platform index over manifests already in the store (each with its platform)."""
        for m in manifests:
            if m.platform is None:
                raise ImageError(f"index entry {m.digest} has no platform", "set Descriptor.platform")
        kids = [
            Descriptor(m.media_type or oci.MEDIA_OCI_MANIFEST, m.digest, m.size, platform=m.platform)
            for m in manifests
        ]
        desc = self.put_manifest(oci.new_index(kids, annotations), oci.MEDIA_OCI_INDEX)
        if name is not None:
            self.tag(name, desc)
        return desc

    def load_manifest(self, desc: Descriptor) -> Manifest:
        return Manifest.parse(self.read_blob(desc.digest), f"manifest {desc.digest}")

    def load_index(self, desc: Descriptor) -> Index:
        return Index.parse(self.read_blob(desc.digest), f"index {desc.digest}")

    def is_index(self, desc: Descriptor) -> bool:
        if desc.media_type in oci.INDEX_TYPES:
            return True
        if desc.media_type in oci.MANIFEST_TYPES:
            return False
        return oci.detect_media_type(self.read_json(desc.digest)) in oci.INDEX_TYPES

    # ----------------------------------------------------------------- index.json
    def _read_index(self) -> list[Descriptor]:
        try:
            data = self.index_path.read_bytes()
        except FileNotFoundError:
            return []
        doc = oci.load_json(data, f"{self.index_path}")
        raw = doc.get("manifests") or []
        if not isinstance(raw, list):
            raise ImageError(f"{self.index_path}: `manifests` must be an array", "restore or delete the file")
        return [Descriptor.from_json(x, f"{self.index_path} manifests[{i}]") for i, x in enumerate(raw)]

    def _write_index(self, entries: list[Descriptor]) -> None:
        doc = {
            "schemaVersion": 2,
            "mediaType": oci.MEDIA_OCI_INDEX,
            "manifests": [e.to_json() for e in entries],
        }
        self._atomic_write(self.index_path, json.dumps(doc, indent=1).encode())

    def update_index(self, change: Callable[[list[Descriptor]], list[Descriptor]]) -> None:
        """Read-modify-write index.json under the store lock (safe against other sealer processes)."""
        with self._index_lock():
            self._write_index(change(self._read_index()))

    def records(self) -> list[ImageRecord]:
        out = []
        for d in self._read_index():
            name = d.annotations.get(oci.ANNOTATION_REF_NAME)
            if name:
                out.append(ImageRecord(name, d))
        return out

    def tag(self, name: Reference | str, desc: Descriptor) -> None:
        """Point `name` at a manifest or index already in the store (replacing what it named before)."""
        ref = name if isinstance(name, Reference) else parse_reference(name)
        # A tag names it; an image pulled by digest alone is named repo@sha256:... (as docker does).
        full = str(Reference(ref.domain, ref.path, ref.tag, None if ref.tag else ref.digest))
        if ref.digest and not ref.tag and ref.digest != desc.digest:
            raise ImageError(f"cannot name {desc.digest} as {full}: the digests differ")
        if not self.has_blob(desc.digest, desc.size):
            raise ImageError(f"cannot tag {full}: manifest {desc.digest} is not in the store")
        media = desc.media_type or oci.detect_media_type(self.read_json(desc.digest))
        entry = Descriptor(media, desc.digest, desc.size, {oci.ANNOTATION_REF_NAME: full})

        def change(entries: list[Descriptor]) -> list[Descriptor]:
            kept = [e for e in entries if e.annotations.get(oci.ANNOTATION_REF_NAME) != full]
            return [*kept, entry]

        self.update_index(change)

    def untag(self, names: Iterable[str]) -> None:
        drop = set(names)
        self.update_index(
            lambda entries: [e for e in entries if e.annotations.get(oci.ANNOTATION_REF_NAME) not in drop]
        )

    def find(self, text: str) -> list[ImageRecord]:
        """Records named by `text`: a reference, a full digest, or an ID prefix (as `images` shows)."""
        text = text.strip()
        records = self.records()
        if is_digest(text) or (
            len(text) >= 4 and all(c in "0123456789abcdef" for c in text.removeprefix("sha256:"))
        ):
            prefix = text if text.startswith("sha256:") else f"sha256:{text}"
            hits = [
                r
                for r in records
                if r.descriptor.digest.startswith(prefix) or self._id_of(r).startswith(prefix)
            ]
            if hits:
                return hits
        try:
            ref = parse_reference(text)
        except ImageError:
            if is_digest(text):
                return []
            raise
        if ref.digest:
            return [
                r
                for r in records
                if r.descriptor.digest == ref.digest and r.reference.repository == ref.repository
            ]
        return [r for r in records if r.name == str(ref)]

    def resolve(self, text: str) -> ImageRecord:
        hits = self.find(text)
        if not hits:
            raise ImageError(
                f"image {text!r} is not in the local store",
                "see `sealer images`; pull it with `sealer pull` or load it with `sealer load`",
            )
        ids = {self._id_of(h) for h in hits}
        if len(ids) > 1:
            raise ImageError(
                f"{text!r} matches several images: {', '.join(h.name for h in hits)}",
                "use a longer ID or the full name",
            )
        return hits[0]

    def _id_of(self, record: ImageRecord) -> str:
        d = record.descriptor
        if d.media_type in oci.MANIFEST_TYPES:
            try:
                return self.load_manifest(d).config.digest
            except ImageError:
                return d.digest
        return d.digest

    # ----------------------------------------------------------------- image views
    def details(self, record: ImageRecord) -> ImageDetails:
        d = record.descriptor
        if self.is_index(d):
            idx = self.load_index(d)
            out = ImageDetails(record, True)
            for child in idx.manifests:
                if not self.has_blob(child.digest):
                    if child.platform is not None:
                        out.missing_platforms.append(child.platform)
                    continue
                out.images.append(self._platform_image(child))
            return out
        return ImageDetails(record, False, [self._platform_image(d)])

    def _platform_image(self, desc: Descriptor) -> PlatformImage:
        man = self.load_manifest(desc)
        config = self.read_json(man.config.digest, "image config")
        plat = desc.platform
        if plat is None and config.get("os") and config.get("architecture"):
            plat = Platform(str(config["os"]), str(config["architecture"]), str(config.get("variant") or ""))
        return PlatformImage(desc, man, config, plat)

    def select(self, text: str, platform: Platform | None = None) -> PlatformImage:
        """The runnable image for `platform` (default: this machine's) named by `text`."""
        details = self.details(self.resolve(text))
        want = platform or oci.host_platform()
        if not details.is_index:
            return details.images[0]
        for img in details.images:
            if img.platform is not None and want.matches(img.platform):
                return img
        have = ", ".join(str(i.platform) for i in details.images) or "none"
        raise ImageError(
            f"image {details.record.name} has no {want} variant in the local store (present: {have})",
            f"pull it with `sealer pull --platform {want} {details.record.name}`",
        )

    def reachable(self, desc: Descriptor) -> set[str]:
        """Every blob digest reachable from a manifest/index that is present locally."""
        seen: set[str] = {desc.digest}
        if not self.has_blob(desc.digest):
            return seen
        if self.is_index(desc):
            for child in self.load_index(desc).manifests:
                if self.has_blob(child.digest):
                    seen |= self.reachable(child)
        else:
            for b in self.load_manifest(desc).blobs():
                seen.add(b.digest)
        return seen

    def missing_blobs(self, desc: Descriptor) -> list[str]:
        """Blobs an image needs but the store lacks. Absent platforms of a partial index do not count,
        as long as at least one platform is present."""
        if not self.has_blob(desc.digest):
            return [desc.digest]
        if self.is_index(desc):
            children = self.load_index(desc).manifests
            present = [c for c in children if self.has_blob(c.digest)]
            if not present:
                return [c.digest for c in children]
            return [d for c in present for d in self.missing_blobs(c)]
        return [b.digest for b in self.load_manifest(desc).blobs() if not self.has_blob(b.digest)]

    def image_size(self, record: ImageRecord) -> int:
        total = 0
        for digest in self.reachable(record.descriptor):
            with contextlib.suppress(FileNotFoundError):
                total += self.blob_path(digest).stat().st_size
        return total

    # ----------------------------------------------------------------- removal
    def remove(self, text: str, force: bool = False) -> list[str]:
        """Remove an image by name or ID; returns the names untagged. GC runs afterwards."""
        hits = self.find(text)
        if not hits:
            raise ImageError(f"image {text!r} is not in the local store", "see `sealer images`")
        by_name = False
        with contextlib.suppress(ImageError):
            ref = parse_reference(text)
            by_name = any(h.name == str(ref) for h in hits)
        if by_name:
            # Removing a name only untags: other names keep their blobs via GC reachability.
            targets = [h for h in hits if h.name == str(parse_reference(text))]
        else:
            targets = hits
            ids = {self._id_of(h) for h in hits}
            if len(ids) > 1:
                raise ImageError(f"{text!r} matches several images", "use a longer ID or the full name")
            if len(hits) > 1 and not force:
                raise ImageError(
                    f"image {text} is tagged as {', '.join(h.name for h in hits)}",
                    "remove the names one by one, or use --force to remove them all",
                )
        if not force:
            self._refuse_if_needed(targets)
        names = [t.name for t in targets]
        self.untag(names)
        self.gc()
        return names

    def _refuse_if_needed(self, targets: list[ImageRecord]) -> None:
        """Refuse to drop a manifest that another name's index still includes."""
        target_names = {t.name for t in targets}
        target_digests = {t.descriptor.digest for t in targets}
        for other in self.records():
            if other.name in target_names or other.descriptor.digest in target_digests:
                continue
            if other.descriptor.media_type not in oci.INDEX_TYPES:
                continue
            children = {c.digest for c in self.load_index(other.descriptor).manifests}
            shared = children & target_digests
            if shared:
                raise ImageError(
                    f"image {targets[0].name} is part of multi-platform image {other.name}",
                    f"remove {other.name} first, or use --force (blobs stay while {other.name} needs them)",
                )

    def _live_digests(self) -> set[str]:
        """Every blob a name reaches, and the index's own entries (the caller holds the index lock)."""
        live: set[str] = set()
        for rec in self.records():
            live |= self.reachable(rec.descriptor)
        for d in self._read_index():
            live.add(d.digest)
        return live

    def gc(self) -> tuple[int, int] | None:
        """Delete blobs no name reaches. Returns (count, bytes) or None when another process is importing."""
        with self._flock("gc.lock", fcntl.LOCK_EX | fcntl.LOCK_NB) as got:
            if not got:
                return None  # someone is mid-import; their blobs are not referenced yet
            with self._index_lock():
                live = self._live_digests()
                count = freed = 0
                for path in self.blobs_dir.iterdir():
                    if f"sha256:{path.name}" in live:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        freed += path.stat().st_size
                        path.unlink()
                        count += 1
                # Leftovers of killed processes (no live writer: we hold the exclusive lock).
                for tmp in self.ingest_dir.iterdir():
                    with contextlib.suppress(OSError):
                        if tmp.is_dir():
                            shutil.rmtree(tmp)
                        else:
                            tmp.unlink()
                return count, freed


    # ----------------------------------------------------------------- prune
    def exclusive(self) -> contextlib.AbstractContextManager[bool]:
        """Try (without waiting) to hold the store the way GC does: True only while no pull, load or
        build is writing into it (they hold `ingest()`), so what they are writing can be deleted."""
        return self._flock("gc.lock", fcntl.LOCK_EX | fcntl.LOCK_NB)

    def image_ids(self) -> set[str]:
        """The config digest (the ID `sealer images` shows, the rootfs cache key) of every platform
        image a name reaches. A name whose documents are missing or corrupt contributes none: it
        cannot be run until it is pulled again, which restores the blobs (and an unpack redoes any
        cache entry that was dropped meanwhile)."""
        ids: set[str] = set()
        for record in self.records():
            try:
                ids |= {image.id for image in self.details(record).images}
            except ImageError:
                continue
        return ids

    def ingest_leftovers(self, older_than: float, now: float | None = None) -> list[tuple[Path, int]]:
        """Files in ingest/ (and interrupted index writes) nobody has written to for `older_than`
        seconds, with their sizes. A live pull writes its blob file chunk by chunk, so its mtime stays
        fresh; a file idle that long belongs to a process that died."""
        limit = (time.time() if now is None else now) - older_than
        out: list[tuple[Path, int]] = []
        interrupted = [p for p in _list_dir(self.root) if p.name.startswith(".tmp-")]  # see _atomic_write
        candidates = [*_list_dir(self.ingest_dir), *interrupted]
        for path in candidates:
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if st.st_mtime >= limit:
                continue
            size = tree_bytes(path) if path.is_dir() and not path.is_symlink() else st.st_size
            out.append((path, size))
        return out

    def unreferenced_blobs(self, delete: bool) -> list[tuple[Path, int]]:
        """Blobs no name reaches, with their sizes, deleted when `delete`. The caller holds
        `exclusive()`: a blob being imported is not referenced yet and must not go."""
        with self._index_lock():
            live = self._live_digests()
            out: list[tuple[Path, int]] = []
            for path in _list_dir(self.blobs_dir):
                if f"sha256:{path.name}" in live:
                    continue
                try:
                    size = path.lstat().st_size
                    if delete:
                        path.unlink()
                except FileNotFoundError:
                    continue
                out.append((path, size))
            return out


def _list_dir(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except FileNotFoundError:
        return []


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under root (what a copy of it writes)."""
    total = 0
    for base, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, name)).st_size
    return total


def created_time(config: dict[str, Any]) -> str:
    value = config.get("created")
    return value if isinstance(value, str) else ""


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
