"""IP lists and ranges of spec.hosts[].ips."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealer.model import ipaddr
from sealer.model.ipaddr import AddressError


def test_single_addresses_are_normalised() -> None:
    assert ipaddr.expand_entry("10.0.0.1") == ["10.0.0.1"]
    assert ipaddr.expand_entry(" fd00:0::0001 ") == ["fd00::1"]


def test_inclusive_ipv4_range() -> None:
    assert ipaddr.expand_entry("10.0.0.254-10.0.1.1") == ["10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"]


def test_inclusive_ipv6_range() -> None:
    assert ipaddr.expand_entry("fd00::fe-fd00::101") == ["fd00::fe", "fd00::ff", "fd00::100", "fd00::101"]


def test_expand_keeps_order_and_duplicates() -> None:
    assert ipaddr.expand(["10.0.0.5", "10.0.0.1-10.0.0.2", "10.0.0.5"]) == [
        "10.0.0.5",
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.5",
    ]


@pytest.mark.parametrize(
    ("entry", "message", "hint"),
    [
        ("10.0.0.5-10.0.0.1", "ends at or before its start", "10.0.0.1-10.0.0.5"),
        ("10.0.0.5-10.0.0.5", "ends at or before its start", "just the address"),
        ("10.0.0.1-fd00::1", "mixes IPv4 and IPv6", "same family"),
        ("10.0.0.1-10.0.0.2-10.0.0.3", "is not a range", "one '-'"),
        ("10.0.0.256", "not a valid IPv4 or IPv6 address", "by address"),
        ("master-1", "not a valid IPv4 or IPv6 address", None),
        ("10.0.0.0/24", "is a CIDR", "inclusive range"),
        ("192.168.0.2:22", "carries a port", 'ssh.port: "22"'),
        ("[fd00::1]:22", "brackets", "ssh.port"),
        ("", "empty IP address", None),
        ("10.0.0.1-10.1.0.1", "covers 65537 addresses", "typo"),
        ("010.0.0.1", "not a valid", None),
    ],
)
def test_bad_entries_explain_themselves(entry: str, message: str, hint: str | None) -> None:
    with pytest.raises(AddressError) as info:
        ipaddr.expand_entry(entry)
    assert message in info.value.message
    if hint is not None:
        assert info.value.hint is not None and hint in info.value.hint


def test_largest_allowed_range() -> None:
    assert len(ipaddr.expand_entry("10.0.0.0-10.0.255.255")) == ipaddr.MAX_RANGE_SIZE


def test_family() -> None:
    assert ipaddr.family("10.0.0.1") == 4
    assert ipaddr.family("::1") == 6
    assert ipaddr.family(ipaddress.ip_address("fd00::2")) == 6


def test_compress_builds_ranges_from_runs() -> None:
    assert ipaddr.compress(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9", "fd00::1", "fd00::2"]) == [
        "10.0.0.1-10.0.0.3",
        "10.0.0.9",
        "fd00::1-fd00::2",
    ]
    # a descending pair is not a run: ranges only go up
    assert ipaddr.compress(["10.0.0.2", "10.0.0.1"]) == ["10.0.0.2", "10.0.0.1"]


def test_cidr() -> None:
    assert str(ipaddr.parse_cidr("10.96.0.0/16")) == "10.96.0.0/16"
    assert ipaddr.nth_address(ipaddr.parse_cidr("10.96.0.0/16"), 10) == "10.96.0.10"
    with pytest.raises(AddressError, match="host bits"):
        ipaddr.parse_cidr("10.96.0.1/16")
    with pytest.raises(AddressError, match="not a CIDR"):
        ipaddr.parse_cidr("10.96.0.0")
    with pytest.raises(AddressError, match="not a valid CIDR"):
        ipaddr.parse_cidr("10.96.0.0/33")
    with pytest.raises(AddressError, match="no address number"):
        ipaddr.nth_address(ipaddr.parse_cidr("10.0.0.0/30"), 10)


ipv4 = st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(min_value=0, max_value=2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(ipv4, ipv6), max_size=40))
def test_compress_then_expand_round_trips(ips: list[str]) -> None:
    assert ipaddr.expand(ipaddr.compress(ips)) == ips


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**32 - 2000), st.integers(min_value=1, max_value=1000))
def test_range_expansion_matches_arithmetic(start: int, length: int) -> None:
    first, last = ipaddress.IPv4Address(start), ipaddress.IPv4Address(start + length)
    expanded = ipaddr.expand_entry(f"{first}-{last}")
    assert len(expanded) == length + 1
    assert expanded[0] == str(first) and expanded[-1] == str(last)
    assert ipaddr.compress(expanded) == [f"{first}-{last}"]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**128 - 1000), st.integers(min_value=1, max_value=300))
def test_ipv6_range_round_trips(start: int, length: int) -> None:
    text = f"{ipaddress.IPv6Address(start)}-{ipaddress.IPv6Address(start + length)}"
    assert ipaddr.compress(ipaddr.expand_entry(text)) == [text]
