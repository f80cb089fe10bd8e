"""Terminal view of a fan-out: one line per host (who feeds it, bytes, rate, ETA) and a total,
redrawn live with rich. Feed it HostProgress events as the `progress` callback."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sealer.infra.fanout import HostProgress

_STYLE = {"done": "green", "failed": "red", "rerouted": "yellow", "receiving": "cyan"}
# Most interesting first: what went wrong, then what is still moving, then what is over.
_RANK = {"failed": 0, "rerouted": 1, "setup": 2, "receiving": 2, "committing": 2, "skipped": 3, "done": 4}
_UNFINISHED_RANK = 2
_HEIGHT_UNKNOWN = 20
_SETTLED = ("done", "skipped")


def _state_rank(state: str) -> int:
    return _RANK.get(state, _UNFINISHED_RANK)  # a state this view does not know is not over yet


def _interest(p: HostProgress) -> tuple[int, float]:
    # among unfinished hosts the slowest first; no ETA yet (no rate) may be a stalled host
    return _state_rank(p.state), -(p.eta if p.eta is not None else float("inf"))


def _height(options: ConsoleOptions) -> int:
    height = options.height or options.size.height
    return height if height and height > 0 else _HEIGHT_UNKNOWN


def _visible(hosts: list[HostProgress], height: int, *, live: bool) -> int:
    """How many of the (sorted) hosts get a row: the rest are counted on one summary line.
    Two lines always go to the table header and the total line, one more to the summary."""
    if len(hosts) <= height - 2:
        return len(hosts)
    room = max(0, height - 3)
    if live:
        return room
    return max(room, sum(1 for p in hosts if p.state not in _SETTLED))


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

    def __init__(self, *, live: bool = False) -> None:
        self.hosts: dict[str, HostProgress] = {}
        # live: at most one screenful, redrawn 4x/s (a row per host costs ~0.4 ms a redraw).
        # Otherwise (the last frame, logs) every host that is not done is listed.
        self.live = live

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
        # list() copies in one C call: Live redraws from its own thread while events arrive
        etas = [p.eta for p in list(self.hosts.values()) if p.state == "receiving"]
        if any(e is None for e in etas):
            return None
        return max((e for e in etas if e is not None), default=0.0)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        hosts = sorted(self.hosts.values(), key=_interest)
        shown = _visible(hosts, _height(options), live=self.live)
        table = Table(box=None, pad_edge=False, show_edge=False)
        # One terminal line per row (no wrapping), so the row budget is also the line budget; a
        # narrow terminal shortens the other columns first: the host is what the row is about.
        name = max((len(p.host) for p in hosts[:shown]), default=4)
        table.add_column("host", no_wrap=True, overflow="ellipsis", min_width=name)
        for col in ("fed by", "state"):
            table.add_column(col, no_wrap=True, overflow="ellipsis")
        for col in ("received", "rate", "eta"):
            table.add_column(col, justify="right", no_wrap=True, overflow="ellipsis")
        for p in hosts[:shown]:
            got = f"{human_bytes(p.received)} / {human_bytes(p.total)}" if p.total else "–"
            table.add_row(
                p.host, p.parent, Text(p.state, style=_STYLE.get(p.state, "")), got,
                f"{human_bytes(p.rate)}/s" if p.rate else "–", human_eta(p.eta),
            )
        yield table
        if shown < len(hosts):
            hidden = Counter(p.state for p in hosts[shown:])
            counts = ", ".join(f"{hidden[s]} {s}" for s in sorted(hidden, key=_state_rank))
            more = f"+{len(hosts) - shown} more: {counts}"
            yield Text(more, style="dim", no_wrap=True, overflow="ellipsis")
        done = sum(1 for p in hosts if p.state == "done")
        failed = sum(1 for p in hosts if p.state == "failed")
        yield Text(f"{done}/{len(hosts)} done, {failed} failed, eta {human_eta(self.eta)}")


@contextlib.contextmanager
def live_view(console: Console | None = None, *, refresh_per_second: float = 4) -> Iterator[FanoutView]:
    """`with live_view() as view: await fanout_copy(..., progress=view)`."""
    view = FanoutView(live=True)
    with Live(view, console=console, refresh_per_second=refresh_per_second, transient=False):
        try:
            yield view
        finally:
            # Live draws one last frame on exit, uncropped: it stays on screen, so every failure in it
            view.live = False
