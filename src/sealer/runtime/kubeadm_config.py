"""kubeadm configuration from the Clusterfile and the image: InitConfiguration, ClusterConfiguration,
KubeletConfiguration, KubeProxyConfiguration for `kubeadm init`, JoinConfiguration for joins.

Precedence (lowest first): sealer's defaults, the image's etc/kubeadm.yml, the user's kubeadm
documents from the Clusterfile (merged field by field, never ignored: Go sealer #1528), then what
sealer must own (node name and address, the API endpoint, join credentials); certSANs are a union.
The document API version follows the image's kubeadm: v1beta4 from v1.31, v1beta3 before.
Pure: no I/O, so every rule is unit-tested.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from sealer.errors import ClusterfileError, ImageError, Problem
from sealer.model.cluster import Cluster, Host

KUBEADM_GROUP = "kubeadm.k8s.io"
KUBELET_API = "kubelet.config.k8s.io/v1beta1"
KUBE_PROXY_API = "kubeproxy.config.k8s.io/v1alpha1"
KUBEADM_KINDS = ("InitConfiguration", "ClusterConfiguration", "JoinConfiguration")
COMPONENT_KINDS = {"KubeletConfiguration": KUBELET_API, "KubeProxyConfiguration": KUBE_PROXY_API}
DEFAULT_POD_SUBNET = "100.64.0.0/10"  # Go sealer's defaults (kubeadm/common.go)
DEFAULT_SERVICE_SUBNET = "10.96.0.0/22"
CRI_SOCKET = "unix:///run/containerd/containerd.sock"
ENV_ENDPOINT = "APIServerDomain"
API_PORT = 6443
# extraArgs fields: maps in v1beta3, lists of {name, value} in v1beta4
EXTRA_ARGS_PATHS = {
    "ClusterConfiguration": (
        ("apiServer", "extraArgs"),
        ("controllerManager", "extraArgs"),
        ("scheduler", "extraArgs"),
        ("etcd", "local", "extraArgs"),
    ),
    "InitConfiguration": (("nodeRegistration", "kubeletExtraArgs"),),
    "JoinConfiguration": (("nodeRegistration", "kubeletExtraArgs"),),
}


def api_version_for(kubeadm_version: str) -> str:
    """kubeadm.k8s.io/v1beta4 for kubeadm >= v1.31, v1beta3 for v1.22 - v1.30."""
    m = re.match(r"v?(\d+)\.(\d+)", kubeadm_version.strip())
    if not m:
        raise ImageError(
            f"cannot tell the kubeadm version from {kubeadm_version!r}",
            "the image's bin/kubeadm should answer `kubeadm version -o short` with vX.Y.Z",
        )
    major, minor = int(m.group(1)), int(m.group(2))
    if (major, minor) < (1, 22):
        raise ImageError(
            f"kubeadm {kubeadm_version} is too old for sealer (needs v1.22 or later: kubeadm.k8s.io/v1beta3)",
            "build the ClusterImage with a kubeadm of v1.22 or later",
        )
    return f"{KUBEADM_GROUP}/v1beta4" if (major, minor) >= (1, 31) else f"{KUBEADM_GROUP}/v1beta3"


def endpoint_name(cluster: Cluster, default: str) -> str:
    """The stable API endpoint name: `APIServerDomain` from the cluster env, else the default."""
    return cluster.env.get(ENV_ENDPOINT, "").strip() or default


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `over` into `base` field by field; lists and scalars in `over` replace base's."""
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _get(doc: Mapping[str, Any], path: Sequence[str]) -> Any:
    cur: Any = doc
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def _set(doc: dict[str, Any], path: Sequence[str], value: Any) -> None:
    cur = doc
    for key in path[:-1]:
        cur = cur.setdefault(key, {})
    cur[path[-1]] = value


def args_to_map(value: Any, where: str) -> dict[str, str]:
    """extraArgs as a mapping, from either form (v1beta3 map or v1beta4 [{name, value}])."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, list):
        out: dict[str, str] = {}
        for item in value:
            if not isinstance(item, Mapping) or "name" not in item:
                raise ClusterfileError(
                    [Problem(f"{where}: each extra argument needs a name and a value", path=where)]
                )
            out[str(item["name"])] = str(item.get("value", ""))
        return out
    raise ClusterfileError([Problem(f"{where}: extra arguments must be a mapping or a list", path=where)])


def _normalise(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A kubeadm document with its extraArgs as maps, so documents of either version merge."""
    out = copy.deepcopy(dict(doc))
    for path in EXTRA_ARGS_PATHS.get(str(out.get("kind")), ()):
        value = _get(out, path)
        if value is not None:
            _set(out, path, args_to_map(value, f"{out.get('kind')}.{'.'.join(path)}"))
    return out


def _render_version(doc: dict[str, Any], api_version: str) -> dict[str, Any]:
    kind = str(doc.get("kind"))
    if kind in KUBEADM_KINDS:
        doc["apiVersion"] = api_version
        if api_version.endswith("v1beta4"):
            for path in EXTRA_ARGS_PATHS.get(kind, ()):
                value = _get(doc, path)
                if isinstance(value, dict):
                    _set(doc, path, [{"name": k, "value": v} for k, v in value.items()])
    return doc


@dataclass
class KubeadmInputs:
    """Everything the kubeadm documents depend on."""

    cluster: Cluster
    kubernetes_version: str  # v1.30.6 (kubeadm's own, from the image)
    kubeadm_version: str  # decides the document API version
    endpoint: str  # apiserver.cluster.local
    node_names: Mapping[str, str]
    image_repository: str | None = None  # the private registry (sea.hub:5000) when there is one
    sans: Sequence[str] = ()
    image_documents: Sequence[Mapping[str, Any]] = ()  # the image's etc/kubeadm.yml
    user_documents: Sequence[Mapping[str, Any]] = ()  # Clusterfile kubeadm documents
    cri_socket: str = CRI_SOCKET
    _merged: dict[str, dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def api_version(self) -> str:
        return api_version_for(self.kubeadm_version)

    def defaults(self) -> dict[str, dict[str, Any]]:
        cluster_cfg: dict[str, Any] = {
            "apiVersion": self.api_version,
            "kind": "ClusterConfiguration",
            "kubernetesVersion": self.kubernetes_version,
            "clusterName": "kubernetes",
            "networking": {
                "podSubnet": DEFAULT_POD_SUBNET,
                "serviceSubnet": DEFAULT_SERVICE_SUBNET,
                "dnsDomain": "cluster.local",
            },
            "etcd": {"local": {"dataDir": "/var/lib/etcd"}},  # stacked etcd: masters can be added
            "apiServer": {"extraArgs": {}},
            "controllerManager": {"extraArgs": {}},
            "scheduler": {"extraArgs": {}},
        }
        if self.image_repository:
            cluster_cfg["imageRepository"] = self.image_repository
        return {
            "InitConfiguration": {"apiVersion": self.api_version, "kind": "InitConfiguration"},
            "ClusterConfiguration": cluster_cfg,
            "KubeletConfiguration": {
                "apiVersion": KUBELET_API,
                "kind": "KubeletConfiguration",
                "cgroupDriver": "systemd",
                "failSwapOn": True,
            },
            "KubeProxyConfiguration": {
                "apiVersion": KUBE_PROXY_API,
                "kind": "KubeProxyConfiguration",
                "mode": "iptables",  # IPVS is not available everywhere (nor in this kernel)
            },
            "JoinConfiguration": {"apiVersion": self.api_version, "kind": "JoinConfiguration"},
        }

    def merged(self) -> dict[str, dict[str, Any]]:
        """kind -> document after defaults < image < user."""
        if self._merged is not None:
            return self._merged
        docs = self.defaults()
        user_sans: list[str] = []
        for source, layer in (("image", self.image_documents), ("Clusterfile", self.user_documents)):
            for raw in layer:
                kind = str(raw.get("kind"))
                if kind not in docs:
                    raise ClusterfileError(
                        [
                            Problem(
                                f"{source} kubeadm document of kind {kind!r}: not passed to kubeadm",
                                path="kind",
                                hint=f"kinds: {', '.join(docs)}",
                            )
                        ]
                    )
                doc = _normalise(raw)
                doc.pop("apiVersion", None)  # rendered in the version the image's kubeadm speaks
                user_sans += [str(s) for s in _get(doc, ("apiServer", "certSANs")) or []]
                deep_merge(docs[kind], doc)
        cc = docs["ClusterConfiguration"]
        # Sealer owns the endpoint unless the user named one; SANs are a union, never a replacement.
        cc.setdefault("controlPlaneEndpoint", f"{self.endpoint}:{API_PORT}")
        sans = [*self.sans, *user_sans]
        cc.setdefault("apiServer", {})["certSANs"] = list(dict.fromkeys(sans))
        self._merged = docs
        return docs

    def _node_registration(self, base: Mapping[str, Any], host: Host) -> dict[str, Any]:
        reg = copy.deepcopy(dict(base.get("nodeRegistration") or {}))
        reg["name"] = self.node_names.get(host.ip, host.ip)
        reg["criSocket"] = self.cri_socket
        kubelet_args = dict(reg.get("kubeletExtraArgs") or {})
        kubelet_args["node-ip"] = host.ip
        reg["kubeletExtraArgs"] = kubelet_args
        taints = [
            {"key": t.key, "value": t.value, "effect": t.effect}
            if t.value
            else {"key": t.key, "effect": t.effect}
            for t in host.taints
            if not t.remove and t.effect
        ]
        if host.is_master:
            taints.append({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"})
        if taints or "taints" not in reg:
            reg["taints"] = taints
        return reg

    def init_documents(self, master0: Host) -> list[dict[str, Any]]:
        docs = copy.deepcopy(self.merged())
        init = docs["InitConfiguration"]
        init["localAPIEndpoint"] = {"advertiseAddress": master0.ip, "bindPort": API_PORT}
        init["nodeRegistration"] = self._node_registration(init, master0)
        order = (
            "InitConfiguration",
            "ClusterConfiguration",
            "KubeletConfiguration",
            "KubeProxyConfiguration",
        )
        return [_render_version(docs[k], self.api_version) for k in order]

    def join_document(
        self,
        host: Host,
        *,
        token: str,
        ca_cert_hash: str,
        api_server: str,
        certificate_key: str | None = None,
    ) -> dict[str, Any]:
        """JoinConfiguration for a worker (api_server: the node-local balancer or the endpoint) or a
        further master (certificate_key set: it downloads the control-plane certificates)."""
        doc = copy.deepcopy(self.merged()["JoinConfiguration"])
        doc["nodeRegistration"] = self._node_registration(doc, host)
        doc["discovery"] = {
            "bootstrapToken": {
                "apiServerEndpoint": api_server,
                "token": token,
                "caCertHashes": [ca_cert_hash],
            }
        }
        if certificate_key is not None:
            doc["controlPlane"] = {
                "localAPIEndpoint": {"advertiseAddress": host.ip, "bindPort": API_PORT},
                "certificateKey": certificate_key,
            }
        else:
            doc.pop("controlPlane", None)
        return _render_version(doc, self.api_version)


def render(docs: Iterable[Mapping[str, Any]]) -> str:
    """Multi-document YAML as kubeadm --config reads it."""
    return yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False)


def parse_documents(text: str, source: str) -> list[dict[str, Any]]:
    """The image's etc/kubeadm.yml: kubeadm and component documents only (others are skipped)."""
    try:
        loaded = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as err:
        raise ImageError(f"{source} is not valid YAML: {err}", "fix it in the image and rebuild") from None
    out = []
    for doc in loaded:
        if isinstance(doc, dict) and (doc.get("kind") in KUBEADM_KINDS or doc.get("kind") in COMPONENT_KINDS):
            out.append(doc)
    return out
