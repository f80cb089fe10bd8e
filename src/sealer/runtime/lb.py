"""The node-local API load balancer: haproxy as a systemd unit on every worker, listening on
127.0.0.1:6443 in front of every master's API server, so a worker keeps its API when a master dies.

Chosen per cluster with the Clusterfile env key `APIServerLB`: `haproxy` (the default, whatever
the number of masters), `none`, or `native` (the runtime's own: k0s node-local load balancing
with Envoy, k3s agents' built-in balancer; kubeadm has none). The default holds with one master too,
as Go sealer's lvscare does: a worker joined then already reaches the API through 127.0.0.1:6443, so
when one master becomes three only the balancers' backends change (`refresh_balancers`) and no
worker has to be re-pointed. The ClusterImage carries the haproxy binary in bin/ and the shared
libraries it needs beyond glibc in lib/haproxy/ (build.sh bundles them unless --no-lb).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence

from sealer.errors import ClusterfileError, Problem, RuntimeErrorSealer, SealerError
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


def lb_explicit(cluster: Cluster) -> bool:
    """Whether the Clusterfile names the balancer (else the default applies)."""
    raw = cluster.env.get(ENV_LB)
    return raw is not None and raw.strip() != ""


def lb_kind(cluster: Cluster) -> str:
    """The balancer this cluster asks for: `APIServerLB` from the cluster env, else haproxy, also
    with one master (it balances nothing yet, but it is what lets that master become three
    without touching any worker; see the module docstring)."""
    raw = cluster.env.get(ENV_LB)
    if raw is None or raw.strip() == "":
        return "haproxy"
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


def install_script(rootfs: str, name: str = "haproxy", home: str = LB_HOME) -> str:
    """Put a bundled tool (the image's bin/<name> with its lib/<name>/, else the host's own) under
    home, with its libraries in home/lib."""
    root = quote_path(rootfs)
    return f"""set -e
mkdir -p {home}/lib
if [ -x {root}/bin/{name} ]; then
  install -m 0755 {root}/bin/{name} {home}/{name}.new
  if [ -d {root}/lib/{name} ]; then cp -a {root}/lib/{name}/. {home}/lib/; fi
elif command -v {name} >/dev/null 2>&1; then
  install -m 0755 "$(command -v {name})" {home}/{name}.new
else
  echo "no {name}: neither the ClusterImage's bin/{name} nor one on the host" >&2; exit 3
fi
mv -f {home}/{name}.new {home}/{name}
LD_LIBRARY_PATH={home}/lib {home}/{name} -v 2>&1 | head -n1
"""


async def install_lb(ctx: RuntimeContext, host: Host, masters: Sequence[Host]) -> None:
    """Install or update the balancer on one host; restarts it only when its config changed."""
    ctx.say(host.ip, "node-local API load balancer (haproxy)")
    result = await ctx.fleet.run(ctx.target(host), install_script(ctx.rootfs), sudo=True, timeout=120)
    if result.exit_code == 3:
        asked = f"{ENV_LB}=haproxy" if lb_explicit(ctx.cluster) else f"{ENV_LB} is haproxy by default"
        raise RuntimeErrorSealer(
            f"{host.ip}: {asked} but the ClusterImage has no bin/haproxy and the host has none",
            "build the image with haproxy in bin/ (the images/*/build.sh scripts do unless --no-lb), install "
            f"haproxy on the hosts, or set {ENV_LB}=none in the Clusterfile's spec.env (workers then reach "
            "master0 only, also after more masters join)",
        )
    result.check()
    changed = await put_if_changed(ctx, host, LB_CONFIG, haproxy_cfg([m.ip for m in masters]))
    changed = await put_if_changed(ctx, host, f"{UNIT_DIR}/{LB_UNIT}", unit_file()) or changed
    # A restart, not a reload: haproxy 2.6's master process (-Ws) was seen to die of SIGSEGV on
    # `systemctl reload` on the test bed, which systemd then restarts anyway after RestartSec.
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


async def refresh_balancers(ctx: RuntimeContext) -> None:
    """After masters joined or left: every worker that already runs the balancer gets the current
    master list (hosts without one, e.g. joining later in this run, are left to their own join).
    Best effort: a balancer not updated still health-checks the masters it knows, so a failure is
    reported, not fatal."""
    if lb_kind(ctx.cluster) != "haproxy":
        return

    async def one(host: Host) -> None:
        try:
            has = await ctx.fleet.run(ctx.target(host), f"test -f {UNIT_DIR}/{LB_UNIT}", sudo=True)
            if has.ok:
                await install_lb(ctx, host, ctx.cluster.masters)
        except (SealerError, KeyError) as err:
            why = err.message if isinstance(err, SealerError) else "no connection to it"
            ctx.say(host.ip, f"API load balancer not updated ({why}); it keeps the masters it knew")

    await asyncio.gather(*(one(w) for w in ctx.cluster.workers))


def reset_script() -> str:
    return f"""systemctl disable --now {LB_UNIT} {VIP_UNIT} >/dev/null 2>&1
rm -f {UNIT_DIR}/{LB_UNIT} {UNIT_DIR}/{VIP_UNIT}
rm -rf {LB_DIR} {LB_HOME} {VIP_DIR} {VIP_HOME}
true
"""


# the API VIP (keepalived on the masters) ---------------------------------------------------------
VIP_DIR = "/etc/sealer/apiserver-vip"
VIP_CONFIG = f"{VIP_DIR}/keepalived.conf"
VIP_CHECK = f"{VIP_DIR}/check-apiserver.sh"
VIP_HOME = "/usr/local/lib/sealer/keepalived"
VIP_UNIT = "sealer-apiserver-vip.service"


def router_id(cluster_name: str) -> int:
    """A VRRP router id (1-255) per cluster, so two clusters on one LAN do not fight over a VIP."""
    return 1 + int(hashlib.sha256(cluster_name.encode()).hexdigest(), 16) % 254


def keepalived_conf(
    cluster_name: str, host_ip: str, masters: Sequence[str], address: str, interface: str
) -> str:
    """VRRP over unicast between the masters (no multicast needed); the master with a live local
    API server and the highest priority (master0 first) holds the VIP."""
    priority = 150 - masters.index(host_ip) if host_ip in masters else 100
    peers = "\n".join(f"    {ip}" for ip in masters if ip != host_ip)
    return f"""# written by sealer: the API VIP {address}
global_defs {{
  router_id sealer_{cluster_name}
  script_user root
  enable_script_security
}}

vrrp_script apiserver {{
  script "{VIP_CHECK}"
  interval 2
  timeout 3
  fall 2
  rise 2
}}

vrrp_instance sealer_apiserver {{
  state BACKUP
  interface {interface}
  virtual_router_id {router_id(cluster_name)}
  priority {priority}
  advert_int 1
  unicast_src_ip {host_ip}
  unicast_peer {{
{peers}
  }}
  virtual_ipaddress {{
    {address}/32 dev {interface}
  }}
  track_script {{
    apiserver
  }}
}}
"""


CHECK_SCRIPT = f"""#!/bin/bash
# the local API server accepts connections
exec timeout 2 bash -c '</dev/tcp/127.0.0.1/{LISTEN_PORT}'
"""


def vip_unit_file() -> str:
    return f"""[Unit]
Description=sealer API VIP (keepalived)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
Environment=LD_LIBRARY_PATH={VIP_HOME}/lib
ExecStart={VIP_HOME}/keepalived --dont-fork --log-console --vrrp -f {VIP_CONFIG} \\
 -p /run/sealer-keepalived.pid -r /run/sealer-keepalived-vrrp.pid
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""


async def install_vip(ctx: RuntimeContext, host: Host) -> None:
    """keepalived on a master holding `APIServerVIP` while its API server answers (no-op without a VIP)."""
    address = vip(ctx.cluster)
    if address is None:
        return
    ctx.say(host.ip, f"API VIP {address} (keepalived)")
    target = ctx.target(host)
    result = await ctx.fleet.run(target, install_script(ctx.rootfs, "keepalived", VIP_HOME), sudo=True)
    if result.exit_code == 3:
        raise RuntimeErrorSealer(
            f"{host.ip}: {ENV_VIP} is set but the ClusterImage has no bin/keepalived and the host has none",
            "build the image with --vip (bundles keepalived), install keepalived on the masters, "
            f"or drop {ENV_VIP}",
        )
    result.check()
    find = f"ip -o -4 addr show | awk -v ip={host.ip} '{{split($4, a, \"/\"); if (a[1] == ip) print $2}}'"
    interface = (await ctx.fleet.run(target, find, sudo=True)).stdout.strip().split("\n")[0]
    if not interface:
        raise RuntimeErrorSealer(
            f"{host.ip}: no network interface holds {host.ip}, so the VIP has nowhere to go",
            "is the host's address in the Clusterfile the one it has?",
        )
    masters = [m.ip for m in ctx.cluster.masters]
    conf = keepalived_conf(ctx.cluster.name, host.ip, masters, address, interface)
    changed = await put_if_changed(ctx, host, VIP_CONFIG, conf, "0600")
    changed = await put_if_changed(ctx, host, VIP_CHECK, CHECK_SCRIPT, "0755") or changed
    changed = await put_if_changed(ctx, host, f"{UNIT_DIR}/{VIP_UNIT}", vip_unit_file()) or changed
    cmd = (
        f"systemctl daemon-reload && systemctl enable {VIP_UNIT} >/dev/null 2>&1; "
        f"if [ {int(changed)} = 1 ]; then systemctl restart {VIP_UNIT}; "
        f"else systemctl is-active --quiet {VIP_UNIT} || systemctl start {VIP_UNIT}; fi"
    )
    (await ctx.fleet.run(target, cmd, sudo=True, timeout=60)).check()


def api_sans(cluster: Cluster, endpoint_name: str, extra: Mapping[str, None] | None = None) -> list[str]:
    """Names and addresses every API server certificate covers: the endpoint name, every master,
    the loopback the node-local balancer uses, and the VIP when one is given."""
    names = [endpoint_name, "127.0.0.1", "localhost", *(m.ip for m in cluster.masters)]
    if (v := vip(cluster)) is not None:
        names.append(v)
    names += list(extra or {})
    return list(dict.fromkeys(names))
