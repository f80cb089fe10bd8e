"""The stand-in ClusterImages of the runtime suites (k0s, kubernetes, k3s), built as a user would:
images/<runtime>/build.sh (haproxy and keepalived bundled) against a loopback release mirror, plus
an app image. Built once per session by the fixtures in tests/e2e/conftest.py; every test copies the
SEALER_HOME it gets.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.doubles.build import build_executable
from tests.e2e.images import (
    K3S_VERSION,
    Mirror,
    etcd_release,
    helper_bin_dir,
    k3s_release,
    push_hello,
    registry_release,
    run_build_sh,
    run_sealer,
    serve,
    sha_line,
    which,
)
from tests.e2e.images import build_prerequisites as k3s_build_prerequisites
from tests.registry_fixture import start_registry


def build_prerequisites() -> str | None:
    """The k3s suite's prerequisites plus haproxy and keepalived, which the images bundle (--lb --vip)."""
    if reason := k3s_build_prerequisites():
        return reason
    for name in ("haproxy", "keepalived"):
        if which(name) is None:
            return f"{name} is not installed (scripts/setup installs it)"
    return None


K0S_VERSION = "v1.30.5+k0s.0"


@dataclass
class RuntimeImage:
    runtime: str
    home: Path
    image: str  # base + a kube app launched by LAUNCH
    hello_ref: str
    # where the runtime's containerd keeps its state (bind-mounted to ext4 on test-bed hosts)
    containerd_root: str
    certs_d: str  # hosts.toml directory sealer writes for the runtime's containerd
    ctr: str  # the runtime's ctr command on a host


def _k0s_release(root: Path, image_list: str) -> None:
    d = root / "k0sproject/k0s/releases/download" / K0S_VERSION
    d.mkdir(parents=True)
    name = f"k0s-{K0S_VERSION}-amd64"
    build_executable("k0s", d / name)
    (d / "airgap-images-list.txt").write_text(image_list)
    (d / "sha256sums.txt").write_text(
        sha_line(d / name, name) + sha_line(d / "airgap-images-list.txt", "airgap-images-list.txt")
    )


MIRROR = "{mirror}"  # in build flags: the loopback release mirror's URL, known once it serves


def _build_runtime_image(
    tmp_path_factory: pytest.TempPathFactory,
    runtime: str,
    release: Callable[[Path, Path, str], list[str]],
) -> tuple[Path, str, str]:
    """images/<runtime>/build.sh with --lb --vip against a loopback release mirror that
    `release(root, work, hello_ref)` fills (it returns the runtime's own build flags), then a
    derived image with an app. The build's source registry and the mirror are stopped before any
    test runs. Returns SEALER_HOME, the app image and the container image's ref."""
    if reason := build_prerequisites():
        pytest.skip(f"{runtime} image build: {reason}")
    work = tmp_path_factory.mktemp(f"{runtime}-image")
    home = work / "sealer-home"
    source = start_registry(work / "source-registry")
    mirror: Mirror | None = None
    try:
        hello_ref = push_hello(work / "scratch-store", source.host)
        root = work / "mirror"
        flags = release(root, work, hello_ref)
        registry_release(root)
        mirror = serve(root)
        base = f"e2e.local/sealer/{runtime}:standin"
        flags = [mirror.url if f == MIRROR else f for f in flags]
        run_build_sh(runtime, home, *flags, "--mirror", mirror.url, "--tag", base, "--lb", "--vip")
        app = _app_image(home, work, base, f"e2e.local/sealer/{runtime}-demo:1")
    finally:
        if mirror is not None:
            mirror.stop()
        source.stop()
    return home, app, hello_ref


def _k0s_flags(root: Path, work: Path, hello_ref: str) -> list[str]:
    _k0s_release(root, f"{hello_ref}\n")
    return ["--version", K0S_VERSION, "--extra-bin", str(helper_bin_dir(work))]


def build_k0s_image(tmp_path_factory: pytest.TempPathFactory) -> RuntimeImage:
    """The k0s ClusterImage (stand-in k0s, Debian's containerd beside it) with an app."""
    home, app, hello_ref = _build_runtime_image(tmp_path_factory, "k0s", _k0s_flags)
    return RuntimeImage(
        "k0s",
        home,
        app,
        hello_ref,
        containerd_root="/var/lib/k0s/containerd",
        certs_d="/etc/k0s/certs.d",
        ctr="/usr/local/bin/k0s ctr",
    )


KUBE_VERSION = "v1.31.2"
CONTAINERD_VERSION = "1.7.22"
RUNC_VERSION = "1.1.14"


def _kubernetes_release(root: Path) -> None:
    """dl.k8s.io and GitHub paths for kubeadm/kubelet/kubectl (stand-ins), containerd and runc
    (this machine's Debian binaries, packed as the upstream release files are)."""
    d = root / "release" / KUBE_VERSION / "bin/linux/amd64"
    d.mkdir(parents=True)
    for name in ("kubeadm", "kubelet", "kubectl"):
        build_executable(name, d / name)
        (d / f"{name}.sha256").write_text(sha_line(d / name, name).split()[0] + "\n")
    c = root / "containerd/containerd/releases/download" / f"v{CONTAINERD_VERSION}"
    c.mkdir(parents=True)
    tgz = c / f"containerd-{CONTAINERD_VERSION}-linux-amd64.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name in ("containerd", "containerd-shim-runc-v2", "ctr"):
            found = which(name)
            assert found is not None
            tar.add(found, arcname=f"bin/{name}")
    (c / f"{tgz.name}.sha256sum").write_text(sha_line(tgz, tgz.name))
    r = root / "opencontainers/runc/releases/download" / f"v{RUNC_VERSION}"
    r.mkdir(parents=True)
    runc = which("runc")
    assert runc is not None
    shutil.copy2(runc, r / "runc.amd64")
    (r / "runc.sha256sum").write_text(sha_line(r / "runc.amd64", "runc.amd64"))
    etcd_release(root)  # etcdctl/etcdutl for `sealer etcd backup|restore`


def _kubernetes_flags(root: Path, work: Path, hello_ref: str) -> list[str]:
    _kubernetes_release(root)
    images = work / "images.txt"
    images.write_text(f"{hello_ref}\n")
    return [
        "--version",
        KUBE_VERSION,
        "--containerd-version",
        CONTAINERD_VERSION,
        "--runc-version",
        RUNC_VERSION,
        "--k8s-mirror",
        MIRROR,
        "--images",
        str(images),
    ]


def build_kubernetes_image(tmp_path_factory: pytest.TempPathFactory) -> RuntimeImage:
    """The kubernetes ClusterImage (stand-in kubeadm/kubelet/kubectl, Debian's containerd and
    runc) with an app."""
    home, app, hello_ref = _build_runtime_image(tmp_path_factory, "kubernetes", _kubernetes_flags)
    return RuntimeImage(
        "kubernetes",
        home,
        app,
        hello_ref,
        containerd_root="/var/lib/containerd",
        certs_d="/etc/containerd/certs.d",
        ctr="/usr/local/bin/ctr --namespace k8s.io",
    )


def _k3s_flags(root: Path, work: Path, hello_ref: str) -> list[str]:
    k3s_release(root, f"{hello_ref}\n")
    return ["--version", K3S_VERSION, "--extra-bin", str(helper_bin_dir(work))]


def build_k3s_image(tmp_path_factory: pytest.TempPathFactory) -> RuntimeImage:
    """The k3s ClusterImage (stand-in k3s, Debian's containerd beside it) with an app."""
    home, app, hello_ref = _build_runtime_image(tmp_path_factory, "k3s", _k3s_flags)
    return RuntimeImage(
        "k3s",
        home,
        app,
        hello_ref,
        containerd_root="/var/lib/rancher/k3s/agent/containerd",
        certs_d="/var/lib/rancher/k3s/agent/etc/containerd/certs.d",
        ctr="/usr/local/bin/k3s ctr",
    )


def _app_image(home: Path, work: Path, base: str, app: str) -> str:
    """FROM base + a kube app launched by LAUNCH (a ConfigMap the test looks for)."""
    app_ctx = work / "app-context"
    app_ctx.mkdir()
    (app_ctx / "demo.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sealer-e2e-demo\n  namespace: default\n"
        "data:\n  launched: by-sealer-run\n"
    )
    (app_ctx / "Kubefile").write_text(f'FROM {base}\nAPP demo local://demo.yaml\nLAUNCH ["demo"]\n')
    run_sealer(home, "build", "-t", app, str(app_ctx))
    return app


def prepare_hosts(tb, hosts, img: RuntimeImage) -> None:  # type: ignore[no-untyped-def]
    parent = img.containerd_root.rsplit("/", 1)[0]
    if img.runtime == "kubernetes":
        for h in hosts:
            # Test-bed only: a host's /proc/sys is read-only inside, as in a container; its network
            # sysctls are set from outside its namespace (kubeadm's pre-flight wants ip_forward).
            for kv in (
                "net.ipv4.ip_forward=1",
                "net.bridge.bridge-nf-call-iptables=1",
                "net.bridge.bridge-nf-call-ip6tables=1",
            ):
                subprocess.run(["ip", "netns", "exec", h.netns, "sysctl", "-qw", kv], check=False)
        return  # /var/lib/containerd is already the nested lab's ext4 bind mount
    for h in hosts:
        # Test-bed only: / is overlayfs, where containerd's overlay snapshots cannot live; the nested
        # lab gives /var/lib/containerd an ext4 bind mount, so the runtime's containerd root goes there.
        tb.run_on(
            h,
            f"mkdir -p /var/lib/containerd/{img.runtime} {parent} && "
            f"ln -sfn /var/lib/containerd/{img.runtime} {img.containerd_root}",
        )
