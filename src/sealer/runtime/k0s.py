"""The k0s runtime: `k0s config create` with sealer's API settings and the private registry as image
repository, the first controller on master0, join tokens created once and copied to every joining
host before any join starts, further controllers one at a time, workers in parallel; reset.

Controllers run with --enable-worker by default, so every master is a Node (tainted NoSchedule by
k0s) as on kubernetes and k3s; `K0sControllerWorker=false` in the cluster env makes pure controllers,
which are not Nodes (`registers_node` tells the engine's readiness check).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from sealer.errors import HostError, RuntimeErrorSealer
from sealer.infra.shell import quote_path
from sealer.model.cluster import Host
from sealer.runtime import lb
from sealer.runtime.base import API_ENDPOINT_NAME, RuntimeContext
from sealer.runtime.containerd import (
    cri_dropin,
    last_line,
    put_if_changed,
    registry_files,
    reset_hosts,
    run_checked,
)
from sealer.runtime.k3s import rewrite_server, version_key

BIN_DIR = "/usr/local/bin"
ETC = "/etc/k0s"
CONFIG = f"{ETC}/k0s.yaml"
CERTS_D = f"{ETC}/certs.d"
# k0s's containerd.toml imports /etc/k0s/containerd.d/*.toml: the registry settings go there.
CRI_DROPIN = f"{ETC}/containerd.d/sealer-registry.toml"
WORKER_TOKEN = f"{ETC}/sealer-worker-token"
CONTROLLER_TOKEN = f"{ETC}/sealer-controller-token"
ADMIN_COPY = f"{ETC}/sealer-admin.conf"
INSTALLED_LIST = "/etc/sealer/k0s-installed"
UNIT_DIR = "/etc/systemd/system"
CONTROLLER_UNIT = "k0scontroller.service"
WORKER_UNIT = "k0sworker.service"
API_PORT = 6443
K0S_API_PORT = 9443
START_TIMEOUT = 300
# Join tokens are short-lived: a run creates fresh ones; a later scale-up makes its own.
TOKEN_EXPIRY = "2h"
ENV_CONTROLLER_WORKER = "K0sControllerWorker"
HELPERS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "kubectl")
# what k0s listens on: API, k0s API, etcd peers, konnectivity; the kubelet on nodes
CONTROLLER_PORTS = (API_PORT, K0S_API_PORT, 2380, 8132)
NODE_PORTS = (10250,)


def controllers_are_nodes(env: Mapping[str, str]) -> bool:
    return env.get(ENV_CONTROLLER_WORKER, "true").strip().lower() not in ("false", "0", "no")


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def cluster_config(
    created: str,
    ctx: RuntimeContext,
    host: Host,
    image_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """k0s.yaml for a controller: what `k0s config create` printed on the host, the image's own
    etc/k0s/k0s.yaml merged on top, then what sealer must own: the API address and SANs (the
    endpoint name, every master, the VIP) and the private registry as image repository."""
    doc = yaml.safe_load(created)
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
        raise RuntimeErrorSealer(
            f"{host.ip}: `k0s config create` did not print a ClusterConfig",
            "is the ClusterImage's bin/k0s a working k0s?",
        )
    if image_overrides:
        _deep_merge(doc, image_overrides)
    spec = doc["spec"]
    api = spec.setdefault("api", {})
    api["address"] = host.ip
    api["port"] = API_PORT
    api["k0sApiPort"] = K0S_API_PORT
    # Joins and the admin kubeconfig name the stable endpoint; /etc/hosts (or a VIP, or the
    # node-local balancer) decides where it points, so masters can be added without new tokens.
    api["externalAddress"] = API_ENDPOINT_NAME
    existing = [str(s) for s in api.get("sans") or []]
    api["sans"] = list(dict.fromkeys([*existing, *lb.api_sans(ctx.cluster, API_ENDPOINT_NAME), host.ip]))
    if ctx.registry is not None:
        images = spec.setdefault("images", {}) if isinstance(spec.get("images"), dict | None) else {}
        spec["images"] = images
        images["repository"] = ctx.registry.address
    if lb.lb_kind(ctx.cluster) == "native":
        # k0s's own node-local load balancing: an Envoy on every worker in front of all controllers
        network = spec.setdefault("network", {})
        network["nodeLocalLoadBalancing"] = {"enabled": True, "type": "EnvoyProxy"}
    storage = spec.setdefault("storage", {})
    # etcd (not kine/sqlite): a single controller can later become three.
    storage.setdefault("type", "etcd")
    return doc


def taint_args(host: Host) -> list[str]:
    return [str(t) for t in host.taints if not t.remove and t.effect]


def node_args(ctx: RuntimeContext, host: Host) -> list[str]:
    """Flags naming the node as the engine expects it (its readiness check looks for this name)."""
    extra = f"--hostname-override={ctx.node_names[host.ip]} --node-ip={host.ip}"
    args = [f"--kubelet-extra-args={extra}"]
    taints = taint_args(host)
    if taints:
        args.append(f"--taints={','.join(taints)}")
    return args


def decode_token(token: str) -> dict[str, Any]:
    """A k0s join token: base64(gzip(kubeconfig))."""
    try:
        raw = gzip.decompress(base64.b64decode(token.strip(), validate=True))
        doc = yaml.safe_load(raw)
    except (binascii.Error, ValueError, OSError, EOFError, yaml.YAMLError) as err:
        raise RuntimeErrorSealer(
            f"the k0s join token is not base64(gzip(kubeconfig)): {err}", "is master0's k0s healthy?"
        ) from None
    if not isinstance(doc, dict):
        raise RuntimeErrorSealer("the k0s join token holds no kubeconfig", "is master0's k0s healthy?")
    return doc


def token_with_server(token: str, server: str) -> str:
    """The same join token pointing at another API URL (the node-local balancer): workers then
    bootstrap and run through it. The CA and the bootstrap secret are unchanged."""
    doc = decode_token(token)
    text = rewrite_server(yaml.safe_dump(doc, sort_keys=False), server)
    return base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()


def install_script(rootfs: str) -> str:
    root = quote_path(rootfs)
    return f"""set -e
if [ ! -x {root}/bin/k0s ]; then echo "no k0s binary at {rootfs}/bin/k0s" >&2; exit 3; fi
mkdir -p /etc/sealer {ETC}
list={INSTALLED_LIST}; : > "$list.new"
install -m 0755 {root}/bin/k0s {BIN_DIR}/k0s.sealer-new && mv -f {BIN_DIR}/k0s.sealer-new {BIN_DIR}/k0s
echo {BIN_DIR}/k0s >> "$list.new"
for b in {" ".join(HELPERS)}; do
  if [ -x {root}/bin/$b ]; then
    install -m 0755 {root}/bin/$b {BIN_DIR}/$b.sealer-new && mv -f {BIN_DIR}/$b.sealer-new {BIN_DIR}/$b
    echo {BIN_DIR}/$b >> "$list.new"
  fi
done
# No kubectl in the image: k0s carries one (`k0s kubectl`, admin.conf by default).
if [ ! -x {root}/bin/kubectl ]; then
  printf '#!/bin/sh\\nexec {BIN_DIR}/k0s kubectl "$@"\\n' > {BIN_DIR}/kubectl; chmod 0755 {BIN_DIR}/kubectl
  echo {BIN_DIR}/kubectl >> "$list.new"
fi
mv -f "$list.new" "$list"
{BIN_DIR}/k0s version
"""


def reset_script() -> str:
    """k0s stop + k0s reset, then what reset leaves: sealer's files, mounts, shims, binaries."""
    return f"""
{BIN_DIR}/k0s stop >/dev/null 2>&1
for u in {CONTROLLER_UNIT} {WORKER_UNIT}; do systemctl disable --now $u >/dev/null 2>&1; done
# the [m] keeps pgrep from matching this very script's command line (it would kill itself)
for p in $(pgrep -f 'containerd-shi[m].*(/run/k0s|k8s.io)' 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
[ -x {BIN_DIR}/k0s ] && {BIN_DIR}/k0s reset >/dev/null 2>&1
for m in $(awk '$2 ~ "^/(run/k0s|var/lib/k0s|var/lib/kubelet)" {{print $2}}' /proc/self/mounts | sort -r); do
  umount -l "$m" 2>/dev/null
done
for u in {CONTROLLER_UNIT} {WORKER_UNIT}; do rm -f {UNIT_DIR}/$u; done
if [ -f {INSTALLED_LIST} ]; then xargs -r rm -f < {INSTALLED_LIST}; rm -f {INSTALLED_LIST}; fi
rm -rf {ETC} /var/lib/k0s /run/k0s /var/lib/kubelet /etc/cni/net.d /opt/cni/bin/.k0s
{lb.reset_script()}
systemctl daemon-reload >/dev/null 2>&1
true
"""


def upgrade_probe_script(rootfs: str) -> str:
    """The image's and the installed k0s versions, one `new=`/`old=` line each (empty if absent)."""
    root = quote_path(rootfs)
    return (
        f'echo "new=$({root}/bin/k0s version 2>/dev/null | head -n1)"; '
        f'echo "old=$({BIN_DIR}/k0s version 2>/dev/null | head -n1)"'
    )


def parse_upgrade_probe(text: str) -> tuple[str, str]:
    found = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    return found.get("new", "").strip(), found.get("old", "").strip()


class K0sRuntime:
    """ClusterRuntime for k0s (see the module docstring)."""

    name = "k0s"

    def __init__(self) -> None:
        self._version: str | None = None
        self._token_lock = asyncio.Lock()

    # helpers -----------------------------------------------------------------------------------
    def registers_node(self, ctx: RuntimeContext, host: Host) -> bool:
        """Whether the host becomes a Kubernetes Node (plain k0s controllers do not)."""
        return not host.is_master or controllers_are_nodes(ctx.cluster.env)

    async def _binaries(self, ctx: RuntimeContext, host: Host) -> None:
        result = await ctx.fleet.run(ctx.target(host), install_script(ctx.rootfs), sudo=True, timeout=120)
        if result.exit_code == 3:
            raise RuntimeErrorSealer(
                f"{host.ip}: the ClusterImage has no bin/k0s",
                "is this a k0s ClusterImage? see `sealer inspect`",
            )
        result.check()
        words = result.stdout.split()
        if words:
            self._version = words[-1]

    async def _registry(self, ctx: RuntimeContext, host: Host) -> bool:
        if ctx.registry is None:
            return False
        changed = False
        for path, content in registry_files(ctx.registry, CERTS_D).items():
            changed = await put_if_changed(ctx, host, path, content) or changed
        return (
            await put_if_changed(ctx, host, CRI_DROPIN, cri_dropin(CERTS_D, ctx.registry), "0600") or changed
        )

    async def _config(self, ctx: RuntimeContext, host: Host) -> bool:
        created = await run_checked(ctx, host, f"{BIN_DIR}/k0s config create")
        overrides: dict[str, Any] | None = None
        image_cfg = f"{ctx.rootfs}/etc/k0s/k0s.yaml"
        got = await ctx.fleet.run(ctx.target(host), f"cat {quote_path(image_cfg)} 2>/dev/null", sudo=True)
        if got.ok and got.stdout.strip():
            loaded = yaml.safe_load(got.stdout)
            if isinstance(loaded, dict):
                overrides = loaded
        doc = cluster_config(created, ctx, host, overrides)
        changed = await put_if_changed(ctx, host, CONFIG, yaml.safe_dump(doc, sort_keys=False), "0600")
        (
            await ctx.fleet.run(ctx.target(host), f"{BIN_DIR}/k0s config validate -c {CONFIG}", sudo=True)
        ).check()
        return changed

    async def _busy_ports(self, ctx: RuntimeContext, host: Host) -> list[str]:
        """Ports k0s needs on this host that something else holds (a running k0s of this cluster
        holds them itself, so a re-run finds none)."""
        role = "controller" if host.is_master else "worker"
        unit = CONTROLLER_UNIT if role == "controller" else WORKER_UNIT
        ports = [
            *(CONTROLLER_PORTS if role == "controller" else ()),
            *(NODE_PORTS if self.registers_node(ctx, host) else ()),
        ]
        script = (
            f"systemctl is-active --quiet {unit} && exit 0; "
            f"for p in {' '.join(str(p) for p in ports)}; do "
            'ss -Hltn "sport = :$p" 2>/dev/null | grep -q LISTEN && echo "$p"; done; true'
        )
        return (await run_checked(ctx, host, script)).split()

    async def _check_ports(self, ctx: RuntimeContext, hosts: Sequence[Host]) -> None:
        """Pre-flight before k0s starts: one report naming every host whose k0s ports are taken."""
        found = await asyncio.gather(*(self._busy_ports(ctx, h) for h in hosts))
        bad = [(h, busy) for h, busy in zip(hosts, found, strict=True) if busy]
        if bad:
            lines = [f"{h.ip}: port(s) {', '.join(busy)} already in use" for h, busy in bad]
            raise HostError(
                ", ".join(h.ip for h, _ in bad),
                "k0s cannot start:\n  " + "\n  ".join(lines),
                "stop what listens there (`ss -ltnp` on the host) and run the same command again",
            )

    async def _service(
        self, ctx: RuntimeContext, host: Host, role: str, args: list[str], changed: bool
    ) -> None:
        """`k0s install <role> ...` (rewrites the unit with --force), then (re)start and wait until
        `k0s status` answers."""
        unit = CONTROLLER_UNIT if role == "controller" else WORKER_UNIT
        await self._check_ports(ctx, [host])
        flags = " ".join(shlex.quote(a) for a in args)
        before = await ctx.fleet.run(ctx.target(host), f"cat {UNIT_DIR}/{unit} 2>/dev/null", sudo=True)
        await run_checked(ctx, host, f"{BIN_DIR}/k0s install {role} --force {flags}")
        after = await ctx.fleet.run(ctx.target(host), f"cat {UNIT_DIR}/{unit} 2>/dev/null", sudo=True)
        changed = changed or before.stdout != after.stdout
        verb = "restart" if changed else "start"
        start = f"systemctl is-active --quiet {unit} && [ {int(changed)} = 0 ] || systemctl {verb} {unit}"
        await self._start_and_wait(ctx, host, role, start)

    async def _start_and_wait(self, ctx: RuntimeContext, host: Host, role: str, start: str) -> None:
        """Run the `start` command for the role's unit, then wait until `k0s status` answers; a
        failure quotes the unit's last error from the journal."""
        unit = CONTROLLER_UNIT if role == "controller" else WORKER_UNIT
        script = f"""systemctl daemon-reload
{start} || exit 1
for i in $(seq 1 {START_TIMEOUT}); do
  if {BIN_DIR}/k0s status >/dev/null 2>&1; then exit 0; fi
  systemctl is-failed --quiet {unit} && exit 1
  sleep 1
done
exit 1
"""
        result = await ctx.fleet.run(ctx.target(host), script, sudo=True, timeout=START_TIMEOUT + 30)
        if not result.ok:
            log = await ctx.fleet.run(
                ctx.target(host), f"journalctl -u {unit} -n 30 --no-pager -o cat 2>&1 | tail -n 30", sudo=True
            )
            lines = [ln for ln in log.stdout.splitlines() if ln.strip()]
            bad = [ln for ln in lines if "level=fatal" in ln or "level=error" in ln or ln.startswith("Error")]
            detail = (bad or lines or ["no journal output"])[-1]
            raise RuntimeErrorSealer(
                f"{host.ip}: k0s {role} did not start: {detail}",
                f"see `journalctl -u {unit}` on {host.ip}; fix the cause and run the same command again",
            )

    async def _tokens(self, ctx: RuntimeContext) -> tuple[str, str]:
        """(worker, controller) join tokens made on master0 once per run. They are written to
        files there and fetched as files, so no token ever passes through a command's output."""
        async with self._token_lock:
            worker, controller = ctx.shared.get("k0s-worker-token"), ctx.shared.get("k0s-controller-token")
            if worker and controller:
                return worker, controller
            m0 = ctx.master0
            script = f"""set -e
umask 077
err=$(mktemp)
for i in $(seq 1 120); do
  if {BIN_DIR}/k0s token create --role=worker --expiry={TOKEN_EXPIRY} > {WORKER_TOKEN}.new \\
        2>"$err" && {BIN_DIR}/k0s token create --role=controller --expiry={TOKEN_EXPIRY} \\
        > {CONTROLLER_TOKEN}.new 2>>"$err"; then
    mv -f {WORKER_TOKEN}.new {WORKER_TOKEN}; mv -f {CONTROLLER_TOKEN}.new {CONTROLLER_TOKEN}
    rm -f "$err"; exit 0
  fi
  sleep 1
done
tail -n 2 "$err" >&2; rm -f "$err"; exit 1
"""
            result = await ctx.fleet.run(ctx.target(m0), script, sudo=True, timeout=180)
            if not result.ok:
                raise RuntimeErrorSealer(
                    f"{m0.ip}: `k0s token create` failed: {result.stderr.strip() or result.stdout.strip()}",
                    "is the k0s controller on master0 running? (`k0s status`, `journalctl -u k0scontroller`)",
                )
            with tempfile.TemporaryDirectory(prefix="sealer-k0s-") as tmp:
                got: list[str] = []
                for path in (WORKER_TOKEN, CONTROLLER_TOKEN):
                    dst = Path(tmp) / Path(path).name
                    await ctx.fleet.get(ctx.target(m0), path, dst, sudo=True)
                    got.append(dst.read_text().strip())
            for text in got:
                decode_token(text)  # a clear error now rather than a failed join later
            ctx.shared["k0s-worker-token"], ctx.shared["k0s-controller-token"] = got[0], got[1]
            return got[0], got[1]

    def _worker_token(self, ctx: RuntimeContext, token: str) -> str:
        if lb.lb_kind(ctx.cluster) == "haproxy":
            return token_with_server(token, lb.local_endpoint())
        return token

    async def _hand_out_tokens(
        self, ctx: RuntimeContext, masters: Sequence[Host], workers: Sequence[Host]
    ) -> None:
        """Copy the join token to each joining host before any join starts (Go sealer created the
        token while joins were already running and raced them)."""
        worker, controller = await self._tokens(ctx)
        wtoken = self._worker_token(ctx, worker)
        await asyncio.gather(
            *(put_if_changed(ctx, h, CONTROLLER_TOKEN, controller + "\n", "0600") for h in masters),
            *(put_if_changed(ctx, h, WORKER_TOKEN, wtoken + "\n", "0600") for h in workers),
        )

    # ClusterRuntime ---------------------------------------------------------------------------
    async def install(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        if not masters:
            await self.join(ctx, [], workers)
            return
        m0 = masters[0]
        ctx.say(m0.ip, "installing the first k0s controller")
        await self._check_ports(ctx, list(ctx.cluster.hosts))  # every host, before anything starts
        await self._binaries(ctx, m0)
        changed = await self._registry(ctx, m0)
        changed = await self._config(ctx, m0) or changed
        await self._service(ctx, m0, "controller", self._controller_args(ctx, m0), changed)
        await lb.install_vip(ctx, m0)
        others = [h for h in ctx.cluster.masters if h.ip != m0.ip]
        await self._hand_out_tokens(ctx, others, list(ctx.cluster.workers))
        await self.join(ctx, masters[1:], workers)

    def _controller_args(self, ctx: RuntimeContext, host: Host, *, join: bool = False) -> list[str]:
        args = [f"--config={CONFIG}"]
        if join:
            args.append(f"--token-file={CONTROLLER_TOKEN}")
        if controllers_are_nodes(ctx.cluster.env):
            args += ["--enable-worker", *node_args(ctx, host)]
        return args

    async def join(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        if masters or workers:
            # Fresh tokens when this run did not make them (a resumed run), on the hosts first.
            await self._hand_out_tokens(ctx, masters, workers)
        for host in masters:  # one at a time: etcd membership changes one member at a time
            ctx.say(host.ip, "joining k0s controller")
            await self._binaries(ctx, host)
            changed = await self._registry(ctx, host)
            changed = await self._config(ctx, host) or changed
            await self._service(ctx, host, "controller", self._controller_args(ctx, host, join=True), changed)
            await lb.install_vip(ctx, host)
        if masters:
            await lb.refresh_balancers(ctx)
        await asyncio.gather(*(self._worker(ctx, w) for w in workers))

    async def _worker(self, ctx: RuntimeContext, host: Host) -> None:
        ctx.say(host.ip, "joining k0s worker")
        await self._binaries(ctx, host)
        changed = await self._registry(ctx, host)
        if lb.lb_kind(ctx.cluster) == "haproxy":
            await lb.install_lb(ctx, host, ctx.cluster.masters)
        args = [f"--token-file={WORKER_TOKEN}", *node_args(ctx, host)]
        await self._service(ctx, host, "worker", args, changed)

    async def remove(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        """Reset hosts leaving the cluster (the engine drained them and deleted their Nodes). A
        controller leaves etcd first, one at a time, so the remaining members keep quorum."""
        for master in masters:
            await self._leave_etcd(ctx, master)
            await self.reset(ctx, [master])
        if masters:
            await lb.refresh_balancers(ctx)
        if workers:
            await self.reset(ctx, workers)

    async def _leave_etcd(self, ctx: RuntimeContext, master: Host) -> None:
        """`k0s etcd leave` on the leaving controller; when that fails (its k0s is not running),
        master0 removes the member by its peer address. Both failing stops the removal before the
        host is reset: a member left behind for a reset host counts against etcd's quorum."""
        left = await ctx.fleet.run(
            ctx.target(master), f"{BIN_DIR}/k0s etcd leave 2>&1", sudo=True, timeout=120
        )
        if left.ok:
            return
        ctx.say(
            master.ip, f"k0s etcd leave failed there ({last_line(left.stdout)}); removing it from master0"
        )
        await self.forget_member(ctx, master)

    async def forget_member(self, ctx: RuntimeContext, master: Host) -> None:
        """master0 removes a controller's etcd member by its peer address (the controller itself
        cannot: its k0s is down, or the host is unreachable). Idempotent: a member already gone is
        fine. Raises while the member is still listed, so the host is not reset and a re-run retries."""
        m0 = ctx.master0
        by_m0 = await ctx.fleet.run(
            ctx.target(m0),
            f"{BIN_DIR}/k0s etcd leave --peer-address {shlex.quote(master.ip)} 2>&1",
            sudo=True,
            timeout=120,
        )
        if by_m0.ok:
            return
        listed = await ctx.fleet.run(ctx.target(m0), f"{BIN_DIR}/k0s etcd member-list", sudo=True, timeout=60)
        if listed.ok and f"//{master.ip}:" not in listed.stdout:
            return  # already gone (a re-run after the member left)
        raise RuntimeErrorSealer(
            f"{master.ip}: its etcd member could not leave the cluster: {last_line(by_m0.stdout)}",
            f"check `k0s etcd member-list` on {m0.ip}; remove the member with `k0s etcd leave "
            f"--peer-address {master.ip}` there, then run the same command again",
        )

    async def reset(self, ctx: RuntimeContext, hosts: list[Host]) -> None:
        await reset_hosts(ctx, hosts, reset_script(), timeout=180, done="k0s removed")

    async def upgrade(self, ctx: RuntimeContext, image: str) -> None:
        """k0s's manual upgrade order: controllers one at a time, then workers."""
        for host in [*ctx.cluster.masters, *ctx.cluster.workers]:
            await self.upgrade_host(ctx, host)

    async def upgrade_host(self, ctx: RuntimeContext, host: Host) -> None:
        """k0s's documented manual upgrade of one node: replace the binary with the (already
        distributed) new image's and restart its service, then wait until `k0s status` answers.
        A downgrade is refused before anything changes."""
        probe = await run_checked(ctx, host, upgrade_probe_script(ctx.rootfs))
        new, old = parse_upgrade_probe(probe)
        if new and old and version_key(new) < version_key(old):
            raise RuntimeErrorSealer(
                f"{host.ip}: the image carries k0s {new}, older than the installed {old}; "
                "k0s does not support downgrades",
                "use an image with the installed k0s version or newer",
            )
        ctx.say(host.ip, f"upgrading k0s {old or '?'} -> {new or '?'}")
        await self._binaries(ctx, host)
        role = "controller" if host.is_master else "worker"
        unit = CONTROLLER_UNIT if host.is_master else WORKER_UNIT
        # Always restart: an earlier attempt may have replaced the binary and been killed before
        # the restart, so "binary unchanged" does not mean "running the new version".
        await self._start_and_wait(ctx, host, role, f"systemctl restart {unit}")

    async def kubeconfig(self, ctx: RuntimeContext) -> str:
        """`k0s kubeconfig admin` on master0, written to a 0600 file there and fetched as a file."""
        m0 = ctx.master0
        await run_checked(ctx, m0, f"umask 077 && {BIN_DIR}/k0s kubeconfig admin > {ADMIN_COPY}")
        with tempfile.TemporaryDirectory(prefix="sealer-k0s-") as tmp:
            dst = Path(tmp) / "admin.conf"
            await ctx.fleet.get(ctx.target(m0), ADMIN_COPY, dst, sudo=True)
            text = dst.read_text()
        return rewrite_server(text, f"https://{m0.ip}:{API_PORT}")

    def versions(self) -> Mapping[str, str]:
        return {"k0s": self._version} if self._version else {}

    # etcd backup / restore (runtime/etcd_backup.py) --------------------------------------------
    async def etcd_snapshot(self, ctx: RuntimeContext) -> str:
        """`k0s backup` on master0; returns the archive's path there."""
        from sealer.runtime import etcd_backup

        return await etcd_backup.k0s_snapshot(self, ctx)
