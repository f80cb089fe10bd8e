"""The fan-out's terminal view: per-host lines with feeder, bytes, rate and ETA, and a total."""

from __future__ import annotations

from rich.console import Console

from sealer.infra.fanout import HostProgress
from sealer.infra.fanout_render import FanoutView, human_bytes, human_eta


def render(view: FanoutView) -> str:
    console = Console(record=True, width=120, color_system=None)
    console.print(view)
    return console.export_text()


def test_view_shows_each_host_its_feeder_and_the_overall_eta() -> None:
    view = FanoutView()
    view(HostProgress("10.0.0.1", 50 << 20, 100 << 20, 5 << 20, 10.0, "receiving", "operator", 1))
    view(HostProgress("10.0.0.2", 40 << 20, 100 << 20, 4 << 20, 15.0, "receiving", "10.0.0.1", 1))
    text = render(view)
    assert "10.0.0.2" in text and "10.0.0.1" in text
    assert "40.0 MiB / 100.0 MiB" in text and "4.0 MiB/s" in text and "15s" in text
    assert view.eta == 15.0 and "eta 15s" in text
    # a state-only event keeps the byte counts and the feeder
    view(HostProgress("10.0.0.2", 0, 0, 0.0, None, "done", "operator", 1))
    assert view.hosts["10.0.0.2"].received == 40 << 20 and view.hosts["10.0.0.2"].parent == "10.0.0.1"
    view(HostProgress("10.0.0.1", 0, 0, 0.0, None, "failed", "operator", 1))
    assert "1/2 done, 1 failed" in render(view)


def test_eta_unknown_while_a_host_has_no_rate_yet() -> None:
    view = FanoutView()
    view(HostProgress("a", 0, 10, 0.0, None, "receiving", "operator", 1))
    assert view.eta is None and "eta –" in render(view)


def test_units() -> None:
    assert human_bytes(512) == "512 B" and human_bytes(3 << 30) == "3.0 GiB"
    assert human_eta(None) == "–" and human_eta(59.6) == "1m00s" and human_eta(5) == "5s"
