"""The k3s stand-in's embedded containerd pulls through the private registry mirror declared in
registries.yaml (real Debian docker-registry on loopback, image pushed with skopeo), as k3s does."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import FAST, Node, free_port, need_containerd, wait_for

pytestmark = pytest.mark.integration


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def make_oci_image(layout: Path, tag: str) -> None:
    """A one-layer OCI image layout, built by hand so the test needs no network."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        body = b"hello from the private registry\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    layer_digest, layer_size = _blob(layout, gzip.compress(raw.getvalue(), mtime=0))
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_digest, config_size = _blob(layout, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest,
                    "size": layer_size,
                }
            ],
        }
    ).encode()
    manifest_digest, manifest_size = _blob(layout, manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": manifest_digest,
                        "size": manifest_size,
                        "annotations": {"org.opencontainers.image.ref.name": tag},
                    }
                ],
            }
        )
    )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    for b in ("docker-registry", "skopeo"):
        if shutil.which(b) is None:
            pytest.skip(f"{b} not installed (apt-get install {b})")
    port = free_port()
    cfg = tmp_path / "registry.yml"
    cfg.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\nlog:\n  level: info\n"
    )
    log = tmp_path / "registry.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=f, stderr=subprocess.STDOUT)
    try:
        import urllib.request

        wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).status == 200,
            what="registry up",
        )
        layout = tmp_path / "oci"
        make_oci_image(layout, "v1")
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--dest-tls-verify=false",
                f"oci:{layout}:v1",
                f"docker://127.0.0.1:{port}/library/hello:v1",
            ],
            check=True,
            capture_output=True,
        )
        yield f"127.0.0.1:{port}", log
    finally:
        proc.terminate()
        proc.wait(10)


def test_pull_through_registries_yaml_mirror(
    nodes: Callable[[str], Node], registry: tuple[str, Path]
) -> None:
    need_containerd()
    address, log = registry
    n = nodes("m0")
    reg = n.root / "etc/rancher/k3s/registries.yaml"
    reg.parent.mkdir(parents=True)
    reg.write_text(f'mirrors:\n  docker.io:\n    endpoint:\n      - "http://{address}"\n')
    n.start("server", "--cluster-init", "--https-listen-port", str(n.port), "--node-name", "m0", *FAST)
    n.wait_ready("m0")
    hosts = (n.data / "agent/etc/containerd/certs.d/docker.io/hosts.toml").read_text()
    assert 'server = "https://registry-1.docker.io/v2"' in hosts
    assert f'[host."http://{address}/v2"]' in hosts and 'capabilities = ["pull", "resolve"]' in hosts
    config = (n.data / "agent/etc/containerd/config.toml").read_text()
    assert f'config_path = "{n.data}/agent/etc/containerd/certs.d"' in config

    r = n.run("crictl", "pull", "hello:v1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Image is up to date for sha256:")
    # the bytes came from our registry, asked for as the docker.io mirror (ns=docker.io)
    assert "/v2/library/hello/manifests/v1" in log.read_text()
    images = n.run("ctr", "images", "ls", "-q")
    assert "docker.io/library/hello:v1" in images.stdout.split()

    missing = n.run("crictl", "pull", "nothere:v9")
    assert missing.returncode == 1 and 'pull image "nothere:v9" failed' in missing.stderr
