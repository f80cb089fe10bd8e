"""Day-2 requests to a cluster's API beyond what kube/client.py offers: find nodes by address,
cordon, drain (evict, else delete, with a timeout), uncordon, delete a Node, wait for a version."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node, Pod, Secret
from lightkube.types import PatchType

from sealer.errors import RuntimeErrorSealer
from sealer.kube.client import TRANSIENT, Kube, NodeStatus, api_message
from sealer.kube.client import NodeWait as NodeWait  # re-exported: callers build waits here

_TRANSIENT = TRANSIENT
_message = api_message


async def node_names_by_ip(kube: Kube) -> dict[str, str]:
    """host IP -> node name, from each node's reported addresses."""
    out: dict[str, str] = {}
    for node in await kube.nodes():
        for address in node.addresses:
            out.setdefault(address, node.name)
    return out


async def set_unschedulable(kube: Kube, node: str, value: bool) -> bool:
    """Cordon (True) or uncordon (False); False when the node does not exist (nothing to do)."""
    try:
        await kube.client.patch(
            Node, node, {"spec": {"unschedulable": value or None}}, patch_type=PatchType.MERGE
        )
    except ApiError as err:
        if err.status.code == 404:
            return False
        raise
    return True


def _skippable(pod: Pod) -> bool:
    """Pods a drain leaves alone, as `kubectl drain --ignore-daemonsets` does: DaemonSet pods
    (their controller would put them back at once) and static/mirror pods (the kubelet owns them)."""
    meta = pod.metadata
    if meta is None:
        return True
    if (meta.annotations or {}).get("kubernetes.io/config.mirror"):
        return True
    return any(ref.kind == "DaemonSet" for ref in meta.ownerReferences or [])


async def drain(kube: Kube, node: str, timeout: float) -> int:
    """Cordon the node and move its pods off: evict each (PodDisruptionBudgets honoured), else
    delete it when the API has no eviction endpoint; wait until they are gone. Returns how many
    pods were moved; raises naming the pods still there after `timeout` seconds."""
    if not await set_unschedulable(kube, node, True):
        return 0
    deadline = time.monotonic() + timeout
    asked: set[tuple[str, str]] = set()
    while True:
        left: list[tuple[str, str]] = []
        async for pod in kube.client.list(Pod, namespace="*"):
            if pod.spec is None or pod.spec.nodeName != node or _skippable(pod):
                continue
            assert pod.metadata is not None
            ns, name = pod.metadata.namespace or "default", pod.metadata.name or "?"
            left.append((ns, name))
            if (ns, name) in asked:
                continue
            try:
                await kube.client.create(
                    Pod.Eviction(metadata=ObjectMeta(name=name, namespace=ns)), name=name, namespace=ns
                )
            except ApiError as err:
                if err.status.code == 429:
                    continue  # a PodDisruptionBudget says not now: ask again on the next round
                if err.status.code not in (404, 405):
                    raise
                try:
                    await kube.client.delete(Pod, name, namespace=ns)
                except ApiError as gone:
                    if gone.status.code != 404:
                        raise
            asked.add((ns, name))
        if not left:
            return len(asked)
        if time.monotonic() >= deadline:
            shown = ", ".join(f"{ns}/{name}" for ns, name in left[:5])
            raise RuntimeErrorSealer(
                f"node {node}: {len(left)} pod(s) still running after a {timeout:.0f}s drain: {shown}",
                "check their PodDisruptionBudgets and finalizers, or raise --drain-timeout; then run the "
                "same command again (the node stays cordoned)",
            )
        await asyncio.sleep(1.0)


async def delete_node(kube: Kube, node: str) -> bool:
    """Delete the Node (for k3s servers this is also what removes the etcd member) and k3s's
    node-password Secret, so the host can join again later under the same name."""
    deleted = True
    try:
        await kube.client.delete(Node, node)
    except ApiError as err:
        if err.status.code != 404:
            raise
        deleted = False
    try:
        await kube.client.delete(Secret, f"{node}.node-password.k3s", namespace="kube-system")
    except ApiError as err:
        if err.status.code != 404:
            raise
    return deleted


async def wait_nodes(kube: Kube, wanted: Mapping[str, NodeWait], timeout: float) -> list[NodeStatus]:
    """Wait until each node (host IP -> what to wait for) is Ready and, if asked, reports the
    version. The API may be down for a while (a control plane restarting): errors are retried."""
    return await kube.wait_nodes(
        wanted.items(),
        timeout,
        title="nodes not ready",
        hint="check the runtime's service on those hosts; run the same command again once fixed",
    )


async def wait_api(kube: Kube, timeout: float) -> list[NodeStatus]:
    """Wait until the API answers again (after a control plane restart); returns the nodes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await kube.nodes()
        except _TRANSIENT as err:
            if time.monotonic() >= deadline:
                raise RuntimeErrorSealer(
                    f"the API server {kube.server} did not answer within {timeout:.0f}s: {_message(err)}",
                    "check the runtime's service on master0 (journalctl -u k3s)",
                )
        await asyncio.sleep(1.0)
