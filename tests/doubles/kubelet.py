"""Stand-in for `kubelet` v1.31.2 as kubeadm drives it: KubeletConfiguration file, kubeconfig or TLS
bootstrap (CSR with the bootstrap token), static Pods from /etc/kubernetes/manifests (kube-apiserver really
runs: the stand-in API server started with the manifest's own flags; etcd, controller-manager and scheduler
are folded into it), node registration, heartbeats, Ready only while the CRI endpoint's containerd answers.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

try:
    from . import k3s as k3slib
    from . import pki
    from .cliflags import Flag, UsageError, parse_pflags
    from .kubeclient import KubeClient, KubeError
except ImportError:  # zipapp / script
    import k3s as k3slib  # type: ignore[no-redef]
    import pki  # type: ignore[no-redef]
    from cliflags import Flag, UsageError, parse_pflags  # type: ignore[no-redef]
    from kubeclient import KubeClient, KubeError  # type: ignore[no-redef]

VERSION = "v1.31.2"


class Failed(Exception):
    """`"command failed" err="..."`, exit 1 (what systemd then restarts)."""


def sysroot(path: str) -> Path:
    # Test-only knob shared with the kubeadm stand-in: several nodes on one machine. Unset on hosts.
    return Path(os.environ.get("K8S_STANDIN_ROOT", "") + path)


def klog(level: str, msg: str) -> None:
    now = datetime.datetime.now()
    sys.stderr.write(f"{level}{now:%m%d %H:%M:%S.%f} {os.getpid():>7} kubelet.go:0] {msg}\n")
    sys.stderr.flush()


def flags() -> list[Flag]:
    return [
        Flag("config"),
        Flag("kubeconfig"),
        Flag("bootstrap-kubeconfig"),
        Flag("container-runtime-endpoint"),
        Flag("hostname-override"),
        Flag("node-ip"),
        Flag("node-labels", "map"),
        Flag("register-with-taints", "slice"),
        Flag("pod-infra-container-image"),
        Flag("v", "int"),
        Flag("cert-dir", default="/var/lib/kubelet/pki"),
        Flag("root-dir", default="/var/lib/kubelet"),
        Flag("fail-swap-on", "bool", default=True),
        Flag("cgroup-driver"),
        Flag("node-status-update-frequency"),
        Flag("runtime-request-timeout"),
        Flag("resolv-conf"),
        Flag("help", "bool", aliases=("h",)),
        Flag("version", "bool"),
    ]


def load_config(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise Failed(
            f"failed to load kubelet config file, path: {path}, error: failed to load Kubelet config file "
            f'{path}, error failed to read kubelet config file "{path}", error: open {path}: '
            f"{(e.strerror or str(e)).lower()}"
        )
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise Failed(f"failed to load kubelet config file, path: {path}, error: {str(e).splitlines()[0]}")
    if doc.get("kind") != "KubeletConfiguration" or doc.get("apiVersion") != "kubelet.config.k8s.io/v1beta1":
        raise Failed(
            f'failed to load kubelet config file, path: {path}, error: no kind "{doc.get("kind")}" is '
            f'registered for version "{doc.get("apiVersion")}"'
        )
    return dict(doc)


def swap_on() -> bool:
    try:
        return len(Path("/proc/swaps").read_text().strip().splitlines()) > 1
    except OSError:
        return False


class RuntimeProbe:
    """The CRI endpoint, probed the way the kubelet's PLEG would notice a dead runtime."""

    def __init__(self, endpoint: str) -> None:
        self.socket = endpoint.removeprefix("unix://")
        # ctr is how the stand-in speaks to containerd; look beyond a minimal PATH (sudo, nsenter)
        search = os.pathsep.join(
            [os.environ.get("PATH", ""), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"]
        )
        self.ctr = shutil.which("ctr", path=search)

    def version(self) -> str | None:
        if not self.ctr or not Path(self.socket).exists():
            return None
        try:
            out = subprocess.run(
                [self.ctr, "--address", self.socket, "--timeout", "3s", "version"],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode != 0:
            return None
        m = re.search(r"Server:\s*\n\s*Version:\s*(\S+)", out.stdout)
        return m.group(1) if m else "unknown"


# ------------------------------------------------------------------------------------- static pods


def _flag_map(command: list[str]) -> dict[str, str]:
    out = {}
    for a in command[1:]:
        if a.startswith("--"):
            k, _, v = a[2:].partition("=")
            out[k] = v
    return out


def _pod_command(manifest: Path) -> tuple[str, list[str]]:
    doc = yaml.safe_load(manifest.read_text()) or {}
    containers = (doc.get("spec") or {}).get("containers") or [{}]
    command = list(containers[0].get("command") or [])
    return str((doc.get("metadata") or {}).get("name", manifest.stem)), command


class StaticPods(threading.Thread):
    """Runs the control-plane static Pods. kube-apiserver is a real process (our API server with the
    manifest's flags) started outside the kubelet's service, as containerd-shim would be, so stopping the
    kubelet does not stop the API; etcd/kcm/scheduler contribute their flags to it."""

    def __init__(self, manifests: Path, root_dir: Path, stop: threading.Event, node: str) -> None:
        super().__init__(name="static-pods", daemon=True)
        self.manifests, self.state, self.stop_event, self.node = (
            manifests,
            root_dir / "standin-pods",
            stop,
            node,
        )
        self.running: dict[str, str] = {}  # pod name -> manifest hash

    def _apiserver_args(self) -> list[str] | None:
        api = self.manifests / "kube-apiserver.yaml"
        if not api.exists():
            return None
        _, cmd = _pod_command(api)
        args = [a for a in cmd[1:] if a.startswith("--")]
        image = str(
            ((yaml.safe_load(api.read_text()) or {}).get("spec") or {})
            .get("containers", [{}])[0]
            .get("image", "")
        )
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        if re.fullmatch(r"v\d+\.\d+\.\d+", tag):
            args.append(f"--standin-version={tag}")  # so a new image (an upgrade) restarts the "container"
        data_dir = "/var/lib/etcd"
        etcd = self.manifests / "etcd.yaml"
        upstream = ""
        if etcd.exists():
            doc = yaml.safe_load(etcd.read_text()) or {}
            f = _flag_map(_pod_command(etcd)[1])
            data_dir = f.get("data-dir", data_dir)
            # a joined member's "etcd" is the first control plane's store, recorded by kubeadm stand-in
            if f.get("initial-cluster-state") == "existing":
                upstream = ((doc.get("metadata") or {}).get("annotations") or {}).get(
                    "standin.sealer.io/datastore", ""
                )
        args.append(f"--standin-data-dir={data_dir}")
        if upstream:
            args.append(f"--standin-upstream={upstream}")
        kcm = self.manifests / "kube-controller-manager.yaml"
        if kcm.exists():
            f = _flag_map(_pod_command(kcm)[1])
            if f.get("cluster-signing-cert-file"):
                args += [
                    f"--standin-signing-cert-file={f['cluster-signing-cert-file']}",
                    f"--standin-signing-key-file={f.get('cluster-signing-key-file', '')}",
                ]
            if f.get("node-monitor-grace-period"):
                args.append(f"--standin-node-monitor-grace-period={f['node-monitor-grace-period']}")
        return args

    def _pid_file(self, name: str) -> Path:
        return self.state / f"{name}.json"

    def _alive(self, name: str) -> dict[str, Any] | None:
        f = self._pid_file(name)
        if not f.exists():
            return None
        info = json.loads(f.read_text())
        try:
            cmdline = Path(f"/proc/{info['pid']}/cmdline").read_bytes()
        except OSError:
            return None
        return info if b"kube_apiserver_main" in cmdline else None

    def kill(self, name: str) -> None:
        info = self._alive(name)
        if info:
            try:
                os.kill(int(info["pid"]), signal.SIGTERM)
            except ProcessLookupError:
                pass
            for _ in range(50):
                if not Path(f"/proc/{info['pid']}").exists():
                    break
                time.sleep(0.1)
        self._pid_file(name).unlink(missing_ok=True)

    def _start_apiserver(self, args: list[str], digest: str) -> None:
        me = os.path.realpath(sys.argv[0])
        code = (
            "import sys; sys.path.insert(0, sys.argv.pop(1)); import apiserver; "
            "sys.exit(apiserver.kube_apiserver_main(sys.argv[1:]))"
        )
        cmd = [sys.executable, "-c", code, me, *args]
        self.state.mkdir(parents=True, exist_ok=True)
        log = open(self.state / "kube-apiserver.log", "ab")  # noqa: SIM115 - handed to the child
        if (
            Path("/run/systemd/system").is_dir()
            and shutil.which("systemd-run")
            and not os.environ.get("K8S_STANDIN_ROOT")
        ):
            # outside kubelet.service's cgroup, like a container under containerd
            unit = "standin-kube-apiserver"
            subprocess.run(["systemctl", "stop", f"{unit}.service"], capture_output=True)
            subprocess.run(["systemctl", "reset-failed", f"{unit}.service"], capture_output=True)
            subprocess.run(
                ["systemd-run", f"--unit={unit}", "--collect", "-p", "KillMode=mixed", *cmd],
                check=True,
                capture_output=True,
            )
            pid = int(
                subprocess.run(
                    ["systemctl", "show", "-p", "MainPID", "--value", f"{unit}.service"],
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                or 0
            )
        else:
            pid = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True).pid
        self._pid_file("kube-apiserver").write_text(json.dumps({"pid": pid, "hash": digest}))
        klog("I", f'"Started static pod" pod="kube-system/kube-apiserver-{self.node}" pid={pid}')

    def sync(self) -> None:
        args = self._apiserver_args()
        if args is None:
            if self._alive("kube-apiserver"):
                klog("I", '"Static pod removed" pod="kube-system/kube-apiserver"')
            self.kill("kube-apiserver")
            return
        digest = hashlib.sha256(json.dumps(args).encode()).hexdigest()
        info = self._alive("kube-apiserver")
        if info and info.get("hash") == digest:
            return
        if info:
            self.kill("kube-apiserver")
        self._start_apiserver(args, digest)

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.sync()
            except (OSError, yaml.YAMLError, subprocess.CalledProcessError, ValueError) as e:
                klog("E", f'"Failed to sync static pods" err="{e}"')
            self.stop_event.wait(1)


# ------------------------------------------------------------------------------------------- main


def tls_bootstrap(bootstrap: Path, kubeconfig: Path, cert_dir: Path, node: str) -> None:
    """Client certificate via the bootstrap kubeconfig: CSR, auto-approved, written as kubelet does."""
    doc = yaml.safe_load(bootstrap.read_text())
    boot = KubeClient.from_kubeconfig(bootstrap)
    csr_pem, key_pem = pki.make_csr(f"system:node:{node}", ["system:nodes"])
    name = f"node-csr-{secrets.token_hex(8)}"
    boot.create(
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {
                "request": base64.b64encode(csr_pem).decode(),
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "usages": ["digital signature", "client auth"],
            },
        },
    )
    cert = ""
    for _ in range(50):
        cert = (
            boot.get(f"/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}").get("status") or {}
        ).get("certificate", "")
        if cert:
            break
        time.sleep(0.2)
    if not cert:
        raise Failed(
            "failed to run Kubelet: unable to load bootstrap kubeconfig: certificate request not approved"
        )
    current = cert_dir / "kubelet-client-current.pem"
    pki.write_private(current, base64.b64decode(cert) + key_pem)
    cluster = doc["clusters"][0]["cluster"]
    text = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "default-cluster", "cluster": cluster}],
            "contexts": [
                {
                    "name": "default-context",
                    "context": {"cluster": "default-cluster", "namespace": "default", "user": "default-auth"},
                }
            ],
            "current-context": "default-context",
            "users": [
                {
                    "name": "default-auth",
                    "user": {"client-certificate": str(current), "client-key": str(current)},
                }
            ],
        }
    )
    pki.write_private(kubeconfig, text.encode())
    klog(
        "I",
        '"Certificate rotation detected, shutting down client connections to start using new credentials"',
    )


def client_from(kubeconfig: Path) -> KubeClient:
    doc = yaml.safe_load(kubeconfig.read_text())
    user = doc["users"][0]["user"]
    if user.get("client-certificate") and not user.get("client-certificate-data"):
        # kubelet-client-current.pem holds the certificate followed by its key
        pem = Path(user["client-certificate"]).read_bytes()
        marker = b"-----BEGIN EC PRIVATE KEY-----"
        cert = pem[: pem.index(marker)] if marker in pem else pem
        key_src = Path(user.get("client-key") or user["client-certificate"]).read_bytes()
        key = key_src[key_src.index(marker) :] if marker in key_src else key_src
        cluster = doc["clusters"][0]["cluster"]
        ca = (
            base64.b64decode(cluster["certificate-authority-data"])
            if cluster.get("certificate-authority-data")
            else Path(cluster["certificate-authority"]).read_bytes()
        )
        return KubeClient(cluster["server"], ca, cert_pem=cert, key_pem=key)
    return KubeClient.from_kubeconfig(kubeconfig)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(args)
    except (Failed, UsageError) as e:
        msg = f"failed to parse kubelet flag: {e}" if isinstance(e, UsageError) else str(e)
        klog("E", f'"command failed" err="{msg}"')
        return 1


def _main(args: list[str]) -> int:
    opts, _ = parse_pflags(flags(), args)
    if opts["version"]:
        print(f"Kubernetes {VERSION}")
        return 0
    config: dict[str, Any] = load_config(opts["config"]) if opts["config"] else {}
    fail_swap = config.get("failSwapOn", opts["fail-swap-on"])
    if fail_swap and swap_on():
        raise Failed(
            "failed to run Kubelet: running with swap on is not supported, please disable swap! or set "
            "--fail-swap-on flag to false"
        )
    node = (opts["hostname-override"] or os.uname().nodename).lower()
    root_dir = (
        Path(opts["root-dir"]) if opts["root-dir"] != "/var/lib/kubelet" else sysroot("/var/lib/kubelet")
    )
    cert_dir = Path(opts["cert-dir"]) if opts["cert-dir"] != "/var/lib/kubelet/pki" else root_dir / "pki"
    endpoint = (
        opts["container-runtime-endpoint"]
        or config.get("containerRuntimeEndpoint")
        or "unix:///run/containerd/containerd.sock"
    )
    static = config.get("staticPodPath")
    freq = k3slib.duration(
        opts["node-status-update-frequency"] or config.get("nodeStatusUpdateFrequency") or "10s"
    )
    stop = threading.Event()
    klog("I", f'"Kubelet version" kubeletVersion="{VERSION}"')
    if static:
        StaticPods(Path(static), root_dir, stop, node).start()
    kubeconfig = Path(opts["kubeconfig"]) if opts["kubeconfig"] else None
    bootstrap = Path(opts["bootstrap-kubeconfig"]) if opts["bootstrap-kubeconfig"] else None
    client: KubeClient | None = None
    if kubeconfig is not None and not kubeconfig.exists():
        if bootstrap is None or not bootstrap.exists():
            raise Failed(
                "failed to run Kubelet: unable to load bootstrap kubeconfig: "
                f"stat {bootstrap or kubeconfig}: no such file or directory"
            )
        for attempt in range(120):
            try:
                tls_bootstrap(bootstrap, kubeconfig, cert_dir, node)
                break
            except (KubeError, OSError) as e:
                if attempt == 119:
                    raise Failed(f"failed to run Kubelet: unable to bootstrap client certificate: {e}")
                klog("E", f'"Failed to request a client certificate" err="{e}"')
                time.sleep(1)
    if kubeconfig is not None:
        client = client_from(kubeconfig)
    else:
        klog("I", '"No API server defined - no node status update will be sent"')
    if client is not None:
        labels = {**k3slib.base_labels(node), **opts["node-labels"]}
        labels.pop("node.kubernetes.io/instance-type", None)
        taints = k3slib.parse_taints(opts["register-with-taints"])
        ip = opts["node-ip"] or k3slib.node_ip({}, client.host)
        k3slib.Kubelet(
            client,
            node,
            ip,
            labels,
            taints,
            {},
            RuntimeProbe(endpoint),
            freq,
            stop,  # type: ignore[arg-type]
            version=VERSION,
        ).start()
    k3slib.notify_systemd()
    k3slib.wait_for_signal(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
