"""The day-2 API requests (apply/kubeops.py) against the strict stand-in API server on loopback:
cordon + drain (DaemonSet and mirror pods left alone), uncordon, node deletion with k3s's
node-password Secret, node names by address, and waiting for a version."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import Container, NodeAddress, NodeStatus, NodeSystemInfo, PodSpec
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Node, Pod, Secret

from sealer.apply import kubeops
from sealer.errors import RuntimeErrorSealer
from sealer.kube.client import Kube
from tests.unit.kube.test_kube_client import _node, apiserver  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def _pod(client: Client, name: str, node: str, *, owner: str | None = None, mirror: bool = False) -> None:
    meta = ObjectMeta(name=name, namespace="default")
    if owner:
        meta.ownerReferences = [OwnerReference(apiVersion="apps/v1", kind=owner, name="x", uid="u1")]
    if mirror:
        meta.annotations = {"kubernetes.io/config.mirror": "abc"}
    client.create(
        Pod(metadata=meta, spec=PodSpec(nodeName=node, containers=[Container(name="c", image="i")]))
    )


def _names(client: Client) -> set[str]:
    return {p.metadata.name for p in client.list(Pod, namespace="*")}


def test_drain_cordons_and_moves_pods_but_not_daemonset_or_mirror_pods(apiserver: Path) -> None:  # noqa: F811
    client = Client(KubeConfig.from_file(apiserver))
    _node(client, "w1", "True")
    _node(client, "w2", "True")
    _pod(client, "app-1", "w1")
    _pod(client, "app-2", "w1", owner="ReplicaSet")
    _pod(client, "ds-1", "w1", owner="DaemonSet")
    _pod(client, "static-1", "w1", mirror=True)
    _pod(client, "other", "w2")

    async def go() -> int:
        async with Kube(apiserver.read_text()) as kube:
            moved = await kubeops.drain(kube, "w1", timeout=30)
            assert await kubeops.drain(kube, "w1", timeout=30) == 0  # again: nothing left to move
            return moved

    assert asyncio.run(go()) == 2
    assert _names(client) == {"ds-1", "static-1", "other"}
    assert client.get(Node, "w1").spec.unschedulable is True
    assert not client.get(Node, "w2").spec.unschedulable

    async def uncordon() -> None:
        async with Kube(apiserver.read_text()) as kube:
            assert await kubeops.set_unschedulable(kube, "w1", False)
            assert not await kubeops.set_unschedulable(kube, "ghost", False)  # no such node: no error

    asyncio.run(uncordon())
    assert not client.get(Node, "w1").spec.unschedulable


def test_delete_node_takes_the_k3s_node_password_too_and_is_idempotent(apiserver: Path) -> None:  # noqa: F811
    client = Client(KubeConfig.from_file(apiserver))
    _node(client, "m2", "True")
    client.create(
        Secret(
            metadata=ObjectMeta(name="m2.node-password.k3s", namespace="kube-system"),
            stringData={"hash": "x"},
        )
    )

    async def go() -> tuple[bool, bool]:
        async with Kube(apiserver.read_text()) as kube:
            return await kubeops.delete_node(kube, "m2"), await kubeops.delete_node(kube, "m2")

    assert asyncio.run(go()) == (True, False)
    for kind, name, ns in ((Node, "m2", None), (Secret, "m2.node-password.k3s", "kube-system")):
        with pytest.raises(ApiError) as err:
            client.get(kind, name, namespace=ns) if ns else client.get(kind, name)
        assert err.value.status.code == 404


def test_names_by_address_and_waiting_for_a_version(apiserver: Path) -> None:  # noqa: F811
    client = Client(KubeConfig.from_file(apiserver))
    _node(client, "n1", "True")
    node = client.get(Node, "n1")
    status = node.status or NodeStatus()
    client.patch(
        Node.Status,
        "n1",
        {
            "status": {
                "addresses": [NodeAddress(type="InternalIP", address="10.0.0.9").to_dict()],
                "nodeInfo": NodeSystemInfo(
                    architecture="amd64",
                    bootID="",
                    containerRuntimeVersion="",
                    kernelVersion="",
                    kubeProxyVersion="",
                    kubeletVersion="v1.30.6+k3s1",
                    machineID="",
                    operatingSystem="linux",
                    osImage="",
                    systemUUID="",
                ).to_dict(),
                "conditions": [c.to_dict() for c in status.conditions or []],
            }
        },
    )

    async def go() -> None:
        async with Kube(apiserver.read_text()) as kube:
            assert (await kubeops.node_names_by_ip(kube))["10.0.0.9"] == "n1"
            got = await kubeops.wait_nodes(kube, {"10.0.0.9": kubeops.NodeWait("n1", "v1.30.6+k3s1")}, 10)
            assert [s.kubelet_version for s in got] == ["v1.30.6+k3s1"]
            with pytest.raises(RuntimeErrorSealer) as err:
                await kubeops.wait_nodes(kube, {"10.0.0.9": kubeops.NodeWait("n1", "v1.31.2+k3s1")}, 0)
            assert "n1 (10.0.0.9): reports v1.30.6+k3s1, expected v1.31.2+k3s1" in err.value.message

    asyncio.run(go())


def _foreign_lease(client: Client, name: str, holder: dict[str, Any], renewed: datetime.datetime) -> None:
    from lightkube.models.coordination_v1 import LeaseSpec
    from lightkube.resources.coordination_v1 import Lease

    client.create(
        Lease(
            metadata=ObjectMeta(name=name, namespace="kube-system"),
            spec=LeaseSpec(holderIdentity=json.dumps(holder), leaseDurationSeconds=60, renewTime=renewed),
        )
    )


def test_in_cluster_lease_refuses_a_live_holder_and_takes_over_dead_or_expired_ones(
    apiserver: Path,  # noqa: F811
) -> None:
    from lightkube.resources.coordination_v1 import Lease

    from sealer.apply import lease
    from sealer.errors import LockHeldError

    client = Client(KubeConfig.from_file(apiserver))
    now = datetime.datetime.now(datetime.UTC)
    here = socket.gethostname()
    live = {"pid": 1, "host": here, "user": "ops", "command": "sealer apply -f A", "since": "t"}
    _foreign_lease(client, "sealer-c1", live, now)
    other_machine = {**live, "host": "elsewhere", "pid": 4242}
    _foreign_lease(client, "sealer-c2", other_machine, now - datetime.timedelta(seconds=600))
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = {**live, "pid": gone.pid}
    _foreign_lease(client, "sealer-c3", dead, now)

    async def go() -> None:
        async with Kube(apiserver.read_text()) as kube:
            with pytest.raises(LockHeldError) as err:
                await lease.acquire(kube, "c1", "sealer apply -f B")
            assert "is being changed by 'sealer apply -f A' (pid 1" in err.value.message
            assert "kube-system/sealer-c1" in err.value.message and "delete lease sealer-c1" in (
                err.value.hint or ""
            )
            for cluster in ("c2", "c3", "c4"):  # expired, dead here, none: taken
                async with lease.held(kube, cluster, "sealer apply -f B") as me:
                    got = await kube.client.get(Lease, f"sealer-{cluster}", namespace="kube-system")
                    assert json.loads(got.spec.holderIdentity)["pid"] == me.pid == os.getpid()
                    # our own lease again (a resumed run in this process) is not a conflict
                    await lease.acquire(kube, cluster, "sealer apply -f B")
                with pytest.raises(ApiError):  # released at the end of the block
                    await kube.client.get(Lease, f"sealer-{cluster}", namespace="kube-system")

    asyncio.run(go())
