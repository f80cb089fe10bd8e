"""The image API the CLI and the run pipeline call: pull/push/tag/list/inspect/remove/login on one store.

Everything here returns data (dicts ready for JSON, results); rendering belongs to the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sealer.errors import ImageError, RegistryError
from sealer.image import auth, oci
from sealer.image.metadata import (
    ANNOTATION_CONTAINER_IMAGES,
    ANNOTATION_IMAGE_EXTENSION,
    SealerImageInfo,
    sealer_info,
)
from sealer.image.oci import Platform
from sealer.image.reference import Reference, parse_reference
from sealer.image.registry import ProgressCallback, RegistryClient, RegistryOptions, TransferResult
from sealer.image.store import ImageDetails, ImageRecord, ImageStore, PlatformImage, created_time

PULL_POLICIES = ("always", "missing", "never")


def short_id(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def parse_platforms(values: list[str] | tuple[str, ...] | None) -> list[Platform] | None:
    """`--platform linux/amd64,linux/arm64` (repeatable, comma-separated) -> platforms; None if unset."""
    out: list[Platform] = []
    for value in values or ():
        out += [Platform.parse(p) for p in value.split(",") if p.strip()]
    return out or None


async def pull(
    store: ImageStore,
    name: str,
    options: RegistryOptions,
    *,
    platforms: list[Platform] | None = None,
    all_platforms: bool = False,
    progress: ProgressCallback | None = None,
) -> TransferResult:
    ref = parse_reference(name)
    async with RegistryClient(options) as client:
        return await client.pull(
            ref, store, platforms=platforms, all_platforms=all_platforms, progress=progress
        )


async def ensure_image(
    store: ImageStore,
    name: str,
    options: RegistryOptions,
    *,
    platforms: list[Platform] | None = None,
    policy: str = "missing",
    progress: ProgressCallback | None = None,
) -> ImageRecord:
    """What `sealer run` needs: the image present locally for every platform asked (pull per policy)."""
    if policy not in PULL_POLICIES:
        raise ImageError(f"unknown pull policy {policy!r}", f"use one of {', '.join(PULL_POLICIES)}")
    wanted = platforms or [oci.host_platform()]
    missing = wanted
    if policy != "always" and store.find(name):
        missing = []
        for p in wanted:
            try:
                store.select(name, p)
            except ImageError:
                missing.append(p)
    if missing:
        if policy == "never":
            raise ImageError(
                f"image {name} is not local for {', '.join(map(str, missing))} and the pull policy is never",
                "load it with `sealer load` or allow pulling",
            )
        await pull(store, name, options, platforms=missing, progress=progress)
    return store.resolve(name)


def image_info(store: ImageStore, name: str, platform: Platform | None = None) -> SealerImageInfo:
    """Runtime type, labels, extension of a local image (for one platform; default: this machine's)."""
    img = store.select(name, platform)
    return sealer_info(img.config, img.manifest.annotations)


async def push(
    store: ImageStore,
    source: str,
    options: RegistryOptions,
    *,
    dest: str | None = None,
    platforms: list[Platform] | None = None,
    progress: ProgressCallback | None = None,
) -> TransferResult:
    rec = store.resolve(source)
    target = parse_reference(dest) if dest else rec.reference
    if target.tag is None and target.digest is None:
        target = target.with_tag("latest")
    async with RegistryClient(options) as client:
        return await client.push(store, rec.name, target, platforms=platforms, progress=progress)


def tag(store: ImageStore, source: str, targets: list[str]) -> list[str]:
    rec = store.resolve(source)
    out = []
    for t in targets:
        ref = parse_reference(t)
        if ref.digest:
            raise ImageError(f"cannot tag with a digest: {t}", "a new name needs a tag, e.g. repo:v2")
        store.tag(ref, rec.descriptor)
        out.append(str(ref))
    return out


def _platforms_of(details: ImageDetails) -> list[str]:
    return [str(i.platform) if i.platform else "unknown" for i in details.images]


def list_images(store: ImageStore) -> list[dict[str, Any]]:
    rows = []
    for rec in sorted(store.records(), key=lambda r: r.name):
        try:
            details = store.details(rec)
        except ImageError as err:
            rows.append(
                {
                    "name": rec.name,
                    "id": short_id(rec.descriptor.digest),
                    "digest": rec.descriptor.digest,
                    "size": 0,
                    "created": "",
                    "platforms": [],
                    "clusterRuntime": "",
                    "error": err.message,
                }
            )
            continue
        first: PlatformImage | None = details.images[0] if details.images else None
        info = sealer_info(first.config, first.manifest.annotations) if first else None
        rows.append(
            {
                "name": rec.name,
                "id": short_id(details.id),
                "digest": rec.descriptor.digest,
                "size": store.image_size(rec),
                "created": created_time(first.config) if first else "",
                "platforms": _platforms_of(details),
                "clusterRuntime": info.cluster_runtime if info else "",
                "containerRuntime": info.container_runtime if info else "",
                "type": info.extension.type if info and info.extension else "",
            }
        )
    return rows


def _spec(store: ImageStore, img: PlatformImage, rec: ImageRecord) -> dict[str, Any]:
    info = sealer_info(img.config, img.manifest.annotations)
    manifest_doc = store.read_json(img.descriptor.digest, "manifest")
    return {
        "id": img.id,
        "name": rec.name,
        "digest": img.descriptor.digest,
        "platform": str(img.platform) if img.platform else "unknown",
        "clusterRuntime": info.cluster_runtime,
        "containerRuntime": info.container_runtime,
        "labels": info.labels,
        "annotations": img.manifest.annotations,
        "layers": [
            {"digest": x.digest, "size": x.size, "mediaType": x.media_type} for x in img.manifest.layers
        ],
        "manifestv1": manifest_doc,
        "ociv1": img.config,
        "imageExtension": info.extension.to_json_obj() if info.extension else None,
        "containerImageList": [c.to_json() for c in info.container_images],
    }


def inspect(store: ImageStore, name: str, platform: Platform | None = None) -> dict[str, Any]:
    """Go sealer's ImageSpec fields (id, name, digest, manifestv1, ociv1, imageExtension, containerImageList)
    plus labels, layers and platform; for a multi-platform image, one spec per local platform."""
    rec = store.resolve(name)
    details = store.details(rec)
    images = details.images
    if platform is not None:
        images = [store.select(name, platform)]
    if not details.is_index or platform is not None:
        return _spec(store, images[0], rec)
    return {
        "name": rec.name,
        "digest": rec.descriptor.digest,
        "mediaType": rec.descriptor.media_type,
        "platforms": _platforms_of(details),
        "missingPlatforms": [str(p) for p in details.missing_platforms],
        "index": store.read_json(rec.descriptor.digest, "index"),
        "images": [_spec(store, i, rec) for i in images],
    }


def remove(store: ImageStore, names: list[str], force: bool = False) -> list[str]:
    removed: list[str] = []
    for name in names:
        removed += store.remove(name, force=force)
    return removed


def registry_host(registry: str) -> str:
    """`sealer login registry.local:5000` / `https://registry.local/` -> host[:port] of the API."""
    text = registry.strip()
    for prefix in ("https://", "http://"):
        text = text.removeprefix(prefix)
    text = text.split("/", 1)[0]
    if not text:
        raise ImageError(f"invalid registry {registry!r}", "give host[:port], e.g. registry.local:5000")
    if text in ("docker.io", "index.docker.io"):
        return "docker.io"
    return text


async def login(registry: str, username: str, password: str, options: RegistryOptions) -> Path:
    """Check the credentials against the registry, then store them (0600) in the auth file."""
    if not username:
        raise ImageError("a username is required", "pass -u USER")
    if not password:
        raise ImageError("a password is required", "pass -p, --password-stdin, or type it when asked")
    host = registry_host(registry)
    api_host = Reference("docker.io", "library/x").api_host if host == "docker.io" else host
    opts = RegistryOptions(
        insecure=options.insecure,
        ca_file=options.ca_file,
        authfile=options.authfile,
        credentials=auth.Credentials(username, password),
        timeout=options.timeout,
    )
    async with RegistryClient(opts) as client:
        try:
            await client.check_login(api_host)
        except RegistryError as err:
            raise RegistryError(f"login to {host} failed: {err.message}", err.hint)
    return auth.save_credentials(host, username, password, options.authfile)


def logout(registry: str, authfile: Path | None = None) -> list[Path]:
    host = registry_host(registry)
    changed = auth.remove_credentials(host, authfile)
    if not changed:
        raise ImageError(f"not logged in to {host}", "nothing to do")
    return changed


__all__ = [
    "ANNOTATION_CONTAINER_IMAGES",
    "ANNOTATION_IMAGE_EXTENSION",
    "RegistryOptions",
    "ensure_image",
    "image_info",
    "inspect",
    "list_images",
    "login",
    "logout",
    "pull",
    "push",
    "remove",
    "tag",
]
