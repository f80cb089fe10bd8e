"""Contract of the kubeadm + kubelet stand-ins: kubeadm's config API (strict v1beta3/v1beta4), pre-flight
errors, the files it writes, token discovery with the CA public-key pin, and a kubelet that runs the static
control plane, TLS-bootstraps on workers and keeps its node Ready only while it runs."""

from __future__ import annotations

import base64
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from .conftest import K8sNode, need_containerd, node_ready, wait_for

pytestmark = pytest.mark.integration

IP_FORWARD = "--ignore-preflight-errors=FileContent--proc-sys-net-ipv4-ip_forward"


def failed(r: object, text: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)  # type: ignore[attr-defined]
    assert text in r.stderr, r.stderr  # type: ignore[attr-defined]
    assert "To see the stack trace of this error execute with --v=5 or higher" in r.stderr  # type: ignore[attr-defined]


def init_config(
    n: K8sNode, cri: str, extra_cluster: str = "", version: str = "v1beta4", release: str = "v1.31.2"
) -> str:
    cfg = n.root / "kubeadm.yaml"
    n.root.mkdir(parents=True, exist_ok=True)
    cfg.write_text(
        f"apiVersion: kubeadm.k8s.io/{version}\nkind: InitConfiguration\nlocalAPIEndpoint:\n"
        f"  advertiseAddress: 127.0.0.1\n  bindPort: {n.port}\nnodeRegistration:\n  name: {n.root.name}\n"
        f"  criSocket: {cri}\n---\napiVersion: kubeadm.k8s.io/{version}\nkind: ClusterConfiguration\n"
        f"kubernetesVersion: {release}\ncontrollerManager:\n  extraArgs:\n"
        + (
            "  - name: node-monitor-grace-period\n    value: 4s\n"
            if version == "v1beta4"
            else "    node-monitor-grace-period: 4s\n"
        )
        + extra_cluster
        + "---\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        + "nodeStatusUpdateFrequency: 1s\n"
    )
    return str(cfg)


def init(n: K8sNode, cri: str, version: str = "v1beta4") -> str:
    r = n.kubeadm("init", "--config", init_config(n, cri, version=version), IP_FORWARD)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Your Kubernetes control-plane has initialized successfully!" in r.stdout
    return str(r.stdout)


def join_args(out: str) -> list[str]:
    line = out[out.index("kubeadm join") :].replace("\\\n", " ").split()
    return line[2:7]  # endpoint --token T --discovery-token-ca-cert-hash H


# ----------------------------------------------------------------------------------- bad invocations

BAD = [
    (["init", "--foo"], "unknown flag: --foo"),
    (["init", "--token", "short"], 'the bootstrap token "short" was not of the form'),
    (
        ["init", "--kubernetes-version", "v1.29.0"],
        "only supports deploying clusters with the control plane version >= 1.30.0",
    ),
    (["init", "--kubernetes-version", "v1.32.0"], 'is higher than the kubeadm version "v1.31.2"'),
    (
        ["join", "10.0.0.1:6443", "--token", "abcdef.0123456789abcdef"],
        "using token-based discovery without caCertHashes can be unsafe",
    ),
    (
        [
            "join",
            "10.0.0.1:6443",
            "--token",
            "abcdef.0123456789abcdef",
            "--discovery-token-ca-cert-hash",
            "abc",
        ],
        'invalid hash "abc", expected a "type:value" pair',
    ),
    (
        [
            "join",
            "10.0.0.1:6443",
            "--token",
            "abcdef.0123456789abcdef",
            "--discovery-token-ca-cert-hash",
            "md5:ab",
        ],
        'unsupported hash type "md5"',
    ),
    (
        ["join", "10.0.0.1:6443", "--token", "bad", "--discovery-token-unsafe-skip-ca-verification"],
        "the bootstrap token is invalid",
    ),
    (["join"], "bootstrapToken or file must be set"),
    (["token", "create"], "failed to load admin kubeconfig"),
    (["bogus"], 'unknown command "bogus" for "kubeadm"'),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a)[:40] for a, _ in BAD])
def test_rejects_bad_invocations(k8s_nodes: Callable[[str], K8sNode], args: list[str], message: str) -> None:
    n = k8s_nodes("n")
    n.root.mkdir(parents=True)
    failed(n.run(*args), message)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            "apiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterConfiguration\n",
            'uses an old API spec: "kubeadm.k8s.io/v1beta2"',
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nnetworkin: {}\n",
            'strict decoding error: unknown field "networkin"',
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nnodeRegistration:\n  nam: x\n",
            'unknown field "nodeRegistration.nam"',
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfig\n",
            'no kind "ClusterConfig" is registered',
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: 1.31\n",
            'unable to parse version "1.31"',
        ),
        ("kind: [\n", "error converting YAML to JSON"),
    ],
)
def test_strict_config(k8s_nodes: Callable[[str], K8sNode], doc: str, message: str) -> None:
    n = k8s_nodes("n")
    n.root.mkdir(parents=True)
    (n.root / "c.yaml").write_text(doc)
    failed(n.run("init", "--config", str(n.root / "c.yaml")), message)


def test_config_cannot_be_mixed_with_flags(k8s_nodes: Callable[[str], K8sNode]) -> None:
    n = k8s_nodes("n")
    n.root.mkdir(parents=True)
    (n.root / "c.yaml").write_text("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n")
    failed(
        n.run("init", "--config", str(n.root / "c.yaml"), "--pod-network-cidr", "10.244.0.0/16"),
        "can not mix '--config' with arguments ['pod-network-cidr']",
    )


def test_preflight_errors(k8s_nodes: Callable[[str], K8sNode], containerd_socket: str) -> None:
    n = k8s_nodes("n")
    cfg = init_config(n, "unix:///nonexistent/containerd.sock")
    (n.root / "etc/kubernetes/manifests").mkdir(parents=True)
    (n.root / "etc/kubernetes/manifests/kube-apiserver.yaml").write_text("x")
    (n.root / "var/lib/etcd").mkdir(parents=True)
    (n.root / "var/lib/etcd/member").write_text("x")
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", n.port))
        busy.listen()
        r = n.run("init", "--config", cfg, IP_FORWARD)
    failed(r, "[preflight] Some fatal errors occurred:")
    for text in (
        "[ERROR CRI]: container runtime is not running",
        f"[ERROR Port-{n.port}]: Port {n.port} is in use",
        "[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]",
        "[ERROR DirAvailable--var-lib-etcd]",
    ):
        assert text in r.stderr, r.stderr
    assert "you can make a check non-fatal with `--ignore-preflight-errors=...`" in r.stderr
    if os.geteuid() == 0:
        r = n.run("init", "--config", cfg, user="nobody")
        failed(r, "[ERROR IsPrivilegedUser]: user is not running as root")


def test_kubelet_rejects_bad_flags_and_missing_config(k8s_nodes: Callable[[str], K8sNode]) -> None:
    n = k8s_nodes("n")
    n.root.mkdir(parents=True)
    import subprocess

    r = subprocess.run([str(n.kubelet_bin), "--no-such"], capture_output=True, text=True, env=n.env())
    assert r.returncode == 1 and "failed to parse kubelet flag: unknown flag: --no-such" in r.stderr
    r = subprocess.run(
        [str(n.kubelet_bin), "--config", str(n.root / "config.yaml")],
        capture_output=True,
        text=True,
        env=n.env(),
    )
    assert (
        r.returncode == 1 and "failed to load kubelet config file" in r.stderr
    )  # kubelet before kubeadm init


def test_reset_asks_unless_forced(k8s_nodes: Callable[[str], K8sNode]) -> None:
    if os.geteuid() != 0:
        pytest.skip("kubeadm reset needs root")
    n = k8s_nodes("n")
    n.root.mkdir(parents=True)
    import subprocess

    r = subprocess.run([str(n.binary), "reset"], input="n\n", capture_output=True, text=True, env=n.env())
    assert r.returncode == 1 and "aborted reset operation" in r.stderr
    assert "[reset] Are you sure you want to proceed? [y/N]" in r.stdout


# ----------------------------------------------------------------------------------- a real cluster


def test_init_join_and_node_lifecycle(k8s_nodes: Callable[[str], K8sNode], containerd_socket: str) -> None:
    need_containerd()
    cp = k8s_nodes("cp0")
    out = init(cp, containerd_socket)
    # files kubeadm writes
    for rel in (
        "pki/ca.crt",
        "pki/apiserver.crt",
        "pki/sa.key",
        "pki/etcd/ca.crt",
        "pki/front-proxy-ca.crt",
        "admin.conf",
        "super-admin.conf",
        "kubelet.conf",
        "controller-manager.conf",
        "scheduler.conf",
        "manifests/kube-apiserver.yaml",
        "manifests/etcd.yaml",
    ):
        assert (cp.etc / rel).exists(), rel
    assert stat.S_IMODE((cp.etc / "admin.conf").stat().st_mode) == 0o600
    api = yaml.safe_load((cp.etc / "manifests/kube-apiserver.yaml").read_text())
    assert f"--secure-port={cp.port}" in api["spec"]["containers"][0]["command"]
    admin = cp.admin()
    node = admin.get("/api/v1/nodes/cp0")
    assert node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == ""
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert (
        "ClusterConfiguration"
        in admin.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")["data"]
    )
    wait_for(lambda: node_ready(admin, "cp0") == "True", what="cp0 Ready")

    endpoint, _, token, _, pin = join_args(out)
    w = k8s_nodes("w1")
    # wrong pin: the CA found is not trusted
    failed(
        w.run(
            "join",
            endpoint,
            "--token",
            token,
            "--discovery-token-ca-cert-hash",
            "sha256:" + "0" * 64,
            "--node-name",
            "w1",
            "--cri-socket",
            containerd_socket,
            IP_FORWARD,
        ),
        "cluster CA found in cluster-info ConfigMap is invalid: none of the public keys",
    )
    # right id, wrong secret: the JWS does not verify
    failed(
        w.run(
            "join",
            endpoint,
            "--token",
            token[:7] + "0" * 16,
            "--discovery-token-ca-cert-hash",
            pin,
            "--cri-socket",
            containerd_socket,
            IP_FORWARD,
        ),
        "failed to verify JWS signature of received cluster info object",
    )
    # unknown token id
    failed(
        w.run(
            "join",
            endpoint,
            "--token",
            "zzzzzz.0123456789abcdef",
            "--discovery-token-ca-cert-hash",
            pin,
            "--cri-socket",
            containerd_socket,
            IP_FORWARD,
            env={"K8S_STANDIN_WAIT": "2"},
        ),
        'token id "zzzzzz" is invalid for this cluster or it has expired',
    )
    r = w.kubeadm(
        "join",
        endpoint,
        "--token",
        token,
        "--discovery-token-ca-cert-hash",
        pin,
        "--node-name",
        "w1",
        "--cri-socket",
        containerd_socket,
        IP_FORWARD,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "This node has joined the cluster" in r.stdout
    assert (w.root / "var/lib/kubelet/pki/kubelet-client-current.pem").exists()  # TLS bootstrap happened
    wait_for(lambda: node_ready(admin, "w1") == "True", what="w1 Ready")
    assert admin.get("/api/v1/nodes/w1")["status"]["nodeInfo"]["kubeletVersion"] == "v1.31.2"
    failed(
        w.run(
            "join",
            endpoint,
            "--token",
            token,
            "--discovery-token-ca-cert-hash",
            pin,
            "--cri-socket",
            containerd_socket,
            IP_FORWARD,
        ),
        "[ERROR FileAvailable--etc-kubernetes-kubelet.conf]",
    )

    # a fresh token from `token create --print-join-command` joins another worker
    printed = cp.run("token", "create", "--print-join-command")
    assert printed.returncode == 0, printed.stderr
    args = printed.stdout.split()
    assert args[:2] == ["kubeadm", "join"] and args[6] == pin
    w2 = k8s_nodes("w2")
    r = w2.kubeadm(*args[1:], "--node-name", "w2", "--cri-socket", containerd_socket, IP_FORWARD)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: node_ready(admin, "w2") == "True", what="w2 Ready")
    # another host under a Ready Node's name is refused before its TLS bootstrap
    twin = k8s_nodes("w2twin")
    failed(
        twin.run(*args[1:], "--node-name", "w2", "--cri-socket", containerd_socket, IP_FORWARD),
        'a Node with name "w2" and status "Ready" already exists in the cluster',
    )
    assert not (twin.root / "var/lib/kubelet/pki/kubelet-client-current.pem").exists()

    # a stopped kubelet: NotReady after the grace period; the control plane keeps serving
    w.stop_kubelet()
    wait_for(lambda: node_ready(admin, "w1") == "Unknown", what="w1 NotReady")
    listed = cp.run("token", "list").stdout
    assert token in listed

    # reset: files gone, the static kube-apiserver stopped
    r = cp.run("reset", "-f")
    assert r.returncode == 0, r.stderr
    assert not (cp.etc / "admin.conf").exists() and not (cp.etc / "pki").exists()
    assert not any((cp.root / "var/lib/etcd").iterdir())
    cp.stop_kubelet()

    def api_down() -> bool:
        try:
            admin.get("/version")
        except OSError:
            return True
        return False

    wait_for(api_down, what="kube-apiserver stopped by reset")


def test_v1beta3_config_and_certs_check(k8s_nodes: Callable[[str], K8sNode], containerd_socket: str) -> None:
    need_containerd()
    cp = k8s_nodes("cp0")
    init(cp, containerd_socket, version="v1beta3")
    r = cp.run("certs", "check-expiration")
    assert r.returncode == 0
    assert "apiserver" in r.stdout and "admin.conf" in r.stdout and "364d" in r.stdout
    # the bootstrap signer signs cluster-info asynchronously, as kube-controller-manager's does
    info = wait_for(
        lambda: (
            (d := cp.admin().get("/api/v1/namespaces/kube-public/configmaps/cluster-info")["data"])
            and any(k.startswith("jws-kubeconfig-") for k in d)
            and d
        ),
        what="signed cluster-info",
    )
    ca = base64.b64decode(
        yaml.safe_load(info["kubeconfig"])["clusters"][0]["cluster"]["certificate-authority-data"]
    )
    assert ca == (cp.etc / "pki/ca.crt").read_bytes()
    assert cp.run("version", "-o", "short").stdout.strip() == "v1.31.2"


def test_control_plane_join(k8s_nodes: Callable[[str], K8sNode], containerd_socket: str) -> None:
    need_containerd()
    cp0 = k8s_nodes("cp0")
    cfg = init_config(cp0, containerd_socket, extra_cluster=f"controlPlaneEndpoint: 127.0.0.1:{cp0.port}\n")
    r = cp0.kubeadm("init", "--config", cfg, "--upload-certs", IP_FORWARD)
    assert r.returncode == 0, r.stdout + r.stderr
    key = r.stdout.split("[upload-certs] Using certificate key:\n", 1)[1].split()[0]
    assert len(key) == 64
    endpoint, _, token, _, pin = join_args(r.stdout)
    cp1 = k8s_nodes("cp1")
    common = [
        endpoint,
        "--token",
        token,
        "--discovery-token-ca-cert-hash",
        pin,
        "--control-plane",
        "--apiserver-advertise-address",
        "127.0.0.1",
        "--apiserver-bind-port",
        str(cp1.port),
        "--node-name",
        "cp1",
        "--cri-socket",
        containerd_socket,
        IP_FORWARD,
    ]
    failed(
        cp1.run("join", *common, "--certificate-key", "ab" * 32),
        "error decrypting data: cipher: message authentication failed",
    )
    failed(cp1.run("join", *common), "The certificates that must be shared among control plane instances")
    r = cp1.kubeadm("join", *common, "--certificate-key", key)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "a new control plane instance was created" in r.stdout
    assert (cp1.etc / "pki/ca.key").read_bytes() == (cp0.etc / "pki/ca.key").read_bytes()
    etcd = yaml.safe_load((cp1.etc / "manifests/etcd.yaml").read_text())
    assert "--initial-cluster-state=existing" in etcd["spec"]["containers"][0]["command"]
    admin0 = cp0.admin()
    wait_for(lambda: node_ready(admin0, "cp1") == "True", what="cp1 Ready")
    node = admin0.get("/api/v1/nodes/cp1")
    assert "node-role.kubernetes.io/control-plane" in node["metadata"]["labels"]
    # cp1's own API server serves the same cluster
    from tests.doubles.kubeclient import KubeClient

    via_cp1 = KubeClient(
        f"https://127.0.0.1:{cp1.port}",
        (cp1.etc / "pki/ca.crt").read_bytes(),
        cert_pem=(cp1.etc / "pki/apiserver-kubelet-client.crt").read_bytes(),
        key_pem=(cp1.etc / "pki/apiserver-kubelet-client.key").read_bytes(),
    )
    assert {n["metadata"]["name"] for n in via_cp1.get("/api/v1/nodes")["items"]} == {"cp0", "cp1"}


def test_control_plane_join_needs_a_control_plane_endpoint(
    k8s_nodes: Callable[[str], K8sNode], containerd_socket: str
) -> None:
    need_containerd()
    cp0 = k8s_nodes("cp0")
    out = init(cp0, containerd_socket)
    endpoint, _, token, _, pin = join_args(out)
    cp1 = k8s_nodes("cp1")
    failed(
        cp1.run(
            "join",
            endpoint,
            "--token",
            token,
            "--discovery-token-ca-cert-hash",
            pin,
            "--control-plane",
            "--certificate-key",
            "ab" * 32,
            "--apiserver-bind-port",
            str(cp1.port),
            "--cri-socket",
            containerd_socket,
            IP_FORWARD,
        ),
        "unable to add a new control plane instance to a cluster that doesn't have a stable "
        "controlPlaneEndpoint address",
    )


def test_upgrade_plan_and_apply(
    k8s_nodes: Callable[[str], K8sNode], containerd_socket: str, tmp_path: Path
) -> None:
    """Init with kubeadm/kubelet v1.30.6, then the v1.31.2 kubeadm upgrades the control plane and a new
    kubelet reports the new version - the sequence `sealer upgrade` drives."""
    need_containerd()
    from tests.doubles.build import build_executable

    cp = k8s_nodes("cp0")
    new_kubeadm, new_kubelet = cp.binary, cp.kubelet_bin
    cp.binary = build_executable("kubeadm", tmp_path / "kubeadm-old", version="v1.30.6")
    cp.kubelet_bin = build_executable("kubelet", tmp_path / "kubelet-old", version="v1.30.6")
    r = cp.kubeadm("init", "--config", init_config(cp, containerd_socket, release="v1.30.6"), IP_FORWARD)
    assert r.returncode == 0, r.stdout + r.stderr
    admin = cp.admin()
    assert admin.get("/version")["gitVersion"] == "v1.30.6"
    wait_for(lambda: node_ready(admin, "cp0") == "True", what="cp0 Ready")
    failed(cp.run("upgrade", "apply", "v1.31.2", "-y"), 'is higher than the kubeadm version "v1.30.6"')

    cp.binary = new_kubeadm
    plan = cp.run("upgrade", "plan")
    assert plan.returncode == 0 and "kubeadm upgrade apply v1.31.2" in plan.stdout
    failed(cp.run("upgrade", "apply", "v1.32.0", "-y"), "is higher than the kubeadm version")
    import subprocess

    r = subprocess.run(
        [str(cp.binary), "upgrade", "apply", "v1.31.2"],
        input="n\n",
        capture_output=True,
        text=True,
        env=cp.env(),
    )
    assert r.returncode == 1 and "won't proceed" in r.stderr
    r = cp.run("upgrade", "apply", "v1.31.2", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'SUCCESS! Your cluster was upgraded to "v1.31.2"' in r.stdout
    wait_for(lambda: cp.admin().get("/version")["gitVersion"] == "v1.31.2", what="API server on v1.31.2")
    cfg = yaml.safe_load(
        cp.admin().get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")["data"][
            "ClusterConfiguration"
        ]
    )
    assert cfg["kubernetesVersion"] == "v1.31.2"
    assert ":v1.31.2" in (cp.etc / "manifests/kube-apiserver.yaml").read_text()
    # then the kubelet package: new binary, restart
    cp.stop_kubelet()
    cp.kubelet_bin = new_kubelet
    cp.start_kubelet()
    wait_for(
        lambda: cp.admin().get("/api/v1/nodes/cp0")["status"]["nodeInfo"]["kubeletVersion"] == "v1.31.2",
        what="kubelet v1.31.2",
    )
    assert cp.run("upgrade", "node").returncode == 0


def test_init_phase_upload_certs_renews_the_key(
    k8s_nodes: Callable[[str], K8sNode], containerd_socket: str
) -> None:
    need_containerd()
    cp0 = k8s_nodes("cp0")
    cfg = init_config(cp0, containerd_socket, extra_cluster=f"controlPlaneEndpoint: 127.0.0.1:{cp0.port}\n")
    old_key = "ab" * 32  # given as InitConfiguration.certificateKey, as sealer does
    Path(cfg).write_text(
        Path(cfg)
        .read_text()
        .replace("kind: InitConfiguration\n", f"kind: InitConfiguration\ncertificateKey: {old_key}\n")
    )
    r = cp0.kubeadm("init", "--config", cfg, "--upload-certs", IP_FORWARD)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split("[upload-certs] Using certificate key:\n", 1)[1].split()[0] == old_key
    new_key = "cd" * 32
    r = cp0.run(
        "init", "phase", "upload-certs", "--upload-certs", "--certificate-key", new_key, "--config", cfg
    )
    assert r.returncode == 0, r.stderr
    assert new_key in r.stdout
    assert "Skipping phase" in cp0.run("init", "phase", "upload-certs").stdout
    failed(cp0.run("init", "phase", "certs", "all"), "implements only `kubeadm init phase upload-certs`")
    endpoint, _, token, _, pin = join_args(cp0.run("token", "create", "--print-join-command").stdout)
    cp1 = k8s_nodes("cp1")
    common = [
        endpoint,
        "--token",
        token,
        "--discovery-token-ca-cert-hash",
        pin,
        "--control-plane",
        "--apiserver-advertise-address",
        "127.0.0.1",
        "--apiserver-bind-port",
        str(cp1.port),
        "--node-name",
        "cp1",
        "--cri-socket",
        containerd_socket,
        IP_FORWARD,
    ]
    failed(cp1.run("join", *common, "--certificate-key", old_key), "message authentication failed")
    r = cp1.kubeadm("join", *common, "--certificate-key", new_key)
    assert r.returncode == 0, r.stdout + r.stderr
