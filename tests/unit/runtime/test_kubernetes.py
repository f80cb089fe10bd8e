"""The kubernetes runtime's pure pieces: the kubeadm discovery pin (checked against openssl), bootstrap
tokens, containerd config and units, pre-flight and reset scripts (bash syntax, what they touch)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest

from sealer.runtime import pki
from sealer.runtime.kubernetes import (
    MASTER_PORTS,
    ca_cert_hash,
    containerd_config,
    host_check_script,
    kubeadm_dropin,
    kubelet_unit,
    new_bootstrap_token,
    reset_script,
)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_ca_cert_hash_matches_kubeadms_openssl_recipe() -> None:
    ca = pki.new_ca("unit")
    # the recipe from the kubeadm docs: public key -> DER -> sha256
    pub = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout"], input=ca.cert_pem.encode(), capture_output=True, check=True
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True, check=True
    ).stdout
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hex"], input=der, capture_output=True, check=True
    ).stdout.decode()
    assert ca_cert_hash(ca.cert_pem) == "sha256:" + digest.split()[-1]


def test_bootstrap_tokens_have_kubeadms_form_and_differ() -> None:
    tokens = {new_bootstrap_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", t) for t in tokens)


def test_containerd_config_is_toml_with_systemd_cgroups_and_dropins() -> None:
    cfg = tomllib.loads(containerd_config("sea.hub:5000/pause:3.10"))
    assert cfg["version"] == 2
    assert cfg["imports"] == ["/etc/containerd/conf.d/*.toml"]
    cri = cfg["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "sea.hub:5000/pause:3.10"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True


def test_kubelet_units_follow_kubeadms_dropin() -> None:
    assert "Restart=always" in kubelet_unit()
    dropin = kubeadm_dropin()
    assert "EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env" in dropin
    assert "--config=/var/lib/kubelet/config.yaml" in dropin
    # systemd joins backslash-continued lines: the ExecStart is one command
    joined = dropin.replace("\\\n", " ")
    assert re.search(
        r"ExecStart=/usr/local/bin/kubelet \$KUBELET_KUBECONFIG_ARGS .*\$KUBELET_EXTRA_ARGS", joined
    )


def test_host_check_script_fixes_and_reports() -> None:
    script = host_check_script(MASTER_PORTS)
    assert subprocess.run(["bash", "-n"], input=script, text=True, check=False).returncode == 0
    for piece in ("br_netfilter", "net.ipv4.ip_forward", "/proc/swaps", "6443", "2379", "10250"):
        assert piece in script


def test_reset_script_cleans_everything() -> None:
    script = reset_script()
    assert subprocess.run(["bash", "-n"], input=script, text=True, check=False).returncode == 0
    for piece in (
        "kubeadm reset -f",
        "/etc/cni/net.d",
        "KUBE-",
        "ipvsadm --clear",
        "/var/lib/etcd",
        "/etc/kubernetes",
        "/var/lib/kubelet",
        "kubernetes-installed",
        "sealer-apiserver-lb",
    ):
        assert piece in script, piece
