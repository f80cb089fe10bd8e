"""The in-cluster Lease across an etcd restore (apply/lease.py), against the strict stand-in API
server on loopback: the restored datastore holds the Lease of the snapshot's time, which is the one
`sealer etcd backup` held while it took the snapshot. A restore takes it back from that holder even
when it looks alive, but not from one that took it after the restore began; renewals never touch
another holder's Lease (renewing the snapshot's would make a long-gone backup look alive); and a
later operation is not blocked by a snapshot holder that is dead or expired. A backup holds the
Lease while the runtime snapshots."""

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
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from sealer.apply import lease
from sealer.errors import LockHeldError
from sealer.kube.client import Kube
from sealer.state.lock import current_holder_info
from tests.unit.kube.test_kube_client import apiserver  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

UTC = datetime.UTC


def _lease(client: Client, cluster: str, holder: dict[str, Any], renewed: datetime.datetime) -> None:
    client.create(
        Lease(
            metadata=ObjectMeta(name=f"sealer-{cluster}", namespace="kube-system"),
            spec=LeaseSpec(
                holderIdentity=json.dumps(holder),
                leaseDurationSeconds=60,
                acquireTime=renewed,
                renewTime=renewed,
            ),
        )
    )


def _holder(client: Client, cluster: str) -> tuple[dict[str, Any], datetime.datetime]:
    got = client.get(Lease, f"sealer-{cluster}", namespace="kube-system")
    assert got.spec is not None and got.spec.holderIdentity and got.spec.renewTime
    return json.loads(got.spec.holderIdentity), got.spec.renewTime


def _backup_holder(pid: int, host: str | None = None) -> dict[str, Any]:
    return {
        "pid": pid,
        "host": host or socket.gethostname(),
        "user": "ops",
        "command": "sealer etcd backup -o prod.snapshot",
        "since": "2026-01-01T00:00:00+00:00",
    }


def test_a_snapshot_lease_of_a_finished_backup_does_not_block_a_later_operation(
    apiserver: Path,  # noqa: F811
) -> None:
    """Restored just now: the backup's process is gone (this machine), or the backup ran on another
    machine long enough ago that its Lease expired."""
    client = Client(KubeConfig.from_file(apiserver))
    gone = subprocess.Popen(["true"])
    gone.wait()
    now = datetime.datetime.now(UTC)
    _lease(client, "here", _backup_holder(gone.pid), now)
    _lease(client, "there", _backup_holder(4242, "operator-b"), now - datetime.timedelta(minutes=10))
    # the same on another machine, backed up seconds ago: it is refused until it expires
    _lease(client, "fresh", _backup_holder(4242, "operator-b"), now)

    async def go() -> None:
        async with Kube(apiserver.read_text()) as kube:
            for cluster in ("here", "there"):
                async with lease.held(kube, cluster, "sealer scale-up -n 10.0.0.9") as me:
                    assert me.pid == os.getpid()
            with pytest.raises(LockHeldError) as err:
                await lease.acquire(kube, "fresh", "sealer scale-up -n 10.0.0.9")
            assert "sealer etcd backup -o prod.snapshot" in err.value.message
            assert "expires 60s after its last renewal" in (err.value.hint or "")

    asyncio.run(go())


def test_a_restore_takes_the_lease_back_from_the_snapshot_but_not_from_a_later_holder(
    apiserver: Path,  # noqa: F811
) -> None:
    client = Client(KubeConfig.from_file(apiserver))
    began = datetime.datetime.now(UTC)
    before, after = began - datetime.timedelta(seconds=5), began + datetime.timedelta(seconds=1)
    alive = _backup_holder(1)  # pid 1 runs here: it looks alive, and is not expired
    _lease(client, "snap", alive, before)
    _lease(client, "taken", {**alive, "command": "sealer apply -f Clusterfile"}, after)
    me = current_holder_info("sealer etcd restore prod.snapshot -y")

    async def go() -> None:
        async with Kube(apiserver.read_text()) as kube:
            await lease.reclaim(kube, "snap", me, began)
            holder, _ = _holder(client, "snap")
            assert (holder["pid"], holder["command"]) == (os.getpid(), "sealer etcd restore prod.snapshot -y")
            await lease.reclaim(kube, "snap", me, began)  # ours already: a resumed run takes it again
            await lease.reclaim(kube, "none", me, began)  # the snapshot had none
            assert _holder(client, "none")[0]["pid"] == os.getpid()
            with pytest.raises(LockHeldError) as err:
                await lease.reclaim(kube, "taken", me, began)
            assert "'sealer apply -f Clusterfile'" in err.value.message
            assert "taken after this restore began" in err.value.message
            assert "run the same restore again" in (err.value.hint or "")
            assert _holder(client, "taken")[0]["command"] == "sealer apply -f Clusterfile"

    asyncio.run(go())


def test_renewals_only_touch_our_own_lease(apiserver: Path) -> None:  # noqa: F811
    client = Client(KubeConfig.from_file(apiserver))
    long_ago = datetime.datetime.now(UTC) - datetime.timedelta(minutes=5)
    _lease(client, "c", _backup_holder(1), long_ago)
    me = current_holder_info("sealer etcd restore prod.snapshot -y")

    async def go() -> None:
        async with Kube(apiserver.read_text()) as kube:
            reads = 0
            real_get = kube.client.get

            async def counting_get(*args: Any, **kw: Any) -> Any:
                nonlocal reads
                reads += 1
                return await real_get(*args, **kw)

            kube.client.get = counting_get  # type: ignore[method-assign]

            async def cycles(n: int) -> None:
                """Until the renewer has looked at the Lease n more times (a bound for a hang)."""
                start = reads
                for _ in range(2000):
                    if reads >= start + n:
                        return
                    await asyncio.sleep(0.01)
                raise AssertionError("the renewer does not run")

            renewer = lease.renewing(kube, "c", me, interval=0.01)
            try:
                await cycles(3)
                holder, renewed = _holder(client, "c")
                assert holder["pid"] == 1 and renewed == long_ago  # not renewed
                await lease.reclaim(kube, "c", me, datetime.datetime.now(UTC))
                _, taken = _holder(client, "c")
                await cycles(3)
                holder, renewed = _holder(client, "c")
                assert holder["pid"] == os.getpid() and renewed > taken
            finally:
                renewer.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await renewer

    asyncio.run(go())


def test_a_backup_holds_the_lease_while_it_snapshots_and_waits_for_no_one(
    apiserver: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sealer.apply import lifecycle
    from sealer.apply import restore as rs
    from sealer.state import ClusterState
    from tests.unit.apply.test_lifecycle import BASE

    client = Client(KubeConfig.from_file(apiserver))
    state = ClusterState("demo", tmp_path / "home")
    state.record_applied(BASE, runtime_type="k3s", image="e2e.local/k3s:1")
    state.write_admin_conf(apiserver.read_text())
    seen: list[dict[str, Any]] = []

    async def snapshot(st: ClusterState, out: Path, progress: Any = None) -> Path:
        seen.append(_holder(client, "demo")[0])  # the Lease while the runtime takes the snapshot
        out.write_text("snapshot")
        return out

    monkeypatch.setattr(lifecycle, "etcd_backup", snapshot)
    command = "sealer etcd backup -o b.snapshot"
    out = asyncio.run(rs.etcd_backup_held(state, tmp_path / "b.snapshot", command=command))
    assert out.read_text() == "snapshot"
    assert [(h["pid"], h["command"]) for h in seen] == [(os.getpid(), command)]
    with pytest.raises(ApiError) as gone:  # released afterwards
        client.get(Lease, "sealer-demo", namespace="kube-system")
    assert gone.value.status.code == 404
    # another operator changing the cluster: no snapshot, the holder named
    _lease(client, "demo", {**_backup_holder(1), "command": "sealer upgrade x:2"}, datetime.datetime.now(UTC))
    with pytest.raises(LockHeldError) as err:
        asyncio.run(rs.etcd_backup_held(state, tmp_path / "c.snapshot", command=command))
    assert "'sealer upgrade x:2'" in err.value.message and len(seen) == 1
    assert not (tmp_path / "c.snapshot").exists()
