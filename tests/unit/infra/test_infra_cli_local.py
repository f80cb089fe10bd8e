"""`sealer exec` / `sealer cp` on a cluster whose host is this machine (127.0.0.1): the local
connector serves it, so the CLI runs end to end without any SSH server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealer.cli.main import cli
from sealer.state.store import ClusterState

CLUSTERFILE = """apiVersion: sealer.io/v2
kind: Cluster
metadata:
  name: local-one
spec:
  image: example.com/k3s:v1
  env: [GREETING=hello world]
  hosts:
  - ips: [127.0.0.1]
    roles: [master]
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEALER_HOME", str(tmp_path / "home"))
    cf = tmp_path / "Clusterfile"
    cf.write_text(CLUSTERFILE)
    return cf


def test_exec_runs_locally_with_host_env(env: Path) -> None:
    res = CliRunner().invoke(
        cli, ["exec", "-f", str(env), "-o", "json", "--", 'echo "$GREETING from $HostIP"']
    )
    assert res.exit_code == 0, res.output
    (item,) = json.loads(res.output)
    assert item["host"] == "127.0.0.1" and item["stdout"] == "hello world from 127.0.0.1\n"
    res = CliRunner().invoke(
        cli, ["exec", "-f", str(env), "--", "echo", "out;", "echo", "err", ">&2;", "exit", "4"]
    )
    assert res.exit_code == 1
    assert "exit 4" in res.output and "0/1 hosts ok" in res.output


def test_cp_then_recopy_skips(env: Path, tmp_path: Path) -> None:
    src = tmp_path / "files"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a").write_text("a")
    dst = tmp_path / "dst"
    first = CliRunner().invoke(cli, ["cp", "-f", str(env), "-o", "json", str(src), str(dst)])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)[0]["files_sent"] == 1
    again = CliRunner().invoke(cli, ["cp", "-f", str(env), "-o", "json", str(src), str(dst)])
    assert json.loads(again.output)[0]["files_skipped"] == 1
    assert (dst / "sub" / "a").read_text() == "a"


def test_exec_by_cluster_name_uses_the_saved_clusterfile(env: Path) -> None:
    ClusterState("local-one").write_clusterfile(env.read_text())
    res = CliRunner().invoke(cli, ["exec", "-c", "local-one", "-o", "json", "--", "true"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["exec", "-c", "missing", "--", "true"])
    assert res.exit_code == 1 and "has no applied Clusterfile" in res.output


def test_usage_errors(env: Path) -> None:
    res = CliRunner().invoke(cli, ["exec", "--", "true"])
    assert res.exit_code == 2 and "-f CLUSTERFILE or -c CLUSTER" in res.output
    res = CliRunner().invoke(cli, ["cp", "-f", str(env), str(env), "."])
    assert res.exit_code == 2 and "DST must be a path" in res.output
    res = CliRunner().invoke(cli, ["hosts", "forget", "127.0.0.1", "--cluster", "local-one"])
    assert res.exit_code == 0 and "no pinned key" in res.output
