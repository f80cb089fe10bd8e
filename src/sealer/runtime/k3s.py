"""The k3s runtime: master0 is a server with --cluster-init (embedded etcd, so one master can later
become three), further servers join it with the token, agents join with K3S_URL/K3S_TOKEN from a
0600 environment file; systemd units, the private-registry mirror in registries.yaml, and reset.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shlex
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from sealer.errors import RuntimeErrorSealer
from sealer.infra.shell import quote_path
from sealer.model.cluster import Host
from sealer.runtime import lb
from sealer.runtime.base import API_ENDPOINT_NAME, RuntimeContext
from sealer.runtime.containerd import put_if_changed

BIN_DIR = "/usr/local/bin"
ETC = "/etc/rancher/k3s"
CONFIG = f"{ETC}/config.yaml"
REGISTRIES = f"{ETC}/registries.yaml"
REGISTRY_CA = f"{ETC}/sealer-registry-ca.crt"
TOKEN_FILE = f"{ETC}/sealer-token"
KUBECONFIG = f"{ETC}/k3s.yaml"
NODE_TOKEN = "/var/lib/rancher/k3s/server/node-token"
SERVER_UNIT = "k3s.service"
AGENT_UNIT = "k3s-agent.service"
UNIT_DIR = "/etc/systemd/system"
INSTALLED_LIST = "/etc/sealer/k3s-installed"
SNAPSHOT_DIR = "/var/lib/rancher/k3s/server/db/snapshots"
API_PORT = 6443
START_TIMEOUT = 300
# Tools some ClusterImages ship beside k3s (e.g. a containerd for k3s builds without a bundled
# one); installed next to k3s, where k3s looks for them, and removed on reset.
HELPERS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr")
# k3s is a multi-call binary: these names run the bundled tool.
MULTICALL = ("kubectl", "crictl", "ctr")


def unit_file(kind: str) -> str:
    """The systemd unit k3s's install script writes, for `server` or `agent`."""
    name = SERVER_UNIT if kind == "server" else AGENT_UNIT
    return f"""[Unit]
Description=Lightweight Kubernetes ({kind}, installed by sealer)
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-{UNIT_DIR}/{name}.env
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec={START_TIMEOUT}
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart={BIN_DIR}/k3s {kind}
"""


def taint_flags(host: Host) -> list[str]:
    return [str(t) for t in host.taints if not t.remove and t.effect]


def server_config(ctx: RuntimeContext, host: Host, *, init: bool) -> dict[str, object]:
    """config.yaml of a server. Labels are set through the API by the engine (kubelets may not
    label themselves with node-role.kubernetes.io/*); taints go here so nothing schedules first."""
    # the endpoint name and every master first (as before HA), then what lb adds: 127.0.0.1 for
    # the agents' node-local balancer and any VIP
    masters = [API_ENDPOINT_NAME, *(m.ip for m in ctx.cluster.masters)]
    sans = list(dict.fromkeys([*masters, *lb.api_sans(ctx.cluster, API_ENDPOINT_NAME)]))
    config: dict[str, object] = {
        "node-name": ctx.node_names[host.ip],
        "node-ip": host.ip,
        "advertise-address": host.ip,
        "tls-san": sans,
        "write-kubeconfig-mode": "0600",
        "token-file": TOKEN_FILE,
    }
    if init:
        config["cluster-init"] = True
    else:
        config["server"] = f"https://{ctx.master0.ip}:{API_PORT}"
    if taint_flags(host):
        config["node-taint"] = taint_flags(host)
    return config


def agent_server_url(ctx: RuntimeContext) -> str:
    """Where an agent joins: the node-local haproxy in front of every server when the cluster asks
    for it (`APIServerLB=haproxy`, the default), else master0 (k3s agents then
    learn the other servers themselves: their built-in balancer, `APIServerLB=native`)."""
    if lb.lb_kind(ctx.cluster) == "haproxy":
        return lb.local_endpoint()
    return f"https://{ctx.master0.ip}:{API_PORT}"


def agent_config(ctx: RuntimeContext, host: Host) -> dict[str, object]:
    config: dict[str, object] = {"node-name": ctx.node_names[host.ip], "node-ip": host.ip}
    if taint_flags(host):
        config["node-taint"] = taint_flags(host)
    return config


def registries_yaml(ctx: RuntimeContext) -> str | None:
    """Every source registry the image's containers come from, mirrored through the private one."""
    reg = ctx.registry
    if reg is None:
        return None
    endpoint = [reg.url]
    mirrors = {
        name: {"endpoint": endpoint} for name in dict.fromkeys([reg.address, "docker.io", *reg.mirrored])
    }
    config: dict[str, object] = {"tls": {"ca_file": REGISTRY_CA}}
    if reg.username:
        config["auth"] = {"username": reg.username, "password": reg.password or ""}
    return yaml.safe_dump({"mirrors": mirrors, "configs": {reg.address: config}}, sort_keys=False)


class K3sRuntime:
    """ClusterRuntime for k3s (see the module docstring)."""

    name = "k3s"

    def __init__(self) -> None:
        self._version: str | None = None

    # helpers ------------------------------------------------------------------------------------
    async def _sh(self, ctx: RuntimeContext, host: Host, cmd: str, timeout: float | None = 120) -> str:
        result = await ctx.fleet.run(ctx.target(host), cmd, sudo=True, timeout=timeout)
        result.check()
        return result.stdout

    async def _install_binaries(self, ctx: RuntimeContext, host: Host) -> None:
        root = quote_path(ctx.rootfs)
        helpers = " ".join(HELPERS)
        script = f"""set -e
if [ ! -x {root}/bin/k3s ]; then echo "no k3s binary at {ctx.rootfs}/bin/k3s" >&2; exit 3; fi
mkdir -p /etc/sealer
list={INSTALLED_LIST}; : > "$list.new"
install -m 0755 {root}/bin/k3s {BIN_DIR}/k3s; echo {BIN_DIR}/k3s >> "$list.new"
for b in {helpers}; do
  if [ -x {root}/bin/$b ]; then
    install -m 0755 {root}/bin/$b {BIN_DIR}/$b; echo {BIN_DIR}/$b >> "$list.new"
  fi
done
# The image's own k3s settings (etc/k3s/config.yaml.d): k3s merges them after config.yaml.
if [ -d {root}/etc/k3s/config.yaml.d ]; then
  mkdir -p {ETC}/config.yaml.d
  for f in {root}/etc/k3s/config.yaml.d/*.yaml; do
    if [ -f "$f" ]; then install -m 0600 "$f" {ETC}/config.yaml.d/; fi
  done
fi
for t in {" ".join(MULTICALL)}; do
  if [ ! -e {root}/bin/$t ]; then ln -sfn k3s {BIN_DIR}/$t; echo {BIN_DIR}/$t >> "$list.new"; fi
done
mv -f "$list.new" "$list"
{BIN_DIR}/k3s --version | head -n1
"""
        result = await ctx.fleet.run(ctx.target(host), script, sudo=True, timeout=120)
        if result.exit_code == 3:
            raise RuntimeErrorSealer(
                f"{host.ip}: the ClusterImage has no bin/k3s",
                "is this a k3s ClusterImage? check `sealer inspect`",
            )
        result.check()
        # "k3s version v1.30.6+k3s1 (1829eaae)"
        words = result.stdout.split()
        if len(words) >= 3:
            self._version = words[2]

    async def _registry_files(self, ctx: RuntimeContext, host: Host) -> bool:
        text = registries_yaml(ctx)
        if text is None or ctx.registry is None:
            return False
        changed = await put_if_changed(ctx, host, REGISTRY_CA, ctx.registry.ca_pem)
        return await put_if_changed(ctx, host, REGISTRIES, text, "0600") or changed

    async def _start(self, ctx: RuntimeContext, host: Host, unit: str, restart: bool) -> None:
        """Enable the unit and (re)start it when its inputs changed or it is not running; systemd
        returns once k3s reports READY (Type=notify)."""
        action = "restart" if restart else "start"
        cmd = (
            f"systemctl daemon-reload && systemctl enable {unit} >/dev/null 2>&1; "
            f"systemctl is-active --quiet {unit} && [ {int(restart)} = 0 ] || systemctl {action} {unit}"
        )
        result = await ctx.fleet.run(ctx.target(host), cmd, sudo=True, timeout=START_TIMEOUT + 30)
        if not result.ok:
            log = await ctx.fleet.run(
                ctx.target(host), f"journalctl -u {unit} -n 30 --no-pager -o cat 2>&1 | tail -n 30", sudo=True
            )
            lines = [ln for ln in log.stdout.splitlines() if ln.strip()]
            fatal = [ln for ln in lines if "level=fatal" in ln or "level=error" in ln]
            detail = (fatal or lines or ["no journal output"])[-1]
            raise RuntimeErrorSealer(
                f"{host.ip}: {unit} did not start: {detail}",
                f"see `journalctl -u {unit}` on {host.ip}; fix the cause and run the same command again",
            )

    async def _node_token(self, ctx: RuntimeContext) -> str:
        """The join token from master0 (k3s's node-token: K10<CA hash>::server:<secret>, so joining
        hosts verify the cluster CA). Fetched as a file, never printed into a log."""
        cached = ctx.shared.get("k3s-node-token")
        if cached:
            return cached
        # k3s's node-token is a symlink to server/token: fetch the file it points to.
        real = (await self._sh(ctx, ctx.master0, f"readlink -f {NODE_TOKEN}")).strip() or NODE_TOKEN
        with tempfile.TemporaryDirectory(prefix="sealer-k3s-") as tmp:
            dst = Path(tmp) / "node-token"
            await ctx.fleet.get(ctx.target(ctx.master0), real, dst, sudo=True)
            token = dst.read_text().strip()
        if not token:
            raise RuntimeErrorSealer(
                f"{ctx.master0.ip}: {NODE_TOKEN} is empty", "is the k3s server on master0 healthy?"
            )
        ctx.shared["k3s-node-token"] = token
        return token

    # ClusterRuntime ---------------------------------------------------------------------------
    async def install(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        if masters:
            await self._server(ctx, masters[0], init=True)
        await self.join(ctx, masters[1:], workers)

    async def _server(self, ctx: RuntimeContext, host: Host, *, init: bool) -> None:
        ctx.say(host.ip, "installing k3s server" + (" (cluster-init)" if init else ""))
        await self._install_binaries(ctx, host)
        changed = await self._registry_files(ctx, host)
        if init:
            # Keep an existing token: k3s refuses to start on bootstrap data encrypted with another.
            script = (
                f"mkdir -p {ETC} && umask 077 && if [ ! -s {TOKEN_FILE} ]; then cat > {TOKEN_FILE}; "
                f"echo changed; else cat > /dev/null; fi"
            )
            result = await ctx.fleet.run(
                ctx.target(host), script, sudo=True, input=secrets.token_hex(24) + "\n"
            )
            result.check()
            changed = "changed" in result.stdout or changed
        else:
            token = await self._node_token(ctx)
            changed = await put_if_changed(ctx, host, TOKEN_FILE, token + "\n", "0600") or changed
        config = yaml.safe_dump(server_config(ctx, host, init=init), sort_keys=False)
        changed = await put_if_changed(ctx, host, CONFIG, config, "0600") or changed
        changed = (
            await put_if_changed(ctx, host, f"{UNIT_DIR}/{SERVER_UNIT}", unit_file("server")) or changed
        )
        await self._start(ctx, host, SERVER_UNIT, changed)
        await lb.install_vip(ctx, host)

    async def _agent(self, ctx: RuntimeContext, host: Host) -> None:
        ctx.say(host.ip, "installing k3s agent")
        token = await self._node_token(ctx)
        await self._install_binaries(ctx, host)
        changed = await self._registry_files(ctx, host)
        if lb.lb_kind(ctx.cluster) == "haproxy":
            # before the agent starts: it joins through the balancer, so losing master0 later
            # loses no worker
            await lb.install_lb(ctx, host, ctx.cluster.masters)
        env = f"K3S_URL={agent_server_url(ctx)}\nK3S_TOKEN={token}\n"
        changed = (
            await put_if_changed(ctx, host, f"{UNIT_DIR}/{AGENT_UNIT}.env", env, "0600") or changed
        )
        config = yaml.safe_dump(agent_config(ctx, host), sort_keys=False)
        changed = await put_if_changed(ctx, host, CONFIG, config, "0600") or changed
        changed = (
            await put_if_changed(ctx, host, f"{UNIT_DIR}/{AGENT_UNIT}", unit_file("agent")) or changed
        )
        await self._start(ctx, host, AGENT_UNIT, changed)

    async def join(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        for master in masters:  # one at a time, so etcd keeps quorum while members are added
            await self._server(ctx, master, init=False)
        if masters:
            await lb.refresh_balancers(ctx)
        if workers:
            await self._node_token(ctx)  # fetch once, before the parallel joins
            await asyncio.gather(*(self._agent(ctx, w) for w in workers))

    async def remove(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        """Reset hosts leaving the cluster. The engine has drained them and deleted their Node
        first: for a k3s server that is what removes its etcd member (k3s's etcd controller acts on
        the Node's deletion while the server still runs, so quorum is kept); servers go one at a time."""
        for master in masters:
            await self.reset(ctx, [master])
        if masters:
            await lb.refresh_balancers(ctx)
        if workers:
            await self.reset(ctx, workers)

    async def reset(self, ctx: RuntimeContext, hosts: list[Host]) -> None:
        async def one(host: Host) -> None:
            (await ctx.fleet.run(ctx.target(host), reset_script(), sudo=True, timeout=180)).check()
            ctx.say(host.ip, "k3s removed")

        await asyncio.gather(*(one(h) for h in hosts))

    async def upgrade(self, ctx: RuntimeContext, image: str) -> None:
        """k3s's manual upgrade order: servers one at a time, then agents (binary replace + restart)."""
        for host in [*ctx.cluster.masters, *ctx.cluster.workers]:
            await self.upgrade_host(ctx, host)

    async def upgrade_host(self, ctx: RuntimeContext, host: Host) -> None:
        """Replace the k3s binary with the (already distributed) new image's and restart the unit;
        systemd returns once k3s is READY again. A downgrade is refused before anything changes."""
        root = quote_path(ctx.rootfs)
        probe = await self._sh(
            ctx, host, f"{root}/bin/k3s --version | head -n1; {BIN_DIR}/k3s --version 2>/dev/null | head -n1"
        )
        lines = probe.splitlines()
        new = lines[0].split()[2] if lines and len(lines[0].split()) >= 3 else ""
        old = lines[1].split()[2] if len(lines) > 1 and len(lines[1].split()) >= 3 else ""
        if new and old and version_key(new) < version_key(old):
            raise RuntimeErrorSealer(
                f"{host.ip}: the image carries k3s {new}, older than the installed {old}; "
                "k3s does not support downgrades",
                "use an image with the installed k3s version or newer",
            )
        ctx.say(host.ip, f"upgrading k3s {old or '?'} -> {new or '?'}")
        await self._install_binaries(ctx, host)
        unit = SERVER_UNIT if host.is_master else AGENT_UNIT
        # Always restart: an earlier attempt may have replaced the binary and been killed before the
        # restart, so "installed == new" does not mean the running k3s is the new one.
        await self._start(ctx, host, unit, restart=True)

    async def etcd_snapshot(self, ctx: RuntimeContext) -> str:
        """`k3s etcd-snapshot save` on master0 (the running server takes it), bundled with the
        cluster's server token: k3s encrypts the bootstrap data (CAs and their keys) in the snapshot
        with it, so a restore onto re-created nodes needs it. Returns the bundle's path there (0600:
        the token and every Secret)."""
        save = f"{BIN_DIR}/k3s etcd-snapshot save --name sealer-backup --dir {SNAPSHOT_DIR} 2>&1"
        out = await self._sh(ctx, ctx.master0, save)
        found = re.search(r"Snapshot (\S+) saved", out)
        if found is None:
            raise RuntimeErrorSealer(
                f"{ctx.master0.ip}: k3s etcd-snapshot save did not report a snapshot: {out.strip()[-300:]}",
                "is the cluster's datastore embedded etcd (k3s --cluster-init)? see the output above",
            )
        await self._sh(ctx, ctx.master0, bundle_script(f"{SNAPSHOT_DIR}/{found[1]}"))
        return BACKUP_BUNDLE

    async def kubeconfig(self, ctx: RuntimeContext) -> str:
        with tempfile.TemporaryDirectory(prefix="sealer-k3s-") as tmp:
            dst = Path(tmp) / "k3s.yaml"
            await ctx.fleet.get(ctx.target(ctx.master0), KUBECONFIG, dst, sudo=True)
            text = dst.read_text()
        return rewrite_server(text, f"https://{ctx.master0.ip}:{API_PORT}")

    def versions(self) -> Mapping[str, str]:
        return {"k3s": self._version} if self._version else {}


BACKUP_DIR = "/var/lib/sealer/backup"
BACKUP_BUNDLE = f"{BACKUP_DIR}/k3s-backup.tar.gz"
RESTORE_DIR = "/var/lib/sealer/restore-work/k3s"  # beside, not in, where snapshots are uploaded


def bundle_script(snapshot: str) -> str:
    """BACKUP_BUNDLE = the k3s snapshot (`etcd-snapshot`) + master0's server token (`token`), 0600."""
    return f"""set -e
umask 077
mkdir -p {BACKUP_DIR} && chmod 0700 {BACKUP_DIR}
d=$(mktemp -d {BACKUP_DIR}/k3s.XXXXXX)
trap 'rm -rf "$d"' EXIT
cp {quote_path(snapshot)} "$d/etcd-snapshot"
cp "$(readlink -f {NODE_TOKEN})" "$d/token"
tar -czf "$d/bundle.tar.gz" -C "$d" etcd-snapshot token
chmod 0600 "$d/bundle.tar.gz" && mv -f "$d/bundle.tar.gz" {BACKUP_BUNDLE}
"""


def unpack_script(bundle: str) -> str:
    """On master0 before anything stops: the snapshot out of a bundle `sealer etcd backup` wrote
    (or a bare k3s snapshot, restored with the cluster's current token); prints its path and
    `same-token` or `other-token` (the bundle's token against master0's current one)."""
    src = quote_path(bundle)
    return f"""set -e
umask 077
rm -rf {RESTORE_DIR} && mkdir -p {RESTORE_DIR} && chmod 0700 {RESTORE_DIR}
if tar -tzf {src} >/dev/null 2>&1; then
  tar -xzf {src} -C {RESTORE_DIR} etcd-snapshot token 2>/dev/null \
    || {{ echo "no etcd-snapshot and token inside" >&2; exit 4; }}
  [ -s {RESTORE_DIR}/token ] || {{ echo "its token is empty" >&2; exit 4; }}
  snap={RESTORE_DIR}/etcd-snapshot
  # k3s keys the bootstrap data with the token's password (what follows "::server:")
  pw() {{ sed -n 's/^K10[0-9a-f]*::[^:]*://p; /^K10/!p' "$1" | head -n 1; }}
  if [ "$(pw {RESTORE_DIR}/token)" = "$(pw "$(readlink -f {NODE_TOKEN})" 2>/dev/null)" ]; then
    state=same-token
  else
    state=other-token
  fi
else
  snap={src}; state=same-token
fi
echo "$snap $state"
"""


def version_key(version: str) -> tuple[int, ...]:
    """"v1.30.6+k3s1" -> (1, 30, 6, 1): release numbers, then the k3s build number."""
    return tuple(int(n) for n in re.findall(r"\d+", version))


def rewrite_server(kubeconfig: str, server: str) -> str:
    """Point every cluster entry of a kubeconfig at `server` (k3s writes https://127.0.0.1:6443)."""
    doc = yaml.safe_load(kubeconfig)
    if not isinstance(doc, dict):
        raise RuntimeErrorSealer(
            "the k3s kubeconfig on master0 is not a YAML mapping", "is k3s healthy there?"
        )
    for entry in doc.get("clusters") or []:
        if isinstance(entry, dict) and isinstance(entry.get("cluster"), dict):
            entry["cluster"]["server"] = server
    return yaml.safe_dump(doc, sort_keys=False)


def reset_script() -> str:
    """Stop k3s, kill what it started, unmount and remove its files and the binaries sealer put in
    place (the list written at install), like k3s-killall.sh + k3s-uninstall.sh."""
    dirs = " ".join(
        shlex.quote(d)
        for d in (
            "/etc/rancher",
            "/var/lib/rancher",
            "/run/k3s",
            "/run/flannel",
            "/var/lib/kubelet/pods",
            "/etc/rancher/node",
        )
    )
    return f"""
for u in {SERVER_UNIT} {AGENT_UNIT}; do systemctl disable --now $u >/dev/null 2>&1; done
# The [x] in each pattern keeps pgrep from matching this very script's command line.
for p in $(pgrep -f 'containerd-shi[m].*(/var/lib/rancher|k8s.io)' 2>/dev/null) $(pgrep -x k3s 2>/dev/null) \
         $(pgrep -f '[/]run/k3s/containerd' 2>/dev/null); do
  kill -9 "$p" 2>/dev/null
done
for m in $(awk '$2 ~ "^/(run/k3s|var/lib/rancher|var/lib/kubelet)" {{print $2}}' /proc/self/mounts \
           | sort -r); do
  umount -l "$m" 2>/dev/null
done
if [ -f {INSTALLED_LIST} ]; then xargs -r rm -f < {INSTALLED_LIST}; rm -f {INSTALLED_LIST}; fi
for u in {SERVER_UNIT} {AGENT_UNIT}; do rm -f {UNIT_DIR}/$u {UNIT_DIR}/$u.env; done
rm -rf {dirs}
{lb.reset_script()}
systemctl daemon-reload >/dev/null 2>&1
true
"""
