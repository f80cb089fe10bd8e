"""In-place upgrades of one host (the HostUpgrader protocol the day-2 engine orders): what each
runtime runs on the host, in which order, and that a downgrade is refused before anything changes.
The fleet is a recorder answering the version probes; the real hosts are the e2e suites' job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from sealer.errors import RuntimeErrorSealer
from sealer.infra.connector import Result
from sealer.infra.host import Target
from sealer.model.clusterfile import parse_clusterfile
from sealer.runtime.base import RuntimeContext
from sealer.runtime.k0s import CONTROLLER_UNIT, WORKER_UNIT, K0sRuntime, parse_upgrade_probe
from sealer.runtime.kubernetes import KubernetesRuntime

CLUSTERFILE = """apiVersion: sealer.io/v2
kind: Cluster
metadata: {name: up}
spec:
  image: img:2
  hosts:
    - ips: [10.0.0.2, 10.0.0.3]
      roles: [master]
    - ips: [10.0.0.9]
      roles: [node]
"""


class RecordingFleet:
    """Answers each command with the first matching rule's stdout (exit 0 otherwise) and keeps
    (host, command) in order."""

    def __init__(self, rules: list[tuple[Callable[[str], bool], str]]) -> None:
        self.rules = rules
        self.calls: list[tuple[str, str]] = []

    async def run(self, target: Target, cmd: str, **_: Any) -> Result:
        self.calls.append((target.address, cmd))
        out = next((text for match, text in self.rules if match(cmd)), "")
        return Result(target.address, cmd, 0, out, "", 0.0)

    def on(self, host: str) -> list[str]:
        return [c for h, c in self.calls if h == host]


def _ctx(fleet: RecordingFleet) -> RuntimeContext:
    cf, problems = parse_clusterfile(CLUSTERFILE, "test")
    assert cf is not None, problems
    hosts = cf.cluster.hosts
    return RuntimeContext(
        fleet=fleet,  # type: ignore[arg-type]  # the recorder has the one method upgrades use
        cluster=cf.cluster,
        targets={h.ip: Target(h.ip) for h in hosts},
        node_names={h.ip: f"node-{h.ip.rsplit('.', 1)[1]}" for h in hosts},
        registry=None,
    )


def _k0s_fleet(new: str, old: str) -> RecordingFleet:
    return RecordingFleet(
        [
            (lambda c: 'echo "new=' in c, f"new={new}\nold={old}\n"),
            (lambda c: c.rstrip().endswith("k0s version"), f"{new}\n"),
        ]
    )


def test_parse_upgrade_probe_tolerates_a_missing_side() -> None:
    assert parse_upgrade_probe("new=v1.31.1+k0s.0\nold=v1.30.5+k0s.0\n") == ("v1.31.1+k0s.0", "v1.30.5+k0s.0")
    assert parse_upgrade_probe("new=v1.31.1+k0s.0\nold=\n") == ("v1.31.1+k0s.0", "")


def test_k0s_upgrade_replaces_the_binary_then_restarts_the_role_unit() -> None:
    fleet = _k0s_fleet("v1.31.1+k0s.0", "v1.30.5+k0s.0")
    ctx = _ctx(fleet)
    runtime = K0sRuntime()
    master, worker = ctx.cluster.masters[0], ctx.cluster.workers[0]
    asyncio.run(runtime.upgrade_host(ctx, master))
    asyncio.run(runtime.upgrade_host(ctx, worker))
    for host, unit, other in ((master, CONTROLLER_UNIT, WORKER_UNIT), (worker, WORKER_UNIT, CONTROLLER_UNIT)):
        cmds = fleet.on(host.ip)
        install = next(i for i, c in enumerate(cmds) if "install -m 0755" in c and "/bin/k0s" in c)
        restart = next(i for i, c in enumerate(cmds) if f"systemctl restart {unit}" in c)
        assert install < restart, cmds  # the new binary is in place before the service restarts
        assert "k0s status" in cmds[restart]  # and the step waits until k0s answers again
        assert not any(f"restart {other}" in c for c in cmds)
    assert runtime.versions() == {"k0s": "v1.31.1+k0s.0"}


def test_k0s_downgrade_is_refused_before_anything_changes() -> None:
    fleet = _k0s_fleet("v1.29.9+k0s.0", "v1.30.5+k0s.0")
    ctx = _ctx(fleet)
    host = ctx.cluster.masters[0]
    with pytest.raises(RuntimeErrorSealer) as err:
        asyncio.run(K0sRuntime().upgrade_host(ctx, host))
    assert host.ip in err.value.message and "v1.29.9+k0s.0" in err.value.message
    assert err.value.hint
    assert len(fleet.calls) == 1  # only the probe ran


def test_k0s_whole_cluster_upgrade_goes_controllers_first_one_at_a_time() -> None:
    fleet = _k0s_fleet("v1.31.1+k0s.0", "v1.30.5+k0s.0")
    ctx = _ctx(fleet)
    asyncio.run(K0sRuntime().upgrade(ctx, "img:2"))
    restarts = [h for h, c in fleet.calls if "systemctl restart" in c]
    assert restarts == ["10.0.0.2", "10.0.0.3", "10.0.0.9"]


def _kubeadm_fleet(new: str, old: str) -> RecordingFleet:
    return RecordingFleet([(lambda c: 'echo "new=' in c, f"new={new}\nold={old}\n")])


def _index(cmds: list[str], *needles: str) -> int:
    return next(i for i, c in enumerate(cmds) if all(n in c for n in needles))


def test_kubeadm_upgrade_order_on_each_kind_of_host() -> None:
    fleet = _kubeadm_fleet("v1.32.0", "v1.31.2")
    ctx = _ctx(fleet)
    runtime = KubernetesRuntime()
    asyncio.run(runtime.upgrade(ctx, "img:2"))
    m0, m1, w = (h.ip for h in ctx.cluster.hosts)
    # master0 upgrades the cluster (`upgrade apply <the image's kubeadm version>`), the others
    # follow it (`upgrade node`); each with the new kubeadm already in place, the new kubelet
    # after, and the kubelet restarted last
    for ip, kubeadm_cmd in (
        (m0, "kubeadm upgrade apply v1.32.0 --yes"),
        (m1, "kubeadm upgrade node"),
        (w, "kubeadm upgrade node"),
    ):
        cmds = fleet.on(ip)
        new_kubeadm = _index(cmds, "for b in kubeadm;")
        upgrade = _index(cmds, kubeadm_cmd)
        new_kubelet = _index(cmds, "for b in kubelet kubectl;")
        restart = _index(cmds, "systemctl restart kubelet.service")
        assert new_kubeadm < upgrade < new_kubelet < restart, cmds
    assert not any("upgrade apply" in c for c in [*fleet.on(m1), *fleet.on(w)])
    # control planes before workers
    order = [h for h, c in fleet.calls if "systemctl restart kubelet" in c]
    assert order == [m0, m1, w]


def test_kubeadm_downgrade_and_missing_kubeadm_are_refused_before_anything_changes() -> None:
    for new, old, words in (
        ("v1.30.0", "v1.31.2", "older than the installed v1.31.2"),
        ("", "v1.31.2", "no working"),
    ):
        fleet = _kubeadm_fleet(new, old)
        ctx = _ctx(fleet)
        with pytest.raises(RuntimeErrorSealer) as err:
            asyncio.run(KubernetesRuntime().upgrade_host(ctx, ctx.master0))
        assert words in err.value.message and ctx.master0.ip in err.value.message
        assert len(fleet.calls) == 1  # only the probe ran


# balancers follow the masters ---------------------------------------------------------------------
class BalancerFleet(RecordingFleet):
    """Workers in `with_lb` run the balancer; `broken` hosts fail every command after the probe."""

    def __init__(self, with_lb: set[str], broken: set[str]) -> None:
        super().__init__([])
        self.with_lb, self.broken = with_lb, broken
        self.written: dict[tuple[str, str], str] = {}

    async def run(self, target: Target, cmd: str, **kw: Any) -> Result:
        self.calls.append((target.address, cmd))
        ip = target.address
        if cmd.startswith("test -f"):
            return Result(ip, cmd, 0 if ip in self.with_lb else 1, "", "", 0.0)
        if ip in self.broken:
            return Result(ip, cmd, 1, "", "Permission denied", 0.0)
        if "input" in kw and "cat >" in cmd:
            self.written[(ip, cmd.split("cat > ")[1].split()[0])] = kw["input"]
            return Result(ip, cmd, 0, "changed\n", "", 0.0)
        return Result(ip, cmd, 0, "", "", 0.0)


def test_workers_balancers_learn_the_current_masters_best_effort() -> None:
    from sealer.runtime import lb

    text = CLUSTERFILE.replace(
        "roles: [node]", "roles: [node]\n    - ips: [10.0.0.10, 10.0.0.11]\n      roles: [node]"
    )
    cf, problems = parse_clusterfile(text, "test")
    assert cf is not None, problems
    fleet = BalancerFleet(with_lb={"10.0.0.9", "10.0.0.11"}, broken={"10.0.0.11"})
    said: list[tuple[str, str]] = []
    ctx = RuntimeContext(
        fleet=fleet,  # type: ignore[arg-type]
        cluster=cf.cluster,
        targets={h.ip: Target(h.ip) for h in cf.cluster.hosts},
        node_names={},
        registry=None,
        say=lambda host, msg: said.append((host, msg)),
    )
    asyncio.run(lb.refresh_balancers(ctx))
    cfg = fleet.written[("10.0.0.9", "/etc/sealer/apiserver-lb/haproxy.cfg.sealer-new")]
    assert "10.0.0.2:6443 check" in cfg and "10.0.0.3:6443 check" in cfg
    assert any(
        h == "10.0.0.9" and "systemctl restart sealer-apiserver-lb.service" in c for h, c in fleet.calls
    )
    # a worker without a balancer (joining later, or joined to one master) is left alone
    assert fleet.on("10.0.0.10") == ["test -f /etc/systemd/system/sealer-apiserver-lb.service"]
    # a worker that cannot be updated is reported, and the others are still done
    assert [h for h, m in said if "not updated" in m] == ["10.0.0.11"]


# a k0s controller leaves etcd before it is reset --------------------------------------------------
class LeaveFleet(RecordingFleet):
    """`k0s etcd leave` fails on the hosts in `failing`; member-list on master0 prints `members`."""

    def __init__(self, failing: set[str], members: str) -> None:
        super().__init__([])
        self.failing, self.members = failing, members

    async def run(self, target: Target, cmd: str, **kw: Any) -> Result:
        self.calls.append((target.address, cmd))
        ip = target.address
        if "etcd leave" in cmd and ip in self.failing:
            out = 'level=error msg="Failed to get peer name"\nError: not found\n'
            return Result(ip, cmd, 1, out, "", 0.0)
        if "etcd member-list" in cmd:
            return Result(ip, cmd, 0, self.members, "", 0.0)
        return Result(ip, cmd, 0, "", "", 0.0)


def _leave(fleet: LeaveFleet) -> RuntimeContext:
    ctx = _ctx(fleet)
    asyncio.run(K0sRuntime()._leave_etcd(ctx, ctx.cluster.masters[1]))
    return ctx


def test_k0s_controller_leaves_etcd_itself_else_master0_removes_it() -> None:
    fleet = LeaveFleet(failing=set(), members="")
    _leave(fleet)
    assert fleet.calls == [("10.0.0.3", "/usr/local/bin/k0s etcd leave 2>&1")]
    # its k0s is down: master0 removes the member by its peer address
    fleet = LeaveFleet(failing={"10.0.0.3"}, members="")
    _leave(fleet)
    assert fleet.on("10.0.0.2") == ["/usr/local/bin/k0s etcd leave --peer-address 10.0.0.3 2>&1"]
    # a re-run after the member already left: nowhere to leave from, and it is no member any more
    fleet = LeaveFleet(failing={"10.0.0.2", "10.0.0.3"}, members='{"members":{"m0":"https://10.0.0.2:2380"}}')
    _leave(fleet)


def test_k0s_controller_that_cannot_leave_etcd_is_not_reset() -> None:
    members = '{"members":{"m0":"https://10.0.0.2:2380","m1":"https://10.0.0.3:2380"}}'
    fleet = LeaveFleet(failing={"10.0.0.2", "10.0.0.3"}, members=members)
    with pytest.raises(RuntimeErrorSealer) as err:
        _leave(fleet)
    assert "10.0.0.3: its etcd member could not leave" in err.value.message
    assert "--peer-address 10.0.0.3" in (err.value.hint or "")
    assert not any("reset" in c for _, c in fleet.calls)


def test_k0s_removes_an_unreachable_controllers_member_from_master0() -> None:
    from sealer.apply.lifecycle import EtcdMemberRemover
    from sealer.runtime.k3s import K3sRuntime
    from sealer.runtime.kubernetes import KubernetesRuntime

    runtime = K0sRuntime()
    assert isinstance(runtime, EtcdMemberRemover)
    # k3s: deleting the Node removes the member; kubeadm: etcdctl from master0 (test_kubernetes_etcd.py)
    assert not isinstance(K3sRuntime(), EtcdMemberRemover)
    assert isinstance(KubernetesRuntime(), EtcdMemberRemover)
    fleet = LeaveFleet(failing=set(), members="")
    ctx = _ctx(fleet)
    asyncio.run(runtime.forget_member(ctx, ctx.cluster.masters[1]))
    assert fleet.calls == [("10.0.0.2", "/usr/local/bin/k0s etcd leave --peer-address 10.0.0.3 2>&1")]


def test_a_default_balancer_without_haproxy_says_how_to_turn_it_off() -> None:
    """haproxy is the default also with one master: an image without it fails with the way out."""
    from sealer.runtime import lb

    class NoHaproxy(RecordingFleet):
        async def run(self, target: Target, cmd: str, **kw: Any) -> Result:
            self.calls.append((target.address, cmd))
            return Result(target.address, cmd, 3, "", "no haproxy", 0.0)

    ctx = _ctx(NoHaproxy([]))
    with pytest.raises(RuntimeErrorSealer) as err:
        asyncio.run(lb.install_lb(ctx, ctx.cluster.workers[0], ctx.cluster.masters))
    assert "10.0.0.9: APIServerLB is haproxy by default" in err.value.message
    assert "APIServerLB=none" in (err.value.hint or "") and "--no-lb" in (err.value.hint or "")
