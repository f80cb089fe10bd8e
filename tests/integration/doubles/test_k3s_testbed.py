"""The k3s stand-in where it will really run: on test-bed hosts (systemd-nspawn, Debian bookworm), under
the systemd units k3s's install.sh writes, with containerd binaries copied in as a ClusterImage ships
them, reached from this machine by lightkube over the lab network."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from lightkube import Client, KubeConfig
from lightkube.resources.core_v1 import Node

from tests.doubles.build import build_executable

from .conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.testbed, pytest.mark.slow]

# The shape of install.sh's k3s.service / k3s-agent.service (k3s v1.30).
UNIT = """[Unit]
Description=Lightweight Kubernetes
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-/etc/systemd/system/{name}.service.env
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/k3s {args}
"""

FAST = "--kubelet-arg=node-status-update-frequency=1s"


def install(tb: object, h: object, tmp: Path, name: str, args: str, env: str = "") -> None:
    put = tb.put_file  # type: ignore[attr-defined]
    put(h, tmp / "k3s", "/usr/local/bin/k3s", 0o755)
    for b in ("containerd", "containerd-shim-runc-v2", "ctr", "runc"):  # the ClusterImage's bin/
        src = shutil.which(b)
        assert src is not None
        put(h, src, f"/usr/local/bin/{b}", 0o755)
    unit = tmp / f"{name}.service"
    unit.write_text(UNIT.format(name=name, args=args))
    put(h, unit, f"/etc/systemd/system/{name}.service", 0o644)
    if env:
        envf = tmp / f"{name}.env"
        envf.write_text(env)
        put(h, envf, f"/etc/systemd/system/{name}.service.env", 0o600)
    tb.run_on(h, f"systemctl daemon-reload && systemctl enable --now {name}", timeout=120)  # type: ignore[attr-defined]


def test_k3s_cluster_under_systemd_on_testbed_hosts(
    testbed_factory: Callable[..., object], tmp_path: Path
) -> None:
    for b in ("containerd", "containerd-shim-runc-v2", "ctr", "runc"):
        if shutil.which(b) is None:
            pytest.skip(f"{b} not installed on this machine (apt-get install containerd runc)")
    tb = testbed_factory()
    h1, h2 = tb.up(2)  # type: ignore[attr-defined]
    build_executable("k3s", tmp_path / "k3s")

    install(
        tb,
        h1,
        tmp_path,
        "k3s",
        f"server --cluster-init --kube-controller-manager-arg="
        f"node-monitor-grace-period=5s {FAST} --tls-san {h1.ip}",
    )
    # Type=notify: `enable --now` returned once k3s reported READY=1
    assert tb.run_on(h1, "systemctl is-active k3s").stdout.strip() == "active"  # type: ignore[attr-defined]
    token = tb.run_on(h1, "cat /var/lib/rancher/k3s/server/node-token").stdout.strip()  # type: ignore[attr-defined]
    assert token.startswith("K10") and "::server:" in token

    install(
        tb,
        h2,
        tmp_path,
        "k3s-agent",
        f"agent {FAST} --node-label pool=blue",
        env=f"K3S_TOKEN={token}\nK3S_URL=https://{h1.ip}:6443\n",
    )

    kubeconfig = yaml.safe_load(tb.run_on(h1, "cat /etc/rancher/k3s/k3s.yaml").stdout)  # type: ignore[attr-defined]
    kubeconfig["clusters"][0]["cluster"]["server"] = f"https://{h1.ip}:6443"
    kc = tmp_path / "admin.kubeconfig"
    kc.write_text(yaml.safe_dump(kubeconfig))
    client = Client(KubeConfig.from_file(kc))

    def ready() -> dict[str, str]:
        return {
            n.metadata.name: next((c.status for c in (n.status.conditions or []) if c.type == "Ready"), "")
            for n in client.list(Node)
        }

    wait_for(lambda: ready() == {h1.name: "True", h2.name: "True"}, timeout=120, what="both nodes Ready")
    node = client.get(Node, h2.name)
    assert node.metadata.labels["pool"] == "blue"
    assert any(a.address == h2.ip for a in node.status.addresses)
    out = tb.run_on(h1, "/usr/local/bin/k3s kubectl get nodes").stdout  # type: ignore[attr-defined]
    assert h2.name in out and "control-plane,etcd,master" in out

    started = time.monotonic()
    tb.run_on(h2, "systemctl stop k3s-agent")  # type: ignore[attr-defined]
    wait_for(lambda: ready()[h2.name] == "Unknown", timeout=120, what="agent's node NotReady after stop")
    print(f"agent stopped -> node Unknown after {time.monotonic() - started:.1f} s (grace 5 s)")
    # containerd went with the agent (KillMode=process, but the runtime dies with k3s)
    assert tb.run_on(h2, "pgrep -x containerd", check=False).returncode == 1  # type: ignore[attr-defined]
