"""Contract of the k0s stand-in: cobra/pflag errors, root checks, strict config, join tokens (base64 gzip
kubeconfig with a bootstrap token) that a joining node must present, service install/reset, status."""

from __future__ import annotations

import base64
import gzip
import os
from collections.abc import Callable

import pytest
import yaml

from .conftest import K0sNode, need_containerd, node_ready, wait_for

pytestmark = pytest.mark.integration

KUBELET = "--kubelet-extra-args=--hostname-override={} --node-status-update-frequency=1s"
GRACE = "--kube-controller-manager-extra-args=--node-monitor-grace-period=4s"


def error(r: object, text: str) -> None:
    """cobra: `Error: <message>` on stderr, exit status 1."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)  # type: ignore[attr-defined]
    line = next((ln for ln in r.stderr.splitlines() if ln.startswith("Error: ")), "")  # type: ignore[attr-defined]
    assert text in line, r.stderr  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------- bad invocations


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["controller", "--foo"], "unknown flag: --foo"),
        (["worker", "-foo"], "unknown shorthand flag: 'f' in -foo"),
        (["bogus"], 'unknown command "bogus" for "k0s"'),
        (["controller", "--single=maybe"], 'invalid argument "maybe" for "--single" flag: strconv.ParseBool'),
        (["worker", "--token-file"], "flag needs an argument: --token-file"),
        (["worker", "--labels", "novalue"], 'invalid argument "novalue" for "--labels" flag'),
        (
            ["token", "create", "--role", "admin"],
            'unsupported role "admin"; supported roles are "controller" and "worker"',
        ),
        (["worker", "a", "b"], "accepts at most 1 arg(s), received 2"),
    ],
)
def test_rejects_bad_invocations(k0s_nodes: Callable[[str], K0sNode], args: list[str], message: str) -> None:
    n = k0s_nodes("n")
    n.root.mkdir(parents=True)
    error(n.run(*args), message)


@pytest.mark.parametrize("args", [["install", "controller"], ["reset"], ["start"]])
def test_root_only_commands(k0s_nodes: Callable[[str], K0sNode], args: list[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to nobody")
    n = k0s_nodes("n")
    n.root.mkdir(parents=True)
    error(n.run(*args, user="nobody"), "this command must be run as root")


def test_worker_needs_a_token(k0s_nodes: Callable[[str], K0sNode]) -> None:
    n = k0s_nodes("n")
    error(n.run("worker"), "no join token given; dunno how to make kubelet authenticate to API server")
    tf = n.root / "token"
    tf.write_text("x")
    error(n.run("worker", "sometoken", "--token-file", str(tf)), "you can only pass one token argument")
    error(n.run("worker", "--token-file", str(n.root / "missing")), "no such file or directory")
    error(n.run("worker", "not-base64!"), "failed to decode join token")
    error(n.run("worker", base64.b64encode(b"plain, not gzip").decode()), "failed to decode join token")


def test_token_create_needs_a_control_plane(k0s_nodes: Callable[[str], K0sNode]) -> None:
    n = k0s_nodes("n")
    n.root.mkdir(parents=True)
    error(
        n.run("token", "create", "--role", "worker"), "check if the control plane is initialized on this node"
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            "apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nspec:\n  api:\n    prot: 1\n",
            'unknown field "prot"',
        ),
        (
            "apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nspec:\n  nope: {}\n",
            'unknown field "nope"',
        ),
        (
            "apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nspec: [\n",
            "error converting YAML to JSON",
        ),
        ("apiVersion: v1\nkind: ConfigMap\n", 'no kind "ConfigMap" is registered for version "v1"'),
        (
            "apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nspec:\n  storage:\n"
            "    type: mysql\n",
            'spec.storage.type: Unsupported value: "mysql"',
        ),
        (
            "apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nspec:\n  api:\n    port: 70000\n",
            "spec.api.port: Invalid value",
        ),
    ],
)
def test_strict_config(k0s_nodes: Callable[[str], K0sNode], config: str, message: str) -> None:
    n = k0s_nodes("n")
    cfg = n.root / "k0s.yaml"
    n.root.mkdir(parents=True)
    cfg.write_text(config)
    error(n.run("config", "validate", "--config", str(cfg)), message)
    error(n.run("controller", "-c", str(cfg)), message)


def test_status_when_not_running(k0s_nodes: Callable[[str], K0sNode]) -> None:
    n = k0s_nodes("n")
    n.root.mkdir(parents=True)
    r = n.run("status")
    assert r.returncode == 1 and "K0s not running" in r.stderr


def test_version_and_default_config(k0s_nodes: Callable[[str], K0sNode]) -> None:
    n = k0s_nodes("n")
    n.root.mkdir(parents=True)
    assert n.run("version").stdout.strip() == "v1.30.5+k0s.0"
    out = n.run("config", "create").stdout
    doc = yaml.safe_load(out)
    assert doc["apiVersion"] == "k0s.k0sproject.io/v1beta1" and doc["spec"]["api"]["port"] == 6443
    (n.root / "default.yaml").write_text(out)
    assert n.run("config", "validate", "--config", str(n.root / "default.yaml")).returncode == 0


def test_install_writes_the_service_unit(k0s_nodes: Callable[[str], K0sNode]) -> None:
    if os.geteuid() != 0:
        pytest.skip("k0s install needs root")
    n = k0s_nodes("n")
    n.root.mkdir(parents=True)
    r = n.run("install", "controller", "--enable-worker", "--no-taints", "-e", "HTTP_PROXY=http://proxy:3128")
    assert r.returncode == 0, r.stderr
    unit = (n.root / "etc/systemd/system/k0scontroller.service").read_text()
    assert f"ExecStart={n.binary} controller --enable-worker --no-taints" in unit
    assert 'Environment="HTTP_PROXY=http://proxy:3128"' in unit and "KillMode=process" in unit
    error(n.run("install", "controller"), "failed to install controller service: Init already exists")
    assert n.run("install", "controller", "--force", "--single").returncode == 0
    assert "controller --single" in (n.root / "etc/systemd/system/k0scontroller.service").read_text()
    tf = n.root / "worker-token"
    error(n.run("install", "worker", "--token-file", str(tf)), "token file")


# ----------------------------------------------------------------------------------- a k0s cluster


def start_controller(k0s_nodes: Callable[[str], K0sNode], name: str, *args: str) -> K0sNode:
    need_containerd()
    c = k0s_nodes(name)
    c.write_config()
    c.start("controller", *args, KUBELET.format(name), GRACE)
    c.wait_api()
    return c


def test_worker_joins_with_a_token_and_goes_not_ready_when_stopped(
    k0s_nodes: Callable[[str], K0sNode],
) -> None:
    c = start_controller(k0s_nodes, "c0", "--enable-worker")
    wait_for(lambda: node_ready(c.admin(), "c0") == "True", what="c0 Ready")
    node = c.admin().get("/api/v1/nodes/c0")
    assert node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == "true"
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in node["spec"]["taints"]

    token = c.run("token", "create", "--role=worker", "--expiry=1h").stdout.strip()
    kubeconfig = yaml.safe_load(gzip.decompress(base64.b64decode(token)))
    assert kubeconfig["users"][0]["name"] == "kubelet-bootstrap"
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{c.port}"

    w = k0s_nodes("w0")
    tf = w.root / "token"
    w.root.mkdir(parents=True)
    tf.write_text(token)
    w.start(
        "worker",
        "--token-file",
        str(tf),
        "--labels",
        "pool=blue,tier=db",
        "--taints",
        "gpu=true:NoSchedule",
        KUBELET.format("w0"),
    )
    wait_for(lambda: node_ready(c.admin(), "w0") == "True", what="w0 Ready")
    node = c.admin().get("/api/v1/nodes/w0")
    assert node["metadata"]["labels"]["pool"] == "blue" and node["metadata"]["labels"]["tier"] == "db"
    assert node["spec"]["taints"] == [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.30.5+k0s.0"
    st = w.run("status")
    assert "Role: worker" in st.stdout and "Workloads: true" in st.stdout
    error(w.run("reset"), "k0s seems to be running! please stop k0s before reset.")
    w.stop()
    wait_for(lambda: node_ready(c.admin(), "w0") == "Unknown", what="w0 NotReady")
    r = w.run("reset")
    assert r.returncode == 0, r.stderr
    assert not w.data.exists()


def test_bad_tokens_are_refused(k0s_nodes: Callable[[str], K0sNode]) -> None:
    c = start_controller(k0s_nodes, "c0")
    st = c.run("status").stdout
    assert "Role: controller" in st and "Workloads: false" in st
    good = c.run("token", "create", "--role=worker").stdout.strip()
    kc = gzip.decompress(base64.b64decode(good)).decode()
    w = k0s_nodes("w0")
    w.root.mkdir(parents=True)
    # a token whose secret half is wrong
    tid_secret = yaml.safe_load(kc)["users"][0]["user"]["token"]
    forged = kc.replace(tid_secret, tid_secret[:7] + "0" * 16)
    from tests.doubles.k0s import encode_token

    error(w.run("worker", encode_token(forged), KUBELET.format("w0")), "Unauthorized")
    # a token from another cluster: its CA does not vouch for this server
    from tests.doubles import pki

    other_ca, _ = pki.make_ca("other")
    foreign = kc.replace(
        yaml.safe_load(kc)["clusters"][0]["cluster"]["certificate-authority-data"],
        base64.b64encode(other_ca).decode(),
    )
    error(
        w.run("worker", encode_token(foreign), KUBELET.format("w0")),
        "certificate signed by unknown authority",
    )
    # an invalidated token
    tid = tid_secret.split(".")[0]
    assert c.run("token", "invalidate", tid).returncode == 0
    error(w.run("worker", good, KUBELET.format("w0")), "Unauthorized")
    # a controller token cannot join a worker, a worker token cannot join a controller
    ctoken = c.run("token", "create", "--role=controller").stdout.strip()
    error(w.run("worker", ctoken, KUBELET.format("w0")), "failed to bootstrap kubelet kubeconfig")
    good2 = c.run("token", "create", "--role=worker").stdout.strip()
    c2 = k0s_nodes("c1")
    c2.write_config()
    error(c2.run("controller", good2), "not a controller token")


def test_controller_join_shares_the_cluster(k0s_nodes: Callable[[str], K0sNode]) -> None:
    c0 = start_controller(k0s_nodes, "c0", "--enable-worker")
    token = c0.run("token", "create", "--role=controller").stdout.strip()
    kc = yaml.safe_load(gzip.decompress(base64.b64decode(token)))
    assert kc["users"][0]["name"] == "controller-bootstrap"
    assert kc["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{c0.k0s_api_port}"
    c1 = k0s_nodes("c1")
    c1.write_config()
    c1.start("controller", token, "--enable-worker", KUBELET.format("c1"))
    c1.wait_api()
    wait_for(lambda: node_ready(c0.admin(), "c1") == "True", what="c1 Ready")
    assert (c1.data / "pki/ca.crt").read_bytes() == (c0.data / "pki/ca.crt").read_bytes()
    assert {n["metadata"]["name"] for n in c1.admin().get("/api/v1/nodes")["items"]} == {"c0", "c1"}
    admin = c1.run("kubeconfig", "admin").stdout
    assert f"server: https://127.0.0.1:{c1.port}" in admin
