"""The engine's journaled steps (resume never redoes a finished step), launch-command precedence,
image unpacking into the rootfs cache, and `sealer run`'s construction of a Clusterfile."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealer.apply.engine import Engine, RunOptions, Steps, cluster_exists
from sealer.apply.progress import Progress
from sealer.apply.rootfs import unpack
from sealer.cli.main import cli
from sealer.cli.run_cmds import construct_cluster
from sealer.errors import InputError, SealerError
from sealer.image.metadata import Application, ImageExtension, Launch, SealerImageInfo
from sealer.image.store import ImageStore
from sealer.model.clusterfile import parse_clusterfile
from sealer.state import ClusterState, Journal
from tests.registry_fixture import make_test_image, tar_layer


def _layer(files: dict[str, bytes]) -> bytes:
    return tar_layer(files, mode=0o755)


def _steps(path: Path, op: str | None = None) -> tuple[Journal, Steps]:
    journal = Journal(path, durable=False)
    if op is None:
        op = journal.begin("run", "sha256:plan")
        finished: frozenset = frozenset()
    else:
        finished = journal.finished_steps(op)
    return journal, Steps(journal, op, finished, Progress(quiet=True))


def test_steps_resume_skips_only_finished_steps(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal, steps = _steps(path)
    ran: list[str] = []

    async def work(name: str) -> str:
        ran.append(name)
        return "ok"

    async def boom() -> str:
        ran.append("boom")
        raise SealerError("host went away")

    async def first() -> None:
        await steps.step("a1", "rootfs", "h1", {"image": 1}, lambda: work("rootfs"))
        await steps.step("a1", "runtime", "h1", {"image": 1}, boom)

    with pytest.raises(SealerError):
        asyncio.run(first())
    op = journal.operations()[-1].op
    journal.end(op, "failed", "host went away")
    assert journal.resumable("sha256:plan") is not None

    journal2, steps2 = _steps(path, op)

    async def second() -> None:
        await steps2.step("a1", "rootfs", "h1", {"image": 1}, lambda: work("rootfs-again"))
        await steps2.step("a1", "runtime", "h1", {"image": 1}, lambda: work("runtime"))
        await steps2.step("a1", "rootfs", "h1", {"image": 2}, lambda: work("rootfs-new-image"))

    asyncio.run(second())
    assert ran == ["rootfs", "boom", "runtime", "rootfs-new-image"]  # same inputs: not redone
    assert (steps2.run_count, steps2.skip_count) == (2, 1)
    statuses = [(e.step, e.status) for e in journal2.entries() if e.type == "step"]
    assert statuses == [
        ("rootfs", "start"),
        ("rootfs", "done"),
        ("runtime", "start"),
        ("runtime", "failed"),
        ("runtime", "start"),
        ("runtime", "done"),
        ("rootfs", "start"),
        ("rootfs", "done"),
    ]


CF = """apiVersion: sealer.io/v2
kind: Cluster
metadata: {name: apps}
spec:
  image: demo:1
  hosts: [{ips: [10.0.0.2], roles: [master]}]
"""


def _engine(tmp_path: Path, extra: str = "", **options: object) -> Engine:
    cf, problems = parse_clusterfile(CF + extra, "cf")
    assert cf is not None, problems
    engine = Engine(cf, ClusterState("apps", home=tmp_path), RunOptions(**options), Progress(quiet=True))  # type: ignore[arg-type]
    ext = ImageExtension(
        applications=[
            Application("web", type="kube", files=["web.yaml"]),
            Application("tool", type="shell", files=["install.sh"]),
            Application("custom", cmds=["helm", "upgrade", "x"]),
        ],
        launch=Launch(app_names=["web"]),
    )
    engine.info = SealerImageInfo("k3s", "containerd", {}, ext, [], [])
    return engine


def test_launch_precedence(tmp_path: Path) -> None:
    assert _engine(tmp_path)._launch_commands() == (
        ["kubectl apply -f application/apps/web/web.yaml"],
        ["web"],
    )
    assert _engine(tmp_path, apps=["tool", "custom"])._launch_commands() == (
        ["bash application/apps/tool/install.sh", "cd application/apps/custom/ && helm upgrade x"],
        ["tool", "custom"],
    )
    assert _engine(tmp_path, cmds=["echo hi"])._launch_commands() == (["echo hi"], [])
    assert _engine(tmp_path, "  cmd: [kubectl get nodes]\n")._launch_commands() == (["kubectl get nodes"], [])
    assert _engine(tmp_path, "  appNames: [tool]\n")._launch_commands()[1] == ["tool"]
    with pytest.raises(SealerError, match="has no app 'nope'") as err:
        _engine(tmp_path, apps=["nope"])._launch_commands()
    assert err.value.hint and "web, tool, custom" in err.value.hint


def test_unpack_applies_layers_whiteouts_and_splits_registry(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    make_test_image(
        store,
        "demo:1",
        [
            _layer(
                {
                    "bin/k3s": b"v1",
                    "etc/old.conf": b"x",
                    "registry/docker/registry/v2/blobs/b": b"blob",
                    "Metadata": b'{"ClusterRuntime": "k3s"}',
                }
            ),
            _layer({"bin/k3s": b"v2", "etc/.wh.old.conf": b""}),
        ],
    )
    image = store.select("demo:1")
    got = unpack(store, image, tmp_path / "cache")
    assert (got.rootfs / "bin/k3s").read_bytes() == b"v2"
    assert (got.rootfs / "bin/k3s").stat().st_mode & 0o777 == 0o755
    assert not (got.rootfs / "etc/old.conf").exists()
    assert not (got.rootfs / "registry").exists()
    assert (got.registry / "docker/registry/v2/blobs/b").read_bytes() == b"blob"
    assert got.read_metadata() == '{"ClusterRuntime": "k3s"}'
    assert got.size(with_registry=True) - got.size(with_registry=False) == 4
    (got.rootfs / "marker").write_text("kept")  # a second unpack reuses the finished directory
    assert (unpack(store, image, tmp_path / "cache").rootfs / "marker").exists()


def test_threads_unpacking_one_image_share_one_unpack(tmp_path: Path) -> None:
    # Threads of one process share its hold on the entry; none deletes another's half-written
    # directory. (Separate processes: tests/unit/apply/test_prune.py.)
    store = ImageStore(tmp_path / "store")
    files = {f"opt/f{i}": bytes([i % 251]) * 50_000 for i in range(200)}
    make_test_image(store, "demo:1", [_layer(files)])
    image = store.select("demo:1")
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: unpack(store, image, tmp_path / "cache"), range(4)))
    assert len({g.rootfs for g in got}) == 1
    assert sorted(p.name for p in (got[0].rootfs / "opt").iterdir()) == sorted(Path(n).name for n in files)
    assert all((got[0].rootfs / n).read_bytes() == data for n, data in files.items())
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.endswith(".partial")] == []


def test_construct_cluster_like_go_sealer() -> None:
    cf = construct_cluster(
        "k3s:1",
        name="my-cluster",
        masters=["10.0.0.2-10.0.0.4"],
        nodes=["10.0.0.9"],
        user=None,
        password="pw",
        pk=None,
        pk_password=None,
        port=2222,
        env=["A=1"],
        cmds=["kubectl get ns"],
        apps=None,
    )
    c = cf.cluster
    assert [h.ip for h in c.masters] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert [h.ip for h in c.workers] == ["10.0.0.9"] and c.workers[0].roles == ("node",)
    assert (
        c.ssh.password == "pw" and c.ssh.port == 2222 and c.env["A"] == "1" and c.cmd == ("kubectl get ns",)
    )
    with pytest.raises(InputError) as err:
        construct_cluster(
            "k3s:1",
            name="x",
            masters=["10.0.0.300"],
            nodes=[],
            user=None,
            password=None,
            pk=None,
            pk_password=None,
            port=None,
            env=[],
            cmds=[],
            apps=None,
        )
    assert "10.0.0.300" in err.value.render() and "--masters" in err.value.render()
    with pytest.raises(InputError) as err:
        construct_cluster(
            "k3s:1",
            name="x",
            masters=[],
            nodes=["10.0.0.2"],
            user=None,
            password=None,
            pk=None,
            pk_password=None,
            port=None,
            env=[],
            cmds=[],
            apps=None,
        )
    assert "--nodes given without --masters" in err.value.render()
    alone = construct_cluster(
        "k3s:1",
        name="x",
        masters=[],
        nodes=[],
        user=None,
        password=None,
        pk=None,
        pk_password=None,
        port=None,
        env=[],
        cmds=[],
        apps=None,
    )
    assert len(alone.cluster.masters) == 1 and not alone.cluster.workers  # no hosts: this machine


def test_run_cli_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALER_HOME", str(tmp_path))
    runner = CliRunner()
    bad = runner.invoke(cli, ["run", "k3s:1", "-m", "10.0.0.5-10.0.0.2"])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert "--masters: range '10.0.0.5-10.0.0.2' ends at or before its start" in bad.output
    missing = runner.invoke(cli, ["run"])
    assert missing.exit_code == 2 and "IMAGE" in missing.output
    both = runner.invoke(cli, ["run", "-f", "Clusterfile", "-m", "10.0.0.2"])
    assert both.exit_code == 1 and "-m/-n cannot be combined with -f" in both.output


def test_existing_cluster_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second `sealer run` of an installed cluster changes nothing (no lock, no hosts)."""
    from sealer.model.clusterfile import dump_clusterfile

    monkeypatch.setenv("SEALER_HOME", str(tmp_path))
    cf = construct_cluster(
        "k3s:1",
        name="again",
        masters=["10.0.0.2"],
        nodes=[],
        user=None,
        password=None,
        pk=None,
        pk_password=None,
        port=None,
        env=[],
        cmds=[],
        apps=None,
    )
    state = ClusterState("again", home=tmp_path)
    state.write_clusterfile(dump_clusterfile(cf))
    assert cluster_exists(state)
    runner = CliRunner()
    same = runner.invoke(cli, ["run", "k3s:1", "-m", "10.0.0.2", "--cluster", "again"])
    assert same.exit_code == 0, same.output
    assert "already exists as requested" in same.output and "nothing was changed" in same.output
    other = runner.invoke(cli, ["run", "k3s:2", "-m", "10.0.0.2", "--cluster", "again"])
    assert (
        other.exit_code == 1
        and "differs from this request" in other.output
        and "sealer apply" in other.output
    )
    assert not (tmp_path / "again" / "journal.jsonl").exists()


def test_in_cluster_copy_hides_passwords_and_config_data() -> None:
    from sealer.apply.engine import in_cluster_copy
    from sealer.model.clusterfile import dump_clusterfile

    text = (
        CF.replace("spec:\n", "spec:\n  ssh: {passwd: Hunter1}\n")
        + "---\napiVersion: sealer.io/v1\nkind: Config\nmetadata: {name: c}\n"
        "spec: {path: etc/a.yaml, data: 'password: Hunter2'}\n"
    )
    cf, problems = parse_clusterfile(text, "cf")
    assert cf is not None, problems
    shown = dump_clusterfile(in_cluster_copy(cf), redact=True)
    assert "Hunter" not in shown and "path: etc/a.yaml" in shown
    assert "Hunter2" in dump_clusterfile(cf)  # the operator's own copy keeps everything


def test_unreachable_host_stops_before_anything_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.setenv("SEALER_HOME", str(tmp_path))
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(cli, ["run", "k3s:1", "-m", "127.0.0.1", "--port", str(port), "-p", "pw"])
    assert result.exit_code == 1, result.output
    assert f"cannot reach 1 host(s):\n  127.0.0.1:{port}: connection refused on port {port}" in result.output
    assert "nothing was changed" in result.output and "Traceback" not in result.output
    assert "pw" not in result.output.replace("pwd", "")
    assert not (tmp_path / "my-cluster" / "journal.jsonl").exists()
