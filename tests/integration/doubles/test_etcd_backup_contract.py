"""Contract of the backup/restore stand-ins: `etcdctl`/`etcdutl` (v3.5.15) against a kubeadm-shaped
local etcd member (static Pod manifest + its certificates + the stand-in store), and `k0s backup` /
`k0s restore` on a stand-in controller. What is checked is what the real tools enforce: endpoints,
TLS trust in both directions, the snapshot's integrity hash, a restore refusing a used data dir or a
running k0s, and the files and modes they write."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.doubles import pki
from tests.doubles.build import build_executable
from tests.doubles.etcdctl import encode_snapshot

from .conftest import K0sNode, _interpreter_ok

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def etcd_bins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if reason := _interpreter_ok():
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("etcdbin")
    return build_executable("etcdctl", d / "etcdctl"), build_executable("etcdutl", d / "etcdutl")


STORE = {
    "rv": 42,
    "objects": {
        "/configmaps/default/keep-me": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "keep-me", "namespace": "default", "resourceVersion": "41"},
            "data": {"a": "b"},
        },
        "/namespaces//default": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
    },
}


class Member:
    """A kubeadm control plane's etcd as the stand-ins see it, under its own K8S_STANDIN_ROOT."""

    def __init__(self, root: Path, etcdctl: Path, etcdutl: Path) -> None:
        self.root, self.etcdctl_bin, self.etcdutl_bin = root, etcdctl, etcdutl
        self.pki = root / "etc/kubernetes/pki"
        self.data = root / "var/lib/etcd"
        ca, ca_key = pki.make_ca("etcd-ca")
        for name, cn, kw in (
            (
                "server",
                "m0",
                {"sans": ["m0", "localhost", "10.0.0.1", "127.0.0.1"], "server": True, "client": True},
            ),
            ("healthcheck-client", "kube-etcd-healthcheck-client", {"client": True}),
        ):
            c, k = pki.issue(ca, ca_key, cn, **kw)  # type: ignore[arg-type]
            pki.write_private(self.pki / f"etcd/{name}.crt", c, 0o644)
            pki.write_private(self.pki / f"etcd/{name}.key", k)
        pki.write_private(self.pki / "etcd/ca.crt", ca, 0o644)
        pki.write_private(self.pki / "etcd/ca.key", ca_key)
        other, other_key = pki.make_ca("other")
        c, k = pki.issue(other, other_key, "intruder", client=True)
        pki.write_private(root / "other/ca.crt", other, 0o644)
        pki.write_private(root / "other/client.crt", c, 0o644)
        pki.write_private(root / "other/client.key", k)
        pki.write_private(self.data / "state.json", json.dumps(STORE).encode())
        self.manifest = root / "etc/kubernetes/manifests/etcd.yaml"
        self.write_manifest()

    def write_manifest(self, **extra: str) -> None:
        p = self.pki / "etcd"
        flags = {
            "advertise-client-urls": "https://10.0.0.1:2379",
            "cert-file": f"{p}/server.crt",
            "client-cert-auth": "true",
            "data-dir": str(self.data),
            "key-file": f"{p}/server.key",
            "listen-client-urls": "https://127.0.0.1:2379,https://10.0.0.1:2379",
            "name": "m0",
            "trusted-ca-file": f"{p}/ca.crt",
            "initial-cluster": "m0=https://10.0.0.1:2380",
            "initial-cluster-state": "new",
            **extra,
        }
        doc = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "etcd", "namespace": "kube-system"},
            "spec": {
                "containers": [
                    {"name": "etcd", "command": ["etcd", *(f"--{k}={v}" for k, v in flags.items())]}
                ]
            },
        }
        self.manifest.parent.mkdir(parents=True, exist_ok=True)
        self.manifest.write_text(yaml.safe_dump(doc))

    def _run(
        self, binary: Path, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        e = {"PATH": os.environ["PATH"], "K8S_STANDIN_ROOT": str(self.root), **(env or {})}
        return subprocess.run([str(binary), *args], env=e, capture_output=True, text=True, timeout=60)

    def etcdctl(self, *args: str, **kw: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return self._run(self.etcdctl_bin, *args, **kw)  # type: ignore[arg-type]

    def etcdutl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run(self.etcdutl_bin, *args)

    def tls(self, cert: str = "healthcheck-client") -> list[str]:
        p = self.pki / "etcd"
        return [f"--cacert={p}/ca.crt", f"--cert={p}/{cert}.crt", f"--key={p}/{cert}.key"]


@pytest.fixture
def member(etcd_bins: tuple[Path, Path], tmp_path: Path) -> Member:
    return Member(tmp_path / "m0", *etcd_bins)


def failed(r: subprocess.CompletedProcess[str], text: str, code: int = 1) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert f"Error: {text}" in r.stderr, r.stderr


# --------------------------------------------------------------------------------------- etcdctl


def test_snapshot_save_status_and_restore_round_trip(member: Member, tmp_path: Path) -> None:
    snap = tmp_path / "snap.db"
    saved = member.etcdctl("--endpoints=https://127.0.0.1:2379", *member.tls(), "snapshot", "save", str(snap))
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout == f"Snapshot saved at {snap}\n"
    assert '"msg": "saved"' in saved.stderr
    assert snap.stat().st_mode & 0o777 == 0o600
    assert not snap.with_name("snap.db.part").exists()
    assert snap.stat().st_size % 512 == 32  # etcd's integrity hash appended
    status = member.etcdutl("snapshot", "status", str(snap), "-w", "json")
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["revision"] == 42 and st["totalKey"] == 2
    table = member.etcdutl("snapshot", "status", str(snap), "--write-out=table").stdout
    assert "| TOTAL KEYS |" in table and "|          2 |" in table, table

    out = tmp_path / "restored"
    args = [
        "snapshot",
        "restore",
        str(snap),
        "--name=m0",
        "--initial-cluster=m0=https://10.0.0.1:2380,m1=https://10.0.0.2:2380",
        "--initial-advertise-peer-urls=https://10.0.0.1:2380",
        f"--data-dir={out}",
    ]
    restored = member.etcdutl(*args)
    assert restored.returncode == 0, restored.stderr
    assert '"msg": "restored snapshot"' in restored.stderr
    assert json.loads((out / "state.json").read_text())["objects"] == STORE["objects"]
    assert (out / "member/snap/db").exists() and out.stat().st_mode & 0o777 == 0o700
    wal = json.loads(next((out / "member/wal").iterdir()).read_text())
    assert [m["name"] for m in wal["members"]] == ["m0", "m1"]
    # a used data dir is never overwritten
    failed(member.etcdutl(*args), f'data-dir "{out}" not empty or could not be read')


def test_restore_checks_the_snapshot_and_its_flags(member: Member, tmp_path: Path) -> None:
    good = tmp_path / "good.db"
    good.write_bytes(encode_snapshot(json.dumps(STORE).encode()))
    base = ["snapshot", "restore", "--name=m0", "--initial-cluster=m0=https://10.0.0.1:2380"]
    peer = "--initial-advertise-peer-urls=https://10.0.0.1:2380"
    failed(member.etcdutl(*base, peer, str(good)), 'required flag(s) "data-dir" not set', 128)
    failed(
        member.etcdutl(*base, str(good), f"--data-dir={tmp_path / 'a'}"),
        "--initial-cluster has m0=https://10.0.0.1:2380 but missing from --initial-advertise-peer-urls",
    )
    failed(
        member.etcdutl("snapshot", "restore", "--name=m9", str(good), f"--data-dir={tmp_path / 'a'}"),
        'couldn\'t find local name "m9" in the initial cluster configuration',
    )
    corrupt = tmp_path / "corrupt.db"
    data = bytearray(good.read_bytes())
    data[10] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    failed(member.etcdutl(*base, peer, str(corrupt), f"--data-dir={tmp_path / 'b'}"), "expected sha256")
    copied = tmp_path / "copied.db"  # a raw db file (copied from a data dir) has no hash
    copied.write_bytes(json.dumps(STORE).encode() + b"x")
    failed(
        member.etcdutl(*base, peer, str(copied), f"--data-dir={tmp_path / 'c'}"),
        "snapshot missing hash but --skip-hash-check=false",
    )
    assert not (tmp_path / "b").exists() or not (tmp_path / "b/state.json").exists()


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        # no client certificate: etcd's --client-cert-auth refuses the handshake
        (["--cacert={ca}"], "context deadline exceeded", 5),
        # a client certificate from another CA
        (
            ["--cacert={ca}", "--cert={root}/other/client.crt", "--key={root}/other/client.key"],
            "context deadline exceeded",
            5,
        ),
        # the server's certificate is not trusted without the etcd CA
        (
            ["--cert={pki}/healthcheck-client.crt", "--key={pki}/healthcheck-client.key"],
            "context deadline exceeded",
            5,
        ),
        # a key that does not belong to the certificate
        (
            ["--cacert={ca}", "--cert={pki}/healthcheck-client.crt", "--key={pki}/server.key"],
            "tls: private key does not match public key",
            1,
        ),
        (
            ["--cacert={ca}", "--cert={pki}/healthcheck-client.crt"],
            "KeyFile and CertFile must both be present",
            1,
        ),
        (["--cacert={root}/missing.crt"], "open {root}/missing.crt: no such file or directory", 1),
    ],
)
def test_snapshot_save_enforces_tls(
    member: Member, tmp_path: Path, args: list[str], message: str, code: int
) -> None:
    fmt = {"ca": member.pki / "etcd/ca.crt", "root": member.root, "pki": member.pki / "etcd"}
    given = [a.format(**fmt) for a in args]
    r = member.etcdctl(
        "--endpoints=https://127.0.0.1:2379", *given, "snapshot", "save", str(tmp_path / "s.db")
    )
    failed(r, message.format(**fmt), code)
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "s.db.part").exists()
    if "deadline" in message:
        assert "retrying of unary invoker failed" in r.stderr


def test_endpoints_and_a_stopped_member(member: Member, tmp_path: Path) -> None:
    ok = member.etcdctl("--endpoints=https://127.0.0.1:2379", *member.tls(), "endpoint", "health")
    assert ok.returncode == 0 and "https://127.0.0.1:2379 is healthy" in ok.stdout, ok.stderr
    # the advertised address works as well; one the certificate does not name does not
    assert (
        member.etcdctl("--endpoints=https://10.0.0.1:2379", *member.tls(), "endpoint", "health").returncode
        == 0
    )
    wrong = member.etcdctl("--endpoints=https://127.0.0.1:2380", *member.tls(), "endpoint", "health")
    failed(wrong, "unhealthy cluster")
    assert "connection refused" in wrong.stderr
    two = member.etcdctl(
        "--endpoints=https://127.0.0.1:2379,https://10.0.0.1:2379",
        *member.tls(),
        "snapshot",
        "save",
        str(tmp_path / "x"),
    )
    failed(two, "snapshot must be requested to one selected node, not multiple", 5)
    # plain http against a TLS member
    failed(member.etcdctl("snapshot", "save", str(tmp_path / "x")), "context deadline exceeded", 5)
    # ETCDCTL_* variables stand in for flags, as with the real etcdctl
    env = {
        "ETCDCTL_ENDPOINTS": "https://127.0.0.1:2379",
        "ETCDCTL_CACERT": str(member.pki / "etcd/ca.crt"),
        "ETCDCTL_CERT": str(member.pki / "etcd/healthcheck-client.crt"),
        "ETCDCTL_KEY": str(member.pki / "etcd/healthcheck-client.key"),
    }
    assert member.etcdctl("endpoint", "health", env=env).returncode == 0  # type: ignore[arg-type]
    # the static Pod gone from the kubelet's manifest directory: etcd is not running
    member.manifest.rename(member.root / "etcd.yaml.away")
    down = member.etcdctl(
        "--endpoints=https://127.0.0.1:2379", *member.tls(), "snapshot", "save", str(tmp_path / "y")
    )
    failed(down, "context deadline exceeded", 5)
    assert "connection refused" in down.stderr


def test_a_joined_member_is_refused_honestly(member: Member, tmp_path: Path) -> None:
    """The stand-in's own limit (README "HA model"): a joined control plane's member holds no data."""
    member.write_manifest(**{"initial-cluster-state": "existing"})
    text = member.manifest.read_text().replace(
        "namespace: kube-system",
        "namespace: kube-system\n  annotations: {standin.sealer.io/datastore: '10.0.0.1:6443'}",
    )
    member.manifest.write_text(text)
    r = member.etcdctl(
        "--endpoints=https://127.0.0.1:2379", *member.tls(), "snapshot", "save", str(tmp_path / "z")
    )
    failed(r, "rpc error: code = Unavailable desc = stand-in etcd", 5)
    assert "take the snapshot on the first control plane" in r.stderr


# ------------------------------------------------------------------------------------------- k0s


@pytest.fixture
def controller(k0s_nodes: Callable[[str], K0sNode]) -> Iterator[K0sNode]:
    if os.geteuid() != 0:
        pytest.skip("k0s backup/restore need root")
    c = k0s_nodes("c0")
    c.write_config()
    c.start("controller")
    c.wait_api()
    yield c


def test_k0s_backup_then_restore_on_a_reset_controller(controller: K0sNode, tmp_path: Path) -> None:
    c = controller
    c.admin().create(
        "/api/v1/namespaces/default/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "before"}, "data": {"x": "1"}},
    )
    out = tmp_path / "backups"
    from .test_k0s_contract import error

    error(c.run("backup", "--save-path", str(out)), f"the save-path directory ({out}) does not exist")
    out.mkdir()
    made = c.run("backup", "--save-path", str(out))
    assert made.returncode == 0, made.stderr
    (archive,) = out.iterdir()
    assert archive.name.startswith("k0s_backup_") and archive.name.endswith(".tar.gz")
    assert archive.stat().st_mode & 0o777 == 0o600
    assert f"archive {archive} created successfully" in made.stderr
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"etcd-snapshot.db", "k0s.yaml", "pki/ca.crt", "pki/ca.key"} <= names, names
    ca = (c.data / "pki/ca.crt").read_bytes()
    c.admin().delete("/api/v1/namespaces/default/configmaps/before")

    # refused while k0s runs, and onto a data dir that still has etcd data
    running = c.run("restore", str(archive))
    assert running.returncode == 1 and "k0s seems to be running! k0s must be down" in running.stderr
    c.stop()
    error(c.run("restore", str(archive)), 'failed to restore on step `etcd`: data-dir "')
    error(
        c.run("restore", str(tmp_path / "nope.tar.gz")),
        f"given file {tmp_path / 'nope.tar.gz'} does not exist",
    )
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive")
    error(c.run("restore", str(junk)), "failed to unpack backup archive")

    assert c.run("reset").returncode == 0
    assert not c.data.exists()
    cfg_out = tmp_path / "restored-k0s.yaml"
    done = c.run("restore", str(archive), "--config-out", str(cfg_out))
    assert done.returncode == 0, done.stderr
    assert (c.data / "pki/ca.crt").read_bytes() == ca
    assert yaml.safe_load(cfg_out.read_text())["spec"]["api"]["port"] == c.port
    c.start("controller")
    c.wait_api()
    cm = c.admin().get("/api/v1/namespaces/default/configmaps/before")
    assert cm["data"] == {"x": "1"}


def test_k0s_backup_needs_a_running_controller(k0s_nodes: Callable[[str], K0sNode], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from .test_k0s_contract import error

    n = k0s_nodes("n")
    n.data.mkdir(parents=True)
    error(n.run("backup", "--save-path", str(tmp_path)), "unable to detect cluster status")
    error(
        n.run("backup", "--save-path", str(tmp_path), "--data-dir", str(tmp_path / "none")),
        "cannot find data-dir",
    )
    error(n.run("restore"), "accepts 1 arg(s), received 0")


def test_the_runtimes_member_restore_script_against_etcdutl(member: Member, tmp_path: Path) -> None:
    """sealer's per-master restore (runtime/etcd_backup.py) with the stand-in etcdutl: the restored
    data dir replaces the old one, which is kept; running it again works the same (a re-run after a
    failure), and a bad snapshot leaves the data dir as it was."""
    from sealer.runtime.etcd_backup import restore_member_script

    snap = tmp_path / "snap.db"
    snap.write_bytes(encode_snapshot(json.dumps(STORE).encode()))
    data = tmp_path / "etcd"
    data.mkdir()
    (data / "state.json").write_text('{"rv": 1, "objects": {}}')
    m = {"name": "m0", "data-dir": str(data), "initial-advertise-peer-urls": "https://10.0.0.1:2380"}
    script = restore_member_script(str(member.etcdutl_bin), str(snap), m, "m0=https://10.0.0.1:2380")
    for _ in range(2):
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads((data / "state.json").read_text())["rv"] == 42
    assert (tmp_path / "etcd.sealer-before-restore/state.json").exists()
    assert not (tmp_path / "etcd.sealer-restore").exists()
    snap.write_bytes(b"garbage" * 100)
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "snapshot missing hash" in r.stderr, r.stderr
    assert json.loads((data / "state.json").read_text())["rv"] == 42
