"""Stand-in for the `k0s` binary, mirroring k0s v1.30.5+k0s.0: `install controller|worker`, `start`, `stop`,
`status`, `reset`, `backup`, `restore`, `controller`, `worker`, `token create`, `config create|validate`,
`kubeconfig admin`, `kubectl`, `ctr`, `version`, with cobra/pflag parsing and errors, join tokens that are
real base64(gzip(kubeconfig)) blobs carrying a bootstrap token, and the real `containerd` as the worker's
runtime. Shares the API server, kubelet and containerd supervision with the k3s stand-in.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import http.server
import json
import os
import re
import secrets
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

try:
    from . import apiserver as apis
    from . import etcdctl as etcdlib
    from . import k3s as k3slib
    from . import kubectl as kubectl_mod
    from . import pki
    from .cliflags import Flag, UsageError, parse_pflags
    from .kubeclient import KubeClient, KubeError
except ImportError:  # zipapp / script
    import apiserver as apis  # type: ignore[no-redef]
    import etcdctl as etcdlib  # type: ignore[no-redef]
    import k3s as k3slib  # type: ignore[no-redef]
    import kubectl as kubectl_mod  # type: ignore[no-redef]
    import pki  # type: ignore[no-redef]
    from cliflags import Flag, UsageError, parse_pflags  # type: ignore[no-redef]
    from kubeclient import KubeClient, KubeError  # type: ignore[no-redef]

VERSION = "v1.30.5+k0s.0"
# The stand-in has no etcd: its members (name -> peer URL, as `k0s etcd member-list` prints them) live
# in this ConfigMap in the first controller's datastore. Controllers add themselves when they start
# (a joining one through the leader's datastore, as real k0s joins etcd) and `k0s etcd leave` removes one.
ETCD_MEMBERS_CM = "k0s-standin-etcd"
ETCD_MEMBERS_PATH = f"/api/v1/namespaces/kube-system/configmaps/{ETCD_MEMBERS_CM}"


class CmdError(Exception):
    """A cobra RunE error: printed as `Error: <message>`, exit status 1."""


def sysroot(path: str) -> Path:
    # Test-only knob, as K3S_STANDIN_ROOT for k3s: several k0s nodes on one machine. Unset on hosts.
    return Path(os.environ.get("K0S_STANDIN_ROOT", "") + path)


def log(level: str, msg: str, component: str = "") -> None:
    ts = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    extra = f" component={component}" if component else ""
    sys.stdout.write(f'time="{ts}" level={level} msg="{msg}"{extra}\n')
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------- flags


def persistent_flags() -> list[Flag]:
    return [
        Flag("data-dir", default="/var/lib/k0s"),
        Flag("debug", "bool", aliases=("d",)),
        Flag("debugListenOn", default=":6060"),
        Flag("status-socket"),
        Flag("verbose", "bool", aliases=("v",)),
        Flag("config", aliases=("c",), default="/etc/k0s/k0s.yaml"),
        Flag("help", "bool", aliases=("h",)),
    ]


def worker_flags() -> list[Flag]:
    return [
        Flag("cri-socket"),
        Flag("enable-cloud-provider", "bool"),
        Flag("iptables-mode"),
        Flag("kubelet-extra-args"),
        Flag("kubelet-root-dir"),
        Flag("labels", "map"),
        Flag("profile", default="default"),
        Flag("taints", "slice"),
        Flag("token-file"),
        Flag("ignore-pre-flight-checks", "bool"),
    ]


def controller_flags() -> list[Flag]:
    return [
        Flag("enable-worker", "bool"),
        Flag("single", "bool"),
        Flag("no-taints", "bool"),
        Flag("disable-components", "slice"),
        Flag("enable-dynamic-config", "bool"),
        Flag("enable-metrics-scraper", "bool"),
        Flag("init-only", "bool"),
        Flag("kube-controller-manager-extra-args"),
        Flag("enable-k0s-cloud-provider", "bool"),
        Flag("k0s-cloud-provider-port", "int", default=10258),
        Flag("k0s-cloud-provider-update-frequency", default="2m0s"),
    ]


def merged(*groups: list[Flag]) -> list[Flag]:
    seen: dict[str, Flag] = {}
    for g in groups:
        for f in g:
            seen.setdefault(f.name, f)
    return list(seen.values())


# ------------------------------------------------------------------------------------------ config

DEFAULT_CONFIG: dict[str, Any] = {
    "apiVersion": "k0s.k0sproject.io/v1beta1",
    "kind": "ClusterConfig",
    "metadata": {"name": "k0s"},
    "spec": {
        "api": {"address": "", "k0sApiPort": 9443, "port": 6443, "sans": []},
        "controllerManager": {},
        "extensions": {"helm": {"concurrencyLevel": 5}},
        "installConfig": {
            "users": {
                "etcdUser": "etcd",
                "kineUser": "kube-apiserver",
                "konnectivityUser": "konnectivity-server",
                "kubeAPIserverUser": "kube-apiserver",
                "kubeSchedulerUser": "kube-scheduler",
            }
        },
        "konnectivity": {"adminPort": 8133, "agentPort": 8132},
        "network": {
            "clusterDomain": "cluster.local",
            "dualStack": {"enabled": False},
            "kubeProxy": {"mode": "iptables"},
            "podCIDR": "10.244.0.0/16",
            "provider": "kuberouter",
            "serviceCIDR": "10.96.0.0/12",
        },
        "scheduler": {},
        "storage": {"type": "etcd", "etcd": {"peerAddress": ""}},
        "telemetry": {"enabled": True},
    },
}
KNOWN_SPEC = {
    "api": {
        "address",
        "k0sApiPort",
        "port",
        "sans",
        "externalAddress",
        "extraArgs",
        "ca",
        "onlyBindToAddress",
    },
    "storage": {"type", "etcd", "kine"},
    "network": None,
    "controllerManager": None,
    "scheduler": None,
    "extensions": None,
    "installConfig": None,
    "konnectivity": None,
    "telemetry": None,
    "images": None,
    "workerProfiles": None,
    "featureGates": None,
    "podSecurityPolicy": None,
}


def load_config(path: str, explicit: bool) -> dict[str, Any]:
    """k0s's ClusterConfig, decoded strictly (unknown fields are errors, as k0s's strict unmarshal)."""
    p = sysroot(path) if not explicit else Path(path)
    if not p.exists():
        if explicit and path != "/etc/k0s/k0s.yaml":
            raise CmdError(f"failed to load config: open {path}: no such file or directory")
        cfg = json.loads(json.dumps(DEFAULT_CONFIG))
        return cfg
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise CmdError(
            f"failed to load config: error converting YAML to JSON: yaml: {str(e).splitlines()[0]}"
        )
    if not isinstance(doc, dict):
        raise CmdError(
            "failed to load config: error unmarshaling JSON: json: cannot unmarshal array into Go value "
            "of type v1beta1.ClusterConfig"
        )
    if doc.get("apiVersion") != "k0s.k0sproject.io/v1beta1" or doc.get("kind") not in (
        "ClusterConfig",
        "Cluster",
    ):
        raise CmdError(
            f'failed to load config: no kind "{doc.get("kind")}" is registered for version '
            f'"{doc.get("apiVersion")}"'
        )
    for key in doc:
        if key not in ("apiVersion", "kind", "metadata", "spec"):
            raise CmdError(
                f"failed to load config: error unmarshaling JSON: while decoding JSON: json: unknown "
                f'field "{key}"'
            )
    spec = doc.get("spec") or {}
    for key, value in spec.items():
        if key not in KNOWN_SPEC:
            raise CmdError(
                f"failed to load config: error unmarshaling JSON: while decoding JSON: json: unknown "
                f'field "{key}"'
            )
        allowed = KNOWN_SPEC[key]
        if allowed is not None and isinstance(value, dict):
            for sub in value:
                if sub not in allowed:
                    raise CmdError(
                        f"failed to load config: error unmarshaling JSON: while decoding JSON: json: "
                        f'unknown field "{sub}"'
                    )
    cfg = json.loads(json.dumps(DEFAULT_CONFIG))
    for section, value in spec.items():
        if isinstance(value, dict) and isinstance(cfg["spec"].get(section), dict):
            cfg["spec"][section].update(value)
        else:
            cfg["spec"][section] = value
    api = cfg["spec"]["api"]
    for port in ("port", "k0sApiPort"):
        if not isinstance(api.get(port), int) or not 0 < api[port] < 65536:
            raise CmdError(
                f"invalid configuration: spec.api.{port}: Invalid value: {api.get(port)!r}: must be a "
                "valid port number"
            )
    if cfg["spec"]["storage"]["type"] not in ("etcd", "kine"):
        raise CmdError(
            f"invalid configuration: spec.storage.type: Unsupported value: "
            f'"{cfg["spec"]["storage"]["type"]}": supported values: "etcd", "kine"'
        )
    return cfg


# ------------------------------------------------------------------------------------------ tokens


def encode_token(kubeconfig: str) -> str:
    return base64.b64encode(gzip.compress(kubeconfig.encode())).decode()


def decode_token(token: str) -> dict[str, Any]:
    try:
        raw = gzip.decompress(base64.b64decode(token.strip(), validate=True))
    except (ValueError, OSError, EOFError) as e:
        raise CmdError(f"failed to decode join token: {e}")
    try:
        doc = yaml.safe_load(raw)
        cluster = doc["clusters"][0]["cluster"]
        user = doc["users"][0]
        return {
            "server": cluster["server"],
            "ca": base64.b64decode(cluster["certificate-authority-data"]),
            "user": user["name"],
            "token": user["user"]["token"],
        }
    except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError) as e:
        raise CmdError(f"failed to decode join token: invalid kubeconfig in token: {e}")


# ------------------------------------------------------------------------------------- components


class K0sContainerd(k3slib.Containerd):
    """k0s's containerd: /run/k0s/containerd.sock, /etc/k0s/containerd.toml importing containerd.d/*.toml."""

    def __init__(self, data_dir: Path, opts: dict[str, Any]) -> None:
        super().__init__(
            data_dir,
            {
                "container-runtime-endpoint": opts.get("cri-socket", "").split(":", 1)[-1]
                if opts.get("cri-socket")
                else ""
            },
        )
        self.run_dir = sysroot("/run/k0s/containerd")
        if not self.external:
            self.socket = str(sysroot("/run/k0s") / "containerd.sock")
        self.etc = sysroot("/etc/k0s")
        self.root = data_dir / "containerd"
        self.config_file = self.etc / "containerd.toml"
        self.ctr = k3slib.find_binary("ctr", data_dir)

    def write_config(self) -> None:
        dropins = self.etc / "containerd.d"
        dropins.mkdir(parents=True, exist_ok=True)
        stream = "0" if os.environ.get("K0S_STANDIN_ROOT") else "10010"
        text = f"""# k0s_managed=true
# This is a placeholder configuration for k0s managed containerd.
# To override it, remove the first line and replace this file with your custom configuration.
# Reference: https://github.com/containerd/containerd/blob/main/docs/man/containerd-config.toml.5.md
version = 2
imports = [
  "{dropins}/*.toml",
]

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_port = "{stream}"
"""
        current = self.config_file.read_text() if self.config_file.exists() else ""
        if not current or current.startswith("# k0s_managed=true"):
            pki.write_private(self.config_file, text.encode(), 0o644)

    def start(self) -> None:
        self.write_config()
        if self.external:
            log("info", f"using external CRI socket {self.external}", "containerd")
            return
        binary = k3slib.find_binary("containerd", self.data_dir)
        if binary is None:
            raise CmdError(
                'failed to start worker components: containerd: exec: "containerd": executable file '
                "not found in $PATH"
            )
        super().start()


def kubelet_extra(opts: dict[str, Any]) -> dict[str, str]:
    return k3slib.component_args(str(opts.get("kubelet-extra-args") or "").split())


def node_name_of(opts: dict[str, Any]) -> str:
    return kubelet_extra(opts).get("hostname-override") or socket.gethostname().lower()


def status_server(role: str, opts: dict[str, Any], single: bool, workloads: bool) -> threading.Thread:
    """The status socket `k0s status` reads (/run/k0s/status.sock)."""
    path = Path(opts.get("status-socket") or sysroot("/run/k0s/status.sock"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    info = {
        "Version": VERSION,
        "Pid": os.getpid(),
        "PPid": os.getppid(),
        "Role": role,
        "SysInit": "",
        "StubFile": "",
        "Workloads": workloads,
        "SingleNode": single,
        "Args": sys.argv,
        "K0sVars": {"DataDir": opts["data-dir"]},
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(info).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def address_string(self) -> str:
            return "status-socket"

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    srv = Server(str(path), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True, name="status")
    t.start()
    return t


def read_status(opts: dict[str, Any]) -> dict[str, Any] | None:
    path = str(opts.get("status-socket") or sysroot("/run/k0s/status.sock"))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(path)
            s.sendall(b"GET /status HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    body = data.split(b"\r\n\r\n", 1)[-1]
    try:
        return dict(json.loads(body))
    except ValueError:
        return None


# -------------------------------------------------------------------------------------- controller


class Controller:
    def __init__(self, opts: dict[str, Any], token: str) -> None:
        self.opts = opts
        self.data = Path(opts["data-dir"]) if opts["data-dir"] != "/var/lib/k0s" else sysroot("/var/lib/k0s")
        self.pki = self.data / "pki"
        self.cfg = load_config(opts["config"], opts["config"] != "/etc/k0s/k0s.yaml")
        self.token = token
        self.stop = threading.Event()
        self.api: apis.APIServer | None = None
        self.runtime: K0sContainerd | None = None
        self.leader: tuple[str, int] | None = None

    @property
    def api_port(self) -> int:
        return int(self.cfg["spec"]["api"]["port"])

    @property
    def k0s_api_port(self) -> int:
        return int(self.cfg["spec"]["api"]["k0sApiPort"])

    def address(self) -> str:
        return str(self.cfg["spec"]["api"].get("address") or k3slib.node_ip({}, None))

    def init_pki(self) -> None:
        if not (self.pki / "ca.crt").exists():
            c, k = pki.make_ca("kubernetes-ca")
            pki.write_private(self.pki / "ca.crt", c, 0o644)
            pki.write_private(self.pki / "ca.key", k)

    def issue(self) -> None:
        ca = ((self.pki / "ca.crt").read_bytes(), (self.pki / "ca.key").read_bytes())
        sans = [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "127.0.0.1",
            "10.96.0.1",
            self.address(),
            socket.gethostname(),
            *self.cfg["spec"]["api"].get("sans", []),
        ]
        if self.cfg["spec"]["api"].get("externalAddress"):
            sans.append(self.cfg["spec"]["api"]["externalAddress"])
        c, k = pki.issue(*ca, "kube-apiserver", sans=sans, server=True)
        pki.write_private(self.pki / "server.crt", c, 0o644)
        pki.write_private(self.pki / "server.key", k)
        c, k = pki.issue(*ca, "k0s-api", sans=sans, server=True)
        pki.write_private(self.pki / "k0s-api.crt", c, 0o644)
        pki.write_private(self.pki / "k0s-api.key", k)
        if not (self.pki / "admin.crt").exists():
            c, k = pki.issue(*ca, "kubernetes-admin", organizations=["system:masters"], client=True)
            pki.write_private(self.pki / "admin.crt", c, 0o644)
            pki.write_private(self.pki / "admin.key", k)
        kc = pki.kubeconfig(
            f"https://localhost:{self.api_port}",
            ca[0],
            cert_pem_bytes=(self.pki / "admin.crt").read_bytes(),
            key_pem_bytes=(self.pki / "admin.key").read_bytes(),
        )
        pki.write_private(self.pki / "admin.conf", kc.encode())

    def join(self) -> None:
        """A further controller: the controller token's kubeconfig points at the k0s API (:9443); it returns
        the cluster CA (so this controller can serve and sign) and where the datastore lives."""
        t = decode_token(self.token)
        if t["user"] != "controller-bootstrap":
            raise CmdError(
                f'failed to join controller: the join token is not a controller token (user "{t["user"]}")'
            )
        ctx = ssl.create_default_context(cadata=t["ca"].decode())
        ctx.check_hostname = False
        url = t["server"].rstrip("/") + "/v1beta1/ca"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {t['token']}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise CmdError(f"failed to join controller: failed to fetch CA from {url}: {e.code} {e.reason}")
        except (urllib.error.URLError, OSError) as e:
            raise CmdError(
                f"failed to join controller: failed to fetch CA from {url}: {getattr(e, 'reason', e)}"
            )
        for name, b64 in data["files"].items():
            pki.write_private(
                self.pki / name, base64.b64decode(b64), 0o600 if name.endswith(".key") else 0o644
            )
        self.leader = (data["datastore"]["host"], int(data["datastore"]["port"]))

    def k0s_api(self) -> None:
        """The k0s control-plane API on :9443 (controller joins)."""
        ctrl = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/v1beta1/ca":
                    self._send(404, b"404 page not found\n")
                    return
                tok = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                if not ctrl.valid_controller_token(tok):
                    self._send(401, b"Unauthorized\n")
                    return
                files = {
                    n: base64.b64encode((ctrl.pki / n).read_bytes()).decode() for n in ("ca.crt", "ca.key")
                }
                leader = ctrl.leader or (ctrl.address(), ctrl.api_port)
                self._send(
                    200,
                    json.dumps(
                        {"files": files, "datastore": {"host": leader[0], "port": leader[1]}}
                    ).encode(),
                )

            def do_POST(self) -> None:
                self._send(404, b"404 page not found\n")

            do_PUT = do_PATCH = do_DELETE = do_POST

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        srv = Server(("0.0.0.0", self.k0s_api_port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.pki / "k0s-api.crt"), str(self.pki / "k0s-api.key"))
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True, name="k0s-api").start()

    def register_member(self) -> None:
        """This controller's etcd member (a joining one through the first controller's datastore,
        which its API forwards to). Like an etcd join, the controller is not up until it is a member."""
        # etcd names a member after the node (its hostname; the kubelet's override where given)
        name, url = node_name_of(self.opts), f"https://{peer_address(self.cfg)}:2380"
        client = self.admin()
        deadline = time.time() + 120
        while True:
            try:
                try:
                    client.patch(ETCD_MEMBERS_PATH, {"data": {name: url}}, "merge")
                except KubeError as e:
                    if e.code != 404:
                        raise
                    client.create(
                        "/api/v1/namespaces/kube-system/configmaps",
                        {
                            "apiVersion": "v1",
                            "kind": "ConfigMap",
                            "metadata": {"name": ETCD_MEMBERS_CM},
                            "data": {name: url},
                        },
                    )
                log("info", f"etcd member {name} ({url}) added to the cluster", "etcd")
                return
            except (KubeError, OSError) as e:
                if time.time() > deadline:
                    raise CmdError(f"failed to join etcd cluster: {e}")
                time.sleep(1)

    def admin(self) -> KubeClient:
        return KubeClient(
            f"https://127.0.0.1:{self.api_port}",
            (self.pki / "ca.crt").read_bytes(),
            cert_pem=(self.pki / "admin.crt").read_bytes(),
            key_pem=(self.pki / "admin.key").read_bytes(),
        )

    def valid_controller_token(self, token: str) -> bool:
        m = re.fullmatch(r"([a-z0-9]{6})\.([a-z0-9]{16})", token)
        if not m:
            return False
        try:
            secret = self.admin().get(f"/api/v1/namespaces/kube-system/secrets/bootstrap-token-{m.group(1)}")
        except (KubeError, OSError):
            return False
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        if data.get("expiration") and apis.parse_rfc3339(data["expiration"]) < time.time():
            return False
        return data.get("token-secret") == m.group(2) and data.get("usage-controller-join") == "true"

    def run(self) -> int:
        opts = self.opts
        single = bool(opts["single"])
        workloads = single or bool(opts["enable-worker"])
        taints = (
            []
            if single or opts["no-taints"] or not workloads
            else [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
        )
        taints += k3slib.parse_taints(opts["taints"])
        interval = k3slib.duration(kubelet_extra(opts).get("node-status-update-frequency", "10s"))
        grace = k3slib.duration(
            k3slib.component_args(str(opts.get("kube-controller-manager-extra-args") or "").split()).get(
                "node-monitor-grace-period", "40s"
            )
        )
        try:
            self.pki.mkdir(parents=True, exist_ok=True)
        except PermissionError:
            raise CmdError(f"failed to initialize controller: mkdir {self.pki}: permission denied")
        log("info", f"k0s {VERSION} starting as controller")
        if self.token:
            self.join()
        else:
            self.init_pki()
        self.issue()
        upstream = None
        if self.leader:
            ctx = ssl.create_default_context(cadata=(self.pki / "ca.crt").read_text())
            ctx.check_hostname = False
            ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
            upstream = apis.Upstream(self.leader[0], self.leader[1], ctx)
        db = self.data / ("etcd" if self.cfg["spec"]["storage"]["type"] == "etcd" else "kine")
        db.mkdir(parents=True, exist_ok=True)
        apis.GIT_VERSION = VERSION
        cfg = apis.Config(
            data_dir=db,
            bind="0.0.0.0",
            port=self.api_port,
            server_cert=self.pki / "server.crt",
            server_key=self.pki / "server.key",
            client_ca=self.pki / "ca.crt",
            node_monitor_grace=grace,
            advertise=self.address(),
            upstream=upstream,
            signer_cert=self.pki / "ca.crt",
            signer_key=self.pki / "ca.key",
        )
        try:
            self.api = apis.APIServer(cfg)
        except OSError as e:
            raise CmdError(
                f"failed to start controller components: listen tcp :{self.api_port}: bind: "
                f"{(e.strerror or str(e)).lower()}"
            )
        self.api.serve_in_background()
        log("info", f"kube-apiserver listening on :{self.api_port}", "kube-apiserver")
        self.k0s_api()
        if self.cfg["spec"]["storage"]["type"] == "etcd":
            self.register_member()
        status_server("controller+worker" if workloads else "controller", opts, single, workloads)
        if workloads:
            name = node_name_of(opts)
            ca = ((self.pki / "ca.crt").read_bytes(), (self.pki / "ca.key").read_bytes())
            c, k = pki.issue(*ca, f"system:node:{name}", organizations=["system:nodes"], client=True)
            pki.write_private(
                self.data / "kubelet.conf",
                pki.kubeconfig(
                    f"https://localhost:{self.api_port}", ca[0], cert_pem_bytes=c, key_pem_bytes=k
                ).encode(),
            )
            self.runtime = K0sContainerd(self.data, opts)
            self.runtime.start()
            labels = {
                **k3slib.base_labels(name),
                "node-role.kubernetes.io/control-plane": "true",
                **opts["labels"],
            }
            labels.pop("node.kubernetes.io/instance-type", None)
            client = KubeClient(f"https://127.0.0.1:{self.api_port}", ca[0], cert_pem=c, key_pem=k)
            k3slib.Kubelet(
                client,
                name,
                self.address(),
                labels,
                taints,
                {},
                self.runtime,
                interval,
                self.stop,
                version=VERSION,
            ).start()
        log("info", "k0s controller is up and running")
        k3slib.notify_systemd()
        k3slib.wait_for_signal(self.stop)
        log("info", "Shutting down k0s controller")
        self.api.shutdown()
        return 0


# ------------------------------------------------------------------------------------------ worker


def run_worker(opts: dict[str, Any], positional: list[str]) -> int:
    data = Path(opts["data-dir"]) if opts["data-dir"] != "/var/lib/k0s" else sysroot("/var/lib/k0s")
    token = positional[0] if positional else ""
    if token and opts["token-file"]:
        raise CmdError(
            "you can only pass one token argument either as a CLI argument 'k0s worker [token]' or as a "
            "flag 'k0s worker --token-file [path]'"
        )
    if opts["token-file"]:
        try:
            token = Path(opts["token-file"]).read_text()
        except OSError as e:
            raise CmdError(f"open {opts['token-file']}: {(e.strerror or str(e)).lower()}")
    kubelet_conf = data / "kubelet.conf"
    taints = k3slib.parse_taints(opts["taints"])
    interval = k3slib.duration(kubelet_extra(opts).get("node-status-update-frequency", "10s"))
    name = node_name_of(opts)
    try:
        data.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise CmdError(f"mkdir {data}: permission denied")
    if not token and not kubelet_conf.exists():
        raise CmdError(
            "failed to bootstrap kubelet kubeconfig: neither regular nor bootstrap kubelet kubeconfig "
            "files exist and no join token given; dunno how to make kubelet authenticate to API server"
        )
    log("info", f"k0s {VERSION} starting as worker")
    if token:
        t = decode_token(token)
        boot = KubeClient(t["server"], t["ca"], token=t["token"])
        csr_pem, key_pem = pki.make_csr(f"system:node:{name}", ["system:nodes"])
        csr_name = f"node-csr-{secrets.token_hex(6)}"
        try:
            boot.create(
                "/apis/certificates.k8s.io/v1/certificatesigningrequests",
                {
                    "apiVersion": "certificates.k8s.io/v1",
                    "kind": "CertificateSigningRequest",
                    "metadata": {"name": csr_name},
                    "spec": {
                        "request": base64.b64encode(csr_pem).decode(),
                        "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                        "usages": ["digital signature", "client auth"],
                    },
                },
            )
            csr = boot.get(f"/apis/certificates.k8s.io/v1/certificatesigningrequests/{csr_name}")
        except KubeError as e:
            raise CmdError(f"failed to bootstrap kubelet kubeconfig: {e}")
        except ssl.SSLError as e:
            raise CmdError(
                f'failed to bootstrap kubelet kubeconfig: Post "{t["server"]}/apis/certificates.k8s.io/'
                f'v1/certificatesigningrequests": tls: failed to verify certificate: x509: certificate '
                f"signed by unknown authority ({e.reason})"
            )
        except OSError as e:
            raise CmdError(
                f'failed to bootstrap kubelet kubeconfig: Post "{t["server"]}/apis/certificates.k8s.io/'
                f'v1/certificatesigningrequests": {e}'
            )
        cert = base64.b64decode((csr.get("status") or {}).get("certificate", ""))
        if not cert:
            raise CmdError(
                "failed to bootstrap kubelet kubeconfig: certificate signing request was not approved"
            )
        pki.write_private(
            kubelet_conf,
            pki.kubeconfig(t["server"], t["ca"], cert_pem_bytes=cert, key_pem_bytes=key_pem).encode(),
        )
    client = KubeClient.from_kubeconfig(kubelet_conf)
    runtime = K0sContainerd(data, opts)
    stop = threading.Event()
    try:
        runtime.start()
        status_server("worker", opts, False, True)
        labels = {**k3slib.base_labels(name), **opts["labels"]}
        labels.pop("node.kubernetes.io/instance-type", None)
        # the kubelet's --node-ip, else the address that routes to the API (not a loopback balancer's)
        towards = None if client.host.startswith("127.") or client.host == "localhost" else client.host
        ip = kubelet_extra(opts).get("node-ip") or k3slib.node_ip({}, towards)
        k3slib.Kubelet(client, name, ip, labels, taints, {}, runtime, interval, stop, version=VERSION).start()
        log("info", "k0s worker is up and running")
        k3slib.notify_systemd()
        k3slib.wait_for_signal(stop)
        log("info", "Shutting down k0s worker")
    finally:
        runtime.stop()
    return 0


# ----------------------------------------------------------------------------------- service mgmt

UNIT = """[Unit]
Description=k0s - Zero Friction Kubernetes
Documentation=https://docs.k0sproject.io
ConditionFileIsExecutable={path}

After=network-online.target
Wants=network-online.target

[Service]
StartLimitInterval=5
StartLimitBurst=10
ExecStart={path} {args}{env}

RestartSec=10
Delegate=yes
KillMode=process
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
OOMScoreAdjust=-999
LimitNOFILE=999999
Restart=always

[Install]
WantedBy=multi-user.target
"""


def unit_path(role: str) -> Path:
    return sysroot(f"/etc/systemd/system/k0s{role}.service")


def install_service(role: str, opts: dict[str, Any], raw_args: list[str]) -> int:
    if os.geteuid() != 0:
        raise CmdError("this command must be run as root")
    load_config(opts["config"], opts["config"] != "/etc/k0s/k0s.yaml")
    if role == "worker" and opts["token-file"] and not Path(opts["token-file"]).exists():
        raise CmdError(f"failed to install worker service: token file {opts['token-file']} does not exist")
    path = unit_path(role)
    if path.exists() and not opts["force"]:
        raise CmdError(f"failed to install {role} service: Init already exists")
    args = [a for a in raw_args if not a.startswith("--force") and not a.startswith(("-e", "--env"))]
    env = "".join(f'\nEnvironment="{e}"' for e in opts["env"])
    exe = os.path.realpath(sys.argv[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    quoted = [f'"{a}"' if " " in a else a for a in [role, *args]]  # systemd's ExecStart quoting
    path.write_text(UNIT.format(path=exe, args=" ".join(quoted).replace("%", "%%"), env=env))
    if shutil.which("systemctl") and not os.environ.get("K0S_STANDIN_ROOT"):
        subprocess.run(["systemctl", "daemon-reload"], check=False)
        subprocess.run(["systemctl", "enable", path.name], check=False, capture_output=True)
    return 0


def installed_role() -> str | None:
    for role in ("controller", "worker"):
        if unit_path(role).exists():
            return role
    return None


def systemctl(verb: str) -> int:
    if os.geteuid() != 0:
        raise CmdError("this command must be run as root!")
    role = installed_role()
    if role is None:
        raise CmdError("failed to find installed k0s service: service not installed")
    r = subprocess.run(["systemctl", verb, f"k0s{role}.service"], capture_output=True, text=True)
    if r.returncode != 0:
        raise CmdError(f"failed to {verb} k0s service: {r.stderr.strip()}")
    return 0


def reset(opts: dict[str, Any]) -> int:
    if os.geteuid() != 0:
        raise CmdError("this command must be run as root!")
    if read_status(opts) is not None:
        raise CmdError("k0s seems to be running! please stop k0s before reset.")
    data = Path(opts["data-dir"]) if opts["data-dir"] != "/var/lib/k0s" else sysroot("/var/lib/k0s")
    for role in ("controller", "worker"):
        unit_path(role).unlink(missing_ok=True)
    for d in (data, sysroot("/run/k0s"), sysroot("/var/lib/kubelet"), sysroot("/etc/k0s/containerd.toml")):
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
        else:
            d.unlink(missing_ok=True)
    log("info", "* containers steps")
    log("info", "* remove k0s users step:")
    log("info", "* uninstall service step")
    log("info", "* remove directories step")
    log("info", "* CNI leftovers cleanup step")
    log("info", "* kube-bridge leftovers cleanup step")
    log("warning", "To ensure a full reset, a node reboot is recommended.")
    return 0


def token_create(opts: dict[str, Any]) -> int:
    role = opts["role"]
    if role not in ("worker", "controller"):
        raise CmdError(f'unsupported role "{role}"; supported roles are "controller" and "worker"')
    data = Path(opts["data-dir"]) if opts["data-dir"] != "/var/lib/k0s" else sysroot("/var/lib/k0s")
    ca_file = data / "pki" / "ca.crt"
    if not ca_file.exists():
        raise CmdError(
            f'failed to read cluster CA from "{ca_file}": open {ca_file}: no such file or directory; '
            "check if the control plane is initialized on this node"
        )
    expiry = k3slib.duration(opts["expiry"]) if opts["expiry"] not in ("0", "0s") else 0.0
    cfg = load_config(opts["config"], opts["config"] != "/etc/k0s/k0s.yaml")
    client = KubeClient.from_kubeconfig(data / "pki" / "admin.conf")
    # admin.conf says localhost; the local API is what this command talks to
    tid, tsecret = secrets.token_hex(3), secrets.token_hex(8)
    string_data = {"token-id": tid, "token-secret": tsecret}
    if expiry:
        string_data["expiration"] = (
            datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=expiry)
        ).strftime("%Y-%m-%dT%H:%M:%SZ")
    if role == "worker":
        string_data.update(
            {
                "description": "Worker bootstrap token",
                "usage-bootstrap-authentication": "true",
                "usage-bootstrap-signing": "true",
                "auth-extra-groups": "system:bootstrappers:worker",
            }
        )
    else:
        string_data.update({"description": "Controller bootstrap token", "usage-controller-join": "true"})
    try:
        client.create(
            "/api/v1/namespaces/kube-system/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "bootstrap.kubernetes.io/token",
                "metadata": {"name": f"bootstrap-token-{tid}", "namespace": "kube-system"},
                "stringData": string_data,
            },
        )
    except (KubeError, OSError) as e:
        raise CmdError(f"failed to create {role} token: {e}")
    api = cfg["spec"]["api"]
    host = api.get("externalAddress") or api.get("address") or k3slib.node_ip({}, None)
    port = api["k0sApiPort"] if role == "controller" else api["port"]
    user = "controller-bootstrap" if role == "controller" else "kubelet-bootstrap"
    kc = f"""
apiVersion: v1
clusters:
- cluster:
    server: https://{host}:{port}
    certificate-authority-data: {base64.b64encode(ca_file.read_bytes()).decode()}
  name: k0s
contexts:
- context:
    cluster: k0s
    user: {user}
  name: k0s
current-context: k0s
kind: Config
preferences: {{}}
users:
- name: {user}
  user:
    token: {tid}.{tsecret}
"""
    print(encode_token(kc))
    return 0


# -------------------------------------------------------------------------------------------- etcd


def peer_address(cfg: dict[str, Any]) -> str:
    """storage.etcd.peerAddress, which k0s defaults to the API address."""
    etcd = cfg["spec"]["storage"].get("etcd") or {}
    return str(etcd.get("peerAddress") or cfg["spec"]["api"].get("address") or k3slib.node_ip({}, None))


def etcd_client(opts: dict[str, Any], what: str) -> KubeClient:
    """The running controller's datastore, as `k0s etcd` reaches it with the node's certificates."""
    data = Path(opts["data-dir"]) if opts["data-dir"] != "/var/lib/k0s" else sysroot("/var/lib/k0s")
    admin = data / "pki" / "admin.conf"
    if not admin.exists():
        raise CmdError(f"{what}: open {data / 'pki' / 'etcd' / 'ca.crt'}: no such file or directory")
    return KubeClient.from_kubeconfig(admin)


def etcd_members(client: KubeClient, what: str) -> dict[str, str]:
    try:
        return dict(client.get(ETCD_MEMBERS_PATH).get("data") or {})
    except (KubeError, OSError) as e:
        raise CmdError(f"{what}: context deadline exceeded ({e})")


def run_etcd(rest: list[str]) -> int:
    """`k0s etcd member-list` (JSON, name -> peer URL) and `k0s etcd leave [--peer-address A]`
    (this node's member, or the one at A, removed; the controller itself keeps running)."""
    sub = rest[0] if rest else ""
    if sub == "member-list":
        opts, pos = parse_pflags(persistent_flags(), rest[1:])
        if pos:
            raise CmdError(f'unknown command "{pos[0]}" for "k0s etcd member-list"')
        what = "can't list etcd cluster members"
        print(json.dumps({"members": etcd_members(etcd_client(opts, what), what)}))
        return 0
    if sub == "leave":
        opts, pos = parse_pflags([*persistent_flags(), Flag("peer-address")], rest[1:])
        if pos:
            raise CmdError(f'unknown command "{pos[0]}" for "k0s etcd leave"')
        cfg = load_config(opts["config"], opts["config"] != "/etc/k0s/k0s.yaml")
        address = opts["peer-address"] or peer_address(cfg)
        url = f"https://{address}:2380"
        client = etcd_client(opts, "can't connect to the etcd")
        members = etcd_members(client, "can't connect to the etcd")
        name = next((n for n, u in members.items() if u == url), None)
        if name is None:
            log("error", "Failed to get peer name", "etcd")
            raise CmdError(f"peer with address {url} not found")
        try:
            client.patch(ETCD_MEMBERS_PATH, {"data": {name: None}}, "merge")
        except (KubeError, OSError) as e:
            log("error", "Failed to delete node from cluster", "etcd")
            raise CmdError(str(e))
        log("info", f"Successfully deleted peerID={name}")
        return 0
    raise UsageError(f'unknown command "{sub}" for "k0s etcd"')


# ---------------------------------------------------------------------------------- backup/restore

# pkg/backup: k0s_backup_<time.Now().Format("2006-01-02T15_04_05_000Z")>.tar.gz
BACKUP_TIME = "%Y-%m-%dT%H_%M_%S_000Z"
ETCD_BACKUP = "etcd-snapshot.db"
BACKUP_DIRS = ("pki", "manifests", "images")


def stderr_log(level: str, msg: str) -> None:
    """logrus to stderr: `k0s backup` sends its log there so `--save-path -` can stream the archive."""
    ts = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    sys.stderr.write(f'time="{ts}" level={level} msg="{msg}"\n')
    sys.stderr.flush()


def data_dir_of(opts: dict[str, Any]) -> Path:
    return Path(opts["data-dir"]) if opts["data-dir"] != "/var/lib/k0s" else sysroot("/var/lib/k0s")


def config_path_of(opts: dict[str, Any]) -> Path:
    return Path(opts["config"]) if opts["config"] != "/etc/k0s/k0s.yaml" else sysroot("/etc/k0s/k0s.yaml")


def backup(opts: dict[str, Any], save_path: str) -> int:
    """`k0s backup`: on a running controller, an etcd snapshot plus pki/, manifests/ and k0s.yaml in
    k0s_backup_<time>.tar.gz under --save-path (default: the working directory; `-`: stdout)."""
    if os.geteuid() != 0:
        raise CmdError("this command must be run as root!")
    save_path = save_path or os.getcwd()
    if save_path != "-" and not Path(save_path).is_dir():
        raise CmdError(f"the save-path directory ({save_path}) does not exist")
    data = data_dir_of(opts)
    if not data.is_dir():
        raise CmdError(
            f"cannot find data-dir ({data}). check your environment and/or command input and try again"
        )
    status = read_status(opts)
    if status is None:
        sock = opts.get("status-socket") or sysroot("/run/k0s/status.sock")
        raise CmdError(
            f'unable to detect cluster status Get "http://localhost/status": dial unix {sock}: connect: '
            "no such file or directory"
        )
    if "controller" not in str(status.get("Role")):
        raise CmdError(f"backup command must be run on the controller node, have `{status.get('Role')}`")
    cfg = load_config(opts["config"], opts["config"] != "/etc/k0s/k0s.yaml")
    with tempfile.TemporaryDirectory(prefix="k0s-backup") as tmp:
        assets: list[tuple[Path, str]] = []
        stderr_log("info", "Starting backup")
        if cfg["spec"]["storage"]["type"] == "etcd":
            stderr_log("info", "Backup step: etcd")
            store = data / "etcd" / "state.json"
            if not store.exists():
                # the stand-in's limit: a joined controller forwards to the first one's store
                raise CmdError(
                    "failed to create backup on step `etcd`: stand-in k0s: this controller holds no etcd "
                    "data (tests/doubles/README.md, HA model); run the backup on the first controller"
                )
            snap = Path(tmp) / ETCD_BACKUP
            pki.write_private(snap, etcdlib.encode_snapshot(store.read_bytes()))
            assets.append((snap, ETCD_BACKUP))
        else:
            stderr_log(
                "warning",
                "only internal etcd and sqlite backup are supported. Other storage backends "
                "must be backed-up/restored manually.",
            )
        for name in BACKUP_DIRS:
            path = data / name
            stderr_log("info", f"adding `{path}` path to the backup archive")
            stderr_log("info", f"Backup step: filesystem path `{path}`")
            if not path.exists():
                stderr_log("info", f"Path `{path}` does not exist, skipping...")
                continue
            assets.append((path, name))
        stderr_log("info", "Backup step: k0s-config")
        config = config_path_of(opts)
        if config.exists():
            assets.append((config, "k0s.yaml"))
        name = f"k0s_backup_{datetime.datetime.now(datetime.UTC).strftime(BACKUP_TIME)}.tar.gz"
        archive = Path(tmp) / name
        fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for path, arcname in assets:
                tar.add(str(path), arcname=arcname)
        if save_path == "-":
            sys.stdout.buffer.write(archive.read_bytes())
            sys.stdout.flush()
            return 0
        dest = Path(save_path) / name
        pki.write_private(dest, archive.read_bytes())
        stderr_log("info", f"archive {dest} created successfully")
    return 0


def restore(opts: dict[str, Any], path: str, config_out: str) -> int:
    """`k0s restore FILE`: onto a controller whose k0s is down and whose data dir holds no etcd data
    (a reset node): etcd restored from the archive's snapshot, pki/ and manifests/ copied back, the
    archived k0s.yaml written to --config-out."""
    if os.geteuid() != 0:
        raise CmdError("this command must be run as root")
    status = read_status(opts)
    if status is not None and status.get("Pid"):
        stderr_log("fatal", "k0s seems to be running! k0s must be down during the restore operation.")
        raise SystemExit(1)
    if path != "-" and not Path(path).exists():
        raise CmdError(f"given file {path} does not exist")
    data = data_dir_of(opts)
    data.mkdir(parents=True, exist_ok=True, mode=0o755)
    if not config_out:
        stem = Path(path).name.split(".", 1)[0].removeprefix("k0s_backup_") if path != "-" else ""
        config_out = "-" if path == "-" else f"k0s_{stem}.yaml"
    with tempfile.TemporaryDirectory(prefix="k0s-backup") as tmp:
        try:
            src = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 - closed below
            with src, tarfile.open(fileobj=src, mode="r|gz") as tar:
                tar.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(tmp)
        except (tarfile.TarError, OSError, EOFError) as e:
            reason = "gzip: invalid header" if "gzip" in str(e).lower() or "not a gzip" in str(e) else str(e)
            raise CmdError(f"failed to unpack backup archive `{path}`: {reason}")
        archived = Path(tmp) / "k0s.yaml"
        storage = "etcd"
        if archived.exists():
            try:
                doc = yaml.safe_load(archived.read_text()) or {}
                storage = str(((doc.get("spec") or {}).get("storage") or {}).get("type") or "etcd")
            except yaml.YAMLError as e:
                raise CmdError(f"failed to parse backed-up configuration file, check the backup archive: {e}")
        stderr_log("info", "Starting restore")
        if storage == "etcd":
            stderr_log("info", "Restore step: etcd")
            snap = Path(tmp) / ETCD_BACKUP
            if not snap.exists():
                raise CmdError(f"failed to restore on step `etcd`: etcd snapshot not found at {snap}")
            db = data / "etcd"
            if db.exists() and any(db.iterdir()):
                raise CmdError(
                    f'failed to restore on step `etcd`: data-dir "{db}" not empty or could not be read'
                )
            try:
                payload = etcdlib.snapshot_payload(snap.read_bytes())
                etcdlib.parse_store(payload)
            except etcdlib.Failed as e:
                raise CmdError(f"failed to restore on step `etcd`: {e}")
            (db / "member" / "snap").mkdir(parents=True, exist_ok=True)
            os.chmod(db, 0o700)
            pki.write_private(db / "member" / "snap" / "db", payload)
            pki.write_private(db / "state.json", payload)  # the stand-in API server's datastore
        for name in BACKUP_DIRS:
            stderr_log("info", f"Restore step: filesystem path `{data / name}`")
            inside = Path(tmp) / name
            if not inside.exists():
                stderr_log("info", f"Path `{inside}` not found in the archive, skipping...")
                continue
            stderr_log("info", f"restoring from `{inside}` to `{data / name}`")
            shutil.copytree(inside, data / name, dirs_exist_ok=True)
        stderr_log("info", "Restore step: k0s-config")
        if archived.exists():
            if config_out == "-":
                sys.stdout.write(archived.read_text())
            else:
                stderr_log("info", f"restoring from `{archived}` to `{config_out}`")
                pki.write_private(Path(config_out), archived.read_bytes())
    return 0


# -------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(args)
    except (CmdError, UsageError, k3slib.Fatal) as e:
        sys.stderr.write(f"Error: {e}\n")
        if isinstance(e, UsageError):
            sys.stderr.write("Run 'k0s --help' for usage.\n")
        return 1


def _main(args: list[str]) -> int:
    apis.GIT_VERSION = VERSION
    if not args or args[0] in ("-h", "--help", "help"):
        print(
            "k0s - The zero friction Kubernetes - https://k0sproject.io\n\nUsage:\n  k0s [command]\n\n"
            "Available Commands:\n  backup, config, controller, ctr, etcd, install, kubeconfig, kubectl, "
            "reset, restore, start, status, stop, token, version, worker"
        )
        return 0
    cmd, rest = args[0], args[1:]
    if cmd == "version":
        print(VERSION)
        return 0
    if cmd == "kubectl":
        data = sysroot("/var/lib/k0s")
        return kubectl_mod.main(
            rest, default_kubeconfig=os.environ.get("KUBECONFIG") or str(data / "pki" / "admin.conf")
        )
    if cmd == "ctr":
        ctr = k3slib.find_binary("ctr", sysroot("/var/lib/k0s"))
        if ctr is None:
            raise CmdError('exec: "ctr": executable file not found in $PATH')
        os.execv(
            ctr,
            [ctr, "--address", str(sysroot("/run/k0s") / "containerd.sock"), "--namespace", "k8s.io", *rest],
        )
    if cmd in ("controller", "server"):
        opts, pos = parse_pflags(merged(persistent_flags(), controller_flags(), worker_flags()), rest)
        if len(pos) > 1:
            raise CmdError(f"accepts at most 1 arg(s), received {len(pos)}")
        token = pos[0] if pos else ""
        if token and opts["token-file"]:
            raise CmdError(
                "you can only pass one token argument either as a CLI argument 'k0s controller [join-"
                "token]' or as a flag 'k0s controller --token-file [path]'"
            )
        if opts["token-file"]:
            try:
                token = Path(opts["token-file"]).read_text().strip()
            except OSError as e:
                raise CmdError(
                    f"read token file: open {opts['token-file']}: {(e.strerror or str(e)).lower()}"
                )
        ctrl = Controller(opts, token)
        try:
            return ctrl.run()
        finally:
            if ctrl.runtime is not None:
                ctrl.runtime.stop()
    if cmd == "worker":
        opts, pos = parse_pflags(merged(persistent_flags(), worker_flags()), rest)
        if len(pos) > 1:
            raise CmdError(f"accepts at most 1 arg(s), received {len(pos)}")
        return run_worker(opts, pos)
    if cmd == "install":
        if not rest or rest[0] not in ("controller", "server", "worker"):
            print(
                "Install k0s on a brand-new system. Must be run as root (or with sudo)\n\nUsage:\n  "
                "k0s install [command]\n\nAvailable Commands:\n  controller  Install k0s controller on a "
                "brand-new system.\n  worker      Install k0s worker on a brand-new system."
            )
            return 0 if not rest else 1
        role = "controller" if rest[0] in ("controller", "server") else "worker"
        install = [Flag("force", "bool"), Flag("env", "array", aliases=("e",))]
        groups = [persistent_flags(), install, worker_flags()] + (
            [controller_flags()] if role == "controller" else []
        )
        opts, pos = parse_pflags(merged(*groups), rest[1:])
        if pos:
            raise CmdError(f'unknown command "{pos[0]}" for "k0s install {role}"')
        return install_service(role, opts, rest[1:])
    if cmd in ("start", "stop"):
        parse_pflags(persistent_flags(), rest)
        return systemctl(cmd)
    if cmd == "status":
        opts, _ = parse_pflags([*persistent_flags(), Flag("out", aliases=("o",))], rest)
        st = read_status(opts)
        if st is None:
            sys.stderr.write("K0s not running\n")
            return 1
        if opts["out"] == "json":
            print(json.dumps(st, indent=2))
            return 0
        print(
            f"Version: {st['Version']}\nProcess ID: {st['Pid']}\nRole: {st['Role']}\nWorkloads: "
            f"{str(st['Workloads']).lower()}\nSingleNode: {str(st['SingleNode']).lower()}"
        )
        return 0
    if cmd == "reset":
        opts, _ = parse_pflags(persistent_flags(), rest)
        return reset(opts)
    if cmd == "backup":
        opts, pos = parse_pflags([*persistent_flags(), Flag("save-path")], rest)
        if pos:
            raise CmdError(f'unknown command "{pos[0]}" for "k0s backup"')
        return backup(opts, opts["save-path"])
    if cmd == "restore":
        opts, pos = parse_pflags([*persistent_flags(), Flag("config-out")], rest)
        if len(pos) != 1:
            raise CmdError(f"accepts 1 arg(s), received {len(pos)}")
        return restore(opts, pos[0], opts["config-out"])
    if cmd == "etcd":
        return run_etcd(rest)
    if cmd == "token":
        if not rest or rest[0] not in ("create", "list", "invalidate"):
            raise UsageError(f'unknown command "{rest[0] if rest else ""}" for "k0s token"')
        sub = rest[0]
        opts, pos = parse_pflags(
            [
                *persistent_flags(),
                Flag("role", default="worker"),
                Flag("expiry", default="0s"),
                Flag("wait", "bool"),
            ],
            rest[1:],
        )
        if sub == "create":
            return token_create(opts)
        data = sysroot("/var/lib/k0s")
        client = KubeClient.from_kubeconfig(data / "pki" / "admin.conf")
        if sub == "invalidate":
            for tid in pos:
                client.delete(f"/api/v1/namespaces/kube-system/secrets/bootstrap-token-{tid}")
                print(f"token {tid} deleted successfully")
            return 0
        items = client.get(
            "/api/v1/namespaces/kube-system/secrets?fieldSelector=type%3Dbootstrap.kubernetes.io%2Ftoken"
        )["items"]
        print("ID      ROLE        EXPIRES AT")
        for s in items:
            d = {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
            r = "controller" if d.get("usage-controller-join") == "true" else "worker"
            print(f"{d.get('token-id', ''):<7} {r:<11} {d.get('expiration', '')}")
        return 0
    if cmd == "config":
        sub = rest[0] if rest else ""
        if sub == "create":
            print(yaml.safe_dump(DEFAULT_CONFIG, sort_keys=False), end="")
            return 0
        if sub == "validate":
            opts, _ = parse_pflags(persistent_flags(), rest[1:])
            load_config(opts["config"], True)
            return 0
        raise UsageError(f'unknown command "{sub}" for "k0s config"')
    if cmd == "kubeconfig":
        if rest[:1] != ["admin"]:
            raise UsageError(f'unknown command "{rest[0] if rest else ""}" for "k0s kubeconfig"')
        opts, _ = parse_pflags(persistent_flags(), rest[1:])
        admin = sysroot("/var/lib/k0s") / "pki" / "admin.conf"
        if not admin.exists():
            raise CmdError(
                f"failed to read admin config, check if the control plane is initialized on this node: "
                f"open {admin}: no such file or directory"
            )
        cfg = load_config(opts["config"], opts["config"] != "/etc/k0s/k0s.yaml")
        api = cfg["spec"]["api"]
        host = api.get("externalAddress") or api.get("address") or k3slib.node_ip({}, None)
        print(admin.read_text().replace("https://localhost:", f"https://{host}:"), end="")
        return 0
    raise UsageError(f'unknown command "{cmd}" for "k0s"')


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
