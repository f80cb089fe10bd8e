"""Talking to a cluster's API with lightkube: node readiness, labels and taints, and the in-cluster
copy of the cluster's state (ConfigMap kube-system/sealer-clusterfile, Secret kube-system/admin.conf).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
import yaml
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import Taint as KubeTaint
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Node, Secret
from lightkube.types import PatchType

from sealer.errors import RuntimeErrorSealer
from sealer.model.cluster import Taint

STATE_NAMESPACE = "kube-system"
CLUSTERFILE_CONFIGMAP = "sealer-clusterfile"
KUBECONFIG_SECRET = "admin.conf"


@dataclass(frozen=True)
class NodeStatus:
    name: str
    ready: bool
    reason: str  # why not Ready ("" when Ready)
    addresses: tuple[str, ...] = ()
    kubelet_version: str = ""


@dataclass(frozen=True)
class NodeWait:
    """A node to wait for: Ready and, if version is set, reporting that kubelet version."""

    name: str
    version: str | None = None  # kubelet version the node must report (None: any)


# what a request to an API server that is down or restarting raises
TRANSIENT = (ApiError, httpx2.HTTPError, OSError)


def _taint_entry(key: str, value: str | None, effect: str | None) -> dict[str, Any]:
    """A taint as the API takes it in a patch; no `value` key when it has none."""
    entry: dict[str, Any] = {"key": key, "effect": effect}
    if value is not None:
        entry["value"] = value
    return entry


def _state_meta(name: str) -> ObjectMeta:
    """Where sealer keeps a cluster's state object in the cluster, marked as sealer's."""
    return ObjectMeta(name=name, namespace=STATE_NAMESPACE, labels={"app.kubernetes.io/managed-by": "sealer"})


def api_message(err: BaseException) -> str:
    if isinstance(err, ApiError):
        return f"{err.status.code} {err.status.reason or ''}: {err.status.message or ''}".strip()
    return f"{type(err).__name__}: {err}"


class Kube:
    """A client for one cluster, built from its admin kubeconfig text."""

    def __init__(self, kubeconfig: str, *, timeout: float = 20.0) -> None:
        doc = yaml.safe_load(kubeconfig)
        if not isinstance(doc, dict):
            raise RuntimeErrorSealer(
                "the admin kubeconfig is not a YAML mapping", "fetch it again with a re-run"
            )
        self.server = str(((doc.get("clusters") or [{}])[0].get("cluster") or {}).get("server", "?"))
        config = KubeConfig.from_dict(doc).get()
        self.client = AsyncClient(config, timeout=httpx2.Timeout(timeout), field_manager="sealer")

    async def close(self) -> None:
        await self.client.close()

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # nodes --------------------------------------------------------------------------------------
    async def nodes(self) -> list[NodeStatus]:
        out: list[NodeStatus] = []
        async for node in self.client.list(Node):
            ready, reason = False, "no Ready condition reported yet"
            for cond in (node.status.conditions if node.status else None) or []:
                if cond.type == "Ready":
                    ready = cond.status == "True"
                    reason = (
                        ""
                        if ready
                        else f"Ready={cond.status}: {cond.reason or ''} {cond.message or ''}".strip()
                    )
            addresses = tuple(a.address for a in ((node.status.addresses if node.status else None) or []))
            info = node.status.nodeInfo if node.status else None
            name = node.metadata.name if node.metadata and node.metadata.name else "?"
            out.append(NodeStatus(name, ready, reason, addresses, info.kubeletVersion if info else ""))
        return out

    async def wait_ready(self, expected: Mapping[str, str], timeout: float) -> list[NodeStatus]:
        """Wait until every expected node (name -> host IP) is registered and Ready. On timeout,
        raise with one line per node that is not: missing, or its Ready condition."""
        return await self.wait_nodes(
            [(ip, NodeWait(name)) for name, ip in expected.items()],
            timeout,
            title="nodes not Ready",
            hint="check the runtime's service on those hosts (journalctl -u k3s / k3s-agent); "
            "run the same command again once they are fixed",
        )

    async def wait_nodes(
        self, wanted: Iterable[tuple[str, NodeWait]], timeout: float, *, title: str, hint: str
    ) -> list[NodeStatus]:
        """Wait until each node (host IP, what to wait for) is Ready and, if asked, reports the
        version. The API may be down for a while (a control plane restarting): errors are retried.
        On timeout, RuntimeErrorSealer(title, hint) with one line per node still pending."""
        wanted = list(wanted)
        deadline = time.monotonic() + timeout
        last_error = ""
        statuses: dict[str, NodeStatus] = {}
        while True:
            try:
                statuses = {n.name: n for n in await self.nodes()}
                last_error = ""
            except TRANSIENT as err:
                last_error = api_message(err)
            pending = [
                (ip, w)
                for ip, w in wanted
                if not (
                    w.name in statuses
                    and statuses[w.name].ready
                    and (w.version is None or statuses[w.name].kubelet_version == w.version)
                )
            ]
            if not pending and not last_error:
                return [statuses[w.name] for _, w in wanted]
            if time.monotonic() >= deadline:
                lines = []
                for ip, w in pending:
                    s = statuses.get(w.name)
                    if s is None:
                        why = "not registered with the API server"
                    elif not s.ready:
                        why = s.reason
                    else:
                        why = f"reports {s.kubelet_version or 'no version'}, expected {w.version}"
                    lines.append(f"{w.name} ({ip}): {why}")
                if last_error:
                    lines.append(f"API server {self.server}: {last_error}")
                raise RuntimeErrorSealer(f"{title} after {timeout:.0f}s:\n  " + "\n  ".join(lines), hint)
            await asyncio.sleep(1.0)

    async def set_labels(self, node: str, add: Mapping[str, str], remove: Iterable[str] = ()) -> None:
        labels: dict[str, str | None] = {k: None for k in remove}
        labels.update(add)
        if not labels:
            return
        await self.client.patch(Node, node, {"metadata": {"labels": labels}}, patch_type=PatchType.MERGE)

    async def set_taints(self, node: str, taints: Iterable[Taint]) -> None:
        """Apply sealer taints: additions replace same key+effect, `k-` removes every effect of k,
        `k:Effect-` removes one; taints sealer does not manage (not-ready, ...) are kept."""
        wanted = list(taints)
        current = await self.client.get(Node, node)
        existing: list[KubeTaint] = list((current.spec.taints if current.spec else None) or [])

        def dropped(t: KubeTaint) -> bool:
            for w in wanted:
                if t.key != w.key:
                    continue
                if w.remove and (w.effect is None or w.effect == t.effect):
                    return True
                if not w.remove and w.effect == t.effect:
                    return True
            return False

        result = [_taint_entry(t.key, t.value, t.effect) for t in existing if not dropped(t)]
        result += [
            _taint_entry(w.key, w.value or None, w.effect) for w in wanted if not w.remove and w.effect
        ]
        before = [_taint_entry(t.key, t.value, t.effect) for t in existing]
        if result == before:
            return
        await self.client.patch(Node, node, {"spec": {"taints": result}}, patch_type=PatchType.MERGE)

    # state --------------------------------------------------------------------------------------
    async def _upsert(self, obj: ConfigMap | Secret) -> None:
        assert obj.metadata is not None and obj.metadata.name is not None
        try:
            await self.client.create(obj)
        except ApiError as err:
            if err.status.code != 409:
                raise
            await self.client.replace(obj)

    async def save_state(self, clusterfile: str, kubeconfig: str) -> None:
        """The applied Clusterfile (passwords redacted: ConfigMaps are widely readable) and the
        admin kubeconfig (a Secret) inside the cluster, for other operators and machines."""
        try:
            await self._upsert(
                ConfigMap(
                    metadata=_state_meta(CLUSTERFILE_CONFIGMAP),
                    data={"Clusterfile": clusterfile},
                )
            )
            await self._upsert(
                Secret(
                    metadata=_state_meta(KUBECONFIG_SECRET),
                    type="Opaque",
                    data={"admin.conf": base64.b64encode(kubeconfig.encode()).decode()},
                )
            )
        except TRANSIENT as err:
            raise RuntimeErrorSealer(
                f"cannot store the cluster state in the cluster ({self.server}): {api_message(err)}",
                "the cluster is installed; run the same command again to store it",
            )

    async def read_clusterfile(self) -> str | None:
        try:
            cm = await self.client.get(ConfigMap, CLUSTERFILE_CONFIGMAP, namespace=STATE_NAMESPACE)
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise
        return (cm.data or {}).get("Clusterfile")
