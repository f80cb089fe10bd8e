"""apply/restore.py and the restore steps of runtime/etcd_backup.py: the step structure of each
runtime's restore (every step keyed by name and host once, in an order that stops before it
restores and restores before it re-joins), a restore interrupted at each of its steps and run
again through the real journal (finished steps skipped, the interrupted one redone, decisions
taken before anything changed recalled even where the hosts no longer show them), the plan
digest, and what another command is told while a restore is unfinished. Every restore ends with
the same steps: the Nodes Ready, each Node's labels and taints as the last-applied Clusterfile says
(what the snapshot's Clusterfile set and this one no longer has taken off), the Nodes of hosts not
in the Clusterfile deleted, the in-cluster Clusterfile saved, the snapshot's copies removed from
the masters; a restore killed after that removal does not upload the snapshot again."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sealer.apply import restore as rs
from sealer.apply.engine import Steps
from sealer.apply.progress import Progress
from sealer.errors import HostError, RuntimeErrorSealer, StateError
from sealer.infra.connector import Result
from sealer.kube.client import NodeStatus
from sealer.model.cluster import Clusterfile, Host
from sealer.model.clusterfile import parse_clusterfile
from sealer.runtime import etcd_backup as eb
from sealer.runtime import k3s
from sealer.runtime.base import RuntimeContext
from sealer.runtime.k0s import K0sRuntime
from sealer.runtime.kubernetes import KubernetesRuntime
from sealer.state import ClusterState, Journal
from tests.unit.apply.test_lifecycle import BASE, _cf

SNAP = "/var/lib/sealer/restore/s.snapshot"


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing on the way handles it."""


class HostState:
    """What the hosts of a 2-master + 1-worker cluster answer, changing as a restore goes: k3s's
    token comparison says `same-token` once master0 runs with the backup's token, k0s's CA is the
    archive's once restored, kubeadm's unpack says `other-ca` until master0 has that PKI."""

    def __init__(self, foreign: bool) -> None:
        self.foreign = foreign
        self.restored = False
        self.calls: list[tuple[str, str]] = []

    def answer(self, host: str, cmd: str) -> Result:
        self.calls.append((host, cmd))
        out, code = "", 0
        if "restore-work/k3s" in cmd and "tar -tzf" in cmd:  # k3s unpack
            token = "other-token" if self.foreign and not self.restored else "same-token"
            out = f"{k3s.RESTORE_DIR}/etcd-snapshot {token}\n"
        elif "--cluster-reset" in cmd or (" restore " in cmd and "k0s" in cmd) or cmd == eb.INSTALL_PKI:
            self.restored = True
        elif cmd.startswith("tar -tzf"):  # k0s: the archive's listing
            out = "etcd-snapshot.db\nk0s.yaml\npki/ca.crt\n"
        elif "sha256sum" in cmd:  # k0s's CA
            out = "archive-ca\n" if self.restored and self.foreign else "cluster-ca\n"
        elif "restore-work/etcd" in cmd and "tar -xzf" in cmd:  # kubeadm unpack
            other = self.foreign and not self.restored
            out = ("other-ca\n" if other else "") + f"{eb.RESTORE_WORK}/etcd-snapshot.db\n"
        elif cmd == eb.MEMBER_PROBE:
            n = host.rsplit(".", 1)[1]
            out = f"name=m{n}\ndata-dir=/var/lib/etcd\ninitial-advertise-peer-urls=https://{host}:2380\n"
        return Result(host, cmd, code, out, "", 0.0)


class Fleet:
    def __init__(self, hosts: HostState) -> None:
        self.hosts = hosts

    async def run(self, host: str, cmd: str, **_: Any) -> Result:
        return self.hosts.answer(host, cmd)

    async def get(self, host: str, src: str, dst: Path, **_: Any) -> None:
        Path(dst).write_bytes(b"snapshot")

    async def put(self, host: str, src: Path, dst: str, **_: Any) -> None:
        self.hosts.calls.append((host, f"put {dst}"))


# The last-applied Clusterfile (the workers' labels changed since the backup, their taint dropped)
# and the one the snapshot holds in the cluster, of backup time.
NOW = """apiVersion: sealer.io/v2
kind: Cluster
metadata: {name: rt}
spec:
  image: kubernetes:test
  env: [ENV]
  hosts:
    - ips: [10.0.0.2, 10.0.0.3]
      roles: [master]
      labels: {tier: control}
    - ips: [10.0.0.9]
      roles: [node]
      labels: {disk: nvme, zone: b}
"""
BEFORE = (
    NOW.replace("{disk: nvme, zone: b}", "{disk: ssd, old: x}\n      taints: [dedicated=e2e:NoSchedule]")
    + "    - ips: [10.0.0.7]\n      roles: [node]\n"
)


def _current(env: str = "A=1") -> Clusterfile:
    cf, problems = parse_clusterfile(NOW.replace("ENV", env), "test")
    assert cf is not None, problems
    return cf


def _ctx(fleet: Any, current: Clusterfile) -> RuntimeContext:
    return RuntimeContext(
        fleet=fleet,
        cluster=current.cluster,
        targets={h.ip: h.ip for h in current.cluster.hosts},  # type: ignore[misc]
        node_names={h.ip: f"n{h.ip.rsplit('.', 1)[1]}" for h in current.cluster.hosts},
        registry=None,
    )


class FakeKube:
    """The restored API as the finishing steps see it: the snapshot's Nodes (master1 without an
    address, the worker registered under another name, one of a host removed since) and its
    Clusterfile of backup time."""

    server = "https://10.0.0.2:6443"

    def __init__(self) -> None:
        self.addresses = {"n2": ("10.0.0.2",), "n3": (), "w-9": ("10.0.0.9",), "n7": ("10.0.0.7",)}
        self.labels: dict[str, dict[str, str]] = {
            "n2": {"tier": "control"},
            "n3": {"tier": "control"},
            "w-9": {"disk": "ssd", "old": "x", "kubernetes.io/os": "linux"},
            "n7": {},
        }
        self.taints: dict[str, list[str]] = {}
        self.clusterfile: str | None = BEFORE.replace("ENV", "A=1")
        self.saved: list[tuple[str, str]] = []
        self.deleted: list[tuple[str, str]] = []
        self.client = self  # kubeops.delete_node deletes through kube.client

    async def __aenter__(self) -> FakeKube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def nodes(self) -> list[NodeStatus]:
        return [NodeStatus(n, True, "", a) for n, a in self.addresses.items()]

    async def wait_nodes(self, wanted: Any, timeout: float, *, title: str, hint: str) -> list[NodeStatus]:
        missing = sorted(w.name for _, w in wanted if w.name not in self.addresses)
        if missing:
            raise RuntimeErrorSealer(f"{title}: {missing} not registered", hint)
        return [s for s in await self.nodes() if s.name in {w.name for _, w in wanted}]

    async def set_labels(self, node: str, add: dict[str, str], remove: Sequence[str] = ()) -> None:
        for key in remove:
            self.labels[node].pop(key, None)
        self.labels[node].update(add)

    async def set_taints(self, node: str, taints: Any) -> None:
        self.taints[node] = [str(t) for t in taints]

    async def read_clusterfile(self) -> str | None:
        return self.clusterfile

    async def save_state(self, clusterfile: str, kubeconfig: str) -> None:
        self.clusterfile = clusterfile
        self.saved.append((clusterfile, kubeconfig))

    async def delete(self, kind: Any, name: str, namespace: str | None = None) -> None:
        self.deleted.append((kind.__name__, name))
        if kind.__name__ == "Node":
            del self.addresses[name]


class Recording(k3s.K3sRuntime):
    async def kubeconfig(self, ctx: RuntimeContext) -> str:
        return "apiVersion: v1\nkind: Config\n"

    async def _start(self, ctx: RuntimeContext, host: Host, unit: str, restart: bool) -> None:
        await ctx.fleet.run(host.ip, f"systemctl restart {unit}")

    async def reset(self, ctx: RuntimeContext, hosts: list[Host]) -> None:
        for h in hosts:
            await ctx.fleet.run(h.ip, "k3s reset")

    async def join(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        for h in [*masters, *workers]:
            await ctx.fleet.run(h.ip, "k3s join")

    async def _agent(self, ctx: RuntimeContext, host: Host) -> None:
        await ctx.fleet.run(host.ip, "k3s agent")

    async def _node_token(self, ctx: RuntimeContext) -> str:
        return "K10x::server:pw"


class RecordingK0s(K0sRuntime):
    async def kubeconfig(self, ctx: RuntimeContext) -> str:
        return "apiVersion: v1\nkind: Config\n"

    async def install(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        await ctx.fleet.run(masters[0].ip, "k0s install controller")

    async def join(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        for h in [*masters, *workers]:
            await ctx.fleet.run(h.ip, "k0s join")

    async def reset(self, ctx: RuntimeContext, hosts: list[Host]) -> None:
        for h in hosts:
            await ctx.fleet.run(h.ip, "k0s reset")


class RecordingKubeadm(KubernetesRuntime):
    async def kubeconfig(self, ctx: RuntimeContext) -> str:
        return "apiVersion: v1\nkind: Config\n"

    async def install(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        await ctx.fleet.run(masters[0].ip, "kubeadm init")

    async def join(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        for h in [*masters, *workers]:
            await ctx.fleet.run(h.ip, "kubeadm join")

    async def reset(self, ctx: RuntimeContext, hosts: list[Host]) -> None:
        for h in hosts:
            await ctx.fleet.run(h.ip, "kubeadm reset")


RUNTIMES: dict[str, Callable[[], Any]] = {
    "k3s": Recording,
    "k0s": RecordingK0s,
    "kubernetes": RecordingKubeadm,
}


class ListRun(eb.DirectRun):
    """Records the steps in the order they run (parallel ones in host order)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[str, str]] = []
        self.api_back_at: int | None = None

    async def step(self, name: str, host: Host, inputs: Any, work: eb.Work) -> None:
        self.steps.append((name, host.ip))
        await work()

    async def each(
        self, name: str, hosts: Sequence[Host], work: Callable[[Host], Awaitable[str | None]]
    ) -> None:
        for h in hosts:
            await self.step(name, h, {}, lambda h=h: work(h))  # type: ignore[misc]

    async def api_back(self) -> None:
        self.api_back_at = len(self.steps)


def _steps(runtime: str, foreign: bool, env: str = "A=1") -> tuple[ListRun, HostState, FakeKube]:
    hosts, kube = HostState(foreign), FakeKube()
    run = ListRun()
    rt, current = RUNTIMES[runtime](), _current(env)
    ctx = _ctx(Fleet(hosts), current)

    async def restore() -> None:
        await eb.restore_steps(rt, ctx, SNAP, run)
        await rs.finish_steps(run, rt, ctx, current, kube, SNAP, "admin.conf")  # type: ignore[arg-type]

    asyncio.run(restore())
    return run, hosts, kube


M0, M1, W = "10.0.0.2", "10.0.0.3", "10.0.0.9"
EXPECTED = {
    ("k3s", False): [
        ("prepare", M0), ("stop", M0), ("stop", M1), ("cluster-reset", M0), ("start", M0),
        ("drop-token-copy", M0), ("rejoin", M1), ("restart", W),
    ],
    ("k3s", True): [
        ("prepare", M0), ("stop", M0), ("stop", M1), ("install-token", M0), ("cluster-reset", M0),
        ("start", M0), ("drop-token-copy", M0), ("forget-node-passwords", M0), ("reset", M1),
        ("join", M1), ("join", W),
    ],
    ("k0s", False): [
        ("prepare", M0), ("keep", M0), ("stop", M0), ("stop", M1), ("restore", M0), ("start", M0),
        ("reset", M1), ("join", M1), ("restart", W),
    ],
    ("k0s", True): [
        ("prepare", M0), ("keep", M0), ("stop", M0), ("stop", M1), ("restore", M0), ("start", M0),
        ("reset", M1), ("join", M1), ("reset", W), ("join", W),
    ],
    ("kubernetes", False): [
        ("prepare", M0), ("copy-snapshot", M1), ("stop", M0), ("stop", M1), ("restore-member", M0),
        ("restore-member", M1), ("start", M0), ("start", M1), ("wait-api", M0), ("wait-api", M1),
        ("restart-kubelet", M0), ("restart-kubelet", M1), ("restart-kubelet", W),
    ],
    ("kubernetes", True): [
        ("prepare", M0), ("reset", M0), ("reset", M1), ("reset", W), ("install-pki", M0), ("init", M0),
        ("stop", M0), ("restore-member", M0), ("start", M0), ("wait-api", M0), ("restart-kubelet", M0),
        ("delete-nodes", M0), ("drop-pki-copy", M0), ("join", M1), ("join", W),
    ],
}  # fmt: skip
# every restore ends so: the cluster as the last-applied Clusterfile, the snapshot's copies gone
TAIL = [
    ("nodes-ready", M0), ("labels-taints", M0), ("labels-taints", M1), ("labels-taints", W),
    ("delete-stale-nodes", M0), ("save-state", M0), ("cleanup", M0), ("cleanup", M1),
]  # fmt: skip
EXPECTED = {key: [*steps, *TAIL] for key, steps in EXPECTED.items()}
# where the restored API answers again: the lease is taken back there
API_BACK_AFTER = {
    ("k3s", False): ("start", M0),
    ("k3s", True): ("start", M0),
    ("k0s", False): ("start", M0),
    ("k0s", True): ("start", M0),
    ("kubernetes", False): ("wait-api", M1),
    ("kubernetes", True): ("restart-kubelet", M0),
}


@pytest.mark.parametrize(("runtime", "foreign"), sorted(EXPECTED))
def test_each_runtime_restores_in_keyed_steps(runtime: str, foreign: bool) -> None:
    run, _, _ = _steps(runtime, foreign)
    assert run.steps == EXPECTED[(runtime, foreign)]
    # a step's journal key is (name, host): one that came twice would be skipped the second time
    assert len(set(run.steps)) == len(run.steps)
    assert run.api_back_at is not None
    assert run.steps[run.api_back_at - 1] == API_BACK_AFTER[(runtime, foreign)]


def _journaled(
    state: ClusterState,
    runtime: Any,
    hosts: HostState,
    kube: FakeKube,
    kill_at: tuple[str, str] | None,
    monkeypatch: pytest.MonkeyPatch,
) -> Steps:
    """One run of the restore as apply/restore.py runs it (journal, memo, steps; the upload, the
    runtime's steps, the finishing ones), killed when it is about to start `kill_at`."""
    monkeypatch.setattr(rs, "Kube", lambda text: kube)
    journal = state.journal()
    try:
        r = journal.resume_or_begin(rs.KIND, "sha256:plan")
        steps = Steps(journal, r.op, r.finished, Progress(quiet=True))

        async def api_back() -> None:
            return None

        run = rs.JournaledRun(steps, rs.Memo(state.dir / rs.MEMO, r.op), Progress(quiet=True), api_back)
        real_step = run.step

        async def step(name: str, host: Host, inputs: Any, work: eb.Work) -> None:
            async def killable() -> str | None:
                if (name, host.ip) == kill_at:
                    raise Killed()
                return await work()

            await real_step(name, host, inputs, killable)

        run.step = step  # type: ignore[method-assign]
        current = _current()
        ctx = _ctx(Fleet(hosts), current)
        try:
            asyncio.run(rs._restore(run, runtime, ctx, Path("/backups/s"), "f" * 64, SNAP, state, current))
        except Killed:
            return steps
        journal.end(r.op, "done")
        return steps
    finally:
        journal.close()


@pytest.mark.parametrize(("runtime", "foreign"), sorted(EXPECTED))
def test_a_restore_killed_at_any_step_resumes_from_it(
    runtime: str, foreign: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = EXPECTED[(runtime, foreign)]
    for i, kill_at in enumerate(expected):
        state = ClusterState("demo", tmp_path / f"home-{i}")
        state.ensure()
        hosts, kube = HostState(foreign), FakeKube()
        _journaled(state, RUNTIMES[runtime](), hosts, kube, kill_at, monkeypatch)
        uploads = len([c for c in hosts.calls if c == (M0, f"put {SNAP}")])
        again = _journaled(state, RUNTIMES[runtime](), hosts, kube, None, monkeypatch)
        # every step before the kill is skipped (and those that ran beside it on other hosts and
        # finished), the killed one and every later one run
        assert again.skip_count >= i and again.run_count + again.skip_count == len(expected), kill_at
        assert again.run_count >= 1
        ops = Journal(state.journal_path).operations()
        assert len(ops) == 1 and ops[0].status == "done"
        started = [
            (e.step, e.host)
            for e in Journal(state.journal_path).entries()
            if e.type == "step" and e.status == "start"
        ]
        # each finished step started once, the killed one again by the resumed run; the resumed
        # run took the path decided before anything changed, though the hosts answer otherwise
        # now (k3s: the same token; kubeadm: the same CA; the in-cluster Clusterfile: the last-
        # applied one): its steps are those of that path, with the same inputs
        assert Counter(started) == Counter([*expected, kill_at]), kill_at
        resumed = started[-again.run_count :]
        assert resumed == [s for s in expected if s in resumed]
        # the snapshot is sent again unless master0's copy was removed by the finished cleanup
        sent_again = len([c for c in hosts.calls if c == (M0, f"put {SNAP}")]) - uploads
        assert sent_again == (0 if kill_at == ("cleanup", M1) else 1), kill_at
        # the end state is the same wherever the restore was killed
        assert kube.labels["w-9"] == {"disk": "nvme", "zone": "b", "kubernetes.io/os": "linux"}, kill_at
        assert "n7" not in kube.addresses and kube.clusterfile is not None
        assert "nvme" in kube.clusterfile and "dedicated" not in kube.clusterfile


def test_memo_is_private_and_only_for_its_operation(tmp_path: Path) -> None:
    memo = rs.Memo(tmp_path / rs.MEMO, "op-1")
    memo.set("mode", "other-token")
    assert (tmp_path / rs.MEMO).stat().st_mode & 0o777 == 0o600
    assert rs.Memo(tmp_path / rs.MEMO, "op-1").values == {"mode": "other-token"}
    assert rs.Memo(tmp_path / rs.MEMO, "op-2").values == {}  # another restore starts afresh
    memo.drop()
    assert not (tmp_path / rs.MEMO).exists()


def test_a_lost_decision_is_a_clear_error() -> None:
    run = eb.DirectRun()
    with pytest.raises(RuntimeErrorSealer) as err:
        eb.recalled(run, "mode")
    assert "'mode'" in err.value.message and "sealer delete --all" in (err.value.hint or "")


def test_plan_digest_is_the_snapshot_content_and_the_cluster(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_bytes(b"snapshot-1")
    b.write_bytes(b"snapshot-1")
    c.write_bytes(b"snapshot-2")
    cf = _cf()
    same = rs.plan_digest(cf, "k3s", rs.file_sha256(a))
    assert same == rs.plan_digest(cf, "k3s", rs.file_sha256(b))  # copied elsewhere: the same restore
    assert same != rs.plan_digest(cf, "k3s", rs.file_sha256(c))
    assert same != rs.plan_digest(
        _cf(BASE.replace("10.0.0.5-10.0.0.6", "10.0.0.5")), "k3s", rs.file_sha256(a)
    )


def _restore_op(state: ClusterState, last_step: str, status: str = "failed") -> str:
    journal = state.journal()
    try:
        op = journal.begin(rs.KIND, "sha256:plan")
        for step in ("upload", "prepare", last_step):
            journal.step(op, rs.KIND, step, "start", host="10.0.0.2")
            journal.step(op, rs.KIND, step, "done" if step != last_step else "failed", host="10.0.0.2")
        journal.end(op, "failed", "x")
    finally:
        journal.close()
    state.update_meta(
        last_operation={"op": op, "kind": rs.KIND, "command": "sealer etcd restore /b/s.snap -y", "plan": ""}
    )
    return op


def test_an_unfinished_restore_is_one_that_changed_something(tmp_path: Path) -> None:
    state = ClusterState("demo", tmp_path)
    state.ensure()
    _restore_op(state, "prepare")  # refused file: nothing changed, nothing to finish
    assert rs.unfinished_restore(state) is None
    rs.refuse_if_restore_unfinished(state, "a backup")
    op = _restore_op(state, "stop")
    found = rs.unfinished_restore(state)
    assert found is not None and found.op == op
    with pytest.raises(StateError) as err:
        rs.refuse_if_restore_unfinished(state, "a backup")
    assert f"an etcd restore did not finish (operation {op}" in err.value.message
    assert "a backup would act on a half-restored cluster" in err.value.message
    assert "run `sealer etcd restore /b/s.snap -y` again" in (err.value.hint or "")


def test_other_commands_are_refused_while_a_restore_is_unfinished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sealer.cli.main import cli

    home = tmp_path / "sealer-home"
    monkeypatch.setenv("SEALER_HOME", str(home))
    state = ClusterState("demo", home)
    state.record_applied(BASE, runtime_type="k3s", image="e2e.local/k3s:1")
    op = _restore_op(state, "cluster-reset")
    snap = tmp_path / "other.snapshot"
    snap.write_bytes(b"another snapshot")
    for args in (
        ["upgrade", "e2e.local/k3s:2", "-y"],
        ["scale-up", "-n", "10.0.0.9", "-y"],
        ["etcd", "backup", "-o", str(tmp_path / "b")],
        ["etcd", "restore", str(snap), "-y"],
    ):
        result = CliRunner().invoke(cli, args, prog_name="sealer")
        assert result.exit_code == 1, (args, result.output)
        assert "Traceback" not in result.output
        assert "etcd restore did not finish" in result.output, (args, result.output)
        assert "sealer etcd restore /b/s.snap -y" in result.output, (args, result.output)
    status = json.loads(CliRunner().invoke(cli, ["status", "-o", "json"], prog_name="sealer").output)
    assert status["lastOperation"]["op"] == op and status["lastOperation"]["kind"] == rs.KIND
    assert status["toFinish"] == "sealer etcd restore /b/s.snap -y"
    assert [(u["step"], u["status"]) for u in status["unfinished"]] == [("cluster-reset", "failed")]


def test_a_failure_names_the_snapshot_as_given_and_the_way_on() -> None:
    remote, local = "/var/lib/sealer/restore/0123.snapshot", Path("/backups/prod.snapshot")
    state = ClusterState("demo", Path("/nonexistent"))
    command = "sealer etcd restore /backups/prod.snapshot -y"
    refused = rs._resumable(
        RuntimeErrorSealer(f"{remote}: not a k3s backup", "give the file ...; nothing was changed"),
        state, command, remote, local,
    )  # fmt: skip
    assert refused.message == "/backups/prod.snapshot: not a k3s backup"
    assert refused.hint == "give the file ...; nothing was changed"  # nothing to continue
    failed = rs._resumable(
        HostError("10.0.0.3", "k3s.service did not start", "see `journalctl -u k3s`"),
        state,
        command,
        remote,
        local,
    )
    assert isinstance(failed, HostError) and failed.message == "10.0.0.3: k3s.service did not start"
    assert failed.hint == (
        "see `journalctl -u k3s`; then run `sealer etcd restore /backups/prod.snapshot -y` again: it "
        "continues from the failed step (`sealer status --cluster demo` shows it)"
    )


def test_the_restore_ends_with_the_nodes_the_clusterfile_says() -> None:
    run, hosts, kube = _steps("k3s", False)
    # the worker: the labels of now, the one only the snapshot's Clusterfile had taken off, a label
    # sealer never set kept; the taint dropped since the backup taken off
    assert kube.labels["w-9"] == {"disk": "nvme", "zone": "b", "kubernetes.io/os": "linux"}
    assert "dedicated=e2e:NoSchedule-" in kube.taints["w-9"]
    # master1's Node has no address: found by its name, kept and labelled
    assert kube.labels["n3"] == {"tier": "control"} and "n3" in kube.addresses
    # the Node of the host removed since the backup is deleted (with k3s's node-password Secret, so
    # the host can join again under its name); no Node of a Clusterfile host is
    assert kube.deleted == [("Node", "n7"), ("Secret", "n7.node-password.k3s")]
    assert set(kube.addresses) == {"n2", "n3", "w-9"}
    # the in-cluster state is the last-applied Clusterfile (passwords redacted) again
    assert kube.saved == [(rs.dump_clusterfile(_current(), redact=True), "admin.conf")]
    # the snapshot's copies removed on every master; what the runtimes keep as the state before the
    # restore is not named
    cleanup = [(h, c) for h, c in hosts.calls if c == eb.leftovers_script(SNAP)]
    assert [h for h, _ in cleanup] == [M0, M1]
    script = eb.leftovers_script(SNAP)
    assert f"rm -f {SNAP}" in script and k3s.RESTORE_DIR in script and eb.RESTORE_WORK in script
    assert "before-restore" not in script and eb.BACKUP_DIR not in script and "etcd-old" not in script
    assert run.steps[-len(TAIL) :] == TAIL


def test_pure_k0s_controllers_are_no_nodes_to_wait_for_or_label() -> None:
    hosts, kube = HostState(False), FakeKube()
    for name in ("n2", "n3"):  # K0sControllerWorker=false: the controllers never registered
        del kube.addresses[name]
    run = ListRun()
    current = _current("K0sControllerWorker=false")
    ctx = _ctx(Fleet(hosts), current)
    asyncio.run(rs.finish_steps(run, RecordingK0s(), ctx, current, kube, SNAP, "a"))  # type: ignore[arg-type]
    assert [s for s in run.steps if s[0] == "labels-taints"] == [("labels-taints", W)]
    assert kube.deleted == [("Node", "n7"), ("Secret", "n7.node-password.k3s")]


def test_a_host_not_registered_again_is_waited_for_by_name() -> None:
    """A worker that joined after the backup has no Node in the snapshot: the restore waits for it
    to register anew rather than label what is not there."""
    hosts, kube = HostState(False), FakeKube()
    del kube.addresses["w-9"]
    current = _current()
    with pytest.raises(RuntimeErrorSealer) as err:
        asyncio.run(
            rs.finish_steps(ListRun(), Recording(), _ctx(Fleet(hosts), current), current, kube, SNAP, "a")
        )  # type: ignore[arg-type]
    assert "n9" in err.value.message
    assert kube.saved == [] and not any(c == eb.leftovers_script(SNAP) for _, c in hosts.calls)


def test_without_a_clusterfile_in_the_snapshot_nothing_is_taken_off() -> None:
    """A snapshot without sealer's state (or with one that does not parse): the Clusterfile's labels
    and taints are set, none taken off, since none is known to be sealer's."""
    for saved in (None, "not: [a clusterfile"):
        hosts, kube = HostState(False), FakeKube()
        kube.clusterfile = saved
        current = _current()
        asyncio.run(
            rs.finish_steps(ListRun(), Recording(), _ctx(Fleet(hosts), current), current, kube, SNAP, "a")
        )  # type: ignore[arg-type]
        assert kube.labels["w-9"] == {"disk": "nvme", "zone": "b", "old": "x", "kubernetes.io/os": "linux"}
        assert not any(t.endswith("-") for t in kube.taints["w-9"])


def test_an_api_failure_after_the_restore_is_a_clear_error() -> None:
    hosts, kube = HostState(False), FakeKube()

    async def broken() -> str | None:
        raise OSError("connection reset")

    kube.read_clusterfile = broken  # type: ignore[method-assign]
    current = _current()
    with pytest.raises(RuntimeErrorSealer) as err:
        asyncio.run(
            rs.finish_steps(ListRun(), Recording(), _ctx(Fleet(hosts), current), current, kube, SNAP, "a")
        )  # type: ignore[arg-type]
    assert kube.server in err.value.message and "connection reset" in err.value.message
    assert "run the same restore again" in (err.value.hint or "")
