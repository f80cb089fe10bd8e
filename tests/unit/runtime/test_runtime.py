"""Runtime selection, the k3s runtime's generated files, the cluster PKI and hook selection."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from sealer.errors import ImageError
from sealer.model.cluster import PluginDoc
from sealer.model.clusterfile import parse_clusterfile
from sealer.runtime import pki
from sealer.runtime.base import RegistryEndpoint, RuntimeContext, choose_runtime, runtime_type_of
from sealer.runtime.hooks import hosts_for, plugins_for
from sealer.runtime.k3s import (
    K3sRuntime,
    agent_config,
    agent_server_url,
    registries_yaml,
    reset_script,
    rewrite_server,
    server_config,
    unit_file,
)
from sealer.runtime.registry import config_yaml, htpasswd_line

LABEL = "cluster.alpha.sealer.io/cluster-runtime-type"

CLUSTERFILE = """apiVersion: sealer.io/v2
kind: Cluster
metadata: {name: rt}
spec:
  image: k3s:test
  hosts:
    - ips: [10.0.0.2, 10.0.0.3]
      roles: [master]
    - ips: [10.0.0.4]
      roles: [node, gpu]
      taints: ["gpu=yes:NoSchedule", "old-"]
"""


def _ctx(registry: RegistryEndpoint | None = None, env: tuple[str, ...] = ()) -> RuntimeContext:
    text = CLUSTERFILE + (f"  env: {list(env)}\n" if env else "")
    cf, problems = parse_clusterfile(text, "test")
    assert cf is not None, problems
    hosts = cf.cluster.hosts
    return RuntimeContext(
        fleet=None,  # type: ignore[arg-type]  # the pure functions under test never reach a host
        cluster=cf.cluster,
        targets={},
        node_names={h.ip: f"node-{h.ip.rsplit('.', 1)[1]}" for h in hosts},
        registry=registry,
    )


# choose_runtime -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("labels", "metadata", "want"),
    [
        ({LABEL: "k3s"}, None, "k3s"),
        ({LABEL: "K3S"}, None, "k3s"),
        ({LABEL: "kubernetes"}, '{"ClusterRuntime": "k3s"}', "kubernetes"),  # the label wins
        ({}, '{"version": "v1.22.15", "ClusterRuntime": "k8s"}', "kubernetes"),
        ({}, '{"ClusterRuntime": "k0s"}', "k0s"),
        ({}, '{"ClusterRuntime": "k3s"}', "k3s"),
        ({}, '{"version": "v1.22.15"}', "kubernetes"),
        ({}, None, "kubernetes"),
    ],
)
def test_runtime_type_label_first_then_metadata(
    labels: dict[str, str], metadata: str | None, want: str
) -> None:
    assert runtime_type_of(labels, metadata, "img:1") == want


def test_unknown_runtime_names_image_and_value() -> None:
    with pytest.raises(ImageError) as err:
        runtime_type_of({LABEL: "nomad"}, None, "acme/img:1")
    assert "acme/img:1" in err.value.message and "'nomad'" in err.value.message
    assert err.value.hint and "k3s" in err.value.hint
    with pytest.raises(ImageError) as err:
        runtime_type_of({}, '{"ClusterRuntime": "swarm"}', "acme/img:2")
    assert "Metadata ClusterRuntime" in err.value.message
    with pytest.raises(ImageError, match="not valid JSON"):
        runtime_type_of({}, "{nope", "acme/img:3")


def test_choose_runtime_k3s_and_not_yet_kubernetes() -> None:
    assert isinstance(choose_runtime({LABEL: "k3s"}, None, "i"), K3sRuntime)
    assert choose_runtime({}, None, "i").name == "kubernetes"
    assert choose_runtime({LABEL: "k0s"}, None, "i").name == "k0s"


# k3s files ---------------------------------------------------------------------------------------
def test_server_config_first_and_joining_masters() -> None:
    ctx = _ctx()
    m0, m1 = ctx.cluster.masters
    first = server_config(ctx, m0, init=True)
    assert first["cluster-init"] is True and "server" not in first
    assert first["node-ip"] == "10.0.0.2" and first["node-name"] == "node-2"
    # every master, the endpoint name (so one master can later become three) and the loopback the
    # workers' node-local balancer is reached on
    assert first["tls-san"] == ["apiserver.cluster.local", "10.0.0.2", "10.0.0.3", "127.0.0.1", "localhost"]
    assert first["token-file"] == "/etc/rancher/k3s/sealer-token"
    joining = server_config(ctx, m1, init=False)
    assert joining["server"] == "https://10.0.0.2:6443" and "cluster-init" not in joining


def _ctx_env(*env: str) -> RuntimeContext:
    return _ctx(env=env)


def test_agents_join_through_the_local_balancer_by_default() -> None:
    # two masters: haproxy on 127.0.0.1:6443 by default, so losing master0 loses no agent
    assert agent_server_url(_ctx()) == "https://127.0.0.1:6443"
    # one master too: when it becomes three, the agent's balancer learns them, nothing else changes
    one = CLUSTERFILE.replace("[10.0.0.2, 10.0.0.3]", "[10.0.0.2]")
    assert one != CLUSTERFILE
    cf, problems = parse_clusterfile(one, "test")
    assert cf is not None and len(cf.cluster.masters) == 1, problems
    assert agent_server_url(replace(_ctx(), cluster=cf.cluster)) == "https://127.0.0.1:6443"
    # k3s's own client balancer, or no balancer: agents are given master0 and learn the rest
    assert agent_server_url(_ctx_env("APIServerLB=native")) == "https://10.0.0.2:6443"
    assert agent_server_url(_ctx_env("APIServerLB=none")) == "https://10.0.0.2:6443"


def test_server_certificates_cover_the_vip() -> None:
    ctx = _ctx_env("APIServerVIP=10.0.0.200")
    sans = server_config(ctx, ctx.cluster.masters[0], init=True)["tls-san"]
    assert isinstance(sans, list) and "10.0.0.200" in sans and "127.0.0.1" in sans


def test_agent_config_carries_taints_not_removals_and_no_token() -> None:
    ctx = _ctx()
    (worker,) = ctx.cluster.workers
    config = agent_config(ctx, worker)
    assert config == {"node-name": "node-4", "node-ip": "10.0.0.4", "node-taint": ["gpu=yes:NoSchedule"]}
    assert "token" not in yaml.safe_dump(config)


def test_registries_yaml_mirrors_every_source_through_the_private_registry() -> None:
    reg = RegistryEndpoint("sea.hub", 5000, "CA PEM", mirrored=("quay.io", "docker.io"))
    doc = yaml.safe_load(registries_yaml(_ctx(reg)) or "")
    assert set(doc["mirrors"]) == {"sea.hub:5000", "docker.io", "quay.io"}
    assert all(m == {"endpoint": ["https://sea.hub:5000"]} for m in doc["mirrors"].values())
    assert doc["configs"] == {"sea.hub:5000": {"tls": {"ca_file": "/etc/rancher/k3s/sealer-registry-ca.crt"}}}
    with_auth = RegistryEndpoint("sea.hub", 5000, "CA", username="u", password="p")
    assert yaml.safe_load(registries_yaml(_ctx(with_auth)) or "")["configs"]["sea.hub:5000"]["auth"] == {
        "username": "u",
        "password": "p",
    }
    assert registries_yaml(_ctx(None)) is None


def test_units_and_reset() -> None:
    server, agent = unit_file("server"), unit_file("agent")
    assert "ExecStart=/usr/local/bin/k3s server\n" in server and "Type=notify" in server
    assert "ExecStart=/usr/local/bin/k3s agent\n" in agent
    assert "EnvironmentFile=-/etc/systemd/system/k3s-agent.service.env" in agent
    script = reset_script()
    for gone in (
        "/etc/rancher",
        "/var/lib/rancher",
        "/run/k3s",
        "k3s.service",
        "k3s-agent.service",
        "/etc/sealer/k3s-installed",
        # the agents' balancer and the masters' VIP go too
        "sealer-apiserver-lb.service",
        "sealer-apiserver-vip.service",
        "/usr/local/lib/sealer/haproxy",
    ):
        assert gone in script


def test_rewrite_server_points_kubeconfig_at_master0() -> None:
    text = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "clusters": [
                {
                    "name": "default",
                    "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority-data": "Q0E="},
                }
            ],
        }
    )
    out = yaml.safe_load(rewrite_server(text, "https://10.0.0.2:6443"))
    assert out["clusters"][0]["cluster"] == {
        "server": "https://10.0.0.2:6443",
        "certificate-authority-data": "Q0E=",
    }


def test_registry_config() -> None:
    plain = yaml.safe_load(config_yaml("/var/lib/sealer/data/c/rootfs/registry", 5000, htpasswd=False))
    assert plain["storage"]["filesystem"]["rootdirectory"] == "/var/lib/sealer/data/c/rootfs/registry"
    assert plain["http"]["addr"] == ":5000" and "auth" not in plain
    assert "delete" not in plain["storage"]  # the image's content is never deleted through the API
    assert yaml.safe_load(config_yaml("/r", 5001, htpasswd=True))["auth"]["htpasswd"]["path"].endswith(
        "htpasswd"
    )


# pki --------------------------------------------------------------------------------------------
def test_registry_certificate_signed_by_cluster_ca() -> None:
    ca = pki.new_ca("demo")
    cert = pki.issue_server_cert(ca, "sea.hub", ["sea.hub", "reg.example"], ["10.0.0.2"])
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    leaf = x509.load_pem_x509_certificate(cert.cert_pem.encode())
    leaf.verify_directly_issued_by(ca_cert)
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    dns, ips = pki.cert_names(cert.cert_pem)
    assert dns == {"sea.hub", "reg.example"} and ips == {"10.0.0.2"}
    assert ipaddress.ip_address("10.0.0.2")
    assert "PRIVATE KEY" not in repr(cert)


# hooks ------------------------------------------------------------------------------------------
def test_hook_order_and_scope() -> None:
    ctx = _ctx()
    plugins = [
        PluginDoc("b-second", "SHELL", "echo b", actions=("post-init-host",), scope=("master",)),
        PluginDoc("a-first", "SHELL", "echo a", actions=("post-init-host", "pre-install"), scope=("gpu",)),
        PluginDoc("c-none", "SHELL", "echo c", actions=("post-init-host",), scope=()),
    ]
    hosts = list(ctx.cluster.hosts)
    ordered = plugins_for("post-init-host", plugins)
    assert [p.name for p in ordered] == ["a-first", "b-second", "c-none"]
    assert [h.ip for h in hosts_for("post-init-host", ordered[0], hosts, ctx.master0)] == ["10.0.0.4"]
    assert [h.ip for h in hosts_for("post-init-host", ordered[1], hosts, ctx.master0)] == [
        "10.0.0.2",
        "10.0.0.3",
    ]
    assert hosts_for("post-init-host", ordered[2], hosts, ctx.master0) == []  # empty scope: no host
    # master0 phases ignore the scope
    assert [h.ip for h in hosts_for("pre-install", plugins[1], hosts, ctx.master0)] == ["10.0.0.2"]


@pytest.mark.skipif(shutil.which("htpasswd") is None, reason="htpasswd (apache2-utils) is not installed")
def test_htpasswd_line_is_bcrypt_and_verifies(tmp_path: Path) -> None:
    line = htpasswd_line("pull", "s3cret pass")
    user, _, digest = line.strip().partition(":")
    assert user == "pull" and digest.startswith("$2y$")  # distribution accepts only bcrypt
    path = tmp_path / "htpasswd"
    path.write_text(line)
    ok = subprocess.run(["htpasswd", "-vb", str(path), "pull", "s3cret pass"], capture_output=True)
    bad = subprocess.run(["htpasswd", "-vb", str(path), "pull", "wrong"], capture_output=True)
    assert ok.returncode == 0 and bad.returncode != 0
