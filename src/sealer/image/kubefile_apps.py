"""Kubefile applications: type detection (helm / kube / shell / "") and launch-command generation.

Follows Go sealer's `build/kubefile/parser/utils.go` (getApplicationType, getApplicationFiles) and
`pkg/define/application/v1` (GetAppLaunchCmd), so an image built here launches the same way.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

HELM = "helm"
KUBE = "kube"
SHELL = "shell"
UNKNOWN = ""

APP_ROOT = "application/apps"


def app_root(name: str) -> str:
    """Where an app's files live inside the rootfs, with the trailing slash sealer uses."""
    return f"{APP_ROOT}/{name}/"


@dataclass(frozen=True)
class AppSource:
    """One APP/CNI/CSI source: a context-relative local path or an http(s) URL."""

    raw: str  # as written, with its scheme
    location: str  # local: path relative to the context; remote: the URL

    @property
    def is_remote(self) -> bool:
        return self.raw.startswith(("http://", "https://"))

    @property
    def basename(self) -> str:
        if self.is_remote:
            return posixpath.basename(urlparse(self.location).path.rstrip("/")) or "index"
        return posixpath.basename(self.location.rstrip("/"))


@dataclass
class Application:
    """An application inside a ClusterImage (the `applications[]` entries of sealer.image.extension)."""

    name: str
    type: str = UNKNOWN
    files: list[str] = field(default_factory=list)
    version: str = "v1"
    env: dict[str, str] = field(default_factory=dict)
    cmds: list[str] = field(default_factory=list)
    sources: list[AppSource] = field(default_factory=list)
    line: int | None = None  # Kubefile line of its APP/CNI/CSI; None when inherited
    inherited_from: str | None = None  # base image it came from

    def launch_cmd(self) -> str:
        """The shell command that launches this app from the rootfs root (GetAppLaunchCmd)."""
        root = app_root(self.name)
        if self.cmds:
            return " ".join(["cd", root, "&&", *self.cmds])
        if self.type == KUBE:
            return " && ".join(f"kubectl apply -f {posixpath.join(root, f)}" for f in self.files)
        if self.type == HELM:
            return f"helm install {self.name} {root}"
        if self.type == SHELL:
            return " && ".join(f"bash {posixpath.join(root, f)}" for f in self.files)
        return ""

    def to_extension(self) -> dict[str, Any]:
        """JSON shape of Go sealer's v1.Application (omitempty fields left out when empty)."""
        data: dict[str, Any] = {"name": self.name}
        if self.type:
            data["type"] = self.type
        if self.files:
            data["files"] = list(self.files)
        data["version"] = self.version
        if self.env:
            data["env"] = dict(self.env)
        if self.cmds:
            data["cmds"] = list(self.cmds)
        return data

    @classmethod
    def from_extension(cls, data: dict[str, Any], image: str | None = None) -> Application:
        """Read one `applications[]` entry of an image's sealer.image.extension."""

        def strings(value: Any) -> list[str]:
            return [str(v) for v in value] if isinstance(value, list) else []

        env = data.get("env")
        return cls(
            name=str(data.get("name", "")),
            type=str(data.get("type") or ""),
            files=[f.lstrip("/") for f in strings(data.get("files") or data.get("launchfiles"))],
            version=str(data.get("version") or "v1"),
            env={str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
            cmds=strings(data.get("cmds")),
            inherited_from=image,
        )


def _type_of_name(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    if ext == ".sh":
        return SHELL
    if ext in (".yaml", ".yml"):
        return KUBE
    return UNKNOWN


def _walk_files(root: Path) -> list[str]:
    """Files under root, relative to it, in the lexical order Go's filepath.Walk yields them."""
    out: list[str] = []

    def walk(directory: Path, prefix: str) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            rel = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                walk(Path(entry.path), rel + "/")
            else:
                out.append(rel)

    walk(root, "")
    return out


def _is_chart_dir(path: Path) -> bool:
    return (
        (path / "Chart.yaml").exists() and (path / "values.yaml").exists() and (path / "templates").exists()
    )


def _is_helm(sources: list[tuple[AppSource, Path | None]]) -> bool:
    # A chart directory given directly, or Chart.yaml + values.yaml + templates spread over the
    # sources (files named directly, or found at the top of a directory source).
    seen = 0
    for source, local in sources:
        if local is not None and local.is_dir():
            if _is_chart_dir(local):
                return True
            for entry in os.scandir(local):
                if not entry.is_dir():
                    seen |= _chart_bit(entry.name)
        else:
            seen |= _chart_bit(source.location)
    return seen == 7


def _chart_bit(name: str) -> int:
    if name.endswith("Chart.yaml"):
        return 1
    if name.endswith("values.yaml"):
        return 2
    if name.endswith("templates"):
        return 4
    return 0


def detect_app(name: str, sources: list[AppSource], context: Path) -> tuple[str, list[str]]:
    """Return (type, files) for an app, as Go sealer decides them.

    Local sources must exist (the caller has checked). A remote source is judged by the file
    name in its URL, which is what sealer sees after downloading it.
    """
    resolved: list[tuple[AppSource, Path | None]] = [
        (s, None if s.is_remote else context / s.location) for s in sources
    ]
    if _is_helm(resolved):
        return HELM, [name]
    kinds: list[str] = []
    for source, local in resolved:
        if local is not None and local.is_dir():
            kinds.extend(_type_of_name(f) for f in _walk_files(local))
        else:
            kinds.append(_type_of_name(source.basename))
    if not kinds or UNKNOWN in kinds:
        return UNKNOWN, []
    app_type = SHELL if set(kinds) == {SHELL} else KUBE if set(kinds) == {KUBE} else UNKNOWN
    if app_type == UNKNOWN:
        return UNKNOWN, []
    files: list[str] = []
    for source, local in resolved:
        if local is not None and local.is_dir():
            files.extend(_walk_files(local))
        else:
            files.append(source.basename)
        # sealer launches only the first source of a shell app
        if app_type == SHELL:
            break
    return app_type, files
