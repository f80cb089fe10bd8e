"""`sealer build --dry-run`: the plan for people and for programs, errors without tracebacks, and the
base image's apps read from a real local OCI store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealer.cli.main import cli
from sealer.image import oci
from sealer.image.metadata import ANNOTATION_IMAGE_EXTENSION
from sealer.image.store import ImageStore


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEALER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def context(root: Path, kubefile: str, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Kubefile").write_text(kubefile)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


KUBEFILE = """FROM scratch
ARG V=1.25
LABEL cluster.alpha.sealer.io/cluster-runtime-type=k3s
COPY imageList manifests/
COPY ${ARCH}/bin bin
APP web local://web
LAUNCH ["web"]
"""
FILES = {
    "imageList": "busybox:1.36\n",
    "web/deploy.yaml": "spec:\n  containers:\n  - image: nginx:1.25\n",
    "amd64/bin/k3s": "",
    "arm64/bin/k3s": "",
}


def test_dry_run_json(tmp_path: Path, home: Path) -> None:
    ctx = context(tmp_path / "ctx", KUBEFILE, FILES)
    code, out, err = run(
        "build", "--dry-run", "-o", "json", "-t", "demo:v1", "--platform", "linux/amd64,linux/arm64", str(ctx)
    )
    assert code == 0, err
    plan = json.loads(out)
    assert plan["tag"] == "docker.io/library/demo:v1"
    assert plan["platforms"] == ["linux/amd64", "linux/arm64"]
    assert [s["instruction"] for s in plan["steps"]] == [
        "FROM",
        "ARG",
        "LABEL",
        "COPY",
        "COPY",
        "APP",
        "LAUNCH",
    ]
    assert plan["launch_commands"] == ["kubectl apply -f application/apps/web/deploy.yaml"]
    assert plan["labels"] == {"cluster.alpha.sealer.io/cluster-runtime-type": "k3s"}
    assert [i["image"] for i in plan["container_images"]["images"]] == [
        "docker.io/library/busybox:1.36",
        "docker.io/library/nginx:1.25",
    ]
    assert plan["image_extension"]["launch"] == {"app_names": ["web"]}
    assert not home.exists(), "a dry run must not create the image store"


def test_dry_run_table(tmp_path: Path, home: Path) -> None:
    ctx = context(tmp_path / "ctx", KUBEFILE, FILES)
    code, out, err = run("build", "--dry-run", str(ctx))
    assert code == 0, err
    assert "container images to collect: 2" in out
    assert "docker.io/library/nginx:1.25" in out and "[app web]" in out
    assert "kubectl apply -f application/apps/web/deploy.yaml" in out


def test_dry_run_reports_problems_with_file_and_line_and_no_traceback(tmp_path: Path, home: Path) -> None:
    ctx = context(tmp_path / "ctx", "FROM scratch\nCOPY missing.yaml manifests/\nLAUNCH nope\n", {})
    code, out, err = run("build", "--dry-run", "-f", str(ctx / "Kubefile"), str(ctx))
    assert code == 1
    assert f"{ctx / 'Kubefile'}:3: error: LAUNCH names unknown app 'nope'" in err
    assert "Traceback" not in err + out
    # Context problems are reported once the Kubefile itself is sound.
    (ctx / "Kubefile").write_text("FROM scratch\nCOPY missing.yaml manifests/\n")
    code, out, err = run("build", "--dry-run", str(ctx))
    assert code == 1 and ":2: error: COPY source 'missing.yaml' not found" in err


def test_bad_options_are_clear(tmp_path: Path, home: Path) -> None:
    ctx = context(tmp_path / "ctx", "FROM scratch\n", {})
    code, _, err = run("build", "--dry-run", "--build-arg", "novalue", str(ctx))
    assert code == 1 and "--build-arg 'novalue' is not KEY=VALUE" in err
    code, _, err = run("build", "--dry-run", "--platform", "linux/", str(ctx))
    assert code == 2 and "--platform" in err
    code, _, err = run("build", "--dry-run", "-t", "Bad Name", str(ctx))
    assert code == 1 and "invalid image reference" in err
    code, _, err = run("build", "--dry-run", str(tmp_path / "nowhere"))
    assert code == 1 and "not a directory" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run("build", "--dry-run", str(empty))
    assert code == 1 and "no Kubefile in the build context" in err


def test_image_lists(tmp_path: Path, home: Path) -> None:
    ctx = context(
        tmp_path / "ctx", "FROM scratch\nCOPY imageList manifests/\n", {"imageList": "busybox\nnginx\n"}
    )
    (tmp_path / "extra").write_text("quay.io/a/b:1\n")
    (tmp_path / "skip").write_text("nginx\n")
    code, out, err = run(
        "build", "--dry-run", "-o", "json", "--image-list", str(tmp_path / "extra"),
        "--ignored-image-list", str(tmp_path / "skip"), str(ctx),
    )  # fmt: skip
    assert code == 0, err
    images = json.loads(out)["container_images"]
    assert [i["image"] for i in images["images"]] == ["docker.io/library/busybox:latest", "quay.io/a/b:1"]
    assert images["ignored"] == ["docker.io/library/nginx:latest"]
    code, _, err = run("build", "--dry-run", "--image-list", str(tmp_path / "absent"), str(ctx))
    assert code == 1 and "cannot read image list" in err


def _store_image_with_apps(home: Path) -> None:
    """A base ClusterImage in the real local store, carrying app `calico` and a launch list."""
    store = ImageStore(home / "images")
    extension = {
        "schemaVersion": "v1alpha1",
        "type": "kube-installer",
        "applications": [{"name": "calico", "type": "kube", "files": ["calico.yaml"], "version": "v1"}],
        "env": {"PodCIDR": "100.64.0.0/10"},
        "launch": {"app_names": ["calico"]},
    }
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Labels": {"io.sealer.version": "test"}}}
    ).encode()
    config_desc = store.put_blob(config, media_type=oci.MEDIA_OCI_CONFIG)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.MEDIA_OCI_MANIFEST,
            "config": {
                "mediaType": oci.MEDIA_OCI_CONFIG,
                "digest": config_desc.digest,
                "size": config_desc.size,
            },
            "layers": [],
            "annotations": {ANNOTATION_IMAGE_EXTENSION: json.dumps(extension)},
        }
    ).encode()
    store.tag("registry.local/base/k8s:v1", store.put_manifest(manifest))


def test_base_image_apps_come_from_the_local_store(tmp_path: Path, home: Path) -> None:
    _store_image_with_apps(home)
    kubefile = 'FROM registry.local/base/k8s:v1\nAPP web local://web\nLAUNCH ["calico", "web"]\n'
    ctx = context(tmp_path / "ctx", kubefile, FILES)
    code, out, err = run("build", "--dry-run", "-o", "json", "--platform", "linux/amd64", str(ctx))
    assert code == 0, err
    plan = json.loads(out)
    assert plan["launch_commands"][0] == "kubectl apply -f application/apps/calico/calico.yaml"
    assert plan["env"] == {"PodCIDR": "100.64.0.0/10"}
    assert plan["labels"] == {"io.sealer.version": "test"}
    # Without LAUNCH the base image's launch is inherited, and the dry run says so.
    (ctx / "Kubefile").write_text("FROM registry.local/base/k8s:v1\nCOPY imageList manifests/\n")
    code, out, err = run("build", "--dry-run", "--platform", "linux/amd64", str(ctx))
    assert code == 0, err
    assert "launch (inherited from the base image):" in out


def test_unknown_base_image_explains_missing_apps(tmp_path: Path, home: Path) -> None:
    _store_image_with_apps(home)
    ctx = context(tmp_path / "ctx", 'FROM registry.local/other:v1\nLAUNCH ["calico"]\n', {})
    code, _, err = run("build", "--dry-run", str(ctx))
    assert code == 1
    assert "unknown app 'calico'" in err and "could not be read: pull it first" in err


def test_build_needs_a_name(tmp_path: Path, home: Path) -> None:
    ctx = context(tmp_path / "ctx", "FROM scratch\n", {})
    code, _, err = run("build", str(ctx))
    assert code == 1 and "a build needs a name" in err and "-t my-image:v1" in err


def test_build_scratch_image_into_the_store(tmp_path: Path, home: Path) -> None:
    kubefile = "FROM scratch\nCOPY web/deploy.yaml manifests/\nAPP web local://web\nLAUNCH web\n"
    ctx = context(tmp_path / "ctx", kubefile, {"web/deploy.yaml": "kind: ConfigMap\n"})
    code, out, err = run(
        "build", "--build-mode", "lite", "-t", "demo:v1", "--platform", "linux/amd64", str(ctx)
    )
    assert code == 0, err
    assert "built docker.io/library/demo:v1 (linux/amd64)" in out and "2 layers" in out
    assert "[linux/amd64 2/4] COPY web/deploy.yaml -> manifests/" in err
    store = ImageStore(home / "images")
    image = store.select("demo:v1", oci.Platform("linux", "amd64"))
    extension = json.loads(image.manifest.annotations[ANNOTATION_IMAGE_EXTENSION])
    assert extension["launch"] == {"app_names": ["web"]}
    assert extension["applications"][0]["files"] == ["deploy.yaml"]
    assert image.config["config"]["Labels"]["io.sealer.version"]
    # Unchanged rebuild: every layer from the cache, same digest.
    code, out2, err = run(
        "build", "--build-mode", "lite", "-t", "demo:v1", "--platform", "linux/amd64", str(ctx)
    )
    assert code == 0 and "(2 of this build's 2 from cache)" in out2
    assert out.splitlines()[0] == out2.splitlines()[0]


def test_multi_platform_build_makes_an_index(tmp_path: Path, home: Path) -> None:
    kubefile = "FROM scratch\nCOPY ${ARCH}/bin bin\n"
    ctx = context(tmp_path / "ctx", kubefile, {"amd64/bin/tool": "x86", "arm64/bin/tool": "arm"})
    code, out, err = run(
        "-q", "build", "-o", "json", "-t", "multi:v1", "--platform", "linux/amd64,linux/arm64", str(ctx)
    )
    assert code == 0, err
    assert json.loads(out)["platforms"] == ["linux/amd64", "linux/arm64"]
    store = ImageStore(home / "images")
    details = store.details(store.resolve("multi:v1"))
    assert details.is_index and [str(i.platform) for i in details.images] == ["linux/amd64", "linux/arm64"]
    for image, want in zip(details.images, (b"x86", b"arm"), strict=True):
        assert image.config["architecture"] == image.platform.architecture  # type: ignore[union-attr]
        import tarfile

        with tarfile.open(store.blob_path(image.manifest.layers[0].digest)) as tar:
            member = tar.extractfile("bin/tool")
            assert member is not None and member.read() == want


def test_remote_app_and_add_sources_are_downloaded(tmp_path: Path, home: Path) -> None:
    import http.server
    import threading

    served = tmp_path / "www"
    served.mkdir()
    (served / "flannel.yml").write_text("spec:\n  containers:\n  - image: flannel/flannel:v0.20\n")
    (served / "tool.bin").write_text("binary")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(served), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        kubefile = f"FROM scratch\nADD {base}/tool.bin bin/\nCNI flannel {base}/flannel.yml\nLAUNCH flannel\n"
        ctx = context(tmp_path / "ctx", kubefile, {})
        code, out, err = run("-q", "build", "--build-mode", "lite", "-t", "remote:v1", str(ctx))
        assert code == 0, err
        code, out, err = run("build", "--dry-run", "-o", "json", str(ctx))
        plan = json.loads(out)
        assert plan["labels"] == {"cluster.alpha.sealer.io/kube-cni-flannel": "true"}
        assert plan["launch_commands"] == ["kubectl apply -f application/apps/flannel/flannel.yml"]
        store = ImageStore(home / "images")
        image = store.select("remote:v1")
        import tarfile

        names: list[str] = []
        for layer in image.manifest.layers:
            with tarfile.open(store.blob_path(layer.digest)) as tar:
                names += tar.getnames()
        assert "bin/tool.bin" in names and "application/apps/flannel/flannel.yml" in names
        # A URL that does not answer 200 is a clear error naming it.
        (ctx / "Kubefile").write_text(f"FROM scratch\nADD {base}/missing.bin bin/\n")
        code, _, err = run("-q", "build", "--build-mode", "lite", "-t", "remote:v2", str(ctx))
        assert code == 1 and "missing.bin failed: HTTP 404" in err
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_copy_destination_cannot_climb_out_of_the_image(tmp_path: Path, home: Path) -> None:
    import tarfile

    ctx = context(tmp_path / "ctx", "FROM scratch\nCOPY a.txt ../../etc/\n", {"a.txt": "x"})
    code, _, err = run("-q", "build", "--build-mode", "lite", "-t", "clamp:v1", str(ctx))
    assert code == 0, err
    store = ImageStore(home / "images")
    with tarfile.open(store.blob_path(store.select("clamp:v1").manifest.layers[0].digest)) as tar:
        assert tar.getnames() == ["etc", "etc/a.txt"]


def test_add_unpacks_a_local_archive(tmp_path: Path, home: Path) -> None:
    import io
    import tarfile

    ctx = context(tmp_path / "ctx", "FROM scratch\nADD cri.tgz cri/\n", {})
    with tarfile.open(ctx / "cri.tgz", "w:gz") as tar:
        data = b"#!/bin/sh\n"
        info = tarfile.TarInfo("bin/containerd")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    code, _, err = run("-q", "build", "--build-mode", "lite", "-t", "cri:v1", str(ctx))
    assert code == 0, err
    store = ImageStore(home / "images")
    layer = store.select("cri:v1").manifest.layers[0]
    with tarfile.open(store.blob_path(layer.digest)) as tar:
        member = tar.getmember("cri/bin/containerd")
        assert member.mode == 0o755 and member.mtime == 0 and member.uid == 0
    (ctx / "bad.tgz").write_text("not an archive")
    (ctx / "Kubefile").write_text("FROM scratch\nADD bad.tgz x/\n")
    code, _, err = run("-q", "build", "--build-mode", "lite", "-t", "cri:v2", str(ctx))
    assert code == 1 and "line 2: ADD cannot unpack bad.tgz" in err


def test_derived_image_reuses_base_layers_and_inherits_apps(tmp_path: Path, home: Path) -> None:
    base_kubefile = "FROM scratch\nENV PodCIDR=10.0.0.0/16\nCNI calico local://calico\nLAUNCH calico\n"
    base_ctx = context(tmp_path / "base", base_kubefile, {"calico/calico.yaml": "kind: ConfigMap\n"})
    lite = ("-q", "build", "--build-mode", "lite", "--platform", "linux/amd64")
    code, _, err = run(*lite, "-t", "reg.local/k8s:v1", str(base_ctx))
    assert code == 0, err
    derived = 'FROM reg.local/k8s:v1\nCOPY app.yaml manifests/\nAPPCMDS calico ["kubectl apply -f ."]\n'
    ctx = context(tmp_path / "derived", derived, {"app.yaml": "kind: ConfigMap\n"})
    code, _, err = run(*lite, "-t", "app:v1", str(ctx))
    assert code == 0, err
    store = ImageStore(home / "images")
    platform = oci.Platform("linux", "amd64")
    base = store.select("reg.local/k8s:v1", platform)
    image = store.select("app:v1", platform)
    assert image.manifest.layers[: len(base.manifest.layers)] == base.manifest.layers
    assert len(image.manifest.layers) == len(base.manifest.layers) + 1
    extension = json.loads(image.manifest.annotations[ANNOTATION_IMAGE_EXTENSION])
    calico = next(a for a in extension["applications"] if a["name"] == "calico")
    assert calico["cmds"] == ["kubectl apply -f ."] and calico["type"] == "kube"
    assert extension["launch"] == {"app_names": ["calico"]}  # inherited: the Kubefile has no LAUNCH
    assert extension["env"] == {"PodCIDR": "10.0.0.0/16"}
    assert "PodCIDR=10.0.0.0/16" in image.config["config"]["Env"]
    assert image.config["config"]["Labels"]["cluster.alpha.sealer.io/kube-cni-calico"] == "true"
    assert len(image.config["rootfs"]["diff_ids"]) == len(image.manifest.layers)
