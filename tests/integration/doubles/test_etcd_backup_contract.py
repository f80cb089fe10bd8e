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

from .conftest import K0sNode, K8sNode, _interpreter_ok, need_containerd

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


# ----------------------------------------------------------------------------- member list/remove


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["member", "remove"], "member ID is not provided"),
        (["member", "remove", "a", "b"], "member ID is not provided"),
        # strconv.ParseUint(s, 16, 64): no 0x prefix, hex digits only, 64 bits at most
        (
            ["member", "remove", "0x1f"],
            'bad member ID arg (strconv.ParseUint: parsing "0x1f": invalid syntax), expecting ID in Hex',
        ),
        (
            ["member", "remove", "1" * 17],
            f'bad member ID arg (strconv.ParseUint: parsing "{"1" * 17}": value out of range)',
        ),
    ],
)
def test_member_remove_checks_its_argument_first(member: Member, args: list[str], message: str) -> None:
    r = member.etcdctl("--endpoints=https://127.0.0.1:2379", *member.tls(), *args)
    failed(r, message, 128)
    assert "retrying of unary invoker failed" not in r.stderr  # refused before any dial


def test_member_commands_dial_like_the_others(member: Member) -> None:
    """A stopped member (no static Pod manifest) and a client the member does not trust fail the dial;
    with no API in front of the record the stand-in says why, instead of inventing a membership."""
    no_cert = member.etcdctl(
        "--endpoints=https://127.0.0.1:2379", f"--cacert={member.pki}/etcd/ca.crt", "member", "list"
    )
    failed(no_cert, "context deadline exceeded")
    assert "tls: certificate required" in no_cert.stderr
    r = member.etcdctl("--endpoints=https://127.0.0.1:2379", *member.tls(), "member", "list")
    failed(r, "rpc error: code = Unavailable desc = stand-in etcd")
    assert "admin.conf" in r.stderr
    member.manifest.rename(member.root / "etcd.yaml.away")
    down = member.etcdctl("--endpoints=https://127.0.0.1:2379", *member.tls(), "member", "remove", "abc")
    failed(down, "context deadline exceeded")
    assert "connection refused" in down.stderr


def test_member_ids_are_stable_and_distinct() -> None:
    from tests.doubles import etcdctl, kubeadm

    assert etcdctl.MEMBERS_CM == kubeadm.ETCD_MEMBERS_CM  # one membership record for both stand-ins
    a = etcdctl.member_id("cp0", ["https://127.0.0.1:2380"])
    assert a == etcdctl.member_id("cp0", ["https://127.0.0.1:2380"]) and 0 < a < 1 << 64
    assert a != etcdctl.member_id("cp1", ["https://127.0.0.1:2380"])
    assert a != etcdctl.member_id("cp0", ["https://127.0.0.2:2380"])
    listed = etcdctl.parse_members("m0=https://10.0.0.1:2380,m1=https://[fd00::2]:2380")
    assert [m["clientURLs"] for m in listed] == [["https://10.0.0.1:2379"], ["https://[fd00::2]:2379"]]


def _control_planes(k8s_nodes: Callable[[str], K8sNode], cri: str) -> tuple[K8sNode, K8sNode]:
    """cp0 (kubeadm init --upload-certs) and cp1 (kubeadm join --control-plane): two stacked members."""
    from .test_kubeadm_contract import IP_FORWARD, init_config, join_args

    cp0 = k8s_nodes("cp0")
    cfg = init_config(cp0, cri, extra_cluster=f"controlPlaneEndpoint: 127.0.0.1:{cp0.port}\n")
    r = cp0.kubeadm("init", "--config", cfg, "--upload-certs", IP_FORWARD)
    assert r.returncode == 0, r.stdout + r.stderr
    key = r.stdout.split("[upload-certs] Using certificate key:\n", 1)[1].split()[0]
    endpoint, _, token, _, pin = join_args(r.stdout)
    cp1 = k8s_nodes("cp1")
    joined = cp1.kubeadm(
        "join",
        endpoint,
        "--token",
        token,
        "--discovery-token-ca-cert-hash",
        pin,
        "--control-plane",
        "--certificate-key",
        key,
        "--apiserver-advertise-address",
        "127.0.0.1",
        "--apiserver-bind-port",
        str(cp1.port),
        "--node-name",
        "cp1",
        "--cri-socket",
        cri,
        IP_FORWARD,
    )
    assert joined.returncode == 0, joined.stdout + joined.stderr
    return cp0, cp1


def test_member_list_and_remove_on_kubeadm_control_planes(
    k8s_nodes: Callable[[str], K8sNode], containerd_socket: str, etcd_bins: tuple[Path, Path]
) -> None:
    """The members kubeadm init/join recorded, listed in etcdctl's three formats with IDs that
    `member remove` takes; a removed member is gone for every later list, removing it again is
    etcd's `member not found`, and kubeadm reset on that host then has nothing left to remove."""
    from tests.doubles.etcdctl import member_id

    need_containerd()
    cp0, cp1 = _control_planes(k8s_nodes, containerd_socket)
    etcdctl = etcd_bins[0]

    def ctl(node: K8sNode, *args: str) -> subprocess.CompletedProcess[str]:
        p = node.etc / "pki/etcd"
        tls = [
            f"--cacert={p}/ca.crt",
            f"--cert={p}/healthcheck-client.crt",
            f"--key={p}/healthcheck-client.key",
        ]
        env = {"PATH": os.environ["PATH"], "K8S_STANDIN_ROOT": str(node.root)}
        return subprocess.run(
            [str(etcdctl), "--endpoints=https://127.0.0.1:2379", *tls, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    listed = ctl(cp0, "member", "list", "-w", "json")
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    names = {m["name"]: m for m in doc["members"]}
    assert set(names) == {"cp0", "cp1"}, doc
    assert names["cp1"]["peerURLs"] == ["https://127.0.0.1:2380"]
    assert names["cp1"]["clientURLs"] == ["https://127.0.0.1:2379"]
    assert "isLearner" not in names["cp1"]  # Go's omitempty leaves a false out
    assert doc["header"]["member_id"] == names["cp0"]["ID"] == member_id("cp0", ["https://127.0.0.1:2380"])
    cp1_hex = f"{names['cp1']['ID']:x}"
    simple = ctl(cp0, "member", "list").stdout.splitlines()
    assert f"{cp1_hex}, started, cp1, https://127.0.0.1:2380, https://127.0.0.1:2379, false" in simple
    table = ctl(cp0, "member", "list", "--write-out=table").stdout.splitlines()
    assert table[1].split("|")[1:-1] == [
        "        ID        ",
        " STATUS  ",
        " NAME ",
        "       PEER ADDRS       ",
        "      CLIENT ADDRS      ",
        " IS LEARNER ",
    ], table
    assert f"| {cp1_hex.rjust(16)} | started |  cp1 |" in table[3] + table[4], table
    # the joined control plane's member answers too (its API forwards to the record's owner)
    assert {m["name"] for m in json.loads(ctl(cp1, "member", "list", "-w", "json").stdout)["members"]} == {
        "cp0",
        "cp1",
    }

    removed = ctl(cp0, "member", "remove", cp1_hex)
    assert removed.returncode == 0, removed.stderr
    cluster = doc["header"]["cluster_id"]
    assert removed.stdout == f"Member {names['cp1']['ID']:16x} removed from cluster {cluster:16x}\n"
    after = json.loads(ctl(cp0, "member", "list", "-w", "json").stdout)
    assert [m["name"] for m in after["members"]] == ["cp0"] and after["header"]["cluster_id"] == cluster
    again = ctl(cp0, "member", "remove", cp1_hex)
    failed(again, "etcdserver: member not found")
    # kubeadm reset's remove-etcd-member phase finds its member gone and goes on without a warning
    reset = cp1.kubeadm("reset", "-f", start_kubelet=False)
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert "Failed to remove etcd member" not in reset.stderr, reset.stderr
    assert [m["name"] for m in json.loads(ctl(cp0, "member", "list", "-w", "json").stdout)["members"]] == [
        "cp0"
    ]


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
