"""The image commands as a user meets them: output formats, naming, removal, and errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sealer.cli.main import cli
from sealer.image.metadata import ANNOTATION_IMAGE_EXTENSION, LABEL_CLUSTER_RUNTIME_TYPE
from sealer.image.store import ImageStore
from tests.registry_fixture import make_test_image


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def sealer(home: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env={"SEALER_HOME": str(home)}, input=input)


def seed(home: Path) -> None:
    ext = {"type": "kube-installer", "applications": [{"name": "calico", "type": "shell"}]}
    make_test_image(
        ImageStore(home / "images"),
        "reg.local/sealer/k3s:v1.27",
        [b"k3s" * 1000],
        labels={LABEL_CLUSTER_RUNTIME_TYPE: "k3s"},
        annotations={ANNOTATION_IMAGE_EXTENSION: json.dumps(ext)},
    )


def test_images_table_and_json(home: Path) -> None:
    assert sealer(home, "images", "-o", "json").output.strip() == "[]"
    seed(home)
    table = sealer(home, "images")
    assert table.exit_code == 0
    header, row = table.output.splitlines()[:2]
    assert header.split() == ["NAME", "ID", "PLATFORMS", "RUNTIME", "CREATED", "SIZE"]
    assert row.split()[0] == "reg.local/sealer/k3s:v1.27" and "k3s" in row and "linux/amd64" in row
    (item,) = json.loads(sealer(home, "images", "-o", "json").output)
    assert item["clusterRuntime"] == "k3s" and item["platforms"] == ["linux/amd64"]
    assert item["size"] > 3000 and len(item["id"]) == 12 and item["created"] == "2026-01-01T00:00:00Z"
    assert "reg.local/sealer/k3s" in sealer(home, "images", "-o", "yaml").output


def test_inspect_shows_config_labels_extension_and_layers(home: Path) -> None:
    seed(home)
    res = sealer(home, "inspect", "reg.local/sealer/k3s:v1.27")
    assert res.exit_code == 0, res.output
    spec = json.loads(res.output)
    assert spec["clusterRuntime"] == "k3s" and spec["containerRuntime"] == "docker"
    assert spec["imageExtension"]["applications"][0]["name"] == "calico"
    assert spec["ociv1"]["os"] == "linux" and spec["labels"][LABEL_CLUSTER_RUNTIME_TYPE] == "k3s"
    assert len(spec["layers"]) == 1 and spec["manifestv1"]["schemaVersion"] == 2
    by_id = json.loads(sealer(home, "inspect", spec["id"][7:19]).output)
    assert by_id["digest"] == spec["digest"]


def test_tag_and_rmi(home: Path) -> None:
    seed(home)
    res = sealer(home, "tag", "reg.local/sealer/k3s:v1.27", "k3s:latest", "other.io/x/k3s:v1")
    assert res.exit_code == 0 and res.output.split() == ["docker.io/library/k3s:latest", "other.io/x/k3s:v1"]
    image_id = json.loads(sealer(home, "images", "-o", "json").output)[0]["id"]
    refused = sealer(home, "rmi", image_id)
    assert refused.exit_code == 1 and "--force" in refused.output and "Traceback" not in refused.output
    assert sealer(home, "rmi", "k3s").output.strip() == "Untagged: docker.io/library/k3s:latest"
    forced = sealer(home, "rmi", "--force", image_id)
    assert forced.exit_code == 0 and forced.output.count("Untagged:") == 2
    assert sealer(home, "images", "-o", "json").output.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["inspect", "nope:v1"], "is not in the local store"),
        (["rmi", "nope:v1"], "is not in the local store"),
        (["pull", "Nginx"], "must be lowercase"),
        (["tag", "reg.local/sealer/k3s:v1.27", "bad::tag"], "invalid image reference"),
        (["pull", "x", "--platform", "linux"], "invalid platform"),
        (["save", "-o", "/nonexistent-dir/x.tar", "reg.local/sealer/k3s:v1.27"], "cannot write"),
        (["logout", "never.io"], "not logged in to never.io"),
    ],
)
def test_errors_are_one_clear_message(home: Path, args: list[str], expected: str) -> None:
    seed(home)
    res = sealer(home, *args)
    assert res.exit_code == 1, res.output
    assert expected in res.output and res.output.startswith("error: ")
    assert "Traceback" not in res.output


def test_usage_conflicts(home: Path) -> None:
    both = sealer(home, "pull", "x", "--platform", "linux/amd64", "--all-platforms")
    assert both.exit_code == 2 and "exclude each other" in both.output
    login = sealer(home, "login", "r.io", "-u", "a", "-p", "b", "--password-stdin", input="c\n")
    assert login.exit_code == 2 and "exclude each other" in login.output


def test_go_sealer_style_flags(home: Path) -> None:
    seed(home)
    (item,) = json.loads(sealer(home, "images", "--json").output)
    assert sealer(home, "images", "-q").output.split() == [item["id"]]
    assert sealer(home, "images", "-q", "--no-trunc").output.split() == [item["digest"]]
    # The registry host does not exist: policies other than always must not need it.
    present = sealer(home, "pull", "reg.local/sealer/k3s:v1.27", "--policy", "missing")
    assert present.exit_code == 0 and "in the local store" in present.output
    absent = sealer(home, "pull", "reg.local/sealer/other:v1", "--policy", "never")
    assert absent.exit_code == 1 and "pull policy is never" in absent.output
    ImageStore(home / "images").put_blob(b"left behind by a killed build")
    pruned = sealer(home, "rmi", "--prune")
    assert pruned.exit_code == 0 and "Deleted 1 unused blob(s)" in pruned.output
    assert sealer(home, "rmi").exit_code == 2
