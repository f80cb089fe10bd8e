"""The kubernetes (kubeadm) runtime: containerd as the CRI with the private registry mirror, kubelet
and containerd systemd units, `kubeadm init --upload-certs` on master0 with the generated
configuration, masters joined one at a time with the certificate key, workers joined in parallel
with a fresh token and the CA hash (through the node-local balancer when there is one); reset
leaves the host clean (kubeadm reset, CNI/iptables/ipvs leftovers, data dirs, units, binaries); a
removed master's stacked etcd member is taken out from a remaining master with the image's etcdctl
when kubeadm reset could not (the host is unreachable, or its reset did not get to it).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import secrets
import shlex
import tempfile
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sealer.errors import HostError, RuntimeErrorSealer, SealerError
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
from sealer.runtime.kubeadm_config import KubeadmInputs, endpoint_name, parse_documents, render

BIN_DIR = "/usr/local/bin"
UNIT_DIR = "/etc/systemd/system"
K8S_ETC = "/etc/kubernetes"
INIT_CONFIG = f"{K8S_ETC}/kubeadm.yaml"
JOIN_CONFIG = f"{K8S_ETC}/kubeadm-join.yaml"
ADMIN_CONF = f"{K8S_ETC}/admin.conf"
KUBELET_CONF = f"{K8S_ETC}/kubelet.conf"
CA_CRT = f"{K8S_ETC}/pki/ca.crt"
CONTAINERD_ETC = "/etc/containerd"
CONTAINERD_CONFIG = f"{CONTAINERD_ETC}/config.toml"
CERTS_D = f"{CONTAINERD_ETC}/certs.d"
CRI_DROPIN = f"{CONTAINERD_ETC}/conf.d/sealer-registry.toml"
CRI_SOCKET = "unix:///run/containerd/containerd.sock"
INSTALLED_LIST = "/etc/sealer/kubernetes-installed"
SYSCTL_FILE = "/etc/sysctl.d/99-sealer-kubernetes.conf"
MODULES_FILE = "/etc/modules-load.d/sealer-kubernetes.conf"
KUBEADM_LOG = "/var/log/sealer-kubeadm.log"
BINARIES = ("kubeadm", "kubelet", "kubectl")
CONTAINERD_BINARIES = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "crictl")
API_PORT = 6443
MASTER_PORTS = (6443, 2379, 2380, 10250, 10257, 10259)
WORKER_PORTS = (10250,)
SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
}
MODULES = ("overlay", "br_netfilter")
TOKEN_TTL = "2h"
PREFLIGHT_HINT = (
    "fix the hosts named (sealer already loaded the kernel modules and set the sysctls it could) "
    "and run the same command again"
)
# stacked etcd as kubeadm sets it up: the local member's client URL and the client certificate
# kubeadm makes for health checks (etcd's --client-cert-auth takes any certificate of its CA)
ETCD_LOCAL = "https://127.0.0.1:2379"
ETCD_PKI = f"{K8S_ETC}/pki/etcd"
ETCD_PEER_PORT = 2380
NO_ETCDCTL = 3  # exit code of the member-list script when the image has no bin/etcdctl


def containerd_config(pause_image: str) -> str:
    """containerd (config version 2): systemd cgroups as the kubelet, the CRI plugin reading
    registry mirrors from certs.d, and drop-ins (registry credentials) from conf.d."""
    return f"""# written by sealer
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
imports = ["{CONTAINERD_ETC}/conf.d/*.toml"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = true
"""


def containerd_unit() -> str:
    return f"""[Unit]
Description=containerd container runtime (installed by sealer)
Documentation=https://containerd.io
After=network.target local-fs.target

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart={BIN_DIR}/containerd --config {CONTAINERD_CONFIG}
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
LimitNOFILE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
"""


def kubelet_unit() -> str:
    """kubelet.service as the Kubernetes packages ship it: it restarts until kubeadm writes its
    configuration (the crash loop before init/join is expected)."""
    return f"""[Unit]
Description=kubelet: The Kubernetes Node Agent (installed by sealer)
Documentation=https://kubernetes.io/docs/
Wants=network-online.target containerd.service
After=network-online.target containerd.service

[Service]
ExecStart={BIN_DIR}/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
"""


def kubeadm_dropin() -> str:
    """10-kubeadm.conf: the flags kubeadm's files hand to the kubelet."""
    return f"""[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig={K8S_ETC}/bootstrap-kubelet.conf \\
 --kubeconfig={KUBELET_CONF}"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart={BIN_DIR}/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS \\
 $KUBELET_EXTRA_ARGS
"""


def ca_cert_hash(ca_pem: str) -> str:
    """kubeadm's discovery pin: sha256 of the CA's SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(ca_pem.encode())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def new_bootstrap_token() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    pick = secrets.choice
    return "".join(pick(alphabet) for _ in range(6)) + "." + "".join(pick(alphabet) for _ in range(16))


def host_check_script(ports: tuple[int, ...]) -> str:
    """Pre-flight on a host, fixing what sealer should (modules, sysctls; persisted) and reporting
    what it should not change on its own (swap, ports held by something else). Prints
    `PROBLEM <text>` lines; kubeadm's own checks then run with nothing ignored."""
    sysctl_lines = "\\n".join(f"{k} = {v}" for k, v in SYSCTLS.items())
    checks = " ".join(str(p) for p in ports)
    return f"""
mkdir -p /etc/modules-load.d /etc/sysctl.d
printf '%s\\n' {" ".join(MODULES)} > {MODULES_FILE}
# a module counts as there when its effect is (built-in modules are not in /proc/modules)
have() {{
  case $1 in
    br_netfilter) [ -d /proc/sys/net/bridge ] ;;
    overlay) grep -qw overlay /proc/filesystems ;;
    *) grep -qw "^$1" /proc/modules ;;
  esac
}}
for m in {" ".join(MODULES)}; do
  have "$m" || modprobe "$m" 2>/dev/null
  have "$m" || echo "PROBLEM kernel module $m is not loaded and modprobe $m failed"
done
printf '{sysctl_lines}\\n' > {SYSCTL_FILE}
for kv in {" ".join(f"{k}={v}" for k, v in SYSCTLS.items())}; do
  k=${{kv%%=*}}; v=${{kv#*=}}; f=/proc/sys/$(echo "$k" | tr . /)
  if [ -e "$f" ]; then
    [ "$(cat "$f")" = "$v" ] || sysctl -qw "$k=$v" 2>/dev/null || echo "PROBLEM sysctl $k cannot be set to $v"
  elif [ "$k" = net.ipv4.ip_forward ]; then echo "PROBLEM sysctl $k is missing"; fi
done
if [ -r /proc/swaps ] && [ "$(tail -n +2 /proc/swaps | wc -l)" -gt 0 ]; then
  echo "PROBLEM swap is on (kubelet refuses it): swapoff -a and remove swap from /etc/fstab"
fi
if [ ! -s {KUBELET_CONF} ]; then
  for p in {checks}; do
    if ss -Hltn "sport = :$p" 2>/dev/null | grep -q LISTEN; then echo "PROBLEM port $p is already in use"; fi
  done
fi
true
"""


def install_binaries_script(rootfs: str, names: tuple[str, ...]) -> str:
    """Swap in the image's binaries (each through a rename, so a running one keeps its old inode)."""
    root = quote_path(rootfs)
    return f"""set -e
for b in {" ".join(names)}; do
  if [ -x {root}/bin/$b ]; then
    install -m 0755 {root}/bin/$b {BIN_DIR}/$b.sealer-new && mv -f {BIN_DIR}/$b.sealer-new {BIN_DIR}/$b
  fi
done
"""


def reset_script() -> str:
    return f"""
[ -x {BIN_DIR}/kubeadm ] && {BIN_DIR}/kubeadm reset -f --cri-socket {CRI_SOCKET} >/dev/null 2>&1
systemctl disable --now kubelet.service >/dev/null 2>&1
systemctl stop standin-kube-apiserver.service >/dev/null 2>&1
if [ -x {BIN_DIR}/crictl ]; then {BIN_DIR}/crictl --runtime-endpoint {CRI_SOCKET} rmp -af >/dev/null 2>&1; fi
systemctl disable --now containerd.service >/dev/null 2>&1
# the [m] keeps pgrep from matching this very script's command line (it would kill itself)
for p in $(pgrep -f 'containerd-shi[m]' 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
mounts='^/(var/lib/kubelet|run/containerd|var/lib/containerd/io)'
for m in $(awk -v re="$mounts" '$2 ~ re {{print $2}}' /proc/self/mounts | sort -r); do
  umount -l "$m" 2>/dev/null
done
# CNI, iptables and IPVS leftovers (kubeadm reset says it does not clean them)
rm -rf /etc/cni/net.d /var/lib/cni
if command -v iptables-save >/dev/null 2>&1; then
  for t in iptables ip6tables; do
    command -v $t-save >/dev/null 2>&1 || continue
    $t-save 2>/dev/null | grep -v -e KUBE- -e CNI- -e cali -e flannel | $t-restore 2>/dev/null
  done
fi
command -v ipvsadm >/dev/null 2>&1 && ipvsadm --clear 2>/dev/null
for i in cni0 flannel.1 kube-ipvs0 tunl0; do ip link delete $i 2>/dev/null; done
rm -f {UNIT_DIR}/kubelet.service {UNIT_DIR}/containerd.service
rm -rf {UNIT_DIR}/kubelet.service.d
if [ -f {INSTALLED_LIST} ]; then xargs -r rm -f < {INSTALLED_LIST}; rm -f {INSTALLED_LIST}; fi
rm -rf {K8S_ETC} /var/lib/kubelet /var/lib/etcd {CONTAINERD_ETC} /run/containerd /root/.kube
rm -rf /var/lib/containerd/* 2>/dev/null
rm -f {SYSCTL_FILE} {MODULES_FILE} {KUBEADM_LOG}
{lb.reset_script()}
systemctl daemon-reload >/dev/null 2>&1
true
"""


def etcdctl_command(etcdctl: str, args: str) -> str:
    """etcdctl against the local stacked member, as a control plane's root runs it."""
    return (
        f"ETCDCTL_API=3 {etcdctl} --endpoints={ETCD_LOCAL} --cacert={ETCD_PKI}/ca.crt "
        f"--cert={ETCD_PKI}/healthcheck-client.crt --key={ETCD_PKI}/healthcheck-client.key {args}"
    )


def member_list_script(etcdctl: str) -> str:
    """`member list -w json` on a control plane; exit NO_ETCDCTL when the image has no etcdctl."""
    return f"[ -x {etcdctl} ] || exit {NO_ETCDCTL}\n{etcdctl_command(etcdctl, 'member list -w json')}\n"


def members_at(listing: str, ip: str) -> list[int]:
    """IDs of the members `etcdctl member list -w json` shows with a peer URL on `ip`:2380: kubeadm
    gives a control plane's member https://<advertiseAddress>:2380, and sealer's kubeadm documents
    set advertiseAddress to the host's IP. ValueError when it is not such a listing."""
    try:
        doc = json.loads(listing)
        if not isinstance(doc, dict) or not isinstance(doc.get("members", []), list):
            raise ValueError("no members list")
        members = doc.get("members", [])  # Go's omitempty: no key when the list is empty
        wanted = ipaddress.ip_address(ip)
        found = []
        for m in members:
            for url in m.get("peerURLs") or []:
                u = urllib.parse.urlsplit(str(url))
                try:
                    same = u.hostname is not None and ipaddress.ip_address(u.hostname) == wanted
                except ValueError:  # a DNS name: kubeadm never gives one, so it is not this host
                    same = False
                if same and (u.port or ETCD_PEER_PORT) == ETCD_PEER_PORT:
                    found.append(int(m["ID"]))
                    break
        return found
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"not an etcdctl member list: {e}") from None


class KubernetesRuntime:
    """ClusterRuntime for kubeadm clusters (see the module docstring)."""

    name = "kubernetes"

    def __init__(self) -> None:
        self._versions: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._inputs: KubeadmInputs | None = None

    # configuration -----------------------------------------------------------------------------
    async def _kubeadm_inputs(self, ctx: RuntimeContext) -> KubeadmInputs:
        """Built once per run from master0's copy of the image (kubeadm's version, etc/kubeadm.yml)
        and the Clusterfile's kubeadm documents."""
        async with self._lock:
            if self._inputs is not None:
                return self._inputs
            m0 = ctx.master0
            version = (await run_checked(ctx, m0, f"{BIN_DIR}/kubeadm version -o short")).strip()
            self._versions["kubeadm"] = version
            image_cfg = f"{ctx.rootfs}/etc/kubeadm.yml"
            got = await ctx.fleet.run(ctx.target(m0), f"cat {quote_path(image_cfg)} 2>/dev/null", sudo=True)
            image_docs = parse_documents(got.stdout, "the image's etc/kubeadm.yml") if got.ok else []
            endpoint = endpoint_name(ctx.cluster, API_ENDPOINT_NAME)
            self._inputs = KubeadmInputs(
                cluster=ctx.cluster,
                kubernetes_version=version,
                kubeadm_version=version,
                endpoint=endpoint,
                node_names=ctx.node_names,
                image_repository=ctx.registry.address if ctx.registry is not None else None,
                sans=lb.api_sans(ctx.cluster, endpoint),
                image_documents=image_docs,
                user_documents=list(ctx.kubeadm_documents),
            )
            return self._inputs

    # host preparation --------------------------------------------------------------------------
    async def _prepare(self, ctx: RuntimeContext, host: Host) -> None:
        """Binaries, containerd with the registry mirror, kubelet units, kernel settings."""
        root = quote_path(ctx.rootfs)
        names = " ".join((*BINARIES, *CONTAINERD_BINARIES))
        script = f"""set -e
for b in kubeadm kubelet; do
  [ -x {root}/bin/$b ] || {{ echo "no $b binary at {ctx.rootfs}/bin/$b" >&2; exit 3; }}
done
mkdir -p /etc/sealer; list={INSTALLED_LIST}; : > "$list.new"
for b in {names}; do
  if [ -x {root}/bin/$b ]; then
    install -m 0755 {root}/bin/$b {BIN_DIR}/$b.sealer-new && mv -f {BIN_DIR}/$b.sealer-new {BIN_DIR}/$b
    echo {BIN_DIR}/$b >> "$list.new"
  fi
done
mv -f "$list.new" "$list"
command -v containerd >/dev/null || {{ echo "no containerd in the image or on the host" >&2; exit 4; }}
"""
        result = await ctx.fleet.run(ctx.target(host), script, sudo=True, timeout=120)
        if result.exit_code in (3, 4):
            raise RuntimeErrorSealer(
                f"{host.ip}: {result.stderr.strip()}",
                "is this a kubernetes ClusterImage with bin/kubeadm, bin/kubelet and containerd? "
                "see `sealer inspect`",
            )
        result.check()
        problems = await self._host_problems(ctx, host)
        if problems:
            raise HostError(host.ip, "cannot take a kubeadm node: " + "; ".join(problems), PREFLIGHT_HINT)
        changed = False
        registry = ctx.registry
        pause = f"{registry.address}/pause:3.10" if registry is not None else "registry.k8s.io/pause:3.10"
        changed = await put_if_changed(ctx, host, CONTAINERD_CONFIG, containerd_config(pause)) or changed
        if registry is not None:
            for path, content in registry_files(registry, CERTS_D).items():
                changed = await put_if_changed(ctx, host, path, content) or changed
            changed = (
                await put_if_changed(ctx, host, CRI_DROPIN, cri_dropin(CERTS_D, registry), "0600") or changed
            )
        changed = (
            await put_if_changed(ctx, host, f"{UNIT_DIR}/containerd.service", containerd_unit()) or changed
        )
        await put_if_changed(ctx, host, f"{UNIT_DIR}/kubelet.service", kubelet_unit())
        await put_if_changed(ctx, host, f"{UNIT_DIR}/kubelet.service.d/10-kubeadm.conf", kubeadm_dropin())
        verb = "restart" if changed else "start"
        start = (
            "systemctl daemon-reload && systemctl enable containerd.service kubelet.service >/dev/null 2>&1; "
            f"systemctl {verb} containerd.service && "
            "for i in $(seq 1 60); do [ -S /run/containerd/containerd.sock ] && exit 0; sleep 1; done; exit 1"
        )
        started = await ctx.fleet.run(ctx.target(host), start, sudo=True, timeout=120)
        if not started.ok:
            raise RuntimeErrorSealer(
                f"{host.ip}: containerd did not start",
                f"see `journalctl -u containerd` on {host.ip}; fix the cause and run the same command again",
            )

    async def _host_problems(self, ctx: RuntimeContext, host: Host) -> list[str]:
        ports = MASTER_PORTS if host.is_master else WORKER_PORTS
        checked = await ctx.fleet.run(ctx.target(host), host_check_script(ports), sudo=True, timeout=60)
        checked.check()
        return [ln[len("PROBLEM ") :] for ln in checked.stdout.splitlines() if ln.startswith("PROBLEM ")]

    async def _preflight_all(self, ctx: RuntimeContext) -> None:
        """kubeadm's needs checked on every host before master0 is touched, so one report names every
        host that cannot take the cluster (instead of failing host by host as joins reach them)."""
        hosts = list(ctx.cluster.hosts)
        found = await asyncio.gather(*(self._host_problems(ctx, h) for h in hosts))
        bad = [(h, p) for h, p in zip(hosts, found, strict=True) if p]
        if bad:
            lines = [f"{h.ip}: {'; '.join(p)}" for h, p in bad]
            raise HostError(
                ", ".join(h.ip for h, _ in bad),
                f"{len(bad)} host(s) cannot take a kubeadm node:\n  " + "\n  ".join(lines),
                PREFLIGHT_HINT,
            )

    async def _kubeadm(self, ctx: RuntimeContext, host: Host, args: str, what: str) -> None:
        """Run kubeadm with its output to a root-only log on the host (it prints join secrets);
        on failure show its error lines."""
        cmd = f"umask 077; {BIN_DIR}/kubeadm {args} > {KUBEADM_LOG} 2>&1"
        result = await ctx.fleet.run(ctx.target(host), cmd, sudo=True, timeout=600)
        if result.ok:
            return
        log = await ctx.fleet.run(
            ctx.target(host),
            f"grep -E 'error|ERROR|fatal|\\[preflight\\]' {KUBEADM_LOG} | tail -n 8",
            sudo=True,
        )
        detail = " | ".join(ln.strip() for ln in log.stdout.splitlines() if ln.strip()) or "no output"
        raise RuntimeErrorSealer(
            f"{host.ip}: kubeadm {what} failed: {detail}",
            f"the full output is in {KUBEADM_LOG} on {host.ip}; fix the cause and run the same command again",
        )

    async def _joined(self, ctx: RuntimeContext, host: Host) -> bool:
        got = await ctx.fleet.run(ctx.target(host), f"test -s {KUBELET_CONF}", sudo=True)
        return got.ok

    # ClusterRuntime ----------------------------------------------------------------------------
    async def install(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        if not masters:
            await self.join(ctx, [], workers)
            return
        m0 = masters[0]
        if lb.lb_kind(ctx.cluster) == "native":
            raise RuntimeErrorSealer(
                f"{lb.ENV_LB}=native: kubeadm clusters have no built-in node-local API balancer",
                f"use {lb.ENV_LB}=haproxy (the default) or {lb.ENV_LB}=none",
            )
        ctx.say(m0.ip, "kubeadm init")
        await self._preflight_all(ctx)
        await self._prepare(ctx, m0)
        inputs = await self._kubeadm_inputs(ctx)
        key = ctx.shared.get("kubeadm-certificate-key") or secrets.token_hex(32)
        ctx.shared["kubeadm-certificate-key"] = key
        docs = inputs.init_documents(m0)
        docs[0]["certificateKey"] = key
        changed = await put_if_changed(ctx, m0, INIT_CONFIG, render(docs), "0600")
        if changed or not await self._joined(ctx, m0):
            if await self._joined(ctx, m0):
                # the configuration changed since a finished init: start over on this host
                await run_checked(ctx, m0, f"{BIN_DIR}/kubeadm reset -f >/dev/null 2>&1; true")
            else:
                # leftovers of a half-finished init make kubeadm refuse (Go sealer #1050)
                await run_checked(
                    ctx,
                    m0,
                    f"[ -e {K8S_ETC}/manifests/kube-apiserver.yaml ] && {BIN_DIR}/kubeadm reset -f "
                    ">/dev/null 2>&1; true",
                )
            await self._kubeadm(
                ctx, m0, f"init --config {INIT_CONFIG} --upload-certs --skip-token-print", "init"
            )
        await run_checked(ctx, m0, f"mkdir -p /root/.kube && install -m 0600 {ADMIN_CONF} /root/.kube/config")
        await lb.install_vip(ctx, m0)
        await self.join(ctx, masters[1:], workers)

    async def _join_credentials(self, ctx: RuntimeContext, *, own: bool = False) -> tuple[str, str]:
        """(token, CA hash): a fresh bootstrap token (given to kubeadm on stdin, never on a command
        line or in a log) and the pin of master0's CA. Workers joining together share one token;
        each master gets its own (`own`), made after the previous master joined."""
        async with self._lock:
            token, pin = ctx.shared.get("kubeadm-token"), ctx.shared.get("kubeadm-ca-hash")
            if token and pin and not own:
                return token, pin
            m0 = ctx.master0
            token = new_bootstrap_token()
            create = (
                f'read -r t; {BIN_DIR}/kubeadm token create "$t" --ttl {TOKEN_TTL} '
                f"--kubeconfig {ADMIN_CONF} >/dev/null"
            )
            made = await ctx.fleet.run(ctx.target(m0), create, sudo=True, input=token + "\n", timeout=120)
            if not made.ok:
                raise RuntimeErrorSealer(
                    f"{m0.ip}: kubeadm token create failed: {made.stderr.strip()[-300:]}",
                    "is the control plane on master0 healthy? (`kubectl get --raw=/readyz`)",
                )
            with tempfile.TemporaryDirectory(prefix="sealer-kubeadm-") as tmp:
                dst = Path(tmp) / "ca.crt"
                await ctx.fleet.get(ctx.target(m0), CA_CRT, dst, sudo=True)
                pin = ca_cert_hash(dst.read_text())
            if not own:
                ctx.shared["kubeadm-token"] = token
            ctx.shared["kubeadm-ca-hash"] = pin
            return token, pin

    async def join(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        for host in masters:  # one at a time: stacked etcd grows one member at a time
            await self._join_one(ctx, host, control_plane=True)
        if masters:
            await lb.refresh_balancers(ctx)
        await asyncio.gather(*(self._join_one(ctx, w, control_plane=False) for w in workers))

    async def _join_one(self, ctx: RuntimeContext, host: Host, *, control_plane: bool) -> None:
        ctx.say(host.ip, "kubeadm join" + (" --control-plane" if control_plane else ""))
        await self._prepare(ctx, host)
        use_lb = not control_plane and lb.lb_kind(ctx.cluster) == "haproxy"
        if use_lb:
            await lb.install_lb(ctx, host, ctx.cluster.masters)
        if not await self._joined(ctx, host):
            inputs = await self._kubeadm_inputs(ctx)
            token, pin = await self._join_credentials(ctx, own=control_plane)
            # discovery only: the kubelet then uses the endpoint in cluster-info (rewritten below)
            api_server = f"{lb.LISTEN_HOST}:{lb.LISTEN_PORT}" if use_lb else f"{ctx.master0.ip}:{API_PORT}"
            key = ctx.shared.get("kubeadm-certificate-key") if control_plane else None
            if control_plane and key is None:
                # a resumed run: upload the control-plane certificates again under a new key
                key = secrets.token_hex(32)
                upload = await ctx.fleet.run(
                    ctx.target(ctx.master0),
                    f"read -r k; {BIN_DIR}/kubeadm init phase upload-certs --upload-certs "
                    f'--certificate-key "$k" --config {INIT_CONFIG} >/dev/null',
                    sudo=True,
                    input=key + "\n",
                    timeout=120,
                )
                upload.check()
                ctx.shared["kubeadm-certificate-key"] = key
            doc = inputs.join_document(
                host, token=token, ca_cert_hash=pin, api_server=api_server, certificate_key=key
            )
            await put_if_changed(ctx, host, JOIN_CONFIG, render([doc]), "0600")
            await self._kubeadm(ctx, host, f"join --config {JOIN_CONFIG}", "join")
        if use_lb:
            # The kubelet's kubeconfig names the cluster endpoint; on a worker it goes through the
            # local balancer so losing one master does not cut the node off.
            await run_checked(
                ctx,
                host,
                f"if ! grep -q 'server: {lb.local_endpoint()}' {KUBELET_CONF}; then "
                f"sed -i 's#^\\( *server:\\) .*#\\1 {lb.local_endpoint()}#' {KUBELET_CONF} && "
                "systemctl restart kubelet.service; fi",
            )
        if control_plane:
            await lb.install_vip(ctx, host)
            # A further master's kubelet and admin use its own API server, so they keep working
            # when master0 (where the endpoint name points) is down.
            own = f"https://{host.ip}:{API_PORT}"
            await run_checked(
                ctx,
                host,
                f"[ -s {ADMIN_CONF} ] || {{ echo 'kubeadm join wrote no {ADMIN_CONF}: "
                "this host did not become a control-plane node' >&2; exit 1; }; "
                f"if ! grep -q 'server: {own}' {KUBELET_CONF}; then "
                f"sed -i 's#^\\( *server:\\) .*#\\1 {own}#' {KUBELET_CONF} && "
                "systemctl restart kubelet.service; fi; "
                f"mkdir -p /root/.kube && install -m 0600 {ADMIN_CONF} /root/.kube/config && "
                f"sed -i 's#^\\( *server:\\) .*#\\1 {own}#' /root/.kube/config",
            )

    async def remove(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        """Reset hosts leaving the cluster (the engine drained them and deleted their Nodes);
        `kubeadm reset` on a master removes its stacked etcd member, so masters go one at a time. Its
        failure to do so is only a warning in kubeadm's output: a remaining master then checks and
        takes the member out, so no dead member is left counting against etcd's quorum."""
        for master in masters:
            await self.reset(ctx, [master])
            left = await self.forget_member(ctx, master)
            if left:
                ctx.say(master.ip, left)
        if masters:
            await lb.refresh_balancers(ctx)
        if workers:
            await self.reset(ctx, workers)

    async def reset(self, ctx: RuntimeContext, hosts: list[Host]) -> None:
        await reset_hosts(ctx, hosts, reset_script(), timeout=300, done="kubernetes removed")

    async def upgrade(self, ctx: RuntimeContext, image: str) -> None:
        """kubeadm's order: the first control plane (`upgrade apply`), the other control planes one
        at a time, then the workers (`upgrade node`)."""
        for host in [*ctx.cluster.masters, *ctx.cluster.workers]:
            await self.upgrade_host(ctx, host)

    async def upgrade_host(self, ctx: RuntimeContext, host: Host) -> None:
        """kubeadm's documented upgrade of one node: the new kubeadm first, `kubeadm upgrade apply
        <version>` on master0 (it upgrades the cluster's configuration and its own control plane) or
        `kubeadm upgrade node` elsewhere, then the new kubelet/kubectl and a kubelet restart. A
        downgrade is refused before anything changes."""
        root = quote_path(ctx.rootfs)
        probe = await run_checked(
            ctx,
            host,
            f'echo "new=$({root}/bin/kubeadm version -o short 2>/dev/null)"; '
            f'echo "old=$({BIN_DIR}/kubeadm version -o short 2>/dev/null)"',
        )
        found = dict(line.partition("=")[::2] for line in probe.splitlines() if "=" in line)
        new, old = found.get("new", "").strip(), found.get("old", "").strip()
        if not new:
            raise RuntimeErrorSealer(
                f"{host.ip}: the new ClusterImage has no working bin/kubeadm",
                "is it a kubernetes ClusterImage? see `sealer inspect`",
            )
        if old and version_key(new) < version_key(old):
            raise RuntimeErrorSealer(
                f"{host.ip}: the image carries kubeadm {new}, older than the installed {old}; "
                "kubeadm does not support downgrades",
                "use an image with the installed Kubernetes version or newer",
            )
        ctx.say(host.ip, f"upgrading kubernetes {old or '?'} -> {new}")
        await run_checked(ctx, host, install_binaries_script(ctx.rootfs, ("kubeadm",)))
        if host.ip == ctx.master0.ip:
            await self._kubeadm(ctx, host, f"upgrade apply {shlex.quote(new)} --yes", "upgrade apply")
        else:
            await self._kubeadm(ctx, host, "upgrade node", "upgrade node")
        await run_checked(ctx, host, install_binaries_script(ctx.rootfs, ("kubelet", "kubectl")))
        # Always restart: an earlier attempt may have swapped the binary and been killed before it.
        await run_checked(ctx, host, "systemctl daemon-reload && systemctl restart kubelet.service")
        self._versions["kubeadm"] = new

    async def kubeconfig(self, ctx: RuntimeContext) -> str:
        m0 = ctx.master0
        with tempfile.TemporaryDirectory(prefix="sealer-kubeadm-") as tmp:
            dst = Path(tmp) / "admin.conf"
            await ctx.fleet.get(ctx.target(m0), ADMIN_CONF, dst, sudo=True)
            text = dst.read_text()
        return rewrite_server(text, f"https://{m0.ip}:{API_PORT}")

    def versions(self) -> Mapping[str, str]:
        return dict(self._versions)

    # etcd membership ---------------------------------------------------------------------------
    async def forget_member(self, ctx: RuntimeContext, master: Host) -> str | None:
        """Take a removed master's stacked etcd member out from a remaining master (master0 first)
        with the image's etcdctl: `member list`, `member remove <ID>` of the member whose peer URL
        names the host's IP on :2380, then `member list` again. Idempotent: a member already gone is
        fine. Raises while it is still listed, so the journaled step stays unfinished (the removal
        is not recorded as done) and a re-run retries. Returns a warning for the operator when the
        image has no etcdctl (an older image): nothing on the hosts can remove the member then.

        kubeadm-config keeps no list of control planes to clean up: ClusterStatus left it with
        kubeadm v1.22 (v1beta3, KEP 2506), and sealer needs v1.22 or later."""
        from sealer.runtime import etcd_backup

        etcdctl = etcd_backup.etcd_tools(ctx.rootfs)[0]
        others = [m for m in ctx.cluster.masters if m.ip not in (master.ip, ctx.master0.ip)]
        tried: list[str] = []
        for host in [ctx.master0, *others]:
            try:
                listed = await ctx.fleet.run(
                    ctx.target(host), member_list_script(etcdctl), sudo=True, timeout=60
                )
            except SealerError as err:  # this master cannot be reached either: ask the next one
                tried.append(f"{host.ip}: {err.message}")
                continue
            if listed.exit_code == NO_ETCDCTL:
                return (
                    "its etcd member could not be removed: the ClusterImage has no bin/etcdctl (an "
                    "image built before sealer bundled it); remove it with `etcdctl member remove <ID>` "
                    "in the etcd Pod of a remaining control plane, or etcd may lose quorum later"
                )
            if not listed.ok:
                tried.append(f"{host.ip}: {last_line(listed.stderr or listed.stdout)}")
                continue
            await self._remove_members(ctx, host, master, etcdctl, listed.stdout)
            return None
        raise RuntimeErrorSealer(
            f"{master.ip}: its etcd member could not be removed: no remaining master could list etcd's "
            "members (" + "; ".join(tried) + ")",
            f"check etcd on {ctx.master0.ip} (`crictl ps --name etcd`, the kubelet's log); then, there, "
            f"`{etcdctl_command(etcdctl, 'member list')}` shows the member with peer URL "
            f"https://{master.ip}:{ETCD_PEER_PORT}: remove it with `... member remove <ID>`, or run the "
            "same command again",
        )

    async def _remove_members(
        self, ctx: RuntimeContext, on: Host, master: Host, etcdctl: str, listing: str
    ) -> None:
        try:
            ids = members_at(listing, master.ip)
        except ValueError as err:
            raise RuntimeErrorSealer(
                f"{on.ip}: etcdctl member list gave no member list: {err}",
                f"run `{etcdctl_command(etcdctl, 'member list -w json')}` on {on.ip} and check its output",
            ) from None
        if not ids:
            ctx.say(master.ip, "its etcd member is gone already")
            return None
        failed = ""
        for member in ids:
            ctx.say(master.ip, f"removing its etcd member {member:x} from {on.ip}")
            removed = await ctx.fleet.run(
                ctx.target(on), etcdctl_command(etcdctl, f"member remove {member:x}"), sudo=True, timeout=60
            )
            # not found: gone between the list and now (kubeadm reset finishing, another run)
            if not removed.ok and "member not found" not in removed.stderr + removed.stdout:
                failed = last_line(removed.stderr or removed.stdout)
        again = await ctx.fleet.run(ctx.target(on), member_list_script(etcdctl), sudo=True, timeout=60)
        try:
            left = members_at(again.stdout, master.ip) if again.ok else ids
        except ValueError:
            left = ids
        if left:
            command = etcdctl_command(etcdctl, f"member remove {left[0]:x}")
            raise RuntimeErrorSealer(
                f"{master.ip}: its etcd member {left[0]:x} is still listed: "
                f"{failed or last_line(again.stderr or again.stdout)}",
                f"etcd removes a member only while a majority of its members answer; on {on.ip} run "
                f"`{command}`, then run the same command again",
            )
        return None

    # etcd backup / restore (runtime/etcd_backup.py) --------------------------------------------
    async def etcd_snapshot(self, ctx: RuntimeContext) -> str:
        """`etcdctl snapshot save` of master0's stacked etcd; returns the snapshot's path there."""
        from sealer.runtime import etcd_backup

        return await etcd_backup.kubeadm_snapshot(self, ctx)
