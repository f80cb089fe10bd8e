"""Stand-in for `kubeadm` v1.31.2: `init`, `join` (worker), `reset`, `token create|list|delete`,
`certs check-expiration`, `version`, with kubeadm's config API (kubeadm.k8s.io/v1beta3 and v1beta4, strict),
pre-flight checks, the files it writes (/etc/kubernetes/{pki,manifests,*.conf}, /var/lib/kubelet/config.yaml,
kubeadm-flags.env), bootstrap tokens, the signed cluster-info discovery and the CA public-key pin check.
The control plane itself is started by the kubelet stand-in from the static Pod manifests written here.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

try:
    from . import k3s as k3slib
    from . import pki
    from .cliflags import Flag, UsageError, parse_pflags
    from .kubeclient import KubeClient, KubeError
    from .kubelet import RuntimeProbe, swap_on
except ImportError:  # zipapp / script
    import k3s as k3slib  # type: ignore[no-redef]
    import pki  # type: ignore[no-redef]
    from cliflags import Flag, UsageError, parse_pflags  # type: ignore[no-redef]
    from kubeclient import KubeClient, KubeError  # type: ignore[no-redef]
    from kubelet import RuntimeProbe, swap_on  # type: ignore[no-redef]

VERSION = "v1.31.2"
TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
# The stand-in's stacked "etcd" is the first control plane's store; a joined control plane's kubelet starts
# its kube-apiserver forwarding to that API (see README "HA model"). kubeadm records it on etcd.yaml.
DATASTORE_ANNOTATION = "standin.sealer.io/datastore"
ETCD_MEMBERS_CM = "kubeadm-standin-etcd"
STACK_HINT = "To see the stack trace of this error execute with --v=5 or higher"


class Failed(Exception):
    """An error kubeadm prints (then the stack-trace hint) before exiting 1."""


def sysroot(path: str) -> Path:
    return Path(os.environ.get("K8S_STANDIN_ROOT", "") + path)


def say(line: str) -> None:
    print(line, flush=True)


# ------------------------------------------------------------------------------------------ config

INIT_KNOWN = {
    "apiVersion",
    "kind",
    "bootstrapTokens",
    "nodeRegistration",
    "localAPIEndpoint",
    "certificateKey",
    "skipPhases",
    "patches",
    "timeouts",
    "dryRun",
}
CLUSTER_KNOWN = {
    "apiVersion",
    "kind",
    "etcd",
    "networking",
    "kubernetesVersion",
    "controlPlaneEndpoint",
    "apiServer",
    "controllerManager",
    "scheduler",
    "dns",
    "proxy",
    "certificatesDir",
    "imageRepository",
    "featureGates",
    "clusterName",
    "encryptionAlgorithm",
    "certificateValidityPeriod",
    "caCertificateValidityPeriod",
}
JOIN_KNOWN = {
    "apiVersion",
    "kind",
    "caCertPath",
    "discovery",
    "nodeRegistration",
    "controlPlane",
    "skipPhases",
    "patches",
    "timeouts",
    "dryRun",
}
NODEREG_KNOWN = {
    "name",
    "criSocket",
    "taints",
    "kubeletExtraArgs",
    "ignorePreflightErrors",
    "imagePullPolicy",
    "imagePullSerial",
}


def _strict(doc: dict[str, Any], known: set[str], kind: str, version: str) -> None:
    for key in doc:
        if key not in known:
            raise Failed(
                f'error unmarshaling configuration schema.GroupVersionKind{{Group:"kubeadm.k8s.io", '
                f'Version:"{version}", Kind:"{kind}"}}: strict decoding error: unknown field "{key}"'
            )
    nr = doc.get("nodeRegistration")
    if isinstance(nr, dict):
        for key in nr:
            if key not in NODEREG_KNOWN:
                raise Failed(
                    f'error unmarshaling configuration schema.GroupVersionKind{{Group:"kubeadm.k8s.io", '
                    f'Version:"{version}", Kind:"{kind}"}}: strict decoding error: unknown field '
                    f'"nodeRegistration.{key}"'
                )


def extra_args(value: Any) -> dict[str, str]:
    """v1beta3 maps, v1beta4 lists of {name, value}."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, list):
        return {str(i["name"]): str(i.get("value", "")) for i in value if isinstance(i, dict) and "name" in i}
    return {}


def load_config(path: str, want: str) -> dict[str, dict[str, Any]]:
    """The documents of a kubeadm config file by kind; `want` is "init" or "join"."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise Failed(f'unable to read config from "{path}" : open {path}: {(e.strerror or str(e)).lower()}')
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise Failed(f"error converting YAML to JSON: yaml: {str(e).splitlines()[0]}")
    out: dict[str, dict[str, Any]] = {}
    for d in docs:
        if not isinstance(d, dict):
            raise Failed("error unmarshaling JSON: json: cannot unmarshal array into Go value of type map")
        api, kind = str(d.get("apiVersion", "")), str(d.get("kind", ""))
        if api in ("kubeadm.k8s.io/v1beta1", "kubeadm.k8s.io/v1beta2"):
            raise Failed(
                f'your configuration file uses an old API spec: "{api}". Please use kubeadm v1.22 instead '
                "and run 'kubeadm config migrate --old-config old.yaml --new-config new.yaml', which will "
                "write the new, similar spec using a newer API version."
            )
        if api in ("kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4"):
            version = api.split("/")[1]
            known = {
                "InitConfiguration": INIT_KNOWN,
                "ClusterConfiguration": CLUSTER_KNOWN,
                "JoinConfiguration": JOIN_KNOWN,
            }.get(kind)
            if known is None:
                raise Failed(
                    f'no kind "{kind}" is registered for version "{api}" in scheme '
                    '"k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/scheme/scheme.go:31"'
                )
            _strict(d, known, kind, version)
            out[kind] = d
        elif (api, kind) in (
            ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"),
            ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration"),
        ):
            out[kind] = d
        else:
            say(
                f"W1126 00:00:00.000000 {os.getpid()} configset.go:78] [config] WARNING: Ignored "
                "YAML document with "
                f"GroupVersionKind {api}, Kind={kind}"
            )
    if want == "init" and "JoinConfiguration" in out and len(out) == 1:
        raise Failed("no InitConfiguration or ClusterConfiguration kind was found in the YAML file")
    if want == "join" and "JoinConfiguration" not in out:
        raise Failed("no JoinConfiguration kind was found in the YAML file")
    return out


def parse_version(v: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", v)
    if not m:
        raise Failed(f'unable to parse version "{v}": could not parse "{v}" as version')
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def check_version(v: str) -> str:
    major, minor, patch = parse_version(v)
    own = parse_version(VERSION)
    lowest = (own[0], own[1] - 1)  # kubeadm supports its own minor and the one before
    if (major, minor) < lowest:
        raise Failed(
            f"this version of kubeadm only supports deploying clusters with the control plane version >= "
            f"{lowest[0]}.{lowest[1]}.0. Current version: v{major}.{minor}.{patch}"
        )
    if (major, minor) > own[:2]:
        raise Failed(
            f'the requested Kubernetes version "v{major}.{minor}.{patch}" is higher than the kubeadm '
            f'version "{VERSION}"; upgrade kubeadm first'
        )
    return f"v{major}.{minor}.{patch}"


# ------------------------------------------------------------------------------------ preflight


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def preflight(checks: list[tuple[str, str | None]], ignore: set[str], mode: str) -> None:
    say("[preflight] Running pre-flight checks")
    errors = []
    for name, problem in checks:
        if problem is None:
            continue
        if "all" in ignore or name.lower() in ignore:
            say(f"\t[WARNING {name}]: {problem}")
        else:
            errors.append(f"\t[ERROR {name}]: {problem}")
    if errors:
        raise Failed(
            "error execution phase preflight: [preflight] Some fatal errors occurred:\n"
            + "\n".join(errors)
            + "\n[preflight] If you know what you are doing, you can make a check non-fatal with "
            "`--ignore-preflight-errors=...`"
        )
    if mode == "init":
        say("[preflight] Pulling images required for setting up a Kubernetes cluster")


def common_checks(
    cri: str, ports: list[int], files: list[Path], dirs: list[Path]
) -> list[tuple[str, str | None]]:
    checks: list[tuple[str, str | None]] = []
    checks.append(("IsPrivilegedUser", None if os.geteuid() == 0 else "user is not running as root"))
    try:
        fwd = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    except OSError:
        fwd = "1"
    checks.append(
        (
            "FileContent--proc-sys-net-ipv4-ip_forward",
            None if fwd == "1" else "/proc/sys/net/ipv4/ip_forward contents are not set to 1",
        )
    )
    checks.append(
        ("Swap", "running with swap on is not supported. Please disable swap" if swap_on() else None)
    )
    probe = RuntimeProbe(cri)
    ts = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cri_problem = (
        f'container runtime is not running: output: time="{ts}" level=fatal msg="validate service '
        f'connection: validate CRI v1 runtime API for endpoint \\"{cri}\\": rpc error: code = '
        'Unavailable desc = connection error", error: exit status 1'
    )
    checks.append(("CRI", None if probe.version() else cri_problem))
    for p in ports:
        checks.append((f"Port-{p}", None if port_free(p) else f"Port {p} is in use"))
    for f in files:
        name = "FileAvailable-" + str(f).replace(os.environ.get("K8S_STANDIN_ROOT", ""), "").replace("/", "-")
        checks.append((name, f"{f} already exists" if f.exists() else None))
    for d in dirs:
        name = "DirAvailable-" + str(d).replace(os.environ.get("K8S_STANDIN_ROOT", ""), "").replace("/", "-")
        checks.append((name, f"{d} is not empty" if d.is_dir() and any(d.iterdir()) else None))
    return checks


# ------------------------------------------------------------------------------------------- paths


class Paths:
    def __init__(self) -> None:
        self.etc = sysroot("/etc/kubernetes")
        self.pki = self.etc / "pki"
        self.manifests = self.etc / "manifests"
        self.kubelet_dir = sysroot("/var/lib/kubelet")
        self.etcd = sysroot("/var/lib/etcd")

    def conf(self, name: str) -> Path:
        return self.etc / f"{name}.conf"


def ca_pin(ca_pem: bytes) -> str:
    """--discovery-token-ca-cert-hash: sha256 of the CA's DER SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(ca_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def new_token() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return (
        "".join(secrets.choice(alphabet) for _ in range(6))
        + "."
        + "".join(secrets.choice(alphabet) for _ in range(16))
    )


def token_secret(token: str, ttl: float, groups: str, description: str) -> dict[str, Any]:
    m = TOKEN_RE.match(token)
    assert m
    data = {
        "token-id": m.group(1),
        "token-secret": m.group(2),
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": groups,
    }
    if description:
        data["description"] = description
    if ttl > 0:
        data["expiration"] = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=ttl)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": f"bootstrap-token-{m.group(1)}", "namespace": "kube-system"},
        "stringData": data,
    }


def systemctl(*args: str) -> str | None:
    if (
        not shutil.which("systemctl")
        or not Path("/run/systemd/system").is_dir()
        or os.environ.get("K8S_STANDIN_ROOT")
    ):
        return "systemctl is not available"
    r = subprocess.run(["systemctl", *args], capture_output=True, text=True)
    return None if r.returncode == 0 else r.stderr.strip()


def write_kubelet_files(
    paths: Paths, kubelet_cfg: dict[str, Any], cri: str, node: str, extra: dict[str, str]
) -> None:
    cfg = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(paths.pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "systemd",
        "clusterDNS": ["10.96.0.10"],
        "clusterDomain": "cluster.local",
        "containerRuntimeEndpoint": "",
        "rotateCertificates": True,
        "staticPodPath": str(paths.manifests),
        "nodeStatusUpdateFrequency": "10s",
    }
    cfg.update({k: v for k, v in kubelet_cfg.items() if k not in ("apiVersion", "kind")})
    paths.kubelet_dir.mkdir(parents=True, exist_ok=True)
    (paths.kubelet_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    flags = [
        f"--container-runtime-endpoint={cri}",
        "--pod-infra-container-image=registry.k8s.io/pause:3.10",
        f"--hostname-override={node}",
    ]
    flags += [f"--{k}={v}" for k, v in extra.items()]
    (paths.kubelet_dir / "kubeadm-flags.env").write_text(f'KUBELET_KUBEADM_ARGS="{" ".join(flags)}"\n')
    say(
        "[kubelet-start] Writing kubelet environment file with flags to file "
        f'"{paths.kubelet_dir}/kubeadm-flags.env"'
    )
    say(f'[kubelet-start] Writing kubelet configuration to file "{paths.kubelet_dir}/config.yaml"')
    say("[kubelet-start] Starting the kubelet")
    problem = systemctl("restart", "kubelet")
    if problem:
        say(f"[kubelet-start] WARNING: unable to start the kubelet service: [{problem}]")
        say("[kubelet-start] Please ensure kubelet is reloaded and running manually.")


# -------------------------------------------------------------------------------------------- init


def init_flags() -> list[Flag]:
    return [
        Flag("config"),
        Flag("apiserver-advertise-address"),
        Flag("apiserver-bind-port", "int", default=6443),
        Flag("apiserver-cert-extra-sans", "slice"),
        Flag("control-plane-endpoint"),
        Flag("cri-socket"),
        Flag("ignore-preflight-errors", "slice"),
        Flag("kubernetes-version", default=VERSION),
        Flag("node-name"),
        Flag("pod-network-cidr"),
        Flag("service-cidr", default="10.96.0.0/12"),
        Flag("token"),
        Flag("token-ttl", default="24h0m0s"),
        Flag("upload-certs", "bool"),
        Flag("image-repository", default="registry.k8s.io"),
        Flag("skip-phases", "slice"),
        Flag("skip-token-print", "bool"),
        Flag("dry-run", "bool"),
        Flag("v", "int", aliases=("v",)),
        Flag("certificate-key"),
        Flag("feature-gates"),
        Flag("service-dns-domain", default="cluster.local"),
        Flag("cert-dir"),
        Flag("patches"),
    ]


def _pod(name: str, command: list[str], image: str, annotations: dict[str, str] | None = None) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "kube-system",
                "labels": {"component": name, "tier": "control-plane"},
                "annotations": annotations or {},
            },
            "spec": {
                "containers": [{"name": name, "image": image, "command": command}],
                "hostNetwork": True,
                "priorityClassName": "system-node-critical",
            },
            "status": {},
        },
        sort_keys=False,
    )


def write_manifests(
    paths: Paths,
    *,
    name: str,
    ip: str,
    port: int,
    version: str,
    repo: str,
    service_cidr: str,
    pod_cidr: str,
    api_extra: dict[str, str],
    kcm_extra: dict[str, str],
    initial_cluster: str,
    cluster_state: str,
    datastore: str = "",
) -> None:
    p = paths.pki
    paths.manifests.mkdir(parents=True, exist_ok=True)
    etcd = [
        "etcd",
        f"--advertise-client-urls=https://{ip}:2379",
        f"--cert-file={p}/etcd/server.crt",
        "--client-cert-auth=true",
        f"--data-dir={paths.etcd}",
        f"--initial-advertise-peer-urls=https://{ip}:2380",
        f"--initial-cluster={initial_cluster}",
        f"--initial-cluster-state={cluster_state}",
        f"--key-file={p}/etcd/server.key",
        f"--listen-client-urls=https://127.0.0.1:2379,https://{ip}:2379",
        f"--name={name}",
        f"--peer-cert-file={p}/etcd/peer.crt",
        f"--peer-key-file={p}/etcd/peer.key",
        f"--trusted-ca-file={p}/etcd/ca.crt",
    ]
    say(f'[etcd] Creating static Pod manifest for local etcd in "{paths.manifests}"')
    (paths.manifests / "etcd.yaml").write_text(
        _pod("etcd", etcd, f"{repo}/etcd:3.5.15-0", {DATASTORE_ANNOTATION: datastore} if datastore else None)
    )
    api = {
        "advertise-address": ip,
        "allow-privileged": "true",
        "authorization-mode": "Node,RBAC",
        "client-ca-file": f"{p}/ca.crt",
        "enable-admission-plugins": "NodeRestriction",
        "enable-bootstrap-token-auth": "true",
        "etcd-cafile": f"{p}/etcd/ca.crt",
        "etcd-certfile": f"{p}/apiserver-etcd-client.crt",
        "etcd-keyfile": f"{p}/apiserver-etcd-client.key",
        "etcd-servers": "https://127.0.0.1:2379",
        "kubelet-client-certificate": f"{p}/apiserver-kubelet-client.crt",
        "kubelet-client-key": f"{p}/apiserver-kubelet-client.key",
        "kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname",
        "proxy-client-cert-file": f"{p}/front-proxy-client.crt",
        "proxy-client-key-file": f"{p}/front-proxy-client.key",
        "requestheader-allowed-names": "front-proxy-client",
        "requestheader-client-ca-file": f"{p}/front-proxy-ca.crt",
        "requestheader-extra-headers-prefix": "X-Remote-Extra-",
        "requestheader-group-headers": "X-Remote-Group",
        "requestheader-username-headers": "X-Remote-User",
        "secure-port": str(port),
        "service-account-issuer": "https://kubernetes.default.svc.cluster.local",
        "service-account-key-file": f"{p}/sa.pub",
        "service-account-signing-key-file": f"{p}/sa.key",
        "service-cluster-ip-range": service_cidr,
        "tls-cert-file": f"{p}/apiserver.crt",
        "tls-private-key-file": f"{p}/apiserver.key",
        **api_extra,
    }
    say(f'[control-plane] Using manifest folder "{paths.manifests}"')
    say('[control-plane] Creating static Pod manifest for "kube-apiserver"')
    (paths.manifests / "kube-apiserver.yaml").write_text(
        _pod(
            "kube-apiserver",
            ["kube-apiserver", *[f"--{k}={v}" for k, v in sorted(api.items())]],
            f"{repo}/kube-apiserver:{version}",
        )
    )
    kcm = {
        "authentication-kubeconfig": str(paths.conf("controller-manager")),
        "authorization-kubeconfig": str(paths.conf("controller-manager")),
        "bind-address": "127.0.0.1",
        "client-ca-file": f"{p}/ca.crt",
        "cluster-name": "kubernetes",
        "cluster-signing-cert-file": f"{p}/ca.crt",
        "cluster-signing-key-file": f"{p}/ca.key",
        "controllers": "*,bootstrapsigner,tokencleaner",
        "kubeconfig": str(paths.conf("controller-manager")),
        "leader-elect": "true",
        "requestheader-client-ca-file": f"{p}/front-proxy-ca.crt",
        "root-ca-file": f"{p}/ca.crt",
        "service-account-private-key-file": f"{p}/sa.key",
        "use-service-account-credentials": "true",
        **kcm_extra,
    }
    if pod_cidr:
        kcm.update({"allocate-node-cidrs": "true", "cluster-cidr": pod_cidr})
    say('[control-plane] Creating static Pod manifest for "kube-controller-manager"')
    (paths.manifests / "kube-controller-manager.yaml").write_text(
        _pod(
            "kube-controller-manager",
            ["kube-controller-manager", *[f"--{k}={v}" for k, v in sorted(kcm.items())]],
            f"{repo}/kube-controller-manager:{version}",
        )
    )
    say('[control-plane] Creating static Pod manifest for "kube-scheduler"')
    sched = [
        "kube-scheduler",
        f"--authentication-kubeconfig={paths.conf('scheduler')}",
        f"--authorization-kubeconfig={paths.conf('scheduler')}",
        "--bind-address=127.0.0.1",
        f"--kubeconfig={paths.conf('scheduler')}",
        "--leader-elect=true",
    ]
    (paths.manifests / "kube-scheduler.yaml").write_text(
        _pod("kube-scheduler", sched, f"{repo}/kube-scheduler:{version}")
    )


def write_certs(paths: Paths, name: str, ip: str, sans: list[str]) -> None:
    p = paths.pki
    p.mkdir(parents=True, exist_ok=True)
    for ca, cn in (("ca", "kubernetes"), ("front-proxy-ca", "front-proxy-ca"), ("etcd/ca", "etcd-ca")):
        if (p / f"{ca}.crt").exists():
            say(f"[certs] Using existing {ca.replace('/', '-')} certificate authority")
            continue
        say(f'[certs] Generating "{ca.replace("etcd/", "etcd/")}" certificate and key')
        c, k = pki.make_ca(cn)
        pki.write_private(p / f"{ca}.crt", c, 0o644)
        pki.write_private(p / f"{ca}.key", k)

    def leaf(
        path: str,
        ca: str,
        cn: str,
        orgs: list[str] | None = None,
        server_sans: list[str] | None = None,
        client: bool = False,
    ) -> None:
        say(f'[certs] Generating "{path}" certificate and key')
        c, k = pki.issue(
            (p / f"{ca}.crt").read_bytes(),
            (p / f"{ca}.key").read_bytes(),
            cn,
            organizations=orgs,
            sans=server_sans,
            server=server_sans is not None,
            client=client,
        )
        pki.write_private(p / f"{path}.crt", c, 0o644)
        pki.write_private(p / f"{path}.key", k)

    api_sans = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        name,
        "10.96.0.1",
        ip,
        "127.0.0.1",
        "localhost",
        *sans,
    ]
    leaf("apiserver", "ca", "kube-apiserver", server_sans=api_sans)
    leaf(
        "apiserver-kubelet-client",
        "ca",
        "kube-apiserver-kubelet-client",
        ["kubeadm:cluster-admins"],
        client=True,
    )
    leaf("front-proxy-client", "front-proxy-ca", "front-proxy-client", client=True)
    leaf("etcd/server", "etcd/ca", name, server_sans=[name, "localhost", ip, "127.0.0.1"], client=True)
    leaf("etcd/peer", "etcd/ca", name, server_sans=[name, "localhost", ip, "127.0.0.1"], client=True)
    leaf("etcd/healthcheck-client", "etcd/ca", "kube-etcd-healthcheck-client", client=True)
    leaf("apiserver-etcd-client", "etcd/ca", "kube-apiserver-etcd-client", client=True)
    if not (p / "sa.key").exists():
        say('[certs] Generating "sa" key and public key')
        _, k = pki.make_ca("sa")
        pki.write_private(p / "sa.key", k)
        pub = (
            pki.load_key(k)
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        pki.write_private(p / "sa.pub", pub, 0o644)


def write_kubeconfigs(paths: Paths, endpoint: str, name: str, kubelet: bool = True) -> None:
    ca = ((paths.pki / "ca.crt").read_bytes(), (paths.pki / "ca.key").read_bytes())
    say(f'[kubeconfig] Using kubeconfig folder "{paths.etc}"')
    for conf, cn, orgs in (
        ("admin", "kubernetes-admin", ["kubeadm:cluster-admins"]),
        ("super-admin", "kubernetes-super-admin", ["system:masters"]),
        ("kubelet", f"system:node:{name}", ["system:nodes"]),
        ("controller-manager", "system:kube-controller-manager", None),
        ("scheduler", "system:kube-scheduler", None),
    ):
        if conf == "kubelet" and not kubelet:
            continue  # a joining control plane's kubelet gets its identity by TLS bootstrap
        say(f'[kubeconfig] Writing "{conf}.conf" kubeconfig file')
        c, k = pki.issue(*ca, cn, organizations=orgs, client=True)
        text = pki.kubeconfig(endpoint, ca[0], cert_pem_bytes=c, key_pem_bytes=k, name="kubernetes")
        pki.write_private(paths.conf(conf), text.encode())


def wait_healthy(url: str, ca: bytes, timeout: float) -> float:
    ctx = ssl.create_default_context(cadata=ca.decode())
    ctx.check_hostname = False
    start = time.time()
    while time.time() - start < timeout:
        try:
            with urllib.request.urlopen(f"{url}/healthz", context=ctx, timeout=3) as r:
                if r.status == 200:
                    return time.time() - start
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise Failed(
        "error execution phase wait-control-plane: could not initialize a Kubernetes cluster\n\n"
        "Unfortunately, an error has occurred:\n\tcontext deadline exceeded\n\nThis error is likely caused "
        "by:\n\t- The kubelet is not running\n\t- The kubelet is unhealthy due to a misconfiguration of the "
        "node in some way (required cgroups disabled)\n\nIf you are on a systemd-powered system, you can try "
        "to troubleshoot the error with the following commands:\n\t- 'systemctl status kubelet'\n\t- "
        "'journalctl -xeu kubelet'"
    )


def join_command(endpoint_hostport: str, token: str, ca: bytes) -> str:
    return (
        f"kubeadm join {endpoint_hostport} --token {token} \\\n\t--discovery-token-ca-cert-hash {ca_pin(ca)}"
    )


def run_init(opts: dict[str, Any], raw: list[str]) -> int:
    paths = Paths()
    docs: dict[str, dict[str, Any]] = {}
    if opts["config"]:
        mixed = [
            a.lstrip("-").split("=")[0]
            for a in raw
            if a.startswith("--")
            and not a.startswith(
                (
                    "--config",
                    "--ignore-preflight-errors",
                    "--upload-certs",
                    "--skip-phases",
                    "--v",
                    "--dry-run",
                    "--skip-token-print",
                    "--certificate-key",
                )
            )
        ]
        if mixed:
            raise Failed(f"can not mix '--config' with arguments {mixed}")
        docs = load_config(opts["config"], "init")
    ic, cc = docs.get("InitConfiguration", {}), docs.get("ClusterConfiguration", {})
    kc = docs.get("KubeletConfiguration", {})
    nr = ic.get("nodeRegistration") or {}
    lae = ic.get("localAPIEndpoint") or {}
    version = check_version(str(cc.get("kubernetesVersion") or opts["kubernetes-version"]))
    say(f"[init] Using Kubernetes version: {version}")
    name = str(nr.get("name") or opts["node-name"] or socket.gethostname()).lower()
    ip = str(lae.get("advertiseAddress") or opts["apiserver-advertise-address"] or k3slib.node_ip({}, None))
    port = int(lae.get("bindPort") or opts["apiserver-bind-port"])
    cri = str(nr.get("criSocket") or opts["cri-socket"] or "unix:///var/run/containerd/containerd.sock")
    cpe = str(cc.get("controlPlaneEndpoint") or opts["control-plane-endpoint"] or "")
    endpoint_hp = cpe if cpe and ":" in cpe else (f"{cpe}:{port}" if cpe else f"{ip}:{port}")
    tokens = [str(t.get("token")) for t in ic.get("bootstrapTokens") or [] if t.get("token")]
    if opts["token"]:
        tokens = [opts["token"]]
    for t in tokens:
        if not TOKEN_RE.match(t):
            raise Failed(
                f'the bootstrap token "{t}" was not of the form "^([a-z0-9]{{6}})\\.([a-z0-9]{{16}})$"'
            )
    ignore = {i.lower() for i in [*opts["ignore-preflight-errors"], *(nr.get("ignorePreflightErrors") or [])]}
    taints = nr.get("taints")
    if taints is None:
        taints = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    checks = common_checks(
        cri,
        [port, 10259, 10257, 10250, 2379, 2380],
        [
            paths.manifests / f"{c}.yaml"
            for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
        ],
        [paths.etcd],
    )
    if kc.get("failSwapOn") is False:
        checks = [(n, p) for n, p in checks if n != "Swap"]
    preflight(checks, ignore, "init")
    write_certs(
        paths,
        name,
        ip,
        [
            *opts["apiserver-cert-extra-sans"],
            *((cc.get("apiServer") or {}).get("certSANs") or []),
            *([cpe.split(":")[0]] if cpe else []),
        ],
    )
    write_kubeconfigs(paths, f"https://{endpoint_hp}", name)
    api_extra = extra_args((cc.get("apiServer") or {}).get("extraArgs"))
    kcm_extra = extra_args((cc.get("controllerManager") or {}).get("extraArgs"))
    pod_cidr = str((cc.get("networking") or {}).get("podSubnet") or opts["pod-network-cidr"] or "")
    svc_cidr = str((cc.get("networking") or {}).get("serviceSubnet") or opts["service-cidr"])
    repo = str(cc.get("imageRepository") or opts["image-repository"])
    write_manifests(
        paths,
        name=name,
        ip=ip,
        port=port,
        version=version,
        repo=repo,
        service_cidr=svc_cidr,
        pod_cidr=pod_cidr,
        api_extra=api_extra,
        kcm_extra=kcm_extra,
        initial_cluster=f"{name}=https://{ip}:2380",
        cluster_state="new",
    )
    write_kubelet_files(paths, kc, cri, name, extra_args(nr.get("kubeletExtraArgs")))
    say(
        f"[wait-control-plane] Waiting for the kubelet to boot up the control plane as static Pods from "
        f'directory "{paths.manifests}"'
    )
    timeout = float(os.environ.get("K8S_STANDIN_WAIT", "240"))
    took = wait_healthy(f"https://{ip}:{port}", (paths.pki / "ca.crt").read_bytes(), timeout)
    say(f"[api-check] The API server is healthy after {took:.6f}s")
    admin = KubeClient.from_kubeconfig(paths.conf("super-admin"))
    # super-admin.conf talks to the endpoint; in local tests that is the advertise address
    cluster_cfg = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "ClusterConfiguration",
        "kubernetesVersion": version,
        "controlPlaneEndpoint": cpe,
        "imageRepository": repo,
        "networking": {"serviceSubnet": svc_cidr, "podSubnet": pod_cidr, "dnsDomain": "cluster.local"},
        "apiServer": {"certSANs": (cc.get("apiServer") or {}).get("certSANs") or []},
        "clusterName": "kubernetes",
        "certificatesDir": str(paths.pki),
        "etcd": {"local": {"dataDir": str(paths.etcd)}},
    }
    say(
        '[upload-config] Storing the configuration used in ConfigMap "kubeadm-config" in the "kube-system" '
        "Namespace"
    )
    _upsert_cm(admin, "kube-system", "kubeadm-config", {"ClusterConfiguration": yaml.safe_dump(cluster_cfg)})
    _upsert_cm(
        admin,
        "kube-system",
        ETCD_MEMBERS_CM,
        {"members": f"{name}=https://{ip}:2380", "datastore": f"{ip}:{port}"},
    )
    say(
        '[kubelet] Creating a ConfigMap "kubelet-config" in namespace kube-system with the '
        "configuration for the "
        "kubelets in the cluster"
    )
    _upsert_cm(
        admin, "kube-system", "kubelet-config", {"kubelet": (paths.kubelet_dir / "config.yaml").read_text()}
    )
    if opts["upload-certs"]:
        # the flag wins over InitConfiguration.certificateKey; with neither, kubeadm makes a key
        key = upload_certs(
            admin, paths, opts["certificate-key"] or str(ic.get("certificateKey") or "") or None
        )
        say(f"[upload-certs] Using certificate key:\n{key}")
    say(
        f"[mark-control-plane] Marking the node {name} as control-plane by adding the labels: "
        "[node-role.kubernetes.io/control-plane node.kubernetes.io/exclude-from-external-load-balancers]"
    )
    say(
        f"[mark-control-plane] Marking the node {name} as control-plane by adding the taints "
        f"{[t['key'] + ':' + t['effect'] for t in taints]}"
    )
    mark_control_plane(admin, name, taints, timeout)
    token = tokens[0] if tokens else new_token()
    say(f"[bootstrap-token] Using token: {token}")
    ttl = k3slib.duration(opts["token-ttl"])
    admin.create(
        "/api/v1/namespaces/kube-system/secrets",
        token_secret(token, ttl, "system:bootstrappers:kubeadm:default-node-token", ""),
    )
    say('[bootstrap-token] Creating the "cluster-info" ConfigMap in the "kube-public" namespace')
    ca = (paths.pki / "ca.crt").read_bytes()
    info = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "",
                    "cluster": {
                        "certificate-authority-data": base64.b64encode(ca).decode(),
                        "server": f"https://{endpoint_hp}",
                    },
                }
            ],
            "contexts": None,
            "current-context": "",
            "preferences": {},
            "users": None,
        }
    )
    _upsert_cm(admin, "kube-public", "cluster-info", {"kubeconfig": info})
    for kind, path, obj_name in (
        ("Deployment", "/apis/apps/v1/namespaces/kube-system/deployments", "coredns"),
        ("DaemonSet", "/apis/apps/v1/namespaces/kube-system/daemonsets", "kube-proxy"),
    ):
        try:
            admin.create(
                path,
                {
                    "apiVersion": "apps/v1",
                    "kind": kind,
                    "metadata": {"name": obj_name, "namespace": "kube-system"},
                    "spec": {"selector": {"matchLabels": {"k8s-app": obj_name}}},
                },
            )
        except KubeError as e:
            if e.code != 409:
                raise
        say(f"[addons] Applied essential addon: {'CoreDNS' if obj_name == 'coredns' else obj_name}")
    say(
        "\nYour Kubernetes control-plane has initialized successfully!\n\nTo start using your "
        "cluster, you need to run "
        "the following as a regular user:\n\n  mkdir -p $HOME/.kube\n  sudo cp -i /etc/kubernetes/admin.conf "
        "$HOME/.kube/config\n  sudo chown $(id -u):$(id -g) $HOME/.kube/config\n"
    )
    if not opts["skip-token-print"]:
        say(
            "Then you can join any number of worker nodes by running the following on each as root:\n\n"
            + join_command(endpoint_hp, token, ca)
        )
    return 0


def run_init_phase(phase: list[str], opts: dict[str, Any]) -> int:
    """`kubeadm init phase upload-certs`: re-upload the shared certificates under a (new) key, e.g. for a
    control-plane join after the 2 h kubeadm-certs Secret expired. Other phases are not implemented."""
    if phase[:1] != ["upload-certs"]:
        raise Failed(f"the kubeadm stand-in implements only `kubeadm init phase upload-certs`, not {phase!r}")
    if not opts["upload-certs"]:
        say("[upload-certs] Skipping phase. Please see --upload-certs")
        return 0
    paths = Paths()
    admin = admin_client(opts)
    from_config = ""
    if opts["config"]:
        from_config = str(
            load_config(opts["config"], "init").get("InitConfiguration", {}).get("certificateKey") or ""
        )
    key = upload_certs(admin, paths, opts["certificate-key"] or from_config or None)
    say(f"[upload-certs] Using certificate key:\n{key}")
    return 0


def _upsert_cm(admin: KubeClient, ns: str, name: str, data: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": data,
    }
    try:
        admin.create(f"/api/v1/namespaces/{ns}/configmaps", body)
    except KubeError as e:
        if e.code != 409:
            raise
        admin.patch(f"/api/v1/namespaces/{ns}/configmaps/{name}", {"data": data}, "merge")


def mark_control_plane(admin: KubeClient, name: str, taints: list[dict[str, str]], timeout: float) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            node = admin.get(f"/api/v1/nodes/{name}")
            break
        except (KubeError, OSError):
            if time.time() > deadline:
                raise Failed(
                    f"error execution phase mark-control-plane: timed out waiting for the condition: "
                    f'nodes "{name}" not found'
                )
            time.sleep(0.5)
    current = (node.get("spec") or {}).get("taints") or []
    merged = current + [t for t in taints if not any(c.get("key") == t.get("key") for c in current)]
    admin.patch(
        f"/api/v1/nodes/{name}",
        {
            "metadata": {
                "labels": {
                    "node-role.kubernetes.io/control-plane": "",
                    "node.kubernetes.io/exclude-from-external-load-balancers": "",
                }
            },
            "spec": {"taints": merged},
        },
    )


def upload_certs(admin: KubeClient, paths: Paths, key_hex: str | None) -> str:
    """kubeadm's kubeadm-certs Secret: the shared CA material, AES-GCM encrypted with the certificate key."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = bytes.fromhex(key_hex) if key_hex else secrets.token_bytes(32)
    if len(key) != 32:
        raise Failed("error execution phase upload-certs: the certificate key must be 64 hex characters")
    aes = AESGCM(key)
    data = {}
    for rel in (
        "ca.crt",
        "ca.key",
        "sa.key",
        "sa.pub",
        "front-proxy-ca.crt",
        "front-proxy-ca.key",
        "etcd/ca.crt",
        "etcd/ca.key",
    ):
        nonce = secrets.token_bytes(12)
        data[rel.replace("/", "-")] = base64.b64encode(
            base64.b64encode(nonce + aes.encrypt(nonce, (paths.pki / rel).read_bytes(), None))
        ).decode()
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "kubeadm-certs", "namespace": "kube-system"},
        "type": "Opaque",
        "data": data,
    }
    try:
        admin.create("/api/v1/namespaces/kube-system/secrets", body)
    except KubeError as e:
        if e.code != 409:
            raise
        admin.put("/api/v1/namespaces/kube-system/secrets/kubeadm-certs", body)
    say('[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace')
    return key.hex()


# -------------------------------------------------------------------------------------------- join


def join_flags() -> list[Flag]:
    return [
        Flag("config"),
        Flag("token"),
        Flag("discovery-token"),
        Flag("tls-bootstrap-token"),
        Flag("discovery-token-ca-cert-hash", "slice"),
        Flag("discovery-token-unsafe-skip-ca-verification", "bool"),
        Flag("discovery-file"),
        Flag("control-plane", "bool"),
        Flag("certificate-key"),
        Flag("node-name"),
        Flag("cri-socket"),
        Flag("ignore-preflight-errors", "slice"),
        Flag("apiserver-advertise-address"),
        Flag("apiserver-bind-port", "int", default=6443),
        Flag("skip-phases", "slice"),
        Flag("dry-run", "bool"),
        Flag("v", "int", aliases=("v",)),
        Flag("patches"),
    ]


def verify_jws(jws: str, payload: str, token_id: str, secret: str) -> bool:
    try:
        header_b64, _, sig = jws.split(".")
    except ValueError:
        return False
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    if header.get("kid") != token_id or header.get("alg") != "HS256":
        return False
    signing_input = (
        f"{header_b64}.{base64.urlsafe_b64encode(payload.encode()).rstrip(b'=').decode()}".encode()
    )
    want = base64.urlsafe_b64encode(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()).rstrip(
        b"="
    )
    return hmac.compare_digest(want.decode(), sig)


def discover(endpoint: str, token: str, pins: list[str], skip_ca: bool, timeout: float) -> tuple[bytes, str]:
    """Token discovery: fetch the signed cluster-info without trusting TLS, verify the JWS with the token,
    then pin the CA by its public key hash; returns (CA PEM, server URL)."""
    m = TOKEN_RE.match(token)
    assert m
    tid, secret = m.group(1), m.group(2)
    url = f"https://{endpoint}/api/v1/namespaces/kube-public/configmaps/cluster-info"
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    deadline = time.time() + timeout
    say(f'[discovery] Trying to connect to API Server "{endpoint}"')
    while True:
        problem = ""
        try:
            with urllib.request.urlopen(url, context=insecure, timeout=5) as r:
                cm = json.loads(r.read())
            data = cm.get("data") or {}
            payload = data.get("kubeconfig", "")
            jws = data.get(f"jws-kubeconfig-{tid}")
            if not jws:
                problem = (
                    f'token id "{tid}" is invalid for this cluster or it has expired. Use "kubeadm token '
                    'create" on the control-plane node to create a new valid token'
                )
            elif not verify_jws(jws, payload, tid, secret):
                raise Failed(
                    "error execution phase preflight: couldn't validate the identity of the API Server: "
                    "failed to verify JWS signature of received cluster info object, can't trust this API "
                    "Server"
                )
            else:
                break
        except urllib.error.HTTPError as e:
            problem = f"{url}: {e.code} {e.reason}"
        except (urllib.error.URLError, OSError) as e:
            problem = f'Get "{url}": {getattr(e, "reason", e)}'
        if time.time() > deadline:
            raise Failed(
                f"error execution phase preflight: couldn't validate the identity of the API Server: "
                f"{problem}"
            )
        say(f"[discovery] Failed to request cluster-info, will try again: {problem}")
        time.sleep(1)
    kc = yaml.safe_load(payload)
    cluster = kc["clusters"][0]["cluster"]
    ca = base64.b64decode(cluster["certificate-authority-data"])
    if not skip_ca:
        got = ca_pin(ca)
        if got not in pins:
            raise Failed(
                f"error execution phase preflight: couldn't validate the identity of the API Server: cluster "
                f'CA found in cluster-info ConfigMap is invalid: none of the public keys "{got}" are '
                "pinned"
            )
    say(
        "[discovery] Cluster info signature and contents are valid and TLS certificate validates "
        "against pinned "
        'roots, will use API Server "' + endpoint + '"'
    )
    return ca, str(cluster["server"])


def run_join(opts: dict[str, Any], positional: list[str]) -> int:
    paths = Paths()
    docs = load_config(opts["config"], "join") if opts["config"] else {}
    jc = docs.get("JoinConfiguration", {})
    bt = (jc.get("discovery") or {}).get("bootstrapToken") or {}
    nr = jc.get("nodeRegistration") or {}
    endpoint = positional[0] if positional else str(bt.get("apiServerEndpoint") or "")
    token = opts["discovery-token"] or opts["token"] or str(bt.get("token") or "")
    tls_token = (
        opts["tls-bootstrap-token"]
        or opts["token"]
        or str((jc.get("discovery") or {}).get("tlsBootstrapToken") or token)
    )
    pins = list(opts["discovery-token-ca-cert-hash"]) + list(bt.get("caCertHashes") or [])
    skip_ca = bool(opts["discovery-token-unsafe-skip-ca-verification"] or bt.get("unsafeSkipCAVerification"))
    if not endpoint and not opts["discovery-file"]:
        raise Failed('discovery: Invalid value: "": bootstrapToken or file must be set')
    if not token:
        raise Failed('discovery.bootstrapToken.token: Invalid value: "": the bootstrap token is invalid')
    if not TOKEN_RE.match(token):
        raise Failed(
            f'discovery.bootstrapToken.token: Invalid value: "{token}": the bootstrap token is invalid'
        )
    if not pins and not skip_ca:
        raise Failed(
            'discovery.bootstrapToken: Invalid value: "": using token-based discovery without '
            "caCertHashes can be unsafe. Set unsafeSkipCAVerification as true in your kubeadm config file "
            "or pass --discovery-token-unsafe-skip-ca-verification flag to continue"
        )
    for pin in pins:
        kind, _, value = pin.partition(":")
        if not value:
            raise Failed(f'invalid hash "{pin}", expected a "type:value" pair')
        if kind != "sha256":
            raise Failed(f'unsupported hash type "{kind}"')
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise Failed(f'hash "{pin}" is not a valid sha256 hash')
    name = str(nr.get("name") or opts["node-name"] or socket.gethostname()).lower()
    control_plane = bool(opts["control-plane"] or jc.get("controlPlane"))
    cp_cfg = jc.get("controlPlane") or {}
    cert_key = str(opts["certificate-key"] or cp_cfg.get("certificateKey") or "")
    cri = str(nr.get("criSocket") or opts["cri-socket"] or "unix:///var/run/containerd/containerd.sock")
    ignore = {i.lower() for i in [*opts["ignore-preflight-errors"], *(nr.get("ignorePreflightErrors") or [])]}
    lae = cp_cfg.get("localAPIEndpoint") or {}
    cp_port = int(lae.get("bindPort") or opts["apiserver-bind-port"])
    if control_plane:
        checks = common_checks(
            cri,
            [cp_port, 10259, 10257, 10250, 2379, 2380],
            [
                paths.conf("kubelet"),
                paths.conf("bootstrap-kubelet"),
                paths.pki / "ca.crt",
                *[
                    paths.manifests / f"{c}.yaml"
                    for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
                ],
            ],
            [paths.etcd],
        )
    else:
        checks = common_checks(
            cri, [10250], [paths.conf("kubelet"), paths.conf("bootstrap-kubelet"), paths.pki / "ca.crt"], []
        )
    preflight(checks, ignore, "join")
    timeout = float(os.environ.get("K8S_STANDIN_WAIT", "300"))
    ca, server = discover(endpoint, token, pins, skip_ca, timeout)
    boot = KubeClient(server, ca, token=tls_token)
    try:
        kubelet_cfg = (
            yaml.safe_load(
                boot.get("/api/v1/namespaces/kube-system/configmaps/kubelet-config")["data"]["kubelet"]
            )
            or {}
        )
    except KubeError as e:
        raise Failed(f"error execution phase kubelet-start: cannot get the kubelet configuration: {e}")
    say('[preflight] Reading configuration from the "kubeadm-config" ConfigMap in namespace "kube-system"...')
    # kubeadm (since v1.25) refuses, before the TLS bootstrap, a name a Ready Node already has
    try:
        existing = boot.get(f"/api/v1/nodes/{name}")
    except KubeError as e:
        if e.code != 404:
            raise Failed(f'error execution phase kubelet-start: cannot get Node "{name}": {e}')
        existing = {}
    for cond in (existing.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            raise Failed(
                f'error execution phase kubelet-start: a Node with name "{name}" and status "Ready" already '
                "exists in the cluster. You must delete the existing Node or change the name of this new "
                "joining Node"
            )
    joined_cp: dict[str, Any] | None = None
    if control_plane:
        joined_cp = prepare_control_plane(boot, paths, cert_key, name, opts, lae, cp_port)
    paths.pki.mkdir(parents=True, exist_ok=True)
    pki.write_private(paths.pki / "ca.crt", ca, 0o644)
    pki.write_private(
        paths.conf("bootstrap-kubelet"),
        pki.kubeconfig(server, ca, token=tls_token, name="kubernetes").encode(),
    )
    kubelet_cfg["staticPodPath"] = str(paths.manifests)
    kubelet_cfg.setdefault("authentication", {}).setdefault("x509", {})["clientCAFile"] = str(
        paths.pki / "ca.crt"
    )
    write_kubelet_files(paths, kubelet_cfg, cri, name, extra_args(nr.get("kubeletExtraArgs")))
    say(
        "[kubelet-check] Waiting for a healthy kubelet at http://127.0.0.1:10248/healthz. This can "
        "take up to 4m0s"
    )
    say("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap")
    deadline = time.time() + timeout
    while not paths.conf("kubelet").exists():
        if time.time() > deadline:
            raise Failed("error execution phase kubelet-start: timed out waiting for the condition")
        time.sleep(0.5)
    if joined_cp is not None:
        finish_control_plane(paths, name, joined_cp, timeout)
        say(
            "\nThis node has joined the cluster and a new control plane instance was created:\n\n"
            "* Certificate signing request was sent to apiserver and approval was received.\n"
            "* The Kubelet was informed of the new secure connection details.\n"
            "* Control plane label and taint were applied to the new node.\n"
            "* The Kubernetes control plane instances scaled up.\n"
            "* A new etcd member was added to the local/stacked etcd cluster."
        )
        return 0
    say(
        "\nThis node has joined the cluster:\n* Certificate signing request was sent to apiserver "
        "and a response was "
        "received.\n* The Kubelet was informed of the new secure connection details.\n\nRun "
        "'kubectl get nodes' on "
        "the control-plane to see this node join the cluster."
    )
    return 0


CP_CONDITIONS = (
    "\n\nPlease ensure that:\n* The cluster has a stable controlPlaneEndpoint address.\n"
    "* The certificates that must be shared among control plane instances are provided.\n"
)


def prepare_control_plane(
    boot: KubeClient,
    paths: Paths,
    cert_key: str,
    name: str,
    opts: dict[str, Any],
    lae: dict[str, Any],
    port: int,
) -> dict[str, Any]:
    """join --control-plane: check the cluster can take another control plane, download the shared
    certificates (kubeadm-certs, decrypted with the certificate key), write pki, kubeconfigs, manifests."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        cluster = yaml.safe_load(
            boot.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")["data"][
                "ClusterConfiguration"
            ]
        )
    except KubeError as e:
        raise Failed(f"error execution phase preflight: unable to fetch the kubeadm-config ConfigMap: {e}")
    cpe = str(cluster.get("controlPlaneEndpoint") or "")
    if not cpe:
        raise Failed(
            "error execution phase preflight: \nOne or more conditions for hosting a new control plane "
            "instance is not satisfied.\n\nunable to add a new control plane instance to a cluster that "
            "doesn't have a stable controlPlaneEndpoint address" + CP_CONDITIONS
        )
    if not cert_key and not (paths.pki / "ca.key").exists():
        raise Failed(
            "error execution phase preflight: \nOne or more conditions for hosting a new control plane "
            f"instance is not satisfied.\n\n[failure loading certificate for CA: couldn't load the "
            f"certificate file {paths.pki}/ca.crt: open {paths.pki}/ca.crt: no such file or directory]"
            + CP_CONDITIONS
        )
    if cert_key:
        say(
            '[download-certs] Downloading the certificates in Secret "kubeadm-certs" in the '
            '"kube-system" Namespace'
        )
        try:
            key = bytes.fromhex(cert_key)
            if len(key) != 32:
                raise ValueError("invalid key size")
        except ValueError as e:
            raise Failed(
                f"error execution phase control-plane-prepare/download-certs: error downloading certs: "
                f"error decoding certificate key: {e}"
            )
        try:
            secret = boot.get("/api/v1/namespaces/kube-system/secrets/kubeadm-certs")
        except KubeError as e:
            raise Failed(
                "error execution phase control-plane-prepare/download-certs: error downloading certs: "
                f"error downloading the secret: {e}"
            )
        aes = AESGCM(key)
        for field, b64 in (secret.get("data") or {}).items():
            blob = base64.b64decode(base64.b64decode(b64))
            try:
                content = aes.decrypt(blob[:12], blob[12:], None)
            except InvalidTag:
                raise Failed(
                    "error execution phase control-plane-prepare/download-certs: error downloading certs: "
                    "error decrypting data: cipher: message authentication failed"
                )
            rel = field.replace("etcd-", "etcd/", 1) if field.startswith("etcd-") else field
            pki.write_private(paths.pki / rel, content, 0o600 if rel.endswith(".key") else 0o644)
    ip = str(lae.get("advertiseAddress") or opts["apiserver-advertise-address"] or k3slib.node_ip({}, None))
    try:
        etcd_cm = boot.get(f"/api/v1/namespaces/kube-system/configmaps/{ETCD_MEMBERS_CM}")["data"]
    except KubeError as e:
        raise Failed(
            f"error execution phase control-plane-join/etcd: error creating local etcd static pod "
            f"manifest file: {e}"
        )
    members = [m for m in etcd_cm["members"].split(",") if m and not m.startswith(f"{name}=")]
    initial = ",".join([*members, f"{name}=https://{ip}:2380"])
    write_certs(
        paths, name, ip, [*((cluster.get("apiServer") or {}).get("certSANs") or []), cpe.split(":")[0]]
    )
    write_kubeconfigs(paths, f"https://{cpe}", name, kubelet=False)
    version = str(cluster.get("kubernetesVersion") or VERSION)
    write_manifests(
        paths,
        name=name,
        ip=ip,
        port=port,
        version=version,
        repo=str(cluster.get("imageRepository") or "registry.k8s.io"),
        service_cidr=str((cluster.get("networking") or {}).get("serviceSubnet") or "10.96.0.0/12"),
        pod_cidr=str((cluster.get("networking") or {}).get("podSubnet") or ""),
        api_extra={},
        kcm_extra={},
        initial_cluster=initial,
        cluster_state="existing",
        datastore=etcd_cm["datastore"],
    )
    say("[etcd] Announced new etcd member joining to the existing etcd cluster")
    return {"ip": ip, "port": port, "members": initial}


def add_etcd_member(admin: KubeClient, name: str, entry: str) -> None:
    """etcd's MemberAdd for the stand-in's record: this member (`name=peerURL`) added to what the
    record holds now (read-modify-write with its resourceVersion), so a member removed meanwhile
    (`etcdctl member remove`, another reset) stays removed."""
    path = f"/api/v1/namespaces/kube-system/configmaps/{ETCD_MEMBERS_CM}"
    for _ in range(5):
        cm = admin.get(path)
        members = [m for m in str((cm.get("data") or {}).get("members") or "").split(",") if m]
        kept = [m for m in members if not m.startswith(f"{name}=")]
        cm.setdefault("data", {})["members"] = ",".join([*kept, entry])
        try:
            admin.put(path, cm)
            return
        except KubeError as e:
            if e.code != 409:
                raise
    raise Failed(
        "error execution phase control-plane-join/etcd: error creating local etcd static pod manifest "
        "file: etcdserver: request timed out"
    )


def finish_control_plane(paths: Paths, name: str, joined: dict[str, Any], timeout: float) -> None:
    took = wait_healthy(
        f"https://{joined['ip']}:{joined['port']}", (paths.pki / "ca.crt").read_bytes(), timeout
    )
    say(f"[control-plane-join] The API server is healthy after {took:.6f}s")
    admin = KubeClient.from_kubeconfig(paths.conf("super-admin"))
    add_etcd_member(admin, name, str(joined["members"]).split(",")[-1])
    say(
        f"[mark-control-plane] Marking the node {name} as control-plane by adding the labels: "
        "[node-role.kubernetes.io/control-plane node.kubernetes.io/exclude-from-external-load-balancers]"
    )
    mark_control_plane(
        admin, name, [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}], timeout
    )


# ------------------------------------------------------------------------------------ other verbs


def remove_etcd_member(paths: Paths) -> None:
    """kubeadm reset's remove-etcd-member phase: on a control plane with stacked etcd (an etcd.yaml
    manifest) its member leaves the cluster before anything stops, through admin.conf; a failure is a
    warning and the reset goes on, as in kubeadm. The stand-in's members are the ConfigMap
    kube-system/kubeadm-standin-etcd (there is no etcd)."""
    manifest = paths.manifests / "etcd.yaml"
    if not manifest.exists():
        say("[reset] No etcd config found. Assuming external etcd")
        say("[reset] Please, manually reset etcd to prevent further issues")
        return
    try:
        pod = yaml.safe_load(manifest.read_text())
        command = pod["spec"]["containers"][0]["command"]
        name = next(a.split("=", 1)[1] for a in command if a.startswith("--name="))
        admin = KubeClient.from_kubeconfig(paths.conf("admin"))
        path = f"/api/v1/namespaces/kube-system/configmaps/{ETCD_MEMBERS_CM}"
        members = str(admin.get(path)["data"]["members"]).split(",")
        kept = [m for m in members if m and not m.startswith(f"{name}=")]
        if len(kept) != len([m for m in members if m]):
            admin.patch(path, {"data": {"members": ",".join(kept)}}, "merge")
    except (KubeError, OSError, KeyError, IndexError, StopIteration, TypeError, yaml.YAMLError) as e:
        sys.stderr.write(
            f"W1126 00:00:00.000000 {os.getpid()} removeetcdmember.go:106] [reset] Failed to remove etcd "
            f"member: {e}, please manually remove this etcd member using etcdctl\n"
        )


def run_reset(opts: dict[str, Any]) -> int:
    if os.geteuid() != 0:
        raise Failed(
            "error execution phase preflight: [preflight] Some fatal errors occurred:\n\t[ERROR "
            "IsPrivilegedUser]: user is not running as root"
        )
    paths = Paths()
    if not opts["force"]:
        sys.stdout.write(
            "W1126 reset.go] [reset] WARNING: Changes made to this host by 'kubeadm init' or 'kubeadm "
            "join' will be reverted.\n[reset] Are you sure you want to proceed? [y/N]: "
        )
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise Failed("error execution phase preflight: aborted reset operation")
    say("[preflight] Running pre-flight checks")
    remove_etcd_member(paths)
    say("[reset] Stopping the kubelet service")
    systemctl("stop", "kubelet")
    state = paths.kubelet_dir / "standin-pods"
    # remove the control-plane "containers" before their data, so nothing writes into deleted dirs
    pids = []
    for f in state.glob("*.json") if state.is_dir() else []:
        try:
            pid = int(json.loads(f.read_text())["pid"])
            os.kill(pid, 15)
            pids.append(pid)
        except (ProcessLookupError, ValueError, KeyError):
            pass
    deadline = time.time() + 15
    while time.time() < deadline and any(_running(p) for p in pids):
        time.sleep(0.1)
    systemctl("stop", "standin-kube-apiserver.service")
    say('[reset] Unmounting mounted directories in "/var/lib/kubelet"')
    say(
        "[reset] Deleting contents of directories: ["
        + " ".join(str(p) for p in (paths.manifests, paths.kubelet_dir, paths.pki))
        + "]"
    )
    for d in (paths.manifests, paths.pki):
        shutil.rmtree(d, ignore_errors=True)
    for d in (paths.kubelet_dir, paths.etcd):
        if d.is_dir():
            for child in d.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    for conf in ("admin", "super-admin", "kubelet", "bootstrap-kubelet", "controller-manager", "scheduler"):
        paths.conf(conf).unlink(missing_ok=True)
    say(
        "\nThe reset process does not clean CNI configuration. To do so, you must remove "
        "/etc/cni/net.d\n\nThe reset "
        "process does not reset or clean up iptables rules or IPVS tables."
    )
    return 0


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent has not reaped it yet


def admin_client(opts: dict[str, Any]) -> KubeClient:
    path = Path(opts.get("kubeconfig") or Paths().conf("admin"))
    if not path.exists():
        raise Failed(f"failed to load admin kubeconfig: open {path}: no such file or directory")
    return KubeClient.from_kubeconfig(path)


def run_token(sub: str, opts: dict[str, Any], positional: list[str]) -> int:
    admin = admin_client(opts)
    if sub == "create":
        token = positional[0] if positional else new_token()
        if not TOKEN_RE.match(token):
            raise Failed(
                f'the bootstrap token "{token}" was not of the form "^([a-z0-9]{{6}})\\.([a-z0-9]{{16}})$"'
            )
        ttl = k3slib.duration(opts["ttl"]) if opts["ttl"] not in ("0", "0s") else 0.0
        admin.create(
            "/api/v1/namespaces/kube-system/secrets",
            token_secret(token, ttl, "system:bootstrappers:kubeadm:default-node-token", opts["description"]),
        )
        if opts["print-join-command"]:
            info = admin.get("/api/v1/namespaces/kube-public/configmaps/cluster-info")["data"]["kubeconfig"]
            cluster = yaml.safe_load(info)["clusters"][0]["cluster"]
            ca = base64.b64decode(cluster["certificate-authority-data"])
            print(
                join_command(cluster["server"].removeprefix("https://"), token, ca).replace(" \\\n\t", " ")
                + " "
            )
        else:
            print(token)
        return 0
    if sub == "list":
        items = admin.get("/api/v1/namespaces/kube-system/secrets")["items"]
        print(f"{'TOKEN':<24}{'TTL':<8}{'EXPIRES':<22}{'USAGES':<40}{'DESCRIPTION':<60}EXTRA GROUPS")
        for s in items:
            if s.get("type") != "bootstrap.kubernetes.io/token":
                continue
            d = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
            usages = ",".join(
                u.removeprefix("usage-bootstrap-")
                for u in sorted(d)
                if d[u] == "true" and u.startswith("usage-bootstrap-")
            )
            exp = d.get("expiration", "<forever>")
            ttl = (
                "<forever>"
                if exp == "<forever>"
                else f"{max(0, int((k3slib_parse(exp) - time.time()) // 3600))}h"
            )
            print(
                f"{d['token-id'] + '.' + d['token-secret']:<24}{ttl:<8}{exp:<22}{usages:<40}"
                f"{d.get('description', '<none>'):<60}{d.get('auth-extra-groups', '')}"
            )
        return 0
    if sub == "delete":
        if not positional:
            raise Failed("missing subcommand; 'token delete' is missing token of form \"[a-z0-9]{6}\"")
        for t in positional:
            tid = t.split(".")[0]
            try:
                admin.delete(f"/api/v1/namespaces/kube-system/secrets/bootstrap-token-{tid}")
            except KubeError:
                raise Failed(f'failed to delete bootstrap token "{tid}"')
            print(f'bootstrap token "{tid}" deleted')
        return 0
    raise UsageError(f'unknown command "{sub}" for "kubeadm token"')


def _cluster_config(admin: KubeClient) -> dict[str, Any]:
    try:
        cm = admin.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
    except KubeError as e:
        raise Failed(f"[upgrade/config] FATAL: failed to get config map: {e}")
    return dict(yaml.safe_load(cm["data"]["ClusterConfiguration"]))


def _retag_manifests(paths: Paths, version: str) -> list[str]:
    """Point the control-plane manifests at the new release; the kubelet restarts what changed."""
    changed = []
    for comp in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        f = paths.manifests / f"{comp}.yaml"
        if not f.exists():
            continue
        doc = yaml.safe_load(f.read_text())
        c = doc["spec"]["containers"][0]
        c["image"] = re.sub(r":v[0-9.]+$", f":{version}", c["image"])
        doc.setdefault("metadata", {}).setdefault("annotations", {})["kubeadm.kubernetes.io/upgraded-to"] = (
            version
        )
        f.write_text(yaml.safe_dump(doc, sort_keys=False))
        changed.append(comp)
    return changed


def run_upgrade(sub: str, opts: dict[str, Any], positional: list[str]) -> int:
    paths = Paths()
    if sub == "node":
        if not paths.conf("kubelet").exists():
            raise Failed(
                f"couldn't read kubelet config: open {paths.conf('kubelet')}: no such file or directory"
            )
        if paths.manifests.joinpath("kube-apiserver.yaml").exists():
            admin = admin_client(opts)
            version = str(_cluster_config(admin)["kubernetesVersion"])
            say(
                f'[upgrade] Upgrading your Static Pod-hosted control plane instance to version "{version}"...'
            )
            _retag_manifests(paths, version)
        say("[upgrade] The configuration for this node was successfully updated!")
        say("[upgrade] Now you should go ahead and upgrade the kubelet package using your package manager.")
        return 0
    admin = admin_client(opts)
    cluster = _cluster_config(admin)
    current = str(cluster.get("kubernetesVersion"))
    cur = parse_version(current)
    own = parse_version(VERSION)
    if sub == "plan":
        say("[upgrade/config] Reading configuration from the cluster...")
        say(
            f"[upgrade] Running cluster health checks\n[upgrade] Fetching available versions to upgrade to\n"
            f"[upgrade/versions] Cluster version: {current}\n[upgrade/versions] kubeadm version: {VERSION}"
        )
        if own <= cur:
            say("\nAwesome, you're up-to-date! Enjoy!")
            return 0
        say(
            "\nUpgrade to the latest stable version:\n\nCOMPONENT                 NODE      CURRENT    TARGET"
        )
        for comp in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"):
            say(f"{comp:<25} {'':<9} {current:<10} {VERSION}")
        say(
            f"\nYou can now apply the upgrade by executing the following command:\n\n\tkubeadm upgrade apply "
            f"{VERSION}\n"
        )
        return 0
    if not positional:
        raise Failed(
            "[upgrade/version] FATAL: missing one or more required arguments. Required arguments: [version]"
        )
    target_s = positional[0]
    target = parse_version(target_s)
    problems = []
    if target > own:
        problems.append(
            f'Specified version to upgrade to "{target_s}" is higher than the kubeadm version '
            f'"{VERSION}". Upgrade kubeadm first using the tool you used to install kubeadm'
        )
    if target[1] > cur[1] + 1:
        problems.append(
            f'Specified version to upgrade to "{target_s}" is too high; kubeadm can upgrade only '
            "1 minor version at a time"
        )
    if target < cur and not opts["force"]:
        problems.append(
            f'Specified version to upgrade to "{target_s}" is equal to or lower than the cluster '
            f'version "{current}". Downgrades are not supported yet'
        )
    if problems:
        raise Failed(
            "[upgrade/version] FATAL: the --version argument is invalid due to these fatal errors:\n\n"
            + "\n".join(f"\t- {p}" for p in problems)
            + "\n\nPlease fix the misalignments highlighted "
            "above and try upgrading again"
        )
    if not opts["yes"]:
        sys.stdout.write("[upgrade/confirm] Are you sure you want to proceed? [y/N]: ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise Failed("won't proceed; the user didn't answer (Y|y) in order to continue")
    say(f'[upgrade/version] You have chosen to change the cluster version to "{target_s}"')
    say(f"[upgrade/versions] Cluster version: {current}\n[upgrade/versions] kubeadm version: {VERSION}")
    changed = _retag_manifests(paths, target_s)
    for comp in changed:
        say(f'[upgrade/staticpods] Component "{comp}" upgraded successfully!')
    api = yaml.safe_load((paths.manifests / "kube-apiserver.yaml").read_text())
    flags = {
        a.split("=", 1)[0][2:]: a.split("=", 1)[1]
        for a in api["spec"]["containers"][0]["command"][1:]
        if "=" in a
    }
    took = wait_healthy(
        f"https://{flags['advertise-address']}:{flags['secure-port']}",
        (paths.pki / "ca.crt").read_bytes(),
        float(os.environ.get("K8S_STANDIN_WAIT", "240")),
    )
    say(f"[upgrade/staticpods] The API server is healthy after {took:.6f}s")
    admin = admin_client(opts)
    for _ in range(50):  # the restarted API server may still be settling
        try:
            cluster["kubernetesVersion"] = target_s
            _upsert_cm(
                admin, "kube-system", "kubeadm-config", {"ClusterConfiguration": yaml.safe_dump(cluster)}
            )
            break
        except (KubeError, OSError):
            time.sleep(0.2)
    say(
        '[upload-config] Storing the configuration used in ConfigMap "kubeadm-config" in the "kube-system" '
        "Namespace"
    )
    say(
        f'\n[upgrade/successful] SUCCESS! Your cluster was upgraded to "{target_s}". '
        "Enjoy!\n\n[upgrade/kubelet] "
        "Now that your control plane is upgraded, please proceed with upgrading your kubelets if you haven't "
        "already done so."
    )
    return 0


def k3slib_parse(ts: str) -> float:
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def run_certs_check() -> int:
    paths = Paths()
    print(
        f"{'CERTIFICATE':<26}{'EXPIRES':<26}{'RESIDUAL TIME':<16}{'CERTIFICATE AUTHORITY':<24}"
        "EXTERNALLY MANAGED"
    )
    for name, ca in (
        ("admin.conf", "ca"),
        ("apiserver", "ca"),
        ("apiserver-etcd-client", "etcd-ca"),
        ("apiserver-kubelet-client", "ca"),
        ("controller-manager.conf", "ca"),
        ("etcd-healthcheck-client", "etcd-ca"),
        ("etcd-peer", "etcd-ca"),
        ("etcd-server", "etcd-ca"),
        ("front-proxy-client", "front-proxy-ca"),
        ("scheduler.conf", "ca"),
        ("super-admin.conf", "ca"),
    ):
        if name.endswith(".conf"):
            f = paths.etc / name
            if not f.exists():
                continue
            user = yaml.safe_load(f.read_text())["users"][0]["user"]
            pem = base64.b64decode(user["client-certificate-data"])
        else:
            f = paths.pki / (name.replace("etcd-", "etcd/", 1) if name.startswith("etcd-") else name + "")
            f = f.with_suffix(".crt") if not f.name.endswith(".crt") else f
            if not f.exists():
                continue
            pem = f.read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
        expires = cert.not_valid_after.replace(tzinfo=datetime.UTC)
        left = expires - datetime.datetime.now(datetime.UTC)
        print(f"{name:<26}{expires:%b %d, %Y %H:%M UTC}{'':<4}{left.days}d{'':<12}{ca:<24}no")
    return 0


# -------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(args)
    except (Failed, UsageError, k3slib.Fatal) as e:
        sys.stderr.write(f"{e}\n{STACK_HINT}\n")
        return 1
    except (KubeError, OSError) as e:
        sys.stderr.write(f"error: {e}\n{STACK_HINT}\n")
        return 1


def _main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(
            "kubeadm: easily bootstrap a secure Kubernetes cluster\n\nUsage:\n  kubeadm "
            "[command]\n\nAvailable "
            "Commands:\n  certs, init, join, reset, token, version"
        )
        return 0
    cmd, rest = args[0], args[1:]
    if cmd == "version":
        opts, _ = parse_pflags([Flag("output", aliases=("o",))], rest)
        if opts["output"] == "short":
            print(VERSION)
        else:
            major, minor, _ = parse_version(VERSION)
            print(
                f'kubeadm version: &version.Info{{Major:"{major}", Minor:"{minor}", GitVersion:"{VERSION}", '
                'GitCommit:"5864a4677267e6adeae276ad85882a8714d69d9d", GitTreeState:"clean", '
                'BuildDate:"2024-10-22T20:33:34Z", GoVersion:"go1.22.8", Compiler:"gc", '
                'Platform:"linux/amd64"}'
            )
        return 0
    if cmd == "init":
        opts, pos = parse_pflags([*init_flags(), Flag("kubeconfig")], rest)
        if pos[:1] == ["phase"]:
            return run_init_phase(pos[1:], opts)
        if pos:
            raise UsageError(f'unknown command "{pos[0]}" for "kubeadm init"')
        return run_init(opts, rest)
    if cmd == "join":
        opts, pos = parse_pflags(join_flags(), rest)
        if len(pos) > 1:
            raise Failed(f"accepts at most 1 arg(s), received {len(pos)}")
        return run_join(opts, pos)
    if cmd == "reset":
        opts, _ = parse_pflags(
            [
                Flag("force", "bool", aliases=("f",)),
                Flag("v", "int"),
                Flag("cri-socket"),
                Flag("ignore-preflight-errors", "slice"),
                Flag("cert-dir"),
                Flag("skip-phases", "slice"),
                Flag("cleanup-tmp-dir", "bool"),
                Flag("kubeconfig"),
            ],
            rest,
        )
        return run_reset(opts)
    if cmd == "token":
        if not rest:
            raise UsageError('missing subcommand; "token" is not meant to be run on its own')
        opts, pos = parse_pflags(
            [
                Flag("ttl", default="24h0m0s"),
                Flag("print-join-command", "bool"),
                Flag("description"),
                Flag("kubeconfig"),
                Flag("v", "int"),
                Flag("usages", "slice"),
                Flag("groups", "slice"),
                Flag("config"),
            ],
            rest[1:],
        )
        return run_token(rest[0], opts, pos)
    if cmd == "upgrade":
        if not rest or rest[0] not in ("plan", "apply", "node"):
            raise UsageError(f'unknown command "{rest[0] if rest else ""}" for "kubeadm upgrade"')
        opts, pos = parse_pflags(
            [
                Flag("yes", "bool", aliases=("y",)),
                Flag("force", "bool"),
                Flag("certificate-renewal", "bool", default=True),
                Flag("config"),
                Flag("kubeconfig"),
                Flag("v", "int"),
                Flag("ignore-preflight-errors", "slice"),
                Flag("etcd-upgrade", "bool", default=True),
                Flag("dry-run", "bool"),
            ],
            rest[1:],
        )
        return run_upgrade(rest[0], opts, pos)
    if cmd == "certs":
        if rest[:1] == ["check-expiration"]:
            return run_certs_check()
        raise UsageError(f'unknown command "{rest[0] if rest else ""}" for "kubeadm certs"')
    raise UsageError(f'unknown command "{cmd}" for "kubeadm"')


if __name__ == "__main__":
    sys.exit(main())
