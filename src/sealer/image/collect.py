"""Find the container images a ClusterImage needs, without helm or a cluster.

Scans a rootfs tree the way Go sealer's `ParseContainerImageList` does (manifests/, manifests/imageList,
charts/, application/apps/<app>/), plus --image-list minus --ignored-image-list, and normalises
every reference (docker.io/library/...). What is and is not detected:

- detected: `image:` fields in YAML (any document, list or nesting; also `*image` keys such as
  `initImage`), by sealer's line scanner AND by YAML parsing where the file parses, so `.tmpl` and
  templated files still yield their literal images; `imageList` files (one per line, `#` comments);
  Helm charts (dirs with Chart.yaml + values.yaml + templates/, also packed `.tgz` charts and
  subcharts): values.yaml `image: "repo:tag"` strings and `{registry, repository|name, tag, digest}`
  maps (tag defaulting to the chart's appVersion, `global.imageRegistry` honoured), and literal
  `image:` lines in templates.
- NOT detected: images computed by template logic (printf/include), values overridden at install
  time, images an operator creates at run time from its CRs. List those in an imageList.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from sealer.errors import ImageError, InputError, Problem
from sealer.image.reference import parse_reference

YAML_SUFFIXES = (".yaml", ".yml", ".tmpl")
_TEMPLATE_MARKERS = ("{{", "}}", "${", "<", ">")
# YAML scalars that follow an `...image:` key but are flags, not references (e.g. `useImage: true`).
_NOT_REFERENCES = frozenset({"true", "false", "yes", "no", "on", "off", "null", "~", "|", ">", "|-", ">-"})
_MAX_SCAN_BYTES = 32 * 1024 * 1024  # a manifest larger than this is not a manifest


@dataclass(frozen=True)
class FoundImage:
    """One container image reference and where it was found."""

    image: str  # normalised, e.g. docker.io/library/nginx:1.25
    source: str  # rootfs-relative file (and line when known)
    app: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"image": self.image, "source": self.source}
        if self.app:
            data["appName"] = self.app
        return data


@dataclass
class Collection:
    """The result of a scan: unique images in first-seen order, and what was skipped and why."""

    images: list[FoundImage] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)  # candidates that are not valid references

    def names(self) -> list[str]:
        return [i.image for i in self.images]

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": [i.to_dict() for i in self.images],
            "ignored": list(self.ignored),
            "skipped": [p.render() for p in self.skipped],
        }


# A rootfs view: rootfs-relative posix path -> bytes source (a real file).
Tree = Mapping[str, Path]


def tree_of(root: Path) -> dict[str, Path]:
    """Every regular file under root, keyed by its root-relative posix path (symlinks not followed)."""
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            rel = name if rel_dir == "." else f"{PurePosixPath(Path(rel_dir).as_posix())}/{name}"
            out[rel] = path
    return out


def decode_line(line: str) -> str | None:
    """sealer's line scanner: `<...image>: value` on an uncommented line yields value."""
    text = line.replace('"', "").replace("'", "").replace(",", "").replace(" ", "").replace("\t", "")
    key, sep, value = text.partition(":")
    # Case-insensitive unlike sealer's, so `initImage:`/`sidecarImage:` count too.
    if not sep or not key.lower().endswith("image") or "#" in key:
        return None
    # A trailing comment is not part of the reference.
    value = value.split("#", 1)[0]
    if value.lower() in _NOT_REFERENCES:
        return None
    return value or None


def _looks_templated(value: str) -> bool:
    return any(marker in value for marker in _TEMPLATE_MARKERS)


def images_in_text(text: str) -> list[tuple[str, int]]:
    """Candidates from the line scanner, with their 1-based line numbers."""
    out: list[tuple[str, int]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        value = decode_line(line)
        if value and not _looks_templated(value):
            out.append((value, number))
    return out


def _items(root: Any) -> Iterator[tuple[Any, Any]]:
    """Every (key, value) of every mapping in a YAML document, in document order. Iterative (no
    recursion limit) and alias-safe: a shared node is visited once, so an alias bomb costs nothing."""
    seen: set[int] = set()
    stack: list[Iterator[Any]] = [iter([(None, root)])]
    while stack:
        try:
            key, value = next(stack[-1])
        except StopIteration:
            stack.pop()
            continue
        if key is not None:
            yield key, value
        if isinstance(value, dict | list) and id(value) not in seen:
            seen.add(id(value))
            stack.append(iter(value.items()) if isinstance(value, dict) else iter((None, v) for v in value))


def _walk_yaml(node: Any, out: list[str]) -> None:
    for key, value in _items(node):
        if isinstance(key, str) and key.lower().endswith("image"):
            if isinstance(value, str):
                out.append(value)
            elif isinstance(value, dict):
                ref = _image_from_map(value, None, None)
                if ref:
                    out.append(ref)


def images_in_yaml(text: str) -> list[str] | None:
    """Candidates from parsing the text as (multi-document) YAML; None when it does not parse."""
    try:
        docs = list(yaml.safe_load_all(text))
    except (yaml.YAMLError, RecursionError, ValueError):
        return None
    out: list[str] = []
    for doc in docs:
        _walk_yaml(doc, out)
    return [v for v in out if v and not _looks_templated(v)]


def _image_from_map(value: Mapping[str, Any], app_version: str | None, registry: str | None) -> str | None:
    """Helm's usual image maps: {registry, repository|name, tag, digest}."""
    repo = value.get("repository", value.get("name"))
    if not isinstance(repo, str) or not repo or _looks_templated(repo):
        return None
    reg = (
        value.get("registry")
        if isinstance(value.get("registry"), str) and value.get("registry")
        else registry
    )
    tag = value.get("tag")
    tag = str(tag) if tag not in (None, "") else app_version
    digest = value.get("digest")
    ref = f"{reg}/{repo}" if reg and not _has_registry(repo) else repo
    if isinstance(digest, str) and digest:
        return f"{ref}@{digest}"
    if tag and ":" not in repo.rsplit("/", 1)[-1]:
        ref += f":{tag}"
    return ref


def _has_registry(repo: str) -> bool:
    first, sep, _ = repo.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def images_in_values(values: Any, app_version: str | None) -> list[str]:
    """Images a chart's values.yaml declares by the common conventions."""
    global_registry: str | None = None
    if isinstance(values, dict):
        glob = values.get("global")
        if isinstance(glob, dict):
            reg = glob.get("imageRegistry")
            if not reg and isinstance(glob.get("image"), dict):
                reg = glob["image"].get("registry")
            global_registry = reg if isinstance(reg, str) and reg else None
    out: list[str] = []
    for key, value in _items(values):
        if not (isinstance(key, str) and key.lower().endswith("image")):
            continue
        if isinstance(value, str) and value and not _looks_templated(value):
            out.append(value)
        elif isinstance(value, dict):
            ref = _image_from_map(value, app_version, global_registry)
            if ref:
                out.append(ref)
    return out


@dataclass(frozen=True)
class _Chart:
    """A chart's files as name -> bytes, from a directory or a packed .tgz."""

    where: str
    files: Mapping[str, bytes]


def _chart_from_tree(tree: Tree, root: str) -> _Chart:
    prefix = root.rstrip("/") + "/"
    files: dict[str, bytes] = {}
    for rel, path in tree.items():
        if rel.startswith(prefix):
            try:
                files[rel[len(prefix) :]] = _read(path)
            except OSError:
                continue
    return _Chart(root, files)


def _charts_in_tgz(data: bytes, where: str) -> list[_Chart]:
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar.getmembers():
                if not member.isfile() or member.size > _MAX_SCAN_BYTES:
                    continue
                handle = tar.extractfile(member)
                if handle is not None:
                    files[member.name.lstrip("./")] = handle.read()
    except (tarfile.TarError, OSError, EOFError):
        return []
    return _charts_in_files(files, where)


def _charts_in_files(files: Mapping[str, bytes], where: str) -> list[_Chart]:
    """Every chart (and subchart) in a file set: directories holding Chart.yaml."""
    roots = sorted({posixpath.dirname(name) for name in files if posixpath.basename(name) == "Chart.yaml"})
    charts: list[_Chart] = []
    for root in roots:
        prefix = f"{root}/" if root else ""
        sub = {n[len(prefix) :]: b for n, b in files.items() if n.startswith(prefix)}
        charts.append(_Chart(f"{where}/{root}" if root else where, sub))
    for name, data in files.items():
        if name.endswith(".tgz") and "/charts/" in f"/{name}":
            charts.extend(_charts_in_tgz(data, f"{where}/{name}"))
    return charts


_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
_ATOM = re.compile(r'^(?:"(?P<str>[^"]*)"|(?P<path>\.[A-Za-z_][\w.]*))$')


def _atom(text: str, values: Any, chart: Mapping[str, Any]) -> str | None:
    match = _ATOM.match(text.strip())
    if match is None:
        return None
    if match.group("str") is not None:
        return match.group("str")
    parts = match.group("path").split(".")[1:]
    node: Any
    if parts[0] == "Values":
        node = values
    elif parts[0] == "Chart":
        node = chart
    else:
        return None  # .Release, .Capabilities ... are only known at install time
    for part in parts[1:]:
        if not isinstance(node, dict):
            return None
        node = node.get(part[0].lower() + part[1:] if parts[0] == "Chart" else part)
    if node is None or isinstance(node, dict | list):
        return "" if node is None else None
    return str(node)


def _render_action(expr: str, values: Any, chart: Mapping[str, Any]) -> str | None:
    """The few template forms image lines use: a value, `default A B`, `B | default A`, `| quote`."""
    stages = [p.strip() for p in expr.split("|")]
    stages = [p for p in stages if p not in ("quote", "squote", "trim", "toString")]
    if not stages:
        return None
    words = stages[0].split()
    if len(words) == 3 and words[0] == "default":
        fallback, value = _atom(words[1], values, chart), _atom(words[2], values, chart)
        current = value or fallback
    elif len(words) == 1:
        current = _atom(words[0], values, chart)
    else:
        return None
    for stage in stages[1:]:
        words = stage.split()
        if len(words) == 2 and words[0] == "default":
            current = current or _atom(words[1], values, chart)
        else:
            return None
    return current


def render_image_value(value: str, values: Any, chart: Mapping[str, Any]) -> str | None:
    """Resolve the template actions of one `image:` value from values.yaml and Chart.yaml, or None."""
    failed = False

    def sub(match: re.Match[str]) -> str:
        nonlocal failed
        out = _render_action(match.group(1), values, chart)
        if out is None:
            failed = True
            return ""
        return out

    rendered = _ACTION.sub(sub, value)
    if failed or _looks_templated(rendered) or not rendered:
        return None
    return rendered


def images_in_chart(chart: _Chart) -> list[tuple[str, str]]:
    """(candidate, source) pairs from one chart's values.yaml and its templates (no subcharts)."""
    out: list[tuple[str, str]] = []
    meta: dict[str, Any] = {}
    raw_meta = chart.files.get("Chart.yaml")
    if raw_meta is not None:
        try:
            doc = yaml.safe_load(raw_meta.decode("utf-8", "replace"))
            meta = doc if isinstance(doc, dict) else {}
        except (yaml.YAMLError, RecursionError, ValueError):
            pass
    app_version = str(meta["appVersion"]) if meta.get("appVersion") not in (None, "") else None
    parsed: Any = None
    raw_values = chart.files.get("values.yaml")
    if raw_values is not None:
        try:
            parsed = yaml.safe_load(raw_values.decode("utf-8", "replace"))
        except (yaml.YAMLError, RecursionError, ValueError):
            parsed = None
        for ref in images_in_values(parsed, app_version):
            out.append((ref, f"{chart.where}/values.yaml"))
    for name in sorted(chart.files):
        if not name.startswith("templates/") or not name.endswith((*YAML_SUFFIXES, ".tpl")):
            continue
        text = chart.files[name].decode("utf-8", "replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if line.lstrip().startswith("#"):
                continue
            key, sep, value = line.partition(":")
            key = key.strip().lstrip("-").strip().strip("\"'")
            if not sep or not key.lower().endswith("image"):
                continue
            value = value.strip().strip("\"'")
            found = render_image_value(value, parsed, meta) if "{{" in value else decode_line(line)
            if found and not _looks_templated(found):
                out.append((found, f"{chart.where}/{name}:{number}"))
    return out


def read_image_list(text: str) -> list[str]:
    """An imageList: one reference per line; blank lines and `#` comments ignored."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def _read(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(_MAX_SCAN_BYTES)


def _manifest_candidates(tree: Tree, prefix: str) -> Iterator[tuple[str, str]]:
    for rel in sorted(tree):
        if not rel.startswith(prefix) or not rel.endswith(YAML_SUFFIXES):
            continue
        try:
            text = _read(tree[rel]).decode("utf-8", "replace")
        except OSError:
            continue
        seen: set[str] = set()
        for ref, line in images_in_text(text):
            seen.add(ref)
            yield ref, f"{rel}:{line}"
        for ref in images_in_yaml(text) or []:
            if ref not in seen:
                seen.add(ref)
                yield ref, rel


def _chart_candidates(tree: Tree, prefix: str) -> Iterator[tuple[str, str]]:
    under = {rel: path for rel, path in tree.items() if rel.startswith(prefix)}
    chart_roots = sorted({posixpath.dirname(r) for r in under if posixpath.basename(r) == "Chart.yaml"})
    for root in chart_roots:
        # Subcharts are scanned on their own (they have their own Chart.yaml).
        chart = _chart_from_tree(under, root)
        yield from images_in_chart(chart)
    for rel in sorted(under):
        if rel.endswith((".tgz", ".tar.gz")) and not any(rel.startswith(f"{r}/charts/") for r in chart_roots):
            try:
                data = _read(under[rel])
            except OSError:
                continue
            for chart in _charts_in_tgz(data, rel):
                yield from images_in_chart(chart)


def _app_names(tree: Tree) -> list[str]:
    names = {rel.split("/")[2] for rel in tree if rel.startswith("application/apps/") and rel.count("/") >= 3}
    return sorted(names)


class _Collector:
    def __init__(self, ignored: set[str]) -> None:
        self.result = Collection()
        self.seen: set[str] = set()
        self.ignored = ignored

    def add(self, candidate: str, source: str, app: str | None = None) -> None:
        try:
            ref = str(parse_reference(candidate))
        except ImageError as err:
            self.result.skipped.append(Problem(err.message, file=source, severity="warning"))
            return
        if ref in self.ignored:
            if ref not in self.result.ignored:
                self.result.ignored.append(ref)
            return
        if ref in self.seen:
            return
        self.seen.add(ref)
        self.result.images.append(FoundImage(ref, source, app))


def normalise_list(entries: Iterable[str], where: str) -> list[str]:
    """Normalise an image list given by the user; a bad entry is an error naming the file."""
    out: list[str] = []
    problems: list[Problem] = []
    for entry in entries:
        try:
            out.append(str(parse_reference(entry)))
        except ImageError as err:
            problems.append(Problem(err.message, file=where, hint=err.hint))
    if problems:
        raise InputError(problems, where)
    return out


def collect_images(
    tree: Tree,
    *,
    image_lists: Iterable[tuple[str, str]] = (),
    ignored_lists: Iterable[tuple[str, str]] = (),
) -> Collection:
    """Scan a rootfs tree. image_lists/ignored_lists are (name, text) pairs from --image-list files."""
    ignored: set[str] = set()
    for name, text in ignored_lists:
        ignored.update(normalise_list(read_image_list(text), name))
    collector = _Collector(ignored)
    for list_path in ("manifests/imageList", "imageList"):
        path = tree.get(list_path)
        if path is not None:
            for number, line in enumerate(_read(path).decode("utf-8", "replace").splitlines(), start=1):
                for ref in read_image_list(line):
                    collector.add(ref, f"{list_path}:{number}")
    for ref, source in _manifest_candidates(tree, "manifests/"):
        collector.add(ref, source)
    for ref, source in _chart_candidates(tree, "charts/"):
        collector.add(ref, source)
    for app in _app_names(tree):
        prefix = f"application/apps/{app}/"
        app_tree = {rel: p for rel, p in tree.items() if rel.startswith(prefix)}
        if any(posixpath.basename(r) == "Chart.yaml" for r in app_tree) or any(
            r.endswith(".tgz") for r in app_tree
        ):
            for ref, source in _chart_candidates(app_tree, prefix):
                collector.add(ref, source, app)
        for ref, source in _manifest_candidates(
            {r: p for r, p in app_tree.items() if "/templates/" not in r and not r.endswith("values.yaml")},
            prefix,
        ):
            collector.add(ref, source, app)
    for name, text in image_lists:
        for ref in normalise_list(read_image_list(text), name):
            collector.add(ref, name)
    return collector.result


def image_list_sources(paths: Iterable[Path]) -> list[tuple[str, str]]:
    """Read --image-list / --ignored-image-list files; a missing file is an InputError naming it."""
    out: list[tuple[str, str]] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            out.append((str(path), path.read_text(encoding="utf-8")))
        except OSError as err:
            problems.append(Problem(f"cannot read image list: {err.strerror}", file=str(path)))
    if problems:
        raise InputError(problems, "image list")
    return out


WELL_KNOWN_DIRS = frozenset(
    {
        "application",
        "applications",
        "bin",
        "charts",
        "cri",
        "etc",
        "images",
        "lib",
        "manifests",
        "plugin",
        "plugins",
        "registry",
        "scripts",
        "statics",
    }
)


def planned_tree(steps: Iterable[Any], context: Path) -> dict[str, Path]:
    """The files COPY/ADD/APP/CNI/CSI steps will put into the rootfs, mapped to their context files.

    Used by `build --dry-run` to show the images a build would collect without building. A
    destination counts as a directory when it ends in `/`, has several sources, already holds
    files, or is one of the rootfs directories every sealer base image has (manifests, charts ...).
    """
    tree: dict[str, Path] = {}
    dirs: set[str] = {""}
    root = context.resolve()
    for step in steps:
        if step.instruction not in ("COPY", "ADD", "APP", "CNI", "CSI") or step.dest is None:
            continue
        local = [s for s in step.sources if not s.remote]
        dest_raw = str(step.dest)
        dest = posixpath.normpath("/" + dest_raw).lstrip("/")
        dest = "" if dest == "." else dest
        as_dir = (
            dest_raw.endswith("/")
            or dest == ""
            or len(step.sources) > 1
            or dest in dirs
            or dest in WELL_KNOWN_DIRS
        )
        for source in local:
            matches = (
                sorted(root.glob(source.path))
                if any(c in source.path for c in "*?[")
                else [root / source.path]
            )
            for match in matches:
                if match.is_dir():
                    base = dest
                    for rel, path in tree_of(match).items():
                        tree[f"{base}/{rel}" if base else rel] = path
                        dirs.add(posixpath.dirname(f"{base}/{rel}" if base else rel))
                    dirs.add(base)
                elif match.is_file():
                    target = f"{dest}/{match.name}" if as_dir and dest else (match.name if as_dir else dest)
                    tree[target] = match
                    dirs.add(posixpath.dirname(target))
    return tree
