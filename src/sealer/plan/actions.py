"""What a plan is made of: `Action`s (what, on which hosts, why, after what) and the ordered `Plan`.

Pure data: describing work is separate from executing it. Both serialise to plain dicts (the JSON
form is documented by `sealer.plan.schema.PLAN_SCHEMA`) and to plain text rows for a table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

PLAN_API_VERSION = "sealer.io/v1alpha1"

ACTION_KINDS: tuple[str, ...] = (
    "install",  # init the control plane (and the local registry) on master0
    "join-master",  # one new master; masters join one at a time
    "join-workers",  # new workers, in parallel
    "remove-workers",  # reset and remove workers, in parallel
    "remove-master",  # one master, never master0 (unless the cluster is deleted)
    "uninstall",  # reset master0 last, when the whole cluster is deleted
    "upgrade",  # move every remaining host to a new ClusterImage
    "update-labels",
    "update-taints",
    "update-env",
    "update-host-aliases",
    "launch-apps",  # run the image's (or spec.cmd / spec.appNames') launch commands on master0
)

Operation = Literal["create", "update", "delete", "none"]


@dataclass(frozen=True)
class Action:
    """One unit of work: `kind` on `hosts`, because `reason`, after the actions in `depends_on`.
    `parallel` says whether its hosts may be worked on at the same time."""

    id: str
    kind: str
    hosts: tuple[str, ...]
    reason: str
    depends_on: tuple[str, ...] = ()
    parallel: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "hosts": list(self.hosts),
            "parallel": self.parallel,
            "dependsOn": list(self.depends_on),
            "reason": self.reason,
            "details": _plain(self.details),
        }

    def hosts_text(self, limit: int = 4) -> str:
        """The host list for a terminal: consecutive IPv4 addresses as sealer ranges (`a-b`), and
        shortened when long (`a, b-c, d, e … (+996 hosts)`)."""
        parts = compact_ips(self.hosts)
        if len(parts) <= limit:
            text = ", ".join(parts)
        else:
            shown = parts[:limit]
            rest = len(self.hosts) - sum(_span(p) for p in shown)
            text = ", ".join(shown) + f" … (+{rest} hosts)"
        if len(self.hosts) > 1 and len(parts) < len(self.hosts):
            text += f" [{len(self.hosts)} hosts]"
        return text

    def details_text(self) -> str:
        parts = []
        for key, value in self.details.items():
            if isinstance(value, Mapping):
                shown = ", ".join(f"{k}={v}" if v != "" else str(k) for k, v in value.items())
            elif isinstance(value, list | tuple):
                shown = ", ".join(str(v) for v in value)
            else:
                shown = str(value)
            parts.append(f"{key}: {shown}")
        return "; ".join(parts)

    def row(self, limit: int = 4) -> tuple[str, str, str, str, str]:
        """(id, kind, hosts, after, why) as plain strings: the CLI turns rows into a table."""
        why = self.reason
        extra = self.details_text()
        if extra:
            why += f" [{extra}]"
        hosts = self.hosts_text(limit) + (" (parallel)" if self.parallel and len(self.hosts) > 1 else "")
        return (self.id, self.kind, hosts, ", ".join(self.depends_on), why)

    def text(self) -> str:
        ident, kind, hosts, after, why = self.row()
        after_text = f" after {after}" if after else ""
        return f"{ident} {kind} on {hosts}{after_text}: {why}"


def _ipv4_int(ip: str) -> int | None:
    parts = ip.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 for p in parts):
        return None
    value = 0
    for p in parts:
        octet = int(p)
        if octet > 255:
            return None
        value = value * 256 + octet
    return value


def compact_ips(ips: Sequence[str]) -> list[str]:
    """Runs of consecutive IPv4 addresses (in the given order) as `first-last`, the Clusterfile's
    own range syntax; anything else as is."""
    out: list[str] = []
    run_start = run_end = ""
    prev: int | None = None
    for ip in ips:
        value = _ipv4_int(ip)
        if value is not None and prev is not None and value == prev + 1:
            run_end, prev = ip, value
            continue
        if run_start:
            out.append(run_start if run_start == run_end else f"{run_start}-{run_end}")
        run_start = run_end = ip
        prev = value
    if run_start:
        out.append(run_start if run_start == run_end else f"{run_start}-{run_end}")
    return out


def _span(part: str) -> int:
    first, sep, last = part.partition("-")
    if not sep:
        return 1
    a, b = _ipv4_int(first), _ipv4_int(last)
    return b - a + 1 if a is not None and b is not None else 1


def _plain(value: Any) -> Any:
    """Mappings and tuples to dicts and lists, so the result is JSON- and YAML-safe."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Plan:
    """The ordered actions that take a cluster from its current state to the desired one.
    An empty plan still says why nothing is to be done."""

    cluster: str
    operation: Operation
    actions: tuple[Action, ...]
    reason: str
    image: str | None = None
    previous_image: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.actions

    def to_dict(self) -> dict[str, Any]:
        return {
            "apiVersion": PLAN_API_VERSION,
            "kind": "Plan",
            "cluster": self.cluster,
            "operation": self.operation,
            "image": self.image,
            "previousImage": self.previous_image,
            "reason": self.reason,
            "notes": list(self.notes),
            "actions": [a.to_dict() for a in self.actions],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def digest(self) -> str:
        """Identifies this exact plan; the journal uses it to know a re-run may resume."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def rows(self, limit: int = 4) -> list[tuple[str, str, str, str, str]]:
        return [a.row(limit) for a in self.actions]

    def text(self) -> str:
        """A plain-text rendering (logs, tests, terminals without rich)."""
        lines = [f"plan for cluster {self.cluster} ({self.operation}): {self.reason}"]
        lines += [f"  {a.text()}" for a in self.actions]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def action(self, ident: str) -> Action:
        for a in self.actions:
            if a.id == ident:
                return a
        raise KeyError(ident)


class ActionList:
    """Builds a plan's actions with sequential ids (a1, a2, ...) and remembers the last one, so each
    new action can depend on what must come before it."""

    def __init__(self) -> None:
        self.actions: list[Action] = []

    @property
    def last(self) -> str | None:
        return self.actions[-1].id if self.actions else None

    def add(
        self,
        kind: str,
        hosts: Sequence[str],
        reason: str,
        *,
        after: Sequence[str | None] = (),
        parallel: bool = False,
        details: Mapping[str, Any] | None = None,
    ) -> str:
        ident = f"a{len(self.actions) + 1}"
        self.actions.append(
            Action(
                id=ident,
                kind=kind,
                hosts=tuple(hosts),
                reason=reason,
                depends_on=tuple(dict.fromkeys(a for a in after if a is not None)),
                parallel=parallel,
                details=dict(details or {}),
            )
        )
        return ident
