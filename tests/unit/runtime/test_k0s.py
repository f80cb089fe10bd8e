"""The k0s runtime's generated files (ClusterConfig, node flags, tokens), the containerd mirror files
and the node-local API balancer's haproxy config (checked by the real haproxy when installed)."""

from __future__ import annotations

import base64
import gzip
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from sealer.errors import ClusterfileError, RuntimeErrorSealer
from sealer.model.clusterfile import parse_clusterfile
from sealer.runtime import lb
from sealer.runtime.base import API_ENDPOINT_NAME, RegistryEndpoint, RuntimeContext, registers_node
from sealer.runtime.containerd import cri_dropin, hosts_toml, registry_files
from sealer.runtime.k0s import (
    K0sRuntime,
    cluster_config,
    decode_token,
    node_args,
    reset_script,
    token_with_server,
)
from sealer.runtime.k3s import K3sRuntime


def _ctx(
    env: str = "", masters: str = "10.0.0.2, 10.0.0.3, 10.0.0.4", registry: bool = True
) -> RuntimeContext:
    text = f"""apiVersion: sealer.io/v2
kind: Cluster
metadata: {{name: rt}}
spec:
  image: k0s:test
  env: [{env}]
  hosts:
    - ips: [{masters}]
      roles: [master]
    - ips: [10.0.0.9]
      roles: [node]
      taints: ["gpu=yes:NoSchedule", "old-"]
"""
    cf, problems = parse_clusterfile(text, "test")
    assert cf is not None, problems
    reg = RegistryEndpoint("sea.hub", 5000, "CA-PEM", ("quay.io",), "admin", "s3cret") if registry else None
    return RuntimeContext(
        fleet=None,  # type: ignore[arg-type]  # pure functions only
        cluster=cf.cluster,
        targets={},
        node_names={h.ip: f"node-{h.ip.rsplit('.', 1)[1]}" for h in cf.cluster.hosts},
        registry=reg,
    )


# what `k0s config create` v1.30 prints (abridged to the parts sealer touches)
CREATED = """apiVersion: k0s.k0sproject.io/v1beta1
kind: ClusterConfig
metadata: {name: k0s}
spec:
  api: {address: 192.168.1.1, k0sApiPort: 9443, port: 6443, sans: [192.168.1.1]}
  network: {podCIDR: 10.244.0.0/16, provider: kuberouter}
  storage: {type: etcd}
"""


def test_cluster_config_sets_api_sans_and_registry_keeps_the_rest() -> None:
    ctx = _ctx("APIServerVIP=10.0.0.100")
    host = ctx.cluster.masters[1]
    doc = cluster_config(CREATED, ctx, host)
    api = doc["spec"]["api"]
    assert api["address"] == "10.0.0.3"
    assert api["externalAddress"] == API_ENDPOINT_NAME
    for name in (API_ENDPOINT_NAME, "10.0.0.2", "10.0.0.3", "10.0.0.4", "127.0.0.1", "10.0.0.100"):
        assert name in api["sans"], api["sans"]
    assert "192.168.1.1" in api["sans"]  # what k0s put there is kept
    assert len(api["sans"]) == len(set(api["sans"]))
    assert doc["spec"]["images"]["repository"] == "sea.hub:5000"
    assert doc["spec"]["network"] == {"podCIDR": "10.244.0.0/16", "provider": "kuberouter"}
    assert doc["spec"]["storage"]["type"] == "etcd"


def test_cluster_config_image_overrides_merge_but_sealer_owns_the_api() -> None:
    ctx = _ctx()
    over = {"spec": {"network": {"podCIDR": "10.10.0.0/16"}, "api": {"address": "1.2.3.4"}}}
    doc = cluster_config(CREATED, ctx, ctx.cluster.masters[0], over)
    assert doc["spec"]["network"] == {"podCIDR": "10.10.0.0/16", "provider": "kuberouter"}
    assert doc["spec"]["api"]["address"] == "10.0.0.2"


def test_cluster_config_refuses_garbage() -> None:
    ctx = _ctx()
    with pytest.raises(RuntimeErrorSealer, match=r"10\.0\.0\.2: .*did not print a ClusterConfig"):
        cluster_config("Error: unknown command", ctx, ctx.cluster.masters[0])


def test_node_args_name_ip_and_taints() -> None:
    ctx = _ctx()
    worker = ctx.cluster.workers[0]
    args = node_args(ctx, worker)
    assert args[0] == "--kubelet-extra-args=--hostname-override=node-9 --node-ip=10.0.0.9"
    assert args[1] == "--taints=gpu=yes:NoSchedule"  # removals are not install-time taints


def test_token_rewrite_keeps_ca_and_secret() -> None:
    kc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "k0s",
                "cluster": {
                    "server": "https://apiserver.cluster.local:6443",
                    "certificate-authority-data": "Q0E=",
                },
            }
        ],
        "users": [{"name": "kubelet-bootstrap", "user": {"token": "abcdef.0123456789abcdef"}}],
    }
    token = base64.b64encode(gzip.compress(yaml.safe_dump(kc).encode())).decode()
    out = decode_token(token_with_server(token, "https://127.0.0.1:6443"))
    assert out["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:6443",
        "certificate-authority-data": "Q0E=",
    }
    assert out["users"] == kc["users"]
    with pytest.raises(RuntimeErrorSealer, match="not base64"):
        decode_token("not a token!")


def test_worker_tokens_point_at_the_local_balancer_from_the_first_master_on() -> None:
    """A worker joined to one master already goes through 127.0.0.1:6443, so a later 1 -> 3
    promotion only changes its balancer's backends (before, it named master0 for good)."""
    kc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "k0s", "cluster": {"server": "https://apiserver.cluster.local:6443"}}],
        "users": [{"name": "kubelet-bootstrap", "user": {"token": "abcdef.0123456789abcdef"}}],
    }
    token = base64.b64encode(gzip.compress(yaml.safe_dump(kc).encode())).decode()
    runtime = K0sRuntime()

    def server(ctx: RuntimeContext) -> str:
        return str(decode_token(runtime._worker_token(ctx, token))["clusters"][0]["cluster"]["server"])

    assert server(_ctx(masters="10.0.0.2")) == "https://127.0.0.1:6443"
    assert server(_ctx()) == "https://127.0.0.1:6443"
    # no balancer, or k0s's own (Envoy): the token's endpoint name stays
    assert server(_ctx("APIServerLB=none", masters="10.0.0.2")) == "https://apiserver.cluster.local:6443"
    assert server(_ctx("APIServerLB=native")) == "https://apiserver.cluster.local:6443"


def test_controllers_are_nodes_unless_asked_otherwise() -> None:
    rt = K0sRuntime()
    ctx = _ctx()
    assert all(registers_node(rt, ctx, h) for h in ctx.cluster.hosts)
    plain = _ctx("K0sControllerWorker=false")
    assert [registers_node(rt, plain, h) for h in plain.cluster.hosts] == [False, False, False, True]
    assert all(registers_node(K3sRuntime(), plain, h) for h in plain.cluster.hosts)
    assert "--enable-worker" in rt._controller_args(ctx, ctx.cluster.masters[0])
    assert "--enable-worker" not in rt._controller_args(plain, plain.cluster.masters[0])
    assert "--token-file=/etc/k0s/sealer-controller-token" in rt._controller_args(
        ctx, ctx.cluster.masters[1], join=True
    )


def test_reset_script_removes_everything_sealer_put_there() -> None:
    script = reset_script()
    for piece in (
        "k0s reset",
        "/var/lib/k0s",
        "/etc/k0s",
        "/run/k0s",
        "k0s-installed",
        "sealer-apiserver-lb",
    ):
        assert piece in script
    assert subprocess.run(["bash", "-n"], input=script, text=True, check=False).returncode == 0


# containerd mirror files --------------------------------------------------------------------------
def test_hosts_toml_for_every_mirrored_registry() -> None:
    reg = RegistryEndpoint("sea.hub", 5000, "CA", ("quay.io", "docker.io"))
    files = registry_files(reg, "/etc/k0s/certs.d")
    assert files["/etc/k0s/certs.d/sea.hub:5000/ca.crt"] == "CA"
    names = sorted(p.split("/")[4] for p in files if p.endswith("hosts.toml"))
    assert names == ["docker.io", "quay.io", "sea.hub:5000"]
    hub = tomllib.loads(files["/etc/k0s/certs.d/docker.io/hosts.toml"])
    assert hub["server"] == "https://registry-1.docker.io"
    assert hub["host"]["https://sea.hub:5000"] == {
        "capabilities": ["pull", "resolve"],
        "ca": "/etc/k0s/certs.d/sea.hub:5000/ca.crt",
    }
    own = tomllib.loads(hosts_toml("sea.hub:5000", reg, "/x/ca.crt"))
    assert own["server"] == "https://sea.hub:5000"


def test_cri_dropin_with_and_without_credentials() -> None:
    bare = tomllib.loads(cri_dropin("/etc/k0s/certs.d", None))
    assert bare["plugins"]["io.containerd.grpc.v1.cri"]["registry"] == {"config_path": "/etc/k0s/certs.d"}
    reg = RegistryEndpoint("sea.hub", 5000, "CA", (), "admin", 'p"w\\d')
    auth = tomllib.loads(cri_dropin("/c", reg))["plugins"]["io.containerd.grpc.v1.cri"]["registry"]
    assert auth["configs"]["sea.hub:5000"]["auth"] == {"username": "admin", "password": 'p"w\\d'}


# the node-local API balancer ----------------------------------------------------------------------
def test_lb_kind_defaults_and_errors() -> None:
    assert lb.lb_kind(_ctx().cluster) == "haproxy"  # three masters
    # one master too: workers joined now need no re-pointing when it becomes three
    assert lb.lb_kind(_ctx(masters="10.0.0.2").cluster) == "haproxy"
    assert not lb.lb_explicit(_ctx(masters="10.0.0.2").cluster)
    assert lb.lb_explicit(_ctx("APIServerLB=none").cluster)
    assert lb.lb_kind(_ctx("APIServerLB=none").cluster) == "none"
    assert lb.lb_kind(_ctx("APIServerLB=HAProxy", masters="10.0.0.2").cluster) == "haproxy"
    assert lb.lb_kind(_ctx("APIServerLB=native").cluster) == "native"
    with pytest.raises(ClusterfileError) as err:
        lb.lb_kind(_ctx("APIServerLB=ipvs").cluster)
    problem = err.value.problems[0]
    assert problem.path == "spec.env.APIServerLB" and "haproxy" in (problem.hint or "")


def test_haproxy_cfg_lists_every_master() -> None:
    cfg = lb.haproxy_cfg(["10.0.0.2", "10.0.0.3", "10.0.0.4"])
    assert "bind 127.0.0.1:6443" in cfg
    for i, ip in enumerate(["10.0.0.2", "10.0.0.3", "10.0.0.4"]):
        assert f"server master{i} {ip}:6443 check" in cfg


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (scripts/setup)")
def test_haproxy_accepts_the_config(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(lb.haproxy_cfg(["10.0.0.2", "10.0.0.3"]))
    done = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    path.write_text(lb.haproxy_cfg(["10.0.0.2"]).replace("mode tcp", "mode bogus"))
    bad = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    assert bad.returncode != 0  # the check can fail: the good result above means something


def test_api_sans_cover_endpoint_masters_loopback_and_vip() -> None:
    cluster = _ctx("APIServerVIP=10.0.0.100").cluster
    sans = lb.api_sans(cluster, API_ENDPOINT_NAME)
    assert sans[:3] == [API_ENDPOINT_NAME, "127.0.0.1", "localhost"]
    assert {"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.100"} <= set(sans)


def test_reset_scripts_never_match_themselves_with_pgrep() -> None:
    """`pgrep -f PATTERN` inside `sh -c SCRIPT` also sees the shell running SCRIPT: a pattern that
    matches the script's own text makes the reset kill itself (exit 137)."""
    import re

    from sealer.runtime import kubernetes

    for script in (reset_script(), kubernetes.reset_script()):
        patterns = re.findall(r"pgrep -f '([^']+)'", script)
        assert patterns
        for pattern in patterns:
            assert re.search(pattern, script) is None, pattern


def test_native_balancer_turns_on_k0s_node_local_load_balancing() -> None:
    ctx = _ctx("APIServerLB=native")
    doc = cluster_config(CREATED, ctx, ctx.cluster.masters[0])
    assert doc["spec"]["network"]["nodeLocalLoadBalancing"] == {"enabled": True, "type": "EnvoyProxy"}
    assert doc["spec"]["network"]["podCIDR"] == "10.244.0.0/16"
    assert (
        "nodeLocalLoadBalancing"
        not in cluster_config(CREATED, _ctx(), ctx.cluster.masters[0])["spec"]["network"]
    )


def test_keepalived_conf_unicast_peers_priority_and_router_id() -> None:
    masters = ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    conf = lb.keepalived_conf("prod", "10.0.0.3", masters, "10.0.0.100", "eth1")
    assert "unicast_src_ip 10.0.0.3" in conf
    peers = conf.split("unicast_peer {")[1].split("}")[0].split()
    assert peers == ["10.0.0.2", "10.0.0.4"]
    assert "priority 149" in conf  # master0 150, then one less per master
    assert "10.0.0.100/32 dev eth1" in conf and "interface eth1" in conf
    assert f"virtual_router_id {lb.router_id('prod')}" in conf
    assert all(1 <= lb.router_id(n) <= 255 for n in ("a", "prod", "x" * 100))
    assert lb.router_id("prod") == lb.router_id("prod")
    script = lb.CHECK_SCRIPT
    assert subprocess.run(["bash", "-n"], input=script, text=True, check=False).returncode == 0


@pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed (scripts/setup)")
def test_keepalived_parses_the_config(tmp_path: Path) -> None:
    path = tmp_path / "keepalived.conf"
    path.write_text(lb.keepalived_conf("prod", "10.0.0.3", ["10.0.0.2", "10.0.0.3"], "10.0.0.100", "eth1"))
    done = subprocess.run(["keepalived", "-t", "-f", str(path)], capture_output=True, text=True, check=False)
    # -t exits 0 even for some mistakes: its complaints about keywords are what would show them
    assert "Unknown keyword" not in done.stdout + done.stderr, done.stdout + done.stderr
    path.write_text(
        lb.keepalived_conf("prod", "10.0.0.3", ["10.0.0.3"], "10.0.0.100", "eth1") + "bogus_kw {\n}\n"
    )
    bad = subprocess.run(["keepalived", "-t", "-f", str(path)], capture_output=True, text=True, check=False)
    assert "Unknown keyword" in bad.stdout + bad.stderr  # so the check above can fail
