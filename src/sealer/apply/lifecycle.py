"""Day 2: executes a Plan against a running cluster (scale up and down, one master to three, in-place
updates, upgrades), deletes a whole cluster, and reports status; every step journaled, so a re-run of
the same command after any failure resumes at the first unfinished step. Runtime-agnostic: it drives
the ClusterRuntime protocol and composes the create Engine's pieces (facts, rootfs, registry)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import shlex
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sealer.apply import facts as factsmod
from sealer.apply import kubeops
from sealer.apply import lease as leasemod
from sealer.apply.engine import (
    Engine,
    NodeSummary,
    PreflightError,
    RunOptions,
    RunSummary,
    Steps,
    _all_hosts,
)
from sealer.apply.progress import Progress
from sealer.errors import HostError, PlanError, RuntimeErrorSealer, SealerError, StateError
from sealer.infra.fleet import Fleet
from sealer.infra.host import target_from_host
from sealer.infra.shell import quote_path
from sealer.kube.client import Kube
from sealer.model.cluster import Cluster, Clusterfile, Host
from sealer.model.clusterfile import dump_clusterfile
from sealer.model.taint import parse_taint
from sealer.plan import (
    Action,
    ObservedState,
    Plan,
    effective_labels,
    make_plan,
    plan_clusterfile,
    plan_delete,
)
from sealer.runtime import lb
from sealer.runtime.base import (
    LABEL_CLUSTER_RUNTIME,
    ClusterRuntime,
    RegistryEndpoint,
    RuntimeContext,
    choose_runtime,
    registers_node,
)
from sealer.runtime.hooks import run_phase
from sealer.runtime.registry import htpasswd_line, remove_registry
from sealer.state import ClusterState, Journal, read_lock_holder

LABEL_RUNTIME_VERSION = "cluster.alpha.sealer.io/cluster-runtime-version"
DRAIN_TIMEOUT = 120.0
REMOVING_KINDS = frozenset({"remove-workers", "remove-master", "uninstall"})


@runtime_checkable
class HostUpgrader(Protocol):
    """Optional part of a ClusterRuntime: upgrade one host in place (binary replace + restart).
    With it, sealer orders the hosts itself (control planes one at a time, then workers in batches
    with cordon/drain) and journals each host; without it, `upgrade(ctx, image)` is one step."""

    async def upgrade_host(self, ctx: RuntimeContext, host: Host) -> None: ...


@runtime_checkable
class EtcdMemberRemover(Protocol):
    """Optional part of a ClusterRuntime whose removed masters must leave etcd explicitly (k0s,
    kubernetes): take a master's member out from master0, for a master that cannot do it itself
    (unreachable). Returns a warning for the operator when the member had to stay (kubernetes: an
    image without etcdctl); raises while it is still listed. k3s needs none: deleting the Node
    removes its member."""

    async def forget_member(self, ctx: RuntimeContext, master: Host) -> str | None: ...


@dataclass
class Day2Options:
    yes: bool = False  # no confirmation prompt for plans that remove hosts
    prune: bool = False  # delete --all: also remove the data dir (rootfs) on every host
    drain_timeout: float = DRAIN_TIMEOUT
    worker_batch: int = 1  # workers upgraded at a time
    confirm: Callable[[str], bool] | None = None  # asks the operator; None: refuse without --yes
    on_plan: Callable[[Plan], None] | None = None  # shows the plan before anything changes


@dataclass
class ApplyResult:
    cluster: str
    operation: str
    reason: str
    actions: int
    steps_run: int = 0
    steps_skipped: int = 0
    resumed: bool = False
    seconds: float = 0.0
    nodes: list[NodeSummary] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "operation": self.operation,
            "reason": self.reason,
            "actions": self.actions,
            "stepsRun": self.steps_run,
            "stepsSkipped": self.steps_skipped,
            "resumed": self.resumed,
            "seconds": round(self.seconds, 1),
            "nodes": [n.__dict__ for n in self.nodes],
            "warnings": self.warnings,
        }

    def lines(self) -> list[str]:
        if self.operation == "none":
            return [f"cluster {self.cluster}: {self.reason}"]
        resumed = f", resumed: {self.steps_skipped} finished step(s) not redone" if self.resumed else ""
        out = [
            f"cluster {self.cluster}: {self.operation} done: {self.reason}",
            f"took {self.seconds:.1f}s ({self.steps_run} step(s) run{resumed})",
        ]
        width = max((len(n.name) for n in self.nodes), default=4)
        for n in self.nodes:
            out.append(
                f"  {n.name:<{width}}  {n.ip:<15}  {','.join(n.roles):<12}  "
                f"{'Ready' if n.ready else 'NotReady':<8}  {n.version}"
            )
        out += [f"warning: {w}" for w in self.warnings]
        return out


# pure checks ---------------------------------------------------------------------------------------
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:[-+](.*))?$")


def parse_version(text: str) -> tuple[int, int, int, str]:
    """ "v1.30.6+k3s1" -> (1, 30, 6, "k3s1"); raises ValueError when it is not such a version."""
    m = _VERSION.match(text.strip())
    if m is None:
        raise ValueError(f"not a version: {text!r}")
    return int(m[1]), int(m[2]), int(m[3]), m[4] or ""


def _suffix_rank(suffix: str) -> tuple[int, str]:
    digits = re.findall(r"\d+", suffix)
    return (int(digits[-1]) if digits else 0, suffix)


def check_upgrade(runtime: str, current: Sequence[str], new: str | None, image: str) -> str:
    """Version-skew rules before an upgrade: no downgrade for any runtime (the datastore format of a
    newer release may not be readable by an older one); kubernetes one minor at a time (kubeadm's
    skew policy). `current` are the kubelet versions the nodes report. Returns a note for the plan."""
    if not new:
        return f"image {image} has no {LABEL_RUNTIME_VERSION} label: version skew not checked"
    try:
        target = parse_version(new)
    except ValueError:
        return f"image {image}: runtime version {new!r} is not a version: skew not checked"
    parsed = []
    for v in current:
        try:
            parsed.append(parse_version(v))
        except ValueError:
            continue
    if not parsed:
        return "no node reports a version: skew not checked"
    newest = max(parsed, key=lambda p: (p[:3], _suffix_rank(p[3])))
    oldest = min(parsed, key=lambda p: (p[:3], _suffix_rank(p[3])))
    shown = f"v{newest[0]}.{newest[1]}.{newest[2]}" + (f"+{newest[3]}" if newest[3] else "")
    if (target[:3], _suffix_rank(target[3])) < (newest[:3], _suffix_rank(newest[3])):
        raise PlanError(
            f"image {image} carries {runtime} {new}, older than the {shown} the cluster runs: "
            "downgrades are not supported",
            f"use an image with {runtime} {shown} or newer; to go back, restore an etcd backup "
            "(`sealer etcd restore`) onto a cluster created from the old image",
        )
    if runtime == "kubernetes" and target[1] - oldest[1] > 1 and target[0] == oldest[0]:
        raise PlanError(
            f"image {image} carries kubernetes {new}, but a node runs v{oldest[0]}.{oldest[1]}: "
            "kubeadm upgrades one minor version at a time",
            f"upgrade to a v{oldest[0]}.{oldest[1] + 1}.x image first, then to {new}",
        )
    return f"{runtime} {shown} -> {new}"


def removes_hosts(plan: Plan) -> list[str]:
    return [ip for a in plan.actions if a.kind in REMOVING_KINDS for ip in a.hosts]


def confirm_removal(plan: Plan, day2: Day2Options, what: str) -> None:
    """Plans that take hosts away are confirmed unless --yes: a wrong Clusterfile must not wipe nodes."""
    gone = removes_hosts(plan)
    if not gone or day2.yes:
        return
    question = f"{what} will reset {len(gone)} host(s): {', '.join(gone)}. Continue?"
    if day2.confirm is None or not day2.confirm(question):
        raise SealerError(
            f"cluster {plan.cluster}: not confirmed; nothing was changed",
            "answer yes at the prompt, or pass --yes (-y) to run without asking",
        )


def edit_hosts(
    cf: Clusterfile,
    *,
    add_masters: Sequence[str] = (),
    add_workers: Sequence[str] = (),
    remove: Sequence[str] = (),
) -> Clusterfile:
    """The Clusterfile with hosts added (a new host group per role, as Go sealer's scale-up writes)
    or removed (from whichever group lists them). Unknown removals and duplicate additions are errors
    naming the IPs."""
    from sealer.model.cluster import HostGroup

    cluster = cf.cluster
    have = {h.ip for h in cluster.hosts}
    again = sorted(ip for ip in [*add_masters, *add_workers] if ip in have)
    if again:
        raise PlanError(
            f"cluster {cluster.name}: {', '.join(again)} already in the cluster",
            "give only new IPs to scale-up; see the hosts with `sealer status`",
        )
    unknown = sorted(ip for ip in remove if ip not in have)
    if unknown:
        raise PlanError(
            f"cluster {cluster.name}: {', '.join(unknown)} not in the cluster",
            "give IPs of the cluster's hosts (see `sealer status`)",
        )
    gone = set(remove)
    groups = []
    for g in cluster.host_groups:
        ips = tuple(ip for ip in g.ips if ip not in gone)
        if ips:
            groups.append(replace(g, ips=ips))
    if add_masters:
        groups.append(HostGroup(ips=tuple(add_masters), roles=("master",)))
    if add_workers:
        groups.append(HostGroup(ips=tuple(add_workers), roles=("node",)))
    return replace(cf, cluster=replace(cluster, host_groups=tuple(groups)))


# the executor --------------------------------------------------------------------------------------
def _runtime_by_type(runtime_type: str, cluster: str) -> ClusterRuntime:
    return choose_runtime({LABEL_CLUSTER_RUNTIME: runtime_type}, None, f"cluster {cluster}")


class Day2:
    """Executes one update or delete Plan. Composes an Engine built on the desired Clusterfile
    (its facts, image, rootfs, registry and /etc/hosts pieces) plus the hosts being removed."""

    def __init__(
        self,
        desired: Clusterfile,
        current: Clusterfile,
        state: ClusterState,
        options: RunOptions,
        day2: Day2Options,
        progress: Progress,
    ) -> None:
        self.desired = desired
        self.current = current
        self.state = state
        self.options = options
        self.day2 = day2
        self.progress = progress
        self.engine = Engine(desired, state, options, progress)
        desired_ips = {h.ip for h in desired.cluster.hosts}
        self.removed: list[Host] = [h for h in current.cluster.hosts if h.ip not in desired_ips]
        for h in self.removed:
            self.engine.targets[h.ip] = target_from_host(h)
        self.by_ip: dict[str, Host] = {h.ip: h for h in [*desired.cluster.hosts, *self.removed]}
        self.unreachable: dict[str, str] = {}
        self.node_names: dict[str, str] = {}
        self.warnings: list[str] = []

    @property
    def cluster(self) -> Cluster:
        return self.desired.cluster

    # setup ----------------------------------------------------------------------------------------
    async def gather(self, fleet: Fleet, need_image: bool) -> None:
        """Facts of every host; a removed host may be unreachable (it is then only taken out of the
        API), every other host must answer."""
        self.progress.phase("connect + facts")
        hosts = list(self.by_ip.values())
        got = await factsmod.gather(fleet, [self.engine.targets[h.ip] for h in hosts], self.cluster.data_root)
        removed = {h.ip for h in self.removed}
        bad: list[str] = []
        for h in hosts:
            item = got[h.ip]
            if isinstance(item, SealerError):
                if h.ip in removed:
                    self.unreachable[h.ip] = item.message
                    self.progress.host(h.ip, "warning", "unreachable: removed from the API only")
                else:
                    bad.append(f"{h.ip}: {item.message}" + (f" ({item.hint})" if item.hint else ""))
                    self.progress.host(h.ip, "failed", "unreachable")
            else:
                self.engine.facts[h.ip] = item
                self.progress.host(h.ip, "ok", f"{item.arch} {item.os}")
        self.progress.end_phase(failed=bool(bad))
        if bad:
            raise PreflightError(
                f"cannot reach {len(bad)} host(s):\n  " + "\n  ".join(bad),
                "check the addresses, SSH credentials and that sshd runs; nothing was changed",
            )
        for ip, why in self.unreachable.items():
            self.warnings.append(
                f"{ip} could not be reached ({why}): removed from the cluster's API only; "
                "reset it by hand when it is back"
            )
        if need_image:
            self.progress.phase("image")
            arches = [self.engine.facts[h.ip].platform_arch for h in self.desired.cluster.hosts]
            await self.engine._image(arches)
            self.progress.host(self.cluster.name, "ok", str(self.cluster.image))
            self.progress.end_phase()

    def preflight(self, joining: Sequence[str]) -> None:
        """The create pre-flight, for hosts that join (the others already run the cluster)."""
        if not joining:
            return
        engine = self.engine
        local = self.cluster.registry.local
        registry_port = local.port if local is not None and self.cluster.registry.external is None else None
        # the joining hosts get the rootfs as `sealer run` sends it (spool room when fanned out)
        need, what, spooled = engine.disk_needs([self.by_ip[ip] for ip in joining])
        findings = factsmod.preflight(
            {ip: engine.facts[ip] for ip in joining},
            cluster=self.cluster.name,
            masters=[h.ip for h in self.cluster.masters],
            master0=engine.master0.ip,
            registry_port=registry_port,
            arches=sorted(engine.unpacked),
            need_bytes=need,
            need_what=what,
            spooled=spooled,
        )
        errors = [f for f in findings if f.severity == "error"]
        for f in findings:
            if f.severity == "warning":
                self.progress.warn(f"{f.host}: {f.message} ({f.hint})")
        if errors:
            lines = [f"{f.host}: {f.message}" + (f" — {f.hint}" if f.hint else "") for f in errors]
            raise PreflightError(
                f"pre-flight refused {len({f.host for f in errors})} joining host(s):\n  "
                + "\n  ".join(lines),
                "fix the hosts named above and run the same command again; nothing was changed",
            )

    def registry_endpoint(self) -> RegistryEndpoint | None:
        cluster = self.cluster
        local = cluster.registry.local
        if local is None or cluster.registry.external is not None:
            return None
        ca, _ = self.engine._pki()
        mirrored = tuple(self.engine._mirrored_registries()) if self.engine.info else ()
        return RegistryEndpoint(
            local.domain, local.port, ca.cert_pem, mirrored, local.username, local.password
        )

    def context(self, fleet: Fleet, registry: RegistryEndpoint | None) -> RuntimeContext:
        names = {ip: f.node_name for ip, f in self.engine.facts.items()}
        names.update(self.node_names)
        return RuntimeContext(
            fleet=fleet,
            cluster=self.cluster,
            targets=self.engine.targets,
            node_names=names,
            registry=registry,
        )

    def node_name(self, ip: str) -> str:
        if ip in self.node_names:
            return self.node_names[ip]
        f = self.engine.facts.get(ip)
        if f is None:
            raise RuntimeErrorSealer(
                f"{ip}: no node of the cluster has this address and the host cannot be reached",
                "nothing to remove there; drop it from the Clusterfile and apply again",
            )
        return f.node_name


async def _open_api(state: ClusterState, runtime: ClusterRuntime, ctx: RuntimeContext) -> Kube:
    """A client from the saved admin kubeconfig, fetched from master0 again when it is missing."""
    text = state.read_admin_conf()
    if text is None:
        text = await runtime.kubeconfig(ctx)
        state.write_admin_conf(text)
    return Kube(text)


# shared host work ----------------------------------------------------------------------------------
def _cleanup_script(cluster: Cluster, *, data: bool) -> str:
    begin = f"# BEGIN sealer cluster {cluster.name}"
    end = f"# END sealer cluster {cluster.name}"
    lines = [
        # Our /etc/hosts block out, the rest of the file (and its inode) kept.
        f"if grep -qxF {shlex.quote(begin)} /etc/hosts; then "
        f"kept=$(awk -v b={shlex.quote(begin)} -v e={shlex.quote(end)} "
        "'$0==b{skip=1;next} $0==e{skip=0;next} !skip' /etc/hosts); "
        'printf "%s\\n" "$kept" > /etc/hosts; fi',
        f'if [ "$(cat {factsmod.MARKER} 2>/dev/null)" = {shlex.quote(cluster.name)} ]; then '
        f"rm -f {factsmod.MARKER}; fi",
        "rmdir /etc/sealer 2>/dev/null",
    ]
    if data:
        cluster_dir = f"{cluster.data_root.rstrip('/')}/{cluster.name}"
        lines.append(f"rm -rf {quote_path(cluster_dir)}")
        lines.append(f"rmdir {quote_path(cluster.data_root)} 2>/dev/null")
    lines.append("true")
    return "\n".join(lines) + "\n"


async def _note(work: Awaitable[Any], note: str) -> str:
    await work
    return note


def labels_taints_step(
    kube: Kube, name: str, host: Host, remove_labels: Sequence[str] = (), remove_taints: Sequence[str] = ()
) -> tuple[dict[str, Any], Callable[[], Awaitable[str]]]:
    """The inputs and the work of the journaled step that gives Node `name` its host's labels and
    taints from the Clusterfile (and takes off those given): day-2's `labels-taints`, and the end
    of an etcd restore (apply/restore.py), whose snapshot holds the Nodes of backup time."""
    labels = effective_labels(host)
    taints = [*host.taints, *(parse_taint(t) for t in remove_taints)]

    async def work() -> str:
        await kube.set_labels(name, labels, remove_labels)
        await kube.set_taints(name, taints)
        return f"{len(labels)} label(s), {len(host.taints)} taint(s)"

    inputs = {"labels": labels, "remove": list(remove_labels), "taints": [str(t) for t in taints]}
    return inputs, work


class Executor:
    """Runs the actions of a plan with journaled steps, in plan order."""

    def __init__(self, d2: Day2, fleet: Fleet, steps: Steps, runtime: ClusterRuntime, plan: Plan) -> None:
        self.d2 = d2
        self.fleet = fleet
        self.steps = steps
        self.runtime = runtime
        self.plan = plan
        self.kube: Kube | None = None
        self.ctx = d2.context(fleet, None)

    @property
    def progress(self) -> Progress:
        return self.d2.progress

    def image_id(self, ip: str) -> str:
        return self.d2.engine._unpacked_for(self.d2.by_ip[ip]).image_id

    async def _rootfs_step(self, action: Action, h: Host, *, master0: bool) -> None:
        """The image's rootfs on h (journalled: done once per image, root and role)."""
        inputs = {"image": self.image_id(h.ip), "root": self.d2.cluster.rootfs, "master0": master0}
        await self.steps.step(
            action.id, "rootfs", h.ip, inputs, lambda: self.d2.engine._distribute(self.fleet, h)
        )

    async def _etc_hosts_step(self, action: Action, h: Host) -> None:
        """sealer's block of /etc/hosts on h (journalled: redone when the block changes)."""
        engine = self.d2.engine
        await self.steps.step(
            action.id, "etc-hosts", h.ip, engine._hosts_block(), lambda: engine._etc_hosts(self.fleet, h)
        )

    async def api(self) -> Kube:
        if self.kube is None:
            self.kube = await _open_api(self.d2.state, self.runtime, self.ctx)
        return self.kube

    async def close(self) -> None:
        if self.kube is not None:
            await self.kube.close()

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[None]:
        """The in-cluster half of the cluster lock, held while the plan runs."""
        kube = await self.api()
        async with leasemod.held(kube, self.plan.cluster, self.d2.options.command):
            yield

    async def learn_node_names(self) -> None:
        """Node names by address from the API (what the hosts registered as); the hosts' own
        hostnames are the fallback. Hosts being removed that cannot be reached need it."""
        try:
            by_ip = await kubeops.node_names_by_ip(await self.api())
        except kubeops._TRANSIENT as err:
            raise RuntimeErrorSealer(
                f"cannot list the cluster's nodes: {kubeops._message(err)}",
                "the API server on master0 must answer to remove unreachable hosts; check it and "
                "run the same command again",
            )
        for ip in self.d2.by_ip:
            if ip in by_ip:
                self.d2.node_names[ip] = by_ip[ip]
        self.ctx = self.d2.context(self.fleet, self.ctx.registry)

    async def phase(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        self.progress.phase(name)
        failed = True
        try:
            await work()
            failed = False
        finally:
            self.progress.end_phase(failed=failed)

    # actions --------------------------------------------------------------------------------------
    async def run(self) -> None:
        await self.learn_node_names()
        for action in self.plan.actions:
            handler = getattr(self, "do_" + action.kind.replace("-", "_"))
            await handler(action)

    async def do_remove_workers(self, action: Action) -> None:
        hosts = [self.d2.by_ip[ip] for ip in action.hosts]
        await self.phase(
            "remove workers", lambda: _all_hosts(hosts, lambda h: self.remove_host(action, h, False))
        )

    async def do_remove_master(self, action: Action) -> None:
        host = self.d2.by_ip[action.hosts[0]]
        if host.ip == self.d2.engine.master0.ip or not self.d2.cluster.masters:
            # The planner refuses this already; a second guard, since the host would be wiped.
            raise PlanError(
                f"cluster {self.plan.cluster}: {host.ip} is master0 or the last master and cannot be removed",
                "delete the whole cluster with `sealer delete --all`",
            )
        await self.phase("remove master", lambda: self.remove_host(action, host, True))

    async def remove_host(self, action: Action, host: Host, master: bool) -> None:
        """Drain, delete the Node, then let the runtime reset the host. The Node goes first: for a
        k3s server its deletion is what removes the etcd member, and that must happen while the
        server still runs (a stopped member of two would cost etcd its quorum)."""
        ip = host.ip
        reachable = ip not in self.d2.unreachable
        name = self.d2.node_name(ip) if reachable or ip in self.d2.node_names else None
        kube = await self.api()
        if name is not None:
            timeout = self.d2.day2.drain_timeout

            async def drain() -> str:
                moved = await kubeops.drain(kube, name, timeout)
                return f"cordoned, {moved} pod(s) moved"

            async def delete() -> str:
                return "node deleted" if await kubeops.delete_node(kube, name) else "node was gone"

            await self.steps.step(action.id, "drain", ip, {"node": name}, drain)
            await self.steps.step(action.id, "delete-node", ip, {"node": name}, delete)
        if not reachable:
            if master:
                await self._forget_unreachable_member(action, host)
            return
        # The clean-phase hooks of the image, while its rootfs is still on the host.
        plugins = self.d2.engine._plugins() if self.d2.engine.unpacked else []
        await self.hook_step(action, "pre-clean-host", plugins, [host], ip)
        await self.steps.step(
            action.id,
            "runtime-remove",
            ip,
            {"runtime": self.runtime.name, "master": master},
            lambda: _note(
                self.runtime.remove(self.ctx, [host] if master else [], [] if master else [host]), "reset"
            ),
        )
        # post-clean-host before sealer's own clean-up: the hooks run from the rootfs it removes.
        await self.hook_step(action, "post-clean-host", plugins, [host], ip)
        await self.steps.step(
            action.id,
            "cleanup",
            ip,
            {"data": True},
            lambda: self.run_script(host, _cleanup_script(self.d2.current.cluster, data=True), "cleaned"),
        )

    async def _forget_unreachable_member(self, action: Action, host: Host) -> None:
        """An unreachable master cannot leave etcd itself; left as a member it would count against
        quorum from now on, so the runtime removes it from master0 (k0s, kubernetes; k3s's went with
        its Node). What the runtime could not remove and says so is the operator's warning."""
        runtime = self.runtime
        if isinstance(runtime, EtcdMemberRemover):

            async def forget() -> str:
                left = await runtime.forget_member(self.ctx, host)
                if left:
                    self.d2.warnings.append(f"{host.ip} (unreachable): {left}")
                    return "etcd member left in place"
                return "etcd member removed from master0"

            await self.steps.step(action.id, "etcd-forget", host.ip, {"runtime": runtime.name}, forget)
        # The runtime's remove (which updates them) does not run for a host it cannot reach: the
        # workers' balancers would keep sending to the dead master until their health checks give up.
        await self.steps.step(
            action.id,
            "balancers",
            host.ip,
            {"masters": [m.ip for m in self.d2.cluster.masters]},
            lambda: _note(lb.refresh_balancers(self.ctx), "workers' API balancers updated"),
        )

    async def run_script(self, host: Host, script: str, note: str) -> str:
        (await self.fleet.run(self.d2.engine.targets[host.ip], script, sudo=True, timeout=120)).check()
        return note

    async def do_join_master(self, action: Action) -> None:
        await self.join(action, masters=True)

    async def do_join_workers(self, action: Action) -> None:
        await self.join(action, masters=False)

    async def join(self, action: Action, masters: bool) -> None:
        engine = self.d2.engine
        hosts = [self.d2.by_ip[ip] for ip in action.hosts]
        self.ctx.registry = self.d2.registry_endpoint()
        if action.details.get("rejoin"):
            # A host that was a node and is no more (deleted by hand, reinstalled): it is reset and
            # its old identity (k3s's node password) forgotten, or the runtime would refuse it.
            kube = await self.api()

            async def forget(h: Host) -> None:
                name = self.d2.node_name(h.ip)
                await self.steps.step(
                    action.id,
                    "reset",
                    h.ip,
                    {"runtime": self.runtime.name},
                    lambda: _note(self.runtime.reset(self.ctx, [h]), "reset"),
                )
                await self.steps.step(
                    action.id,
                    "forget-node",
                    h.ip,
                    {"node": name},
                    lambda: _note(kubeops.delete_node(kube, name), "old identity removed"),
                )

            await self.phase("reset lost hosts", lambda: _all_hosts(hosts, forget))

        async def copy(h: Host) -> None:
            await self._rootfs_step(action, h, master0=False)
            await self._etc_hosts_step(action, h)

        await self.phase(
            "distribute rootfs", lambda: engine.distribute(self.fleet, self.steps, action.id, hosts, copy)
        )

        async def join_one(h: Host) -> None:
            await self.steps.step(
                action.id,
                "runtime",
                h.ip,
                {"image": self.image_id(h.ip), "runtime": self.runtime.name},
                lambda: _note(
                    self.runtime.join(self.ctx, [h] if masters else [], [] if masters else [h]), "joined"
                ),
            )

        plugins = engine._plugins()
        key = ",".join(action.hosts)
        await self.hook(action, "pre-init-host", plugins, hosts, key)
        what = "join master" if masters else "join workers"
        if masters:  # one at a time: etcd keeps quorum while members are added
            for h in hosts:
                await self.phase(f"{self.runtime.name} {what}", partial(join_one, h))
        else:
            await self.phase(f"{self.runtime.name} {what}", lambda: _all_hosts(hosts, join_one))
        kube = await self.api()
        # k0s controllers without a worker are no Nodes: nothing to wait for, label or taint
        node_hosts = [h for h in hosts if registers_node(self.runtime, self.ctx, h)]
        wanted = {h.ip: kubeops.NodeWait(self.ctx.node_names[h.ip]) for h in node_hosts}

        async def ready() -> None:
            for s in await kubeops.wait_nodes(kube, wanted, self.d2.options.ready_timeout):
                self.progress.host(s.name, "ok", "Ready")

        await self.phase("nodes Ready", ready)
        await self.phase("labels + taints", lambda: _all_hosts(node_hosts, lambda h: self.label(action, h)))
        await self.hook(action, "post-init-host", plugins, hosts, key)

    async def label(
        self, action: Action, host: Host, remove_labels: Sequence[str] = (), remove_taints: Sequence[str] = ()
    ) -> None:
        kube = await self.api()
        name = self.d2.node_name(host.ip)
        inputs, work = labels_taints_step(kube, name, host, remove_labels, remove_taints)
        await self.steps.step(action.id, "labels-taints", host.ip, inputs, work)

    async def do_update_labels(self, action: Action) -> None:
        remove = list(action.details.get("remove") or [])
        hosts = [self.d2.by_ip[ip] for ip in action.hosts]
        await self.phase(
            "labels", lambda: _all_hosts(hosts, lambda h: self.label(action, h, remove_labels=remove))
        )

    async def do_update_taints(self, action: Action) -> None:
        remove = list(action.details.get("remove") or [])
        hosts = [self.d2.by_ip[ip] for ip in action.hosts]
        await self.phase(
            "taints", lambda: _all_hosts(hosts, lambda h: self.label(action, h, remove_taints=remove))
        )

    async def do_update_env(self, action: Action) -> None:
        # Env reaches hosts only through hooks and app commands; nothing on a host holds it.
        self.progress.phase("env")
        for ip in action.hosts:
            self.progress.host(ip, "ok", "used by hooks and apps from now on")
        self.progress.end_phase()

    async def do_update_host_aliases(self, action: Action) -> None:
        hosts = [self.d2.by_ip[ip] for ip in action.hosts]
        await self.phase("/etc/hosts", lambda: _all_hosts(hosts, lambda h: self._etc_hosts_step(action, h)))

    async def do_launch_apps(self, action: Action) -> None:
        engine = self.d2.engine
        cmds, _ = engine._launch_commands()

        async def work() -> None:
            if cmds:
                await self.steps.step(
                    action.id, "apps", engine.master0.ip, cmds, lambda: engine._launch(self.fleet, cmds)
                )
            else:
                self.progress.host(engine.master0.ip, "skipped", "nothing to launch")

        await self.phase("apps", work)

    async def do_upgrade(self, action: Action) -> None:
        engine = self.d2.engine
        cluster = self.d2.cluster
        hosts = [self.d2.by_ip[ip] for ip in action.hosts]
        m0 = engine.master0
        upgrader = _host_upgrader(self.runtime)
        if upgrader is None:  # _upgrade_precheck refused this before anything changed
            raise RuntimeErrorSealer(
                f"the {self.runtime.name} runtime cannot upgrade hosts in place", "nothing was upgraded"
            )

        await self.phase(
            "distribute new rootfs",
            lambda: engine.distribute(
                self.fleet, self.steps, action.id, hosts,
                lambda h: self._rootfs_step(action, h, master0=h.ip == m0.ip),
            ),
        )
        local = cluster.registry.local
        if local is not None and cluster.registry.external is None:
            _, cert = engine._pki()
            htpasswd = htpasswd_line(local.username, local.password or "") if local.username else None

            async def registry() -> None:
                await self.steps.step(
                    action.id,
                    "registry",
                    m0.ip,
                    {
                        "image": self.image_id(m0.ip),
                        "cert": hashlib.sha256(cert.cert_pem.encode()).hexdigest(),
                        "port": local.port,
                    },
                    lambda: engine._registry(self.fleet, local.port, cert, htpasswd),
                )

            await self.phase("private registry", registry)
        self.ctx.registry = self.d2.registry_endpoint()
        plugins = engine._plugins()
        await self.hook(action, "upgrade-host", plugins, hosts, "all")
        version = engine.info.labels.get(LABEL_RUNTIME_VERSION) if engine.info else None
        kube = await self.api()
        masters = [h for h in hosts if h.is_master]
        workers = [h for h in hosts if not h.is_master]

        async def upgrade_one(h: Host, drain: bool) -> None:
            name = self.d2.node_name(h.ip)
            inputs = {"image": self.image_id(h.ip), "runtime": self.runtime.name}
            if drain:
                timeout = self.d2.day2.drain_timeout
                await self.steps.step(
                    action.id,
                    "drain",
                    h.ip,
                    {"node": name, **inputs},
                    lambda: _note(kubeops.drain(kube, name, timeout), "drained"),
                )

            async def work() -> str:
                await upgrader.upgrade_host(self.ctx, h)
                if not registers_node(self.runtime, self.ctx, h):
                    return "upgraded (not a Node: nothing to wait for in the API)"
                await kubeops.wait_nodes(
                    kube, {h.ip: kubeops.NodeWait(name, version)}, self.d2.options.ready_timeout
                )
                return f"Ready{' at ' + version if version else ''}"

            await self.steps.step(action.id, "upgrade", h.ip, inputs, work)
            if drain:
                await self.steps.step(
                    action.id,
                    "uncordon",
                    h.ip,
                    {"node": name, **inputs},
                    lambda: _note(kubeops.set_unschedulable(kube, name, False), "uncordoned"),
                )

        for h in masters:  # control planes one at a time
            await self.phase(f"upgrade master {h.ip}", partial(upgrade_one, h, False))
        size = max(1, self.d2.day2.worker_batch)
        for i in range(0, len(workers), size):
            batch = workers[i : i + size]
            await self.phase("upgrade workers", partial(_all_hosts, batch, partial(upgrade_one, drain=True)))
        await self.hook(action, "upgrade", plugins, [m0], m0.ip)

    async def hook(
        self, action: Action, phase: str, plugins: Sequence[Any], hosts: Sequence[Host], key: str
    ) -> None:
        if any(phase in p.actions for p in plugins):
            await self.phase(f"{phase} hooks", lambda: self.hook_step(action, phase, plugins, hosts, key))

    async def hook_step(
        self, action: Action, phase: str, plugins: Sequence[Any], hosts: Sequence[Host], key: str
    ) -> None:
        """One journaled step running the image's and the Clusterfile's plugins of `phase`."""
        relevant = [p for p in plugins if phase in p.actions]
        if not relevant:
            return
        engine = self.d2.engine

        async def work() -> str:
            runs = await run_phase(
                self.fleet, phase, relevant, hosts, engine.master0, engine.targets, self.d2.cluster.rootfs
            )
            return f"{runs} hook run(s)"

        await self.steps.step(action.id, f"hook:{phase}", key, [p.name for p in relevant], work)

    # delete ---------------------------------------------------------------------------------------
    async def do_uninstall(self, action: Action) -> None:
        host = self.d2.by_ip[action.hosts[0]]
        await self.phase("uninstall master0", lambda: self.reset_host(action, host, master0=True))

    async def reset_host(self, action: Action, host: Host, master0: bool = False) -> None:
        if host.ip in self.d2.unreachable:
            self.progress.host(host.ip, "warning", "unreachable: not reset")
            return
        await self.steps.step(
            action.id,
            "reset",
            host.ip,
            {"runtime": self.runtime.name},
            lambda: _note(self.runtime.reset(self.ctx, [host]), "reset"),
        )
        if master0:
            await self.steps.step(
                action.id,
                "registry-remove",
                host.ip,
                {},
                lambda: _note(
                    remove_registry(self.fleet, self.d2.engine.targets[host.ip]), "registry removed"
                ),
            )
        prune = self.d2.day2.prune
        await self.steps.step(
            action.id,
            "cleanup",
            host.ip,
            {"data": prune},
            lambda: self.run_script(host, _cleanup_script(self.d2.current.cluster, data=prune), "cleaned"),
        )


class DeleteExecutor(Executor):
    """delete --all: no drains, no API node deletes (the whole datastore goes); every host reset."""

    async def learn_node_names(self) -> None:
        return None

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[None]:
        # A cluster being deleted may no longer answer: its lease is taken when it can be.
        try:
            kube = await self.api()
            holder = await leasemod.acquire(kube, self.plan.cluster, self.d2.options.command)
        except (*kubeops._TRANSIENT, RuntimeErrorSealer, HostError) as err:
            why = err.message if isinstance(err, SealerError) else kubeops._message(err)
            self.progress.warn(f"in-cluster lease not taken (API: {why})")
            yield
            return
        try:
            yield
        finally:
            await leasemod.release(kube, self.plan.cluster, holder)

    async def do_remove_workers(self, action: Action) -> None:
        hosts = [self.d2.by_ip[ip] for ip in action.hosts]
        await self.phase("reset workers", lambda: _all_hosts(hosts, lambda h: self.reset_host(action, h)))

    async def do_remove_master(self, action: Action) -> None:
        host = self.d2.by_ip[action.hosts[0]]
        await self.phase("reset master", lambda: self.reset_host(action, host))


# entry points ---------------------------------------------------------------------------------------
def _recorded_runtime(state: ClusterState) -> str | None:
    value = state.read_meta().get("runtime_type")
    return str(value) if value else None


async def _node_summaries(kube: Kube, hosts: Sequence[Host]) -> list[NodeSummary]:
    try:
        nodes = await kube.nodes()
    except kubeops._TRANSIENT:
        return []
    by_ip = {a: n for n in nodes for a in n.addresses}
    out = []
    for h in hosts:
        n = by_ip.get(h.ip)
        out.append(
            NodeSummary(
                n.name if n else "?", h.ip, list(h.roles), bool(n and n.ready), n.kubelet_version if n else ""
            )
        )
    return out


async def apply_cluster(
    desired: Clusterfile,
    *,
    state: ClusterState,
    options: RunOptions | None = None,
    day2: Day2Options | None = None,
    progress: Progress | None = None,
    kind: str = "apply",
) -> ApplyResult | RunSummary:
    """`sealer apply`: create the cluster if it has no last-applied state (as `sealer run` does),
    else plan desired vs last applied and execute it. The caller holds the cluster lock."""
    options = options or RunOptions()
    day2 = day2 or Day2Options()
    progress = progress or Progress()
    current = state.last_applied()
    if current is None:
        plan = make_plan(desired.cluster, None)
        if day2.on_plan:
            day2.on_plan(plan)
        state.clean_temps()
        return await Engine(desired, state, options, progress).run()
    started = time.monotonic()
    observed = ObservedState(
        runtime_type=_recorded_runtime(state), nodes=await observed_nodes(state, current)
    )
    # First the plan as far as it is known without the hosts and the image, so the operator sees
    # it and confirms removals before anything is even connected to.
    draft = plan_clusterfile(desired, current, observed)
    if day2.on_plan:
        day2.on_plan(draft)
    if draft.empty:
        return ApplyResult(desired.cluster.name, "none", draft.reason, 0, seconds=time.monotonic() - started)
    confirm_removal(draft, day2, f"applying this plan to cluster {draft.cluster}")
    d2 = Day2(desired, current, state, options, day2, progress)
    logdir = state.logs_dir / kind
    async with Fleet(
        known_hosts=state.known_hosts_path, logdir=logdir, cluster=desired.cluster.name
    ) as fleet:
        await d2.gather(fleet, need_image=True)
        engine = d2.engine
        assert engine.info is not None
        runtime = choose_runtime(
            engine.info.labels,
            next(iter(engine.unpacked.values())).read_metadata(),
            str(desired.cluster.image),
        )
        # Now with the image's runtime type checked against the cluster's.
        plan = plan_clusterfile(desired, current, observed, desired_runtime_type=runtime.name)
        if any(a.kind == "upgrade" for a in plan.actions):
            note = await _upgrade_precheck(d2, runtime, current, fleet)
            progress.note(f"upgrade: {note}")
        joining = [ip for a in plan.actions if a.kind in ("join-master", "join-workers") for ip in a.hosts]
        d2.preflight(joining)
        text = dump_clusterfile(desired)

        async def save_state(steps: Steps) -> None:
            # Only now is the desired Clusterfile what is installed: a failed run leaves the old one,
            # so the next plan still sees what really is there. A journaled step before the
            # operation's end: a kill after it cannot leave a finished operation with the old
            # Clusterfile, which would make the re-run plan (and redo) the whole change again.
            async def work() -> str:
                kube = await _open_api(state, runtime, d2.context(fleet, None))
                try:
                    redacted = dump_clusterfile(desired, redact=True)
                    await kube.save_state(redacted, state.read_admin_conf() or "")
                finally:
                    await kube.close()
                state.record_applied(
                    text,
                    runtime_type=runtime.name,
                    image=desired.cluster.image,
                    image_ids=sorted({u.image_id for u in engine.unpacked.values()}),
                )
                return "saved locally and in the cluster"

            progress.phase("state")
            await steps.step("state", "save-state", engine.master0.ip, {"clusterfile": text}, work)
            progress.end_phase()

        result = await _execute(d2, fleet, runtime, plan, kind, Executor, finish=save_state)
        ex_kube = await _open_api(state, runtime, d2.context(fleet, None))
        try:
            result.nodes = await _node_summaries(ex_kube, desired.cluster.hosts)
        finally:
            await ex_kube.close()
    result.seconds = time.monotonic() - started
    result.warnings = d2.warnings
    return result


async def observed_nodes(state: ClusterState, current: Clusterfile) -> frozenset[str] | None:
    """Which hosts of the last-applied Clusterfile are registered nodes, so those that are no longer
    (deleted by hand, reinstalled) are joined again; None (not looked at) when the API does not
    answer. Only those hosts count: nodes sealer does not manage, or hosts joining in this very
    operation, must not change the plan, or a re-run after a failure could not resume it."""
    text = state.read_admin_conf()
    if text is None:
        return None
    try:
        async with Kube(text, timeout=10.0) as kube:
            nodes = await kube.nodes()
    except (*kubeops._TRANSIENT, SealerError):
        return None
    known = {h.ip for h in current.cluster.hosts}
    return frozenset(a for n in nodes for a in n.addresses if a in known)


def _host_upgrader(runtime: ClusterRuntime) -> HostUpgrader | None:
    return runtime if isinstance(runtime, HostUpgrader) else None


async def _upgrade_precheck(d2: Day2, runtime: ClusterRuntime, current: Clusterfile, fleet: Fleet) -> str:
    info = d2.engine.info
    assert info is not None
    if _host_upgrader(runtime) is None:
        # Refused before the new rootfs is copied anywhere: a half-done upgrade helps nobody.
        raise PlanError(
            f"cluster {d2.cluster.name}: the {runtime.name} runtime of this sealer cannot upgrade hosts in "
            "place yet; nothing was changed",
            f"keep spec.image {current.cluster.image}; to move to {d2.cluster.image} now, back up "
            "(`sealer etcd backup` where supported), delete and re-create the cluster",
        )
    kube = await _open_api(d2.state, runtime, d2.context(fleet, None))
    try:
        versions = [n.kubelet_version for n in await kube.nodes()]
    except kubeops._TRANSIENT as err:
        raise RuntimeErrorSealer(
            f"cannot read the nodes' versions before the upgrade: {kubeops._message(err)}",
            "the API server must answer to check version skew; check master0 and run the same command again",
        )
    finally:
        await kube.close()
    return check_upgrade(
        runtime.name, versions, info.labels.get(LABEL_RUNTIME_VERSION), str(d2.cluster.image)
    )


async def _execute(
    d2: Day2,
    fleet: Fleet,
    runtime: ClusterRuntime,
    plan: Plan,
    kind: str,
    executor_class: type[Executor],
    finish: Callable[[Steps], Awaitable[None]] | None = None,
) -> ApplyResult:
    """Run the plan's actions as one journaled operation; `finish` is its last journaled step
    (recording what is now installed), run before the operation's end record."""
    state = d2.state
    journal: Journal = state.journal()
    try:
        run = journal.resume_or_begin(kind, plan.digest())
        state.update_meta(
            last_operation={"op": run.op, "kind": kind, "command": d2.options.command, "plan": plan.reason}
        )
        if run.resumed:
            d2.progress.note(
                f"resuming operation {run.op}: {len(run.finished)} finished step(s) are not redone"
            )
        steps = Steps(journal, run.op, run.finished, d2.progress)
        executor = executor_class(d2, fleet, steps, runtime, plan)
        try:
            async with executor.lease():
                await executor.run()
                if finish is not None:
                    await finish(steps)
        except BaseException as err:
            journal.end(run.op, "failed", err.message if isinstance(err, SealerError) else repr(err))
            raise
        finally:
            await executor.close()
        journal.end(run.op, "done")
    finally:
        journal.close()
        if kind != "delete":
            await _mirror_journal(d2, fleet)
    return ApplyResult(
        plan.cluster,
        plan.operation,
        plan.reason,
        len(plan.actions),
        steps_run=steps.run_count,
        steps_skipped=steps.skip_count,
        resumed=run.resumed,
    )


async def _mirror_journal(d2: Day2, fleet: Fleet) -> None:
    """A copy of the journal on master0 (in the cluster's data dir, 0600), so another operator
    machine can see what the last operation did if this one is lost. Best effort: a failure here
    must not hide the operation's own result."""
    cluster = d2.current.cluster
    remote_dir = f"{cluster.data_root.rstrip('/')}/{cluster.name}"
    target = d2.engine.targets[d2.engine.master0.ip]
    try:
        async with asyncio.timeout(30):
            prepare = f"mkdir -p {quote_path(remote_dir)} && chmod 0700 {quote_path(remote_dir)}"
            if (await fleet.run(target, prepare, sudo=True)).ok:
                await fleet.put(target, d2.state.journal_path, f"{remote_dir}/journal.jsonl", sudo=True)
    except (SealerError, OSError, TimeoutError) as err:
        d2.progress.warn(f"journal not copied to master0: {err}")


async def delete_cluster(
    state: ClusterState,
    *,
    options: RunOptions | None = None,
    day2: Day2Options | None = None,
    progress: Progress | None = None,
) -> ApplyResult:
    """`sealer delete --all`: reset every host (workers, then masters, master0 last), remove the
    registry and sealer's files there, then the cluster's state here. The caller holds the lock."""
    options = options or RunOptions()
    day2 = day2 or Day2Options()
    progress = progress or Progress()
    current = state.last_applied()
    if current is None:
        raise StateError(
            f"cluster {state.name} has no last-applied Clusterfile in {state.dir}: nothing to delete",
            "see `sealer status`; a cluster sealer never finished installing is removed with "
            "`sealer delete --all -f Clusterfile`",
        )
    runtime_type = _recorded_runtime(state)
    if runtime_type is None:
        raise StateError(
            f"cluster {state.name}: the runtime type is not recorded in {state.meta_path}",
            "it is written by every successful run/apply; restore the file or reset the hosts by hand",
        )
    return await _delete(current, runtime_type, state, options, day2, progress)


async def delete_unfinished(
    clusterfile: Clusterfile,
    runtime_type: str,
    state: ClusterState,
    *,
    options: RunOptions,
    day2: Day2Options,
    progress: Progress,
) -> ApplyResult:
    """delete --all of a cluster whose install never finished (no last-applied state): the given
    Clusterfile says which hosts to reset."""
    return await _delete(clusterfile, runtime_type, state, options, day2, progress)


async def _delete(
    current: Clusterfile,
    runtime_type: str,
    state: ClusterState,
    options: RunOptions,
    day2: Day2Options,
    progress: Progress,
) -> ApplyResult:
    started = time.monotonic()
    plan = plan_delete(current.cluster)
    if day2.on_plan:
        day2.on_plan(plan)
    confirm_removal(plan, day2, f"deleting cluster {plan.cluster}")
    runtime = _runtime_by_type(runtime_type, current.cluster.name)
    d2 = Day2(current, current, state, options, day2, progress)
    async with Fleet(
        known_hosts=state.known_hosts_path, logdir=state.logs_dir / "delete", cluster=current.cluster.name
    ) as fleet:
        # Every host of a deleted cluster counts as "removed": an unreachable one is reported, not fatal.
        d2.removed = list(current.cluster.hosts)
        await d2.gather(fleet, need_image=False)
        await _drop_in_cluster_state(state, progress)
        result = await _execute(d2, fleet, runtime, plan, "delete", DeleteExecutor)
    _drop_local_state(state)
    result.seconds = time.monotonic() - started
    result.warnings = d2.warnings
    return result


async def _drop_in_cluster_state(state: ClusterState, progress: Progress) -> None:
    """The in-cluster copy goes first, while the API still answers (best effort: the datastore is
    wiped with master0 anyway)."""
    text = state.read_admin_conf()
    if text is None:
        return
    from lightkube.core.exceptions import ApiError
    from lightkube.resources.core_v1 import ConfigMap, Secret

    from sealer.kube.client import CLUSTERFILE_CONFIGMAP, KUBECONFIG_SECRET, STATE_NAMESPACE

    kube = Kube(text, timeout=5.0)
    try:
        for res, name in ((ConfigMap, CLUSTERFILE_CONFIGMAP), (Secret, KUBECONFIG_SECRET)):
            try:
                await kube.client.delete(res, name, namespace=STATE_NAMESPACE)
            except ApiError as err:
                if err.status.code != 404:
                    progress.warn(f"in-cluster state {name}: {kubeops._message(err)}")
            except kubeops._TRANSIENT as err:
                progress.warn(f"in-cluster state not removed (API unreachable: {kubeops._message(err)})")
                return
    finally:
        await kube.close()


def _drop_local_state(state: ClusterState) -> None:
    """Everything of the cluster here except its journal and logs (kept for `sealer status` and
    post-mortems) and the lock (held by us)."""
    import shutil

    keep = {state.journal_path.name, state.logs_dir.name, state.lock_path.name}
    for path in state.dir.iterdir():
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    state.update_meta(deleted=True)


# status ----------------------------------------------------------------------------------------------
def cluster_status(state: ClusterState) -> dict[str, Any]:
    """What `sealer status` shows: the cluster as last applied, the last operation, and any
    unfinished step with the command that finishes it. Reads local state only (works offline)."""
    meta = state.read_meta()
    current = state.last_applied() if state.exists() else None
    journal = Journal(state.journal_path)
    ops = journal.operations()
    last = ops[-1] if ops else None
    unfinished: list[dict[str, Any]] = []
    if last is not None and last.status != "done":
        latest: dict[tuple[str, str, str | None], Any] = {}
        for e in journal.entries():
            if e.op == last.op and e.type == "step":
                latest[(e.action or "", e.step or "", e.host)] = e
        for (action, step, host), e in latest.items():
            if e.status != "done":
                unfinished.append(
                    {
                        "action": action,
                        "step": step,
                        "host": host,
                        "status": e.status,
                        "error": e.error,
                        "time": e.time,
                    }
                )
    locked, holder = read_lock_holder(state.lock_path)
    recorded = meta.get("last_operation") if isinstance(meta.get("last_operation"), dict) else None
    command = recorded.get("command") if recorded and last and recorded.get("op") == last.op else None
    data: dict[str, Any] = {
        "cluster": state.name,
        "stateDir": str(state.dir),
        "exists": current is not None,
        "deleted": bool(meta.get("deleted")) and current is None,
        "image": current.cluster.image if current else None,
        "runtime": meta.get("runtime_type"),
        "masters": [h.ip for h in current.cluster.masters] if current else [],
        "workers": [h.ip for h in current.cluster.workers] if current else [],
        "lastOperation": (
            {
                "op": last.op,
                "kind": last.kind,
                "status": last.status,
                "started": last.started,
                "ended": last.ended,
                "command": command,
            }
            if last
            else None
        ),
        "unfinished": unfinished,
        # An operation that holds the lock right now is running, not waiting to be finished.
        "runningNow": holder.describe() if locked and holder is not None else ("yes" if locked else None),
        "toFinish": (
            (command or "the same command again") if last and last.status != "done" and not locked else None
        ),
    }
    return data


# A step unfinished on more hosts than this is one line with a sample of its hosts; JSON keeps all.
_STATUS_PER_HOST = 5
_STATUS_SAMPLE = 10
_STATUS_ERRORS = 5


def _sample(ips: Sequence[str], shown: int = _STATUS_SAMPLE) -> str:
    more = f", +{len(ips) - shown} more" if len(ips) > shown else ""
    return ", ".join(ips[:shown]) + more


def _unfinished_lines(unfinished: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per unfinished step and host while few hosts share a step; beyond that one line per
    step with its hosts sampled (failed first) and its errors grouped by text, so a half-finished
    300-host upgrade reads in a screen instead of a thousand lines."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for u in unfinished:
        groups.setdefault((u["action"], u["step"]), []).append(u)
    lines: list[str] = []
    grouped = False
    for (action, step), us in groups.items():
        if len(us) <= _STATUS_PER_HOST:
            for u in us:
                err = f": {u['error']}" if u.get("error") else ""
                lines.append(f"  unfinished: {action} {step} on {u['host']} ({u['status']}){err}")
            continue
        grouped = True
        # failed hosts first: they are the ones to look at; the others were interrupted mid-step
        ordered = sorted(us, key=lambda u: u["status"] != "failed")
        statuses: dict[str, int] = {}
        for u in ordered:
            statuses[u["status"]] = statuses.get(u["status"], 0) + 1
        # "start" with no end: interrupted mid-step (or running now, which runningNow says)
        counts = ", ".join(f"{n} {'started' if st == 'start' else st}" for st, n in statuses.items())
        lines.append(
            f"  unfinished: {action} {step} on {len(us)} hosts ({counts}): "
            + _sample([str(u["host"]) for u in ordered])
        )
        by_error: dict[str, list[str]] = {}
        for u in ordered:
            if u.get("error"):
                host = str(u["host"])
                error = str(u["error"])
                # step errors name their host ("10.0.1.4: ..."); without it equal causes group together
                by_error.setdefault(error.removeprefix(f"{host}: "), []).append(host)
        ranked = sorted(by_error.items(), key=lambda item: -len(item[1]))
        for error, hosts in ranked[:_STATUS_ERRORS]:
            lines.append(f"    {len(hosts)} host(s) ({_sample(hosts, 3)}): {error}")
        if len(ranked) > _STATUS_ERRORS:
            others = sum(len(hosts) for _, hosts in ranked[_STATUS_ERRORS:])
            lines.append(f"    {len(ranked) - _STATUS_ERRORS} other error(s) on {others} host(s)")
    if grouped:
        lines.append("  every host and error: sealer status -o json")
    return lines


def status_lines(data: Mapping[str, Any]) -> list[str]:
    lines = []
    if data["exists"]:
        lines.append(
            f"cluster {data['cluster']}: {data['runtime'] or '?'}, image {data['image']}, "
            f"{len(data['masters'])} master(s) {_sample(data['masters'])}"
            + (f", {len(data['workers'])} worker(s) {_sample(data['workers'])}" if data["workers"] else "")
        )
    elif data["deleted"]:
        lines.append(f"cluster {data['cluster']}: deleted")
    else:
        lines.append(
            f"cluster {data['cluster']}: not installed (no last-applied Clusterfile in {data['stateDir']})"
        )
    last = data["lastOperation"]
    if last:
        lines.append(
            f"last operation: {last['kind']} {last['op']} {last['status']} (started {last['started']}"
            + (f", ended {last['ended']})" if last["ended"] else ")")
        )
    lines.extend(_unfinished_lines(data["unfinished"]))
    if data.get("runningNow"):
        lines.append(f"running now: {data['runningNow']}")
    if data["toFinish"]:
        lines.append(f"to finish it, run: {data['toFinish']}")
    return lines


# etcd backup / restore ---------------------------------------------------------------------------------
@runtime_checkable
class EtcdSnapshots(Protocol):
    """Optional part of a ClusterRuntime: take a datastore snapshot on master0 (returns its path
    there). The restore is apply/restore.py's journaled operation over runtime/etcd_backup.py."""

    async def etcd_snapshot(self, ctx: RuntimeContext) -> str: ...


def _snapshots(runtime: ClusterRuntime, cluster: str) -> EtcdSnapshots:
    if not isinstance(runtime, EtcdSnapshots):
        raise RuntimeErrorSealer(
            f"cluster {cluster}: the {runtime.name} runtime of this sealer cannot snapshot its datastore yet",
            "back up with the runtime's own tool on master0 meanwhile",
        )
    return runtime


def _installed(state: ClusterState) -> tuple[Clusterfile, ClusterRuntime]:
    current = state.last_applied()
    runtime_type = _recorded_runtime(state)
    if current is None or runtime_type is None:
        raise StateError(
            f"cluster {state.name} is not installed (no last-applied state in {state.dir})",
            "see `sealer status --cluster NAME`",
        )
    return current, _runtime_by_type(runtime_type, current.cluster.name)


async def etcd_backup(state: ClusterState, out: Path, progress: Progress | None = None) -> Path:
    """Snapshot the datastore on master0 and fetch it to `out` (0600) on this machine."""
    progress = progress or Progress()
    current, runtime = _installed(state)
    snap = _snapshots(runtime, current.cluster.name)
    d2 = Day2(current, current, state, RunOptions(), Day2Options(), progress)
    async with Fleet(
        known_hosts=state.known_hosts_path, logdir=state.logs_dir / "etcd", cluster=current.cluster.name
    ) as fleet:
        ctx = d2.context(fleet, None)
        progress.phase("etcd snapshot")
        remote = await snap.etcd_snapshot(ctx)
        progress.host(d2.engine.master0.ip, "ok", remote)
        # Fetched into a private directory beside `out`, so the snapshot (it holds every Secret)
        # is never readable by others, not even between the download and the chmod.
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmpdir:
            tmp = Path(tmpdir) / "snapshot"
            await fleet.get(ctx.target(ctx.master0), remote, tmp, sudo=True)
            tmp.chmod(0o600)
            tmp.replace(out)
        progress.end_phase()
    return out
