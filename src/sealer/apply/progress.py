"""Progress of an operation for people: one line per phase with each host's status, printed when
the phase ends (so logs and CI output stay readable); silent with -q. Past a dozen hosts the line
counts the hosts that share a status and note and names only those that failed or warn."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.text import Text

_STYLE = {"ok": "green", "skipped": "dim", "failed": "bold red", "warning": "yellow"}
_MARK = {"ok": "✓", "skipped": "·", "failed": "✗", "warning": "!"}
# Up to this many hosts a phase line names each one; beyond, 300 names made a 10,000-character
# line per phase that nobody reads, so equal outcomes are counted instead.
ALL_NAMED = 12
# Hosts named per failed or warning group before "+N more" (the rest are in the error report).
NAMED_PER_GROUP = 10


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
        if len(phase.hosts) <= ALL_NAMED:
            for host, (status, note) in phase.hosts.items():
                line.append(" ")
                line.append(host, style=_STYLE.get(status, ""))
                shown = note or status
                line.append(f" {shown}", style="dim" if status != "failed" else "red")
        else:
            _append_counted(line, phase.hosts)
        line.append(f"  {time.monotonic() - phase.started:.1f}s", style="dim")
        self.console.print(line)


def _append_counted(line: Text, hosts: dict[str, tuple[str, str]]) -> None:
    """`300 hosts: 297 ok (x86_64 debian 12), 3 failed unreachable: 10.0.0.5, ...`; failed
    groups first, then warnings, then the rest, each in the order its first host reported."""
    groups: dict[tuple[str, str], list[str]] = {}
    for host, (status, note) in hosts.items():
        groups.setdefault((status, note), []).append(host)
    rank = {"failed": 0, "warning": 1}
    ordered = sorted(groups.items(), key=lambda item: rank.get(item[0][0], 2))
    line.append(f" {len(hosts)} hosts:")
    for i, ((status, note), names) in enumerate(ordered):
        line.append("," if i else "")
        line.append(f" {len(names)} {status}", style=_STYLE.get(status, ""))
        if note and note != status:
            line.append(f" ({note})", style="red" if status == "failed" else "dim")
        if status in rank:  # the hosts to act on are named
            shown = names[:NAMED_PER_GROUP]
            more = f", +{len(names) - len(shown)} more" if len(names) > len(shown) else ""
            line.append(f": {', '.join(shown)}{more}", style=_STYLE[status])
