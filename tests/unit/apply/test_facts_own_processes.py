"""A re-run on a host of this cluster tolerates ports held by any runtime's own processes (k3s, k0s,
kubeadm's control plane, the registry, the balancer), by the names `ss` really prints."""

from __future__ import annotations

import pytest

from sealer.apply.facts import HostFacts, preflight


def _ports_refused(cluster: str, listening: dict[int, str]) -> list[str]:
    host = HostFacts(
        "m",
        arch="x86_64",
        hostname="m",
        systemd=True,
        disk_path="/var",
        disk_free=10 << 30,
        cluster=cluster,
        listening=listening,
    )
    found = preflight(
        {"m": host},
        cluster="c1",
        masters=["m"],
        master0="m",
        registry_port=5000,
        arches=["amd64"],
        need_bytes={},
    )
    return [f.message for f in found if f.severity == "error"]


# What `ss -Hltnp` shows (the kernel comm, at most 15 characters) for each runtime's listeners.
K0S = {6443: "kube-apiserver", 2379: "etcd", 2380: "etcd", 10250: "kubelet", 5000: "sealer-registry"}
KUBEADM = {6443: "kube-apiserver", 2379: "etcd", 2380: "etcd", 10250: "kubelet", 5000: "registry"}
K3S = {6443: "k3s-server", 2379: "k3s-server", 2380: "k3s-server", 10250: "k3s-server", 5000: "registry"}


@pytest.mark.parametrize("listening", [K0S, KUBEADM, K3S], ids=["k0s", "kubeadm", "k3s"])
def test_a_rerun_accepts_ports_held_by_our_runtime(listening: dict[int, str]) -> None:
    assert _ports_refused("c1", listening) == []


def test_truncated_comm_names_are_ours_too() -> None:
    assert _ports_refused("c1", {10250: "kube-controller", 2379: "konnectivity-se"}) == []


@pytest.mark.parametrize("listening", [K0S, KUBEADM], ids=["k0s", "kubeadm"])
def test_a_fresh_host_or_another_cluster_still_refuses_them(listening: dict[int, str]) -> None:
    # the same processes on a host that is not (yet) ours are someone else's cluster: refused
    for cluster in ("", "other"):
        refused = _ports_refused(cluster, listening)
        assert "port 6443 is already in use by kube-apiserver" in refused
        assert "port 2379 is already in use by etcd" in refused


def test_strangers_are_refused_even_on_our_hosts() -> None:
    assert _ports_refused("c1", {6443: "nginx", 2379: "etcd"}) == ["port 6443 is already in use by nginx"]
