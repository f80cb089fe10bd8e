"""`sealer build` end to end against real servers: three container images in a local docker-registry
(pushed there by skopeo) are found in a fixture context's manifests, imageList and helm chart, pulled
into the ClusterImage's registry/ directory, and a fresh docker-registry serving that directory answers
skopeo for all three. Rebuilding reuses the cache; two independent builds give the same digest."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sealer.cli.main import cli
from sealer.image.metadata import ANNOTATION_CONTAINER_IMAGES, ANNOTATION_IMAGE_EXTENSION
from sealer.image.oci import Platform
from sealer.image.store import ImageStore
from tests.registry_fixture import Registry, make_test_image, registry_missing_reason, start_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(registry_missing_reason() is not None, reason=str(registry_missing_reason())),
    pytest.mark.skipif(
        shutil.which("skopeo") is None, reason="skopeo is not installed (scripts/setup installs it)"
    ),
]

AMD64 = Platform("linux", "amd64")


def skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"skopeo {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def tar_layer(name: str, data: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry holding test/app, test/sidecar and test/chart; every image shares one base layer."""
    work = tmp_path_factory.mktemp("build-src")
    layout = ImageStore(work / "layout")
    shared = tar_layer("shared.bin", os.urandom(64 << 10))
    with start_registry(work / "registry") as reg:
        for name in ("app", "sidecar", "chart"):
            own = tar_layer(f"{name}.bin", os.urandom(128 << 10))
            make_test_image(layout, f"local/{name}:1", [shared, own])
            skopeo(
                "copy", "--dest-tls-verify=false",
                f"oci:{layout.root}:docker.io/local/{name}:1", f"docker://{reg.host}/test/{name}:1",
            )  # fmt: skip
        yield reg


def make_context(root: Path, reg: Registry) -> Path:
    files = {
        "Kubefile": (
            "FROM scratch\n"
            "LABEL cluster.alpha.sealer.io/cluster-runtime-type=k3s\n"
            "COPY manifests manifests\n"
            "COPY imageList manifests/\n"
            "COPY charts charts\n"
            "RUN mkdir -p etc && t=$(mktemp) && echo 'generated at build' > $t && mv $t etc/stamp\n"
            "APP web local://web\n"
            'LAUNCH ["web"]\n'
        ),
        "manifests/app.yaml": f"kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n"
        f"      - name: app\n        image: {reg.host}/test/app:1\n",
        "imageList": f"# sidecars\n{reg.host}/test/sidecar:1\n",
        "charts/web/Chart.yaml": "apiVersion: v2\nname: web\nversion: 0.1.0\nappVersion: '1'\n",
        "charts/web/values.yaml": f"image:\n  registry: {reg.host}\n  repository: test/chart\n  tag: ''\n",
        "charts/web/templates/deploy.yaml": (
            "spec:\n  containers:\n  - image: {{ .Values.image.registry }}/{{ .Values.image.repository }}:"
            "{{ .Values.image.tag | default .Chart.AppVersion }}\n"
        ),
        "web/deploy.yaml": f"kind: Pod\nspec:\n  containers:\n  - image: {reg.host}/test/app:1\n",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def build(home: Path, ctx: Path, *extra: str) -> Result:
    return CliRunner().invoke(
        cli,
        [
            "build",
            "--insecure",
            "--platform",
            "linux/amd64",
            "-t",
            "demo/cluster:v1",
            "-o",
            "json",
            *extra,
            str(ctx),
        ],
        env={"SEALER_HOME": str(home)},
        catch_exceptions=False,
    )


def unpack_registry_layer(store: ImageStore, name: str, dest: Path) -> None:
    image = store.select(name, AMD64)
    last = image.manifest.layers[-1]
    with tarfile.open(store.blob_path(last.digest)) as tar:
        tar.extractall(dest, filter="data")


def test_build_collects_serves_caches_and_is_reproducible(source: Registry, tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", source)
    home = tmp_path / "home"
    first = build(home, ctx)
    assert first.exit_code == 0, first.output
    result = json.loads(first.stdout)
    wanted = [f"{source.host}/test/{n}:1" for n in ("sidecar", "app", "chart")]
    assert sorted(result["container_images"]) == sorted(wanted)
    assert not any(s["cached"] for s in result["steps"])

    store = ImageStore(home / "images")
    image = store.select("demo/cluster:v1", AMD64)
    extension = json.loads(image.manifest.annotations[ANNOTATION_IMAGE_EXTENSION])
    assert extension["launch"] == {"app_names": ["web"]}
    recorded = json.loads(image.manifest.annotations[ANNOTATION_CONTAINER_IMAGES])
    assert {r["image"] for r in recorded} == set(wanted)
    assert image.config["config"]["Labels"]["cluster.alpha.sealer.io/cluster-runtime-type"] == "k3s"

    # The registry/ directory, served as-is by a fresh docker-registry, answers pulls of all three.
    served = tmp_path / "served"
    unpack_registry_layer(store, "demo/cluster:v1", served)
    blobs = list((served / "registry/docker/registry/v2/blobs/sha256").glob("*/*/data"))
    # 3 x (manifest + config + own layer + shared layer), the shared layer stored once
    assert len(blobs) == 3 * 4 - 2
    with start_registry(tmp_path / "fresh", storage=served / "registry") as fresh:
        for name in ("app", "sidecar", "chart"):
            out = tmp_path / f"pulled-{name}"
            skopeo("copy", "--src-tls-verify=false", f"docker://{fresh.host}/test/{name}:1", f"oci:{out}:x")
            src = json.loads(
                skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{source.host}/test/{name}:1")
            )
            got = json.loads(
                skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{fresh.host}/test/{name}:1")
            )
            assert got == src

    # RUN's file is in the image; unchanged rebuild is all cache and gives the same digest.
    again = build(home, ctx)
    assert again.exit_code == 0, again.output
    rebuilt = json.loads(again.stdout)
    assert all(s["cached"] for s in rebuilt["steps"]) and rebuilt["digest"] == result["digest"]

    # A second, independent build (fresh home, no cache) of the same context: same digest.
    other = build(tmp_path / "home2", ctx)
    assert other.exit_code == 0, other.output
    assert json.loads(other.stdout)["digest"] == result["digest"]

    # Changing one manifest rebuilds from that step on; the steps before it stay cached.
    (ctx / "imageList").write_text(f"{source.host}/test/sidecar:1\n# changed\n")
    changed = json.loads(build(home, ctx).stdout)
    assert [s["cached"] for s in changed["steps"]][:2] == [True, False]
    assert changed["digest"] != result["digest"]


def test_run_output_lands_in_the_image(source: Registry, tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", source)
    home = tmp_path / "home"
    res = build(home, ctx, "--build-mode", "lite")
    assert res.exit_code == 0, res.output
    store = ImageStore(home / "images")
    image = store.select("demo/cluster:v1", AMD64)
    run_layer = image.manifest.layers[3]
    with tarfile.open(store.blob_path(run_layer.digest)) as tar:
        names = tar.getnames()
        member = tar.extractfile("etc/stamp")
        assert member is not None and member.read() == b"generated at build\n"
    assert "etc/" in names or "etc" in names
    # lite: no registry layer, no container images recorded
    assert ANNOTATION_CONTAINER_IMAGES not in image.manifest.annotations
    assert len(image.manifest.layers) == 5


def test_run_cannot_write_the_host(tmp_path: Path) -> None:
    victim = tmp_path / "host-file"
    victim.write_text("untouched")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Kubefile").write_text(f"FROM scratch\nRUN echo changed > {victim}\n")
    res = CliRunner().invoke(cli, ["build", "-t", "x:1", str(ctx)], env={"SEALER_HOME": str(tmp_path / "h")})
    assert res.exit_code == 1
    assert "Read-only file system" in res.stderr and "line 2: RUN" in res.stderr
    assert victim.read_text() == "untouched"


def test_missing_container_image_names_where_it_was_found(source: Registry, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "imageList").write_text(f"{source.host}/test/app:1\n{source.host}/test/absent:9\n")
    (ctx / "Kubefile").write_text("FROM scratch\nCOPY imageList manifests/\n")
    res = CliRunner().invoke(
        cli, ["build", "--insecure", "-t", "x:1", str(ctx)], env={"SEALER_HOME": str(tmp_path / "h")}
    )
    assert res.exit_code == 1
    assert (
        f"cannot collect container image {source.host}/test/absent:9 (found in manifests/imageList:2)"
        in res.stderr
    )
    assert "Traceback" not in res.output
