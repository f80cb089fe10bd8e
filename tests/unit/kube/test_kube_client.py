"""The Kubernetes client of the engine against the strict stand-in API server (real TLS, x509 auth,
merge patches, node lifecycle) on loopback: readiness with a per-node report, labels, sealer's
taint grammar, and the in-cluster state objects."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import Client, KubeConfig
from lightkube.models.core_v1 import NodeCondition, NodeSpec
from lightkube.models.core_v1 import Taint as KubeTaint
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Node, Secret

from sealer.errors import RuntimeErrorSealer
from sealer.kube.client import Kube
from sealer.model.taint import parse_taint

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def apiserver(tmp_path: Path) -> Iterator[Path]:
    """The stand-in API server on a free loopback port; yields its admin kubeconfig. Stopped by PID."""
    data, port_file = tmp_path / "api", tmp_path / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.doubles.apiserver",
            "--data-dir",
            str(data),
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--node-monitor-grace-period",
            "3600",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and (data / "admin.kubeconfig").exists()):
            assert proc.poll() is None, "the stand-in API server exited"
            assert time.monotonic() < deadline, "the stand-in API server did not start"
            time.sleep(0.1)
        yield data / "admin.kubeconfig"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def _node(client: Client, name: str, ready: str | None) -> None:
    client.create(
        Node(
            metadata=ObjectMeta(name=name, labels={"kubernetes.io/hostname": name}),
            spec=NodeSpec(taints=[KubeTaint(key="keep", value="me", effect="NoExecute")]),
        )
    )
    if ready is not None:
        conditions = [
            NodeCondition(
                type="Ready",
                status=ready,
                reason="KubeletReady" if ready == "True" else "KubeletNotReady",
                message="test",
            )
        ]
        client.patch(Node.Status, name, {"status": {"conditions": [c.to_dict() for c in conditions]}})


def test_wait_ready_reports_each_node_that_is_not(apiserver: Path) -> None:
    client = Client(KubeConfig.from_file(apiserver))
    _node(client, "good", "True")
    _node(client, "bad", "False")

    async def go() -> None:
        async with Kube(apiserver.read_text()) as kube:
            statuses = await kube.wait_ready({"good": "10.0.0.2"}, timeout=30)
            assert [(s.name, s.ready) for s in statuses] == [("good", True)]
            with pytest.raises(RuntimeErrorSealer) as err:
                await kube.wait_ready({"good": "10.0.0.2", "bad": "10.0.0.3", "ghost": "10.0.0.4"}, timeout=0)
            text = err.value.message
            assert "bad (10.0.0.3): Ready=False: KubeletNotReady test" in text
            assert "ghost (10.0.0.4): not registered with the API server" in text
            assert "good" not in text.split(":", 1)[1]

    asyncio.run(go())


def test_labels_and_taints_follow_sealer_grammar(apiserver: Path) -> None:
    client = Client(KubeConfig.from_file(apiserver))
    _node(client, "n1", "True")

    async def go() -> None:
        async with Kube(apiserver.read_text()) as kube:
            await kube.set_labels("n1", {"disk": "ssd", "node-role.kubernetes.io/gpu": ""})
            await kube.set_taints("n1", [parse_taint("gpu=yes:NoSchedule"), parse_taint("keep:NoExecute-")])
            await kube.set_taints("n1", [parse_taint("gpu=yes:NoSchedule")])  # idempotent
            await kube.set_labels("n1", {}, remove=["disk"])

    asyncio.run(go())
    node = client.get(Node, "n1")
    assert node.metadata.labels == {"kubernetes.io/hostname": "n1", "node-role.kubernetes.io/gpu": ""}
    assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [("gpu", "yes", "NoSchedule")]

    async def remove_all() -> None:
        async with Kube(apiserver.read_text()) as kube:
            await kube.set_taints("n1", [parse_taint("gpu-")])

    asyncio.run(remove_all())
    assert not client.get(Node, "n1").spec.taints


def test_state_is_stored_and_replaced(apiserver: Path) -> None:
    async def go(text: str) -> None:
        async with Kube(apiserver.read_text()) as kube:
            await kube.save_state(text, "kubeconfig-text")
            assert await kube.read_clusterfile() == text

    asyncio.run(go("first"))
    asyncio.run(go("second"))
    client = Client(KubeConfig.from_file(apiserver))
    assert client.get(ConfigMap, "sealer-clusterfile", namespace="kube-system").data == {
        "Clusterfile": "second"
    }
    secret = client.get(Secret, "admin.conf", namespace="kube-system")
    assert base64.b64decode(secret.data["admin.conf"]) == b"kubeconfig-text"


def test_unreachable_api_is_reported_not_raised_raw(tmp_path: Path, apiserver: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    text = re.sub(r"https://127\.0\.0\.1:\d+", f"https://127.0.0.1:{closed}", apiserver.read_text())

    async def go() -> None:
        async with Kube(text) as kube:
            with pytest.raises(RuntimeErrorSealer) as err:
                await kube.wait_ready({"n": "10.0.0.2"}, timeout=0)
            assert f"API server https://127.0.0.1:{closed}" in err.value.message

    asyncio.run(go())
