"""Sealer metadata: Go sealer's ImageExtension JSON and runtime labels, read and written the same way."""

from __future__ import annotations

import json
import re

import pytest

from sealer.errors import ImageError
from sealer.image.metadata import (
    ANNOTATION_CONTAINER_IMAGES,
    ANNOTATION_IMAGE_EXTENSION,
    LABEL_CLUSTER_RUNTIME_TYPE,
    LABEL_CONTAINER_RUNTIME_TYPE,
    ContainerImage,
    ImageExtension,
    parse_container_images,
    sealer_info,
    serialise_container_images,
)

# As Go sealer v0.9 writes it (pkg/define/image/v1/sealer_image.go).
GO_EXTENSION = {
    "buildClient": {"sealerVersion": "v0.9.3", "buildahVersion": "1.27.1"},
    "schemaVersion": "v1alpha1",
    "type": "kube-installer",
    "applications": [
        {
            "name": "calico",
            "type": "shell",
            "files": ["install.sh"],
            "version": "v1",
            "env": {"A": "1"},
            "cmds": ["bash install.sh"],
        },
        {"name": "dashboard", "type": "kube", "files": ["dash.yaml"], "version": "v1"},
    ],
    "launch": {"app_names": ["calico", "dashboard"]},
    "env": {"Port": "6443"},
}


def test_reads_go_sealer_extension() -> None:
    ext = ImageExtension.from_json(json.dumps(GO_EXTENSION))
    assert ext.sealer_version == "v0.9.3" and ext.type == "kube-installer"
    assert [a.name for a in ext.applications] == ["calico", "dashboard"]
    assert ext.applications[0].cmds == ["bash install.sh"] and ext.applications[0].env == {"A": "1"}
    assert ext.launch.app_names == ["calico", "dashboard"] and ext.launch.cmds == []
    assert ext.env == {"Port": "6443"}


def test_extension_round_trips_through_json() -> None:
    ext = ImageExtension.from_json(json.dumps(GO_EXTENSION))
    again = ImageExtension.from_json(ext.to_json())
    assert again == ext
    doc = json.loads(ext.to_json())
    assert set(doc) >= {"buildClient", "schemaVersion", "type", "applications", "launch", "env", "labels"}


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("{", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"type": "weird"}', "unknown image type"),
        ('{"applications": [{"type": "shell"}]}', "applications[0] needs a string name"),
        ('{"applications": {}}', "applications must be an array"),
        ('{"env": ["A=1"]}', "env must be a JSON object"),
    ],
)
def test_bad_extension_is_an_image_error(text: str, msg: str) -> None:
    with pytest.raises(ImageError, match=re.escape(msg)):
        ImageExtension.from_json(text)


def test_runtime_labels_with_go_sealer_defaults() -> None:
    info = sealer_info({"config": {"Labels": {LABEL_CLUSTER_RUNTIME_TYPE: "k0s"}, "Env": ["A=1"]}}, {})
    assert (info.cluster_runtime, info.container_runtime, info.extension) == ("k0s", "docker", None)
    assert info.env == ["A=1"]
    bare = sealer_info({}, None)
    assert (bare.cluster_runtime, bare.container_runtime) == ("kubernetes", "docker")
    full = sealer_info(
        {"config": {"Labels": {LABEL_CONTAINER_RUNTIME_TYPE: "containerd", "io.sealer.version": "0.1"}}},
        {
            ANNOTATION_IMAGE_EXTENSION: json.dumps(GO_EXTENSION),
            ANNOTATION_CONTAINER_IMAGES: json.dumps(
                [
                    {
                        "image": "docker.io/calico/node:v3.25",
                        "appName": "calico",
                        "platform": {"architecture": "amd64", "os": "linux"},
                    }
                ]
            ),
        },
    )
    assert full.container_runtime == "containerd"
    assert full.extension is not None and full.extension.labels["io.sealer.version"] == "0.1"
    assert full.container_images == [
        ContainerImage("docker.io/calico/node:v3.25", "calico", "linux", "amd64")
    ]


def test_container_images_round_trip_and_errors() -> None:
    imgs = [ContainerImage("a:1", "app", "linux", "arm64", "v8"), ContainerImage("b:2")]
    assert parse_container_images(serialise_container_images(imgs)) == imgs
    with pytest.raises(ImageError, match="needs a string `image`"):
        parse_container_images('[{"appName": "x"}]')
