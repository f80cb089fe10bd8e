"""The node-local API load balancer: haproxy as a systemd unit on every worker, listening on
127.0.0.1:6443 in front of every master's API server, so a worker keeps its API when a master dies.

Chosen per cluster with the Clusterfile env key `APIServerLB`: `haproxy` (default when the cluster
has more than one master), `none`, or `native` (the runtime's own: k0s node-local load balancing
with Envoy, k3s agents' built-in balancer; kubeadm has none). The ClusterImage carries the haproxy
binary in bin/ and the shared libraries it needs beyond glibc in lib/haproxy/ (build.sh --lb).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sealer.errors import ClusterfileError, Problem, RuntimeErrorSealer
from sealer.infra.shell import quote_path
from sealer.model.cluster import Cluster, Host
from sealer.runtime.base import RuntimeContext
from sealer.runtime.containerd import put_if_changed

ENV_LB = "APIServerLB"
ENV_VIP = "APIServerVIP"
LB_KINDS = ("haproxy", "none", "native")
LISTEN_HOST = "127.0.0.1"
LISTEN_PORT = 6443
LB_DIR = "/etc/sealer/apiserver-lb"
LB_CONFIG = f"{LB_DIR}/haproxy.cfg"
LB_HOME = "/usr/local/lib/sealer/haproxy"
LB_UNIT = "sealer-apiserver-lb.service"
UNIT_DIR = "/etc/systemd/system"


def lb_kind(cluster: Cluster) -> str:
    """The balancer this cluster asks for: `APIServerLB` from the cluster env, else haproxy when
    there is more than one master (one master has nothing to balance)."""
    raw = cluster.env.get(ENV_LB)
    if raw is None or raw.strip() == "":
        return "haproxy" if len(cluster.masters) > 1 else "none"
    kind = raw.strip().lower()
    if kind not in LB_KINDS:
        raise ClusterfileError(
            [
                Problem(
                    f"spec.env {ENV_LB}={raw!r} is not a load balancer sealer knows",
                    path=f"spec.env.{ENV_LB}",
                    hint=f"use one of: {', '.join(LB_KINDS)}",
                )
            ]
        )
    return kind


def vip(cluster: Cluster) -> str | None:
    """`APIServerVIP`: an address clients outside the cluster use; sealer puts it in the API
    certificates (the VIP itself is the operator's keepalived/kube-vip; sealer does not run one)."""
    value = cluster.env.get(ENV_VIP, "").strip()
    return value or None


def local_endpoint() -> str:
    return f"https://{LISTEN_HOST}:{LISTEN_PORT}"


def haproxy_cfg(backends: Sequence[str], api_port: int = 6443) -> str:
    """haproxy in TCP mode (TLS passes through: clients still verify the API server's certificate).
    Health checks are TCP connects every 2 s; `shutdown-sessions` cuts watches held on a dead
    master at once so clients reconnect to a live one instead of waiting for a TCP timeout."""
    servers = "\n".join(f"  server master{i} {ip}:{api_port} check" for i, ip in enumerate(backends))
    return f"""# written by sealer: the node-local API load balancer
global
  maxconn 4000
  log stdout format raw local0 warning

defaults
  mode tcp
  log global
  option dontlognull
  timeout connect 3s
  timeout client 1h
  timeout server 1h
  timeout check 2s
  retries 2
  option redispatch

frontend apiserver
  bind {LISTEN_HOST}:{LISTEN_PORT}
  default_backend apiservers

backend apiservers
  balance roundrobin
  default-server inter 2s fall 2 rise 2 on-marked-down shutdown-sessions
{servers}
"""


def unit_file() -> str:
    return f"""[Unit]
Description=sealer node-local API load balancer (haproxy)
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
Environment=LD_LIBRARY_PATH={LB_HOME}/lib
ExecStartPre={LB_HOME}/haproxy -c -q -f {LB_CONFIG}
ExecStart={LB_HOME}/haproxy -Ws -f {LB_CONFIG}
ExecReload=/bin/kill -USR2 $MAINPID
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""


def install_script(rootfs: str) -> str:
    """Put haproxy (the image's bin/haproxy with its lib/haproxy/, else the host's own) under LB_HOME."""
    root = quote_path(rootfs)
    return f"""set -e
mkdir -p {LB_HOME}/lib
if [ -x {root}/bin/haproxy ]; then
  install -m 0755 {root}/bin/haproxy {LB_HOME}/haproxy.new
  if [ -d {root}/lib/haproxy ]; then cp -a {root}/lib/haproxy/. {LB_HOME}/lib/; fi
elif command -v haproxy >/dev/null 2>&1; then
  install -m 0755 "$(command -v haproxy)" {LB_HOME}/haproxy.new
else
  echo "no haproxy: neither the ClusterImage's bin/haproxy nor one on the host" >&2; exit 3
fi
mv -f {LB_HOME}/haproxy.new {LB_HOME}/haproxy
LD_LIBRARY_PATH={LB_HOME}/lib {LB_HOME}/haproxy -v | head -n1
"""


async def install_lb(ctx: RuntimeContext, host: Host, masters: Sequence[Host]) -> None:
    """Install or update the balancer on one host; restarts it only when its config changed."""
    ctx.say(host.ip, "node-local API load balancer (haproxy)")
    result = await ctx.fleet.run(ctx.target(host), install_script(ctx.rootfs), sudo=True, timeout=120)
    if result.exit_code == 3:
        raise RuntimeErrorSealer(
            f"{host.ip}: {ENV_LB}=haproxy but the ClusterImage has no bin/haproxy and the host has none",
            "build the image with haproxy in bin/ (images/*/build.sh --lb), install haproxy on the hosts, "
            f"or set {ENV_LB}=none",
        )
    result.check()
    changed = await put_if_changed(ctx, host, LB_CONFIG, haproxy_cfg([m.ip for m in masters]))
    changed = await put_if_changed(ctx, host, f"{UNIT_DIR}/{LB_UNIT}", unit_file()) or changed
    cmd = (
        f"systemctl daemon-reload && systemctl enable {LB_UNIT} >/dev/null 2>&1; "
        f"if [ {int(changed)} = 1 ]; then systemctl restart {LB_UNIT}; "
        f"else systemctl is-active --quiet {LB_UNIT} || systemctl start {LB_UNIT}; fi"
    )
    started = await ctx.fleet.run(ctx.target(host), cmd, sudo=True, timeout=60)
    if not started.ok:
        log = await ctx.fleet.run(
            ctx.target(host), f"journalctl -u {LB_UNIT} -n 10 --no-pager -o cat 2>&1 | tail -n 5", sudo=True
        )
        raise RuntimeErrorSealer(
            f"{host.ip}: the API load balancer did not start: {log.stdout.strip() or started.stderr.strip()}",
            f"see `journalctl -u {LB_UNIT}` on {host.ip}; is port {LISTEN_PORT} on 127.0.0.1 free there?",
        )


def reset_script() -> str:
    return f"""systemctl disable --now {LB_UNIT} >/dev/null 2>&1
rm -f {UNIT_DIR}/{LB_UNIT}
rm -rf {LB_DIR} {LB_HOME}
true
"""


def api_sans(cluster: Cluster, endpoint_name: str, extra: Mapping[str, None] | None = None) -> list[str]:
    """Names and addresses every API server certificate covers: the endpoint name, every master,
    the loopback the node-local balancer uses, and the VIP when one is given."""
    names = [endpoint_name, "127.0.0.1", "localhost", *(m.ip for m in cluster.masters)]
    if (v := vip(cluster)) is not None:
        names.append(v)
    names += list(extra or {})
    return list(dict.fromkeys(names))
