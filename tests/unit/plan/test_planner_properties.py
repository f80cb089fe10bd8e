"""Property tests: for random pairs of valid clusters, the plan applied to the old host set yields
exactly the new host set, never removes master0 or the last master, and is refused exactly when the
transition is impossible (master0 change, role flip, IP family change)."""

from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealer.errors import PlanError
from sealer.model.cluster import Cluster, HostGroup, Taint
from sealer.plan import ObservedState, make_plan
from tests.unit.plan.simulate import simulate

IPV4 = [f"10.0.0.{i}" for i in range(1, 25)]
IPV6 = [f"fd00::{i:x}" for i in range(1, 25)]
ROLESETS = [("master",), ("node",), ("node", "db"), ("master", "etcd"), ("gpu",)]
IMAGES = ["example/k8s:v1.22", "example/k8s:v1.23"]
LABELS = st.dictionaries(st.sampled_from(["zone", "disk", "team"]), st.sampled_from(["a", "b"]), max_size=2)
TAINTS = st.lists(
    st.builds(Taint, st.sampled_from(["dedicated", "gpu"]), st.sampled_from(["", "x"]),
              st.sampled_from(["NoSchedule", "NoExecute"]), st.booleans()),
    max_size=2, unique=True,
)
ENV = st.dictionaries(st.sampled_from(["A", "B"]), st.sampled_from(["1", "2"]), max_size=2)


def _groups(draw: st.DrawFn, ips: list[str]) -> list[HostGroup]:
    cuts: list[int] = []
    if len(ips) > 1:
        cuts = draw(st.lists(st.integers(1, len(ips) - 1), max_size=3, unique=True))
    bounds = [0, *sorted(cuts), len(ips)]
    groups = []
    for start, end in itertools.pairwise(bounds):
        if start == end:
            continue
        groups.append(
            HostGroup(
                ips=tuple(ips[start:end]), roles=draw(st.sampled_from(ROLESETS)), labels=draw(LABELS),
                taints=tuple(draw(TAINTS)), env=draw(ENV),
            )
        )
    if not any("master" in g.roles for g in groups):
        pick = draw(st.integers(0, len(groups) - 1))
        groups[pick] = replace(groups[pick], roles=("master",))
    return groups


@st.composite
def clusters(draw: st.DrawFn, pool: list[str] | None = None) -> Cluster:
    if pool is None:
        pool = IPV6 if draw(st.integers(0, 9)) == 0 else IPV4
    ips = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=10, unique=True))
    return Cluster(
        name="prop", image=draw(st.sampled_from(IMAGES)), host_groups=tuple(_groups(draw, ips)),
        env=draw(ENV), app_names=draw(st.sampled_from([None, ("app",)])),
    )


@st.composite
def evolutions(draw: st.DrawFn, old: Cluster) -> Cluster:
    """A plausible edit of `old`: drop some hosts (never master0), add some, usually keep roles."""
    master0 = old.master0
    assert master0 is not None
    pool = IPV6 if ":" in master0.ip else IPV4
    kept = [h for h in old.hosts if h.ip == master0.ip or draw(st.integers(0, 3)) > 0]
    unused = [ip for ip in pool if old.host(ip) is None]
    fresh = draw(st.lists(st.sampled_from(unused), max_size=6, unique=True))
    groups = [HostGroup(ips=(master0.ip,), roles=master0.roles, labels=draw(LABELS), env=draw(ENV))]
    for host in kept:
        if host.ip == master0.ip:
            continue
        roles = host.roles if draw(st.integers(0, 9)) > 0 else draw(st.sampled_from(ROLESETS))
        groups.append(HostGroup(ips=(host.ip,), roles=roles, labels=draw(LABELS), taints=tuple(draw(TAINTS))))
    for ip in fresh:
        groups.append(HostGroup(ips=(ip,), roles=draw(st.sampled_from(ROLESETS))))
    return replace(old, host_groups=tuple(groups), image=draw(st.sampled_from(IMAGES)), env=draw(ENV))


@st.composite
def pairs(draw: st.DrawFn) -> tuple[Cluster, Cluster]:
    old = draw(clusters())
    new = draw(clusters()) if draw(st.integers(0, 3)) == 0 else draw(evolutions(old))
    return old, new


def roles_of(c: Cluster) -> dict[str, str]:
    return {h.ip: "master" if h.is_master else "worker" for h in c.hosts}


def impossible(old: Cluster, new: Cluster) -> bool:
    """Independent statement of which transitions the planner must refuse."""
    assert old.master0 is not None and new.master0 is not None
    if old.master0.ip != new.master0.ip:
        return True
    if (":" in old.master0.ip) != (":" in new.master0.ip):
        return True
    old_roles, new_roles = roles_of(old), roles_of(new)
    return any(ip in new_roles and new_roles[ip] != role for ip, role in old_roles.items())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs())
def test_plan_reaches_exactly_the_new_host_set_or_is_refused_for_a_reason(
    pair: tuple[Cluster, Cluster],
) -> None:
    old, new = pair
    try:
        plan = make_plan(new, old)
    except PlanError as err:
        assert impossible(old, new), f"refused a possible transition: {err.message}"
        assert err.hint, "a refusal must say what to do instead"
        return
    assert not impossible(old, new), "accepted an impossible transition"
    assert old.master0 is not None
    result = simulate(plan, roles_of(old), old.master0.ip)  # raises if master0 / last master removed
    assert result == roles_of(new)
    # Once applied, the same Clusterfile plans nothing.
    assert make_plan(new, new).empty


@settings(max_examples=200, deadline=None)
@given(clusters())
def test_create_plan_builds_exactly_the_desired_host_set(desired: Cluster) -> None:
    plan = make_plan(desired, None)
    assert simulate(plan, {}, None) == roles_of(desired)
    assert plan.actions[0].kind == "install"
    assert desired.master0 is not None and plan.actions[0].hosts == (desired.master0.ip,)


@st.composite
def observed_pairs(draw: st.DrawFn) -> tuple[Cluster, Cluster, ObservedState]:
    old = draw(clusters())
    new = draw(evolutions(old))
    members = [h.ip for h in old.hosts]
    nodes = draw(st.sets(st.sampled_from(members))) | draw(st.sets(st.sampled_from(["10.9.9.9", "fd00::99"])))
    runtime = draw(st.sampled_from([None, "kubernetes", "k3s", "k0s"]))
    return old, new, ObservedState(runtime_type=runtime, nodes=frozenset(nodes))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(observed_pairs())
def test_hosts_lost_from_the_cluster_are_joined_again_exactly_once(
    triple: tuple[Cluster, Cluster, ObservedState],
) -> None:
    old, new, observed = triple
    assert old.master0 is not None and observed.nodes is not None
    try:
        plan = make_plan(new, old, observed)
    except PlanError:
        assert impossible(old, new)
        return
    rejoined: list[str] = []
    assert simulate(plan, roles_of(old), old.master0.ip, rejoined) == roles_of(new)
    new_ips = {h.ip for h in new.hosts}
    expected = sorted(
        h.ip for h in old.hosts
        if h.ip in new_ips and h.ip not in observed.nodes and h.ip != old.master0.ip
        and not (h.is_master and observed.runtime_type == "k0s")
    )
    assert sorted(rejoined) == expected
    # A lost host is neither upgraded nor updated in place: its join brings it up to date.
    for action in plan.actions:
        if action.kind == "upgrade" or action.kind.startswith("update-"):
            assert not set(action.hosts) & set(rejoined), action.text()
