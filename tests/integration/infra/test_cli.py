"""`sealer exec`, `sealer cp` and `sealer hosts forget` end to end on real hosts through the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sealer.cli.main import cli

pytestmark = [pytest.mark.integration, pytest.mark.testbed]


def clusterfile(path: Path, hosts: list[Any]) -> Path:
    master, *nodes = hosts
    user, password = master.sudo_user
    path.write_text(
        f"""apiVersion: sealer.io/v2
kind: Cluster
metadata:
  name: infra-cli
spec:
  image: example.com/k3s:v1
  ssh:
    pk: {master.root_key}
  hosts:
  - ips: [{master.ip}]
    roles: [master]
  - ips: [{", ".join(h.ip for h in nodes)}]
    roles: [node]
    ssh:
      user: {user}
      passwd: {password}
"""
    )
    return path


def test_exec_cp_and_forget(testbed_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tb = testbed_factory(light=True)
    hosts = tb.up(3)
    master, node1, node2 = hosts
    monkeypatch.setenv("SEALER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh of this machine
    cf = str(clusterfile(tmp_path / "Clusterfile", hosts))
    runner = CliRunner()

    res = runner.invoke(cli, ["exec", "-f", cf, "--", "hostname"])
    assert res.exit_code == 0, res.output
    for h in hosts:
        assert h.name in res.output and h.ip in res.output
    assert "3/3 hosts ok" in res.output

    res = runner.invoke(
        cli, ["exec", "-f", cf, "--roles", "node", "--sudo", "-o", "json", "--", "id -u; echo $HostIP"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert [d["host"] for d in data] == [node1.ip, node2.ip]
    assert [d["stdout"].split() for d in data] == [["0", node1.ip], ["0", node2.ip]]

    src = tmp_path / "conf"
    src.mkdir()
    (src / "app.conf").write_text("a=1\n")
    res = runner.invoke(cli, ["cp", "-f", cf, "--sudo", "-o", "json", str(src), "/etc/app/"])
    assert res.exit_code == 0, res.output
    assert [d["files_sent"] for d in json.loads(res.output)] == [1, 1, 1]
    res = runner.invoke(cli, ["cp", "-f", cf, "--sudo", "-o", "json", str(src), "/etc/app/"])
    assert [d["files_skipped"] for d in json.loads(res.output)] == [1, 1, 1]
    assert tb.run_on(node2, "cat /etc/app/app.conf").stdout == "a=1\n"

    tb.stop_host(node1, hard=True)
    res = runner.invoke(cli, ["exec", "-f", cf, "-o", "json", "--connect-timeout", "3", "--", "true"])
    assert res.exit_code == 1
    data = {d["host"]: d for d in json.loads(res.output)}
    assert data[node1.ip]["ok"] is False and data[node1.ip]["kind"] == "ConnectionRefusedHostError"
    assert data[master.ip]["ok"] and data[node2.ip]["ok"]
    res = runner.invoke(cli, ["exec", "-f", cf, "--", "exit 3"])
    assert res.exit_code == 1 and "exit 3" in res.output

    # a reinstalled host: refused until its key is forgotten deliberately
    tb.rotate_host_key(master)
    res = runner.invoke(cli, ["exec", "-f", cf, "--ips", master.ip, "--", "true"])
    assert res.exit_code == 1 and "host key changed" in res.output
    assert f"sealer hosts forget {master.ip} --cluster infra-cli" in res.output
    res = runner.invoke(cli, ["hosts", "forget", master.ip, "--cluster", "infra-cli"])
    assert res.exit_code == 0 and "forgot 1 key" in res.output
    res = runner.invoke(cli, ["exec", "-f", cf, "--ips", master.ip, "--", "true"])
    assert res.exit_code == 0, res.output

    # bad selections are clear errors, not tracebacks
    res = runner.invoke(cli, ["exec", "-f", cf, "--ips", "10.9.9.9", "--", "true"])
    assert res.exit_code == 1 and "not a host of cluster infra-cli" in res.output
    res = runner.invoke(cli, ["exec", "-f", cf, "--roles", "etcd", "--", "true"])
    assert res.exit_code == 1 and "no host of cluster infra-cli has role 'etcd'" in res.output
    log = tmp_path / "home" / "infra-cli" / "logs" / "exec" / f"{node2.ip}.log"
    assert "id -u; echo $HostIP" in log.read_text()


def test_cp_fanout_reaches_every_host_and_skips_what_is_there(
    testbed_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tb = testbed_factory(light=True)
    hosts = tb.up(3)
    monkeypatch.setenv("SEALER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path))
    cf = str(clusterfile(tmp_path / "Clusterfile", hosts))
    src = tmp_path / "bundle"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(bytes(range(256)) * 8192)  # 2 MiB
    (src / "sub" / "small.txt").write_text("hello\n")
    runner = CliRunner()

    res = runner.invoke(cli, ["cp", "-f", cf, "--sudo", "--fanout", "-o", "json", str(src), "/opt/bundle/"])
    assert res.exit_code == 0, res.output
    assert [d["files_sent"] for d in json.loads(res.output)] == [2, 2, 2]
    want = hashlib.sha256((src / "big.bin").read_bytes()).hexdigest()
    for h in hosts:
        assert tb.run_on(h, "sha256sum /opt/bundle/big.bin").stdout.split()[0] == want
        assert tb.run_on(h, "cat /opt/bundle/sub/small.txt").stdout == "hello\n"

    res = runner.invoke(cli, ["cp", "-f", cf, "--sudo", "--fanout", "-o", "json", str(src), "/opt/bundle/"])
    assert res.exit_code == 0, res.output
    assert [d["files_sent"] for d in json.loads(res.output)] == [0, 0, 0]
