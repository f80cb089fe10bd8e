"""Host address lists for `spec.hosts[].ips`: single IPs and inclusive ranges `a-b`, IPv4 or IPv6.

Pure functions; a bad entry raises `AddressError` carrying a message and a hint, which the
Clusterfile parser turns into a located Problem.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Family = Literal[4, 6]

# One range may not expand to more hosts than this: a typo such as 10.0.0.1-10.9.0.1 would
# otherwise plan millions of SSH connections (and an IPv6 range could not be expanded at all).
MAX_RANGE_SIZE = 65536


class AddressError(ValueError):
    """An address, range or CIDR that cannot be used, with a hint to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def parse_ip(text: str) -> IPAddress:
    """One bare IPv4/IPv6 address; explains the usual mistakes (port, CIDR, hostname)."""
    value = text.strip()
    if not value:
        raise AddressError("empty IP address", "write an address such as 10.0.0.11")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        pass
    if "/" in value:
        raise AddressError(
            f"{value!r} is a CIDR, not a host address",
            "list host addresses (10.0.0.11) or an inclusive range (10.0.0.11-10.0.0.15)",
        )
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and host.count(":") == 0:
        raise AddressError(
            f"{value!r} carries a port",
            f'write the address alone ({host}) and put the port in ssh.port: "{port}"',
        )
    if value.startswith("[") and "]" in value:
        raise AddressError(
            f"{value!r}: brackets and ports are not part of an address",
            "write the IPv6 address alone and put the port in ssh.port",
        )
    raise AddressError(
        f"{value!r} is not a valid IPv4 or IPv6 address",
        "hosts are listed by address (e.g. 10.0.0.11 or fd00::11), not by name",
    )


def family(ip: str | IPAddress) -> Family:
    addr = ip if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address) else parse_ip(ip)
    return 4 if addr.version == 4 else 6


def expand_entry(entry: str) -> list[str]:
    """`a` -> [a]; `a-b` -> every address from a to b inclusive (b must be greater than a)."""
    text = entry.strip()
    if "-" not in text:
        return [str(parse_ip(text))]
    first_text, _, last_text = text.partition("-")
    if "-" in last_text:
        raise AddressError(
            f"{text!r} is not a range", "a range is two addresses joined by one '-': 10.0.0.11-10.0.0.15"
        )
    first, last = parse_ip(first_text), parse_ip(last_text)
    if first.version != last.version:
        raise AddressError(
            f"range {text!r} mixes IPv4 and IPv6", "both ends of a range must be the same family"
        )
    if int(last) <= int(first):
        raise AddressError(
            f"range {text!r} ends at or before its start",
            f"write the lower address first: {last}-{first}"
            if int(last) < int(first)
            else f"a one-address range is just the address: {first}",
        )
    size = int(last) - int(first) + 1
    if size > MAX_RANGE_SIZE:
        raise AddressError(
            f"range {text!r} covers {size} addresses (at most {MAX_RANGE_SIZE})",
            "check the range ends for a typo, or split the hosts into several groups",
        )
    cls = type(first)
    return [str(cls(n)) for n in range(int(first), int(last) + 1)]


def expand(entries: Iterable[str]) -> list[str]:
    """Expand every entry in order; duplicates are kept (the validator reports them)."""
    result: list[str] = []
    for entry in entries:
        result.extend(expand_entry(entry))
    return result


def compress(ips: Sequence[str]) -> list[str]:
    """Inverse of `expand`: runs of consecutive ascending addresses become `a-b`.

    Order is kept, so expand(compress(x)) == x for any list of valid addresses.
    """
    result: list[str] = []
    addrs = [parse_ip(ip) for ip in ips]
    i = 0
    while i < len(addrs):
        j = i
        while (
            j + 1 < len(addrs)
            and addrs[j + 1].version == addrs[i].version
            and int(addrs[j + 1]) == int(addrs[j]) + 1
        ):
            j += 1
        result.append(str(addrs[i]) if j == i else f"{addrs[i]}-{addrs[j]}")
        i = j + 1
    return result


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A network such as 10.96.0.0/16; host bits must be zero, as kubeadm requires."""
    value = text.strip()
    if "/" not in value:
        raise AddressError(f"{value!r} is not a CIDR", "write a network with its prefix: 10.96.0.0/16")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise AddressError(f"{value!r} is not a valid CIDR ({exc})", "e.g. 10.96.0.0/16") from None
        raise AddressError(f"{value!r} has host bits set", f"did you mean {loose}?") from None


def nth_address(network: ipaddress.IPv4Network | ipaddress.IPv6Network, n: int) -> str:
    """The n-th address of a network (Go sealer: KubeSvcIP = 1st, DNSSvcIP = 10th of SvcCIDR)."""
    if n >= network.num_addresses:
        raise AddressError(f"{network} has no address number {n}", "use a larger network")
    return str(network.network_address + n)
