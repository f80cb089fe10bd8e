"""`sealer etcd backup` and `sealer etcd restore` as day-2 operations. The restore is journaled like
every other operation: its plan digest is the snapshot file's sha256 and the cluster, its steps are
the runtime's (runtime/etcd_backup.py: "stop m1", "cluster-reset m0", "rejoin m2", ...), so running
the same restore again after a kill or a failure skips the finished steps and redoes the interrupted
one. Both hold the in-cluster Lease (apply/lease.py) while the API answers; a restore takes it back
from the restored datastore, whose Lease is the one of the snapshot's time. The restored datastore
holds the Nodes and the in-cluster Clusterfile of backup time: the restore ends by bringing them to
the last-applied Clusterfile (labels and taints, Nodes of removed hosts, the saved state) and by
removing the snapshot's copies from the masters."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sealer.apply import kubeops
from sealer.apply import lease as leasemod
from sealer.apply.engine import RunOptions, Steps, _all_hosts
from sealer.apply.lifecycle import Day2, Day2Options, _installed, _mirror_journal, labels_taints_step
from sealer.apply.progress import Progress
from sealer.errors import HostError, RuntimeErrorSealer, SealerError, StateError
from sealer.infra.fleet import Fleet
from sealer.kube.client import Kube
from sealer.model.cluster import Clusterfile, Host
from sealer.model.clusterfile import dump_clusterfile, parse_clusterfile
from sealer.plan.planner import labels_change, taints_change
from sealer.runtime import etcd_backup
from sealer.runtime.base import ClusterRuntime, RuntimeContext, registers_node
from sealer.runtime.containerd import run_checked
from sealer.state import ClusterState, Journal
from sealer.state.files import atomic_write
from sealer.state.journal import Operation, StepKey, digest_of
from sealer.state.lock import LockHolder, current_holder_info

KIND = "etcd-restore"  # the journal's operation kind, and the action of every step
MEMO = "etcd-restore.json"  # decisions of the restore being run, for a resumed run
REMOTE_DIR = "/var/lib/sealer/restore"
CLEANUP = "cleanup"  # the last step: the snapshot's copies removed from the masters
API_TIMEOUT = 300.0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(partial(f.read, 1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def plan_digest(current: Clusterfile, runtime: str, snapshot_sha256: str) -> str:
    """What makes two restores the same one: the snapshot's content and the cluster it goes onto
    (not the file's name or place: the same backup copied elsewhere resumes too)."""
    return digest_of(
        {"kind": KIND, "snapshot": snapshot_sha256, "runtime": runtime, "cluster": dump_clusterfile(current)}
    )


# Steps that change nothing on the cluster: a restore that stopped before any other step began
# (a file that is no backup of this cluster, refused) leaves nothing to finish.
LOOK_ONLY = frozenset({"upload", "prepare"})


def unfinished_restore(state: ClusterState) -> Operation | None:
    """The cluster's last operation when it is a restore that did not finish (killed or failed)
    after it began to change the cluster."""
    journal = Journal(state.journal_path)
    ops = journal.operations()
    if not ops or ops[-1].kind != KIND or ops[-1].status == "done":
        return None
    last = ops[-1]
    changed = any(e.op == last.op and e.type == "step" and e.step not in LOOK_ONLY for e in journal.entries())
    return last if changed else None


def _recorded_command(state: ClusterState, op: Operation) -> str:
    last = state.read_meta().get("last_operation")
    if isinstance(last, dict) and last.get("op") == op.op and last.get("command"):
        return str(last["command"])
    return "sealer etcd restore FILE"


def refuse_if_restore_unfinished(state: ClusterState, doing: str) -> None:
    """A half-restored cluster (control planes stopped, some hosts not re-joined) is no base for
    another change: say so, and how to finish the restore or start over."""
    op = unfinished_restore(state)
    if op is None:
        return
    raise StateError(
        f"cluster {state.name}: an etcd restore did not finish (operation {op.op}, started "
        f"{op.started}, {op.status}): {doing} would act on a half-restored cluster",
        f"finish it first: run `{_recorded_command(state, op)}` again (it continues where it stopped; "
        "`sealer status` shows the step); or start over with `sealer delete --all` and `sealer run`",
    )


# the journaled run ---------------------------------------------------------------------------------
class Memo:
    """The restore's decisions (taken before anything changed) in $SEALER_HOME/<cluster>/MEMO, 0600,
    for the operation `op`; a file of another operation is ignored and replaced."""

    def __init__(self, path: Path, op: str) -> None:
        self.path, self.op = path, op
        self.values: dict[str, str] = {}
        with contextlib.suppress(OSError, ValueError, TypeError):
            data = json.loads(path.read_text())
            if data.get("op") == op and isinstance(data.get("memo"), dict):
                self.values = {str(k): str(v) for k, v in data["memo"].items()}

    def set(self, key: str, value: str) -> None:
        self.values[key] = value
        atomic_write(self.path, json.dumps({"op": self.op, "memo": self.values}, sort_keys=True) + "\n")

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)


class JournaledRun:
    """etcd_backup.RestoreRun over the journal: step `name` on a host is the journal's step
    (KIND, name, host) with the inputs given; a phase of the progress output per step name."""

    def __init__(
        self, steps: Steps, memo: Memo, progress: Progress, api_back: Callable[[], Awaitable[None]]
    ) -> None:
        self.steps, self.memo, self.progress = steps, memo, progress
        self._api_back = api_back
        self._phase: str | None = None

    async def step(self, name: str, host: Host, inputs: Any, work: etcd_backup.Work) -> None:
        if name != self._phase:
            self._phase = name
            self.progress.phase(name)
        await self.steps.step(KIND, name, host.ip, inputs, work)

    async def each(
        self, name: str, hosts: Sequence[Host], work: Callable[[Host], Awaitable[str | None]]
    ) -> None:
        await _all_hosts(list(hosts), lambda h: self.step(name, h, {}, partial(work, h)))

    def finished(self, name: str, host: Host) -> bool:
        """Whether the step `name` (of `each`, no inputs) on `host` finished in this operation."""
        return StepKey(KIND, name, host.ip, digest_of({})) in self.steps.finished

    def remember(self, key: str, value: str) -> None:
        self.memo.set(key, value)

    def recall(self, key: str) -> str | None:
        return self.memo.values.get(key)

    async def api_back(self) -> None:
        await self._api_back()


class RestoreLease:
    """The in-cluster Lease across a restore: taken while the old API answers (a cluster whose API
    is down, which is often why it is restored, is restored without it, with a warning), held
    through the outage, taken back from the restored datastore when its API answers, released at
    the end."""

    def __init__(
        self, state: ClusterState, runtime: ClusterRuntime, ctx: RuntimeContext, command: str, since: datetime
    ) -> None:
        self.state, self.runtime, self.ctx, self.since = state, runtime, ctx, since
        self.cluster = ctx.cluster.name
        self.me: LockHolder = current_holder_info(command)
        self.command = command
        self.kube: Kube | None = None
        self.renewer: asyncio.Task[None] | None = None

    async def _stop(self) -> None:
        if self.renewer is not None:
            self.renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.renewer
            self.renewer = None
        if self.kube is not None:
            await self.kube.close()
            self.kube = None

    async def take(self, progress: Progress) -> None:
        text = self.state.read_admin_conf()
        try:
            if text is None:
                text = await self.runtime.kubeconfig(self.ctx)
            kube = Kube(text, timeout=10.0)
        except (SealerError, OSError) as err:
            progress.warn(f"in-cluster lease not taken (no kubeconfig: {err}); restoring without it")
            return
        try:
            self.me = await leasemod.acquire(kube, self.cluster, self.command)
        except kubeops._TRANSIENT as err:
            await kube.close()
            progress.warn(
                f"in-cluster lease not taken (API: {kubeops._message(err)}); it is taken once the "
                "restored API answers"
            )
            return
        except BaseException:
            await kube.close()
            raise
        self.kube = kube
        self.renewer = leasemod.renewing(kube, self.cluster, self.me)

    async def back(self) -> None:
        """The restored API answers: a fresh kubeconfig (a restore may bring another CA back), the
        Lease taken back from the snapshot's holder."""
        await self._stop()
        text = await self.runtime.kubeconfig(self.ctx)
        self.state.write_admin_conf(text)
        kube = Kube(text)
        try:
            await kubeops.wait_api(kube, API_TIMEOUT)
            await leasemod.reclaim(kube, self.cluster, self.me, self.since)
        except BaseException:
            await kube.close()
            raise
        self.kube = kube
        self.renewer = leasemod.renewing(kube, self.cluster, self.me)

    async def release(self) -> None:
        if self.kube is not None:
            with contextlib.suppress(Exception):
                await leasemod.release(self.kube, self.cluster, self.me)
        await self._stop()


@dataclass
class RestoreResult:
    remote: str  # where the snapshot was put on master0
    resumed: bool
    steps_run: int
    steps_skipped: int
    seconds: float


def _started(op: Operation) -> datetime:
    try:
        at = datetime.fromisoformat(op.started)
    except ValueError:
        return datetime.now(UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def etcd_restore(
    state: ClusterState, snapshot: Path, *, command: str, progress: Progress | None = None
) -> RestoreResult:
    """Restore the cluster's datastore from `snapshot` as a journaled operation (the caller holds
    the cluster lock). Run again with the same file after a kill or failure, it resumes."""
    progress = progress or Progress()
    started = time.monotonic()
    current, runtime = _installed(state)
    if not snapshot.is_file():
        raise StateError(f"{snapshot}: no such snapshot file", "give the file `sealer etcd backup` wrote")
    if not etcd_backup.can_restore(runtime):
        raise RuntimeErrorSealer(
            f"cluster {current.cluster.name}: the {runtime.name} runtime of this sealer cannot restore "
            "its datastore yet",
            "restore with the runtime's own tool on master0",
        )
    sha = file_sha256(snapshot)
    digest = plan_digest(current, runtime.name, sha)
    previous = unfinished_restore(state)
    if previous is not None and previous.plan != digest:
        raise StateError(
            f"cluster {state.name}: another etcd restore did not finish (operation {previous.op}, "
            f"started {previous.started}): {_recorded_command(state, previous)}; {snapshot} is another "
            "snapshot or the cluster changed since",
            "finish that restore first (run it again: it continues where it stopped), then restore "
            f"{snapshot}; or start over with `sealer delete --all` and `sealer run`",
        )
    d2 = Day2(current, current, state, RunOptions(command=command), Day2Options(), progress)
    remote = f"{REMOTE_DIR}/{sha[:16]}.snapshot"
    async with Fleet(
        known_hosts=state.known_hosts_path, logdir=state.logs_dir / "etcd", cluster=current.cluster.name
    ) as fleet:
        # Every host is touched and a runtime may re-install a host's services (k0s re-joins
        # controllers): node names, the image and the private registry exactly as at install.
        await d2.gather(fleet, need_image=True)
        ctx = d2.context(fleet, d2.registry_endpoint())
        # what the runtime does on which host (where it kept the state before the restore, ...)
        ctx.say = lambda host, message: progress.note(f"{host}: {message}")
        journal = state.journal()
        try:
            run = journal.resume_or_begin(KIND, digest)
            state.update_meta(
                last_operation={"op": run.op, "kind": KIND, "command": command, "plan": f"restore {snapshot}"}
            )
            if run.resumed:
                progress.note(
                    f"resuming operation {run.op}: {len(run.finished)} finished step(s) are not redone"
                )
            ops = {o.op: o for o in journal.operations()}
            lease = RestoreLease(state, runtime, ctx, command, _started(ops[run.op]))
            memo = Memo(state.dir / MEMO, run.op)
            steps = Steps(journal, run.op, run.finished, progress)
            restore_run = JournaledRun(steps, memo, progress, lease.back)
            try:
                await lease.take(progress)
                await _restore(restore_run, runtime, ctx, snapshot, sha, remote, state, current)
            except BaseException as err:
                progress.end_phase(failed=True)
                journal.end(run.op, "failed", err.message if isinstance(err, SealerError) else repr(err))
                if isinstance(err, Exception) and unfinished_restore(state) is None:
                    await _drop_refused_upload(ctx, remote)
                if isinstance(err, SealerError):
                    raise _resumable(err, state, command, remote, snapshot) from None
                raise
            finally:
                await lease.release()
            journal.end(run.op, "done")
            memo.drop()
        finally:
            journal.close()
            await _mirror_journal(d2, fleet)
    return RestoreResult(remote, run.resumed, steps.run_count, steps.skip_count, time.monotonic() - started)


async def _drop_refused_upload(ctx: RuntimeContext, remote: str) -> None:
    """A restore that failed before it changed anything (a file that is no backup of this cluster,
    refused) is not resumed: its upload would stay on master0 for good."""
    with contextlib.suppress(Exception):
        await ctx.fleet.run(ctx.target(ctx.master0), etcd_backup.leftovers_script(remote), sudo=True)


def _resumable(
    err: SealerError, state: ClusterState, command: str, remote: str, snapshot: Path
) -> SealerError:
    """The failure as the operator should read it: the snapshot named as given, not as uploaded; a
    failure the runtime describes as "nothing was changed" stays so, any other says that the same
    command continues from the failed step."""
    message = err.message.replace(remote, str(snapshot))
    hint = err.hint or ""
    if "nothing was changed" in hint:
        return err if message == err.message else RuntimeErrorSealer(message, err.hint)
    more = (
        f"then run `{command}` again: it continues from the failed step "
        f"(`sealer status --cluster {state.name}` shows it)"
    )
    if isinstance(err, HostError):
        return HostError(err.host, message.removeprefix(f"{err.host}: "), f"{hint}; {more}" if hint else more)
    return RuntimeErrorSealer(message, f"{hint}; {more}" if hint else more)


async def _restore(
    run: JournaledRun,
    runtime: ClusterRuntime,
    ctx: RuntimeContext,
    snapshot: Path,
    sha: str,
    remote: str,
    state: ClusterState,
    current: Clusterfile,
) -> None:
    m0 = ctx.master0
    target = ctx.target(m0)

    # Not a skippable step: later steps (k0s's restore, a bare snapshot's) read the file, so every
    # run, a resumed one too, makes sure master0 has it, and sends it only when it has not.
    run.progress.phase("upload")
    prepare = f"mkdir -p {REMOTE_DIR} && chmod 0700 {REMOTE_DIR} && (sha256sum {remote} 2>/dev/null || true)"
    if run.finished(CLEANUP, m0):
        # killed after the last step removed the snapshot: every step that reads it is done
        run.progress.host(m0.ip, "skipped", "its copy was removed by the finished restore")
    elif (await ctx.fleet.run(target, prepare, sudo=True)).check().stdout.split()[:1] == [sha]:
        run.progress.host(m0.ip, "skipped", f"{remote} already there")
    else:
        await ctx.fleet.put(target, snapshot, remote, sudo=True)
        (await ctx.fleet.run(target, f"chmod 0600 {remote}", sudo=True)).check()
        run.progress.host(m0.ip, "ok", remote)
    await etcd_backup.restore_steps(runtime, ctx, remote, run)
    # A k0s archive or a kubeadm bundle may bring another CA back: the kubeconfig is fetched
    # again rather than trusted.
    state.write_admin_conf(await runtime.kubeconfig(ctx))
    text = state.read_admin_conf()
    assert text is not None
    async with Kube(text) as kube:
        await finish_steps(run, runtime, ctx, current, kube, remote, text)
    run.progress.end_phase()


def _node_hosts(runtime: ClusterRuntime, ctx: RuntimeContext, current: Clusterfile) -> list[Host]:
    return [h for h in current.cluster.hosts if registers_node(runtime, ctx, h)]


async def _before(run: etcd_backup.RestoreRun, kube: Kube, ctx: RuntimeContext) -> dict[str, Host]:
    """The hosts of the Clusterfile sealer had applied when the snapshot was taken (the restored
    datastore's copy, remembered before save-state replaces it), by address."""
    saved = run.recall("clusterfile-before")
    if saved is None:
        saved = await kube.read_clusterfile() or ""
        run.remember("clusterfile-before", saved)
    if not saved:
        return {}
    before, problems = parse_clusterfile(saved, "the Clusterfile in the restored datastore")
    if before is None:
        ctx.say(
            ctx.master0.ip,
            "the Clusterfile in the snapshot does not parse ("
            + "; ".join(p.message for p in problems[:2])
            + "): labels and taints it set that the Clusterfile no longer has stay on the Nodes",
        )
        return {}
    return {h.ip: h for h in before.cluster.hosts}


async def finish_steps(
    run: etcd_backup.RestoreRun,
    runtime: ClusterRuntime,
    ctx: RuntimeContext,
    current: Clusterfile,
    kube: Kube,
    remote: str,
    admin_conf: str,
) -> None:
    """After the runtime's steps the datastore is the snapshot's: its Nodes carry the labels and
    taints of backup time, hosts removed since have Nodes, the in-cluster state is the Clusterfile
    of backup time. These steps bring it to the last-applied Clusterfile, as `sealer apply` would,
    then remove the snapshot's copies from the masters."""
    m0 = ctx.master0
    hosts = list(current.cluster.hosts)
    node_hosts = _node_hosts(runtime, ctx, current)

    async def ready() -> str:
        nodes = await kubeops.wait_api(kube, API_TIMEOUT)
        by_ip = {a: n.name for n in nodes for a in n.addresses}
        # every host that is a Node, also one that joined after the backup and registers anew
        wanted = {h.ip: kubeops.NodeWait(by_ip.get(h.ip) or ctx.node_names[h.ip]) for h in node_hosts}
        await kubeops.wait_nodes(kube, wanted, API_TIMEOUT)
        return f"{len(wanted)} node(s) Ready"

    await run.step("nodes-ready", m0, {}, ready)

    try:
        before = await _before(run, kube, ctx)
        by_ip = {a: n.name for n in await kube.nodes() for a in n.addresses}
    except kubeops._TRANSIENT as err:
        raise RuntimeErrorSealer(
            f"the restored API {kube.server} failed while reading its Nodes and Clusterfile: "
            f"{kubeops._message(err)}",
            "the datastore is restored; check the API on master0 and run the same restore again to "
            "bring the Nodes to the Clusterfile",
        ) from None

    async def relabel(h: Host) -> None:
        old = before.get(h.ip)
        # what `sealer apply` takes off: set by the Clusterfile of backup time, not by this one
        labels = (labels_change(old, h) or {}).get("remove", []) if old is not None else []
        taints = (taints_change(old, h) or {}).get("remove", []) if old is not None else []
        name = by_ip.get(h.ip) or ctx.node_names[h.ip]
        inputs, work = labels_taints_step(kube, name, h, labels, taints)
        await run.step("labels-taints", h, inputs, work)

    await _all_hosts(node_hosts, relabel)
    ips = sorted(h.ip for h in hosts)
    names = {ctx.node_names[h.ip] for h in hosts if h.ip in ctx.node_names}

    async def forget_stale() -> str:
        stale = [
            n.name for n in await kube.nodes() if n.name not in names and not set(n.addresses) & set(ips)
        ]
        for name in stale:
            await kubeops.delete_node(kube, name)
        return f"deleted {', '.join(sorted(stale))}" if stale else "none"

    await run.step("delete-stale-nodes", m0, {"hosts": ips}, forget_stale)
    clusterfile = dump_clusterfile(current, redact=True)

    async def save() -> str:
        await kube.save_state(clusterfile, admin_conf)
        return "the Clusterfile in the cluster is the last-applied one again"

    await run.step("save-state", m0, {"clusterfile": clusterfile}, save)

    async def cleanup(h: Host) -> str:
        await run_checked(ctx, h, etcd_backup.leftovers_script(remote))
        return "snapshot copies removed"

    await run.each(CLEANUP, list(current.cluster.masters), cleanup)


# backup ----------------------------------------------------------------------------------------------
async def etcd_backup_held(
    state: ClusterState, out: Path, *, command: str, progress: Progress | None = None
) -> Path:
    """`sealer etcd backup` holding the in-cluster Lease the whole time (the caller holds the local
    lock): no snapshot is taken while another operator changes the cluster."""
    from sealer.apply.lifecycle import etcd_backup

    progress = progress or Progress()
    refuse_if_restore_unfinished(state, "a backup")
    _installed(state)
    name = state.name
    text = state.read_admin_conf()
    if text is None:
        progress.warn(f"in-cluster lease not taken (no {state.admin_conf_path})")
        return await etcd_backup(state, out, progress)
    kube = Kube(text, timeout=10.0)
    renewer: asyncio.Task[None] | None = None
    me: LockHolder | None = None
    try:
        try:
            me = await leasemod.acquire(kube, name, command)
            renewer = leasemod.renewing(kube, name, me)
        except kubeops._TRANSIENT as err:
            # Nobody changes the cluster through an API that does not answer; the runtime's own
            # snapshot says whether its datastore is there.
            progress.warn(f"in-cluster lease not taken (API: {kubeops._message(err)})")
        return await etcd_backup(state, out, progress)
    finally:
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        if me is not None:
            await leasemod.release(kube, name, me)
        await kube.close()
