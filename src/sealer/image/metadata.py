"""Sealer's metadata on a ClusterImage: runtime labels and the `sealer.image.extension` annotation.

Same keys and JSON shape as Go sealer (pkg/define/image/v1/sealer_image.go), typed for the run pipeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sealer.errors import ImageError

LABEL_CLUSTER_RUNTIME_TYPE = "cluster.alpha.sealer.io/cluster-runtime-type"
LABEL_CONTAINER_RUNTIME_TYPE = "cluster.alpha.sealer.io/container-runtime-type"
LABEL_CLUSTER_RUNTIME_VERSION = "cluster.alpha.sealer.io/cluster-runtime-version"
LABEL_CONTAINER_RUNTIME_VERSION = "cluster.alpha.sealer.io/container-runtime-version"
LABEL_SEALER_VERSION = "io.sealer.version"
ANNOTATION_IMAGE_EXTENSION = "sealer.image.extension"
ANNOTATION_CONTAINER_IMAGES = "sealer.image.container.images"

DEFAULT_CLUSTER_RUNTIME = "kubernetes"
DEFAULT_CONTAINER_RUNTIME = "docker"
IMAGE_TYPE_KUBE_INSTALLER = "kube-installer"
IMAGE_TYPE_APP_INSTALLER = "app-installer"
EXTENSION_SCHEMA_VERSION = "v1alpha1"


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ImageError(f"{ANNOTATION_IMAGE_EXTENSION}: {where} must be a JSON object of strings")
    return {k: "" if v is None else str(v) for k, v in value.items()}


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ImageError(f"{ANNOTATION_IMAGE_EXTENSION}: {where} must be a JSON array")
    return [str(v) for v in value]


@dataclass
class Application:
    name: str
    type: str = ""
    files: list[str] = field(default_factory=list)
    version: str = "v1"
    env: dict[str, str] = field(default_factory=dict)
    cmds: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "files": self.files,
            "version": self.version,
            "env": self.env,
            "cmds": self.cmds,
        }


@dataclass
class Launch:
    cmds: list[str] = field(default_factory=list)
    app_names: list[str] = field(default_factory=list)


@dataclass
class ImageExtension:
    """The JSON in annotation `sealer.image.extension`."""

    type: str = IMAGE_TYPE_KUBE_INSTALLER
    schema_version: str = EXTENSION_SCHEMA_VERSION
    sealer_version: str = ""
    buildah_version: str = ""
    applications: list[Application] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    launch: Launch = field(default_factory=Launch)

    @classmethod
    def from_json(cls, text: str | bytes) -> ImageExtension:
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ImageError(
                f"annotation {ANNOTATION_IMAGE_EXTENSION} is not valid JSON: {err}",
                "rebuild the image with `sealer build`",
            )
        if not isinstance(data, dict):
            raise ImageError(f"annotation {ANNOTATION_IMAGE_EXTENSION} must be a JSON object")
        build = data.get("buildClient") or {}
        if not isinstance(build, dict):
            raise ImageError(f"{ANNOTATION_IMAGE_EXTENSION}: buildClient must be an object")
        apps_raw = data.get("applications")
        apps_raw = [] if apps_raw is None else apps_raw
        if not isinstance(apps_raw, list):
            raise ImageError(f"{ANNOTATION_IMAGE_EXTENSION}: applications must be an array")
        apps: list[Application] = []
        for i, app in enumerate(apps_raw):
            if not isinstance(app, dict) or not isinstance(app.get("name"), str):
                raise ImageError(f"{ANNOTATION_IMAGE_EXTENSION}: applications[{i}] needs a string name")
            apps.append(
                Application(
                    name=app["name"],
                    type=str(app.get("type") or ""),
                    files=_str_list(app.get("files"), f"applications[{i}].files"),
                    version=str(app.get("version") or "v1"),
                    env=_str_map(app.get("env"), f"applications[{i}].env"),
                    cmds=_str_list(app.get("cmds"), f"applications[{i}].cmds"),
                )
            )
        launch_raw = data.get("launch") or {}
        if not isinstance(launch_raw, dict):
            raise ImageError(f"{ANNOTATION_IMAGE_EXTENSION}: launch must be an object")
        image_type = str(data.get("type") or IMAGE_TYPE_KUBE_INSTALLER)
        if image_type not in (IMAGE_TYPE_KUBE_INSTALLER, IMAGE_TYPE_APP_INSTALLER):
            raise ImageError(
                f"{ANNOTATION_IMAGE_EXTENSION}: unknown image type {image_type!r}",
                f"expected {IMAGE_TYPE_KUBE_INSTALLER} or {IMAGE_TYPE_APP_INSTALLER}",
            )
        return cls(
            type=image_type,
            schema_version=str(data.get("schemaVersion") or EXTENSION_SCHEMA_VERSION),
            sealer_version=str(build.get("sealerVersion") or ""),
            buildah_version=str(build.get("buildahVersion") or ""),
            applications=apps,
            labels=_str_map(data.get("labels"), "labels"),
            env=_str_map(data.get("env"), "env"),
            launch=Launch(
                cmds=_str_list(launch_raw.get("cmds"), "launch.cmds"),
                app_names=_str_list(launch_raw.get("app_names"), "launch.app_names"),
            ),
        )

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "buildClient": {"sealerVersion": self.sealer_version, "buildahVersion": self.buildah_version},
            "schemaVersion": self.schema_version,
            "type": self.type,
            "applications": [a.to_json() for a in self.applications],
            "labels": self.labels,
            "env": self.env,
            "launch": {"cmds": self.launch.cmds, "app_names": self.launch.app_names},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_json_obj(), separators=(",", ":"))


@dataclass(frozen=True)
class ContainerImage:
    """One entry of `sealer.image.container.images`: an image the ClusterImage carries."""

    image: str
    app_name: str = ""
    os: str = ""
    architecture: str = ""
    variant: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image}
        if self.app_name:
            out["appName"] = self.app_name
        out["platform"] = {"architecture": self.architecture, "os": self.os, "variant": self.variant}
        return out


def parse_container_images(text: str | bytes) -> list[ContainerImage]:
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ImageError(f"annotation {ANNOTATION_CONTAINER_IMAGES} is not valid JSON: {err}")
    if not isinstance(data, list):
        raise ImageError(f"annotation {ANNOTATION_CONTAINER_IMAGES} must be a JSON array")
    out: list[ContainerImage] = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise ImageError(f"{ANNOTATION_CONTAINER_IMAGES}[{i}] needs a string `image`")
        plat = item.get("platform") or {}
        if not isinstance(plat, dict):
            plat = {}
        out.append(
            ContainerImage(
                image=item["image"],
                app_name=str(item.get("appName") or ""),
                os=str(plat.get("os") or ""),
                architecture=str(plat.get("architecture") or ""),
                variant=str(plat.get("variant") or ""),
            )
        )
    return out


def serialise_container_images(images: list[ContainerImage]) -> str:
    return json.dumps([i.to_json() for i in images], separators=(",", ":"))


@dataclass(frozen=True)
class SealerImageInfo:
    """What the run pipeline needs to know about a ClusterImage before touching a host."""

    cluster_runtime: str
    container_runtime: str
    labels: dict[str, str]
    extension: ImageExtension | None
    container_images: list[ContainerImage]
    env: list[str]


def sealer_info(config: dict[str, Any], manifest_annotations: dict[str, str] | None) -> SealerImageInfo:
    """Read runtime type, labels and extension from an OCI image config and manifest annotations."""
    inner = config.get("config") or {}
    labels_raw = inner.get("Labels") if isinstance(inner, dict) else None
    labels = {str(k): str(v) for k, v in (labels_raw or {}).items()} if isinstance(labels_raw, dict) else {}
    env_raw = inner.get("Env") if isinstance(inner, dict) else None
    env = [str(e) for e in env_raw] if isinstance(env_raw, list) else []
    ann = manifest_annotations or {}
    ext = (
        ImageExtension.from_json(ann[ANNOTATION_IMAGE_EXTENSION])
        if ANNOTATION_IMAGE_EXTENSION in ann
        else None
    )
    if ext is not None:
        # Go sealer fills extension.labels from the config labels at inspect time.
        ext.labels = {**labels, **ext.labels}
    images = (
        parse_container_images(ann[ANNOTATION_CONTAINER_IMAGES]) if ANNOTATION_CONTAINER_IMAGES in ann else []
    )
    return SealerImageInfo(
        cluster_runtime=labels.get(LABEL_CLUSTER_RUNTIME_TYPE) or DEFAULT_CLUSTER_RUNTIME,
        container_runtime=labels.get(LABEL_CONTAINER_RUNTIME_TYPE) or DEFAULT_CONTAINER_RUNTIME,
        labels=labels,
        extension=ext,
        container_images=images,
        env=env,
    )
