"""The test bed's pure parts (no root needed): rate parsing, lab naming and addressing."""

from __future__ import annotations

import pytest

from tests.testbed import TestbedError
from tests.testbed.net import LabNet, rate_bits


@pytest.mark.parametrize(
    ("rate", "bits"),
    [
        ("50mbit", 50_000_000),
        ("1gbit", 10**9),
        ("500kbit", 500_000),
        ("1.5mbit", 1_500_000),
        ("10mbps", 80_000_000),
        ("64bit", 64),
        (" 8MBit ", 8_000_000),
    ],
)
def test_rate_bits_follows_tc_units(rate: str, bits: int) -> None:
    assert rate_bits(rate) == bits


@pytest.mark.parametrize("rate", ["", "fast", "50", "50 mbit", "-1mbit", "50mb"])
def test_bad_rates_are_refused_with_a_hint(rate: str) -> None:
    with pytest.raises(TestbedError, match="bad rate") as e:
        rate_bits(rate)
    assert "mbit" in e.value.hint


def test_lab_names_and_addresses() -> None:
    n = LabNet("tb3", 3)
    assert (n.bridge_ns, n.main_if, n.host_ns(12)) == ("tb3lab", "tb3-main", "tb3h12")
    assert (n.subnet, n.operator_ip, n.host_ip(1), n.host_ip(240)) == (
        "10.213.3.0/24",
        "10.213.3.1",
        "10.213.3.11",
        "10.213.3.250",
    )
    assert len(LabNet("abcdefgh", 0).main_if) <= 15, "fits IFNAMSIZ"
    with pytest.raises(TestbedError):
        n.host_ip(241)
    with pytest.raises(TestbedError):
        n.host_ip(0)
