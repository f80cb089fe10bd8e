"""The planner: desired Cluster + last-applied Cluster (+ observed facts) -> an ordered Plan.

Pure and linear in the number of hosts. Order of an update: remove workers, remove masters (one at a
time), upgrade the remaining hosts, join new masters (one at a time), join new workers (in
parallel), update labels/taints/env/hostAliases in place, launch apps. Transitions that cannot be done
in place are refused with a PlanError that says why and what to do instead.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sealer.errors import PlanError
from sealer.model.cluster import MASTER, NODE, Cluster, Clusterfile, Host, Taint
from sealer.plan.actions import ActionList, Plan

ROLE_LABEL_PREFIX = "node-role.kubernetes.io/"
# Keys the engine sets itself on every host; a difference there is not a user change.
DERIVED_ENV_KEYS = frozenset({"HostIP"})


@dataclass(frozen=True)
class ObservedState:
    """What is known about the running cluster beyond its last-applied Clusterfile."""

    runtime_type: str | None = None  # kubernetes | k3s | k0s: from the image the cluster runs
    # IPs registered as nodes in the running cluster (None: not looked at). A host of the last-applied
    # Clusterfile missing here failed to join or was deleted by hand: it is joined again.
    nodes: frozenset[str] | None = None


def make_plan(
    desired: Cluster,
    current: Cluster | None,
    observed: ObservedState | None = None,
    *,
    desired_runtime_type: str | None = None,
) -> Plan:
    """Plan the move from `current` (None: no cluster yet) to `desired`."""
    desired_hosts = desired.hosts
    if current is not None and not any(h.is_master for h in desired_hosts):
        raise PlanError(
            f"cluster {desired.name}: the Clusterfile removes every master",
            "a cluster needs its masters; keep at least master0, "
            "or delete the cluster with `sealer delete -a`",
        )
    _check_desired(desired, desired_hosts)
    if current is None:
        return _create_plan(desired, desired_hosts)
    current_hosts = current.hosts
    _check_transition(desired, desired_hosts, current, current_hosts, observed, desired_runtime_type)
    return _update_plan(desired, desired_hosts, current, current_hosts, observed)


def plan_clusterfile(
    desired: Clusterfile,
    current: Clusterfile | None,
    observed: ObservedState | None = None,
    *,
    desired_runtime_type: str | None = None,
) -> Plan:
    """`make_plan` for whole Clusterfiles: also says what changed documents (Config, Plugin, kubeadm)
    will and will not do, since no action re-applies them to hosts already installed."""
    plan = make_plan(
        desired.cluster, current.cluster if current else None, observed,
        desired_runtime_type=desired_runtime_type,
    )
    if current is None:
        return plan
    notes = list(plan.notes)
    changed = [
        what
        for what, old, new in (
            ("Config", current.configs, desired.configs),
            ("Plugin", current.plugins, desired.plugins),
            ("kubeadm", current.kubeadm_documents, desired.kubeadm_documents),
        )
        if old != new
    ]
    if changed:
        notes.append(
            f"{', '.join(changed)} documents changed: they apply to hosts installed, joined or upgraded from "
            "now on; hosts already in the cluster keep what they were installed with"
        )
    return replace(plan, notes=tuple(notes)) if notes != list(plan.notes) else plan


def plan_delete(current: Cluster) -> Plan:
    """Tear a whole cluster down: workers in parallel, then masters one at a time, master0 last."""
    hosts = current.hosts
    masters = [h.ip for h in hosts if h.is_master]
    workers = [h.ip for h in hosts if not h.is_master]
    actions = ActionList()
    if workers:
        actions.add(
            "remove-workers", workers, "the cluster is being deleted; workers go first", parallel=True
        )
    for ip in reversed(masters[1:]):
        actions.add(
            "remove-master", [ip], "the cluster is being deleted; masters leave one at a time",
            after=[actions.last],
        )
    if masters:
        actions.add(
            "uninstall", [masters[0]], "master0 goes last: it holds the registry and the cluster state",
            after=[actions.last], details={"deleteState": True},
        )
    return Plan(
        cluster=current.name,
        operation="delete",
        actions=tuple(actions.actions),
        reason=f"delete cluster {current.name} ({_both(len(masters), len(workers))})",
        image=None,
        previous_image=current.image,
    )


# checks --------------------------------------------------------------------------------------------
def _check_desired(desired: Cluster, hosts: Sequence[Host]) -> None:
    if not desired.image:
        raise PlanError(
            f"cluster {desired.name}: spec.image is empty, nothing to install",
            "set spec.image to the ClusterImage to run (e.g. docker.io/sealerio/kubernetes:v1.22.15)",
        )
    if not any(h.is_master for h in hosts):
        raise PlanError(
            f"cluster {desired.name}: no host has the master role",
            "give at least one host group `roles: [master]`; its first IP becomes master0",
        )
    seen: set[str] = set()
    for host in hosts:
        if host.ip in seen:
            raise PlanError(
                f"cluster {desired.name}: host {host.ip} is listed twice",
                "list each IP in exactly one spec.hosts entry",
            )
        seen.add(host.ip)


def _family(ip: str) -> int | None:
    # The parser has validated the addresses; telling the family apart needs no full parse (which
    # dominated planning time at 5,000 hosts).
    if ":" in ip:
        return 6
    if ip.replace(".", "").isdigit():
        return 4
    return None  # a host name: no family to compare


def _families(hosts: Iterable[Host]) -> set[int]:
    return {f for f in (_family(h.ip) for h in hosts) if f is not None}


def _check_transition(
    desired: Cluster,
    desired_hosts: Sequence[Host],
    current: Cluster,
    current_hosts: Sequence[Host],
    observed: ObservedState | None,
    desired_runtime_type: str | None,
) -> None:
    name = desired.name
    if desired.name != current.name:
        raise PlanError(
            f"the Clusterfile names cluster {desired.name} but the state compared with is cluster "
            f"{current.name}",
            "a cluster cannot be renamed; keep metadata.name, or create a new cluster under the new name",
        )
    current_runtime = observed.runtime_type if observed else None
    if current_runtime and desired_runtime_type and current_runtime != desired_runtime_type:
        raise PlanError(
            f"cluster {name} runs {current_runtime}, and image {desired.image} is a "
            f"{desired_runtime_type} image: the runtime type cannot change in place",
            f"delete the cluster (`sealer delete -a`) and create it again from the {desired_runtime_type} "
            f"image, or use a {current_runtime} image",
        )
    desired_masters = [h for h in desired_hosts if h.is_master]
    old_family, new_family = _families(current_hosts), _families(desired_hosts)
    if old_family and new_family and old_family != new_family:
        def show(families: set[int]) -> str:
            return "/".join(f"IPv{v}" for v in sorted(families))

        raise PlanError(
            f"cluster {name} uses {show(old_family)} addresses and the Clusterfile uses "
            f"{show(new_family)}: the IP family of a cluster cannot change",
            "keep the hosts' address family, or delete the cluster and create it again",
        )
    old_master0 = next(h for h in current_hosts if h.is_master).ip
    new_master0 = desired_masters[0].ip
    if old_master0 != new_master0:
        desired_by_ip = {h.ip: h for h in desired_hosts}
        if old_master0 in desired_by_ip and desired_by_ip[old_master0].is_master:
            hint = (
                f"make {old_master0} the first IP of the first master group again; the order of the "
                "other masters does not matter"
            )
        else:
            hint = (
                f"keep {old_master0} as the first master: master0 holds the registry and the cluster "
                "state and can only go away with the whole cluster (`sealer delete -a`)"
            )
        raise PlanError(
            f"cluster {name}: master0 would change from {old_master0} to {new_master0}", hint
        )
    desired_by_ip = {h.ip: h for h in desired_hosts}
    for old in current_hosts:
        new = desired_by_ip.get(old.ip)
        if new is not None and new.is_master != old.is_master:
            before, after = (MASTER, NODE) if old.is_master else (NODE, MASTER)
            raise PlanError(
                f"cluster {name}: host {old.ip} would change role from {before} to {after} in place",
                f"remove {old.ip} from the Clusterfile and apply, then add it back as a {after} and apply",
            )
    for what, old_value, new_value, hint in (
        (
            "spec.containerRuntime", current.container_runtime, desired.container_runtime,
            "the container runtime of existing hosts cannot be swapped; keep it, or re-create the cluster",
        ),
        (
            "spec.dataRoot", current.data_root, desired.data_root,
            "the data root holds the installed rootfs; keep it, or re-create the cluster",
        ),
        (
            "spec.registry", current.registry, desired.registry,
            "every host and image reference points at the registry; changing it in place is not "
            "supported: keep the old registry settings, or re-create the cluster",
        ),
    ):
        if old_value != new_value:
            raise PlanError(f"cluster {name}: {what} cannot change on a running cluster", hint)


# plans ---------------------------------------------------------------------------------------------
def _create_plan(desired: Cluster, hosts: Sequence[Host]) -> Plan:
    masters = [h.ip for h in hosts if h.is_master]
    workers = [h.ip for h in hosts if not h.is_master]
    actions = ActionList()
    actions.add(
        "install", masters[:1], "master0 of the new cluster: init the control plane and the registry",
        details={"image": desired.image},
    )
    _add_joins(actions, masters[1:], workers, "the new cluster")
    actions.add(
        "launch-apps", masters[:1], "start the image's applications", after=[actions.last]
    )
    return Plan(
        cluster=desired.name,
        operation="create",
        actions=tuple(actions.actions),
        reason=(
            f"no last-applied state for cluster {desired.name}: create it with "
            + _both(len(masters), len(workers))
        ),
        image=desired.image,
    )


_REJOIN_WHY = (
    "in the last-applied Clusterfile but not a node of the cluster (a join that failed, or a node "
    "deleted by hand): reset it and join it again"
)


def _add_joins(
    actions: ActionList,
    masters: Sequence[str],
    workers: Sequence[str],
    where: str,
    rejoin: frozenset[str] = frozenset(),
) -> None:
    for ip in masters:
        if ip in rejoin:
            actions.add("join-master", [ip], _REJOIN_WHY, after=[actions.last], details={"rejoin": True})
        else:
            actions.add(
                "join-master", [ip], f"new master of {where}; one at a time, so etcd keeps quorum",
                after=[actions.last],
            )
    again = [ip for ip in workers if ip in rejoin]
    fresh = [ip for ip in workers if ip not in rejoin]
    barrier = actions.last
    if again:
        actions.add(
            "join-workers", again, _REJOIN_WHY, after=[barrier], parallel=True, details={"rejoin": True}
        )
    if fresh:
        actions.add(
            "join-workers", fresh, f"new worker(s) of {where}, joining in parallel",
            after=[barrier], parallel=True,
        )


def _lost_hosts(
    staying: Sequence[Host], current_hosts: Sequence[Host], observed: ObservedState | None
) -> tuple[frozenset[str], list[str]]:
    """(hosts to join again, notes) from the observed node list."""
    if observed is None or observed.nodes is None:
        return frozenset(), []
    nodes = observed.nodes
    master0 = next(h.ip for h in current_hosts if h.is_master)
    # k0s controllers run no kubelet: they are never nodes, so their absence says nothing.
    masters_are_nodes = observed.runtime_type != "k0s"
    lost = frozenset(
        h.ip for h in staying
        if h.ip not in nodes and h.ip != master0 and (masters_are_nodes or not h.is_master)
    )
    notes = []
    if masters_are_nodes and master0 not in nodes:
        notes.append(
            f"master0 {master0} is not a node of the cluster: check it; sealer does not re-install master0 "
            "in place"
        )
    known = {h.ip for h in current_hosts} | {h.ip for h in staying}
    strangers = sorted(ip for ip in nodes if ip not in known)
    if strangers:
        shown = ", ".join(strangers[:5]) + (f" … (+{len(strangers) - 5})" if len(strangers) > 5 else "")
        notes.append(
            f"node(s) {shown} are in the cluster but not in the Clusterfile; sealer leaves them alone"
        )
    return lost, notes


def _update_plan(
    desired: Cluster,
    desired_hosts: Sequence[Host],
    current: Cluster,
    current_hosts: Sequence[Host],
    observed: ObservedState | None = None,
) -> Plan:
    desired_ips = {h.ip for h in desired_hosts}
    current_by_ip = {h.ip: h for h in current_hosts}
    actions = ActionList()

    removed_workers = [h.ip for h in current_hosts if not h.is_master and h.ip not in desired_ips]
    removed_masters = [h.ip for h in current_hosts if h.is_master and h.ip not in desired_ips]
    if removed_workers:
        actions.add(
            "remove-workers", removed_workers, "no longer in the Clusterfile; workers leave in parallel",
            parallel=True,
        )
    # Last joined, first removed; one at a time so etcd keeps quorum at every step.
    for ip in reversed(removed_masters):
        actions.add(
            "remove-master", [ip], "no longer in the Clusterfile; masters leave one at a time",
            after=[actions.last],
        )

    staying_all = [h for h in desired_hosts if h.ip in current_by_ip]
    lost, lost_notes = _lost_hosts(staying_all, current_hosts, observed)
    # Hosts joining again get the desired image, labels and taints with the join itself.
    staying = [h for h in staying_all if h.ip not in lost]
    image_changed = desired.image != current.image
    if image_changed:
        # Before joins, so new hosts join the upgraded cluster with the same image.
        actions.add(
            "upgrade",
            [h.ip for h in staying if h.is_master] + [h.ip for h in staying if not h.is_master],
            "spec.image changed: upgrade the cluster, masters first",
            after=[actions.last],
            details={"from": current.image, "to": desired.image},
        )

    joining = {h.ip for h in desired_hosts if h.ip not in current_by_ip} | lost
    new_masters = [h.ip for h in desired_hosts if h.is_master and h.ip in joining]
    new_workers = [h.ip for h in desired_hosts if not h.is_master and h.ip in joining]
    _add_joins(actions, new_masters, new_workers, "the cluster", rejoin=lost)

    barrier = actions.last
    _add_updates(actions, barrier, staying, current_by_ip, "update-labels", labels_change)
    _add_updates(actions, barrier, staying, current_by_ip, "update-taints", taints_change)
    _add_updates(actions, barrier, staying, current_by_ip, "update-env", _env_change)
    if desired.host_aliases != current.host_aliases:
        actions.add(
            "update-host-aliases", [h.ip for h in staying],
            "spec.hostAliases changed: rewrite the /etc/hosts entries sealer manages (new hosts get them "
            "when they join)",
            after=[barrier],
            parallel=True,
            details={
                "hostAliases": {a.ip: list(a.hostnames) for a in desired.host_aliases},
            },
        )

    apps_changed = (desired.cmd, desired.app_names) != (current.cmd, current.app_names)
    if image_changed or apps_changed:
        why = "the new image's applications" if image_changed else "spec.cmd / spec.appNames changed"
        actions.add(
            "launch-apps", [_master0(desired_hosts)], f"launch applications: {why}", after=[actions.last]
        )

    notes = (*_notes(desired, current, staying_all, current_by_ip), *lost_notes)
    if not actions.actions:
        return Plan(
            cluster=desired.name,
            operation="none",
            actions=(),
            reason=(
                "nothing to do: hosts, roles, image, labels, taints, env and host aliases match the "
                "last-applied Clusterfile"
            ),
            image=desired.image,
            previous_image=current.image,
            notes=notes,
        )
    return Plan(
        cluster=desired.name,
        operation="update",
        actions=tuple(actions.actions),
        reason=_summary(
            removed_workers, removed_masters, new_masters, new_workers, image_changed, actions, lost
        ),
        image=desired.image,
        previous_image=current.image,
        notes=notes,
    )


def _master0(hosts: Sequence[Host]) -> str:
    return next(h.ip for h in hosts if h.is_master)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _both(masters: int, workers: int) -> str:
    parts = [_count(masters, "master")] if masters else []
    if workers:
        parts.append(_count(workers, "worker"))
    return " and ".join(parts)


def _summary(
    removed_workers: Sequence[str],
    removed_masters: Sequence[str],
    new_masters: Sequence[str],
    new_workers: Sequence[str],
    image_changed: bool,
    actions: ActionList,
    lost: frozenset[str] = frozenset(),
) -> str:
    parts = []
    added_masters = [ip for ip in new_masters if ip not in lost]
    added_workers = [ip for ip in new_workers if ip not in lost]
    if added_masters or added_workers:
        parts.append("add " + _both(len(added_masters), len(added_workers)))
    if lost:
        parts.append(f"join {_count(len(lost), 'lost host')} again")
    if removed_masters or removed_workers:
        parts.append("remove " + _both(len(removed_masters), len(removed_workers)))
    if image_changed:
        parts.append("upgrade the image")
    updates = sorted({a.kind for a in actions.actions if a.kind.startswith("update-")})
    if updates:
        parts.append("update in place: " + ", ".join(u.removeprefix("update-") for u in updates))
    if not parts:
        parts.append("launch applications")
    return "; ".join(parts)


def _notes(
    desired: Cluster, current: Cluster, staying: Sequence[Host], current_by_ip: Mapping[str, Host]
) -> tuple[str, ...]:
    notes = []
    if desired.ssh != current.ssh or any(h.ssh != current_by_ip[h.ip].ssh for h in staying):
        notes.append(
            "SSH settings changed: they are used for the next connections; nothing changes on the hosts"
        )
    return tuple(notes)


# in-place updates --------------------------------------------------------------------------------
Change = dict[str, Any]


def _add_updates(
    actions: ActionList,
    barrier: str | None,
    staying: Sequence[Host],
    current_by_ip: Mapping[str, Host],
    kind: str,
    change_of: Callable[[Host, Host], Change | None],
) -> None:
    """One action per distinct change, listing every host that needs exactly that change: a host
    group edited in the file stays one action, however many hosts it has."""
    groups: dict[Hashable, tuple[Change, list[str]]] = {}
    for host in staying:
        change = change_of(current_by_ip[host.ip], host)
        if change is None:
            continue
        key = _freeze(change)
        if key not in groups:
            groups[key] = (change, [])
        groups[key][1].append(host.ip)
    what = kind.removeprefix("update-")
    for change, ips in groups.values():
        actions.add(
            kind, ips, f"{what} of existing host(s) changed in the Clusterfile", after=[barrier],
            parallel=True, details=change,
        )


def _freeze(value: Any) -> Hashable:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value  # type: ignore[no-any-return]


def effective_labels(host: Host) -> dict[str, str]:
    """The node labels sealer owns on a host: its `labels` plus a role label per custom role."""
    labels = dict(host.labels)
    for role in host.roles:
        if role not in (MASTER, NODE):
            labels.setdefault(ROLE_LABEL_PREFIX + role, "")
    return labels


def labels_change(old: Host, new: Host) -> Change | None:
    """Labels to set and to take off for a host going from `old` to `new` (None: nothing changes)."""
    before, after = effective_labels(old), effective_labels(new)
    if before == after:
        return None
    change: Change = {}
    set_ = {k: v for k, v in after.items() if before.get(k) != v}
    remove = sorted(k for k in before if k not in after)
    if set_:
        change["set"] = dict(sorted(set_.items()))
    if remove:
        change["remove"] = remove
    return change


def taints_change(old: Host, new: Host) -> Change | None:
    """Taints to add and to take off for a host going from `old` to `new` (None: nothing changes)."""
    if set(old.taints) == set(new.taints):
        return None
    old_present = {t for t in old.taints if not t.remove}
    new_present = {t for t in new.taints if not t.remove}
    add = sorted(str(t) for t in new_present - old_present)
    # A taint dropped from the file is taken off; so is one the file now removes explicitly (`k-`).
    dropped = {Taint(t.key, t.value, t.effect, remove=True) for t in old_present - new_present}
    explicit = {t for t in new.taints if t.remove} - {t for t in old.taints if t.remove}
    remove = sorted(str(t) for t in dropped | explicit)
    if not add and not remove:
        return None
    change: Change = {}
    if add:
        change["add"] = add
    if remove:
        change["remove"] = remove
    return change


def _env_change(old: Host, new: Host) -> Change | None:
    before = {k: v for k, v in old.env.items() if k not in DERIVED_ENV_KEYS}
    after = {k: v for k, v in new.env.items() if k not in DERIVED_ENV_KEYS}
    if before == after:
        return None
    # Keys only: env values may be secrets, and plans are printed and logged.
    change: Change = {}
    changed = sorted(k for k, v in after.items() if before.get(k) != v)
    unset = sorted(k for k in before if k not in after)
    if changed:
        change["set"] = changed
    if unset:
        change["unset"] = unset
    return change
