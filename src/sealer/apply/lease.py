"""The in-cluster half of the cluster lock: a coordination.k8s.io Lease `kube-system/sealer-<cluster>`
held (and renewed) while a day-2 operation changes the cluster, so two operators on different
machines, each with their own local lock, cannot change one cluster at the same time."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from sealer.errors import LockHeldError
from sealer.kube.client import Kube
from sealer.state.lock import LockHolder, current_holder_info

NAMESPACE = "kube-system"
DURATION = 60  # seconds without renewal after which a holder is considered gone


def lease_name(cluster: str) -> str:
    return f"sealer-{cluster}"


def _holder_of(identity: str | None) -> LockHolder | None:
    return LockHolder.from_json(identity or "")


def _identity(holder: LockHolder) -> str:
    return json.dumps(holder.__dict__, separators=(",", ":"))


def held_by_other(lease: Lease, me: LockHolder, now: datetime) -> LockHolder | None:
    """The live holder of `lease` if it is not us: expired leases and holders proven dead (on this
    machine, process gone) do not count."""
    spec = lease.spec
    if spec is None or not spec.holderIdentity:
        return None
    holder = _holder_of(spec.holderIdentity)
    if holder is not None and (holder.pid, holder.host) == (me.pid, me.host):
        return None
    renewed = spec.renewTime or spec.acquireTime
    duration = spec.leaseDurationSeconds or DURATION
    if renewed is not None:
        if renewed.tzinfo is None:
            renewed = renewed.replace(tzinfo=UTC)
        if renewed + timedelta(seconds=duration) < now:
            return None
    if holder is not None and holder.is_dead():
        return None
    return holder or LockHolder(0, "?", "?", spec.holderIdentity, "?")


async def _write(kube: Kube, name: str, me: LockHolder, existing: Lease | None) -> None:
    now = datetime.now(UTC)
    spec = LeaseSpec(
        holderIdentity=_identity(me), leaseDurationSeconds=DURATION, acquireTime=now, renewTime=now
    )
    if existing is None:
        await kube.client.create(Lease(metadata=ObjectMeta(name=name, namespace=NAMESPACE), spec=spec))
    else:
        # A replace carries the resourceVersion read: a racing writer makes one of us fail with 409.
        existing.spec = spec
        await kube.client.replace(existing)


async def _read(kube: Kube, name: str) -> Lease | None:
    try:
        lease: Lease = await kube.client.get(Lease, name, namespace=NAMESPACE)
    except ApiError as err:
        if err.status.code != 404:
            raise
        return None
    return lease


async def _write_first(kube: Kube, cluster: str, me: LockHolder, existing: Lease | None, hint: str) -> None:
    """Write our Lease over what was read; another sealer that wrote in between wins (409)."""
    name = lease_name(cluster)
    try:
        await _write(kube, name, me, existing)
    except ApiError as err:
        if err.status.code == 409:
            raise LockHeldError(
                f"cluster {cluster}: another sealer took the in-cluster lease {NAMESPACE}/{name} just now",
                hint,
            )
        raise


async def acquire(kube: Kube, cluster: str, command: str) -> LockHolder:
    """Take the cluster's Lease, or raise LockHeldError naming the live holder."""
    name = lease_name(cluster)
    me = current_holder_info(command)
    existing = await _read(kube, name)
    if existing is not None:
        other = held_by_other(existing, me, datetime.now(UTC))
        if other is not None:
            raise LockHeldError(
                f"cluster {cluster} is being changed by {other.describe()} (in-cluster lease "
                f"{NAMESPACE}/{name})",
                f"wait for it to finish; if that operation is gone, its lease expires {DURATION}s after its "
                f"last renewal, or remove it: kubectl -n {NAMESPACE} delete lease {name}",
            )
    await _write_first(kube, cluster, me, existing, "wait for it to finish, then run the command again")
    return me


async def release(kube: Kube, cluster: str, me: LockHolder) -> None:
    """Give the Lease up if it is still ours (best effort: the API may be gone, e.g. after delete)."""
    name = lease_name(cluster)
    with contextlib.suppress(Exception):
        lease = await kube.client.get(Lease, name, namespace=NAMESPACE)
        if _ours(lease, me):
            await kube.client.delete(Lease, name, namespace=NAMESPACE)


def _ours(lease: Lease, me: LockHolder) -> bool:
    holder = _holder_of(lease.spec.holderIdentity if lease.spec else None)
    return holder is not None and (holder.pid, holder.host) == (me.pid, me.host)


async def _renew(kube: Kube, cluster: str, me: LockHolder, interval: float = DURATION / 3) -> None:
    name = lease_name(cluster)
    while True:
        await asyncio.sleep(interval)
        # A control plane restarting (upgrade, restore) makes renewals fail for a while: keep trying.
        with contextlib.suppress(Exception):
            lease = await kube.client.get(Lease, name, namespace=NAMESPACE)
            # Only our own: after an etcd restore the Lease is the snapshot's, and renewing another
            # holder's would make a long-gone operation look alive.
            if lease.spec is not None and _ours(lease, me):
                lease.spec.renewTime = datetime.now(UTC)
                await kube.client.replace(lease)


def renewing(kube: Kube, cluster: str, me: LockHolder, interval: float = DURATION / 3) -> asyncio.Task[None]:
    """Renew our Lease in the background until the task is cancelled."""
    return asyncio.create_task(_renew(kube, cluster, me, interval))


async def reclaim(kube: Kube, cluster: str, me: LockHolder, since: datetime) -> None:
    """Take the Lease again after an etcd restore brought back the Lease of the snapshot's time
    (usually the one `sealer etcd backup` held while it took the snapshot). A holder last renewed
    before `since` (when the restore began, holding the Lease: nobody else could take it then) is
    from the snapshot and is replaced, even when it looks alive (its process still runs here, or
    it ran on another machine and has not expired); one renewed since then is a live operator:
    LockHeldError."""
    name = lease_name(cluster)
    existing = await _read(kube, name)
    if existing is not None and existing.spec is not None:
        other = held_by_other(existing, me, datetime.now(UTC))
        renewed = existing.spec.renewTime or existing.spec.acquireTime
        if renewed is not None and renewed.tzinfo is None:
            renewed = renewed.replace(tzinfo=UTC)
        if other is not None and renewed is not None and renewed >= since:
            raise LockHeldError(
                f"cluster {cluster} is being changed by {other.describe()} (in-cluster lease "
                f"{NAMESPACE}/{name}, taken after this restore began)",
                "wait for it to finish, then run the same restore again: it continues where it stopped",
            )
    await _write_first(
        kube,
        cluster,
        me,
        existing,
        "wait for it to finish, then run the same restore again: it continues where it stopped",
    )


@contextlib.asynccontextmanager
async def held(kube: Kube, cluster: str, command: str) -> AsyncIterator[LockHolder]:
    """Hold the cluster's Lease for the duration of the block, renewing it in the background."""
    me = await acquire(kube, cluster, command)
    renewer = renewing(kube, cluster, me)
    try:
        yield me
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        await release(kube, cluster, me)
