"""The fan-out's terminal view: per-host lines with feeder, bytes, rate and ETA, and a total."""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Collection

from rich.console import Console

from sealer.infra.fanout import HostProgress
from sealer.infra.fanout_render import FanoutView, human_bytes, human_eta, live_view


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


# -- 300 hosts: one screenful, most interesting first ------------------------------------------------

def fleet(n: int, failed: Collection[int] = (), done: Collection[int] = ()) -> FanoutView:
    view = FanoutView(live=True)
    for i in range(n):
        state = "failed" if i in failed else "done" if i in done else "receiving"
        view(HostProgress(f"10.0.{i // 250}.{i % 250 + 1}", i << 20, 300 << 20, 1 << 20, float(300 - i),
                          state, "operator", 1))
    return view


def screen(view: FanoutView, height: int, width: int = 120) -> list[str]:
    console = Console(record=True, width=width, height=height, color_system=None)
    console.print(view)
    return console.export_text().splitlines()


def summary(lines: list[str]) -> tuple[int, dict[str, int]]:
    """The "+N more: X done, Y receiving" line, parsed."""
    found = [m for line in lines if (m := re.fullmatch(r"\+(\d+) more: (.*)", line.strip()))]
    assert len(found) == 1, lines
    counts: dict[str, int] = {}
    for part in found[0].group(2).split(", "):
        count, state = part.split(" ", 1)
        counts[state] = int(count)
    return int(found[0].group(1)), counts


def host_rows(lines: list[str]) -> list[str]:
    return [line.split()[0] for line in lines if re.match(r"10\.0\.\d+\.\d+ ", line)]


def test_300_hosts_live_fit_a_30_line_terminal_and_the_summary_counts_the_rest() -> None:
    view = fleet(300, failed={7, 150, 299}, done=set(range(0, 300, 2)))
    lines = screen(view, 30)
    assert len(lines) <= 30
    rows = host_rows(lines)
    hidden, counts = summary(lines)
    assert len(rows) + hidden == 300 and sum(counts.values()) == hidden
    shown_states = Counter(view.hosts[h].state for h in rows)
    # every state adds up between the rows shown and the summary
    for state, total in Counter(p.state for p in view.hosts.values()).items():
        assert shown_states[state] + counts.get(state, 0) == total, state
    # failures first, then unfinished hosts slowest first; done hosts only in the summary
    assert rows[:3] == ["10.0.0.8", "10.0.0.151", "10.0.1.50"]
    etas = [view.hosts[h].eta or 0.0 for h in rows[3:]]
    assert all(view.hosts[h].state == "receiving" for h in rows[3:]) and etas == sorted(etas, reverse=True)
    assert counts["done"] == 149 and "failed" not in counts
    assert lines[-1].startswith("149/300 done, 3 failed")


def test_failed_hosts_fill_the_screen_before_anything_else_and_the_rest_are_counted() -> None:
    failed = set(range(5, 300, 6))  # 50 failures spread through the fleet
    view = fleet(300, failed=failed)
    lines = screen(view, 30)
    rows = host_rows(lines)
    assert len(lines) <= 30 and len(rows) == 27
    assert all(view.hosts[h].state == "failed" for h in rows)
    hidden, counts = summary(lines)
    assert hidden == 273 and counts == {"failed": 23, "receiving": 250}


def test_a_narrow_terminal_does_not_wrap_rows_past_the_height() -> None:
    view = fleet(300, failed={1})
    lines = screen(view, 12, width=40)
    assert len(lines) <= 12 and host_rows(lines)[0] == "10.0.0.2"
    hidden, counts = summary(lines)
    assert hidden == sum(counts.values()) == 300 - len(host_rows(lines))


def test_a_small_fan_out_shows_every_host_and_no_summary() -> None:
    view = fleet(5, done={0, 1})
    lines = screen(view, 30)
    assert sorted(host_rows(lines)) == [f"10.0.0.{i}" for i in range(1, 6)]
    assert not any("more:" in line for line in lines)


def test_the_final_frame_lists_every_failure_and_counts_only_settled_hosts() -> None:
    failed = set(range(5, 300, 6))
    view = fleet(300, failed=failed, done=set(range(300)) - failed)
    view.live = False
    lines = screen(view, 30)
    rows = host_rows(lines)
    assert {h for h in rows if view.hosts[h].state == "failed"} == {
        p.host for p in view.hosts.values() if p.state == "failed"}
    assert len(rows) == 50
    hidden, counts = summary(lines)
    assert hidden == 250 and counts == {"done": 250}


def test_live_view_is_one_screenful_while_live_and_lists_all_failures_on_its_last_frame() -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, height=30, force_terminal=True, color_system=None)
    failed = set(range(5, 300, 6))
    with live_view(console, refresh_per_second=50) as view:
        assert view.live
        for i in range(300):
            view(HostProgress(f"10.0.{i // 250}.{i % 250 + 1}", 1, 1, 1.0, 0.0,
                              "failed" if i in failed else "done", "operator", 1))
    assert not view.live
    last = out.getvalue().rsplit("host", 1)[-1]  # the last frame starts at the table header
    assert sum(f"10.0.{i // 250}.{i % 250 + 1} " in last for i in failed) == 50
    assert "+250 more: 250 done" in last
