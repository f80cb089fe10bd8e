"""How the run pipeline distributes a ClusterImage: which payload goes to which hosts, which goes
host to host under each --distributor, the disk that needs, and that the fan-out is only ever an
optimisation (a failure is reported and the hosts' own journaled steps copy directly)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from sealer.apply.engine import Engine, RunOptions, Steps
from sealer.apply.facts import HostFacts, preflight
from sealer.apply.progress import Progress
from sealer.apply.rootfs import (
    AUTO_FANOUT_MIN_HOSTS,
    Payload,
    UnpackedImage,
    disk_need,
    fans_out,
    payloads,
)
from sealer.errors import HostError
from sealer.infra import fanout
from sealer.infra.connector import Outcome, Result, TransferStats
from sealer.infra.host import Target
from sealer.model.cluster import Host
from sealer.model.clusterfile import parse_clusterfile
from sealer.state import ClusterState, Journal

MB = 1 << 20


def _image(tmp_path: Path, name: str, rootfs_mb: int = 3, registry_mb: int = 5) -> UnpackedImage:
    top = tmp_path / name
    (top / "rootfs/bin").mkdir(parents=True)
    (top / "rootfs/bin/tool").write_bytes(b"r" * rootfs_mb * MB)
    (top / "registry/blobs").mkdir(parents=True)
    (top / "registry/blobs/layer").write_bytes(b"g" * registry_mb * MB)
    return UnpackedImage(f"sha256:{name}", top / "rootfs", top / "registry")


# pure planning ------------------------------------------------------------------------------------
def test_payloads_rootfs_for_every_host_registry_data_where_served(tmp_path: Path) -> None:
    img = _image(tmp_path, "amd")
    got = payloads({ip: ("amd64", img) for ip in ("m0", "m1", "w1")}, ["m0"], "/d/c/rootfs")
    assert got == [
        Payload("rootfs", "rootfs", img.rootfs, "/d/c/rootfs", ("m0", "m1", "w1")),
        Payload("registry", "registry data", img.registry, "/d/c/rootfs/registry", ("m0",)),
    ]


def test_payloads_per_platform_name_the_arch(tmp_path: Path) -> None:
    amd, arm = _image(tmp_path, "amd"), _image(tmp_path, "arm")
    rootfs_of = {"m0": ("amd64", amd), "w1": ("arm64", arm), "w2": ("amd64", amd)}
    got = payloads(rootfs_of, ["m0", "w1"], "/r")
    assert [(p.label, p.src, p.hosts) for p in got] == [
        ("rootfs (amd64)", amd.rootfs, ("m0", "w2")),
        ("rootfs (arm64)", arm.rootfs, ("w1",)),
        ("registry data (amd64)", amd.registry, ("m0",)),
        ("registry data (arm64)", arm.registry, ("w1",)),
    ]


def _payload(n: int) -> Payload:
    return Payload("rootfs", "rootfs", Path("/x"), "/y", tuple(f"h{i}" for i in range(n)))


@pytest.mark.parametrize(
    ("distributor", "hosts", "expected"),
    [
        ("ssh", 10, False),
        ("fanout", 1, False),  # nobody to pass it on to: one direct stream
        ("fanout", 2, True),
        ("auto", 1, False),
        ("auto", AUTO_FANOUT_MIN_HOSTS - 1, False),
        ("auto", AUTO_FANOUT_MIN_HOSTS, True),
        ("auto", 10, True),
    ],
)
def test_fans_out(distributor: str, hosts: int, expected: bool) -> None:
    assert fans_out(distributor, _payload(hosts)) is expected


def test_unknown_distributor_is_refused() -> None:
    with pytest.raises(ValueError, match="rsync"):
        fans_out("rsync", _payload(3))


def test_disk_need_counts_the_spool_of_what_arrives_host_to_host() -> None:
    assert disk_need({"rootfs": 100}, {"rootfs": False}) == 125  # data + runtime margin
    assert disk_need({"rootfs": 100}, {"rootfs": True}) == 200  # spool + files while it arrives
    # master0: rootfs by fan-out (spooled), registry data direct: the spool of the rootfs only,
    # but never less than the runtime's margin on all of it
    assert disk_need({"rootfs": 100, "registry": 400}, {"rootfs": True, "registry": False}) == 625
    assert disk_need({"rootfs": 400, "registry": 100}, {"rootfs": True, "registry": False}) == 900


def test_preflight_names_the_host_and_the_spool() -> None:
    facts = {
        "10.0.0.2": HostFacts("10.0.0.2", arch="x86_64", systemd=True, disk_path="/var", disk_free=150 * MB),
        "10.0.0.3": HostFacts("10.0.0.3", arch="x86_64", systemd=True, disk_path="/var", disk_free=150 * MB),
    }
    found = preflight(
        facts,
        cluster="c",
        masters=["10.0.0.2"],
        master0="10.0.0.2",
        registry_port=None,
        arches=["amd64"],
        need_bytes={"10.0.0.2": 200 * MB, "10.0.0.3": 120 * MB},
        need_what={"10.0.0.2": "the rootfs and registry data"},
        spooled={"10.0.0.2"},
    )
    assert [(f.host, f.severity) for f in found] == [("10.0.0.2", "error")]
    assert found[0].message == (
        "too little disk at /var: 150.0 MiB free, 200.0 MiB needed for the rootfs and registry data "
        "(sent host to host: spool + files while it arrives)"
    )
    assert "--distributor ssh" in found[0].hint


# the engine ---------------------------------------------------------------------------------------
CF = """apiVersion: sealer.io/v2
kind: Cluster
metadata: {name: dist}
spec:
  image: demo:1
  dataRoot: /d
  hosts:
  - {ips: [10.0.0.2], roles: [master]}
  - {ips: [10.0.0.3, 10.0.0.4], roles: [node]}
"""


class FakeFleet:
    """Answers the engine's marker reads; `markers` holds what each host's rootfs marker says."""

    def __init__(self, markers: dict[str, str] | None = None) -> None:
        self.markers = markers or {}
        self.commands: list[tuple[str, str]] = []
        self.puts: list[tuple[str, Path, str]] = []

    def connector_for(self, target: Target) -> object:
        return object()  # neither SSH nor local: the engine copies through put()

    async def put(self, target: Target, src: Path, dst: str, **_: Any) -> TransferStats:
        self.puts.append((target.name, Path(src), dst))
        return TransferStats(target.name, 1, 0, 5 * MB, 0.1)

    async def run(self, target: Target, cmd: str, **_: Any) -> Result:
        self.commands.append((target.name, cmd))
        have = self.markers.get(target.name)
        return Result(target.name, cmd, 0 if have else 1, have or "", "", 0.0)

    async def each(
        self, hosts: Iterable[Target], action: Callable[[Target], Awaitable[Any]]
    ) -> list[Outcome[Any]]:
        return [Outcome(h.name, value=await action(h)) for h in hosts]


class Recorder(Progress):
    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.notes: list[str] = []
        self.warnings: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def _engine(tmp_path: Path, distributor: str) -> tuple[Engine, Recorder]:
    cf, problems = parse_clusterfile(CF, "cf")
    assert cf is not None, problems
    progress = Recorder()
    engine = Engine(cf, ClusterState("dist", home=tmp_path), RunOptions(distributor=distributor), progress)
    for h in engine.hosts:
        engine.facts[h.ip] = HostFacts(h.ip, arch="x86_64")
    engine.unpacked["amd64"] = _image(tmp_path, "img")
    return engine, progress


def _distribute(engine: Engine, fleet: FakeFleet, tmp_path: Path) -> tuple[list[str], Journal]:
    """Engine.distribute with per-host steps that record the hosts they ran on."""
    journal = Journal(tmp_path / "journal.jsonl", durable=False)
    op = journal.begin("run", "sha256:plan")
    steps = Steps(journal, op, frozenset(), engine.progress)
    ran: list[str] = []

    async def per_host(h: Host) -> None:
        async def work() -> str:
            ran.append(h.ip)
            return "ok"

        await steps.step("install", "rootfs", h.ip, {"image": 1}, work)

    asyncio.run(engine.distribute(fleet, steps, "install", engine.hosts, per_host))  # type: ignore[arg-type]
    return ran, journal


def _fake_fanout(calls: list[tuple[list[str], Path, str]], fail: dict[str, str] | None = None) -> Any:
    async def fake(fleet: Any, hosts: list[Target], src: Path, dst: str, **kw: Any) -> fanout.FanoutResult:
        assert kw["sudo"] is True
        calls.append(([t.name for t in hosts], Path(src), dst))
        outcomes: list[Outcome[TransferStats]] = []
        for t in hosts:
            if fail and t.name in fail:
                outcomes.append(Outcome(t.name, error=HostError(t.name, fail[t.name])))
            else:
                outcomes.append(Outcome(t.name, value=TransferStats(t.name, 1, 0, 3 * MB, 0.1)))
        return fanout.FanoutResult(outcomes)

    return fake


def test_auto_fans_the_rootfs_out_to_three_hosts_and_sends_registry_data_directly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, progress = _engine(tmp_path, "auto")
    calls: list[tuple[list[str], Path, str]] = []
    monkeypatch.setattr(fanout, "fanout_copy", _fake_fanout(calls))
    fleet = FakeFleet()
    ran, journal = _distribute(engine, fleet, tmp_path)
    img = engine.unpacked["amd64"]
    assert calls == [(["10.0.0.2", "10.0.0.3", "10.0.0.4"], img.rootfs, "/d/dist/rootfs")]
    # only master0 serves the registry: one host, one direct stream, sent alongside the fan-out
    assert fleet.puts == [("10.0.0.2", img.registry, "/d/dist/rootfs/registry")]
    assert "registry data sent directly to 10.0.0.2 alongside the fan-out (1 file(s))" in progress.notes
    assert sorted(ran) == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]  # the per-host steps still run
    assert "rootfs sent host to host (fan-out) to 3/3 host(s)" in progress.notes, progress.warnings
    done = [(e.step, e.host) for e in journal.entries() if e.type == "step" and e.status == "done"]
    assert ("fanout:rootfs", "fan-out") in done


def test_ssh_never_fans_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, _ = _engine(tmp_path, "ssh")
    calls: list[tuple[list[str], Path, str]] = []
    monkeypatch.setattr(fanout, "fanout_copy", _fake_fanout(calls))
    fleet = FakeFleet()
    ran, _ = _distribute(engine, fleet, tmp_path)
    assert calls == [] and fleet.commands == [] and fleet.puts == []
    assert sorted(ran) == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]


def test_hosts_that_hold_the_image_are_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, _ = _engine(tmp_path, "fanout")
    calls: list[tuple[list[str], Path, str]] = []
    monkeypatch.setattr(fanout, "fanout_copy", _fake_fanout(calls))
    # a re-run: the worker .3 finished before; master0's marker names another image
    fleet = FakeFleet({"10.0.0.3": "sha256:img", "10.0.0.2": "sha256:old +registry"})
    _distribute(engine, fleet, tmp_path)
    assert [c[0] for c in calls] == [["10.0.0.2", "10.0.0.4"]]

    # with auto, the two left are below the threshold: direct
    engine2, _ = _engine(tmp_path / "auto", "auto")
    calls.clear()
    fleet.puts.clear()
    _distribute(engine2, fleet, tmp_path / "auto")
    assert calls == [] and fleet.puts == []  # nothing fans out: the hosts' own steps do it all


def test_a_failed_fanout_never_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, progress = _engine(tmp_path, "auto")

    async def broken(*_: Any, **__: Any) -> fanout.FanoutResult:
        raise OSError("ssh-keygen: not found")

    monkeypatch.setattr(fanout, "fanout_copy", broken)
    ran, journal = _distribute(engine, FakeFleet(), tmp_path)
    assert sorted(ran) == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert progress.warnings == [
        "fan-out of the rootfs failed (OSError: ssh-keygen: not found); every host gets it directly"
    ]
    assert not [e for e in journal.entries() if e.type == "step" and e.status == "failed"]


def test_a_host_the_fanout_missed_is_named_and_copied_directly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, progress = _engine(tmp_path, "auto")
    calls: list[tuple[list[str], Path, str]] = []
    monkeypatch.setattr(fanout, "fanout_copy", _fake_fanout(calls, {"10.0.0.4": "link cut"}))
    ran, _ = _distribute(engine, FakeFleet(), tmp_path)
    assert "rootfs sent host to host (fan-out) to 2/3 host(s)" in progress.notes
    assert progress.warnings == [
        "10.0.0.4: fan-out of the rootfs failed (link cut); copying directly"
    ]
    assert "10.0.0.4" in ran


def test_disk_needs_follow_the_distributor(tmp_path: Path) -> None:
    fan, _ = _engine(tmp_path / "a", "auto")
    need, what, spooled = fan.disk_needs(fan.hosts)
    assert spooled == {"10.0.0.2", "10.0.0.3", "10.0.0.4"}
    assert need["10.0.0.3"] == 2 * 3 * MB  # the rootfs, twice while it arrives
    assert need["10.0.0.2"] == 8 * MB + 3 * MB  # rootfs + registry data, plus the rootfs spool
    assert what["10.0.0.2"] == "the rootfs and registry data" and what["10.0.0.3"] == "the rootfs"
    direct, _ = _engine(tmp_path / "s", "ssh")
    need, _, spooled = direct.disk_needs(direct.hosts)
    assert spooled == set()
    assert need["10.0.0.3"] == int(3 * MB * 1.25)


def test_logs_get_the_per_host_table_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal (CI, a log file): no live redraw, the fan-out's per-host table printed once."""
    import io

    from rich.console import Console

    engine, _ = _engine(tmp_path, "auto")
    out = io.StringIO()
    engine.progress = Progress(Console(file=out, width=120))

    async def fake(fleet: Any, hosts: list[Target], src: Path, dst: str, **kw: Any) -> fanout.FanoutResult:
        for i, t in enumerate(hosts):
            parent = hosts[i - 1].name if i else "operator"
            kw["progress"](fanout.HostProgress(t.name, 3 * MB, 3 * MB, 1.0 * MB, 0.0, "done", parent, 1))
        stats = [Outcome(t.name, value=TransferStats(t.name, 1, 0, 3 * MB, 0.1)) for t in hosts]
        return fanout.FanoutResult(stats)

    monkeypatch.setattr(fanout, "fanout_copy", fake)
    _distribute(engine, FakeFleet(), tmp_path)
    lines = out.getvalue().splitlines()
    row = next(line for line in lines if line.startswith("10.0.0.4"))
    assert row.split()[:3] == ["10.0.0.4", "10.0.0.3", "done"]  # fed by the host before it
    assert "3/3 done, 0 failed, eta 0s" in lines
    assert "  rootfs sent host to host (fan-out) to 3/3 host(s)" in lines


# the commands -------------------------------------------------------------------------------------
def test_run_and_apply_take_the_distributor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both commands pass --distributor to the engine (default auto), so a scale-up through
    `sealer apply` joins hosts the same way; an unknown value names the choices."""
    from click.testing import CliRunner

    from sealer.cli import cluster_cmds, run_cmds
    from sealer.cli.main import cli

    monkeypatch.setenv("SEALER_HOME", str(tmp_path / "home"))
    seen: list[str] = []

    async def fake_run(cf: Any, *, options: RunOptions, progress: Progress) -> Any:
        seen.append(options.distributor)
        raise HostError("10.0.0.2", "stop here")

    async def fake_apply(desired: Any, *, options: RunOptions, **_: Any) -> Any:
        seen.append(options.distributor)
        raise HostError("10.0.0.2", "stop here")

    monkeypatch.setattr(run_cmds, "run_cluster", fake_run)
    monkeypatch.setattr(cluster_cmds, "apply_cluster", fake_apply)
    cf = tmp_path / "Clusterfile"
    cf.write_text(CF)
    runner = CliRunner()
    for args in (
        ["run", "-f", str(cf)],
        ["run", "-f", str(cf), "--distributor", "ssh"],
        ["apply", "-f", str(cf)],
        ["apply", "-f", str(cf), "--distributor", "fanout"],
    ):
        result = runner.invoke(cli, args, prog_name="sealer")
        assert result.exit_code == 1 and "stop here" in result.output, (args, result.output)
    assert seen == ["auto", "ssh", "auto", "fanout"]
    bad = runner.invoke(cli, ["run", "-f", str(cf), "--distributor", "rsync"], prog_name="sealer")
    assert bad.exit_code == 2 and "'auto', 'ssh', 'fanout'" in bad.output
    shown = runner.invoke(cli, ["apply", "--help"], prog_name="sealer", terminal_width=200).output
    assert "--distributor [auto|ssh|fanout]" in shown and "bench/run_distribute.py" in shown


def test_a_failed_early_registry_copy_is_left_to_the_hosts_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, progress = _engine(tmp_path, "auto")
    monkeypatch.setattr(fanout, "fanout_copy", _fake_fanout([]))

    class Refusing(FakeFleet):
        async def put(self, target: Target, src: Path, dst: str, **_: Any) -> TransferStats:
            raise HostError(target.name, "No space left on device")

    ran, _ = _distribute(engine, Refusing(), tmp_path)
    assert sorted(ran) == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert progress.warnings == [
        "10.0.0.2: early copy of the registry data failed (No space left on device); retrying"
    ]


def test_scale_up_and_upgrade_take_the_distributor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scale-up/join and upgrade distribute like run and apply, and pass --distributor through."""
    from click.testing import CliRunner

    from sealer.cli import day2_cmds
    from sealer.cli.main import cli
    from sealer.model.clusterfile import parse_clusterfile

    monkeypatch.setenv("SEALER_HOME", str(tmp_path / "home"))
    current, problems = parse_clusterfile(CF, "Clusterfile")
    assert current is not None, problems
    seen: list[tuple[str, str]] = []

    def fake_installed(cluster: str | None) -> Any:
        return day2_cmds.ClusterState(current.cluster.name), current

    def fake_apply(desired: Any, state: Any, *, kind: str, distributor: str = "auto", **_: Any) -> None:
        seen.append((kind, distributor))

    monkeypatch.setattr(day2_cmds, "_installed", fake_installed)
    monkeypatch.setattr(day2_cmds, "run_apply", fake_apply)
    runner = CliRunner()
    for args in (
        ["scale-up", "-n", "10.0.0.9"],
        ["join", "-n", "10.0.0.9", "--distributor", "ssh"],
        ["upgrade", "e2e.local/other:2", "--distributor", "fanout"],
        ["upgrade", "e2e.local/other:2"],
    ):
        result = runner.invoke(cli, args, prog_name="sealer")
        assert result.exit_code == 0, (args, result.output)
    assert seen == [("scale-up", "auto"), ("scale-up", "ssh"), ("upgrade", "fanout"), ("upgrade", "auto")]
