"""Building the k3s ClusterImages of the end-to-end tests and the demo: a release mirror on loopback
holding the stand-in k3s and this machine's Debian containerd/registry binaries, images/k3s/build.sh
run against it, and a derived image with a demo app (see tests/e2e/README.md)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.doubles.build import build_executable
from tests.registry_fixture import free_port, registry_missing_reason, start_registry

ROOT = Path(__file__).resolve().parents[2]
SEALER = ROOT / ".venv" / "bin" / "sealer"
K3S_VERSION = "v1.30.6+k3s1"
REGISTRY_VERSION = "2.8.3"
# The one container image the ClusterImage carries: it exists only in the image's registry/ once the
# source registry of the build is stopped, so a node that pulls it proves the offline path.
HELLO_REPO = "library/sealer-e2e-hello"
HELLO_TAG = "1"
# containerd and friends from Debian: the stand-in k3s runs the real containerd found beside it.
HELPER_BINARIES = ("containerd", "containerd-shim-runc-v2", "runc", "ctr")


def which(name: str) -> str | None:
    return shutil.which(name, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


def sealer_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALER_")}
    env["SEALER_HOME"] = str(home)
    env.update(extra)
    return env


def run_sealer(
    home: Path, *args: str, check: bool = True, timeout: float = 900, **extra: str
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(SEALER), *args],
        env=sealer_env(home, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"sealer {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def tar_layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Mirror:
    """python's http.server on loopback, serving GitHub-shaped release paths; stopped by PID."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def sha_line(path: Path, name: str) -> str:
    return f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}\n"


def registry_release(root: Path) -> None:
    """The distribution registry release (tarball + checksums) under root, GitHub-shaped: this
    machine's Debian docker-registry binary as `registry`."""
    reg_dir = root / "distribution/distribution/releases/download" / f"v{REGISTRY_VERSION}"
    reg_dir.mkdir(parents=True)
    tgz = reg_dir / f"registry_{REGISTRY_VERSION}_linux_amd64.tar.gz"
    registry_bin = which("docker-registry")
    assert registry_bin is not None
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(registry_bin, arcname="registry")
    (reg_dir / f"registry_{REGISTRY_VERSION}_checksums.txt").write_text(sha_line(tgz, tgz.name))


ETCD_VERSION = "3.5.15"


def etcd_release(root: Path, version: str = ETCD_VERSION) -> None:
    """etcd's release as GitHub serves it (etcd-v<V>-linux-amd64.tar.gz with etcdctl and etcdutl
    inside, SHA256SUMS beside it) under root, with the stand-ins as the two tools."""
    d = root / "etcd-io/etcd/releases/download" / f"v{version}"
    d.mkdir(parents=True)
    stem = f"etcd-v{version}-linux-amd64"
    tools = d / "tools"
    for name in ("etcdctl", "etcdutl"):
        build_executable(name, tools / name)
    tgz = d / f"{stem}.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name in ("etcdctl", "etcdutl"):
            tar.add(tools / name, arcname=f"{stem}/{name}")
    shutil.rmtree(tools)
    (d / "SHA256SUMS").write_text(sha_line(tgz, tgz.name))


def serve(root: Path) -> Mirror:
    """Serve root on a loopback port (the caller stops the Mirror)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(root), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    mirror = Mirror(root, port, proc)
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"{mirror.url}/", timeout=2).close()
            return mirror
        except OSError:
            if time.monotonic() > deadline:
                mirror.stop()
                raise
            time.sleep(0.1)


def push_hello(scratch_dir: Path, source_host: str) -> str:
    """Push the one container image the ClusterImages carry to the build's source registry; its ref."""
    from sealer.image.registry import RegistryOptions
    from sealer.image.service import push
    from sealer.image.store import ImageStore
    from tests.registry_fixture import make_test_image

    scratch = ImageStore(scratch_dir)
    hello_ref = f"{source_host}/{HELLO_REPO}:{HELLO_TAG}"
    make_test_image(scratch, hello_ref, [tar_layer({"hello.txt": b"hello from the ClusterImage\n"})])
    asyncio.run(push(scratch, hello_ref, RegistryOptions(insecure=True)))
    return hello_ref


def helper_bin_dir(work: Path) -> Path:
    """A directory of this machine's containerd/runc/ctr, for build.sh --extra-bin."""
    extra = work / "extra-bin"
    extra.mkdir()
    for name in HELPER_BINARIES:
        found = which(name)
        assert found is not None
        shutil.copy2(found, extra / name)
    return extra


def run_build_sh(runtime: str, home: Path, *flags: str) -> str:
    """images/<runtime>/build.sh with flags, this checkout's sealer, and `--insecure` for the build's
    plain-HTTP source registry; its output (the test fails with it if the build does)."""
    done = subprocess.run(
        [
            "bash",
            str(ROOT / f"images/{runtime}/build.sh"),
            *flags,
            "--sealer",
            str(SEALER),
            "--",
            "--insecure",
        ],
        env=sealer_env(home),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"images/{runtime}/build.sh failed:\n{log}"
    return log


def k3s_release(root: Path, image_list: str) -> None:
    """The k3s release files (stand-in binary, air-gap list, checksums) under root."""
    k3s_dir = root / "k3s-io/k3s/releases/download" / K3S_VERSION  # http.server unquotes %2B to +
    k3s_dir.mkdir(parents=True)
    build_executable("k3s", k3s_dir / "k3s")
    (k3s_dir / "k3s-images.txt").write_text(image_list)
    (k3s_dir / "sha256sum-amd64.txt").write_text(
        sha_line(k3s_dir / "k3s", "k3s") + sha_line(k3s_dir / "k3s-images.txt", "k3s-images.txt")
    )


def make_mirror(root: Path, image_list: str) -> Mirror:
    """A loopback release mirror with the k3s and registry releases."""
    k3s_release(root, image_list)
    registry_release(root)
    return serve(root)


def build_prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not SEALER.exists():
        return f"{SEALER} is missing (run scripts/setup)"
    if reason := registry_missing_reason():
        return reason
    for name in HELPER_BINARIES:
        if which(name) is None:
            return f"{name} is not installed (apt-get install containerd runc; scripts/setup does it)"
    if which("haproxy") is None:
        return "haproxy is not installed (scripts/setup installs it; the image bundles it with --lb)"
    if which("curl") is None:
        return "curl is not installed"
    return None


@dataclass
class BuiltImages:
    home: Path  # SEALER_HOME holding the images (each test copies what it needs)
    base: str  # the k3s base ClusterImage from images/k3s/build.sh
    app: str  # FROM base + a kube app launched by LAUNCH
    hello_ref: str  # the container image as the build pulled it (source registry now stopped)
    build_log: str


def build_standin_images(work: Path) -> BuiltImages:
    """Build the k3s ClusterImage exactly as a user would on a connected machine (build.sh against a
    release mirror, here one on loopback with the stand-in k3s), then a derived image with an app and
    an image plugin. The source registry of the build is stopped before this returns."""
    home = work / "sealer-home"
    source = start_registry(work / "source-registry")
    mirror: Mirror | None = None
    try:
        hello_ref = push_hello(work / "scratch-store", source.host)
        mirror = make_mirror(work / "mirror", f"# air-gap images\n{hello_ref}\n")
        extra = helper_bin_dir(work)
        base = "e2e.local/sealer/k3s:standin"
        # --lb: a cluster grown to several masters gives its agents the node-local haproxy
        log = run_build_sh(
            "k3s",
            home,
            "--version",
            K3S_VERSION,
            "--mirror",
            mirror.url,
            "--tag",
            base,
            "--extra-bin",
            str(extra),
            "--lb",
        )
        app_ctx = work / "app-context"
        app_ctx.mkdir()
        (app_ctx / "demo.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sealer-e2e-demo\n  namespace: default\n"
            "data:\n  launched: by-sealer-run\n"
        )
        # An image plugin (sealer's plugins/ convention): runs on master0 before the runtime install.
        (app_ctx / "plugins").mkdir()
        (app_ctx / "plugins" / "image-hook.yaml").write_text(
            "apiVersion: sealer.io/v1\nkind: Plugin\nmetadata:\n  name: image-hook\nspec:\n  type: SHELL\n"
            "  action: pre-install\n  data: |\n    test -x bin/k3s && date +%s > /etc/sealer-e2e-image-hook\n"
        )
        (app_ctx / "Kubefile").write_text(
            f'FROM {base}\nCOPY plugins plugins\nAPP demo local://demo.yaml\nLAUNCH ["demo"]\n'
        )
        app = "e2e.local/sealer/k3s-demo:1"
        built = run_sealer(home, "build", "-t", app, str(app_ctx))
    finally:
        # Gone before any test runs: from here on the hello image exists only inside the ClusterImage.
        if mirror is not None:
            mirror.stop()
        source.stop()
    return BuiltImages(home, base, app, hello_ref, log + built.stdout + built.stderr)
