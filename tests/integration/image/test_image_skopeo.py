"""Interop with an independent client: skopeo reads what sealer writes, sealer reads what skopeo writes.

Registry (docker://), OCI layout directories (oci:) and OCI archives (oci-archive:) in both directions.
"""

from __future__ import annotations

import gzip
import hashlib
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
from sealer.image import oci
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


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("skopeo-registry")) as r:
        yield r


def sealer(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["-q", *args], env={"SEALER_HOME": str(home)}, catch_exceptions=False)


def skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"skopeo {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_gz_layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), sha(plain)


def write_oci_dir(path: Path, tag: str, arches: list[str]) -> None:
    """An OCI layout written by the test (not by sealer): one image per arch under an index named `tag`."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        (blobs / sha(data)[7:]).write_bytes(data)
        return {"digest": sha(data), "size": len(data)}

    manifests = []
    for arch in arches:
        layer, diff_id = tar_gz_layer(
            {f"etc/{arch}.txt": arch.encode() * 100, "bin/tool": os.urandom(20_000)}
        )
        config = json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "created": "2026-02-02T00:00:00Z",
                "config": {"Labels": {"cluster.alpha.sealer.io/cluster-runtime-type": "k0s"}},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": oci.MEDIA_OCI_MANIFEST,
                "config": {"mediaType": oci.MEDIA_OCI_CONFIG, **put(config)},
                "layers": [{"mediaType": oci.MEDIA_OCI_LAYER_GZIP, **put(layer)}],
            }
        ).encode()
        manifests.append(
            {
                "mediaType": oci.MEDIA_OCI_MANIFEST,
                **put(manifest),
                "platform": {"architecture": arch, "os": "linux"},
            }
        )
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": oci.MEDIA_OCI_INDEX, "manifests": manifests}
    ).encode()
    top = {"mediaType": oci.MEDIA_OCI_INDEX, **put(index), "annotations": {oci.ANNOTATION_REF_NAME: tag}}
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))


def test_skopeo_inspects_and_copies_what_sealer_pushed(reg: Registry, tmp_path: Path) -> None:
    home = tmp_path / "h"
    name = reg.ref("interop/from-sealer:v1")
    layer, _ = tar_gz_layer({"hello.txt": b"hello from sealer"})
    make_test_image(ImageStore(home / "images"), name, [layer], labels={"io.sealer.version": "0.1.0"})
    pushed = sealer(home, "push", name, "--insecure")
    assert pushed.exit_code == 0, pushed.output
    digest = pushed.output.strip()
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{name}"))
    assert info["Digest"] == digest
    assert info["Labels"] == {"io.sealer.version": "0.1.0"}
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{name}")
    assert raw.encode() == ImageStore(home / "images").read_blob(digest)
    out = tmp_path / "copied"
    skopeo(
        "copy", "--src-tls-verify=false", f"docker://{name}", f"oci:{out}:v1"
    )  # skopeo verifies every blob
    copied = json.loads((out / "index.json").read_text())["manifests"][0]
    assert copied["digest"] == digest


def test_sealer_pulls_what_skopeo_pushed_from_an_oci_dir(reg: Registry, tmp_path: Path) -> None:
    src = tmp_path / "layout"
    write_oci_dir(src, "v2", ["amd64", "arm64"])
    name = reg.ref("interop/from-skopeo:v2")
    skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{src}:v2", f"docker://{name}")
    raw_index = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{name}").encode()
    home = tmp_path / "h"
    res = sealer(home, "pull", name, "--insecure", "--platform", "linux/arm64")
    assert res.exit_code == 0, res.output
    store = ImageStore(home / "images")
    assert store.resolve(name).descriptor.digest == sha(raw_index)
    arm = store.select(name, Platform("linux", "arm64"))
    (arm_entry,) = [m for m in json.loads(raw_index)["manifests"] if m["platform"]["architecture"] == "arm64"]
    assert arm.descriptor.digest == arm_entry["digest"]
    assert not store.has_blob(
        next(
            m["digest"]
            for m in json.loads(raw_index)["manifests"]
            if m["platform"]["architecture"] == "amd64"
        )
    )
    info = json.loads(sealer(home, "inspect", name, "--platform", "linux/arm64").output)
    assert info["clusterRuntime"] == "k0s" and info["platform"] == "linux/arm64"
    res = sealer(home, "pull", name, "--insecure", "--all-platforms")
    assert res.exit_code == 0, res.output
    rows = json.loads(sealer(home, "images", "-o", "json").output)
    assert sorted(rows[0]["platforms"]) == ["linux/amd64", "linux/arm64"]
    # And the whole index goes back out, to another repository, byte for byte.
    again = sealer(home, "push", name, reg.ref("interop/round-trip:v2"), "--insecure")
    assert again.exit_code == 0, again.output
    assert (
        skopeo(
            "inspect", "--tls-verify=false", "--raw", f"docker://{reg.ref('interop/round-trip:v2')}"
        ).encode()
        == raw_index
    )


def test_save_rmi_load_round_trips_and_skopeo_reads_the_archive(tmp_path: Path) -> None:
    home = tmp_path / "h"
    store = ImageStore(home / "images")
    layer, _ = tar_gz_layer({"a.txt": b"A" * 5000})
    make_test_image(store, "registry.local/sealer/app:v1", [layer, os.urandom(10_000)])
    make_test_image(store, "registry.local/sealer/other:v2", [layer])
    before = {r.name: r.descriptor.digest for r in store.records()}
    archive = tmp_path / "images.tar"
    res = sealer(
        home, "save", "-o", str(archive), "registry.local/sealer/app:v1", "registry.local/sealer/other:v2"
    )
    assert res.exit_code == 0, res.output
    info = json.loads(skopeo("inspect", f"oci-archive:{archive}:registry.local/sealer/app:v1"))
    assert info["Digest"] == before["registry.local/sealer/app:v1"]
    assert (
        sealer(home, "rmi", "registry.local/sealer/app:v1", "registry.local/sealer/other:v2").exit_code == 0
    )
    assert ImageStore(home / "images").records() == []
    assert list((home / "images" / "blobs" / "sha256").iterdir()) == []
    res = sealer(home, "load", "-i", str(archive))
    assert res.exit_code == 0, res.output
    after = {r.name: r.descriptor.digest for r in ImageStore(home / "images").records()}
    assert after == before
    for name in after:
        for digest in ImageStore(home / "images").reachable(
            ImageStore(home / "images").resolve(name).descriptor
        ):
            ImageStore(home / "images").verify_blob(digest)


def test_sealer_loads_an_archive_skopeo_wrote(reg: Registry, tmp_path: Path) -> None:
    src = tmp_path / "layout"
    write_oci_dir(src, "v3", ["amd64"])
    archive = tmp_path / "skopeo.tar"
    skopeo("copy", f"oci:{src}:v3", f"oci-archive:{archive}:registry.local/interop/skopeo:v3")
    home = tmp_path / "h"
    res = sealer(home, "load", "-i", str(archive))
    assert res.exit_code == 0, res.output
    assert res.output.strip() == "registry.local/interop/skopeo:v3"
    img = ImageStore(home / "images").select("registry.local/interop/skopeo:v3")
    assert img.config["architecture"] == "amd64"


def test_load_refuses_a_truncated_archive_and_imports_nothing(tmp_path: Path) -> None:
    home = tmp_path / "h"
    store = ImageStore(home / "images")
    make_test_image(store, "registry.local/app:v1", [os.urandom(200_000)])
    archive = tmp_path / "full.tar"
    assert sealer(home, "save", "-o", str(archive), "registry.local/app:v1").exit_code == 0
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    other = tmp_path / "other"
    res = sealer(other, "load", "-i", str(cut))
    assert res.exit_code == 1 and "truncated" in res.output and "hint:" in res.output
    assert ImageStore(other / "images").records() == []
    not_tar = tmp_path / "junk.tar"
    not_tar.write_bytes(b"definitely not a tar" * 100)
    res = sealer(other, "load", "-i", str(not_tar))
    assert res.exit_code == 1 and "not a valid tar" in res.output


def test_sealer_pulls_docker_v2_manifests_and_lists(reg: Registry, tmp_path: Path) -> None:
    src = tmp_path / "layout"
    write_oci_dir(src, "v4", ["amd64", "arm64"])
    name = reg.ref("interop/docker-format:v4")
    skopeo(
        "copy", "--all", "--format", "v2s2", "--dest-tls-verify=false", f"oci:{src}:v4", f"docker://{name}"
    )
    raw = json.loads(skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{name}"))
    assert raw["mediaType"] == oci.MEDIA_DOCKER_LIST
    home = tmp_path / "h"
    res = sealer(home, "pull", name, "--insecure", "--all-platforms")
    assert res.exit_code == 0, res.output
    store = ImageStore(home / "images")
    assert store.resolve(name).descriptor.media_type == oci.MEDIA_DOCKER_LIST
    img = store.select(name, Platform("linux", "arm64"))
    assert img.manifest.media_type == oci.MEDIA_DOCKER_MANIFEST
    assert img.config["architecture"] == "arm64"
    back = sealer(home, "push", name, reg.ref("interop/docker-format-copy:v4"), "--insecure")
    assert back.exit_code == 0, back.output
    copy = json.loads(
        skopeo(
            "inspect", "--tls-verify=false", "--raw", f"docker://{reg.ref('interop/docker-format-copy:v4')}"
        )
    )
    assert copy == raw
