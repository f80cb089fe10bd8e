"""OCI image-spec vocabulary: media types, descriptors, platforms, and manifest/index parsing.

Docker v2 schema 2 media types are accepted everywhere the OCI ones are: registries serve both.
"""

from __future__ import annotations

import json
import platform as _platform
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sealer.errors import ImageError

MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = (MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)
INDEX_TYPES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST)
ALL_MANIFEST_TYPES = MANIFEST_TYPES + INDEX_TYPES

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"

_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")


def check_digest(digest: str, where: str = "descriptor") -> str:
    """Only sha256 is accepted: it is what every registry and tool writes, and we verify it."""
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise ImageError(f"{where}: unsupported or malformed digest {digest!r}", "expected sha256:<64 hex>")
    return digest


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ImageError(
                f"invalid platform {text!r}", "use os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8"
            )
        return cls(parts[0], normalise_arch(parts[1]), parts[2] if len(parts) == 3 else "")

    @classmethod
    def from_json(cls, data: Any) -> Platform | None:
        if not isinstance(data, dict):
            return None
        return cls(str(data.get("os", "")), str(data.get("architecture", "")), str(data.get("variant") or ""))

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    def matches(self, other: Platform) -> bool:
        """True when an image built for `other` runs where `self` was asked for."""
        if self.os != other.os or normalise_arch(self.architecture) != normalise_arch(other.architecture):
            return False
        if not self.variant:
            return True
        want, have = self.variant, other.variant
        if normalise_arch(self.architecture) == "arm64":
            # arm64 images rarely say v8; treat missing as v8.
            want, have = want or "v8", have or "v8"
        return want == have


def normalise_arch(arch: str) -> str:
    return {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm"}.get(
        arch, arch
    )


def host_platform() -> Platform:
    """The platform of the machine sealer runs on (the default for pull)."""
    machine = _platform.machine().lower()
    if machine in ("armv7l", "armv7"):
        return Platform("linux", "arm", "v7")
    if machine in ("armv6l",):
        return Platform("linux", "arm", "v6")
    return Platform("linux", normalise_arch(machine))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    platform: Platform | None = field(default=None, compare=False, hash=False)

    @classmethod
    def from_json(cls, data: Any, where: str = "descriptor") -> Descriptor:
        if not isinstance(data, dict):
            raise ImageError(f"{where}: expected a JSON object")
        size = data.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ImageError(f"{where}: size must be a non-negative integer, got {size!r}")
        ann = data.get("annotations") or {}
        return cls(
            media_type=str(data.get("mediaType") or ""),
            digest=check_digest(data.get("digest", ""), where),
            size=size,
            annotations={str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else {},
            platform=Platform.from_json(data.get("platform")),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    def with_annotations(self, annotations: dict[str, str]) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size, annotations, self.platform)


def load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ImageError(f"{what} is not valid JSON: {err}")
    if not isinstance(obj, dict):
        raise ImageError(f"{what} is not a JSON object")
    return obj


def detect_media_type(doc: dict[str, Any], fallback: str = "") -> str:
    """A manifest's own mediaType, else guess from its shape (OCI makes the field optional)."""
    media = doc.get("mediaType")
    if isinstance(media, str) and media:
        return media
    if fallback in ALL_MANIFEST_TYPES:
        return fallback
    if "manifests" in doc:
        return MEDIA_OCI_INDEX
    if "config" in doc and "layers" in doc:
        return MEDIA_OCI_MANIFEST
    return fallback


def _parse_listing(
    data: bytes, what: str, fallback: str, allowed: Collection[str], kind: str, key: str
) -> tuple[dict[str, Any], str, tuple[Descriptor, ...], dict[str, str]]:
    """What manifests and indexes share: the JSON document, its media type (checked against
    `allowed`), the descriptor array under `key`, and the annotations."""
    doc = load_json(data, what)
    media = detect_media_type(doc, fallback)
    if media not in allowed:
        raise ImageError(f"{what}: media type {media!r} is not {kind}")
    raw = doc.get(key)
    if not isinstance(raw, list):
        raise ImageError(f"{what}: `{key}` must be an array")
    ann = doc.get("annotations") or {}
    return (
        doc,
        media,
        tuple(Descriptor.from_json(x, f"{what} {key}[{i}]") for i, x in enumerate(raw)),
        {str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else {},
    )


@dataclass(frozen=True)
class Manifest:
    """An image manifest: one config, ordered layers."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str]

    @classmethod
    def parse(cls, data: bytes, what: str = "manifest") -> Manifest:
        doc, media, layers, annotations = _parse_listing(
            data, what, MEDIA_OCI_MANIFEST, MANIFEST_TYPES, "an image manifest", "layers"
        )
        return cls(
            media_type=media,
            config=Descriptor.from_json(doc.get("config"), f"{what} config"),
            layers=layers,
            annotations=annotations,
        )

    def blobs(self) -> list[Descriptor]:
        return [self.config, *self.layers]


@dataclass(frozen=True)
class Index:
    """An image index (OCI) or manifest list (Docker): one manifest per platform."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: dict[str, str]

    @classmethod
    def parse(cls, data: bytes, what: str = "index") -> Index:
        _, media, manifests, annotations = _parse_listing(
            data, what, MEDIA_OCI_INDEX, INDEX_TYPES, "an image index", "manifests"
        )
        return cls(media_type=media, manifests=manifests, annotations=annotations)


def encode_json(doc: dict[str, Any]) -> bytes:
    """The bytes we write for documents we create (compact, stable key order as given)."""
    return json.dumps(doc, separators=(",", ":")).encode()


def new_manifest(
    config: Descriptor, layers: list[Descriptor], annotations: dict[str, str] | None = None
) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return encode_json(doc)


def new_index(manifests: list[Descriptor], annotations: dict[str, str] | None = None) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": [m.to_json() for m in manifests],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return encode_json(doc)
