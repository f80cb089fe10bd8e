"""The day-2 commands' input handling, before any host is contacted: clear errors naming the flag,
host or cluster, and nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sealer.cli.main import cli
from sealer.state import ClusterState
from tests.unit.apply.test_lifecycle import BASE


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "sealer-home"
    monkeypatch.setenv("SEALER_HOME", str(home))
    return home


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="sealer", input=input)


def installed(home: Path) -> ClusterState:
    state = ClusterState("demo", home)
    state.record_applied(BASE, runtime_type="k3s", image="e2e.local/k3s:1")
    return state


def test_commands_without_a_cluster_say_where_they_looked(home: Path) -> None:
    for args in (
        ["scale-up", "-n", "10.0.0.9"],
        ["delete", "-n", "10.0.0.5"],
        ["upgrade", "x:2"],
        ["status"],
    ):
        result = run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert f"no installed cluster in {home}" in result.output and "Traceback" not in result.output


def test_scale_up_and_delete_input_errors_name_the_flag_or_host(home: Path) -> None:
    state = installed(home)
    before = state.read_clusterfile()
    cases = {
        ("scale-up",): "give the hosts to add with -m/--masters and/or -n/--nodes",
        ("scale-up", "-n", "10.0.0.5"): "10.0.0.5 already in the cluster",
        ("scale-up", "-n", "10.0.0.300"): "--nodes",
        ("delete",): "give the hosts to remove with -m/-n, or --all",
        ("delete", "-n", "10.0.0.99"): "10.0.0.99 not in the cluster",
        ("delete", "-m", "10.0.0.5"): "10.0.0.5 is a worker of cluster demo",
        ("delete", "-n", "10.0.0.2"): "10.0.0.2 is a master of cluster demo",
        ("delete", "-n", "10.0.0.5", "--prune"): "--prune goes with --all",
        ("delete", "--all", "-n", "10.0.0.5"): "--all deletes every host; drop -m/-n",
        ("upgrade", "e2e.local/k3s:1"): "cluster demo already runs e2e.local/k3s:1",
        ("upgrade",): "give the new IMAGE or a Clusterfile (-f), one of them",
    }
    for args, expected in cases.items():
        result = run(*args)
        assert result.exit_code != 0, (args, result.output)
        assert expected in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert state.read_clusterfile() == before
    assert not state.journal_path.exists()


def test_master0_cannot_be_deleted_alone(home: Path) -> None:
    installed(home)
    result = run("delete", "-m", "10.0.0.2", "-y")
    assert result.exit_code == 1
    assert "removes every master" in result.output or "master0" in result.output, result.output


def test_delete_all_asks_and_a_no_changes_nothing(home: Path) -> None:
    state = installed(home)
    result = run("delete", "--all", input="n\n")
    assert result.exit_code == 1, result.output
    assert (
        "deleting cluster demo will reset 3 host(s): 10.0.0.5, 10.0.0.6, 10.0.0.2. Continue?" in result.output
    )
    assert "not confirmed; nothing was changed" in result.output
    assert state.read_clusterfile() is not None and not state.journal_path.exists()


def test_etcd_restore_asks_first_and_status_reads_local_state(home: Path, tmp_path: Path) -> None:
    installed(home)
    snap = tmp_path / "s.snapshot"
    snap.write_text("{}")
    result = run("etcd", "restore", str(snap), input="n\n")
    assert result.exit_code == 1 and "not confirmed; nothing was changed" in result.output
    data = json.loads(run("status", "-o", "json").output)
    assert data["cluster"] == "demo" and data["exists"] and data["runtime"] == "k3s"
    assert data["masters"] == ["10.0.0.2"] and data["lastOperation"] is None and data["toFinish"] is None
