"""A removed kubeadm master's stacked etcd member taken out from a remaining master
(KubernetesRuntime.forget_member): what runs where, in which order, and what the operator is told
when it cannot be done. The fleet answers etcdctl the way etcd v3.5 does (JSON member list with
decimal IDs, `Member <id> removed from cluster <id>`, `Error: etcdserver: member not found`) over a
membership it keeps, so a removal really changes what the next list shows; etcdctl itself is
checked against these forms in tests/integration/doubles/test_etcd_backup_contract.py."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from sealer.errors import HostError, RuntimeErrorSealer
from sealer.infra.connector import Result
from sealer.infra.host import Target
from sealer.model.cluster import Host
from sealer.model.clusterfile import parse_clusterfile
from sealer.runtime.base import RuntimeContext
from sealer.runtime.kubernetes import KubernetesRuntime, etcdctl_command, members_at

CLUSTERFILE = """apiVersion: sealer.io/v2
kind: Cluster
metadata: {name: ek}
spec:
  image: img:1
  hosts:
    - ips: [10.0.0.2, 10.0.0.3]
      roles: [master]
    - ips: [10.0.0.9]
      roles: [node]
"""
ROOTFS_ETCDCTL = "/var/lib/sealer/data/ek/rootfs/bin/etcdctl"
GONE = "10.0.0.4"  # the master being removed: no longer in the (desired) cluster


def member(name: str, ip: str, mid: int) -> dict[str, Any]:
    return {
        "ID": mid,
        "name": name,
        "peerURLs": [f"https://{ip}:2380"],
        "clientURLs": [f"https://{ip}:2379"],
    }


class EtcdFleet:
    """Hosts that answer the member-list script and `etcdctl member remove` over one membership.
    `down`: hosts whose etcd does not answer; `unreachable`: hosts SSH cannot reach; `stuck`: the
    removal times out (no quorum) and the member stays; `no_tool`: the image has no etcdctl."""

    def __init__(
        self,
        members: list[dict[str, Any]],
        *,
        down: frozenset[str] = frozenset(),
        unreachable: frozenset[str] = frozenset(),
        stuck: bool = False,
        no_tool: bool = False,
        vanish_before_remove: bool = False,
    ) -> None:
        self.members = members
        self.down, self.unreachable = down, unreachable
        self.stuck, self.no_tool, self.vanish = stuck, no_tool, vanish_before_remove
        self.calls: list[tuple[str, str]] = []

    async def run(self, target: Target, cmd: str, **_: Any) -> Result:
        host = target.address
        if host in self.unreachable:
            raise HostError(host, "cannot connect: No route to host", "check the host")
        self.calls.append((host, cmd))

        def out(code: int, stdout: str = "", stderr: str = "") -> Result:
            return Result(host, cmd, code, stdout, stderr, 0.0)

        if "etcdctl" not in cmd:  # kubeadm reset, the workers' balancers (none here)
            return out(1 if cmd.startswith("test -f") else 0)
        if cmd.startswith(f"[ -x {ROOTFS_ETCDCTL} ]") and self.no_tool:
            return out(3)
        assert "ETCDCTL_API=3" in cmd and "--endpoints=https://127.0.0.1:2379" in cmd, cmd
        assert "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt" in cmd, cmd
        if host in self.down:
            return out(
                1,
                stderr='{"level":"warn","msg":"retrying of unary invoker failed"}\n'
                "Error: context deadline exceeded\n",
            )
        if cmd.rstrip().endswith("member list -w json"):
            doc = {"header": {"cluster_id": 1, "member_id": 2, "raft_term": 2}, "members": self.members}
            return out(0, json.dumps(doc, separators=(",", ":")) + "\n")
        removing = re.search(r"member remove ([0-9a-f]+)$", cmd.rstrip())
        assert removing, cmd
        wanted = int(removing.group(1), 16)
        if self.vanish:  # kubeadm reset (or another run) got there first
            self.members = [m for m in self.members if m["ID"] != wanted]
        if self.stuck:
            return out(1, stderr="Error: etcdserver: request timed out\n")
        if not any(m["ID"] == wanted for m in self.members):
            return out(1, stderr="Error: etcdserver: member not found\n")
        self.members = [m for m in self.members if m["ID"] != wanted]
        return out(0, f"Member {wanted:16x} removed from cluster {1:16x}\n")

    def commands(self) -> list[tuple[str, str]]:
        """(host, etcdctl sub-command) in order."""
        found = []
        for host, cmd in self.calls:
            m = re.search(r"(member (?:list -w json|remove [0-9a-f]+))\s*$", cmd)
            found.append((host, m.group(1) if m else cmd))
        return found


def _ctx(fleet: EtcdFleet) -> RuntimeContext:
    cf, problems = parse_clusterfile(CLUSTERFILE, "test")
    assert cf is not None, problems
    ips = [h.ip for h in cf.cluster.hosts] + [GONE]
    return RuntimeContext(
        fleet=fleet,  # type: ignore[arg-type]  # the fake has the one method forget_member uses
        cluster=cf.cluster,
        targets={ip: Target(ip) for ip in ips},
        node_names={},
        registry=None,
    )


def _gone_host(ctx: RuntimeContext) -> Host:
    """The master as the cluster had it before (the Clusterfile with it still in)."""
    cf, problems = parse_clusterfile(CLUSTERFILE.replace("10.0.0.3]", f"10.0.0.3, {GONE}]"), "before")
    assert cf is not None, problems
    return next(h for h in cf.cluster.masters if h.ip == GONE)


THREE = [
    member("m0", "10.0.0.2", 0x8E9E05C52164694D),
    member("m1", "10.0.0.3", 0x91BC3C398FB3C146),
    member("m2", GONE, 0x0FD422379FDA50E8),
]


def forget(fleet: EtcdFleet) -> str | None:
    ctx = _ctx(fleet)
    return asyncio.run(KubernetesRuntime().forget_member(ctx, _gone_host(ctx)))


def test_the_member_at_the_hosts_address_is_removed_from_master0() -> None:
    fleet = EtcdFleet(list(THREE))
    assert forget(fleet) is None
    assert fleet.commands() == [
        ("10.0.0.2", "member list -w json"),
        ("10.0.0.2", "member remove fd422379fda50e8"),  # %x: no leading zero, as etcdctl takes it
        ("10.0.0.2", "member list -w json"),
    ]
    assert [m["name"] for m in fleet.members] == ["m0", "m1"]
    assert all(h != GONE for h, _ in fleet.calls)  # the removed host itself is never asked


def test_a_member_already_gone_is_fine_and_nothing_is_removed() -> None:
    fleet = EtcdFleet(THREE[:2])
    assert forget(fleet) is None
    assert fleet.commands() == [("10.0.0.2", "member list -w json")]


def test_a_member_removed_between_list_and_remove_is_fine() -> None:
    fleet = EtcdFleet(list(THREE), vanish_before_remove=True)
    assert forget(fleet) is None
    assert [c for _, c in fleet.commands()][-1] == "member list -w json"


def test_a_member_that_stays_listed_stops_the_removal_with_the_exact_command() -> None:
    """No quorum (2 members, one of them the dead one): etcd cannot remove it. The error keeps the
    step unfinished (a re-run retries) and names the command that would do it by hand."""
    fleet = EtcdFleet(list(THREE), stuck=True)
    with pytest.raises(RuntimeErrorSealer) as err:
        forget(fleet)
    assert f"{GONE}: its etcd member fd422379fda50e8 is still listed" in err.value.message
    assert "etcdserver: request timed out" in err.value.message
    hint = err.value.hint or ""
    assert etcdctl_command(ROOTFS_ETCDCTL, "member remove fd422379fda50e8") in hint
    assert "on 10.0.0.2" in hint and "run the same command again" in hint
    assert len(fleet.members) == 3


def test_master0_without_etcd_hands_over_to_another_remaining_master() -> None:
    fleet = EtcdFleet(list(THREE), down=frozenset({"10.0.0.2"}))
    assert forget(fleet) is None
    assert fleet.commands() == [
        ("10.0.0.2", "member list -w json"),
        ("10.0.0.3", "member list -w json"),
        ("10.0.0.3", "member remove fd422379fda50e8"),
        ("10.0.0.3", "member list -w json"),
    ]


def test_no_master_answering_names_each_and_says_what_to_check() -> None:
    fleet = EtcdFleet(list(THREE), down=frozenset({"10.0.0.2"}), unreachable=frozenset({"10.0.0.3"}))
    with pytest.raises(RuntimeErrorSealer) as err:
        forget(fleet)
    msg = err.value.message
    assert msg.startswith(f"{GONE}: its etcd member could not be removed: no remaining master could list")
    assert "10.0.0.2: Error: context deadline exceeded" in msg and "10.0.0.3: cannot connect" in msg
    assert "crictl ps --name etcd" in (err.value.hint or "")
    assert f"https://{GONE}:2380" in (err.value.hint or "")


def test_an_image_without_etcdctl_leaves_the_member_with_a_warning_saying_why() -> None:
    fleet = EtcdFleet(list(THREE), no_tool=True)
    warning = forget(fleet)
    assert warning is not None and "no bin/etcdctl" in warning and "etcdctl member remove" in warning
    assert len(fleet.calls) == 1 and len(fleet.members) == 3


def test_remove_checks_each_reset_master_after_kubeadm_reset() -> None:
    """A reachable master: kubeadm reset first (it removes its own member), then the check from
    master0 that it did; a member it left behind is removed there."""
    fleet = EtcdFleet(list(THREE))
    ctx = _ctx(fleet)
    asyncio.run(KubernetesRuntime().remove(ctx, [_gone_host(ctx)], []))
    on_gone = [c for h, c in fleet.calls if h == GONE]
    assert len(on_gone) == 1 and "kubeadm reset -f" in on_gone[0]
    gone_at = fleet.calls.index((GONE, on_gone[0]))
    assert ("10.0.0.2", "member remove fd422379fda50e8") in fleet.commands()[gone_at:]
    assert [m["name"] for m in fleet.members] == ["m0", "m1"]


# ----------------------------------------------------------------------------------- members_at


def test_members_at_matches_the_peer_address_on_the_peer_port_only() -> None:
    listing = json.dumps(
        {
            "members": [
                member("a", "10.0.0.2", 1),
                {"ID": 2, "name": "b", "peerURLs": ["https://10.0.0.20:2380"]},
                {"ID": 3, "name": "c", "peerURLs": ["https://10.0.0.2:12380"]},  # another etcd's port
                {"ID": 4, "name": "", "peerURLs": ["https://[fd00::2]:2380"]},  # unstarted: no name
                {"ID": 5, "name": "e", "peerURLs": ["https://etcd-e.example:2380"]},
            ]
        }
    )
    assert members_at(listing, "10.0.0.2") == [1]
    assert members_at(listing, "fd00:0::2") == [4]  # IPv6 compared as addresses, not text
    assert members_at(listing, "10.0.0.99") == []
    assert members_at('{"header":{"cluster_id":1}}', "10.0.0.2") == []  # omitempty: no members key


@pytest.mark.parametrize(
    "text",
    ["", "Error: x", "[]", '{"members": {"a": 1}}', '{"members": [{"peerURLs": ["https://10.0.0.2:2380"]}]}'],
)
def test_members_at_refuses_what_is_not_a_member_list(text: str) -> None:
    with pytest.raises(ValueError, match="not an etcdctl member list"):
        members_at(text, "10.0.0.2")


# ------------------------------------------------------------------------- the engine's side


class _Steps:
    """The journal's step(): runs the work and keeps (step, host, note)."""

    def __init__(self) -> None:
        self.done: list[tuple[str, str, str | None]] = []

    async def step(self, action: str, step: str, host: str, inputs: Any, work: Any) -> None:
        self.done.append((step, host, await work()))


@pytest.mark.parametrize("no_tool", [False, True])
def test_the_engine_removes_an_unreachable_masters_member_or_warns_why_not(no_tool: bool) -> None:
    """Executor._forget_unreachable_member with the kubernetes runtime: the member removed in a
    journaled step, or (image without etcdctl) kept with the runtime's reason as the run's warning."""
    from types import SimpleNamespace

    from sealer.apply.lifecycle import Executor
    from sealer.plan.actions import Action

    fleet = EtcdFleet(list(THREE), no_tool=no_tool)
    ctx = _ctx(fleet)
    ex = object.__new__(Executor)  # only what this method uses: no hosts, journal or API needed
    ex.runtime = KubernetesRuntime()
    ex.steps = _Steps()  # type: ignore[assignment]
    ex.ctx = ctx
    ex.d2 = SimpleNamespace(warnings=[], cluster=ctx.cluster)  # type: ignore[assignment]
    action = Action("a1", "remove-master", (GONE,), "removed from the Clusterfile")
    asyncio.run(ex._forget_unreachable_member(action, _gone_host(ctx)))
    steps = ex.steps.done  # type: ignore[attr-defined]
    assert [s[:2] for s in steps] == [("etcd-forget", GONE), ("balancers", GONE)]
    if no_tool:
        assert steps[0][2] == "etcd member left in place" and len(fleet.members) == 3
        (warning,) = ex.d2.warnings
        assert warning.startswith(f"{GONE} (unreachable): its etcd member could not be removed") and (
            "no bin/etcdctl" in warning
        )
    else:
        assert steps[0][2] == "etcd member removed from master0" and ex.d2.warnings == []
        assert [m["name"] for m in fleet.members] == ["m0", "m1"]
