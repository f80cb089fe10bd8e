"""The one error hierarchy of sealer: every failure a user can meet carries a message and a hint.

The CLI prints these without a traceback (exit 1); anything else escaping is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, located precisely enough to fix it."""

    message: str
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    path: str | None = None  # field path such as spec.hosts[1].ips[0]
    hint: str | None = None
    severity: str = "error"  # "error" or "warning"

    def location(self) -> str:
        parts = [self.file or "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def render(self) -> str:
        text = f"{self.location()}: {self.severity}: "
        if self.path:
            text += f"{self.path}: "
        text += self.message
        if self.hint:
            hint = self.hint.replace("\n", "\n          ")
            text += f"\n    hint: {hint}"
        return text


class SealerError(Exception):
    """Base of every error sealer reports to a user."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            hint = self.hint.replace("\n", "\n        ")
            text += f"\n  hint: {hint}"
        return text


class InputError(SealerError):
    """A file the user wrote (Clusterfile, Kubefile, ...) is wrong; carries every problem found."""

    def __init__(self, problems: list[Problem], what: str = "input") -> None:
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        first = errors[0] if errors else (problems[0] if problems else None)
        message = f"{len(errors)} problem(s) in {what}"
        super().__init__(message, first.hint if first else None)

    def render(self) -> str:
        return "\n".join(p.render() for p in self.problems)


class ClusterfileError(InputError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems, "Clusterfile")


class KubefileError(InputError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems, "Kubefile")


class PlanError(SealerError):
    """The desired state cannot be reached from the current one (e.g. k3s -> k0s in place)."""


class StateError(SealerError):
    """Local cluster state is missing, unreadable or inconsistent."""


class LockHeldError(StateError):
    """Another sealer process holds the cluster lock."""


class HostError(SealerError):
    """Something failed on one host; names the host."""

    def __init__(self, host: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{host}: {message}", hint)
        self.host = host


class HostKeyError(HostError):
    """A host presented a key that differs from the pinned one."""


class ImageError(SealerError):
    """A ClusterImage or image reference problem (bad reference, missing image, corrupt blob)."""


class RegistryError(SealerError):
    """A registry refused or failed a request."""


class RuntimeErrorSealer(SealerError):
    """A cluster runtime (kubernetes, k3s, k0s) failed an operation."""


class NotImplementedYet(SealerError):
    """An operation the CLI knows but the engine cannot execute yet; never a fake success."""
