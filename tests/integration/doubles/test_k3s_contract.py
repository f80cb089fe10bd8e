"""Contract of the k3s stand-in: it rejects what k3s v1.30 rejects, with k3s's words, and accepts the
documented invocations (flags, env vars, config file, tokens, registries.yaml)."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import FAST, Node, need_containerd, node_ready, wait_for

pytestmark = pytest.mark.integration

FATAL = "level=fatal"


def fatal(result: object, text: str) -> None:
    """k3s fails with exit status 1 and a logrus fatal line carrying the message."""
    rc = result.returncode  # type: ignore[attr-defined]
    err = result.stderr  # type: ignore[attr-defined]
    assert rc == 1, (rc, err)
    line = next((ln for ln in err.splitlines() if FATAL in ln), "")
    assert text in line.replace('\\"', '"'), err  # logrus escapes quotes inside msg="..."


# ------------------------------------------------------------------------------------ bad invocations
# These need no running server and no containerd.

BAD_FLAGS = [
    (["server", "--foo"], "flag provided but not defined: -foo"),
    (["server", "-foo=1"], "flag provided but not defined: -foo"),
    (["agent", "--no-such-flag"], "flag provided but not defined: -no-such-flag"),
    (["server", "--token"], "flag needs an argument: -token"),
    (["server", "--cluster-init=maybe"], 'invalid boolean value "maybe" for -cluster-init: parse error'),
    (["server", "--https-listen-port", "x"], 'invalid value "x" for flag -https-listen-port: parse error'),
    (["agent", "--cluster-init"], "flag provided but not defined: -cluster-init"),  # a server-only flag
]


@pytest.mark.parametrize(("args", "message"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_rejects_bad_flags_like_urfave_cli(
    nodes: Callable[[str], Node], args: list[str], message: str
) -> None:
    r = nodes("n").run(*args)
    fatal(r, message)
    assert f"Incorrect Usage: {message}" in r.stdout


def test_unknown_command_is_a_help_topic_error(nodes: Callable[[str], Node]) -> None:
    r = nodes("n").run("servr")
    assert r.returncode == 3
    assert "No help topic for 'servr'" in r.stdout


def test_agent_requires_token_then_server(nodes: Callable[[str], Node]) -> None:
    n = nodes("n")
    fatal(n.run("agent", "--server", "https://127.0.0.1:1"), "--token is required")
    fatal(n.run("agent", "--token", "secret"), "--server is required")


def test_agent_rejects_plain_http_server_url(nodes: Callable[[str], Node]) -> None:
    r = nodes("n").run("agent", "--server", "http://127.0.0.1:6443", "--token", "secret")
    fatal(r, "only https:// URLs are supported, invalid scheme: http://127.0.0.1:6443")


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("K10abc::server:pw", "invalid token CA hash length"),
        ("K10" + "a" * 64 + "::nopassword", "invalid token format"),
        ("K10" + "a" * 64 + "::server:", "invalid token format"),
    ],
)
def test_agent_rejects_malformed_tokens(nodes: Callable[[str], Node], token: str, message: str) -> None:
    fatal(nodes("n").run("agent", "--server", "https://127.0.0.1:1", "--token", token), message)


def test_agent_fails_when_server_unreachable(nodes: Callable[[str], Node]) -> None:
    n = nodes("n")
    r = n.run("agent", "--server", f"https://127.0.0.1:{n.port}", "--token", "secret")
    fatal(
        r,
        f'failed to get CA certs: Get "https://127.0.0.1:{n.port}/cacerts": dial tcp 127.0.0.1:{n.port}: '
        "connect: connection refused",
    )
    # it retried (logged errors) before giving up, like the real agent's retry loop
    assert "level=error" in r.stderr


def test_server_join_fails_when_server_unreachable(nodes: Callable[[str], Node]) -> None:
    n = nodes("n")
    r = n.run("server", "--server", f"https://127.0.0.1:{n.port}", "--token", "secret")
    fatal(r, "failed to get CA certs")


@pytest.mark.parametrize("cmd", ["server", "agent"])
def test_refuses_to_run_as_non_root(nodes: Callable[[str], Node], cmd: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to nobody")
    n = nodes("n")
    n.root.mkdir(parents=True)
    os.chmod(n.root.parent, 0o755)
    r = n.run(cmd, "--server", "https://127.0.0.1:1", "--token", "x", user="nobody")
    fatal(r, f"{cmd} must" + (" run as root" if cmd == "server" else " be run as root"))


def test_malformed_config_file(nodes: Callable[[str], Node]) -> None:
    n = nodes("n")
    cfg = n.root / "etc/rancher/k3s/config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("token: abc\nnode-label: [a=b\n")
    fatal(n.run("server"), f"failed to parse config file {cfg}")


def test_config_file_unknown_key_is_an_unknown_flag(nodes: Callable[[str], Node]) -> None:
    n = nodes("n")
    cfg = n.root / "etc/rancher/k3s/config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("node-name: a\nno-such-option: true\n")
    fatal(n.run("server"), "flag provided but not defined: -no-such-option")


def test_config_file_must_be_a_mapping(nodes: Callable[[str], Node]) -> None:
    n = nodes("n")
    cfg = n.root / "k3s-config.yaml"
    n.root.mkdir(parents=True)
    cfg.write_text("- token\n- abc\n")
    fatal(n.run("server", "--config", str(cfg)), "cannot unmarshal !!list")


def test_explicit_config_file_must_exist(nodes: Callable[[str], Node]) -> None:
    fatal(nodes("n").run("agent", "-c", "/nonexistent/k3s.yaml"), "open /nonexistent/k3s.yaml: no such file")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "mirrors:\n  docker.io:\n    endpoint: [http://x\n",
            "failed to load private registry configuration",
        ),
        ("mirrors:\n  docker.io:\n    endpoint: http://x:5000\n", "cannot unmarshal !!str into []string"),
        ("mirrors:\n  docker.io:\n    endpoint: ['ftp://x:5000']\n", "must be an http:// or https:// URL"),
        (
            "configs:\n  x:5000:\n    tls:\n      insecure_skip_verify: maybe\n",
            "cannot unmarshal !!str into bool",
        ),
        ("- docker.io\n", "cannot unmarshal !!seq into registries.Registry"),
    ],
)
def test_bad_registries_yaml(nodes: Callable[[str], Node], content: str, message: str) -> None:
    n = nodes("n")
    reg = n.root / "etc/rancher/k3s/registries.yaml"
    reg.parent.mkdir(parents=True)
    reg.write_text(content)
    fatal(n.run("server", "--https-listen-port", str(n.port)), message)


def test_bad_node_taint_effect(nodes: Callable[[str], Node]) -> None:
    n = nodes("n")
    fatal(
        n.run("server", "--https-listen-port", str(n.port), "--node-taint", "a=b:Sometimes"),
        "invalid taint spec: a=b:Sometimes",
    )


def test_bad_node_label(nodes: Callable[[str], Node]) -> None:
    n = nodes("n")
    fatal(
        n.run("server", "--https-listen-port", str(n.port), "--node-label", "novalue"),
        "invalid node-label 'novalue'",
    )


def test_version_output(nodes: Callable[[str], Node]) -> None:
    r = nodes("n").run("--version")
    assert r.returncode == 0
    first = r.stdout.splitlines()[0]
    assert first.startswith("k3s version v1.30.") and "+k3s1 (" in first


# --------------------------------------------------------------------------------- a running cluster


def start_server(nodes: Callable[[str], Node], name: str, *args: str) -> Node:
    need_containerd()
    n = nodes(name)
    n.start("server", "--https-listen-port", str(n.port), "--node-name", name, *FAST, *args)
    n.wait_ready(name)
    return n


def test_server_writes_k3s_files(nodes: Callable[[str], Node]) -> None:
    s = start_server(nodes, "master0", "--cluster-init", "--tls-san", "k3s.example.test")
    token = s.token
    ca = (s.data / "server/tls/server-ca.crt").read_bytes()
    assert token.startswith(f"K10{hashlib.sha256(ca).hexdigest()}::server:")
    assert os.readlink(s.data / "server/node-token") == "token"
    assert stat.S_IMODE((s.data / "server/token").stat().st_mode) == 0o600
    kubeconfig = s.root / "etc/rancher/k3s/k3s.yaml"
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    assert f"server: https://127.0.0.1:{s.port}" in kubeconfig.read_text()
    node = s.admin().get("/api/v1/nodes/master0")
    labels = node["metadata"]["labels"]
    for role in ("control-plane", "master", "etcd"):
        assert labels[f"node-role.kubernetes.io/{role}"] == "true"
    # the serving certificate carries --tls-san
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((s.data / "server/tls/serving-kube-apiserver.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "k3s.example.test" in sans.get_values_for_type(x509.DNSName)
    # packaged components as manifests, applied by the deploy controller
    assert (s.data / "server/manifests/coredns.yaml").exists()
    wait_for(
        lambda: s.admin().get("/apis/apps/v1/namespaces/kube-system/deployments/coredns"), what="coredns"
    )


def test_sqlite_server_has_no_etcd_role_and_no_snapshots(nodes: Callable[[str], Node]) -> None:
    s = start_server(nodes, "single", "--write-kubeconfig-mode", "644", "--disable", "traefik,metrics-server")
    labels = s.admin().get("/api/v1/nodes/single")["metadata"]["labels"]
    assert "node-role.kubernetes.io/etcd" not in labels
    assert labels["node-role.kubernetes.io/control-plane"] == "true"
    assert stat.S_IMODE((s.root / "etc/rancher/k3s/k3s.yaml").stat().st_mode) == 0o644
    assert not (s.data / "server/manifests/traefik.yaml").exists()
    assert not (s.data / "server/manifests/metrics-server.yaml").exists()
    fatal(s.run("etcd-snapshot", "save"), "etcd database not found")


def test_restart_with_a_different_token_is_refused(nodes: Callable[[str], Node]) -> None:
    s = start_server(nodes, "master0", "--cluster-init", "--token", "first-secret")
    s.stop()
    r = s.run("server", "--https-listen-port", str(s.port), "--token", "other-secret")
    fatal(r, "bootstrap data already found and encrypted with different token")


def test_agent_join_wrong_password_wrong_hash_then_right(nodes: Callable[[str], Node]) -> None:
    s = start_server(nodes, "master0", "--cluster-init")
    good = s.token
    ca_hash, creds = good[3:].split("::")
    w = nodes("worker1")
    wrong_pw = f"K10{ca_hash}::server:not-the-password"
    fatal(
        w.run("agent", "--server", s.url, "--token", wrong_pw, "--node-name", "worker1"), "401 Unauthorized"
    )
    wrong_hash = f"K10{'0' * 64}::{creds}"
    fatal(
        w.run("agent", "--server", s.url, "--token", wrong_hash, "--node-name", "worker1"),
        f"token CA hash does not match the Cluster CA certificate hash: {'0' * 64} != {ca_hash}",
    )
    # the documented environment-variable form, with labels and taints
    w.start(
        "agent",
        "--node-name",
        "worker1",
        "--node-label",
        "tier=db",
        "--node-taint",
        "dedicated=db:NoSchedule",
        "--kubelet-arg",
        "node-status-update-frequency=1s",
        env={"K3S_URL": s.url, "K3S_TOKEN": good},
    )
    wait_for(lambda: node_ready(s.admin(), "worker1") == "True", what="worker1 Ready")
    node = s.admin().get("/api/v1/nodes/worker1")
    assert node["metadata"]["labels"]["tier"] == "db"
    assert "node-role.kubernetes.io/control-plane" not in node["metadata"]["labels"]
    assert {"key": "dedicated", "value": "db", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.30.")


def test_duplicate_node_name_with_another_password_is_rejected(nodes: Callable[[str], Node]) -> None:
    s = start_server(nodes, "master0", "--cluster-init")
    a = nodes("a").start("agent", "--server", s.url, "--token", s.token, "--node-name", "same", *FAST[:2])
    wait_for(lambda: node_ready(s.admin(), "same") == "True", what="first 'same' Ready")
    a.stop()
    b = nodes("b")  # another machine: its own /etc/rancher/node/password
    r = b.run("agent", "--server", s.url, "--token", s.token, "--node-name", "same")
    fatal(r, "Node password rejected, duplicate hostname")


def test_agent_token_is_separate_from_server_token(nodes: Callable[[str], Node]) -> None:
    s = start_server(nodes, "master0", "--cluster-init", "--agent-token", "agent-only-secret")
    agent_token = (s.data / "server/agent-token").read_text().strip()
    assert agent_token.endswith("::node:agent-only-secret")
    # the agent token may join agents but not servers
    j = nodes("master1")
    fatal(
        j.run("server", "--server", s.url, "--token", agent_token, "--https-listen-port", str(j.port)),
        "401 Unauthorized",
    )
    w = nodes("w").start("agent", "--server", s.url, "--token", agent_token, "--node-name", "w", *FAST[:2])
    wait_for(lambda: node_ready(s.admin(), "w") == "True", what="w Ready")
    assert w.proc is not None and w.proc.poll() is None


def test_config_file_supplies_flags(nodes: Callable[[str], Node]) -> None:
    need_containerd()
    n = nodes("cfg")
    cfg = n.root / "etc/rancher/k3s/config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(
        f"https-listen-port: {n.port}\nnode-name: from-config\nnode-label:\n  - a=1\n  - b=2\n"
        "kubelet-arg:\n  - node-status-update-frequency=1s\n"
    )
    d = cfg.parent / "config.yaml.d"
    d.mkdir()
    (d / "10-extra.yaml").write_text("node-label+:\n  - c=3\n")
    n.start("server")
    n.wait_ready("from-config")
    labels = n.admin().get("/api/v1/nodes/from-config")["metadata"]["labels"]
    assert (labels["a"], labels["b"], labels["c"]) == ("1", "2", "3")


def test_node_goes_not_ready_when_agent_stops_and_ready_again_on_restart(
    nodes: Callable[[str], Node],
) -> None:
    s = start_server(nodes, "master0", "--cluster-init")
    w = nodes("w").start("agent", "--server", s.url, "--token", s.token, "--node-name", "w", *FAST[:2])
    wait_for(lambda: node_ready(s.admin(), "w") == "True", what="w Ready")
    w.stop()
    wait_for(lambda: node_ready(s.admin(), "w") == "Unknown", what="w NotReady after the grace period")
    taints = s.admin().get("/api/v1/nodes/w")["spec"]["taints"]
    assert any(t["key"] == "node.kubernetes.io/unreachable" for t in taints)
    w.start("agent", "--server", s.url, "--token", s.token, "--node-name", "w", *FAST[:2])
    wait_for(lambda: node_ready(s.admin(), "w") == "True", what="w Ready again")
    # the lifecycle controller lifts the unreachable taint on its next pass, as upstream does
    wait_for(
        lambda: (
            not any(
                t["key"].startswith("node.kubernetes.io/")
                for t in s.admin().get("/api/v1/nodes/w").get("spec", {}).get("taints", [])
            )
        ),
        what="unreachable taint removed",
    )


def test_node_not_ready_while_containerd_is_down(nodes: Callable[[str], Node]) -> None:
    s = start_server(nodes, "master0", "--cluster-init")
    from .conftest import children

    assert s.proc is not None
    containerd = [p for p in children(s.proc.pid) if "containerd" in Path(f"/proc/{p}/cmdline").read_text()]
    assert containerd, "k3s runs containerd as its child"
    os.kill(containerd[0], 9)
    wait_for(lambda: node_ready(s.admin(), "master0") == "False", what="master0 NotReady (runtime down)")
    cond = next(
        c for c in s.admin().get("/api/v1/nodes/master0")["status"]["conditions"] if c["type"] == "Ready"
    )
    assert "container runtime is down" in cond["message"]


def test_ha_servers_share_the_cluster_and_followers_serve_reads_without_master0(
    nodes: Callable[[str], Node],
) -> None:
    m0 = start_server(nodes, "master0", "--cluster-init")
    m1 = start_server(nodes, "master1", "--server", m0.url, "--token", m0.token)
    assert m1.token == m0.token
    names = {n["metadata"]["name"] for n in m1.admin().get("/api/v1/nodes")["items"]}
    assert names == {"master0", "master1"}
    assert (
        m1.admin().get("/api/v1/nodes/master1")["metadata"]["labels"]["node-role.kubernetes.io/etcd"]
        == "true"
    )
    node_args = m1.admin().get("/api/v1/nodes/master1")["metadata"]["annotations"]["k3s.io/node-args"]
    assert (
        m0.token.rsplit(":", 1)[1] not in node_args and "********" in node_args
    )  # the join secret is masked
    m1.admin().create(
        "/api/v1/namespaces/default/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "via-m1"}, "data": {"k": "v"}},
    )
    assert m0.admin().get("/api/v1/namespaces/default/configmaps/via-m1")["data"] == {"k": "v"}
    # an etcd snapshot taken on a follower holds the cluster's state
    r = m1.run("etcd-snapshot", "save", "--etcd-server", m1.url, "--name", "pre")
    assert r.returncode == 0, r.stderr
    ls = m1.run("etcd-snapshot", "ls")
    assert "pre-master1-" in ls.stdout
    m0.stop()
    from tests.doubles.kubeclient import KubeError

    # the follower answers reads from its replica of master0's store; writes fail as etcd's would
    names = {n["metadata"]["name"] for n in m1.admin().get("/api/v1/nodes")["items"]}
    assert names == {"master0", "master1"}
    assert m1.admin().get("/api/v1/namespaces/default/configmaps/via-m1")["data"] == {"k": "v"}
    with pytest.raises(KubeError) as err:
        m1.admin().create(
            "/api/v1/namespaces/default/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lost"}},
        )
    assert err.value.code == 503 and "etcdserver: request timed out" in str(err.value)


def test_etcd_snapshot_and_cluster_reset_restore(nodes: Callable[[str], Node]) -> None:
    s = start_server(nodes, "master0", "--cluster-init")
    s.admin().create(
        "/api/v1/namespaces/default/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}, "data": {"v": "1"}},
    )
    r = s.run("etcd-snapshot", "save", "--etcd-server", s.url, "--name", "before")
    assert r.returncode == 0, r.stderr
    snap = next((s.data / "server/db/snapshots").glob("before-master0-*"))
    s.admin().delete("/api/v1/namespaces/default/configmaps/keep")
    s.stop()
    r = s.run(
        "server",
        "--cluster-reset",
        "--cluster-reset-restore-path",
        str(snap),
        "--https-listen-port",
        str(s.port),
    )
    assert r.returncode == 0, r.stderr
    assert "restart without --cluster-reset flag now" in r.stderr
    s.start("server", "--https-listen-port", str(s.port), "--node-name", "master0", *FAST)
    s.wait_ready("master0")
    assert s.admin().get("/api/v1/namespaces/default/configmaps/keep")["data"] == {"v": "1"}
    fatal(
        s.run("server", "--cluster-reset", "--cluster-reset-restore-path", "/nonexistent"),
        "snapshot path does not exist",
    )


def test_cluster_reset_restore_onto_a_new_node_needs_the_original_token(
    nodes: Callable[[str], Node],
) -> None:
    """k3s's snapshot carries the bootstrap data (CAs) encrypted with the server token: restored on
    a node of another cluster it needs the original token, and then brings back the old CAs."""
    old = start_server(nodes, "master0", "--cluster-init")
    old.admin().create(
        "/api/v1/namespaces/default/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}, "data": {"v": "1"}},
    )
    assert old.run("etcd-snapshot", "save", "--etcd-server", old.url, "--name", "b").returncode == 0
    snap = next((old.data / "server/db/snapshots").glob("b-master0-*"))
    assert b"BEGIN" not in snap.read_bytes()  # the CA keys are not in the clear
    old_token, old_ca = old.token, (old.data / "server/tls/server-ca.crt").read_bytes()
    old.stop()

    new = start_server(nodes, "fresh", "--cluster-init")
    new_ca = (new.data / "server/tls/server-ca.crt").read_bytes()
    assert new_ca != old_ca and new.token != old_token
    new.stop()
    reset = ("server", "--cluster-reset", "--cluster-reset-restore-path", str(snap))
    fatal(new.run(*reset), "bootstrap data already found and encrypted with different token")
    assert (new.data / "server/tls/server-ca.crt").read_bytes() == new_ca  # nothing written
    r = new.run(*reset, "--token", old_token)
    assert r.returncode == 0, r.stderr
    assert (new.data / "server/tls/server-ca.crt").read_bytes() == old_ca
    assert new.token == old_token
    new.start("server", "--https-listen-port", str(new.port), "--node-name", "fresh", *FAST)
    new.wait_ready("fresh")
    assert new.admin().get("/api/v1/namespaces/default/configmaps/keep")["data"] == {"v": "1"}


def test_state_survives_a_restart(nodes: Callable[[str], Node]) -> None:
    s = start_server(nodes, "master0", "--cluster-init")
    s.admin().create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kept"}}
    )
    s.stop()
    s.start("server", "--https-listen-port", str(s.port), "--node-name", "master0", *FAST)
    s.wait_ready("master0")
    assert s.admin().get("/api/v1/namespaces/kept")["status"]["phase"] == "Active"


def test_kubectl_subcommand(nodes: Callable[[str], Node], tmp_path: Path) -> None:
    s = start_server(nodes, "master0", "--cluster-init")
    manifest = tmp_path / "app.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: app\n---\napiVersion: v1\n"
        "kind: ConfigMap\nmetadata:\n  name: settings\n  namespace: app\ndata:\n  mode: fast\n"
    )
    r = s.run("kubectl", "apply", "-f", str(manifest))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["namespace/app created", "configmap/settings created"]
    assert s.run("kubectl", "apply", "-f", str(manifest)).stdout.splitlines() == [
        "namespace/app unchanged",
        "configmap/settings unchanged",
    ]
    r = s.run("kubectl", "get", "nodes")
    assert r.stdout.split()[:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert "master0" in r.stdout and "Ready" in r.stdout and "control-plane,etcd,master" in r.stdout
    r = s.run("kubectl", "create", "configmap", "x", "--from-literal=a=b")
    assert r.stdout.strip() == "configmap/x created"
    r = s.run("kubectl", "get", "configmap", "x", "-o", "json")
    import json

    assert json.loads(r.stdout)["data"] == {"a": "b"}
    r = s.run("kubectl", "get", "widgets")
    assert r.returncode == 1 and 'the server doesn\'t have a resource type "widgets"' in r.stderr


def test_upgrade_by_replacing_the_binary(nodes: Callable[[str], Node]) -> None:
    """An upgrade swaps the binary and restarts; the node and /version then report the new release."""
    from tests.doubles.build import build_executable

    s = start_server(nodes, "master0", "--cluster-init")
    assert s.admin().get("/api/v1/nodes/master0")["status"]["nodeInfo"]["kubeletVersion"] == "v1.30.6+k3s1"
    s.stop()
    s.binary = build_executable("k3s", s.root / "k3s-new", version="v1.31.2+k3s1")
    s.start("server", "--https-listen-port", str(s.port), "--node-name", "master0", *FAST)
    wait_for(
        lambda: (
            s.admin().get("/api/v1/nodes/master0")["status"]["nodeInfo"]["kubeletVersion"] == "v1.31.2+k3s1"
        ),
        what="node reports the new version",
    )
    assert s.admin().get("/version")["gitVersion"] == "v1.31.2+k3s1"
    with pytest.raises(ValueError):
        build_executable("k3s", s.root / "bad", version="1.31")


def test_kubectl_node_operations_and_jsonpath(nodes: Callable[[str], Node], tmp_path: Path) -> None:
    """The kubectl stand-in as an executable of its own (what a kubeadm host would carry) and via k3s."""
    from tests.doubles.build import build_executable

    s = start_server(nodes, "master0", "--cluster-init")
    kubectl = build_executable("kubectl", tmp_path / "kubectl")
    import subprocess

    env = {"KUBECONFIG": str(s.root / "etc/rancher/k3s/k3s.yaml"), "PATH": "/usr/bin:/bin"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(kubectl), *args], env=env, capture_output=True, text=True)

    assert (
        run("taint", "nodes", "master0", "dedicated=infra:NoSchedule").stdout.strip()
        == "node/master0 tainted"
    )
    assert run("cordon", "master0").stdout.strip() == "node/master0 cordoned"
    node = s.admin().get("/api/v1/nodes/master0")
    assert node["spec"]["unschedulable"] is True
    assert {"key": "dedicated", "value": "infra", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert "Ready,SchedulingDisabled" in run("get", "nodes").stdout
    r = run("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}")
    assert r.stdout == "master0"
    r = run("get", "node", "master0", "-o", "jsonpath={.metadata.labels.node-role\\.kubernetes\\.io/master}")
    assert r.stdout == "true", r.stderr
    assert run("taint", "nodes", "master0", "dedicated-").returncode == 0
    assert run("uncordon", "master0").returncode == 0
    node = s.admin().get("/api/v1/nodes/master0")
    assert not node["spec"].get("unschedulable") and not any(
        t["key"] == "dedicated" for t in node["spec"].get("taints", [])
    )
    r = run("taint", "nodes", "master0", "x=y:Sometimes")
    assert r.returncode == 1 and "unsupported taint effect" in r.stderr


def test_watch_through_a_follower_server(nodes: Callable[[str], Node]) -> None:
    """A follower forwards watches as a stream: lightkube watching via master1 sees writes made on master0."""
    import threading

    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import ConfigMap

    m0 = start_server(nodes, "master0", "--cluster-init")
    m1 = start_server(nodes, "master1", "--server", m0.url, "--token", m0.token)
    client = Client(KubeConfig.from_file(m1.root / "etc/rancher/k3s/k3s.yaml"))
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def watch() -> None:
        for kind, obj in client.watch(ConfigMap, namespace="default"):
            seen.append((kind, obj.metadata.name))
            if kind == "DELETED" and obj.metadata.name == "streamed":
                done.set()
                return

    threading.Thread(target=watch, daemon=True).start()
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "streamed"}, "data": {"a": "1"}}

    def created() -> bool:  # keep writing until the watch is connected and has seen it (no sleeps)
        if ("ADDED", "streamed") in seen:
            return True
        from tests.doubles.kubeclient import KubeError

        try:
            m0.admin().create("/api/v1/namespaces/default/configmaps", cm)
        except KubeError:  # already there from an earlier round: recreate it for the watch to see
            m0.admin().delete("/api/v1/namespaces/default/configmaps/streamed")
        return False

    wait_for(created, what="ADDED seen through the follower")
    m0.admin().delete("/api/v1/namespaces/default/configmaps/streamed")
    wait_for(done.is_set, what="DELETED seen through the follower")
