"""runtime/etcd_backup.py: the scripts it runs on hosts (executed here by bash against files laid out
like a host's), how it reads the etcd member from a kubeadm manifest, and the order of a kubeadm
restore across masters (a recording fleet: nothing stops before the snapshot is checked, every
master stops before any restores, all start together, every kubelet restarts)."""

from __future__ import annotations

import asyncio
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from sealer.errors import RuntimeErrorSealer
from sealer.infra.connector import Result
from sealer.model.clusterfile import parse_clusterfile
from sealer.runtime import etcd_backup as eb
from sealer.runtime.base import RuntimeContext
from sealer.runtime.kubernetes import KubernetesRuntime


def bash(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


def _manifest(command: list[str]) -> str:
    """A static Pod as kubeadm writes it (its YAML style: a block list under `command:`)."""
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "etcd", "namespace": "kube-system"},
            "spec": {
                "containers": [{"name": "etcd", "image": "registry.k8s.io/etcd:3.5.15-0", "command": command}]
            },
        }
    )


ETCD_COMMAND = [
    "etcd",
    "--advertise-client-urls=https://10.0.0.2:2379",
    "--data-dir=/var/lib/etcd",
    "--initial-advertise-peer-urls=https://10.0.0.2:2380",
    "--initial-cluster=m0=https://10.0.0.2:2380",
    "--name=m0",
]


def _probe(root: Path) -> str:
    return eb.MEMBER_PROBE.replace(eb.MANIFESTS, str(root / "manifests")).replace(
        eb.PARKED, str(root / "parked")
    )


def test_member_probe_reads_the_manifest_where_it_is(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests/etcd.yaml").write_text(_manifest(ETCD_COMMAND))
    found = bash(_probe(tmp_path))
    assert found.returncode == 0, found.stderr
    assert eb.parse_member(found.stdout) == {
        "data-dir": "/var/lib/etcd",
        "initial-advertise-peer-urls": "https://10.0.0.2:2380",
        "name": "m0",
    }
    # a restore that stopped half-way parked the manifests: they are found there too
    (tmp_path / "parked").mkdir()
    (tmp_path / "manifests/etcd.yaml").rename(tmp_path / "parked/etcd.yaml")
    assert eb.parse_member(bash(_probe(tmp_path)).stdout)["name"] == "m0"
    (tmp_path / "parked/etcd.yaml").unlink()
    gone = bash(_probe(tmp_path))
    assert gone.returncode == 3 and "no etcd static Pod manifest" in gone.stderr


def test_member_probe_takes_quoted_flags(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    text = "spec:\n  containers:\n  - command:\n    - etcd\n    - '--name=m 1'\n"
    text += '    - "--data-dir=/data/etcd"\n'
    text += "    - --initial-advertise-peer-urls=https://[fd00::2]:2380\n"
    (tmp_path / "manifests/etcd.yaml").write_text(text)
    got = eb.parse_member(bash(_probe(tmp_path)).stdout)
    assert got == {
        "name": "m 1",
        "data-dir": "/data/etcd",
        "initial-advertise-peer-urls": "https://[fd00::2]:2380",
    }


def test_initial_cluster_names_every_member_in_order() -> None:
    members = [
        {"name": "m0", "initial-advertise-peer-urls": "https://10.0.0.2:2380"},
        {"name": "m1", "initial-advertise-peer-urls": "https://10.0.0.3:2380"},
    ]
    assert eb.initial_cluster(members) == "m0=https://10.0.0.2:2380,m1=https://10.0.0.3:2380"


@pytest.mark.parametrize("listening", [True, False])
def test_wait_ports_script_is_valid_and_gives_up_with_a_message(listening: bool) -> None:
    script = eb.wait_ports_script((1,), listening=listening, seconds=1)
    assert bash(f"bash -n <<'EOF'\n{script}\nEOF").returncode == 0
    if listening:  # nothing listens on port 1 here
        r = bash(script)
        assert r.returncode == 1 and "port(s) 1 not listening after 1s" in r.stderr
    else:
        assert bash(script).returncode == 0


def test_k0s_backup_script_keeps_one_private_archive(tmp_path: Path) -> None:
    fake = tmp_path / "k0s"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = backup ] && [ "$2" = --save-path ] || exit 9\n'
        'echo payload > "$3/k0s_backup_2026-01-01T00_00_00_000Z.tar.gz"; echo \'level=info msg="done"\' >&2\n'
    )
    fake.chmod(0o755)
    backups = tmp_path / "backup"
    dest = backups / "k0s-backup.tar.gz"
    script = eb.k0s_backup_script(str(fake), str(dest)).replace(eb.BACKUP_DIR, str(backups))
    r = bash(script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(dest) and dest.read_text() == "payload\n"
    assert dest.stat().st_mode & 0o777 == 0o600 and backups.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in backups.iterdir()) == ["k0s-backup.tar.gz"]  # no temp dir left
    fake.write_text(
        "#!/bin/sh\necho 'time=x level=error msg=\"unable to detect cluster status\"' >&2; exit 1\n"
    )
    r = bash(script)
    assert r.returncode == 1 and "unable to detect cluster status" in r.stderr
    assert sorted(p.name for p in backups.iterdir()) == ["k0s-backup.tar.gz"]


def test_snapshot_script_bundles_the_snapshot_with_the_cluster_ca(tmp_path: Path) -> None:
    log = tmp_path / "args"
    etcdctl, etcdutl = tmp_path / "etcdctl", tmp_path / "etcdutl"
    etcdctl.write_text(
        f'#!/bin/sh\necho "$ETCDCTL_API $*" > {log}\nfor a; do last=$a; done\necho db > "$last"\n'
    )
    etcdutl.write_text("#!/bin/sh\nexit 0\n")
    for f in (etcdctl, etcdutl):
        f.chmod(0o755)
    pki = tmp_path / "pki"
    (pki / "etcd").mkdir(parents=True)
    for f in eb.PKI_FILES:
        (pki / f).write_text(f"{f}\n")
    backups = tmp_path / "b"
    script = (
        eb.snapshot_script(str(etcdctl), str(etcdutl))
        .replace(eb.BACKUP_DIR, str(backups))
        .replace(f"{eb.K8S_PKI}/$f", f"{pki}/$f")
    )
    r = bash(script)
    assert r.returncode == 0, r.stderr
    args = log.read_text().split()
    assert args[0] == "3"
    for flag in (
        "--endpoints=https://127.0.0.1:2379",
        "--cacert=/etc/kubernetes/pki/etcd/ca.crt",
        "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt",
        "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key",
    ):
        assert flag in args, args
    bundle = backups / "etcd-backup.tar.gz"
    assert bundle.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in backups.iterdir()) == ["etcd-backup.tar.gz"]  # no temp dir left
    with tarfile.open(bundle) as tar:
        # the snapshot and the PKI kubeadm keeps outside etcd (CA keys, the ServiceAccount keys)
        assert sorted(tar.getnames()) == sorted(["etcd-snapshot.db", *(f"pki/{f}" for f in eb.PKI_FILES)])
        db = tar.extractfile("etcd-snapshot.db")
        assert db is not None and db.read() == b"db\n"
        key = tar.extractfile("pki/etcd/ca.key")
        assert key is not None and key.read() == b"etcd/ca.key\n"
    etcdutl.write_text("#!/bin/sh\necho 'Error: invalid database' >&2; exit 1\n")
    bundle.unlink()
    assert bash(script).returncode != 0 and not bundle.exists()  # a snapshot etcdutl cannot read is not kept


def _unpack(tmp_path: Path, given: Path, ca: str = "CA\n") -> subprocess.CompletedProcess[str]:
    cluster_ca = tmp_path / "cluster-ca.crt"
    cluster_ca.write_text(ca)
    work = tmp_path / "work"
    return bash(
        eb.unpack_script(str(given)).replace(eb.RESTORE_WORK, str(work)).replace(eb.K8S_CA, str(cluster_ca))
    )


def test_unpack_takes_our_bundle_a_bare_snapshot_and_refuses_another_clusters(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pki").mkdir(parents=True)
    (src / "etcd-snapshot.db").write_text("db")
    (src / "pki/ca.crt").write_text("CA\n")
    bundle = tmp_path / "bundle.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        tar.add(src / "etcd-snapshot.db", arcname="etcd-snapshot.db")
        tar.add(src / "pki/ca.crt", arcname="pki/ca.crt")
    r = _unpack(tmp_path, bundle)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).read_text() == "db"
    assert _unpack(tmp_path, bundle, ca="OTHER CA\n").returncode == 5
    bare = tmp_path / "bare.db"
    bare.write_text("bare")
    r = _unpack(tmp_path, bare)
    assert r.returncode == 0 and Path(r.stdout.strip()).read_text() == "bare"
    # a bundle of another cluster with its whole PKI: taken, marked as another CA's
    for f in eb.PKI_FILES:
        (src / "pki" / f).parent.mkdir(parents=True, exist_ok=True)
        (src / "pki" / f).write_text(f)
    full = tmp_path / "full.tar.gz"
    with tarfile.open(full, "w:gz") as tar:
        tar.add(src / "etcd-snapshot.db", arcname="etcd-snapshot.db")
        for f in eb.PKI_FILES:
            tar.add(src / "pki" / f, arcname=f"pki/{f}")
    r = _unpack(tmp_path, full, ca="OTHER CA\n")
    assert r.returncode == 0 and r.stdout.split()[0] == "other-ca", r.stdout + r.stderr
    assert Path(r.stdout.split()[-1]).read_text() == "db"
    assert (tmp_path / "work/pki/etcd/ca.key").read_text() == "etcd/ca.key"
    r = _unpack(tmp_path, full, ca="ca.crt")  # this cluster's own: no mark
    assert r.returncode == 0 and r.stdout.split() == [str(tmp_path / "work/etcd-snapshot.db")], r.stdout
    k0s = tmp_path / "k0s.tar.gz"  # a k0s archive: a tarball without pki/ca.crt
    with tarfile.open(k0s, "w:gz") as tar:
        tar.add(src / "etcd-snapshot.db", arcname="etcd-snapshot.db")
    assert _unpack(tmp_path, k0s).returncode == 4


# ------------------------------------------------------------------------------- restore order


def _ctx(fleet: Any, masters: str = "10.0.0.2, 10.0.0.3") -> RuntimeContext:
    text = f"""apiVersion: sealer.io/v2
kind: Cluster
metadata: {{name: rt}}
spec:
  image: kubernetes:test
  hosts:
    - ips: [{masters}]
      roles: [master]
    - ips: [10.0.0.9]
      roles: [node]
"""
    cf, problems = parse_clusterfile(text, "test")
    assert cf is not None, problems
    return RuntimeContext(
        fleet=fleet,
        cluster=cf.cluster,
        targets={h.ip: h.ip for h in cf.cluster.hosts},  # type: ignore[misc]
        node_names={h.ip: f"n{h.ip.rsplit('.', 1)[1]}" for h in cf.cluster.hosts},
        registry=None,
    )


class Recorder:
    """A fleet that records (host, what) and answers like the hosts of a 2-master kubeadm cluster."""

    def __init__(self, snapshot_ok: bool = True, unpack_code: int = 0) -> None:
        self.calls: list[tuple[str, str]] = []
        self.snapshot_ok = snapshot_ok
        self.unpack_code = unpack_code

    async def run(self, host: str, cmd: str, **_: Any) -> Result:
        what = (
            "unpack"
            if "tar -tzf" in cmd
            else "status"
            if "snapshot status" in cmd
            else "probe"
            if cmd == eb.MEMBER_PROBE
            else "stop"
            if cmd.startswith(eb.STOP_STATIC_PODS)
            else "restore"
            if "snapshot restore" in cmd
            else "start"
            if cmd == eb.START_STATIC_PODS
            else "wait-up"
            if "not listening" in cmd
            else "kubelet"
            if "restart kubelet" in cmd
            else "other"
        )
        self.calls.append((host, what))
        if what == "unpack":
            return Result(host, cmd, self.unpack_code, f"{eb.RESTORE_WORK}/etcd-snapshot.db\n", "", 0.0)
        if what == "status" and not self.snapshot_ok:
            return Result(host, cmd, 1, "Error: invalid database\n", "", 0.0)
        out = ""
        if what == "probe":
            n = host.rsplit(".", 1)[1]
            out = f"name=m{n}\ndata-dir=/var/lib/etcd\ninitial-advertise-peer-urls=https://{host}:2380\n"
        if what == "restore":
            assert "--initial-cluster=m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380" in cmd, cmd
            assert f"--name=m{host.rsplit('.', 1)[1]}" in cmd
            assert f"{eb.RESTORE_WORK}/etcd-snapshot.db" in cmd  # the snapshot out of the bundle
        return Result(host, cmd, 0, out, "", 0.0)

    async def get(self, host: str, src: str, dst: Path, **_: Any) -> None:
        self.calls.append((host, "get"))
        Path(dst).write_bytes(b"snapshot")

    async def put(self, host: str, src: Path, dst: str, **_: Any) -> None:
        self.calls.append((host, "put"))


def test_kubeadm_restore_order_across_masters() -> None:
    fleet = Recorder()
    asyncio.run(eb.kubeadm_restore(KubernetesRuntime(), _ctx(fleet), "/var/lib/sealer/restore/s.db"))
    steps = [w for _, w in fleet.calls if w != "other"]
    first_stop = steps.index("stop")
    assert "status" in steps[:first_stop] and steps.count("probe") == 2
    # the snapshot reaches the other master before anything stops
    assert fleet.calls.index(("10.0.0.3", "put")) < fleet.calls.index(("10.0.0.2", "stop"))
    assert steps.count("stop") == 2 and steps.count("restore") == 2 and steps.count("start") == 2
    last_stop, first_restore = max(i for i, s in enumerate(steps) if s == "stop"), steps.index("restore")
    assert last_stop < first_restore  # every control plane is down before any member is rebuilt
    last_restore = max(i for i, s in enumerate(steps) if s == "restore")
    assert last_restore < steps.index("start")
    assert {h for h, w in fleet.calls if w == "kubelet"} == {"10.0.0.2", "10.0.0.3", "10.0.0.9"}


def test_kubeadm_restore_refuses_a_bad_snapshot_before_stopping_anything() -> None:
    fleet = Recorder(snapshot_ok=False)
    with pytest.raises(RuntimeErrorSealer) as err:
        asyncio.run(eb.kubeadm_restore(KubernetesRuntime(), _ctx(fleet), "/var/lib/sealer/restore/s.db"))
    assert "not an etcd snapshot" in err.value.message and "nothing was changed" in (err.value.hint or "")
    assert not [c for c in fleet.calls if c[1] in ("stop", "restore", "start", "kubelet")]


def test_k0s_restore_refuses_a_file_that_is_no_k0s_archive() -> None:
    from sealer.runtime.k0s import K0sRuntime

    calls: list[str] = []

    class Fleet:
        async def run(self, host: str, cmd: str, **_: Any) -> Result:
            calls.append(cmd)
            listing = "k0s.yaml\npki/ca.crt\n" if cmd.startswith("tar -tzf") else ""
            return Result(host, cmd, 0, listing, "", 0.0)

    with pytest.raises(RuntimeErrorSealer) as err:
        asyncio.run(eb.k0s_restore(K0sRuntime(), _ctx(Fleet()), "/var/lib/sealer/restore/x.tar.gz"))
    assert "not a k0s backup archive" in err.value.message
    assert len(calls) == 1  # nothing but the look inside the archive


@pytest.mark.parametrize(
    ("code", "message"), [(5, "a cluster with another CA"), (4, "not a backup of a kubernetes")]
)
def test_kubeadm_restore_refuses_another_clusters_or_a_foreign_bundle(code: int, message: str) -> None:
    fleet = Recorder(unpack_code=code)
    with pytest.raises(RuntimeErrorSealer) as err:
        asyncio.run(eb.kubeadm_restore(KubernetesRuntime(), _ctx(fleet), "/var/lib/sealer/restore/s.db"))
    assert message in err.value.message and "nothing was changed" in (err.value.hint or "")
    assert not [c for c in fleet.calls if c[1] in ("stop", "restore", "start", "kubelet")]


def test_kubeadm_restore_onto_a_recreated_cluster_brings_the_old_pki_back_first() -> None:
    """A bundle of another CA with its PKI: checked, then every host reset, the PKI installed on
    master0 before its `kubeadm init`, its lone member restored, the snapshot's Nodes of the other
    hosts deleted, then they join (with tokens made after the restore)."""

    class Recreating(Recorder):
        async def run(self, host: str, cmd: str, **kw: Any) -> Result:
            if "tar -tzf" in cmd:
                self.calls.append((host, "unpack"))
                return Result(host, cmd, 0, f"other-ca\n{eb.RESTORE_WORK}/etcd-snapshot.db\n", "", 0.0)
            if cmd == eb.INSTALL_PKI:
                self.calls.append((host, "pki"))
                return Result(host, cmd, 0, "", "", 0.0)
            if "delete node" in cmd:
                self.calls.append((host, "delete-nodes"))
                assert '"n3"' not in cmd and "n3 n9" in cmd, cmd  # the other master's and the worker's
                return Result(host, cmd, 0, "", "", 0.0)
            if "snapshot restore" in cmd:
                assert "--initial-cluster=m2=https://10.0.0.2:2380" in cmd and "m3=" not in cmd, cmd
                self.calls.append((host, "restore"))
                return Result(host, cmd, 0, "", "", 0.0)
            return await super().run(host, cmd, **kw)

    class Runtime(KubernetesRuntime):
        def __init__(self, fleet: Recorder) -> None:
            super().__init__()
            self.fleet = fleet

        async def reset(self, ctx: RuntimeContext, hosts: list[Any]) -> None:
            self.fleet.calls += [(h.ip, "reset") for h in hosts]

        async def install(self, ctx: RuntimeContext, masters: list[Any], workers: list[Any]) -> None:
            assert not workers and [h.ip for h in masters] == ["10.0.0.2"]
            self.fleet.calls.append(("10.0.0.2", "init"))

        async def join(self, ctx: RuntimeContext, masters: list[Any], workers: list[Any]) -> None:
            assert "kubeadm-token" not in ctx.shared
            self.fleet.calls += [(h.ip, "join") for h in [*masters, *workers]]

    fleet = Recreating()
    ctx = _ctx(fleet)
    ctx.shared["kubeadm-token"] = "abcdef.0123456789abcdef"  # one of the cluster before: void now
    asyncio.run(eb.kubeadm_restore(Runtime(fleet), ctx, "/var/lib/sealer/restore/s.db"))
    steps = [c for c in fleet.calls if c[1] not in ("other", "get", "put")]
    assert steps[:2] == [("10.0.0.2", "unpack"), ("10.0.0.2", "status")]
    assert {h for h, w in steps[2:5]} == {"10.0.0.2", "10.0.0.3", "10.0.0.9"} and {
        w for _, w in steps[2:5]
    } == {"reset"}
    order = [w for _, w in steps[5:]]
    assert order[:3] == ["pki", "init", "probe"]
    assert order.index("stop") < order.index("restore") < order.index("start") < order.index("delete-nodes")
    assert steps[-2:] == [("10.0.0.3", "join"), ("10.0.0.9", "join")]


def test_a_failed_recreate_stops_at_the_failed_step_with_its_own_error() -> None:
    class Recreating(Recorder):
        async def run(self, host: str, cmd: str, **kw: Any) -> Result:
            if "tar -tzf" in cmd:
                return Result(host, cmd, 0, f"other-ca\n{eb.RESTORE_WORK}/etcd-snapshot.db\n", "", 0.0)
            return await super().run(host, cmd, **kw)

    class Failing(KubernetesRuntime):
        async def reset(self, ctx: RuntimeContext, hosts: list[Any]) -> None:
            return None

        async def install(self, ctx: RuntimeContext, masters: list[Any], workers: list[Any]) -> None:
            raise RuntimeErrorSealer("10.0.0.2: kubeadm init failed: x", "see /var/log/kubeadm.log")

    fleet = Recreating()
    with pytest.raises(RuntimeErrorSealer) as err:
        asyncio.run(eb.kubeadm_restore(Failing(), _ctx(fleet), "/var/lib/sealer/restore/s.db"))
    # the journaled restore (apply/restore.py) adds how to continue: the same restore again
    assert err.value.message == "10.0.0.2: kubeadm init failed: x"
    assert err.value.hint == "see /var/log/kubeadm.log"


def test_restore_member_redone_after_the_swap_keeps_the_data_from_before_the_restore(tmp_path: Path) -> None:
    """The journaled step redone after a kill: once the restored data dir is in place (marked
    with this restore's id) it is left alone, so <data-dir>.sealer-before-restore stays the data
    from before the restore; another restore (another id) rebuilds it."""
    etcdutl = tmp_path / "etcdutl"
    # etcdutl snapshot restore SNAP ... --data-dir=DIR: DIR/member/snap/db from the snapshot
    etcdutl.write_text(
        "#!/bin/sh\nfor a; do case $a in --data-dir=*) d=${a#--data-dir=} ;; esac; done\n"
        'mkdir -p "$d/member/snap" && cp "$3" "$d/member/snap/db"\n'
    )
    etcdutl.chmod(0o755)
    snap = tmp_path / "snapshot.db"
    snap.write_text("restored\n")
    data = tmp_path / "etcd"
    (data / "member/snap").mkdir(parents=True)
    (data / "member/snap/db").write_text("before\n")
    member = {"name": "m0", "data-dir": str(data), "initial-advertise-peer-urls": "https://10.0.0.2:2380"}
    cluster = "m0=https://10.0.0.2:2380"
    script = eb.restore_member_script(str(etcdutl), str(snap), member, cluster, "id-1")
    kept = tmp_path / "etcd.sealer-before-restore" / "member/snap/db"
    for _ in range(2):  # the second run: the step redone after a kill that came after the swap
        r = bash(script)
        assert r.returncode == 0, r.stderr
        assert (data / "member/snap/db").read_text() == "restored\n"
        assert kept.read_text() == "before\n"
    # killed between the mark and the last move: the data dir is not in place, so it is rebuilt
    (tmp_path / "etcd").rename(tmp_path / "etcd.sealer-restore")
    r = bash(script)
    assert r.returncode == 0, r.stderr
    assert (data / "member/snap/db").read_text() == "restored\n" and kept.read_text() == "before\n"
    # another restore of the same snapshot is done again: what it replaces is kept this time
    (data / "member/snap/db").write_text("changed since\n")
    r = bash(eb.restore_member_script(str(etcdutl), str(snap), member, cluster, "id-2"))
    assert r.returncode == 0, r.stderr
    assert (data / "member/snap/db").read_text() == "restored\n"
    assert kept.read_text() == "changed since\n"
