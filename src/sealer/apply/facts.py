"""Facts about each host (arch, OS, free disk at dataRoot, listening ports, clock, what sealer put
there) gathered in one command per host, and the pre-flight report built from them.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from sealer.errors import HostError, SealerError
from sealer.infra.fleet import Fleet
from sealer.infra.host import Target

MARKER = "/etc/sealer/cluster"  # written at install: the name of the cluster this host belongs to
# Ports every runtime (k3s, k0s, kubeadm) needs: API server, etcd client/peer, kubelet.
MASTER_PORTS = (6443, 2379, 2380, 10250)
WORKER_PORTS = (10250,)
# Processes that may hold those ports on a host that already belongs to this cluster (a re-run):
# k3s (one process), k0s and kubeadm (the control-plane components they run), the registry and the
# node-local balancer sealer installs; python3 is the runtimes' stand-ins on the test bed.
_OWN_NAMES = (
    "k3s",
    "k3s-server",
    "k3s-agent",
    "k0s",
    "kube-apiserver",
    "etcd",
    "kubelet",
    "kube-controller-manager",
    "kube-scheduler",
    "konnectivity-server",
    "containerd",
    "haproxy",
    "sealer-registry",
    "registry",
    "python3",
)
# ss shows the kernel's comm, which is cut to 15 characters ("kube-controller"): accept both.
OWN_PROCESSES = frozenset({*_OWN_NAMES, *(n[:15] for n in _OWN_NAMES)})
SKEW_WARN = 30.0


def facts_script(data_root: str) -> str:
    root = shlex.quote(data_root)
    return f"""d={root}; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
echo "os=$( (. /etc/os-release 2>/dev/null && echo "$ID $VERSION_ID") || echo unknown)"
echo "hostname=$(hostname)"
echo "time=$(date +%s)"
echo "disk_path=$d"
echo "disk_free_kb=$(df -Pk "$d" | awk 'NR==2 {{print $4}}')"
if [ -d /run/systemd/system ]; then echo systemd=yes; else echo systemd=no; fi
echo "cluster=$(cat {MARKER} 2>/dev/null | head -n1)"
if command -v ss >/dev/null 2>&1; then
  ss -Hltnp 2>/dev/null | while read -r _ _ _ local _ users; do echo "listen=${{local##*:}} $users"; done
else
  for f in /proc/net/tcp /proc/net/tcp6; do
    [ -r $f ] && awk 'NR>1 && $4=="0A" {{split($2,a,":"); print "listenhex=" a[2]}}' $f
  done
fi
"""


@dataclass
class HostFacts:
    host: str
    arch: str = ""
    os: str = ""
    kernel: str = ""
    hostname: str = ""
    clock_skew: float = 0.0  # host clock minus this machine's, seconds
    disk_path: str = ""
    disk_free: int = 0  # bytes free on the filesystem that will hold dataRoot
    systemd: bool = False
    cluster: str = ""  # the sealer cluster this host already belongs to ("" none)
    listening: dict[int, str] = field(default_factory=dict)  # port -> owning process ("" unknown)

    @property
    def platform_arch(self) -> str:
        return {
            "x86_64": "amd64",
            "aarch64": "arm64",
            "armv7l": "arm",
            "ppc64le": "ppc64le",
            "s390x": "s390x",
        }.get(self.arch, self.arch)

    @property
    def node_name(self) -> str:
        return self.hostname.lower()


# RFC 1123 subdomain: what the kubelet accepts as a node name (the hostname, lower-cased).
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_USER = re.compile(r'\(\("([^"]+)"')


def parse_facts(host: str, text: str, now: float) -> HostFacts:
    facts = HostFacts(host)
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if key == "arch":
            facts.arch = value
        elif key == "os":
            facts.os = value
        elif key == "kernel":
            facts.kernel = value
        elif key == "hostname":
            facts.hostname = value
        elif key == "time" and value.isdigit():
            facts.clock_skew = int(value) - now
        elif key == "disk_path":
            facts.disk_path = value
        elif key == "disk_free_kb" and value.isdigit():
            facts.disk_free = int(value) * 1024
        elif key == "systemd":
            facts.systemd = value == "yes"
        elif key == "cluster":
            facts.cluster = value
        elif key == "listen":
            port, _, users = value.partition(" ")
            if port.isdigit():
                match = _USER.search(users)
                facts.listening[int(port)] = match.group(1) if match else ""
        elif key == "listenhex":
            try:
                facts.listening.setdefault(int(value, 16), "")
            except ValueError:
                pass
    return facts


async def gather(
    fleet: Fleet, targets: Sequence[Target], data_root: str
) -> dict[str, HostFacts | SealerError]:
    """Facts of every host (in parallel); a host that cannot be reached maps to its error."""
    script = facts_script(data_root)

    async def one(target: Target) -> HostFacts:
        before = time.time()
        result = await fleet.run(target, script, sudo=True, timeout=60)
        result.check()
        after = time.time()
        return parse_facts(target.name, result.stdout, (before + after) / 2)

    out: dict[str, HostFacts | SealerError] = {}
    for target, outcome in zip(targets, await fleet.each(targets, one), strict=True):
        if outcome.value is not None:
            out[target.address] = outcome.value
        else:
            out[target.address] = outcome.error or HostError(target.name, "no facts gathered")
    return out


@dataclass
class Finding:
    host: str
    severity: str  # "error" | "warning"
    message: str
    hint: str = ""


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def preflight(
    facts: Mapping[str, HostFacts],
    *,
    cluster: str,
    masters: Sequence[str],
    master0: str,
    registry_port: int | None,
    arches: Sequence[str],
    need_bytes: Mapping[str, int],
    need_what: Mapping[str, str] | None = None,
    spooled: Collection[str] = (),
) -> list[Finding]:
    """Everything that stops a host from taking the cluster, and what merely looks odd.
    `need_what` says per host what its `need_bytes` are for (default: the rootfs); hosts in
    `spooled` receive data host to host, which holds it twice while it arrives."""
    found: list[Finding] = []
    names: dict[str, str] = {}
    for ip, f in facts.items():
        ours = f.cluster == cluster
        if f.cluster and not ours:
            found.append(
                Finding(
                    ip,
                    "error",
                    f"already belongs to sealer cluster {f.cluster!r} ({MARKER})",
                    f"delete that cluster first, or pick another host (cluster {cluster})",
                )
            )
        if not f.systemd:
            found.append(
                Finding(
                    ip,
                    "error",
                    "systemd is not running (sealer installs systemd units)",
                    "use a host booted with systemd as PID 1",
                )
            )
        if arches and f.platform_arch not in arches:
            found.append(
                Finding(
                    ip,
                    "error",
                    f"architecture {f.arch} has no variant in the ClusterImage (it has {', '.join(arches)})",
                    "build or pull the image for that platform",
                )
            )
        need = need_bytes.get(ip, 0)
        if need and f.disk_free < need:
            found.append(
                Finding(
                    ip,
                    "error",
                    f"too little disk at {f.disk_path}: {_size(f.disk_free)} free, "
                    f"{_size(need)} needed for {(need_what or {}).get(ip, 'the rootfs')}"
                    + (" (sent host to host: spool + files while it arrives)" if ip in spooled else ""),
                    "free space there or change spec.dataRoot"
                    + (", or use --distributor ssh (no spool)" if ip in spooled else ""),
                )
            )
        ports = list(MASTER_PORTS if ip in masters else WORKER_PORTS)
        if ip == master0 and registry_port:
            ports.append(registry_port)
        for port in ports:
            if port not in f.listening:
                continue
            owner = f.listening[port]
            if ours and (owner in OWN_PROCESSES or owner == ""):
                continue  # a re-run: our own runtime, registry or balancer holds it
            who = f" by {owner}" if owner else ""
            found.append(
                Finding(
                    ip,
                    "error",
                    f"port {port} is already in use{who}",
                    f"stop what listens on {port} on {ip}, or pick another host",
                )
            )
        if abs(f.clock_skew) > SKEW_WARN:
            found.append(
                Finding(
                    ip,
                    "warning",
                    f"clock differs from this machine's by {f.clock_skew:+.0f}s",
                    "sync the clocks (chrony/NTP): certificates and etcd dislike skew",
                )
            )
        if f.node_name and not _NODE_NAME.match(f.node_name):
            found.append(Finding(ip, "error", f"hostname {f.hostname!r} is not a valid Kubernetes node name",
                                 "give the host a name of lower-case letters, digits, '-' and '.' "
                                 "(hostnamectl set-hostname ...)"))
        if f.node_name:
            if f.node_name in names:
                found.append(
                    Finding(
                        ip,
                        "error",
                        f"hostname {f.hostname} is also the hostname of "
                        f"{names[f.node_name]}; node names must be unique",
                        "give each host its own hostname",
                    )
                )
            names[f.node_name] = ip
    return found
