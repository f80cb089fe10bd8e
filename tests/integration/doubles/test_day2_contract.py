"""Day-2 contracts of the stand-ins: a k0s controller's etcd member (`k0s etcd member-list`, `k0s etcd
leave`) and kubeadm reset on a control plane taking its stacked etcd member out, as the real tools do
before a control-plane host is wiped (sealer's remove-master relies on both)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

from .conftest import K0sNode, K8sNode, need_containerd
from .test_k0s_contract import KUBELET, error, start_controller
from .test_kubeadm_contract import IP_FORWARD, init_config, join_args

pytestmark = pytest.mark.integration


def members(node: K0sNode) -> dict[str, str]:
    r = node.run("etcd", "member-list")
    assert r.returncode == 0, r.stdout + r.stderr
    return dict(json.loads(r.stdout)["members"])


def test_k0s_controllers_are_etcd_members_until_they_leave(k0s_nodes: Callable[[str], K0sNode]) -> None:
    c0 = start_controller(k0s_nodes, "c0", "--enable-worker")
    assert members(c0) == {"c0": "https://127.0.0.1:2380"}
    token = c0.run("token", "create", "--role=controller").stdout.strip()
    c1 = k0s_nodes("c1")
    c1.write_config("  storage:\n    type: etcd\n    etcd:\n      peerAddress: 127.0.0.2\n")
    c1.start("controller", token, "--enable-worker", KUBELET.format("c1"))
    c1.wait_api()
    both = {"c0": "https://127.0.0.1:2380", "c1": "https://127.0.0.2:2380"}
    assert members(c1) == both and members(c0) == both  # one datastore, seen from either controller
    left = c1.run("etcd", "leave")
    assert left.returncode == 0 and "Successfully deleted" in left.stdout, left.stdout + left.stderr
    assert members(c0) == {"c0": "https://127.0.0.1:2380"}
    # gone already, or never a member: an error, as etcd's member lookup fails
    error(c1.run("etcd", "leave"), "peer with address https://127.0.0.2:2380 not found")
    error(c0.run("etcd", "leave", "--peer-address", "10.9.9.9"), "not found")
    error(c0.run("etcd", "frobnicate"), 'unknown command "frobnicate" for "k0s etcd"')
    # a host without a controller has no datastore to ask
    error(k0s_nodes("none").run("etcd", "member-list"), "can't list etcd cluster members")


def test_kubeadm_reset_on_a_control_plane_removes_its_etcd_member(
    k8s_nodes: Callable[[str], K8sNode], containerd_socket: str
) -> None:
    if os.geteuid() != 0:
        pytest.skip("kubeadm reset needs root")
    need_containerd()
    cp0 = k8s_nodes("cp0")
    cfg = init_config(cp0, containerd_socket, extra_cluster=f"controlPlaneEndpoint: 127.0.0.1:{cp0.port}\n")
    r = cp0.kubeadm("init", "--config", cfg, "--upload-certs", IP_FORWARD)
    assert r.returncode == 0, r.stdout + r.stderr
    key = r.stdout.split("[upload-certs] Using certificate key:\n", 1)[1].split()[0]
    endpoint, _, token, _, pin = join_args(r.stdout)
    cp1 = k8s_nodes("cp1")
    r = cp1.kubeadm(
        "join",
        endpoint,
        "--token",
        token,
        "--discovery-token-ca-cert-hash",
        pin,
        "--control-plane",
        "--certificate-key",
        key,
        "--apiserver-advertise-address",
        "127.0.0.1",
        "--apiserver-bind-port",
        str(cp1.port),
        "--node-name",
        "cp1",
        "--cri-socket",
        containerd_socket,
        IP_FORWARD,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    path = "/api/v1/namespaces/kube-system/configmaps/kubeadm-standin-etcd"

    def names() -> set[str]:
        return {m.split("=", 1)[0] for m in cp0.admin().get(path)["data"]["members"].split(",") if m}

    assert names() == {"cp0", "cp1"}
    reset = cp1.run("reset", "-f")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert names() == {"cp0"}  # the member left before the host was wiped; cp0 still answers
    assert not (cp1.etc / "manifests/etcd.yaml").exists()
