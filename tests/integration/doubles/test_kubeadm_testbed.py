"""kubeadm + kubelet stand-ins on test-bed hosts under systemd: containerd.service, kubelet.service with
kubeadm's 10-kubeadm.conf drop-in (the packages' files), `kubeadm init` on one host, `kubeadm join` on the
other, lightkube from this machine; stopping kubelet leaves the API up and the node NotReady."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from lightkube import Client, KubeConfig
from lightkube.resources.core_v1 import Node

from tests.doubles.build import build_executable

from .conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.testbed, pytest.mark.slow]

CONTAINERD_UNIT = """[Unit]
Description=containerd container runtime
After=network.target
[Service]
ExecStart=/usr/local/bin/containerd
Restart=always
Delegate=yes
KillMode=process
[Install]
WantedBy=multi-user.target
"""
# kubelet.service and 10-kubeadm.conf as the kubelet/kubeadm packages ship them
KUBELET_UNIT = """[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target
[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=1
[Install]
WantedBy=multi-user.target
"""
DROPIN = """[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf \\
--kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS \\
$KUBELET_EXTRA_ARGS
"""


# nspawn hosts mount /proc/sys read-only, so ip_forward cannot be switched on there; the test bed's CPU
# and memory are whatever this machine has
IGNORE = "--ignore-preflight-errors=FileContent--proc-sys-net-ipv4-ip_forward,NumCPU,Mem"


def test_kubeadm_cluster_under_systemd(testbed_factory: Callable[..., object], tmp_path: Path) -> None:
    for b in ("containerd", "containerd-shim-runc-v2", "ctr", "runc"):
        if shutil.which(b) is None:
            pytest.skip(f"{b} not installed on this machine (apt-get install containerd runc)")
    tb = testbed_factory()
    h1, h2 = tb.up(2)  # type: ignore[attr-defined]
    run, put = tb.run_on, tb.put_file  # type: ignore[attr-defined]
    build_executable("kubeadm", tmp_path / "kubeadm")
    build_executable("kubelet", tmp_path / "kubelet")
    for name, text in (
        ("containerd.service", CONTAINERD_UNIT),
        ("kubelet.service", KUBELET_UNIT),
        ("10-kubeadm.conf", DROPIN),
    ):
        (tmp_path / name).write_text(text)
    for h in (h1, h2):
        put(h, tmp_path / "kubeadm", "/usr/bin/kubeadm", 0o755)
        put(h, tmp_path / "kubelet", "/usr/bin/kubelet", 0o755)
        for b in ("containerd", "containerd-shim-runc-v2", "ctr", "runc"):
            put(h, shutil.which(b), f"/usr/local/bin/{b}", 0o755)
        put(h, tmp_path / "containerd.service", "/etc/systemd/system/containerd.service", 0o644)
        put(h, tmp_path / "kubelet.service", "/etc/systemd/system/kubelet.service", 0o644)
        put(h, tmp_path / "10-kubeadm.conf", "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf", 0o644)
        run(h, "systemctl daemon-reload && systemctl enable --now containerd && systemctl enable kubelet")

    cfg = tmp_path / "kubeadm.yaml"
    cfg.write_text(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint:\n"
        f"  advertiseAddress: {h1.ip}\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"
        "controllerManager:\n  extraArgs:\n  - name: node-monitor-grace-period\n    value: 5s\n---\n"
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        "nodeStatusUpdateFrequency: 1s\n"
    )
    put(h1, cfg, "/root/kubeadm.yaml", 0o600)
    r = run(
        h1,
        f"kubeadm init --config /root/kubeadm.yaml {IGNORE}",
        check=False,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    join = r.stdout[r.stdout.index("kubeadm join") :].replace("\\\n", " ").split()
    r = run(h2, " ".join(join) + f" {IGNORE}", check=False, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr

    kc = yaml.safe_load(run(h1, "cat /etc/kubernetes/admin.conf").stdout)
    (tmp_path / "admin.conf").write_text(yaml.safe_dump(kc))
    client = Client(KubeConfig.from_file(tmp_path / "admin.conf"))

    def ready() -> dict[str, str]:
        return {
            n.metadata.name: next((c.status for c in (n.status.conditions or []) if c.type == "Ready"), "")
            for n in client.list(Node)
        }

    wait_for(lambda: ready() == {h1.name: "True", h2.name: "True"}, timeout=120, what="both nodes Ready")
    # the control plane runs outside kubelet.service, like containers: stopping kubelet keeps the API up
    run(h1, "systemctl stop kubelet")
    wait_for(lambda: ready()[h1.name] == "Unknown", timeout=120, what="control-plane node NotReady")
    assert ready()[h2.name] == "True"
    run(h1, "systemctl start kubelet")
    wait_for(lambda: ready()[h1.name] == "True", timeout=120, what="control-plane node Ready again")
    r = run(h2, "kubeadm reset -f", check=False)
    assert r.returncode == 0, r.stderr
    assert run(h2, "systemctl is-active kubelet", check=False).stdout.strip() != "active"
