"""A pure model of what a plan does to a cluster's host set, for property tests of the planner.

It enforces the rules an engine relies on (an action only touches hosts in the right state, master0
and the last master are never removed, dependencies point backwards) and fails loudly otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

from sealer.plan import Plan

MASTER = "master"
WORKER = "worker"


class SimulationError(AssertionError):
    pass


def simulate(
    plan: Plan, current: Mapping[str, str], master0: str | None, rejoined: list[str] | None = None
) -> dict[str, str]:
    """Apply `plan` to `current` (ip -> "master" | "worker"); return the resulting host set.
    Hosts joined again (lost from the cluster) are appended to `rejoined`."""
    hosts = dict(current)
    if rejoined is None:
        rejoined = []
    seen: set[str] = set()
    for action in plan.actions:
        for dep in action.depends_on:
            if dep not in seen:
                raise SimulationError(f"{action.id} depends on {dep}, which does not come before it")
        seen.add(action.id)
        if not action.hosts:
            raise SimulationError(f"{action.id} ({action.kind}) has no hosts")
        if not action.reason:
            raise SimulationError(f"{action.id} ({action.kind}) does not say why")
        kind = action.kind
        if kind == "install":
            if hosts or len(action.hosts) != 1:
                raise SimulationError("install must be the first action, on one host, of an empty cluster")
            hosts[action.hosts[0]] = MASTER
            master0 = action.hosts[0]
        elif kind in ("join-master", "join-workers"):
            if kind == "join-master" and len(action.hosts) != 1:
                raise SimulationError("masters join one at a time")
            if not any(role == MASTER for role in hosts.values()):
                raise SimulationError(f"{action.id}: joining a cluster that has no master")
            role = MASTER if kind == "join-master" else WORKER
            for ip in action.hosts:
                if action.details.get("rejoin"):
                    # Joining again a host that is in the Clusterfile but lost from the cluster.
                    if hosts.get(ip) != role:
                        raise SimulationError(f"{action.id}: rejoins {ip}, which is not a known {role}")
                    if ip == master0:
                        raise SimulationError(f"{action.id}: rejoins master0")
                    rejoined.append(ip)
                    continue
                if ip in hosts:
                    raise SimulationError(f"{action.id}: {ip} joins but is already a member")
                hosts[ip] = role
        elif kind == "remove-workers":
            for ip in action.hosts:
                if hosts.get(ip) != WORKER:
                    raise SimulationError(f"{action.id}: {ip} is not a worker of the cluster")
                del hosts[ip]
        elif kind == "remove-master":
            (ip,) = action.hosts
            if hosts.get(ip) != MASTER:
                raise SimulationError(f"{action.id}: {ip} is not a master of the cluster")
            if ip == master0:
                raise SimulationError(f"{action.id}: removes master0 {ip}")
            if sum(1 for role in hosts.values() if role == MASTER) <= 1:
                raise SimulationError(f"{action.id}: removes the last master {ip}")
            del hosts[ip]
        elif kind == "uninstall":
            raise SimulationError("uninstall only belongs to a delete plan")
        elif kind == "launch-apps":
            if list(action.hosts) != [master0]:
                raise SimulationError(f"{action.id}: apps launch on master0, not {action.hosts}")
        elif kind == "upgrade" or kind.startswith("update-"):
            for ip in action.hosts:
                if ip not in hosts:
                    raise SimulationError(f"{action.id}: {kind} on {ip}, which is not a member")
        else:
            raise SimulationError(f"unknown action kind {kind}")
    return hosts
