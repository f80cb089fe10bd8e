"""Stand-in for the `k3s` binary, mirroring k3s v1.30.6+k3s1: `server`, `agent`, `kubectl`, `ctr`,
`crictl`, `etcd-snapshot`, `--version`, with k3s's flags, environment variables, config file, files
written, join-token checks and log style. It serves the stand-in API server (apiserver.py) on :6443 and
runs the real `containerd` as its embedded container runtime. See tests/doubles/README.md.

Installed on hosts as a zipapp (see build.py): stdlib + PyYAML + cryptography (Debian bookworm) only.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
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
    from . import kubectl as kubectl_mod
    from . import pki
    from .cliflags import Flag, FlagSet, UsageError
    from .kubeclient import KubeClient, KubeError
except ImportError:  # zipapp / script: siblings are top level
    import apiserver as apis  # type: ignore[no-redef]
    import kubectl as kubectl_mod  # type: ignore[no-redef]
    import pki  # type: ignore[no-redef]
    from cliflags import Flag, FlagSet, UsageError  # type: ignore[no-redef]
    from kubeclient import KubeClient, KubeError  # type: ignore[no-redef]

VERSION = "v1.30.6+k3s1"
COMMIT = "1829eaae"
CONTAINERD_VERSION = "1.7.22-k3s1"
ADDONS = ("coredns", "servicelb", "traefik", "local-storage", "metrics-server", "runtimes")


class Fatal(Exception):
    """logrus.Fatal: log at level=fatal and exit 1."""


def root_prefix() -> str:
    # Test-only knob: several stand-in nodes on one machine each get their own /etc, /run and /var/lib.
    # Unset on the test-bed hosts, so every path there is the real k3s path.
    return os.environ.get("K3S_STANDIN_ROOT", "")


def sysroot(path: str) -> Path:
    return Path(root_prefix() + path)


def logline(level: str, msg: str) -> None:
    ts = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    msg = msg.replace("\\", "\\\\").replace('"', '\\"')
    sys.stderr.write(f'time="{ts}" level={level} msg="{msg}"\n')
    sys.stderr.flush()


def info(msg: str) -> None:
    logline("info", msg)


def warn(msg: str) -> None:
    logline("warning", msg)


def error(msg: str) -> None:
    logline("error", msg)


# --------------------------------------------------------------------------------------------- flags


def _common_agent_flags() -> list[Flag]:
    return [
        Flag("node-name", env=("K3S_NODE_NAME",)),
        Flag("with-node-id", "bool"),
        Flag("node-label", "slice"),
        Flag("node-taint", "slice"),
        Flag("image-credential-provider-bin-dir"),
        Flag("image-credential-provider-config"),
        Flag("docker", "bool"),
        Flag("container-runtime-endpoint"),
        Flag("default-runtime"),
        Flag("image-service-endpoint"),
        Flag("disable-default-registry-endpoint", "bool"),
        Flag("nonroot-devices", "bool"),
        Flag("pause-image", default="rancher/mirrored-pause:3.6"),
        Flag("snapshotter", default="overlayfs"),
        Flag("private-registry", default="/etc/rancher/k3s/registries.yaml"),
        Flag("system-default-registry"),
        Flag("node-ip", "slice", aliases=("i",), split=True),
        Flag("node-external-ip", "slice", split=True),
        Flag("node-internal-dns", "slice"),
        Flag("node-external-dns", "slice"),
        Flag("resolv-conf", env=("K3S_RESOLV_CONF",)),
        Flag("flannel-iface"),
        Flag("flannel-conf"),
        Flag("flannel-cni-conf"),
        Flag("kubelet-arg", "slice"),
        Flag("kube-proxy-arg", "slice"),
        Flag("protect-kernel-defaults", "bool"),
        Flag("selinux", "bool", env=("K3S_SELINUX",)),
        Flag("lb-server-port", "int", env=("K3S_LB_SERVER_PORT",), default=6444),
        Flag("rootless", "bool"),
        Flag("prefer-bundled-bin", "bool"),
        Flag("airgap-extra-registry", "slice"),
        Flag("vpn-auth", env=("K3S_VPN_AUTH",)),
        Flag("vpn-auth-file", env=("K3S_VPN_AUTH_FILE",)),
        Flag("enable-pprof", "bool"),
    ]


def _log_flags() -> list[Flag]:
    return [
        Flag("config", aliases=("c",), env=("K3S_CONFIG_FILE",), default="/etc/rancher/k3s/config.yaml"),
        Flag("debug", "bool", env=("K3S_DEBUG",)),
        Flag("v", "int"),
        Flag("vmodule"),
        Flag("log", aliases=("l",)),
        Flag("alsologtostderr", "bool"),
    ]


def server_flags() -> FlagSet:
    return FlagSet(
        [
            *_log_flags(),
            Flag("bind-address"),
            Flag("https-listen-port", "int", default=6443),
            Flag("advertise-address"),
            Flag("advertise-port", "int"),
            Flag("tls-san", "slice", split=True),
            Flag("tls-san-security", "bool"),
            Flag("data-dir", aliases=("d",), env=("K3S_DATA_DIR",)),
            Flag("cluster-cidr", "slice", split=True),
            Flag("service-cidr", "slice", split=True),
            Flag("service-node-port-range", default="30000-32767"),
            Flag("cluster-dns", "slice", split=True),
            Flag("cluster-domain", default="cluster.local"),
            Flag("flannel-backend", default="vxlan"),
            Flag("flannel-ipv6-masq", "bool"),
            Flag("flannel-external-ip", "bool"),
            Flag("egress-selector-mode"),
            Flag("servicelb-namespace", default="kube-system"),
            Flag("write-kubeconfig", aliases=("o",), env=("K3S_KUBECONFIG_OUTPUT",)),
            Flag("write-kubeconfig-mode", env=("K3S_KUBECONFIG_MODE",)),
            Flag("write-kubeconfig-group", env=("K3S_KUBECONFIG_GROUP",)),
            Flag("helm-job-image"),
            Flag("token", aliases=("t",), env=("K3S_TOKEN",)),
            Flag("token-file", env=("K3S_TOKEN_FILE",)),
            Flag("agent-token", env=("K3S_AGENT_TOKEN",)),
            Flag("agent-token-file", env=("K3S_AGENT_TOKEN_FILE",)),
            Flag("server", aliases=("s",), env=("K3S_URL",)),
            Flag("cluster-init", "bool", env=("K3S_CLUSTER_INIT",)),
            Flag("cluster-reset", "bool", env=("K3S_CLUSTER_RESET",)),
            Flag("cluster-reset-restore-path"),
            Flag("kube-apiserver-arg", "slice"),
            Flag("etcd-arg", "slice"),
            Flag("kube-controller-manager-arg", "slice"),
            Flag("kube-scheduler-arg", "slice"),
            Flag("kube-cloud-controller-manager-arg", "slice"),
            Flag("datastore-endpoint", env=("K3S_DATASTORE_ENDPOINT",)),
            Flag("datastore-cafile"),
            Flag("datastore-certfile"),
            Flag("datastore-keyfile"),
            Flag("etcd-expose-metrics", "bool"),
            Flag("etcd-disable-snapshots", "bool"),
            Flag("etcd-snapshot-name", default="etcd-snapshot"),
            Flag("etcd-snapshot-schedule-cron", default="0 */12 * * *"),
            Flag("etcd-snapshot-retention", "int", default=5),
            Flag("etcd-snapshot-dir"),
            Flag("etcd-snapshot-compress", "bool"),
            Flag("etcd-s3", "bool"),
            Flag("etcd-s3-endpoint"),
            Flag("etcd-s3-bucket"),
            Flag("etcd-s3-access-key"),
            Flag("etcd-s3-secret-key"),
            Flag("etcd-s3-region"),
            Flag("etcd-s3-folder"),
            Flag("default-local-storage-path"),
            Flag("disable", "slice", split=True),
            Flag("disable-scheduler", "bool"),
            Flag("disable-cloud-controller", "bool"),
            Flag("disable-kube-proxy", "bool"),
            Flag("disable-network-policy", "bool"),
            Flag("disable-helm-controller", "bool"),
            Flag("embedded-registry", "bool"),
            Flag("supervisor-metrics", "bool"),
            Flag("secrets-encryption", "bool"),
            Flag("disable-agent", "bool"),
            Flag("disable-apiserver", "bool"),
            Flag("disable-controller-manager", "bool"),
            Flag("disable-etcd", "bool"),
            Flag("kine-tls", "bool"),
            *_common_agent_flags(),
        ]
    )


def agent_flags() -> FlagSet:
    return FlagSet(
        [
            *_log_flags(),
            Flag("token", aliases=("t",), env=("K3S_TOKEN",)),
            Flag("token-file", env=("K3S_TOKEN_FILE",)),
            Flag("server", aliases=("s",), env=("K3S_URL",)),
            Flag("data-dir", aliases=("d",), env=("K3S_DATA_DIR",)),
            Flag("bind-address"),
            Flag("disable-apiserver-lb", "bool"),
            *_common_agent_flags(),
        ]
    )


def snapshot_flags() -> FlagSet:
    return FlagSet(
        [
            *_log_flags(),
            Flag("data-dir", aliases=("d",), env=("K3S_DATA_DIR",)),
            Flag("node-name", env=("K3S_NODE_NAME",)),
            Flag("name", default="on-demand"),
            Flag("dir", aliases=("etcd-snapshot-dir",)),
            Flag("snapshot-compress", aliases=("etcd-snapshot-compress",), kind="bool"),
            Flag("etcd-token", aliases=("t",), env=("K3S_TOKEN",)),
            Flag("etcd-server", default="https://127.0.0.1:6443"),
            Flag("s3", aliases=("etcd-s3",), kind="bool"),
            Flag("o", aliases=("output",), default="table"),
        ]
    )


USAGE = {
    "server": "k3s server - Run management server\n\nUSAGE:\n   k3s server [OPTIONS]",
    "agent": "k3s agent - Run node agent\n\nUSAGE:\n   k3s agent [OPTIONS]",
    "etcd-snapshot": "k3s etcd-snapshot - Manage etcd snapshots\n\nUSAGE:\n   k3s etcd-snapshot command "
    "[command options] [arguments...]",
}


def parse_with_config(cmd: str, fs: FlagSet, args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """k3s's configfilearg: the YAML config (+ config.yaml.d/*.yaml) becomes `--key=value` args placed
    before the command line, so unknown keys fail exactly like unknown flags."""
    explicit = None
    for i, a in enumerate(args):
        if a in ("-c", "--config", "-config") and i + 1 < len(args):
            explicit = args[i + 1]
        elif re.match(r"^--?(c|config)=", a):
            explicit = a.split("=", 1)[1]
    path_str = explicit or os.environ.get("K3S_CONFIG_FILE") or "/etc/rancher/k3s/config.yaml"
    path = sysroot(path_str) if not explicit and not os.environ.get("K3S_CONFIG_FILE") else Path(path_str)
    files: list[Path] = []
    if path.exists():
        files.append(path)
    elif explicit or os.environ.get("K3S_CONFIG_FILE"):
        raise Fatal(f"open {path_str}: no such file or directory")
    dropins = Path(str(path) + ".d")
    if dropins.is_dir():
        files += sorted(p for p in dropins.iterdir() if p.suffix in (".yaml", ".yml"))
    config_args: list[str] = []
    known = fs.lookup()
    for f in files:
        try:
            doc = yaml.safe_load(f.read_text())
        except yaml.YAMLError as e:
            raise Fatal(f"failed to parse config file {f}: {str(e).splitlines()[0]} ({_yaml_where(e)})")
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise Fatal(
                f"failed to parse config file {f}: yaml: unmarshal errors: cannot unmarshal "
                f"!!{type(doc).__name__} into map[string]interface {{}}"
            )
        for key, value in doc.items():
            key = str(key).rstrip("+")
            flag = known.get(key)
            values = value if isinstance(value, list) else [value]
            if flag is not None and flag.kind == "bool" and not isinstance(value, bool):
                raise Fatal(f"failed to parse config file {f}: invalid boolean value for {key!r}: {value!r}")
            for v in values:
                text = ("true" if v else "false") if isinstance(v, bool) else str(v)
                config_args.append(f"--{key}={text}")
    return fs.parse(config_args + args)


def _yaml_where(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"


# -------------------------------------------------------------------------------------------- tokens


class Token:
    """A k3s join token: `K10<sha256 of the CA file>::<user>:<password>`, or a bare password."""

    def __init__(self, raw: str) -> None:
        if not raw:
            raise Fatal("token must not be empty")
        self.raw = raw
        token = raw if raw.startswith("K10") else "K10:::" + raw
        body = token[3:]
        ca_hash, sep, creds = body.partition("::")
        if not sep:
            ca_hash, creds = "", body
        if ca_hash and len(ca_hash) != 64:
            raise Fatal("invalid token CA hash length")
        user, sep, password = creds.partition(":")
        if not sep or not password:
            raise Fatal("invalid token format")
        self.ca_hash, self.user, self.password = ca_hash, user, password

    @staticmethod
    def format(ca_pem: bytes, user: str, password: str) -> str:
        return f"K10{pki.ca_hash(ca_pem)}::{user}:{password}"


def read_token(opts: dict[str, Any], name: str = "token") -> str:
    if opts.get(name):
        return str(opts[name]).strip()
    if opts.get(f"{name}-file"):
        try:
            return Path(opts[f"{name}-file"]).read_text().strip()
        except OSError as e:
            raise Fatal(f"failed to read token file {opts[f'{name}-file']}: {e.strerror}")
    return ""


def _insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def http_get(
    url: str,
    ctx: ssl.SSLContext,
    auth: tuple[str, str] | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    body: bytes | None = None,
) -> bytes:
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=body)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
        data: bytes = resp.read()
        return data


def _url_error(url: str, e: Exception) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"{url}: {e.code} {e.reason}"
    reason = getattr(e, "reason", e)
    if isinstance(reason, ConnectionRefusedError):
        host = urllib.parse.urlsplit(url).netloc
        return f'Get "{url}": dial tcp {host}: connect: connection refused'
    return f'Get "{url}": {reason}'


def fetch_cacerts(server: str, token: Token, deadline: float) -> bytes:
    """GET /cacerts and check it against the token's CA hash, retrying while the server is unreachable."""
    u = urllib.parse.urlsplit(server)
    if u.scheme != "https":
        raise Fatal(f"only https:// URLs are supported, invalid scheme: {server}")
    url = f"https://{u.netloc}/cacerts"
    while True:
        try:
            cacerts = http_get(url, _insecure_context())
            break
        except (urllib.error.URLError, OSError) as e:
            msg = f"failed to get CA certs: {_url_error(url, e)}"
            if time.time() >= deadline:
                raise Fatal(msg)
            error(msg)
            time.sleep(1)
    if token.ca_hash:
        got = pki.ca_hash(cacerts)
        if got != token.ca_hash:
            raise Fatal(
                f"token CA hash does not match the Cluster CA certificate hash: {token.ca_hash} != {got}"
            )
    else:
        warn(
            "Cluster CA certificate is not trusted by the host CA bundle, but the token does not include a "
            "CA hash. Use the full token from the server's node-token file to enable Cluster CA validation."
        )
    return cacerts


def verified_context(ca_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.check_hostname = False  # k3s agents dial by IP; the chain must still verify against the cluster CA
    return ctx


def join_deadline() -> float:
    # Real k3s retries unreachable servers forever (systemd shows the unit "activating"); the stand-in gives
    # up after K3S_STANDIN_JOIN_TIMEOUT seconds (default 120) so a failed join becomes an exit code.
    return time.time() + float(os.environ.get("K3S_STANDIN_JOIN_TIMEOUT", "120"))


# ------------------------------------------------------------------------------------ node identity


def node_name(opts: dict[str, Any]) -> str:
    name = opts.get("node-name") or socket.gethostname()
    name = name.lower()
    if opts.get("with-node-id"):
        id_file = sysroot("/etc/rancher/node/node-id")
        if not id_file.exists():
            pki.write_private(id_file, secrets.token_hex(4).encode(), 0o644)
        name = f"{name}-{id_file.read_text().strip()}"
    if not apis._DNS1123_SUBDOMAIN.match(name):
        raise Fatal(f'invalid node name "{name}": must be a lowercase RFC 1123 subdomain')
    return str(name)


def node_ip(opts: dict[str, Any], towards: str | None = None) -> str:
    if opts.get("node-ip"):
        return str(opts["node-ip"][0])
    # The address of the interface that routes towards the server (or the default route), else the first
    # global IPv4 address: hosts without a default route (the test bed's) still get their LAN address.
    target = towards or "10.255.255.255"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((target, 6443))
            return str(s.getsockname()[0])
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, timeout=5
        ).stdout
        m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
        if m:
            return m.group(1)
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "127.0.0.1"


def parse_labels(items: list[str]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Fatal(f"invalid node-label {item!r}: must be in the form key=value")
        try:
            apis._validate_labels(apis._res("nodes"), {"name": "node", "labels": {key: value}})
        except apis.ApiError as e:
            raise Fatal(f"invalid node-label {item!r}: {e.message}")
        labels[key] = value
    return labels


def parse_taints(items: list[str]) -> list[dict[str, str]]:
    taints = []
    for item in items:
        kv, sep, effect = item.rpartition(":")
        if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise Fatal(
                f"failed to parse kubelet flag: invalid taint spec: {item}, invalid taint effect: "
                f'"{effect}", unsupported taint effect'
            )
        key, _, value = kv.partition("=")
        if not key:
            raise Fatal(f"failed to parse kubelet flag: invalid taint spec: {item}")
        t = {"key": key, "effect": effect}
        if value:
            t["value"] = value
        taints.append(t)
    return taints


def duration(value: str) -> float:
    m = re.fullmatch(
        r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?", value
    )
    if not m or not value:
        raise Fatal(f'time: invalid duration "{value}"')
    h, mi, s, ms = (float(x) if x else 0.0 for x in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


def component_args(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.lstrip("-").partition("=")
        out[key] = value
    return out


# ------------------------------------------------------------------------------------ registries


def registry_file(opts: dict[str, Any]) -> Path:
    path = opts.get("private-registry") or "/etc/rancher/k3s/registries.yaml"
    return sysroot(path) if path == "/etc/rancher/k3s/registries.yaml" else Path(path)


def load_registries(path: Path) -> dict[str, Any]:
    """registries.yaml, checked the way Go's yaml.Unmarshal into k3s's Registry struct checks it."""
    if not path.exists():
        return {}
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise Fatal(
            f"failed to load private registry configuration from {path}: {str(e).splitlines()[0]} "
            f"({_yaml_where(e)})"
        )
    if doc is None:
        return {}

    def bad(where: str, want: str, got: Any) -> Fatal:
        return Fatal(
            f"failed to load private registry configuration from {path}: yaml: unmarshal errors: "
            f"{where}: cannot unmarshal !!{_yaml_kind(got)} into {want}"
        )

    if not isinstance(doc, dict):
        raise bad("line 1", "registries.Registry", doc)
    mirrors = doc.get("mirrors") or {}
    configs = doc.get("configs") or {}
    if not isinstance(mirrors, dict):
        raise bad("mirrors", "map[string]registries.Mirror", mirrors)
    if not isinstance(configs, dict):
        raise bad("configs", "map[string]registries.RegistryConfig", configs)
    for name, m in mirrors.items():
        if not isinstance(m, dict):
            raise bad(f"mirrors.{name}", "registries.Mirror", m)
        eps = m.get("endpoint", [])
        if not isinstance(eps, list) or not all(isinstance(e, str) for e in eps):
            raise bad(f"mirrors.{name}.endpoint", "[]string", eps)
        for ep in eps:
            u = urllib.parse.urlsplit(ep)
            if u.scheme not in ("http", "https") or not u.netloc:
                raise Fatal(
                    f"failed to load private registry configuration from {path}: mirror endpoint "
                    f"{ep!r} for {name}: must be an http:// or https:// URL"
                )
        if "rewrite" in m and not isinstance(m["rewrite"], dict):
            raise bad(f"mirrors.{name}.rewrite", "map[string]string", m["rewrite"])
    for name, c in configs.items():
        if not isinstance(c, dict):
            raise bad(f"configs.{name}", "registries.RegistryConfig", c)
        for section in ("auth", "tls"):
            if section in c and not isinstance(c[section], dict):
                raise bad(f"configs.{name}.{section}", f"registries.{section.upper()}Config", c[section])
        tls = c.get("tls") or {}
        if "insecure_skip_verify" in tls and not isinstance(tls["insecure_skip_verify"], bool):
            raise bad(f"configs.{name}.tls.insecure_skip_verify", "bool", tls["insecure_skip_verify"])
    return {"mirrors": mirrors, "configs": configs}


def _yaml_kind(v: Any) -> str:
    return {str: "str", int: "int", float: "float", bool: "bool", list: "seq", dict: "map"}.get(
        type(v), "null"
    )


def hosts_toml(
    host: str, endpoints: list[str], configs: dict[str, Any], rewrites: dict[str, str], default_endpoint: bool
) -> str:
    """The certs.d/<host>/hosts.toml k3s writes (pkg/agent/templates HostsTomlTemplate)."""
    server = "registry-1.docker.io" if host == "docker.io" else host
    lines = ["# File generated by k3s. DO NOT EDIT."]
    lines.append(f'server = "https://{server}/v2"' if default_endpoint and host != "_default" else "")
    lines.append("")
    for ep in endpoints:
        u = urllib.parse.urlsplit(ep)
        override = u.path not in ("", "/", "/v2", "/v2/")
        uri = ep.rstrip("/") if override else f"{u.scheme}://{u.netloc}/v2"
        lines.append(f'[host."{uri}"]')
        lines.append('  capabilities = ["pull", "resolve"]')
        if override:
            lines.append("  override_path = true")
        tls = (configs.get(u.netloc) or {}).get("tls") or {}
        if tls.get("ca_file"):
            lines.append(f"  ca = [{json.dumps(tls['ca_file'])}]")
        if tls.get("cert_file") or tls.get("key_file"):
            lines.append(
                f"  client = [[{json.dumps(tls.get('cert_file', ''))}, "
                f"{json.dumps(tls.get('key_file', ''))}]]"
            )
        if tls.get("insecure_skip_verify"):
            lines.append("  skip_verify = true")
        if rewrites:
            lines.append(f'  [host."{uri}".rewrite]')
            for pattern, repl in rewrites.items():
                lines.append(f"    {json.dumps(pattern)} = {json.dumps(repl)}")
        lines.append("")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- containerd


def find_binary(name: str, data_dir: Path) -> str | None:
    """Host PATH first (k3s appends its bundled bin dir to PATH unless --prefer-bundled-bin), then the
    bundled dir <data-dir>/data/current/bin, then the directory holding the k3s executable."""
    path = os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    extra = [str(data_dir / "data" / "current" / "bin"), str(Path(sys.argv[0]).resolve().parent)]
    return shutil.which(name, path=os.pathsep.join([path, *extra]))


def _die_with_parent() -> None:
    # k3s starts containerd with Pdeathsig=SIGKILL: the runtime never outlives a crashed k3s.
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Containerd:
    """The embedded container runtime: a real containerd with the config k3s derives from registries.yaml."""

    def __init__(self, data_dir: Path, opts: dict[str, Any]) -> None:
        self.data_dir = data_dir
        self.opts = opts
        self.run_dir = sysroot("/run/k3s/containerd")
        self.external = opts.get("container-runtime-endpoint") or ""
        self.socket = self.external.removeprefix("unix://") or str(self.run_dir / "containerd.sock")
        self.etc = data_dir / "agent" / "etc" / "containerd"
        self.root = data_dir / "agent" / "containerd"
        self.config_file = self.etc / "config.toml"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctr = find_binary("ctr", data_dir)

    def write_config(self) -> None:
        regs = load_registries(registry_file(self.opts))
        certs_d = self.etc / "certs.d"
        if certs_d.exists():
            shutil.rmtree(certs_d)
        mirrors = regs.get("mirrors", {})
        configs = regs.get("configs", {})
        for host, m in mirrors.items():
            d = certs_d / ("_default" if host == "*" else host)
            d.mkdir(parents=True, exist_ok=True)
            (d / "hosts.toml").write_text(
                hosts_toml(
                    "_default" if host == "*" else host,
                    m.get("endpoint", []),
                    configs,
                    m.get("rewrite") or {},
                    not self.opts.get("disable-default-registry-endpoint"),
                )
            )
        for host in configs:
            if host not in mirrors and host != "*":
                d = certs_d / host
                d.mkdir(parents=True, exist_ok=True)
                (d / "hosts.toml").write_text(hosts_toml(host, [f"https://{host}"], configs, {}, True))
        snapshotter = self.opts.get("snapshotter") or "overlayfs"
        if snapshotter == "overlayfs" and "overlay" not in Path("/proc/filesystems").read_text():
            warn("overlayfs snapshotter not supported on this host, falling back to native")
            snapshotter = "native"
        auth_lines = []
        for host, c in configs.items():
            a = c.get("auth") or {}
            if a:
                auth_lines.append(f'[plugins."io.containerd.grpc.v1.cri".registry.configs."{host}".auth]')
                for k in ("username", "password", "auth", "identitytoken"):
                    if a.get(k):
                        auth_lines.append(f"  {k} = {json.dumps(a[k])}")
        # Several stand-in nodes on one test machine (K3S_STANDIN_ROOT) cannot all bind 10010.
        stream_port = "0" if root_prefix() else "10010"
        config = f"""# File generated by k3s. DO NOT EDIT. Use config.toml.tmpl instead.
version = 2

[plugins."io.containerd.internal.v1.opt"]
  path = "{self.data_dir / "agent" / "containerd"}"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "{stream_port}"
  enable_selinux = {str(bool(self.opts.get("selinux"))).lower()}
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  sandbox_image = "{self.opts.get("pause-image") or "rancher/mirrored-pause:3.6"}"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "{snapshotter}"
  disable_snapshot_annotations = true

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{self.data_dir / "data" / "current" / "bin"}"
  conf_dir = "{self.data_dir / "agent" / "etc" / "cni" / "net.d"}"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{certs_d}"
{chr(10).join(auth_lines)}
"""
        self.etc.mkdir(parents=True, exist_ok=True)
        tmpl = self.etc / "config.toml.tmpl"
        pki.write_private(self.etc / "config.toml", (tmpl.read_text() if tmpl.exists() else config).encode())

    def start(self) -> None:
        self.write_config()
        if self.external:
            info(f"Using container runtime endpoint {self.external}")
            return
        binary = find_binary("containerd", self.data_dir)
        if binary is None:
            raise Fatal('failed to start containerd: exec: "containerd": executable file not found in $PATH')
        self.run_dir.mkdir(parents=True, exist_ok=True)
        root = self.root
        root.mkdir(parents=True, exist_ok=True)
        logf = open(root / "containerd.log", "ab")  # noqa: SIM115 - handed to the child process
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(binary).parent), env.get("PATH", "/usr/bin:/bin")])
        info(f"Logging containerd to {root / 'containerd.log'}")
        info(
            f"Running containerd -c {self.config_file} -a {self.socket} --state {self.run_dir} --root {root}"
        )
        self.proc = subprocess.Popen(
            [
                binary,
                "-c",
                str(self.config_file),
                "-a",
                self.socket,
                "--state",
                str(self.run_dir),
                "--root",
                str(root),
            ],
            stdout=logf,
            stderr=logf,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Fatal(
                    f"containerd exited: exit status {self.proc.returncode}; see {root / 'containerd.log'}"
                )
            if self.healthy():
                info("containerd is now running")
                return
            time.sleep(0.2)
        raise Fatal("timed out waiting for containerd to start")

    def version(self) -> str | None:
        if self.ctr is None or not Path(self.socket).exists():
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

    def healthy(self) -> bool:
        return self.version() is not None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------------------ kubelet


class Kubelet(threading.Thread):
    """The node agent's part the API sees: register the Node, renew its Lease, post Ready status
    (Ready only while containerd answers)."""

    def __init__(
        self,
        client: KubeClient,
        name: str,
        ip: str,
        labels: dict[str, str],
        taints: list[dict[str, str]],
        annotations: dict[str, str],
        runtime: Containerd,
        interval: float,
        stop: threading.Event,
        version: str = "",
    ) -> None:
        super().__init__(name="kubelet", daemon=True)
        self.version = version or VERSION
        self.client, self.node, self.ip = client, name, ip
        self.labels, self.taints, self.annotations = labels, taints, annotations
        self.runtime, self.interval, self.stop_event = runtime, interval, stop
        self.registered = threading.Event()

    def register(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node, "labels": self.labels, "annotations": self.annotations},
            "spec": {},
        }
        if self.taints:
            body["spec"]["taints"] = self.taints
        # the kubelet registers its Node with an initial status, so no client ever sees a status-less node
        body.update(self.status())
        try:
            self.client.create("/api/v1/nodes", body)
            info(f"Successfully registered node {self.node}")
        except KubeError as e:
            if e.code != 409:
                raise
            # Re-registration after a restart: k3s re-applies its own labels and annotations.
            self.client.patch(
                f"/api/v1/nodes/{self.node}",
                {"metadata": {"labels": self.labels, "annotations": self.annotations}},
            )
        self.registered.set()

    def status(self) -> dict[str, Any]:
        ts = apis.now_rfc3339()
        version = self.runtime.version()
        ready = version is not None
        cond = {
            "type": "Ready",
            "status": "True" if ready else "False",
            "lastHeartbeatTime": ts,
            "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": "kubelet is posting ready status"
            if ready
            else "container runtime is down: PLEG is not healthy: failed to connect to containerd",
        }
        conditions = [
            {"type": t, "status": "False", "lastHeartbeatTime": ts, "reason": f"KubeletHas{r}", "message": m}
            for t, r, m in (
                ("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory available"),
                ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"),
            )
        ] + [cond]
        mem_kib = 0
        try:
            mem_kib = int(
                next(
                    ln.split()[1]
                    for ln in Path("/proc/meminfo").read_text().splitlines()
                    if ln.startswith("MemTotal")
                )
            )
        except (OSError, StopIteration, ValueError):
            pass
        capacity = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{mem_kib}Ki",
            "pods": "110",
            "ephemeral-storage": "10Gi",
        }
        os_release = {}
        try:
            for ln in Path("/etc/os-release").read_text().splitlines():
                k, _, v = ln.partition("=")
                os_release[k] = v.strip('"')
        except OSError:
            pass
        return {
            "status": {
                "conditions": conditions,
                "addresses": [
                    {"type": "InternalIP", "address": self.ip},
                    {"type": "Hostname", "address": self.node},
                ],
                "capacity": capacity,
                "allocatable": capacity,
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {
                    "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                        platform.machine(), platform.machine()
                    ),
                    "operatingSystem": "linux",
                    "osImage": os_release.get("PRETTY_NAME", "Linux"),
                    "kernelVersion": platform.release(),
                    "kubeletVersion": self.version,
                    "kubeProxyVersion": self.version,
                    "containerRuntimeVersion": f"containerd://{version or 'unknown'}",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            }
        }

    def heartbeat(self) -> None:
        self.client.patch(f"/api/v1/nodes/{self.node}/status", self.status())
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": now}
        try:
            self.client.patch(lease_path, {"spec": spec}, "merge")
        except KubeError as e:
            if e.code != 404:
                raise
            self.client.create(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.node, "namespace": "kube-node-lease"},
                    "spec": spec,
                },
            )

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                if not self.registered.is_set():
                    self.register()
                self.heartbeat()
            except (KubeError, OSError) as e:
                error(f"Unable to update node status for {self.node}: {e}")
            self.stop_event.wait(self.interval)


# ------------------------------------------------------------------------------------------- server


def require_root(what: str, opts: dict[str, Any]) -> None:
    if os.geteuid() != 0 and not opts.get("rootless"):
        if what == "server":
            raise Fatal("server must run as root, or with --rootless and/or --disable-agent")
        raise Fatal("agent must be run as root, or with --rootless")


def data_dir_of(opts: dict[str, Any]) -> Path:
    return Path(opts["data-dir"]) if opts.get("data-dir") else sysroot("/var/lib/rancher/k3s")


class Server:
    def __init__(self, opts: dict[str, Any]) -> None:
        self.opts = opts
        self.data = data_dir_of(opts)
        self.tls = self.data / "server" / "tls"
        self.stop = threading.Event()
        self.api: apis.APIServer | None = None
        self.runtime: Containerd | None = None
        self.leader: tuple[str, int] | None = None
        # Once initialised, embedded etcd stays the datastore on restarts without --cluster-init, as in k3s.
        existing_etcd = (self.data / "server" / "db" / "etcd").is_dir()
        self.datastore = "etcd" if opts["cluster-init"] or opts["server"] or existing_etcd else "sqlite"
        if opts.get("datastore-endpoint"):
            raise Fatal(
                "the k3s stand-in supports only the embedded datastores (sqlite, etcd); "
                "--datastore-endpoint is not implemented"
            )
        self.db = self.data / "server" / "db" / ("etcd" if self.datastore == "etcd" else "")
        self.token_file = self.data / "server" / "token"

    # -- PKI and tokens

    def _ca(self, name: str) -> tuple[bytes, bytes]:
        return (self.tls / f"{name}.crt").read_bytes(), (self.tls / f"{name}.key").read_bytes()

    def init_pki(self) -> None:
        for ca in ("server-ca", "client-ca", "request-header-ca", "etcd/server-ca", "etcd/peer-ca"):
            if not (self.tls / f"{ca}.crt").exists():
                c, k = pki.make_ca(f"k3s-{ca.replace('/', '-')}")
                pki.write_private(self.tls / f"{ca}.crt", c, 0o644)
                pki.write_private(self.tls / f"{ca}.key", k)

    def issue_server_certs(self, name: str, ip: str) -> None:
        sans = [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "127.0.0.1",
            "::1",
            "10.43.0.1",
            name,
            ip,
            *self.opts["tls-san"],
        ]
        if self.opts.get("advertise-address"):
            sans.append(self.opts["advertise-address"])
        c, k = pki.issue(*self._ca("server-ca"), "k3s", organizations=["k3s"], sans=sans, server=True)
        pki.write_private(self.tls / "serving-kube-apiserver.crt", c, 0o644)
        pki.write_private(self.tls / "serving-kube-apiserver.key", k)
        if not (self.tls / "client-admin.crt").exists():
            c, k = pki.issue(
                *self._ca("client-ca"), "system:admin", organizations=["system:masters"], client=True
            )
            pki.write_private(self.tls / "client-admin.crt", c, 0o644)
            pki.write_private(self.tls / "client-admin.key", k)
        c, k = pki.issue(
            *self._ca("client-ca"), "system:k3s-supervisor", organizations=["system:masters"], client=True
        )
        pki.write_private(self.tls / "client-supervisor.crt", c, 0o644)
        pki.write_private(self.tls / "client-supervisor.key", k)

    def server_password(self) -> str:
        return Token(self.token_file.read_text().strip()).password

    def agent_password(self) -> str:
        f = self.data / "server" / "agent-token"
        return Token(f.read_text().strip()).password if f.exists() else self.server_password()

    def setup_token_init(self) -> None:
        given = read_token(self.opts)
        ca = (self.tls / "server-ca.crt").read_bytes()
        if self.token_file.exists():
            existing = Token(self.token_file.read_text().strip())
            if given and Token(given).password != existing.password:
                raise Fatal(
                    "starting kubernetes: preparing server: bootstrap data already found and encrypted "
                    "with different token"
                )
            password = existing.password
        else:
            password = Token(given).password if given else secrets.token_hex(16)
        full = Token.format(ca, "server", password)
        pki.write_private(self.token_file, full.encode())
        node_token = self.data / "server" / "node-token"
        if node_token.is_symlink() or node_token.exists():
            node_token.unlink()
        node_token.symlink_to("token")
        agent = read_token(self.opts, "agent-token")
        if agent:
            pki.write_private(
                self.data / "server" / "agent-token", Token.format(ca, "node", Token(agent).password).encode()
            )

    def join(self) -> None:
        """A further server: check the token's CA hash, then fetch the cluster CAs (server-bootstrap)."""
        given = read_token(self.opts)
        if not given:
            raise Fatal("--token is required when joining a server (--server)")
        token = Token(given)
        cacerts = fetch_cacerts(self.opts["server"], token, join_deadline())
        u = urllib.parse.urlsplit(self.opts["server"])
        url = f"https://{u.netloc}/v1-k3s/server-bootstrap"
        try:
            data = json.loads(http_get(url, verified_context(cacerts), auth=("server", token.password)))
        except urllib.error.HTTPError as e:
            raise Fatal(
                f"starting kubernetes: preparing server: failed to get bootstrap data: {url}: {e.code} "
                f"{e.reason}"
            )
        except (urllib.error.URLError, OSError) as e:
            raise Fatal(
                f"starting kubernetes: preparing server: failed to get bootstrap data: {_url_error(url, e)}"
            )
        for rel, b64 in data["files"].items():
            mode = 0o600 if rel.endswith(".key") else 0o644
            pki.write_private(self.tls / rel, base64.b64decode(b64), mode)
        self.leader = (data["datastore"]["host"], int(data["datastore"]["port"]))
        pki.write_private(self.token_file, Token.format(cacerts, "server", token.password).encode())
        node_token = self.data / "server" / "node-token"
        if node_token.is_symlink() or node_token.exists():
            node_token.unlink()
        node_token.symlink_to("token")
        if data.get("agent-token"):
            pki.write_private(self.data / "server" / "agent-token", data["agent-token"].encode())
        (self.db).mkdir(parents=True, exist_ok=True)
        (self.db / "member").write_text(json.dumps({"leader": list(self.leader)}))

    # -- supervisor endpoints on :6443, as k3s serves them next to the apiserver

    def _basic_auth(self, handler: apis.Handler) -> tuple[str, str] | None:
        auth = handler.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return None
        try:
            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return None
        return user, pw

    def supervisor(
        self, handler: apis.Handler, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        if path == "/cacerts":
            return 200, {"Content-Type": "text/plain"}, (self.tls / "server-ca.crt").read_bytes()
        if path == "/ping":
            return 200, {"Content-Type": "text/plain"}, b"pong"
        if not (path.startswith("/v1-k3s/") or path.startswith("/db/")):
            return None
        creds = self._basic_auth(handler)
        server_ok = (
            creds is not None
            and creds[0] == "server"
            and secrets.compare_digest(creds[1], self.server_password())
        )
        node_ok = server_ok or (
            creds is not None
            and creds[0] == "node"
            and (
                secrets.compare_digest(creds[1], self.agent_password())
                or secrets.compare_digest(creds[1], self.server_password())
            )
        )
        unauthorized = (401, {"Content-Type": "text/plain"}, b"Unauthorized\n")
        if path == "/v1-k3s/server-bootstrap":
            if not server_ok:
                return unauthorized
            files = {rel: base64.b64encode(b).decode() for rel, b in bootstrap_files(self.tls).items()}
            leader = self.leader or (self.advertise_ip, self.port)
            agent_token = self.data / "server" / "agent-token"
            return (
                200,
                {},
                json.dumps(
                    {
                        "files": files,
                        "datastore": {"host": leader[0], "port": leader[1]},
                        "agent-token": agent_token.read_text() if agent_token.exists() else "",
                    }
                ).encode(),
            )
        if path == "/v1-k3s/readyz":
            if not node_ok:
                return unauthorized
            return 200, {"Content-Type": "text/plain"}, b"ok"
        if path == "/v1-k3s/client-kubelet.crt":
            if not node_ok:
                return unauthorized
            name = handler.headers.get("k3s-Node-Name", "")
            password = handler.headers.get("k3s-Node-Password", "")
            if not name or not password:
                return (
                    400,
                    {"Content-Type": "text/plain"},
                    b"missing k3s-Node-Name or k3s-Node-Password header\n",
                )
            verdict = self.check_node_password(name, password)
            if verdict:
                return 403, {"Content-Type": "text/plain"}, verdict.encode()
            c, k = pki.issue(
                *self._ca("client-ca"), f"system:node:{name}", organizations=["system:nodes"], client=True
            )
            return 200, {"Content-Type": "text/plain"}, c + (self.tls / "client-ca.crt").read_bytes() + k
        if path == "/db/snapshot" and method == "POST":
            if not server_ok:
                return unauthorized
            return self.save_snapshot(json.loads(body or b"{}"))
        return 404, {"Content-Type": "text/plain"}, b"404 page not found\n"

    def admin_client(self) -> KubeClient:
        return KubeClient(
            f"https://127.0.0.1:{self.port}",
            (self.tls / "server-ca.crt").read_bytes(),
            cert_pem=(self.tls / "client-supervisor.crt").read_bytes(),
            key_pem=(self.tls / "client-supervisor.key").read_bytes(),
        )

    def check_node_password(self, name: str, password: str) -> str:
        """k3s's node password check: the first join of a node name records a hash of its password in the
        Secret kube-system/<name>.node-password.k3s; a later join under that name must present the same."""
        client = self.admin_client()
        digest = hashlib.sha256(password.encode()).hexdigest()
        path = f"/api/v1/namespaces/kube-system/secrets/{name}.node-password.k3s"
        try:
            secret = client.get(path)
            stored = base64.b64decode(secret["data"]["hash"]).decode()
            if stored != digest:
                return (
                    "Node password rejected, duplicate hostname or contents of '/etc/rancher/node/password' "
                    "may not match server node-passwd entry, try enabling a unique node name with the "
                    "--with-node-id flag\n"
                )
            return ""
        except KubeError as e:
            if e.code != 404:
                return f"unable to verify node password: {e}\n"
        client.create(
            "/api/v1/namespaces/kube-system/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "k3s.cattle.io/node-password",
                "metadata": {"name": f"{name}.node-password.k3s", "namespace": "kube-system"},
                "data": {"hash": base64.b64encode(digest.encode()).decode()},
            },
        )
        return ""

    def snapshot_dir(self) -> Path:
        return (
            Path(self.opts["etcd-snapshot-dir"])
            if self.opts.get("etcd-snapshot-dir")
            else (self.data / "server" / "db" / "snapshots")
        )

    def save_snapshot(self, req: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        if self.api is not None and self.api.store is not None:
            data = self.api.store.snapshot()
        else:
            assert self.leader is not None
            ctx = verified_context((self.tls / "server-ca.crt").read_bytes())
            try:
                data = http_get(
                    f"https://{self.leader[0]}:{self.leader[1]}/db/snapshot",
                    ctx,
                    auth=("server", self.server_password()),
                    method="POST",
                    headers={"Content-Type": "application/json"},
                    body=b'{"raw": true}',
                )
                data = base64.b64decode(json.loads(data)["data"])
            except (urllib.error.URLError, OSError, KeyError, ValueError) as e:
                return 500, {"Content-Type": "text/plain"}, f"etcd snapshot failed: {e}\n".encode()
        if req.get("raw"):
            return 200, {}, json.dumps({"data": base64.b64encode(data).decode()}).encode()
        # Like k3s's: the snapshot also carries the bootstrap data (the cluster CAs and their keys),
        # encrypted with the server token, so a restore onto new nodes needs the original token.
        doc = json.loads(data)
        doc["bootstrap"] = seal_bootstrap(bootstrap_files(self.tls), self.server_password())
        data = json.dumps(doc).encode()
        name = f"{req.get('name') or 'on-demand'}-{self.node}-{int(time.time())}"
        d = Path(req["dir"]) if req.get("dir") else self.snapshot_dir()
        pki.write_private(d / name, data)
        info(f"Saving etcd snapshot to {d / name}")
        return (
            200,
            {},
            json.dumps({"name": name, "location": f"file://{d / name}", "size": len(data)}).encode(),
        )

    # -- run

    def run(self) -> int:
        opts = self.opts
        if not opts.get("disable-agent"):
            require_root("server", opts)
        info(f"Starting k3s {VERSION} ({COMMIT})")
        self.node = node_name(opts)
        # Flag values are checked before anything is written, started or dialled.
        extra_labels = parse_labels(opts["node-label"])
        taints = parse_taints(opts["node-taint"])
        interval = kubelet_interval(opts)
        duration(component_args(opts["kube-controller-manager-arg"]).get("node-monitor-grace-period", "40s"))
        load_registries(registry_file(opts))
        joining = bool(opts["server"])
        self.advertise_ip = opts.get("advertise-address") or node_ip(
            opts, urllib.parse.urlsplit(opts["server"]).hostname if joining else None
        )
        self.port = int(opts["https-listen-port"])
        if opts.get("cluster-reset"):
            return self.cluster_reset()
        if joining:
            self.join()
            if self.db.exists() and (self.db / "state.json").exists():
                warn("this server was a datastore owner before joining; its old state is ignored")
        else:
            self.init_pki()
            self.setup_token_init()
            self.db.mkdir(parents=True, exist_ok=True)
        info(
            f"Managed {self.datastore} cluster {'joining' if joining else 'initializing'}"
            if self.datastore == "etcd"
            else "Configuring sqlite3 database connection pooling"
        )
        self.issue_server_certs(self.node, self.advertise_ip)
        kcm = component_args(opts["kube-controller-manager-arg"])
        apiserver_args = component_args(opts["kube-apiserver-arg"])
        upstream = None
        if self.leader:
            ctx = verified_context((self.tls / "server-ca.crt").read_bytes())
            ctx.load_cert_chain(
                str(self.tls / "client-supervisor.crt"), str(self.tls / "client-supervisor.key")
            )
            upstream = apis.Upstream(self.leader[0], self.leader[1], ctx)
        cfg = apis.Config(
            data_dir=self.db,
            bind=opts.get("bind-address") or "0.0.0.0",
            port=self.port,
            server_cert=self.tls / "serving-kube-apiserver.crt",
            server_key=self.tls / "serving-kube-apiserver.key",
            client_ca=self.tls / "client-ca.crt",
            token_auth_file=Path(apiserver_args["token-auth-file"])
            if apiserver_args.get("token-auth-file")
            else None,
            anonymous_auth=apiserver_args.get("anonymous-auth", "false") == "true",
            node_monitor_grace=duration(kcm.get("node-monitor-grace-period", "40s")),
            advertise=self.advertise_ip,
            upstream=upstream,
            ext_handler=self.supervisor,
            signer_cert=self.tls / "client-ca.crt",
            signer_key=self.tls / "client-ca.key",
        )
        try:
            self.api = apis.APIServer(cfg)
        except OSError as e:
            raise Fatal(
                f"starting kubernetes: preparing server: listen tcp {cfg.bind}:{self.port}: bind: "
                f"{e.strerror.lower() if e.strerror else e}"
            )
        self.api.serve_in_background()
        info(
            f"Running kube-apiserver --advertise-address={self.advertise_ip} --secure-port={self.port} "
            f"--anonymous-auth={str(cfg.anonymous_auth).lower()} --client-ca-file={cfg.client_ca} "
            f"--tls-cert-file={cfg.server_cert}"
        )
        self.write_kubeconfig()
        self.deploy_addons()
        runtime = None
        if not opts.get("disable-agent"):
            runtime = Containerd(self.data, opts)
            self.runtime = runtime
            runtime.start()
            labels = {
                **base_labels(self.node),
                "node-role.kubernetes.io/control-plane": "true",
                "node-role.kubernetes.io/master": "true",
            }
            if self.datastore == "etcd":
                labels["node-role.kubernetes.io/etcd"] = "true"
            labels.update(extra_labels)
            c, k = pki.issue(
                *self._ca("client-ca"),
                f"system:node:{self.node}",
                organizations=["system:nodes"],
                client=True,
            )
            client = KubeClient(
                f"https://127.0.0.1:{self.port}",
                (self.tls / "server-ca.crt").read_bytes(),
                cert_pem=c,
                key_pem=k,
            )
            kubelet = Kubelet(
                client,
                self.node,
                self.advertise_ip,
                labels,
                taints,
                node_annotations(opts, self.advertise_ip, self.node),
                runtime,
                interval,
                self.stop,
            )
            kubelet.start()
        info("k3s is up and running")
        notify_systemd()
        wait_for_signal(self.stop)
        info("Shutting down k3s")
        self.api.shutdown()
        if runtime:
            runtime.stop()
        return 0

    def write_kubeconfig(self) -> None:
        out = self.opts.get("write-kubeconfig") or str(sysroot("/etc/rancher/k3s/k3s.yaml"))
        mode = int(self.opts["write-kubeconfig-mode"], 8) if self.opts.get("write-kubeconfig-mode") else 0o600
        text = pki.kubeconfig(
            f"https://127.0.0.1:{self.port}",
            (self.tls / "server-ca.crt").read_bytes(),
            cert_pem_bytes=(self.tls / "client-admin.crt").read_bytes(),
            key_pem_bytes=(self.tls / "client-admin.key").read_bytes(),
        )
        pki.write_private(Path(out), text.encode(), mode)
        info(f"Wrote kubeconfig {out}")

    def deploy_addons(self) -> None:
        """Packaged components as manifests in server/manifests (removed when --disable'd), applied by the
        deploy controller together with any user manifests placed there."""
        manifests = self.data / "server" / "manifests"
        manifests.mkdir(parents=True, exist_ok=True)
        disabled = set(self.opts["disable"])
        for item in disabled - set(ADDONS):
            warn(f"Unknown component {item!r} in --disable; valid items: {', '.join(ADDONS)}")
        deployments = {
            "coredns": "coredns",
            "traefik": "traefik",
            "local-storage": "local-path-provisioner",
            "metrics-server": "metrics-server",
        }
        for addon, deploy in deployments.items():
            f = manifests / f"{addon}.yaml"
            if addon in disabled:
                f.unlink(missing_ok=True)
                continue
            f.write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "metadata": {
                            "name": deploy,
                            "namespace": "kube-system",
                            "labels": {"k3s.io/addon": addon},
                        },
                        "spec": {
                            "replicas": 1,
                            "selector": {"matchLabels": {"app": deploy}},
                            "template": {
                                "metadata": {"labels": {"app": deploy}},
                                "spec": {
                                    "containers": [
                                        {"name": deploy, "image": f"rancher/mirrored-{deploy}:standin"}
                                    ]
                                },
                            },
                        },
                    }
                )
            )
        if self.api is not None and self.api.store is not None:
            threading.Thread(target=self._deploy_loop, args=(manifests,), name="deploy", daemon=True).start()

    def _deploy_loop(self, manifests: Path) -> None:
        applied: dict[str, float] = {}
        while not self.stop.is_set():
            for f in sorted(manifests.glob("*.yaml")) + sorted(manifests.glob("*.yml")):
                if f.name.endswith(".skip") or applied.get(str(f)) == f.stat().st_mtime:
                    continue
                try:
                    kubectl_mod.apply_file(self.admin_client(), f)
                    info(f"Applied manifest {f}")
                except Exception as e:
                    error(f"Failed to process config: failed to process {f}: {e}")
                applied[str(f)] = f.stat().st_mtime
            self.stop.wait(5)

    def restore_bootstrap(self, sealed: dict[str, Any]) -> None:
        """k3s reconciles the snapshot's bootstrap data onto disk: decrypted with the token given
        (--token / --token-file) or, failing that, this node's server token; another token fails
        as k3s fails, before anything is written."""
        given = read_token(self.opts)
        if given:
            password = Token(given).password
        elif self.token_file.exists():
            password = self.server_password()
        else:
            raise Fatal(
                "starting kubernetes: preparing server: failed to normalize server token; "
                "must be in format K10<CA-HASH>::<USERNAME>:<PASSWORD> or <PASSWORD>"
            )
        files = open_bootstrap(sealed, password)
        if files is None:
            raise Fatal(
                "starting kubernetes: preparing server: failed to reconcile bootstrap data: "
                "bootstrap data already found and encrypted with different token"
            )
        for rel, content in files.items():
            mode = 0o600 if rel.endswith(".key") else 0o644
            pki.write_private(self.tls / rel, content, mode)
        # the leaf certificates of the CAs replaced are void: issued again at the next start
        for leaf in ("serving-kube-apiserver", "client-supervisor"):
            for ext in (".crt", ".key"):
                (self.tls / f"{leaf}{ext}").unlink(missing_ok=True)
        ca = (self.tls / "server-ca.crt").read_bytes()
        pki.write_private(self.token_file, Token.format(ca, "server", password).encode())
        node_token = self.data / "server" / "node-token"
        if node_token.is_symlink() or node_token.exists():
            node_token.unlink()
        node_token.symlink_to("token")
        info("Restored bootstrap data (cluster CAs) from the snapshot")

    def cluster_reset(self) -> int:
        restore = self.opts.get("cluster-reset-restore-path")
        if self.datastore != "etcd" and not (self.data / "server" / "db" / "etcd").exists():
            raise Fatal("--cluster-reset requires the embedded etcd datastore (start with --cluster-init)")
        db = self.data / "server" / "db" / "etcd"
        if restore:
            src = Path(restore)
            if not src.exists():
                raise Fatal(
                    f"starting kubernetes: preparing server: etcd: snapshot path does not exist: {restore}"
                )
            data = src.read_bytes()
            try:
                doc = json.loads(data)
                doc["objects"]
            except (ValueError, KeyError, TypeError):
                raise Fatal(f"starting kubernetes: preparing server: etcd: {restore} is not an etcd snapshot")
            sealed = doc.pop("bootstrap", None)
            if sealed is not None:
                self.restore_bootstrap(sealed)
            pki.write_private(db / "state.json", json.dumps(doc).encode())
        (db / "member").unlink(missing_ok=True)
        info(
            "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now. "
            "Backup and delete ${datadir}/server/db on each peer etcd server and rejoin the nodes"
        )
        return 0


def base_labels(name: str) -> dict[str, str]:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {
        "beta.kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "k3s",
    }


def node_annotations(opts: dict[str, Any], ip: str, name: str) -> dict[str, str]:
    # k3s records its arguments on the Node with secrets masked; the value may be `--token=x` or the next arg
    secret_flags = ("-t", "--token", "-token", "--agent-token", "-agent-token", "--etcd-s3-secret-key")
    args: list[str] = []
    for a in sys.argv[1:]:
        if args and args[-1] in secret_flags:
            args.append("********")
        else:
            args.append(re.sub(r"^(--?(t|token|agent-token|etcd-s3-secret-key)=).*", r"\1********", a))
    return {
        "k3s.io/node-args": json.dumps(args),
        "k3s.io/internal-ip": ip,
        "k3s.io/hostname": name,
        "k3s.io/node-config-hash": hashlib.sha256(json.dumps(args).encode()).hexdigest()[:52].upper(),
    }


def kubelet_interval(opts: dict[str, Any]) -> float:
    return duration(component_args(opts["kubelet-arg"]).get("node-status-update-frequency", "10s"))


def notify_systemd() -> None:
    """sd_notify READY=1, as k3s does under Type=notify units."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(b"READY=1")
    except OSError:
        pass


def wait_for_signal(stop: threading.Event) -> None:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1):
        pass


# -------------------------------------------------------------------------------------------- agent


def run_agent(opts: dict[str, Any]) -> int:
    require_root("agent", opts)
    raw_token = read_token(opts)
    if not raw_token:
        raise Fatal("--token is required")
    if not opts["server"]:
        raise Fatal("--server is required")
    info(f"Starting k3s agent {VERSION} ({COMMIT})")
    token = Token(raw_token)
    data = data_dir_of(opts)
    name = node_name(opts)
    labels = {**base_labels(name), **parse_labels(opts["node-label"])}
    taints = parse_taints(opts["node-taint"])
    interval = kubelet_interval(opts)
    load_registries(registry_file(opts))
    server = opts["server"].rstrip("/")
    u = urllib.parse.urlsplit(server)
    cacerts = fetch_cacerts(server, token, join_deadline())
    ctx = verified_context(cacerts)
    agent_dir = data / "agent"
    pki.write_private(agent_dir / "server-ca.crt", cacerts, 0o644)
    pw_file = sysroot("/etc/rancher/node/password")
    if not pw_file.exists():
        pki.write_private(pw_file, secrets.token_hex(16).encode())
    node_password = pw_file.read_text().strip()
    url = f"https://{u.netloc}/v1-k3s/client-kubelet.crt"
    try:
        bundle = http_get(
            url,
            ctx,
            auth=("node", token.password),
            headers={"k3s-Node-Name": name, "k3s-Node-Password": node_password},
        )
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace").strip()
        if e.code == 403:
            raise Fatal(f"Failed to retrieve agent config: {url}: 403 Forbidden: {detail}")
        raise Fatal(f"Failed to retrieve agent config: {url}: {e.code} {e.reason}")
    except (urllib.error.URLError, OSError) as e:
        raise Fatal(f"Failed to retrieve agent config: {_url_error(url, e)}")
    key_start = bundle.index(b"-----BEGIN EC PRIVATE KEY-----")
    cert_pem, key_pem = bundle[:key_start], bundle[key_start:]
    pki.write_private(agent_dir / "client-kubelet.crt", cert_pem, 0o644)
    pki.write_private(agent_dir / "client-kubelet.key", key_pem)
    pki.write_private(
        agent_dir / "kubelet.kubeconfig",
        pki.kubeconfig(server, cacerts, cert_pem_bytes=cert_pem, key_pem_bytes=key_pem).encode(),
    )
    ip = node_ip(opts, u.hostname)
    runtime = Containerd(data, opts)
    try:
        return _run_agent_node(
            opts, runtime, server, cacerts, cert_pem, key_pem, name, ip, labels, taints, interval
        )
    finally:
        runtime.stop()


def _run_agent_node(
    opts: dict[str, Any],
    runtime: Containerd,
    server: str,
    cacerts: bytes,
    cert_pem: bytes,
    key_pem: bytes,
    name: str,
    ip: str,
    labels: dict[str, str],
    taints: list[dict[str, str]],
    interval: float,
) -> int:
    runtime.start()
    client = KubeClient(server, cacerts, cert_pem=cert_pem, key_pem=key_pem)
    stop = threading.Event()
    kubelet = Kubelet(
        client,
        name,
        ip,
        labels,
        taints,
        node_annotations(opts, ip, name),
        runtime,
        interval,
        stop,
    )
    kubelet.start()
    info("k3s agent is up and running")
    notify_systemd()
    wait_for_signal(stop)
    return 0


# ---------------------------------------------------------------------------------- etcd-snapshot


def bootstrap_files(tls: Path) -> dict[str, bytes]:
    """k3s's bootstrap data: the cluster CAs with their keys and the admin client certificate."""
    files: dict[str, bytes] = {}
    for p in sorted(tls.rglob("*")):
        rel = str(p.relative_to(tls))
        if p.is_file() and ("-ca." in p.name or rel in ("client-admin.crt", "client-admin.key")):
            files[rel] = p.read_bytes()
    return files


def _bootstrap_key(password: str) -> bytes:
    return hashlib.sha256(b"k3s-bootstrap\0" + password.encode()).digest()


def seal_bootstrap(files: dict[str, bytes], password: str) -> dict[str, str]:
    """The bootstrap data encrypted with a key derived from the token's password (a keystream
    cipher, enough for a stand-in: without the right token the CAs cannot be read back)."""
    key = _bootstrap_key(password)
    plain = json.dumps({k: base64.b64encode(v).decode() for k, v in files.items()}).encode()
    stream = hashlib.shake_256(key).digest(len(plain))
    return {
        "check": hashlib.sha256(b"check" + key).hexdigest(),
        "data": base64.b64encode(bytes(a ^ b for a, b in zip(plain, stream, strict=True))).decode(),
    }


def open_bootstrap(sealed: dict[str, Any], password: str) -> dict[str, bytes] | None:
    key = _bootstrap_key(password)
    if not secrets.compare_digest(str(sealed.get("check", "")), hashlib.sha256(b"check" + key).hexdigest()):
        return None
    cipher = base64.b64decode(str(sealed["data"]))
    stream = hashlib.shake_256(key).digest(len(cipher))
    plain = json.loads(bytes(a ^ b for a, b in zip(cipher, stream, strict=True)))
    return {k: base64.b64decode(v) for k, v in plain.items()}


def run_etcd_snapshot(sub: str, opts: dict[str, Any], rest: list[str]) -> int:
    data = data_dir_of(opts)
    if not (data / "server" / "db" / "etcd").is_dir():
        raise Fatal(f"etcd database not found in {data / 'server' / 'db' / 'etcd'}")
    snap_dir = Path(opts["dir"]) if opts.get("dir") else data / "server" / "db" / "snapshots"
    if sub == "save":
        token_file = data / "server" / "token"
        if not token_file.exists():
            raise Fatal(f"failed to read server token: open {token_file}: no such file or directory")
        password = Token(token_file.read_text().strip()).password
        ca = (data / "server" / "tls" / "server-ca.crt").read_bytes()
        base = opts["etcd-server"].rstrip("/")
        try:
            answer = json.loads(_post_snapshot(base, ca, password, opts))
        except (urllib.error.URLError, OSError) as e:
            raise Fatal(f"failed to save snapshot: {_url_error(base + '/db/snapshot', e)}")
        if "name" not in answer:
            raise Fatal(f"failed to save snapshot: {answer}")
        info(f"Snapshot {answer['name']} saved.")
        return 0
    if sub in ("ls", "list"):
        rows = sorted(snap_dir.glob("*")) if snap_dir.is_dir() else []
        print(f"{'Name':<40} {'Location':<90} {'Size':<8} Created")
        for p in rows:
            st = p.stat()
            created = datetime.datetime.fromtimestamp(st.st_mtime, datetime.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            print(f"{p.name:<40} {'file://' + str(p):<90} {st.st_size:<8} {created}")
        return 0
    if sub in ("delete", "rm"):
        if not rest:
            raise Fatal("no snapshots given for removal")
        for name in rest:
            p = snap_dir / name
            if not p.exists():
                raise Fatal(f"snapshot {name} not found")
            p.unlink()
            info(f"Removing snapshot {name}")
        return 0
    if sub == "prune":
        keep = 5
        snaps = sorted(snap_dir.glob(f"{opts['name']}-*"), key=lambda p: p.stat().st_mtime)
        for p in snaps[:-keep] if len(snaps) > keep else []:
            p.unlink()
        return 0
    raise UsageError(f"No help topic for '{sub}'")


def _post_snapshot(base: str, ca: bytes, password: str, opts: dict[str, Any]) -> bytes:
    req = urllib.request.Request(
        f"{base}/db/snapshot",
        method="POST",
        data=json.dumps({"name": opts["name"], "dir": opts.get("dir") or ""}).encode(),
        headers={"Content-Type": "application/json"},
    )
    req.add_header("Authorization", "Basic " + base64.b64encode(f"server:{password}".encode()).decode())
    with urllib.request.urlopen(req, context=verified_context(ca), timeout=30) as resp:
        body: bytes = resp.read()
        return body


# ------------------------------------------------------------------------------ ctr/crictl/kubectl


def runtime_socket(data: Path) -> str:
    return str(sysroot("/run/k3s/containerd") / "containerd.sock")


def run_ctr(args: list[str]) -> int:
    ctr = find_binary("ctr", sysroot("/var/lib/rancher/k3s"))
    if ctr is None:
        raise Fatal('exec: "ctr": executable file not found in $PATH')
    env = dict(os.environ)
    env.setdefault("CONTAINERD_ADDRESS", runtime_socket(sysroot("/var/lib/rancher/k3s")))
    env.setdefault("CONTAINERD_NAMESPACE", "k8s.io")
    os.execve(ctr, [ctr, *args], env)


def run_crictl(args: list[str]) -> int:
    """Real crictl if present; otherwise the subset we need (pull/images/rmi) through ctr against the
    CRI namespace with the registry hosts dir, which is what the CRI plugin would use."""
    data = sysroot("/var/lib/rancher/k3s")
    real = shutil.which("crictl")
    if real:
        env = dict(os.environ)
        env.setdefault("CONTAINER_RUNTIME_ENDPOINT", "unix://" + runtime_socket(data))
        os.execve(real, [real, *args], env)
    ctr = find_binary("ctr", data)
    if ctr is None:
        raise Fatal('exec: "ctr": executable file not found in $PATH')
    base = [ctr, "--address", runtime_socket(data), "--namespace", "k8s.io"]
    if not args:
        print("usage: crictl pull IMAGE | images | rmi IMAGE", file=sys.stderr)
        return 1
    cmd, rest = args[0], args[1:]
    if cmd == "pull" and rest:
        image = rest[-1]
        ref = (
            image
            if "/" in image.split(":")[0] and "." in image.split("/")[0]
            else (f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}")
        )
        if ":" not in ref.rsplit("/", 1)[-1] and "@" not in ref:
            ref += ":latest"
        cmdline = [
            *base,
            "images",
            "pull",
            "--hosts-dir",
            str(data / "agent" / "etc" / "containerd" / "certs.d"),
        ]
        regs = load_registries(sysroot("/etc/rancher/k3s/registries.yaml"))
        # Credentials belong to the host actually contacted: the mirror endpoint, else the registry itself.
        registry = ref.split("/")[0]
        mirror = (regs.get("mirrors") or {}).get(registry) or (regs.get("mirrors") or {}).get("*") or {}
        hosts = [urllib.parse.urlsplit(e).netloc for e in mirror.get("endpoint", [])] + [registry]
        configs = regs.get("configs") or {}
        auth = next(
            ((configs.get(h) or {}).get("auth") for h in hosts if (configs.get(h) or {}).get("auth")), {}
        )
        if auth.get("username"):
            cmdline += ["--user", f"{auth['username']}:{auth.get('password', '')}"]
        out = subprocess.run([*cmdline, ref], capture_output=True, text=True)
        if out.returncode != 0:
            msg = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "unknown error"
            print(
                f'E0000 pull image "{image}" failed: rpc error: code = Unknown desc = {msg}', file=sys.stderr
            )
            return 1
        digest = subprocess.run(
            [*base, "images", "ls", f"name=={ref}"], capture_output=True, text=True
        ).stdout
        m = re.search(r"sha256:[0-9a-f]{64}", digest)
        print(f"Image is up to date for {m.group(0) if m else ref}")
        return 0
    if cmd in ("images", "img"):
        os.execv(ctr, [*base, "images", "ls"])
    if cmd == "rmi" and rest:
        os.execv(ctr, [*base, "images", "rm", *rest])
    print(f"crictl stand-in: unsupported command {cmd!r}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------- main


def print_usage_error(cmd: str, message: str) -> None:
    sys.stdout.write(f"Incorrect Usage: {message}\n\nNAME:\n   {USAGE.get(cmd, 'k3s ' + cmd)}\n\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    prog = Path(sys.argv[0]).name
    # Multi-call binary: symlinks named kubectl/ctr/crictl run that tool, as real k3s does.
    if prog in ("kubectl", "ctr", "crictl"):
        args = [prog, *args]
    try:
        return _main(args)
    except Fatal as e:
        logline("fatal", str(e))
        return 1
    except UsageError as e:
        logline("fatal", str(e))
        return 1


def _main(args: list[str]) -> int:
    apis.GIT_VERSION = VERSION
    # Global flags (before the command).
    gfs = FlagSet(
        [
            Flag("debug", "bool", env=("K3S_DEBUG",)),
            Flag("data-dir", aliases=("d",)),
            Flag("version", "bool", aliases=("v",)),
            Flag("help", "bool", aliases=("h",)),
        ]
    )
    try:
        gopts, rest = gfs.parse(args)
    except UsageError as e:
        sys.stdout.write(f"Incorrect Usage. {e}\n\n")
        raise
    if gopts["version"]:
        print(f"k3s version {VERSION} ({COMMIT})\ngo version go1.22.8")
        return 0
    if not rest or gopts["help"]:
        print(
            f"NAME:\n   k3s - Kubernetes, but small and simple\n\nUSAGE:\n   k3s [global options] command "
            f"[command options] [arguments...]\n\nVERSION:\n   {VERSION} ({COMMIT})\n\nCOMMANDS:\n   server, "
            "agent, kubectl, crictl, ctr, etcd-snapshot, help"
        )
        return 0
    cmd, rest = rest[0], rest[1:]
    if cmd == "kubectl":
        env_kc = os.environ.get("KUBECONFIG") or str(sysroot("/etc/rancher/k3s/k3s.yaml"))
        return kubectl_mod.main(rest, default_kubeconfig=env_kc)
    if cmd == "ctr":
        return run_ctr(rest)
    if cmd == "crictl":
        return run_crictl(rest)
    if cmd in ("server", "agent"):
        fs = server_flags() if cmd == "server" else agent_flags()
        try:
            opts, _positional = parse_with_config(cmd, fs, rest)
        except UsageError as e:
            print_usage_error(cmd, str(e))
            raise
        if gopts["data-dir"] and not opts.get("data-dir"):
            opts["data-dir"] = gopts["data-dir"]
        if cmd == "server":
            if opts["server"] and opts["cluster-init"]:
                warn("--cluster-init is ignored when joining an existing cluster with --server")
            srv = Server(opts)
            try:
                return srv.run()
            finally:
                if srv.runtime is not None:
                    srv.runtime.stop()
        return run_agent(opts)
    if cmd == "etcd-snapshot":
        sub = "save"
        if rest and not rest[0].startswith("-"):
            sub, rest = rest[0], rest[1:]
        try:
            opts, positional = snapshot_flags().parse(rest)
        except UsageError as e:
            print_usage_error("etcd-snapshot", str(e))
            raise
        if sub not in ("save", "ls", "list", "delete", "rm", "prune"):
            sys.stdout.write(f"No help topic for '{sub}'\n")
            return 3
        return run_etcd_snapshot(sub, opts, positional)
    if cmd in ("help", "h"):
        return _main([])
    sys.stdout.write(f"No help topic for '{cmd}'\n")
    return 3


if __name__ == "__main__":
    sys.exit(main())
