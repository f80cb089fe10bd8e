"""Fixtures for the stand-ins' contract tests: the k3s zipapp, isolated node roots, process lifecycles.

Each stand-in node gets its own K3S_STANDIN_ROOT (its /etc, /run, /var/lib), so several nodes run side by
side on loopback; processes are run by Debian's /usr/bin/python3, the interpreter the test-bed hosts have.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.doubles.build import INTERPRETER, build_executable
from tests.doubles.kubeclient import KubeClient, KubeError


def _interpreter_ok() -> str | None:
    if not Path(INTERPRETER).exists():
        return f"{INTERPRETER} is missing"
    r = subprocess.run([INTERPRETER, "-c", "import yaml, cryptography"], capture_output=True)
    if r.returncode != 0:
        return f"{INTERPRETER} lacks PyYAML/cryptography (apt-get install python3-yaml python3-cryptography)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    """Poll until predicate() is truthy; the timeout only bounds a hung test, it is not a speed check."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, KubeError) as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@dataclass
class Node:
    """One stand-in k3s process with its own root directory."""

    binary: Path
    root: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)

    @property
    def data(self) -> Path:
        return self.root / "var/lib/rancher/k3s"

    @property
    def token(self) -> str:
        return (self.data / "server" / "token").read_text().strip()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "K3S_STANDIN_ROOT": str(self.root),
            "K3S_STANDIN_JOIN_TIMEOUT": "3",
            "HOME": str(self.root),
        }
        env.update(extra or {})
        return env

    def run(
        self, *args: str, env: dict[str, str] | None = None, user: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.binary), *args]
        if user:
            cmd = ["setpriv", f"--reuid={user}", "--regid=65534", "--clear-groups", *cmd]
        return subprocess.run(cmd, env=self.env(env), capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str, env: dict[str, str] | None = None) -> Node:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = self.root / "k3s.log"
        with self.log.open("ab") as f:
            self.proc = subprocess.Popen(
                [str(self.binary), *args], env=self.env(env), stdout=f, stderr=subprocess.STDOUT
            )
        return self

    def admin(self) -> KubeClient:
        return KubeClient.from_kubeconfig(self.root / "etc/rancher/k3s/k3s.yaml")

    def wait_ready(self, node: str) -> None:
        """Wait for this server's API and for `node` to be Ready in it."""

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"k3s exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if not (self.root / "etc/rancher/k3s/k3s.yaml").exists():
                return False
            return node_ready(self.admin(), node) == "True"

        wait_for(ready, what=f"node {node} Ready")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        kids = children(self.proc.pid)
        self.proc.send_signal(sig)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in kids:  # containerd, if k3s was killed before it could stop it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def node_ready(client: KubeClient, name: str) -> str | None:
    try:
        node = client.get(f"/api/v1/nodes/{name}")
    except KubeError:
        return None
    return next(
        (c["status"] for c in node.get("status", {}).get("conditions", []) if c["type"] == "Ready"), None
    )


@pytest.fixture(scope="session")
def k3s_bin() -> Iterator[Path]:
    reason = _interpreter_ok()
    if reason:
        pytest.skip(reason)
    # World-readable, so the not-root contract can run it as nobody.
    d = Path(tempfile.mkdtemp(prefix="k3sbin", dir="/tmp"))
    os.chmod(d, 0o755)
    yield build_executable("k3s", d / "k3s")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def nodes(k3s_bin: Path) -> Iterator[Callable[[str], Node]]:
    """Factory of stand-in nodes (each its own root); all are stopped at teardown.

    Roots are short paths under /tmp: containerd's unix sockets must stay under 104 bytes."""
    made: list[Node] = []
    base = Path(tempfile.mkdtemp(prefix="k3s", dir="/tmp"))
    os.chmod(base, 0o755)

    def make(name: str) -> Node:
        n = Node(k3s_bin, base / name, free_port())
        made.append(n)
        return n

    yield make
    for n in reversed(made):
        n.stop()
    shutil.rmtree(base, ignore_errors=True)


def need_containerd() -> None:
    for b in ("containerd", "ctr", "containerd-shim-runc-v2"):
        if shutil.which(b) is None:
            pytest.skip(f"{b} not installed (apt-get install containerd)")
    if os.geteuid() != 0:
        pytest.skip("containerd needs root")


FAST = (
    "--kubelet-arg",
    "node-status-update-frequency=1s",
    "--kube-controller-manager-arg",
    "node-monitor-grace-period=4s",
)


@dataclass
class K0sNode(Node):
    """A k0s stand-in node: its own K0S_STANDIN_ROOT and a k0s.yaml with free ports."""

    k0s_api_port: int = 0

    @property
    def data(self) -> Path:
        return self.root / "var/lib/k0s"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "K0S_STANDIN_ROOT": str(self.root),
            "HOME": str(self.root),
        }
        env.update(extra or {})
        return env

    def write_config(self, extra: str = "") -> Path:
        cfg = self.root / "etc/k0s/k0s.yaml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(
            "apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nmetadata:\n  name: k0s\n"
            "spec:\n  api:\n"
            f"    address: 127.0.0.1\n    port: {self.port}\n    k0sApiPort: {self.k0s_api_port}\n{extra}"
        )
        return cfg

    def admin(self) -> KubeClient:
        return KubeClient.from_kubeconfig(self.data / "pki/admin.conf")

    def wait_api(self) -> None:
        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"k0s exited {self.proc.returncode}:\n{self.output()[-3000:]}")
            if not (self.data / "pki/admin.conf").exists():
                return False
            self.admin().get("/api/v1/namespaces/default")
            return True

        wait_for(up, what="k0s API up")


@pytest.fixture(scope="session")
def k0s_bin() -> Iterator[Path]:
    reason = _interpreter_ok()
    if reason:
        pytest.skip(reason)
    d = Path(tempfile.mkdtemp(prefix="k0sbin", dir="/tmp"))
    os.chmod(d, 0o755)
    yield build_executable("k0s", d / "k0s")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def k0s_nodes(k0s_bin: Path) -> Iterator[Callable[[str], K0sNode]]:
    made: list[K0sNode] = []
    base = Path(tempfile.mkdtemp(prefix="k0s", dir="/tmp"))
    os.chmod(base, 0o755)

    def make(name: str) -> K0sNode:
        n = K0sNode(k0s_bin, base / name, free_port(), k0s_api_port=free_port())
        made.append(n)
        return n

    yield make
    for n in reversed(made):
        n.stop()
    shutil.rmtree(base, ignore_errors=True)


@dataclass
class K8sNode(Node):
    """A kubeadm+kubelet stand-in node: its own K8S_STANDIN_ROOT; `kubelet` is started the way
    `systemctl restart kubelet` would, with the flags kubeadm wrote to kubeadm-flags.env."""

    kubelet_bin: Path = field(default_factory=Path)
    kubelet: subprocess.Popen[bytes] | None = None

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "K8S_STANDIN_ROOT": str(self.root),
            "K8S_STANDIN_WAIT": "60",
            "HOME": str(self.root),
        }
        env.update(extra or {})
        return env

    @property
    def etc(self) -> Path:
        return self.root / "etc/kubernetes"

    def admin(self) -> KubeClient:
        return KubeClient.from_kubeconfig(self.etc / "admin.conf")

    def kubeadm(
        self, *args: str, env: dict[str, str] | None = None, start_kubelet: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run kubeadm; once it has written the kubelet's flags, start the kubelet as systemd would."""
        self.root.mkdir(parents=True, exist_ok=True)
        flags_env = self.root / "var/lib/kubelet/kubeadm-flags.env"
        proc = subprocess.Popen(
            [str(self.binary), *args],
            env=self.env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while start_kubelet and proc.poll() is None and time.monotonic() < deadline:
            if flags_env.exists() and self.kubelet is None:
                self.start_kubelet()
            time.sleep(0.1)
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def start_kubelet(self) -> None:
        flags_env = (self.root / "var/lib/kubelet/kubeadm-flags.env").read_text()
        kubeadm_args = flags_env.split('"')[1].split()
        k = self.root / "etc/kubernetes"
        self.log = self.root / "kubelet.log"
        with self.log.open("ab") as f:
            self.kubelet = subprocess.Popen(
                [
                    str(self.kubelet_bin),
                    f"--bootstrap-kubeconfig={k}/bootstrap-kubelet.conf",
                    f"--kubeconfig={k}/kubelet.conf",
                    f"--config={self.root}/var/lib/kubelet/config.yaml",
                    *kubeadm_args,
                ],
                env=self.env(),
                stdout=f,
                stderr=subprocess.STDOUT,
            )

    def stop_kubelet(self) -> None:
        if self.kubelet is not None and self.kubelet.poll() is None:
            self.kubelet.terminate()
            self.kubelet.wait(20)
        self.kubelet = None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.stop_kubelet()
        for f in (self.root / "var/lib/kubelet/standin-pods").glob("*.json"):
            try:
                import json

                os.kill(int(json.loads(f.read_text())["pid"]), signal.SIGTERM)
            except (ProcessLookupError, ValueError, KeyError, OSError):
                pass


@pytest.fixture(scope="session")
def k8s_bins() -> Iterator[tuple[Path, Path]]:
    reason = _interpreter_ok()
    if reason:
        pytest.skip(reason)
    d = Path(tempfile.mkdtemp(prefix="k8sbin", dir="/tmp"))
    os.chmod(d, 0o755)
    yield build_executable("kubeadm", d / "kubeadm"), build_executable("kubelet", d / "kubelet")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def containerd_socket() -> Iterator[str]:
    """A real containerd for the kubeadm nodes' CRI endpoint (what containerd.service provides on a host)."""
    need_containerd()
    d = Path(tempfile.mkdtemp(prefix="ctd", dir="/tmp"))
    sock = d / "c.sock"
    with (d / "log").open("wb") as log:
        proc = subprocess.Popen(
            [
                "containerd",
                "--root",
                str(d / "root"),
                "--state",
                str(d / "state"),
                "--address",
                str(sock),
                "-c",
                "/dev/null",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(sock.exists, what="containerd socket")
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def k8s_nodes(k8s_bins: tuple[Path, Path]) -> Iterator[Callable[[str], K8sNode]]:
    made: list[K8sNode] = []
    base = Path(tempfile.mkdtemp(prefix="k8s", dir="/tmp"))
    os.chmod(base, 0o755)

    def make(name: str) -> K8sNode:
        n = K8sNode(k8s_bins[0], base / name, free_port(), kubelet_bin=k8s_bins[1])
        made.append(n)
        return n

    yield make
    for n in reversed(made):
        n.stop()
    shutil.rmtree(base, ignore_errors=True)
