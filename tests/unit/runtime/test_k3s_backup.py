"""runtime/k3s.py's backup and restore: the bundle script (snapshot + server token, 0600), the unpack
script (ours with the same or another token, a bare snapshot, a foreign tarball), and the order of a
restore onto the same cluster and onto a cluster created anew (a recording fleet and runtime)."""

from __future__ import annotations

import asyncio
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from sealer.errors import RuntimeErrorSealer
from sealer.infra.connector import Result
from sealer.model.cluster import Host
from sealer.runtime import etcd_backup as eb
from sealer.runtime import k3s
from sealer.runtime.base import RuntimeContext
from tests.unit.runtime.test_etcd_backup import _ctx

OLD = "K10" + "a" * 64 + "::server:oldpassword\n"
NEW = "K10" + "b" * 64 + "::server:newpassword\n"


def bash(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


def _host_token(tmp_path: Path, text: str) -> Path:
    """server/token and the node-token symlink to it, as k3s lays them out."""
    server = tmp_path / "server"
    server.mkdir(exist_ok=True)
    (server / "token").write_text(text)
    link = server / "node-token"
    if not link.is_symlink():
        link.symlink_to("token")
    return link


def test_bundle_script_packs_the_snapshot_with_the_server_token(tmp_path: Path) -> None:
    link = _host_token(tmp_path, OLD)
    snap = tmp_path / "sealer-backup-m0-1"
    snap.write_text('{"objects": {}}')
    backups = tmp_path / "backup"
    script = (
        k3s.bundle_script(str(snap)).replace(k3s.BACKUP_DIR, str(backups)).replace(k3s.NODE_TOKEN, str(link))
    )
    r = bash(script)
    assert r.returncode == 0, r.stderr
    bundle = backups / "k3s-backup.tar.gz"
    assert bundle.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in backups.iterdir()] == ["k3s-backup.tar.gz"]  # no temp dir left
    with tarfile.open(bundle) as tar:
        assert sorted(tar.getnames()) == ["etcd-snapshot", "token"]
        token = tar.extractfile("token")
        assert token is not None and token.read().decode() == OLD  # the file, not the symlink


def _bundle(tmp_path: Path, token: str | None) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "etcd-snapshot").write_text("snap")
    (src / "token").write_text(token or "")
    out = tmp_path / f"bundle-{bool(token)}.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(src / "etcd-snapshot", arcname="etcd-snapshot")
        if token is not None:
            tar.add(src / "token", arcname="token")
    return out


def _unpack(tmp_path: Path, given: Path, current: str) -> subprocess.CompletedProcess[str]:
    link = _host_token(tmp_path, current)
    work = tmp_path / "work"
    return bash(
        k3s.unpack_script(str(given)).replace(k3s.RESTORE_DIR, str(work)).replace(k3s.NODE_TOKEN, str(link))
    )


@pytest.mark.parametrize(("current", "state"), [(OLD, "same-token"), (NEW, "other-token")])
def test_unpack_tells_the_token_the_snapshot_was_taken_with(tmp_path: Path, current: str, state: str) -> None:
    r = _unpack(tmp_path, _bundle(tmp_path, OLD), current)
    assert r.returncode == 0, r.stderr
    path, got = r.stdout.split()
    assert got == state and Path(path).read_text() == "snap"


def test_unpack_compares_passwords_not_the_ca_hash_form(tmp_path: Path) -> None:
    # a bare password (as `--token` may give it) equals the K10 form with the same password
    r = _unpack(tmp_path, _bundle(tmp_path, "oldpassword\n"), OLD)
    assert r.returncode == 0 and r.stdout.split()[1] == "same-token", r.stdout + r.stderr


def test_unpack_takes_a_bare_snapshot_and_refuses_a_tarball_without_a_token(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.write_text('{"objects": {}}')
    r = _unpack(tmp_path, bare, OLD)
    assert r.returncode == 0 and r.stdout.split() == [str(bare), "same-token"], r.stdout + r.stderr
    r = _unpack(tmp_path, _bundle(tmp_path, None), OLD)
    assert r.returncode == 4 and "no etcd-snapshot and token inside" in r.stderr


# ------------------------------------------------------------------------------- restore order


class Fleet:
    def __init__(self, state: str, unpack_code: int = 0) -> None:
        self.state, self.unpack_code = state, unpack_code
        self.calls: list[tuple[str, str]] = []

    async def run(self, host: str, cmd: str, **_: Any) -> Result:
        what = (
            "unpack"
            if "tar -tzf" in cmd
            else "stop"
            if cmd.startswith(f"systemctl stop {k3s.SERVER_UNIT}")
            else "token"
            if cmd.startswith("install -m 0600") and k3s.TOKEN_FILE in cmd
            else "cluster-reset"
            if "--cluster-reset" in cmd
            else "forget-passwords"
            if "node-password.k3s" in cmd
            else "wipe-db"
            if cmd.startswith("rm -rf /var/lib/rancher/k3s/server/db")
            else "start"
            if "systemctl" in cmd and "start" in cmd
            else "other"
        )
        self.calls.append((host, what))
        if what == "unpack":
            out = f"{k3s.RESTORE_DIR}/etcd-snapshot {self.state}\n"
            return Result(host, cmd, self.unpack_code, out, "no etcd-snapshot and token inside\n", 0.0)
        if what == "forget-passwords":
            for name in ("n2", "n3", "n9"):
                assert f"{name}.node-password.k3s" in cmd, cmd
        return Result(host, cmd, 0, "", "", 0.0)


class Runtime(k3s.K3sRuntime):
    def __init__(self, fleet: Fleet) -> None:
        super().__init__()
        self.fleet = fleet

    async def reset(self, ctx: RuntimeContext, hosts: list[Host]) -> None:
        self.fleet.calls += [(h.ip, "reset") for h in hosts]

    async def join(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        self.fleet.calls += [(h.ip, "join") for h in [*masters, *workers]]

    async def _agent(self, ctx: RuntimeContext, host: Host) -> None:
        self.fleet.calls.append((host.ip, "agent"))

    async def _node_token(self, ctx: RuntimeContext) -> str:
        return OLD.strip()


def _restore(fleet: Fleet, runtime: type[Runtime] | None = None) -> list[tuple[str, str]]:
    rt = (runtime or Runtime)(fleet)
    asyncio.run(eb.k3s_restore_steps(rt, _ctx(fleet), "/var/lib/sealer/restore/b.tar.gz", eb.DirectRun()))
    return [c for c in fleet.calls if c[1] != "other"]


def test_restore_onto_the_same_cluster_restarts_the_others() -> None:
    calls = _restore(Fleet("same-token"))
    assert [w for _, w in calls[:3]] == ["unpack", "stop", "stop"]
    assert ("10.0.0.2", "token") not in calls and "reset" not in {w for _, w in calls}
    assert calls[3] == ("10.0.0.2", "cluster-reset") and calls[4] == ("10.0.0.2", "start")
    assert ("10.0.0.3", "wipe-db") in calls and ("10.0.0.9", "start") in calls


def test_restore_onto_a_recreated_cluster_uses_the_backups_token_and_rejoins_the_rest() -> None:
    calls = _restore(Fleet("other-token"))
    assert [w for _, w in calls[:3]] == ["unpack", "stop", "stop"]
    # the original token is master0's before its cluster-reset (k3s decrypts the CAs with it)
    assert calls[3:6] == [("10.0.0.2", "token"), ("10.0.0.2", "cluster-reset"), ("10.0.0.2", "start")]
    rest = calls[6:]
    assert rest[0] == ("10.0.0.2", "forget-passwords")
    assert rest[1:] == [("10.0.0.3", "reset"), ("10.0.0.3", "join"), ("10.0.0.9", "agent")]


def test_restore_refuses_a_foreign_file_before_stopping_anything() -> None:
    fleet = Fleet("same-token", unpack_code=4)
    with pytest.raises(RuntimeErrorSealer) as err:
        _restore(fleet)
    assert "not a k3s backup" in err.value.message and "nothing was changed" in (err.value.hint or "")
    assert [w for _, w in fleet.calls] == ["unpack"]


def test_a_failed_rejoin_after_a_foreign_restore_stops_there_with_the_runtimes_error() -> None:
    # (apply/restore.py adds "run the same command again: it continues from the failed step")
    fleet = Fleet("other-token")

    class Failing(Runtime):
        async def join(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
            raise RuntimeErrorSealer("10.0.0.3: k3s.service did not start", "see `journalctl -u k3s`")

    with pytest.raises(RuntimeErrorSealer) as err:
        _restore(fleet, Failing)
    assert err.value.message == "10.0.0.3: k3s.service did not start"
    assert err.value.hint == "see `journalctl -u k3s`"
    assert ("10.0.0.9", "agent") not in fleet.calls  # the agents wait for the servers
