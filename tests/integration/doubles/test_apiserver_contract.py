"""Contract of the API-server stand-in, driven by the real lightkube client the product uses: auth that
rejects wrong credentials, Nodes with Ready conditions/labels/taints, ConfigMap and Secret round trips,
patch flavours, watch, conflicts, validation, persistence, and the HA follower (forwards to the store
owner; reads answered from its replica while the owner is down, writes refused like etcd's)."""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.models.core_v1 import NodeSpec, Taint
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Namespace, Node, Secret
from lightkube.types import PatchType

from tests.doubles import pki
from tests.doubles.build import build_executable

from .conftest import FAST, _interpreter_ok, free_port, need_containerd, node_ready, wait_for
from .conftest import Node as StandinNode

pytestmark = pytest.mark.integration


class ApiServerProc:
    def __init__(
        self, binary: Path, data: Path, port: int, tokens: Path, grace: str = "3", extra: tuple[str, ...] = ()
    ) -> None:
        self.data, self.port, self.binary, self.tokens, self.grace = data, port, binary, tokens, grace
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.data / "log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    "--data-dir",
                    str(self.data),
                    "--port",
                    str(self.port),
                    "--token-auth-file",
                    str(self.tokens),
                    "--node-monitor-grace-period",
                    self.grace,
                    *self.extra,
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

        def up() -> bool:
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{self.port}/readyz", context=ctx, timeout=2)
            except urllib.error.HTTPError as e:
                return e.code == 401  # listening, and anonymous is refused
            return False

        wait_for(up, what="apiserver listening")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)

    def client(self, kubeconfig: str = "admin.kubeconfig") -> Client:
        return Client(KubeConfig.from_file(self.data / kubeconfig))


@pytest.fixture
def api() -> Iterator[ApiServerProc]:
    reason = _interpreter_ok()
    if reason:
        pytest.skip(reason)
    d = Path(tempfile.mkdtemp(prefix="kapi", dir="/tmp"))
    binary = build_executable("apiserver", d / "apiserver")
    tokens = d / "tokens.csv"
    tokens.write_text('admin-token,admin,1,"system:masters"\nviewer-token,viewer,2\n')
    os.chmod(tokens, 0o600)
    s = ApiServerProc(binary, d, free_port(), tokens)
    s.start()
    yield s
    s.stop()
    import shutil

    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def follower(api: ApiServerProc) -> Iterator[ApiServerProc]:
    """A second server that follows `api` (same CAs), as a joined k3s server or control plane does."""
    import shutil

    d = Path(tempfile.mkdtemp(prefix="kapif", dir="/tmp"))
    shutil.copytree(api.data / "tls", d / "tls")
    f = ApiServerProc(api.binary, d, free_port(), api.tokens, extra=("--upstream", f"127.0.0.1:{api.port}"))
    f.start()
    wait_for(lambda: "replica synced" in (d / "log").read_text(), what="the follower's first sync")
    yield f
    f.stop()
    shutil.rmtree(d, ignore_errors=True)


def _http(server: ApiServerProc, path: str, token: str, timeout: float = 10) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(server.data / "tls" / "server-ca.crt"))
    ctx.check_hostname = False
    req = urllib.request.Request(
        f"https://127.0.0.1:{server.port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as r:
            return r.status, r.read(4096).decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def token_kubeconfig(api: ApiServerProc, token: str, name: str) -> str:
    ca = (api.data / "tls" / "server-ca.crt").read_bytes()
    (api.data / name).write_text(pki.kubeconfig(f"https://127.0.0.1:{api.port}", ca, token=token))
    return name


def test_lightkube_configmap_and_secret_round_trip(api: ApiServerProc) -> None:
    c = api.client()
    c.create(Namespace(metadata=ObjectMeta(name="sealer-system")))
    c.create(
        ConfigMap(
            metadata=ObjectMeta(name="state", namespace="sealer-system", labels={"app": "sealer"}),
            data={"Clusterfile": "apiVersion: sealer.io/v2\n", "weird": "ünïcode ✓"},
        )
    )
    got = c.get(ConfigMap, "state", namespace="sealer-system")
    assert got.data == {"Clusterfile": "apiVersion: sealer.io/v2\n", "weird": "ünïcode ✓"}
    got.data["Clusterfile"] = "changed"
    c.replace(got)
    assert c.get(ConfigMap, "state", namespace="sealer-system").data["Clusterfile"] == "changed"
    c.create(
        Secret(
            metadata=ObjectMeta(name="creds", namespace="sealer-system"),
            stringData={"password": "s3cr3t"},
            data={"bin": base64.b64encode(b"\x00\xff").decode()},
        )
    )
    s = c.get(Secret, "creds", namespace="sealer-system")
    assert base64.b64decode(s.data["password"]) == b"s3cr3t"
    assert base64.b64decode(s.data["bin"]) == b"\x00\xff"
    assert s.stringData is None and s.type == "Opaque"
    assert [
        x.metadata.name for x in c.list(ConfigMap, namespace="sealer-system", labels={"app": "sealer"})
    ] == ["state"]
    assert list(c.list(ConfigMap, namespace="sealer-system", labels={"app": "other"})) == []
    c.delete(ConfigMap, "state", namespace="sealer-system")
    with pytest.raises(ApiError) as e:
        c.get(ConfigMap, "state", namespace="sealer-system")
    assert e.value.status.code == 404 and e.value.status.reason == "NotFound"


def test_lightkube_node_labels_taints_and_patches(api: ApiServerProc) -> None:
    c = api.client()
    c.create(
        Node(
            metadata=ObjectMeta(name="n1", labels={"a": "1"}),
            spec=NodeSpec(taints=[Taint(key="k", value="v", effect="NoSchedule")]),
        )
    )
    # strategic merge (lightkube's default): labels merge, null deletes
    n = c.patch(Node, "n1", {"metadata": {"labels": {"b": "2"}}})
    assert n.metadata.labels == {"a": "1", "b": "2"}
    n = c.patch(Node, "n1", {"metadata": {"labels": {"a": None}}}, patch_type=PatchType.MERGE)
    assert n.metadata.labels == {"b": "2"}
    # taints have no patch strategy upstream: the list is replaced
    n = c.patch(Node, "n1", {"spec": {"taints": [{"key": "x", "effect": "NoExecute"}]}})
    assert [(t.key, t.effect) for t in n.spec.taints] == [("x", "NoExecute")]
    n = c.patch(
        Node, "n1", [{"op": "add", "path": "/metadata/labels/c", "value": "3"}], patch_type=PatchType.JSON
    )
    assert n.metadata.labels == {"b": "2", "c": "3"}
    with pytest.raises(ApiError) as e:
        c.patch(
            Node,
            "n1",
            [{"op": "test", "path": "/metadata/labels/c", "value": "4"}],
            patch_type=PatchType.JSON,
        )
    assert e.value.status.code == 422
    with pytest.raises(ApiError) as e:
        c.patch(Node, "n1", {"spec": {"taints": [{"key": "x", "effect": "Sometimes"}]}})
    assert e.value.status.code == 422
    # status conditions merge by type through the status subresource
    c.patch(Node.Status, "n1", {"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    c.patch(Node.Status, "n1", {"status": {"conditions": [{"type": "DiskPressure", "status": "False"}]}})
    types = {x.type: x.status for x in c.get(Node, "n1").status.conditions}
    assert types["DiskPressure"] == "False" and "Ready" in types
    c.delete(Node, "n1")
    assert [x.metadata.name for x in c.list(Node)] == []


def test_wrong_credentials_are_rejected(api: ApiServerProc) -> None:
    bad = api.client(token_kubeconfig(api, "wrong-token", "bad.kubeconfig"))
    with pytest.raises(ApiError) as e:
        list(bad.list(Node))
    assert e.value.status.code == 401
    good = api.client(token_kubeconfig(api, "admin-token", "tok.kubeconfig"))
    assert [x.metadata.name for x in good.list(Namespace)] == [
        "default",
        "kube-node-lease",
        "kube-public",
        "kube-system",
    ]
    viewer = api.client(token_kubeconfig(api, "viewer-token", "viewer.kubeconfig"))
    with pytest.raises(ApiError) as e:
        list(viewer.list(Secret, namespace="default"))
    assert (
        e.value.status.code == 403
        and 'User "viewer" cannot list resource "secrets"' in e.value.status.message
    )
    # a client certificate from another CA does not even complete the TLS handshake
    ca, key = pki.make_ca("intruder")
    cert, ckey = pki.issue(ca, key, "system:admin", organizations=["system:masters"], client=True)
    server_ca = (api.data / "tls" / "server-ca.crt").read_bytes()
    (api.data / "intruder.kubeconfig").write_text(
        pki.kubeconfig(f"https://127.0.0.1:{api.port}", server_ca, cert_pem_bytes=cert, key_pem_bytes=ckey)
    )
    with pytest.raises(Exception) as exc:
        list(api.client("intruder.kubeconfig").list(Node))
    assert "401" not in str(exc.value)  # refused at TLS level, never served


def test_conflicts_validation_and_not_found(api: ApiServerProc) -> None:
    c = api.client()
    cm = c.create(ConfigMap(metadata=ObjectMeta(name="c", namespace="default"), data={"v": "1"}))
    with pytest.raises(ApiError) as e:
        c.create(ConfigMap(metadata=ObjectMeta(name="c", namespace="default")))
    assert e.value.status.code == 409 and e.value.status.reason == "AlreadyExists"
    c.patch(ConfigMap, "c", {"data": {"v": "2"}}, namespace="default")
    cm.data = {"v": "stale"}
    with pytest.raises(ApiError) as e:
        c.replace(cm)  # carries the old resourceVersion
    assert e.value.status.code == 409 and e.value.status.reason == "Conflict"
    with pytest.raises(ApiError) as e:
        c.create(ConfigMap(metadata=ObjectMeta(name="Bad_Name", namespace="default")))
    assert e.value.status.code == 422
    with pytest.raises(ApiError) as e:
        c.create(ConfigMap(metadata=ObjectMeta(name="x", namespace="nope")))
    assert e.value.status.code == 404 and 'namespaces "nope" not found' in e.value.status.message
    with pytest.raises(ApiError) as e:
        c.get(Lease, "x", namespace="default")
    assert e.value.status.code == 404


def test_watch_sees_changes(api: ApiServerProc) -> None:
    c = api.client()
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def watch() -> None:
        for kind, obj in api.client().watch(ConfigMap, namespace="default"):
            seen.append((kind, obj.metadata.name))
            if kind == "DELETED":
                done.set()
                return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    wait_for(lambda: t.is_alive(), what="watch started")
    import time

    time.sleep(0.5)  # let the watch connect before the first event (not a timing assertion)
    c.create(ConfigMap(metadata=ObjectMeta(name="w", namespace="default")))
    c.patch(ConfigMap, "w", {"data": {"a": "b"}}, namespace="default")
    c.delete(ConfigMap, "w", namespace="default")
    wait_for(done.is_set, what="DELETED event")
    assert [k for k, n in seen if n == "w"] == ["ADDED", "MODIFIED", "DELETED"]


def test_state_persists_across_restart_and_nodes_go_unknown(api: ApiServerProc) -> None:
    c = api.client()
    c.create(Node(metadata=ObjectMeta(name="n1")))
    c.patch(
        Node.Status,
        "n1",
        {"status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": _now()}]}},
    )
    api.stop()
    assert oct((api.data / "state.json").stat().st_mode & 0o777) == "0o600"  # it holds Secrets
    api.start()
    c = api.client()
    assert c.get(Node, "n1").metadata.name == "n1"
    # no heartbeats: after the (shortened) grace period the node is Unknown and tainted unreachable
    wait_for(
        lambda: {x.type: x.status for x in c.get(Node, "n1").status.conditions}["Ready"] == "Unknown",
        what="n1 Unknown",
    )
    assert any(t.key == "node.kubernetes.io/unreachable" for t in c.get(Node, "n1").spec.taints)


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_discovery_documents(api: ApiServerProc) -> None:
    c = api.client()
    # lightkube's generic calls go through the same paths kubectl's discovery uses
    ctx = ssl.create_default_context(cadata=(api.data / "tls" / "server-ca.crt").read_text())
    ctx.load_cert_chain(
        str(api.data / "tls" / "client-admin.crt"), str(api.data / "tls" / "client-admin.key")
    )
    import json

    def get(path: str) -> dict[str, object]:
        with urllib.request.urlopen(f"https://127.0.0.1:{api.port}{path}", context=ctx) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    assert get("/api")["versions"] == ["v1"]
    names = {r["name"] for r in get("/api/v1")["resources"]}  # type: ignore[index, union-attr]
    assert {"nodes", "nodes/status", "namespaces", "configmaps", "secrets"} <= names
    groups = {g["name"] for g in get("/apis")["groups"]}  # type: ignore[index, union-attr]
    assert "coordination.k8s.io" in groups and "apps" in groups
    assert get("/version")["gitVersion"].startswith("v1.30.")  # type: ignore[union-attr]
    assert c.get(Namespace, "default").status.phase == "Active"


# ------------------------------------------------------------------ a stand-in k3s cluster, via lightkube


@pytest.fixture
def cluster(nodes: Callable[[str], StandinNode]) -> tuple[StandinNode, StandinNode]:
    need_containerd()
    s = nodes("m0")
    s.start("server", "--cluster-init", "--https-listen-port", str(s.port), "--node-name", "m0", *FAST)
    s.wait_ready("m0")
    w = nodes("w1").start(
        "agent",
        "--server",
        s.url,
        "--token",
        s.token,
        "--node-name",
        "w1",
        "--node-label",
        "sealer.io/pool=gpu",
        "--node-taint",
        "gpu=true:NoSchedule",
        *FAST[:2],
    )
    wait_for(lambda: node_ready(s.admin(), "w1") == "True", what="w1 Ready")
    return s, w


def test_lightkube_lists_k3s_cluster_nodes(cluster: tuple[StandinNode, StandinNode]) -> None:
    s, w = cluster
    c = Client(KubeConfig.from_file(s.root / "etc/rancher/k3s/k3s.yaml"))
    nodes = {n.metadata.name: n for n in c.list(Node)}
    assert set(nodes) == {"m0", "w1"}

    def ready(n: Node) -> str:
        return next(x.status for x in n.status.conditions if x.type == "Ready")

    assert ready(nodes["m0"]) == "True" and ready(nodes["w1"]) == "True"
    assert nodes["m0"].metadata.labels["node-role.kubernetes.io/control-plane"] == "true"
    assert nodes["w1"].metadata.labels["sealer.io/pool"] == "gpu"
    assert [(t.key, t.value, t.effect) for t in nodes["w1"].spec.taints] == [("gpu", "true", "NoSchedule")]
    assert nodes["w1"].status.nodeInfo.containerRuntimeVersion.startswith("containerd://")
    # the product labels and taints nodes through the API; the stand-in applies it
    c.patch(
        Node,
        "w1",
        {
            "metadata": {"labels": {"env": "prod"}},
            "spec": {
                "taints": [
                    {"key": "gpu", "value": "true", "effect": "NoSchedule"},
                    {"key": "maint", "effect": "NoExecute"},
                ]
            },
        },
    )
    n = c.get(Node, "w1")
    assert n.metadata.labels["env"] == "prod" and len(n.spec.taints) == 2
    # stop the agent: lightkube then sees it NotReady (Unknown) after the grace period
    w.stop()
    wait_for(lambda: ready(c.get(Node, "w1")) == "Unknown", what="w1 Unknown")
    assert ready(c.get(Node, "m0")) == "True"


def test_real_kubectl_works_against_the_stand_in(api: ApiServerProc, tmp_path: Path) -> None:
    import shutil

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no real kubectl on this machine")
    env = {
        "KUBECONFIG": str(api.data / "admin.kubeconfig"),
        "HOME": str(tmp_path),
        "PATH": os.environ["PATH"],
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl, *args], env=env, capture_output=True, text=True, timeout=60)

    manifest = tmp_path / "cm.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  k: v\n")
    assert run("apply", "-f", str(manifest)).stdout.strip() == "configmap/app created"
    assert run("apply", "-f", str(manifest)).stdout.strip() == "configmap/app unchanged"
    manifest.write_text(manifest.read_text().replace("k: v", "k: w"))
    assert run("apply", "-f", str(manifest)).stdout.strip() == "configmap/app configured"
    assert run("get", "cm", "app", "-o", "jsonpath={.data.k}").stdout == "w"
    c = api.client()
    c.create(Node(metadata=ObjectMeta(name="n1", labels={"node-role.kubernetes.io/control-plane": "true"})))
    c.patch(
        Node.Status,
        "n1",
        {"status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": _now()}]}},
    )
    out = run("get", "nodes").stdout.split()
    assert out[:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"] and out[5:8] == [
        "n1",
        "Ready",
        "control-plane",
    ]
    r = run(
        "get", "nodes", "--token", "wrong", "--kubeconfig", str(api.data / token_kubeconfig(api, "x", "t.kc"))
    )
    assert r.returncode == 1 and "Unauthorized" in r.stderr


def test_bootstrap_token_and_kubelet_csr_flow(api: ApiServerProc) -> None:
    """A joining node authenticates with a bootstrap token, gets its client certificate through a CSR
    that the stand-in approves and signs, then acts as system:node:<name> (kubeadm/k0s TLS bootstrap)."""
    import datetime

    from tests.doubles.kubeclient import KubeClient, KubeError

    c = api.client()
    expiry = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )

    def token_secret(tid: str, secret: str, expiration: str) -> Secret:
        return Secret(
            metadata=ObjectMeta(name=f"bootstrap-token-{tid}", namespace="kube-system"),
            type="bootstrap.kubernetes.io/token",
            stringData={
                "token-id": tid,
                "token-secret": secret,
                "expiration": expiration,
                "usage-bootstrap-authentication": "true",
                "usage-bootstrap-signing": "true",
            },
        )

    c.create(token_secret("abcdef", "0123456789abcdef", expiry))
    c.create(token_secret("old000", "0123456789abcdef", "2000-01-01T00:00:00Z"))
    ca = (api.data / "tls" / "server-ca.crt").read_bytes()
    url = f"https://127.0.0.1:{api.port}"

    for bad in ("abcdef.ffffffffffffffff", "old000.0123456789abcdef", "zzzzzz.0123456789abcdef"):
        with pytest.raises(KubeError) as e:
            KubeClient(url, ca, token=bad).get("/api/v1/nodes")
        assert e.value.code == 401, bad
    boot = KubeClient(url, ca, token="abcdef.0123456789abcdef")
    with pytest.raises(KubeError) as e:
        boot.get("/api/v1/secrets")
    assert e.value.code == 403  # a bootstrapper may only ask for a certificate

    csr_pem, key_pem = pki.make_csr("system:node:joiner", ["system:nodes"])
    boot.create(
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": "node-csr-joiner"},
            "spec": {
                "request": base64.b64encode(csr_pem).decode(),
                "usages": ["digital signature", "client auth"],
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            },
        },
    )
    csr = boot.get("/apis/certificates.k8s.io/v1/certificatesigningrequests/node-csr-joiner")
    assert csr["spec"]["username"] == "system:bootstrap:abcdef"
    assert csr["status"]["conditions"][0]["type"] == "Approved"
    cert = base64.b64decode(csr["status"]["certificate"])
    assert pki.subject_of(cert) == ("system:node:joiner", ["system:nodes"])
    node = KubeClient(url, ca, cert_pem=cert, key_pem=key_pem)
    node.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "joiner"}})
    with pytest.raises(KubeError) as e:  # NodeRestriction: not another node's object
        node.patch("/api/v1/nodes/joiner2", {"metadata": {"labels": {"a": "b"}}})
    assert e.value.code == 403

    # a CSR for a name outside system:nodes is stored but never approved
    other_pem, _ = pki.make_csr("admin", ["system:masters"])
    boot.create(
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": "sneaky"},
            "spec": {
                "request": base64.b64encode(other_pem).decode(),
                "usages": ["client auth"],
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            },
        },
    )
    assert "certificate" not in boot.get(
        "/apis/certificates.k8s.io/v1/certificatesigningrequests/sneaky"
    ).get("status", {})


def test_follower_serves_reads_from_its_replica_while_the_owner_is_down(
    api: ApiServerProc, follower: ApiServerProc
) -> None:
    owner, fc = api.client(), follower.client()
    # owner up: the follower forwards, both ways
    fc.create(ConfigMap(metadata=ObjectMeta(name="via-follower", namespace="default"), data={"a": "1"}))
    assert owner.get(ConfigMap, "via-follower", namespace="default").data == {"a": "1"}
    owner.create(Node(metadata=ObjectMeta(name="n1", labels={"tier": "control"})))
    owner.create(ConfigMap(metadata=ObjectMeta(name="last", namespace="default"), data={"b": "2"}))
    api.stop()  # a graceful stop hands the followers its last writes first

    # reads: get and list (with a selector) from the replica
    assert fc.get(ConfigMap, "last", namespace="default").data == {"b": "2"}
    assert [n.metadata.name for n in fc.list(Node, labels={"tier": "control"})] == ["n1"]
    assert {"via-follower", "last"} <= {c.metadata.name for c in fc.list(ConfigMap, namespace="default")}
    # the replica is read with the caller's own rights, not the follower's
    viewer = follower.client(token_kubeconfig(follower, "viewer-token", "viewer.kubeconfig"))
    with pytest.raises(ApiError) as denied:
        viewer.get(Secret, "x", namespace="default")
    assert denied.value.status.code == 403
    # writes need the datastore: refused as etcd refuses them, and /readyz says why
    with pytest.raises(ApiError) as refused:
        fc.create(ConfigMap(metadata=ObjectMeta(name="lost", namespace="default")))
    assert refused.value.status.code == 503
    assert "etcdserver: request timed out" in (refused.value.status.message or "")
    code, body = _http(follower, "/readyz?verbose", "admin-token")
    assert code == 500 and "[-]etcd failed" in body

    # a watch opened on the follower while the owner is down keeps going when the owner is back and
    # sees what changed meanwhile (the replica catches up from a fresh snapshot)
    seen: list[tuple[str, str]] = []
    got_after = threading.Event()

    def watch() -> None:
        for kind, obj in follower.client().watch(ConfigMap, namespace="default"):
            seen.append((kind, obj.metadata.name))
            if obj.metadata.name == "after":
                got_after.set()
                return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    wait_for(lambda: ("ADDED", "last") in seen, what="the watch's initial state from the replica")
    api.start()
    owner = api.client()
    owner.create(ConfigMap(metadata=ObjectMeta(name="after", namespace="default")))
    wait_for(got_after.is_set, what="the owner's new ConfigMap seen by the follower's watch")
    # and writes through the follower work again
    fc.patch(ConfigMap, "last", {"data": {"b": "3"}}, namespace="default")
    assert owner.get(ConfigMap, "last", namespace="default").data == {"b": "3"}
    # a killed owner (no goodbye): the replica still holds what it had replicated
    assert api.proc is not None
    api.proc.kill()
    api.proc.wait(20)
    assert fc.get(ConfigMap, "after", namespace="default").metadata.name == "after"


def test_only_admins_may_replicate_the_store(api: ApiServerProc) -> None:
    code, body = _http(api, "/standin/v1/replication", "viewer-token")
    assert code == 403 and "cannot replicate" in body
    code, body = _http(api, "/standin/v1/replication", "wrong-token")
    assert code == 401


def test_a_stopping_server_answers_the_requests_it_had_accepted(api: ApiServerProc) -> None:
    """SIGTERM while a request is being answered: it still gets its answer (here the follower's 503
    once its forward to an owner that never answers times out), not a cut connection."""
    import shutil
    import socket

    owner = socket.socket()  # accepts connections (the kernel does) and never says a word
    owner.bind(("127.0.0.1", 0))
    owner.listen(16)
    owner.settimeout(30)
    d = Path(tempfile.mkdtemp(prefix="kapis", dir="/tmp"))
    shutil.copytree(api.data / "tls", d / "tls")
    f = ApiServerProc(
        api.binary, d, free_port(), api.tokens, extra=("--upstream", f"127.0.0.1:{owner.getsockname()[1]}")
    )
    held: list[socket.socket] = []
    try:
        f.start()
        held.append(owner.accept()[0])  # the follower's replication stream, stuck in its handshake
        answer: list[object] = []

        def ask() -> None:
            try:
                answer.append(_http(f, "/api/v1/namespaces/default/configmaps", "admin-token", timeout=60))
            except Exception as e:  # a cut connection: what must not happen
                answer.append(e)

        t = threading.Thread(target=ask, daemon=True)
        t.start()
        held.append(owner.accept()[0])  # the request, forwarded: the follower is now answering it
        assert f.proc is not None
        f.proc.terminate()
        t.join(60)
        assert answer and isinstance(answer[0], tuple), answer
        code, body = answer[0]
        assert code == 503 and "etcdserver: request timed out" in body, body
        assert f.proc.wait(30) == 0
    finally:
        f.stop()
        for c in held:
            c.close()
        owner.close()
        shutil.rmtree(d, ignore_errors=True)
