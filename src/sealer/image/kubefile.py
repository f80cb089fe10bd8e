"""The Kubefile parser: Kubefile text + build context -> a typed, checked build description.

Compatible with Go sealer's `build/kubefile/parser` (a fork of the Dockerfile parser). Reading the
base image's extension is delegated to a callback so the parser never touches a store or network.
Where sealer's behaviour was a bug users tripped over, we do what they meant; each such place is
marked "deliberate" and listed in tests/compat/README_kubefiles.md.
"""

from __future__ import annotations

import difflib
import json
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sealer.errors import ImageError, KubefileError, Problem
from sealer.image.kubefile_apps import (
    UNKNOWN,
    Application,
    AppSource,
    app_root,
    detect_app,
)
from sealer.image.kubefile_lex import (
    LexError,
    LogicalLine,
    process_word,
    process_words,
    raw_words,
    split_command,
    split_lines,
    split_whitespace,
)
from sealer.image.oci import Platform, host_platform, normalise_arch

INSTRUCTIONS = (
    "FROM", "COPY", "ADD", "RUN", "ARG", "ENV", "LABEL", "MAINTAINER", "CMD", "CMDS",
    "APP", "APPCMDS", "APPENV", "LAUNCH", "CNI", "CSI", "KUBEVERSION",
)  # fmt: skip
# Instructions that change the image filesystem, hence get a layer of their own in the builder.
FILESYSTEM_INSTRUCTIONS = frozenset({"COPY", "ADD", "RUN", "APP", "CNI", "CSI"})
# Dockerfile instructions that make no sense for a ClusterImage (no container process to configure).
_DOCKER_ONLY = {
    "USER", "WORKDIR", "EXPOSE", "VOLUME", "ENTRYPOINT", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip

LABEL_KUBE_VERSION = "app.alpha.sealer.io/supported-kube-version"
LABEL_CNI_PREFIX = "cluster.alpha.sealer.io/kube-cni-"
LABEL_CSI_PREFIX = "cluster.alpha.sealer.io/kube-csi-"
# Labels that select how `sealer run` installs the image, and the values it understands.
_RUNTIME_LABELS = {
    "cluster.alpha.sealer.io/cluster-runtime-type": ("kubernetes", "k8s", "k3s", "k0s"),
    "cluster.alpha.sealer.io/container-runtime-type": ("containerd", "docker"),
}
_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_platform(text: str) -> Platform:
    """`linux/arm64`, `linux/arm/v7` or a bare architecture such as `arm64` (Go sealer accepts both)."""
    text = text.strip().lower()
    if text and "/" not in text:
        return Platform("linux", normalise_arch(text))
    return Platform.parse(text)


@dataclass(frozen=True)
class BaseImage:
    """What a FROM image contributes to the image built on it (read from its sealer.image.extension)."""

    reference: str
    applications: tuple[Application, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    launch_apps: tuple[str, ...] = ()
    launch_cmds: tuple[str, ...] = ()

    @classmethod
    def from_extension(
        cls, reference: str, extension: Mapping[str, Any], labels: Mapping[str, str] | None = None
    ) -> BaseImage:
        apps = extension.get("applications") or []
        launch = extension.get("launch") or {}
        env = extension.get("env") or {}
        return cls(
            reference=reference,
            applications=tuple(Application.from_extension(a, reference) for a in apps if isinstance(a, dict)),
            env={str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
            labels=dict(labels or extension.get("labels") or {}),
            launch_apps=tuple(str(a) for a in (launch.get("app_names") or [])),
            launch_cmds=tuple(str(c) for c in (launch.get("cmds") or [])),
        )


# Resolves a FROM reference for a platform; returns None if the image is unknown.
# May raise ImageError, which becomes a problem located at the FROM line.
BaseImageResolver = Callable[[str, Platform], BaseImage | None]


@dataclass(frozen=True)
class Source:
    """A COPY/ADD/APP source after variable expansion."""

    raw: str
    path: str  # context-relative for local sources, the URL for remote ones
    remote: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"raw": self.raw, "path": self.path, "remote": self.remote}


@dataclass(frozen=True)
class Step:
    """One instruction of the Kubefile, as the builder will execute it."""

    instruction: str  # upper case: FROM, COPY, APP, ...
    line: int
    end_line: int
    original: str
    args: tuple[str, ...] = ()  # words after expansion (RUN shell form: one element)
    json_form: bool = False
    flags: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()
    dest: str | None = None  # COPY/ADD destination; APP/CNI/CSI: application/apps/<name>/
    app: str | None = None

    @property
    def changes_filesystem(self) -> bool:
        return self.instruction in FILESYSTEM_INSTRUCTIONS

    def summary(self) -> str:
        """A short human description of what the step does."""
        if self.instruction in ("COPY", "ADD", "APP", "CNI", "CSI"):
            srcs = " ".join(s.path for s in self.sources)
            prefix = f"{self.app}: " if self.app else ""
            return f"{prefix}{srcs} -> {self.dest}"
        if self.instruction == "RUN":
            return " ".join(self.args) if not self.json_form else json.dumps(list(self.args))
        return " ".join(self.args)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "instruction": self.instruction,
            "line": self.line,
            "args": list(self.args),
            "layer": self.changes_filesystem,
        }
        if self.end_line != self.line:
            data["end_line"] = self.end_line
        if self.json_form:
            data["json_form"] = True
        if self.flags:
            data["flags"] = list(self.flags)
        if self.sources:
            data["sources"] = [s.to_dict() for s in self.sources]
        if self.dest is not None:
            data["dest"] = self.dest
        if self.app is not None:
            data["app"] = self.app
        return data


@dataclass
class Kubefile:
    """A parsed, checked Kubefile: what to build and what the image will carry."""

    filename: str
    platform: Platform
    steps: list[Step] = field(default_factory=list)
    base: str | None = None  # None until FROM; "scratch" or an image reference
    applications: dict[str, Application] = field(default_factory=dict)
    launch_apps: list[str] = field(default_factory=list)
    raw_cmds: list[str] = field(default_factory=list)
    launch_inherited: bool = False
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    maintainer: str | None = None
    warnings: list[Problem] = field(default_factory=list)

    def launch_commands(self) -> list[str]:
        """Commands run on master0 at cluster start (GetImageDefaultLaunchCmds: apps, else raw cmds)."""
        cmds = [self.applications[n].launch_cmd() for n in self.launch_apps if n in self.applications]
        return [c for c in cmds if c] or list(self.raw_cmds)

    def image_extension(self, image_type: str = "kube-installer", sealer_version: str = "") -> dict[str, Any]:
        """The `sealer.image.extension` annotation value, in Go sealer's JSON shape."""
        launch: dict[str, Any] = {}
        if self.raw_cmds:
            launch["cmds"] = list(self.raw_cmds)
        if self.launch_apps:
            launch["app_names"] = list(self.launch_apps)
        data: dict[str, Any] = {
            "buildClient": {"sealerVersion": sealer_version, "buildahVersion": ""},
            "schemaVersion": "v1alpha1",
            "type": image_type,
        }
        if self.applications:
            data["applications"] = [a.to_extension() for a in self.applications.values()]
        if self.labels:
            data["labels"] = dict(self.labels)
        if self.env:
            data["env"] = dict(self.env)
        data["launch"] = launch
        return data

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.filename,
            "platform": str(self.platform),
            "base": self.base,
            "steps": [s.to_dict() for s in self.steps],
            "applications": [
                {**a.to_extension(), "launch": a.launch_cmd(), "inherited_from": a.inherited_from}
                for a in self.applications.values()
            ],
            "launch_apps": list(self.launch_apps),
            "launch_inherited": self.launch_inherited,
            "raw_cmds": list(self.raw_cmds),
            "launch_commands": self.launch_commands(),
            "env": dict(self.env),
            "labels": dict(self.labels),
            # Names only: build args often carry tokens, and this goes to terminals and logs.
            "args": sorted(self.args),
            "maintainer": self.maintainer,
            "warnings": [w.render() for w in self.warnings],
        }


def _is_remote(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _inside_context(path: str) -> str | None:
    """Context-relative normal form of a source path, or None when it climbs out of the context."""
    # Docker treats an absolute source as relative to the context root.
    norm = posixpath.normpath("/" + path.lstrip("/"))
    # normpath of "/.." is "/", so compare against the segments actually written.
    depth = 0
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            depth -= 1
            if depth < 0:
                return None
        else:
            depth += 1
    rel = norm.lstrip("/")
    return rel or "."


class _Parser:
    def __init__(
        self,
        text: str,
        filename: str,
        context: Path,
        build_args: Mapping[str, str],
        platform: Platform,
        resolve_base: BaseImageResolver | None,
        require_from: bool,
    ) -> None:
        self.text = text
        self.filename = filename
        self.context = context
        self.build_args = dict(build_args)
        self.platform = platform
        self.resolve_base = resolve_base
        self.require_from = require_from
        self.problems: list[Problem] = []
        self.result = Kubefile(filename=filename, platform=platform)
        self.escape = "\\"
        self.global_args: dict[str, str] = {}  # ARGs before FROM: usable only in FROM
        self.used_build_args: set[str] = set()
        self.base_unknown = False  # FROM image could not be inspected, so its apps are unknown
        self.app_cmds: dict[str, list[str]] = {}
        self.app_env: dict[str, dict[str, str]] = {}
        self.app_lines: dict[str, int] = {}
        self.base_image: BaseImage | None = None

    # -- reporting ---------------------------------------------------------------------------

    def error(self, line: LogicalLine | int | None, message: str, hint: str | None = None) -> None:
        lineno = line.start if isinstance(line, LogicalLine) else line
        self.problems.append(Problem(message, file=self.filename, line=lineno, hint=hint))

    def warn(self, line: LogicalLine | int | None, message: str, hint: str | None = None) -> None:
        lineno = line.start if isinstance(line, LogicalLine) else line
        self.result.warnings.append(
            Problem(message, file=self.filename, line=lineno, hint=hint, severity="warning")
        )

    # -- variables ---------------------------------------------------------------------------

    def scope(self, arch: bool = False) -> dict[str, str]:
        env = dict(self.result.args)
        env.update(self.result.env)
        if arch:
            # sealer substitutes the target architecture into COPY sources (multi-arch builds).
            env.update(self._platform_vars())
        return env

    def _platform_vars(self) -> dict[str, str]:
        return {
            "ARCH": self.platform.architecture,
            "TARGETARCH": self.platform.architecture,
            "TARGETOS": self.platform.os,
            "TARGETVARIANT": self.platform.variant,
            "TARGETPLATFORM": str(self.platform),
        }

    def expand(self, line: LogicalLine, text: str, env: Mapping[str, str] | None) -> str | None:
        try:
            return process_word(text, env, self.escape)
        except LexError as err:
            self.error(line, err.message, err.hint)
            return None

    def expand_words(self, line: LogicalLine, text: str, env: Mapping[str, str] | None) -> list[str] | None:
        try:
            return process_words(text, env, self.escape)
        except LexError as err:
            self.error(line, err.message, err.hint)
            return None

    # -- driver ------------------------------------------------------------------------------

    def run(self) -> Kubefile:
        try:
            lines, self.escape = split_lines(self.text)
        except LexError as err:
            self.error(err.line, err.message, err.hint)
            raise KubefileError(self.problems) from None
        if not lines:
            self.error(
                None, "the Kubefile has no instructions", "start it with `FROM scratch` or `FROM <image>`"
            )
            raise KubefileError(self.problems)

        words = [split_command(ll.text) for ll in lines]
        last = len(lines) - 1
        launch_line: int | None = None
        cmds_line: int | None = None
        cmd_line: int | None = None
        for index, (ll, (word, flags, rest)) in enumerate(zip(lines, words, strict=True)):
            name = word.upper()
            if name not in INSTRUCTIONS:
                self.unknown(ll, word)
                continue
            if name == "LAUNCH":
                if launch_line is not None:
                    self.error(
                        ll,
                        f"LAUNCH given twice (first at line {launch_line})",
                        "keep one LAUNCH listing every app",
                    )
                    continue
                launch_line = ll.start
                if index != last:
                    self.error(
                        ll, "LAUNCH must be the last instruction", "move LAUNCH to the end of the Kubefile"
                    )
            elif name == "CMDS":
                if cmds_line is not None:
                    self.error(
                        ll,
                        f"CMDS given twice (first at line {cmds_line})",
                        "put all commands in one CMDS list",
                    )
                    continue
                cmds_line = ll.start
                if index != last:
                    self.error(
                        ll, "CMDS must be the last instruction", "move CMDS to the end of the Kubefile"
                    )
            elif name == "CMD" and cmd_line is None:
                cmd_line = ll.start
            if launch_line is not None and cmd_line is not None and name in ("LAUNCH", "CMD"):
                self.error(
                    ll,
                    f"CMD (line {cmd_line}) and LAUNCH (line {launch_line}) cannot be used together",
                    "launch apps with LAUNCH, or run commands with CMDS [...] — not both",
                )
            if (
                self.result.base is None
                and name not in ("FROM", "ARG")
                and self.require_from
                and not any(p.message.startswith("no FROM") for p in self.problems)
            ):
                self.error(
                    ll,
                    f"no FROM before {name}: a Kubefile must start with FROM",
                    "add `FROM scratch` (a new image) or `FROM <cluster image>` as the first instruction",
                )
            handler = getattr(self, f"do_{name.lower()}")
            handler(ll, flags, rest)

        self.finish()
        if any(p.severity == "error" for p in self.problems):
            ordered = sorted(self.problems + self.result.warnings, key=lambda p: p.line or 0)
            raise KubefileError(ordered)
        return self.result

    def unknown(self, ll: LogicalLine, word: str) -> None:
        upper = word.upper()
        if upper in _DOCKER_ONLY:
            hint = (
                f"{upper} configures a container process; a ClusterImage has none. "
                "Use RUN at build time, or APP/CMDS to run things when the cluster starts"
            )
        else:
            close = difflib.get_close_matches(upper, INSTRUCTIONS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else "supported: " + " ".join(INSTRUCTIONS)
        self.error(ll, f"unknown instruction {word!r}", hint)

    def add_step(self, ll: LogicalLine, name: str, **kw: Any) -> None:
        self.result.steps.append(
            Step(instruction=name, line=ll.start, end_line=ll.end, original=ll.text, **kw)
        )

    # -- instructions ------------------------------------------------------------------------

    def do_from(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        if self.result.base is not None:
            self.error(
                ll,
                "a second FROM: multi-stage Kubefiles are not supported",
                "build one ClusterImage per Kubefile",
            )
            return
        platform = self.platform
        for flag in flags:
            key, _, value = flag[2:].partition("=")
            if key != "platform" or not value:
                self.error(
                    ll, f"flag {flag} is not available in FROM", "FROM accepts only --platform=os/arch"
                )
                continue
            expanded = self.expand(ll, value, {**self.global_args, **self._platform_vars()})
            try:
                platform = parse_platform(expanded or value)
            except ImageError as err:
                self.error(ll, err.message, err.hint)
        parts = split_whitespace(rest)
        if not parts:
            self.error(ll, "FROM needs an image", "FROM scratch, or FROM <registry>/<name>:<tag>")
            self.result.base = "scratch"
            return
        if len(parts) not in (1, 3) or (len(parts) == 3 and parts[1].lower() != "as"):
            extra = " ".join(parts[1:])
            hint = (
                "move the comment to its own line: only whole-line # comments exist"
                if extra.startswith("#")
                else ("FROM takes one image reference (optionally `AS name`)")
            )
            self.error(ll, f"unexpected words after the FROM image: {extra!r}", hint)
        image = self.expand(ll, parts[0], self.global_args) or parts[0]
        self.result.base = image
        self.add_step(ll, "FROM", args=(image,), flags=tuple(flags))
        if image == "scratch":
            return
        if self.resolve_base is None:
            self.base_unknown = True
            return
        try:
            base = self.resolve_base(image, platform)
        except ImageError as err:
            self.error(ll, f"cannot read base image {image}: {err.message}", err.hint)
            self.base_unknown = True
            return
        if base is None:
            self.base_unknown = True
            self.warn(
                ll,
                f"base image {image} is not available locally; its apps are unknown",
                "pull it first (sealer pull) so LAUNCH/APPCMDS can refer to its apps",
            )
            return
        for app in base.applications:
            # Copies: APPENV/APPCMDS below must not change the resolver's objects.
            self.result.applications[app.name] = replace(
                app, env=dict(app.env), cmds=list(app.cmds), files=list(app.files), inherited_from=image
            )
        self.result.env.update(base.env)
        self.result.labels.update(base.labels)
        self.base_image = base

    def do_arg(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        self.reject_flags(ll, "ARG", flags)
        try:
            words = [w for w, _ in raw_words(rest, self.escape)]
        except LexError as err:
            self.error(ll, err.message)
            return
        if not words:
            self.error(ll, "ARG needs a name", "ARG NAME or ARG NAME=default")
            return
        for word in words:
            name, has_default, default = word.partition("=")
            if not _ARG_NAME.match(name):
                self.error(
                    ll,
                    f"invalid ARG name {name!r}",
                    "names are letters, digits and _, not starting with a digit",
                )
                continue
            value: str | None
            if name in self.build_args:
                value = self.build_args[name]
                self.used_build_args.add(name)
            elif has_default:
                value = self.expand(ll, default, self.scope() if self.result.base else self.global_args)
            else:
                value = None
            if self.result.base is None:
                self.global_args[name] = value or ""
            elif value is not None:
                self.result.args[name] = value
            else:
                # Declared without value: Docker makes it an empty, set variable.
                self.result.args.setdefault(name, self.global_args.get(name, ""))
        self.add_step(ll, "ARG", args=tuple(words))

    def _name_values(
        self, ll: LogicalLine, what: str, rest: str, env: Mapping[str, str] | None
    ) -> dict[str, str]:
        """Parse `K=V K2="V 2"` or the legacy `K V...` form of ENV and LABEL."""
        out: dict[str, str] = {}
        try:
            words = list(raw_words(rest, self.escape))
        except LexError as err:
            self.error(ll, err.message)
            return out
        if not words:
            self.error(ll, f"{what} needs at least one name=value", f"{what} key=value")
            return out
        if "=" not in words[0][0]:
            parts = re.split(r"[\t\v\f\r ]+", rest, maxsplit=1)
            if len(parts) < 2:
                self.error(ll, f"{what} {parts[0]} has no value", f"{what} {parts[0]}=value")
                return out
            key = self.expand(ll, parts[0], env)
            value = self.expand(ll, parts[1], env)
            if key is not None and value is not None:
                out[key] = value
            return out
        for word, _ in words:
            if "=" not in word:
                self.error(ll, f"{what}: can't find = in {word!r}", "must be of the form name=value")
                continue
            raw_key, _, raw_value = word.partition("=")
            key = self.expand(ll, raw_key, env)
            value = self.expand(ll, raw_value, env)
            if key is None or value is None:
                continue
            if not key:
                self.error(ll, f"{what}: empty name in {word!r}")
                continue
            out[key] = value
        return out

    def do_env(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        self.reject_flags(ll, "ENV", flags)
        pairs = self._name_values(ll, "ENV", rest, self.scope())
        self.result.env.update(pairs)
        self.add_step(ll, "ENV", args=tuple(f"{k}={v}" for k, v in pairs.items()))

    def do_label(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        self.reject_flags(ll, "LABEL", flags)
        pairs = self._name_values(ll, "LABEL", rest, self.scope())
        for key, allowed in _RUNTIME_LABELS.items():
            # deliberate: Go sealer stores any value and fails at `sealer run`; say it before the build.
            if key in pairs and pairs[key] not in allowed:
                close = difflib.get_close_matches(pairs[key], allowed, n=1)
                self.error(
                    ll,
                    f"label {key}={pairs[key]!r} names no runtime sealer knows",
                    (f"did you mean {close[0]}? " if close else "") + "one of: " + ", ".join(allowed),
                )
        self.result.labels.update(pairs)
        self.add_step(ll, "LABEL", args=tuple(f"{k}={v}" for k, v in pairs.items()))

    def do_maintainer(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        if not rest:
            self.error(ll, "MAINTAINER needs a name")
            return
        self.result.maintainer = rest
        self.add_step(ll, "MAINTAINER", args=(rest,))

    def do_run(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        if flags:
            self.error(
                ll,
                f"RUN flags are not supported: {' '.join(flags)}",
                "RUN executes in the image rootfs; --mount/--network options do not apply",
            )
        if not rest:
            self.error(ll, "RUN needs a command")
            return
        items = self.json_list(rest)
        if items is not None:
            if not items:
                self.error(ll, "RUN [] has no command")
                return
            self.add_step(ll, "RUN", args=tuple(items), json_form=True)
        else:
            self.add_step(ll, "RUN", args=(rest,))

    def do_copy(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        self.copy_like(ll, "COPY", flags, rest)

    def do_add(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        self.copy_like(ll, "ADD", flags, rest)

    def copy_like(self, ll: LogicalLine, name: str, flags: list[str], rest: str) -> None:
        kept: list[str] = []
        for flag in flags:
            key = flag[2:].partition("=")[0]
            if key == "from":
                self.error(
                    ll,
                    f"{name} --from is not supported (no multi-stage builds)",
                    "copy the files into the build context instead",
                )
            elif key in ("chown", "chmod"):
                kept.append(flag)
            else:
                self.error(ll, f"unknown flag {flag} for {name}", "supported: --chown=UID:GID, --chmod=MODE")
        env = self.scope(arch=True)
        json_items = self.json_list(rest)
        json_form = json_items is not None
        if json_items is not None:
            raw = json_items
        else:
            try:
                raw = [w for w, _ in raw_words(rest, self.escape)]
            except LexError as err:
                self.error(ll, err.message)
                return
            for i, w in enumerate(raw):
                if i >= 2 and w.startswith("#"):
                    # deliberate: sealer keeps only src and dest, so docs write trailing comments here.
                    self.warn(
                        ll,
                        f"text after {name} from {w!r} on treated as a comment",
                        "only whole-line # comments are comments; put it on its own line",
                    )
                    raw = raw[:i]
                    break
        expanded = [self.expand(ll, w, env) for w in raw]
        if any(w is None for w in expanded):
            return
        words = [w for w in expanded if w is not None]
        if len(words) < 2:
            self.error(ll, f"{name} needs at least one source and a destination", f"{name} <src>... <dest>")
            return
        sources: list[Source] = []
        for raw_src, src in zip(raw[:-1], words[:-1], strict=True):
            if _is_remote(src):
                if name == "COPY":
                    self.error(
                        ll,
                        f"COPY cannot fetch URLs ({src})",
                        "use ADD for a URL, or APP name https://... for an app",
                    )
                    continue
                sources.append(Source(raw_src, src, remote=True))
                continue
            rel = _inside_context(src)
            if rel is None:
                self.error(
                    ll,
                    f"{name} source {src!r} is outside the build context",
                    f"copy it into the build context {self.context} first",
                )
                continue
            sources.append(Source(raw_src, rel))
        self.add_step(
            ll,
            name,
            args=tuple(words),
            json_form=json_form,
            flags=tuple(kept),
            sources=tuple(sources),
            dest=words[-1],
        )

    def json_list(self, rest: str) -> list[str] | None:
        """A JSON array of strings, or None when the text is not one (Docker's JSON/shell form rule)."""
        if not rest.lstrip().startswith("["):
            return None
        try:
            value = json.loads(rest)
        except ValueError:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return None
        return value

    def list_form(self, rest: str) -> tuple[list[str], bool]:
        items = self.json_list(rest)
        if items is not None:
            return items, True
        return split_whitespace(rest), False

    def do_app(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        self.app_like(ll, "APP", flags, rest)

    def do_cni(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        name = self.app_like(ll, "CNI", flags, rest)
        if name:
            self.result.labels[LABEL_CNI_PREFIX + name] = "true"

    def do_csi(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        name = self.app_like(ll, "CSI", flags, rest)
        if name:
            self.result.labels[LABEL_CSI_PREFIX + name] = "true"

    def app_like(self, ll: LogicalLine, what: str, flags: list[str], rest: str) -> str | None:
        self.reject_flags(ll, what, flags)
        items, _ = self.list_form(rest)
        if not items:
            self.error(
                ll, f"{what} needs an app name and sources", f"{what} name local://path [https://url ...]"
            )
            return None
        name, raw_sources = items[0], items[1:]
        if not _APP_NAME.match(name):
            self.error(
                ll,
                f"invalid app name {name!r}",
                "app names become directories under application/apps/: use letters, digits, . _ -",
            )
            return None
        if not raw_sources:
            self.error(
                ll, f"{what} {name} has no sources", f"{what} {name} local://path-in-context or https://url"
            )
            return None
        sources: list[AppSource] = []
        ok = True
        for raw in raw_sources:
            if raw.startswith("local://"):
                path = raw[len("local://") :]
                rel = _inside_context(path) if path else None
                if rel is None:
                    self.error(
                        ll,
                        f"{what} {name}: source {raw!r} is outside the build context"
                        if path
                        else f"{what} {name}: empty local:// source",
                        f"sources are paths inside the build context {self.context}",
                    )
                    ok = False
                    continue
                try:
                    (self.context / rel).resolve().relative_to(self.context.resolve())
                    exists = (self.context / rel).exists()
                except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop
                    self.error(ll, f"{what} {name}: cannot read {rel!r}: {err}")
                    ok = False
                    continue
                except ValueError:
                    self.error(
                        ll,
                        f"{what} {name}: {rel!r} is a symlink out of the build context",
                        "copy the files into the build context instead of linking to them",
                    )
                    ok = False
                    continue
                if not exists:
                    self.error(
                        ll,
                        f"{what} {name}: {rel!r} not found in the build context {self.context}",
                        "check the path; local:// paths are relative to the build context",
                    )
                    ok = False
                    continue
                sources.append(AppSource(raw, rel))
            elif _is_remote(raw):
                sources.append(AppSource(raw, raw))
            else:
                self.error(
                    ll,
                    f"{what} {name}: source {raw!r} has no scheme",
                    "source schema should be specified with https:// http:// local:// in APP"
                    + (" (a stray space inside a URL?)" if not raw.startswith(("/", ".")) else ""),
                )
                ok = False
        if not ok:
            return None
        try:
            app_type, files = detect_app(name, sources, self.context)
        except OSError as err:
            self.error(ll, f"{what} {name}: cannot read its sources: {err}")
            return None
        previous = self.result.applications.get(name)
        if previous is not None:
            where = f"line {previous.line}" if previous.line else f"base image {previous.inherited_from}"
            self.warn(ll, f"app {name} redefined (was defined at {where})")
        app = Application(name=name, type=app_type, files=files, sources=sources, line=ll.start)
        self.result.applications[name] = app
        self.app_lines[name] = ll.start
        step_sources = tuple(Source(s.raw, s.location, s.is_remote) for s in sources)
        self.add_step(ll, what, args=tuple(items), sources=step_sources, dest=app_root(name), app=name)
        return name

    def known_app(self, ll: LogicalLine, what: str, name: str) -> bool:
        if name in self.result.applications:
            return True
        close = difflib.get_close_matches(name, list(self.result.applications), n=1)
        if close:
            hint = f"did you mean {close[0]}?"
        elif self.base_unknown:
            hint = (
                f"it may come from the base image {self.result.base}, which could not be read: pull it first"
            )
        else:
            hint = "define it earlier with APP/CNI/CSI, or build FROM an image that has it"
        self.error(ll, f"{what} names unknown app {name!r}", hint)
        return False

    def do_appcmds(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        self.reject_flags(ll, "APPCMDS", flags)
        parts = re.split(r"[\t\v\f\r ]+", rest, maxsplit=1)
        name = parts[0]
        if not name:
            self.error(
                ll, "APPCMDS needs an app name and a JSON list of commands", 'APPCMDS app ["cmd arg", ...]'
            )
            return
        cmds = self.json_list(parts[1]) if len(parts) == 2 else None
        if cmds is None:
            self.error(
                ll,
                f"APPCMDS {name}: the commands must be a JSON array of strings",
                f'APPCMDS {name} ["kubectl apply -f app.yaml"]',
            )
            return
        if not self.known_app(ll, "APPCMDS", name):
            return
        self.app_cmds[name] = cmds
        self.add_step(ll, "APPCMDS", args=(name, *cmds), app=name)

    def do_appenv(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        self.reject_flags(ll, "APPENV", flags)
        parts = re.split(r"[\t\v\f\r ]+", rest, maxsplit=1)
        name = parts[0]
        if not name or len(parts) < 2:
            self.error(ll, "APPENV needs an app name and key=value pairs", "APPENV app key=value ...")
            return
        if not self.known_app(ll, "APPENV", name):
            return
        # App env feeds run-time rendering, so quotes are removed but nothing is expanded now.
        words = self.expand_words(ll, parts[1], None)
        if words is None:
            return
        env = self.app_env.setdefault(name, {})
        for word in words:
            key, eq, value = word.partition("=")
            if not eq or not key:
                self.warn(ll, f"APPENV {name}: {word!r} is not key=value; ignored")
                continue
            env[key] = value
        self.add_step(ll, "APPENV", args=(name, *words), app=name)

    def do_kubeversion(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        if not rest:
            self.error(ll, "KUBEVERSION needs a version constraint", "KUBEVERSION 1.22 - 1.24")
            return
        self.result.labels[LABEL_KUBE_VERSION] = rest
        self.add_step(ll, "KUBEVERSION", args=(rest,))

    def do_launch(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        self.reject_flags(ll, "LAUNCH", flags)
        names, _ = self.list_form(rest)
        names = [n.strip() for n in names]
        if not names:
            self.error(ll, "LAUNCH needs at least one app name", 'LAUNCH ["app1", "app2"]')
            return
        good = [n for n in names if self.known_app(ll, "LAUNCH", n)]
        self.result.launch_apps = good
        self.add_step(ll, "LAUNCH", args=tuple(names))

    def do_cmds(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        self.reject_flags(ll, "CMDS", flags)
        cmds = self.json_list(rest)
        if cmds is None:
            # deliberate: Go sealer splits a non-JSON CMDS on spaces, making each word a command.
            self.error(
                ll,
                "CMDS takes a JSON array of commands",
                'CMDS ["kubectl apply -f manifests/app.yaml"] (or CMD <one shell command>)',
            )
            return
        self.warn_args_in_cmd(ll, "CMDS", " ".join(cmds))
        self.result.raw_cmds.extend(cmds)
        self.add_step(ll, "CMDS", args=tuple(cmds), json_form=True)

    def do_cmd(self, ll: LogicalLine, flags: list[str], rest: str) -> None:
        if not rest:
            self.error(ll, "CMD needs a command")
            return
        cmds = self.json_list(rest)
        if cmds is not None:
            # deliberate: sealer keeps the JSON text as one command that then fails in the shell;
            # every real Kubefile writing this form means one command per element, as CMDS does.
            self.result.raw_cmds.extend(cmds)
            self.add_step(ll, "CMD", args=tuple(cmds), json_form=True)
        else:
            if rest.startswith("["):
                self.warn(
                    ll,
                    "CMD text starts with [ but is not a JSON array; it runs as one shell command",
                    'for several commands write CMDS ["cmd 1", "cmd 2"]',
                )
            self.result.raw_cmds.append(rest)
            self.add_step(ll, "CMD", args=(rest,))
        self.warn_args_in_cmd(ll, "CMD", rest)

    def warn_args_in_cmd(self, ll: LogicalLine, what: str, text: str) -> None:
        for name in self.result.args:
            if f"${{{name}}}" in text or re.search(rf"\${name}\b", text):
                self.warn(
                    ll,
                    f"${name} in {what} is not replaced by the build ARG; the shell sees it at run time",
                    "use ENV to give the run-time command a default, or write the value",
                )

    def reject_flags(self, ll: LogicalLine, what: str, flags: list[str]) -> None:
        if flags:
            self.error(ll, f"{what} takes no flags: {' '.join(flags)}")

    # -- final checks ------------------------------------------------------------------------

    def finish(self) -> None:
        result = self.result
        if (
            self.require_from
            and result.base is None
            and not any(p.message.startswith("no FROM") for p in self.problems)
        ):
            self.error(
                None,
                "no FROM: a Kubefile must start with FROM",
                "add `FROM scratch` or `FROM <cluster image>`",
            )
        for name, env in self.app_env.items():
            app = result.applications[name]
            merged = dict(app.env) if app.inherited_from else {}
            merged.update(env)
            app.env = merged
        for name, cmds in self.app_cmds.items():
            result.applications[name].cmds = list(cmds)
        for name, app in result.applications.items():
            if app.type == UNKNOWN and not app.cmds and app.inherited_from is None:
                kinds = ", ".join(s.basename for s in app.sources)
                self.error(
                    self.app_lines.get(name),
                    f"app {name}: type not detected from {kinds} (not a Helm chart, not only .yaml/.yml, "
                    "not only .sh), so sealer cannot know how to launch it",
                    f'add APPCMDS {name} ["<command run inside {app_root(name)}>"]',
                )
        base = self.base_image
        # deliberate: Go sealer drops the base image's launch; a derived image then starts
        # no CNI. Like Docker's CMD, we inherit it when this Kubefile declares none.
        declared = result.launch_apps or result.raw_cmds
        if not declared and base is not None and (base.launch_apps or base.launch_cmds):
            result.launch_apps = list(base.launch_apps)
            result.raw_cmds = list(base.launch_cmds)
            result.launch_inherited = True
        unused = sorted(set(self.build_args) - self.used_build_args)
        if unused:
            self.warn(
                None,
                f"build args not consumed by any ARG: {', '.join(unused)}",
                "declare them with ARG NAME in the Kubefile",
            )


def parse_kubefile(
    text: str,
    *,
    context: Path,
    filename: str = "Kubefile",
    build_args: Mapping[str, str] | None = None,
    platform: Platform | None = None,
    resolve_base: BaseImageResolver | None = None,
    require_from: bool = True,
) -> Kubefile:
    """Parse and check a Kubefile against its build context. Raises KubefileError listing every problem.

    Only APP/CNI/CSI sources are read from the context here (their type depends on their files);
    COPY/ADD sources are checked by `check_context` so a parse can run without the large files.
    """
    parser = _Parser(
        text,
        filename,
        context,
        build_args or {},
        platform or host_platform(),
        resolve_base,
        require_from,
    )
    return parser.run()


def check_context(kubefile: Kubefile, context: Path) -> list[Problem]:
    """Problems with COPY/ADD sources: missing, or escaping the context through a symlink."""
    problems: list[Problem] = []
    root = context.resolve()
    for step in kubefile.steps:
        if step.instruction not in ("COPY", "ADD"):
            continue
        for source in step.sources:
            if source.remote:
                continue
            matches = (
                sorted(root.glob(source.path))
                if any(c in source.path for c in "*?[")
                else [root / source.path]
            )
            if source.path == ".":
                matches = [root]
            if not matches or not all(m.exists() or m.is_symlink() for m in matches):
                problems.append(
                    Problem(
                        f"{step.instruction} source {source.raw!r} not found in the build context {context}",
                        file=kubefile.filename,
                        line=step.line,
                        hint="paths are relative to the build context (the last argument of sealer build)",
                    )
                )
                continue
            for match in matches:
                try:
                    match.resolve().relative_to(root)
                except RuntimeError:
                    problems.append(
                        Problem(
                            f"{step.instruction} source {source.raw!r} is a symlink loop",
                            file=kubefile.filename,
                            line=step.line,
                        )
                    )
                except ValueError:
                    problems.append(
                        Problem(
                            f"{step.instruction} source {source.raw!r} is a symlink out of the build context",
                            file=kubefile.filename,
                            line=step.line,
                            hint="copy the file into the build context instead of linking to it",
                        )
                    )
    return problems
