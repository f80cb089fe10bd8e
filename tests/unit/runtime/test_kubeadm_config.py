"""kubeadm configuration: API version by kubeadm version, defaults < image < user documents, the
fields sealer owns, SAN union, v1beta3/v1beta4 extraArgs forms, join documents."""

from __future__ import annotations

import pytest
import yaml

from sealer.errors import ClusterfileError, ImageError
from sealer.model.clusterfile import parse_clusterfile
from sealer.runtime.kubeadm_config import (
    KubeadmInputs,
    api_version_for,
    args_to_map,
    endpoint_name,
    parse_documents,
    render,
)

CLUSTERFILE = """apiVersion: sealer.io/v2
kind: Cluster
metadata: {name: ku}
spec:
  image: kubernetes:v1.30.6
  env: [APIServerDomain=api.example.internal]
  hosts:
    - ips: [10.0.0.2, 10.0.0.3, 10.0.0.4]
      roles: [master]
    - ips: [10.0.0.9]
      roles: [node]
      taints: ["gpu=yes:NoSchedule"]
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
networking:
  podSubnet: 172.16.0.0/16
apiServer:
  certSANs: [my.lb.example]
  extraArgs:
    audit-log-maxage: "30"
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
maxPods: 200
"""


def _inputs(kubeadm: str = "v1.30.6", image_docs: list[dict[str, object]] | None = None) -> KubeadmInputs:
    cf, problems = parse_clusterfile(CLUSTERFILE, "Clusterfile")
    assert cf is not None, problems
    cluster = cf.cluster
    return KubeadmInputs(
        cluster=cluster,
        kubernetes_version="v1.30.6",
        kubeadm_version=kubeadm,
        endpoint=endpoint_name(cluster, "apiserver.cluster.local"),
        node_names={h.ip: f"n{h.ip.rsplit('.', 1)[1]}" for h in cluster.hosts},
        image_repository="sea.hub:5000",
        sans=["apiserver.cluster.local", "127.0.0.1", *(m.ip for m in cluster.masters)],
        image_documents=image_docs or [],
        user_documents=list(cf.kubeadm_documents),
    )


@pytest.mark.parametrize(
    ("version", "want"),
    [
        ("v1.22.0", "kubeadm.k8s.io/v1beta3"),
        ("v1.30.6", "kubeadm.k8s.io/v1beta3"),
        ("1.31.0", "kubeadm.k8s.io/v1beta4"),
        ("v1.32.1-rc.0", "kubeadm.k8s.io/v1beta4"),
    ],
)
def test_api_version_follows_kubeadm(version: str, want: str) -> None:
    assert api_version_for(version) == want


def test_api_version_refuses_old_or_garbage() -> None:
    with pytest.raises(ImageError, match="too old"):
        api_version_for("v1.21.9")
    with pytest.raises(ImageError, match="cannot tell"):
        api_version_for("garbage")


def test_user_documents_end_up_in_the_init_config() -> None:
    docs = {d["kind"]: d for d in _inputs().init_documents(_inputs().cluster.masters[0])}
    cc = docs["ClusterConfiguration"]
    assert cc["apiVersion"] == "kubeadm.k8s.io/v1beta3"
    assert cc["networking"]["podSubnet"] == "172.16.0.0/16"  # the user's, not sealer's default
    assert cc["networking"]["serviceSubnet"] == "10.96.0.0/22"  # default kept where the user is silent
    assert cc["apiServer"]["extraArgs"] == {"audit-log-maxage": "30"}
    assert cc["controlPlaneEndpoint"] == "api.example.internal:6443"
    assert cc["imageRepository"] == "sea.hub:5000"
    assert cc["etcd"]["local"]["dataDir"] == "/var/lib/etcd"
    for san in ("apiserver.cluster.local", "127.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "my.lb.example"):
        assert san in cc["apiServer"]["certSANs"]
    assert docs["KubeletConfiguration"]["maxPods"] == 200
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "systemd"
    init = docs["InitConfiguration"]
    assert init["localAPIEndpoint"] == {"advertiseAddress": "10.0.0.2", "bindPort": 6443}
    reg = init["nodeRegistration"]
    assert reg["name"] == "n2" and reg["criSocket"] == "unix:///run/containerd/containerd.sock"
    assert reg["kubeletExtraArgs"] == {"node-ip": "10.0.0.2"}
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in reg["taints"]
    # and the text kubeadm reads round-trips
    text = render(_inputs().init_documents(_inputs().cluster.masters[0]))
    assert [d["kind"] for d in yaml.safe_load_all(text)] == [
        "InitConfiguration",
        "ClusterConfiguration",
        "KubeletConfiguration",
        "KubeProxyConfiguration",
    ]
    assert "podSubnet: 172.16.0.0/16" in text and "audit-log-maxage" in text


def test_precedence_defaults_image_user() -> None:
    image = [
        {
            "apiVersion": "kubeadm.k8s.io/v1beta3",
            "kind": "ClusterConfiguration",
            "networking": {"podSubnet": "10.1.0.0/16", "serviceSubnet": "10.2.0.0/16"},
            "apiServer": {"extraArgs": {"feature-gates": "X=true"}},
        }
    ]
    cc = _inputs(image_docs=image).merged()["ClusterConfiguration"]
    assert cc["networking"]["podSubnet"] == "172.16.0.0/16"  # user over image
    assert cc["networking"]["serviceSubnet"] == "10.2.0.0/16"  # image over default
    assert cc["apiServer"]["extraArgs"] == {"feature-gates": "X=true", "audit-log-maxage": "30"}


def test_v1beta4_renders_extra_args_as_lists_whatever_the_input_form() -> None:
    inputs = _inputs(
        kubeadm="v1.31.2",
        image_docs=[
            {
                "apiVersion": "kubeadm.k8s.io/v1beta4",
                "kind": "ClusterConfiguration",
                "scheduler": {"extraArgs": [{"name": "v", "value": "2"}]},
            }
        ],
    )
    docs = {d["kind"]: d for d in inputs.init_documents(inputs.cluster.masters[0])}
    cc = docs["ClusterConfiguration"]
    assert cc["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert cc["apiServer"]["extraArgs"] == [{"name": "audit-log-maxage", "value": "30"}]
    assert cc["scheduler"]["extraArgs"] == [{"name": "v", "value": "2"}]
    kubelet = docs["InitConfiguration"]["nodeRegistration"]["kubeletExtraArgs"]
    assert kubelet == [{"name": "node-ip", "value": "10.0.0.2"}]


def test_join_documents_for_masters_and_workers() -> None:
    inputs = _inputs()
    m1, worker = inputs.cluster.masters[1], inputs.cluster.workers[0]
    master = inputs.join_document(
        m1,
        token="abcdef.0123456789abcdef",
        ca_cert_hash="sha256:aa",
        api_server="10.0.0.2:6443",
        certificate_key="k",
    )
    assert master["kind"] == "JoinConfiguration" and master["apiVersion"] == "kubeadm.k8s.io/v1beta3"
    assert master["controlPlane"] == {
        "localAPIEndpoint": {"advertiseAddress": "10.0.0.3", "bindPort": 6443},
        "certificateKey": "k",
    }
    assert master["discovery"]["bootstrapToken"] == {
        "apiServerEndpoint": "10.0.0.2:6443",
        "token": "abcdef.0123456789abcdef",
        "caCertHashes": ["sha256:aa"],
    }
    node = inputs.join_document(worker, token="t", ca_cert_hash="sha256:aa", api_server="127.0.0.1:6443")
    assert "controlPlane" not in node
    assert node["nodeRegistration"]["name"] == "n9"
    assert node["nodeRegistration"]["taints"] == [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]


def test_unknown_or_malformed_documents_are_clear_errors() -> None:
    inputs = _inputs(image_docs=[{"kind": "UpgradeConfiguration"}])
    with pytest.raises(ClusterfileError) as err:
        inputs.merged()
    assert "UpgradeConfiguration" in err.value.problems[0].message
    with pytest.raises(ClusterfileError):
        args_to_map([{"value": "x"}], "ClusterConfiguration.apiServer.extraArgs")
    with pytest.raises(ClusterfileError):
        args_to_map("a=b", "ClusterConfiguration.apiServer.extraArgs")


def test_parse_image_documents_keeps_kubeadm_kinds_only() -> None:
    text = "kind: ClusterConfiguration\n---\nkind: ConfigMap\n---\nkind: KubeProxyConfiguration\n"
    assert [d["kind"] for d in parse_documents(text, "etc/kubeadm.yml")] == [
        "ClusterConfiguration",
        "KubeProxyConfiguration",
    ]
    with pytest.raises(ImageError, match=r"etc/kubeadm\.yml"):
        parse_documents("a: [", "etc/kubeadm.yml")
