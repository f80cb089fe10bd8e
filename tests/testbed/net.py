"""The lab network: a bridge in its own netns, one netns per host, a veth for the operator (main
namespace, address .1), an unreachable safety route, and tc shaping / link cuts for fault injection."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .common import TestbedError, run

_RATE_RE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$")
_RATE_BITS = {
    "bit": 1,
    "kbit": 10**3,
    "mbit": 10**6,
    "gbit": 10**9,
    "bps": 8,
    "kbps": 8 * 10**3,
    "mbps": 8 * 10**6,
    "gbps": 8 * 10**9,
}


def rate_bits(rate: str) -> int:
    """'50mbit' -> 50_000_000 (tc's units: kbit is 1000 bit/s, mbps is megabytes/s)."""
    m = _RATE_RE.match(rate.strip().lower())
    if not m:
        raise TestbedError(f"bad rate {rate!r}", "use tc units, e.g. 500kbit, 50mbit, 1gbit")
    return int(float(m.group(1)) * _RATE_BITS[m.group(2)])


# The lab is IPv4-only: no router advertisements, link-local chatter or v6 paths around the bridge.
_NO_IPV6 = "net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"


def _disable_ipv6(ns: str) -> None:
    run(["ip", "netns", "exec", ns, "sysctl", "-qw", *_NO_IPV6.split()])


@dataclass(frozen=True)
class LabNet:
    """Names and addresses of one lab; `k` selects the subnet 10.213.<k>.0/24."""

    lab: str
    k: int

    @property
    def bridge_ns(self) -> str:
        return f"{self.lab}lab"

    @property
    def main_if(self) -> str:
        return f"{self.lab}-main"

    @property
    def prefix(self) -> str:
        return f"10.213.{self.k}"

    @property
    def subnet(self) -> str:
        return f"{self.prefix}.0/24"

    @property
    def operator_ip(self) -> str:
        return f"{self.prefix}.1"

    def host_ns(self, i: int) -> str:
        return f"{self.lab}h{i}"

    def host_ip(self, i: int) -> str:
        if not 1 <= i <= 240:
            raise TestbedError(f"host index {i} out of range", "a lab holds hosts 1..240")
        return f"{self.prefix}.{10 + i}"

    @staticmethod
    def bridge_port(i: int) -> str:
        return f"v{i}"

    # -- lifecycle -------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.bridge_ns in netns_list()

    def up(self) -> None:
        if self.exists():
            return
        ns = self.bridge_ns
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _disable_ipv6(ns)
        run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", ns, "link", "set", "br0", "up"])
        run(["ip", "link", "add", self.main_if, "type", "veth", "peer", "name", "main", "netns", ns])
        run(["ip", "-n", ns, "link", "set", "main", "master", "br0", "up"])
        run(["sysctl", "-qw", f"net.ipv6.conf.{self.main_if}.disable_ipv6=1"])
        run(["ip", "addr", "add", f"{self.operator_ip}/24", "dev", self.main_if])
        run(["ip", "link", "set", self.main_if, "up"])
        # Stays when the veth is gone, so traffic for the lab can never leave through a real interface.
        run(["ip", "route", "replace", "unreachable", self.subnet, "metric", "4000"])

    def add_host(self, i: int) -> None:
        self.add_hosts([i])

    def add_hosts(self, indices: list[int]) -> None:
        """Give each host its netns, eth0 with its address on the bridge, no default route.

        One shell script for all hosts: a fork of this (large) Python process costs ~5 ms, a fork of
        sh ~1 ms, and `ip -batch` folds many link operations into one process."""
        if not indices:
            return
        existing = set(netns_list())
        lines = ["set -e"]
        names = [self.host_ns(i) for i in indices]
        lines += [f"ip netns del {ns}" for ns in names if ns in existing]
        lines.append("ip -b - <<'EOF'\n" + "".join(f"netns add {ns}\n" for ns in names) + "EOF")
        lines += [f"ip netns exec {ns} sysctl -qw {_NO_IPV6}" for ns in names]
        bridge = []
        for i, ns in zip(indices, names, strict=True):
            port = self.bridge_port(i)
            bridge.append(f"link add {port} type veth peer name eth0 netns {ns}\n")
            bridge.append(f"link set {port} master br0 up\n")
            lines.append(f"ip -n {self.bridge_ns} link del {port} 2>/dev/null || true")
        lines.append(f"ip -n {self.bridge_ns} -b - <<'EOF'\n" + "".join(bridge) + "EOF")
        for i, ns in zip(indices, names, strict=True):
            host = f"link set lo up\naddr add {self.host_ip(i)}/24 dev eth0\nlink set eth0 up\n"
            lines.append(f"ip -n {ns} -b - <<'EOF'\n{host}EOF")
        run(["sh", "-c", "\n".join(lines)])

    def down(self) -> None:
        """Delete every netns of this lab (by exact name), the operator veth and the safety route."""
        pat = re.compile(rf"^{re.escape(self.lab)}h(\d+)$")
        for ns in netns_list():
            if pat.match(ns):
                run(["ip", "netns", "del", ns], check=False)
        run(["ip", "link", "del", self.main_if], check=False)
        run(["ip", "netns", "del", self.bridge_ns], check=False)
        run(["ip", "route", "del", "unreachable", self.subnet, "metric", "4000"], check=False)

    # -- faults and shaping ----------------------------------------------------------------------
    def set_link(self, i: int, up: bool) -> None:
        # The bridge side: the host keeps its address and sockets, its packets just go nowhere.
        run(["ip", "-n", self.bridge_ns, "link", "set", self.bridge_port(i), "up" if up else "down"])

    def link_is_up(self, i: int) -> bool:
        out = run(["ip", "-n", self.bridge_ns, "-o", "link", "show", self.bridge_port(i)]).stdout
        return "state UP" in out or ",UP" in out.split(">")[0]

    def shape_host(self, i: int, rate: str | None) -> None:
        """Limit the host's bandwidth both ways (tbf on the bridge port and on the host's eth0)."""
        _tbf(["ip", "netns", "exec", self.bridge_ns], self.bridge_port(i), rate)
        _tbf(["ip", "netns", "exec", self.host_ns(i)], "eth0", rate)

    def shape_operator(self, rate: str | None) -> None:
        """Limit the operator machine's link to the lab both ways (its veth and the bridge-side peer)."""
        _tbf([], self.main_if, rate)
        _tbf(["ip", "netns", "exec", self.bridge_ns], "main", rate)


def _tbf(prefix: list[str], dev: str, rate: str | None) -> None:
    if rate is None:
        run([*prefix, "tc", "qdisc", "del", "dev", dev, "root"], check=False)
        return
    bits = rate_bits(rate)
    # tbf needs burst >= rate/HZ or it cannot reach the rate; 10 ms worth, at least 16 KiB.
    burst = max(16384, bits // 8 // 100)
    run(
        [
            *prefix,
            "tc",
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            str(bits),
            "burst",
            str(burst),
            "latency",
            "100ms",
        ]
    )


def netns_list() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]
