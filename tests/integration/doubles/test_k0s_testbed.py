"""The k0s stand-in on test-bed hosts: `k0s install` writes the systemd units, `k0s start` starts them, a
worker joins with a token file, lightkube sees both nodes from this machine, `k0s stop` + `reset` clean up."""

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

K0S = "/usr/local/bin/k0s"


def test_k0s_cluster_under_systemd_on_testbed_hosts(
    testbed_factory: Callable[..., object], tmp_path: Path
) -> None:
    for b in ("containerd", "containerd-shim-runc-v2", "ctr", "runc"):
        if shutil.which(b) is None:
            pytest.skip(f"{b} not installed on this machine (apt-get install containerd runc)")
    tb = testbed_factory()
    h1, h2 = tb.up(2)  # type: ignore[attr-defined]
    build_executable("k0s", tmp_path / "k0s")
    run = tb.run_on  # type: ignore[attr-defined]
    for h in (h1, h2):
        tb.put_file(h, tmp_path / "k0s", K0S, 0o755)  # type: ignore[attr-defined]
        for b in ("containerd", "containerd-shim-runc-v2", "ctr", "runc"):
            tb.put_file(h, shutil.which(b), f"/usr/local/bin/{b}", 0o755)  # type: ignore[attr-defined]

    run(
        h1,
        f"{K0S} install controller --enable-worker --no-taints "
        "--kubelet-extra-args=--node-status-update-frequency=1s "
        "--kube-controller-manager-extra-args=--node-monitor-grace-period=5s",
    )
    assert (
        "ExecStart=/usr/local/bin/k0s controller --enable-worker"
        in run(h1, "cat /etc/systemd/system/k0scontroller.service").stdout
    )
    run(h1, f"{K0S} start")
    wait_for(
        lambda: "Role: controller+worker" in run(h1, f"{K0S} status", check=False).stdout,
        timeout=120,
        what="k0s controller status",
    )
    token = run(h1, f"{K0S} token create --role=worker --expiry=1h").stdout.strip()
    (tmp_path / "token").write_text(token)
    tb.put_file(h2, tmp_path / "token", "/etc/k0s/worker-token", 0o600)  # type: ignore[attr-defined]
    run(
        h2,
        f"{K0S} install worker --token-file /etc/k0s/worker-token --labels pool=green "
        "--kubelet-extra-args=--node-status-update-frequency=1s",
    )
    run(h2, f"{K0S} start")

    kc = yaml.safe_load(run(h1, f"{K0S} kubeconfig admin").stdout)
    assert kc["clusters"][0]["cluster"]["server"] == f"https://{h1.ip}:6443"
    (tmp_path / "admin.conf").write_text(yaml.safe_dump(kc))
    client = Client(KubeConfig.from_file(tmp_path / "admin.conf"))

    def ready() -> dict[str, str]:
        return {
            n.metadata.name: next((c.status for c in (n.status.conditions or []) if c.type == "Ready"), "")
            for n in client.list(Node)
        }

    wait_for(lambda: ready() == {h1.name: "True", h2.name: "True"}, timeout=120, what="both nodes Ready")
    assert client.get(Node, h2.name).metadata.labels["pool"] == "green"

    run(h2, f"{K0S} stop")
    wait_for(lambda: ready()[h2.name] == "Unknown", timeout=120, what="worker NotReady after k0s stop")
    run(h2, f"{K0S} reset")
    assert (
        run(
            h2, "test -e /var/lib/k0s || test -e /etc/systemd/system/k0sworker.service", check=False
        ).returncode
        == 1
    )
