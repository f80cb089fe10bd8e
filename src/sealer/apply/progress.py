"""Progress of an operation for people: one line per phase with each host's status, printed when
the phase ends (so logs and CI output stay readable); silent with -q."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.text import Text

_STYLE = {"ok": "green", "skipped": "dim", "failed": "bold red", "warning": "yellow"}
_MARK = {"ok": "✓", "skipped": "·", "failed": "✗", "warning": "!"}


@dataclass
class _Phase:
    name: str
    started: float
    hosts: dict[str, tuple[str, str]] = field(default_factory=dict)  # host -> (status, note)


class Progress:
    """Collects per-host results of the current phase and prints the phase as one line."""

    def __init__(self, console: Console | None = None, *, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.quiet = quiet
        self._phase: _Phase | None = None
        self._last: str | None = None

    @property
    def current(self) -> str | None:
        """The phase running now, else the one that ended last (where a failure happened)."""
        return self._phase.name if self._phase else self._last

    def phase(self, name: str) -> None:
        self.end_phase()
        self._phase = _Phase(name, time.monotonic())

    def host(self, host: str, status: str, note: str = "") -> None:
        if self._phase is None:
            self.phase("run")
        assert self._phase is not None
        self._phase.hosts[host] = (status, note)

    def note(self, message: str) -> None:
        if not self.quiet:
            self.console.print(Text("  " + message, style="dim"))

    def warn(self, message: str) -> None:
        self.console.print(Text(f"warning: {message}", style="yellow"))

    def end_phase(self, failed: bool = False) -> None:
        phase, self._phase = self._phase, None
        if phase is not None:
            self._last = phase.name
        if phase is None or (self.quiet and not failed):
            return
        statuses = [s for s, _ in phase.hosts.values()]
        worst = (
            "failed"
            if failed or "failed" in statuses
            else ("skipped" if statuses and all(s == "skipped" for s in statuses) else "ok")
        )
        line = Text()
        line.append(f"{_MARK[worst]} ", style=_STYLE[worst])
        line.append(f"{phase.name:<22}", style="bold")
        for host, (status, note) in phase.hosts.items():
            line.append(" ")
            line.append(host, style=_STYLE.get(status, ""))
            shown = note or status
            line.append(f" {shown}", style="dim" if status != "failed" else "red")
        line.append(f"  {time.monotonic() - phase.started:.1f}s", style="dim")
        self.console.print(line)
