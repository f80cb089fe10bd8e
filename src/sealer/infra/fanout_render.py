"""Terminal view of a fan-out: one line per host (who feeds it, bytes, rate, ETA) and a total,
redrawn live with rich. Feed it HostProgress events as the `progress` callback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sealer.infra.fanout import HostProgress

_STYLE = {"done": "green", "failed": "red", "rerouted": "yellow", "receiving": "cyan"}


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - loop always returns


def human_eta(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(seconds + 0.5)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class FanoutView:
    """The latest state of every host; callable as the fan-out's progress callback."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostProgress] = {}

    def __call__(self, event: HostProgress) -> None:
        old = self.hosts.get(event.host)
        if old is not None and event.total == 0:
            # state-only events (setup, committing, done) keep the last byte counts
            event = HostProgress(event.host, old.received, old.total, old.rate, old.eta, event.state,
                                 event.parent if event.parent != "operator" else old.parent, event.round)
        self.hosts[event.host] = event

    @property
    def eta(self) -> float | None:
        """When the last host should be done: the largest ETA among hosts still receiving."""
        etas = [p.eta for p in self.hosts.values() if p.state == "receiving"]
        if any(e is None for e in etas):
            return None
        return max((e for e in etas if e is not None), default=0.0)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = Table(box=None, pad_edge=False, show_edge=False)
        for col, just in (("host", "left"), ("fed by", "left"), ("state", "left"), ("received", "right"),
                          ("rate", "right"), ("eta", "right")):
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        for p in self.hosts.values():
            got = f"{human_bytes(p.received)} / {human_bytes(p.total)}" if p.total else "–"
            table.add_row(
                p.host, p.parent, Text(p.state, style=_STYLE.get(p.state, "")), got,
                f"{human_bytes(p.rate)}/s" if p.rate else "–", human_eta(p.eta),
            )
        yield table
        done = sum(1 for p in self.hosts.values() if p.state == "done")
        failed = sum(1 for p in self.hosts.values() if p.state == "failed")
        yield Text(f"{done}/{len(self.hosts)} done, {failed} failed, eta {human_eta(self.eta)}")


@contextlib.contextmanager
def live_view(console: Console | None = None, *, refresh_per_second: float = 4) -> Iterator[FanoutView]:
    """`with live_view() as view: await fanout_copy(..., progress=view)`."""
    view = FanoutView()
    with Live(view, console=console, refresh_per_second=refresh_per_second, transient=False):
        yield view
