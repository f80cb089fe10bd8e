"""Planning a ClusterImage build: find and parse the Kubefile per platform, check it against the
context, and work out which container images the build will collect (what `build --dry-run` shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import os
import posixpath
import shlex
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from sealer import __version__
from sealer.errors import ImageError, InputError, KubefileError, Problem, RegistryError
from sealer.image import oci
from sealer.image.collect import (
    WELL_KNOWN_DIRS,
    Collection,
    collect_images,
    image_list_sources,
    planned_tree,
    tree_of,
)
from sealer.image.kubefile import BaseImage, BaseImageResolver, Kubefile, Step, check_context, parse_kubefile
from sealer.image.layers import apply_layer
from sealer.image.metadata import ANNOTATION_CONTAINER_IMAGES, ANNOTATION_IMAGE_EXTENSION
from sealer.image.oci import Descriptor, Platform, host_platform
from sealer.image.reference import Reference, parse_reference
from sealer.image.registry import RegistryClient, RegistryOptions
from sealer.image.service import ensure_image
from sealer.image.store import ImageStore, default_store_root, sealer_home, tree_bytes

KUBEFILE_NAMES = ("Kubefile", "kubefile")
IMAGE_TYPES = ("kube-installer", "app-installer")
BUILD_MODES = ("all", "lite")


@dataclass
class BuildOptions:
    """Everything `sealer build` was asked to do."""

    context: Path
    kubefile: Path | None = None
    tag: str | None = None
    platforms: Sequence[Platform] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    image_lists: Sequence[Path] = ()
    ignored_image_lists: Sequence[Path] = ()
    build_mode: str = "all"
    image_type: str = "kube-installer"
    no_cache: bool = False


@dataclass
class BuildPlan:
    """The checked Kubefile for each platform and the images the build will collect."""

    options: BuildOptions
    kubefile_path: Path
    kubefiles: dict[str, Kubefile]  # keyed by platform string
    collection: Collection
    tag: str | None

    @property
    def primary(self) -> Kubefile:
        return next(iter(self.kubefiles.values()))

    def warnings(self) -> list[Problem]:
        seen: set[str] = set()
        out: list[Problem] = []
        for kubefile in self.kubefiles.values():
            for warning in kubefile.warnings:
                if warning.render() not in seen:
                    seen.add(warning.render())
                    out.append(warning)
        return out

    def to_dict(self) -> dict[str, Any]:
        primary = self.primary.to_dict()
        primary.pop("warnings", None)
        return {
            "kubefile": str(self.kubefile_path),
            "context": str(self.options.context),
            "tag": self.tag,
            "platforms": list(self.kubefiles),
            "build_mode": self.options.build_mode,
            "type": self.options.image_type,
            **primary,
            "image_extension": self.primary.image_extension(self.options.image_type),
            "container_images": self.collection.to_dict(),
            "warnings": [w.render() for w in self.warnings()],
        }


def find_kubefile(context: Path, kubefile: Path | None) -> Path:
    """The Kubefile to use: -f as given, else Kubefile (or kubefile) in the context."""
    if kubefile is not None:
        if not kubefile.is_file():
            raise InputError(
                [Problem("Kubefile not found", file=str(kubefile), hint="check the -f path")], "build"
            )
        return kubefile
    for name in KUBEFILE_NAMES:
        candidate = context / name
        if candidate.is_file():
            return candidate
    raise InputError(
        [
            Problem(
                f"no Kubefile in the build context {context}",
                file=str(context),
                hint="write a Kubefile there, or name one with -f",
            )
        ],
        "build",
    )


def store_base_resolver(store: ImageStore) -> BaseImageResolver:
    """Read a FROM image's apps, env and labels from the local store; None when it is not there."""

    def resolve(reference: str, platform: Platform) -> BaseImage | None:
        if not store.find(reference):
            return None
        image = store.select(reference, platform)
        inner = image.config.get("config") or {}
        labels_raw = inner.get("Labels") if isinstance(inner, dict) else None
        labels = {str(k): str(v) for k, v in labels_raw.items()} if isinstance(labels_raw, dict) else {}
        extension_text = image.manifest.annotations.get(ANNOTATION_IMAGE_EXTENSION)
        if not extension_text:
            return BaseImage(reference, labels=labels)
        try:
            extension = json.loads(extension_text)
        except ValueError as err:
            raise ImageError(
                f"base image {reference}: its {ANNOTATION_IMAGE_EXTENSION} annotation is not JSON ({err})"
            ) from None
        if not isinstance(extension, dict):
            raise ImageError(f"base image {reference}: {ANNOTATION_IMAGE_EXTENSION} is not a JSON object")
        return BaseImage.from_extension(reference, extension, labels)

    return resolve


def local_store_resolver(root: Path | None = None) -> BaseImageResolver:
    """Like store_base_resolver on the default store, but creates nothing when there is no store yet."""
    store_root = root or default_store_root()
    inner: list[BaseImageResolver] = []

    def resolve(reference: str, platform: Platform) -> BaseImage | None:
        if not (store_root / "index.json").exists():
            return None
        if not inner:
            inner.append(store_base_resolver(ImageStore(store_root)))
        return inner[0](reference, platform)

    return resolve


def plan_build(options: BuildOptions, resolve_base: BaseImageResolver | None) -> BuildPlan:
    """Parse and check everything a build needs, without writing anything. Raises on any problem."""
    context = options.context
    if not context.is_dir():
        raise InputError(
            [Problem("build context is not a directory", file=str(context), hint="sealer build ... <dir>")],
            "build",
        )
    tag = str(parse_reference(options.tag)) if options.tag else None
    if options.build_mode not in BUILD_MODES:
        raise InputError([Problem(f"unknown build mode {options.build_mode!r}", hint="all or lite")], "build")
    path = find_kubefile(context, options.kubefile)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError([Problem(f"cannot read the Kubefile: {err}", file=str(path))], "build") from None
    platforms = list(options.platforms) or [host_platform()]
    kubefiles: dict[str, Kubefile] = {}
    problems: list[Problem] = []
    for platform in platforms:
        kubefile = parse_kubefile(
            text,
            context=context,
            filename=str(path),
            build_args=options.build_args,
            platform=platform,
            resolve_base=resolve_base,
        )
        for problem in check_context(kubefile, context):
            if problem.render() not in {p.render() for p in problems}:
                problems.append(problem)
        kubefiles[str(platform)] = kubefile
    if problems:
        raise KubefileError(problems)
    primary = next(iter(kubefiles.values()))
    collection = collect_images(
        planned_tree(primary.steps, context),
        image_lists=image_list_sources(options.image_lists),
        ignored_lists=image_list_sources(options.ignored_image_lists),
    )
    return BuildPlan(options, path, kubefiles, collection, tag)


# ================================================================== the builder
# Layers are reproducible: entries sorted, parents listed, mtime fixed, uid/gid 0, no user names,
# gzip header without name or time. The same context therefore always gives the same digests.

BUILD_EPOCH = 0
ZERO_TIME = "1970-01-01T00:00:00Z"
_COPY_LIKE = ("COPY", "ADD", "APP", "CNI", "CSI")
_COPY_BUFFER = 1 << 20
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")


@dataclass(frozen=True)
class Entry:
    """One thing a layer puts into the rootfs."""

    path: str  # rootfs-relative posix path, no leading slash
    kind: str  # file, dir, symlink, whiteout
    mode: int = 0o644
    source: Path | None = None
    data: bytes | None = None
    link: str = ""
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class LayerInfo:
    digest: str
    size: int
    diff_id: str
    media_type: str

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size)


@dataclass
class StepReport:
    line: int
    instruction: str
    summary: str
    cached: bool
    layer: LayerInfo | None


@dataclass
class BuildResult:
    name: str
    digest: str
    media_type: str
    platforms: list[str]
    steps: list[StepReport] = field(default_factory=list)
    layers: int = 0
    size: int = 0
    images: list[str] = field(default_factory=list)  # pulled into registry/
    referenced: list[str] = field(default_factory=list)  # found in the image's files and lists

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.digest,
            "platforms": self.platforms,
            "layers": self.layers,
            "size": self.size,
            "container_images": self.images,
            "referenced_images": self.referenced,
            "steps": [
                {
                    "line": s.line,
                    "instruction": s.instruction,
                    "cached": s.cached,
                    "layer": s.layer.digest if s.layer else None,
                }
                for s in self.steps
            ],
        }


ProgressFn = Callable[[str], None]


class _HashingWriter:
    """File-like sink that hashes what passes through (the layer's diff_id) and forwards it."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        pass


class _WriterFile:
    """Adapts a store BlobWriter to the file protocol gzip and tarfile expect."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def write(self, data: bytes) -> int:
        self.writer.write(data)
        return len(data)

    def flush(self) -> None:
        pass


def _with_parents(entries: list[Entry]) -> list[Entry]:
    by_path: dict[str, Entry] = {}
    for entry in entries:
        by_path[entry.path] = entry
    for entry in list(by_path.values()):
        parent = posixpath.dirname(entry.path)
        while parent and parent not in by_path:
            by_path[parent] = Entry(parent, "dir", 0o755)
            parent = posixpath.dirname(parent)
    return [by_path[p] for p in sorted(by_path)]


def write_layer(store: ImageStore, entries: list[Entry], compress: bool = True) -> LayerInfo:
    """Write entries as one reproducible layer blob into the store."""
    media = oci.MEDIA_OCI_LAYER_GZIP if compress else oci.MEDIA_OCI_LAYER
    with store.writer() as blob:
        sink = _WriterFile(blob)
        gz = (
            gzip.GzipFile(filename="", fileobj=sink, mode="wb", mtime=BUILD_EPOCH, compresslevel=6)
            if compress
            else None
        )
        # Uncompressed, the diff_id is the blob digest the store computes anyway: hash once.
        tee: Any = _HashingWriter(gz) if gz is not None else sink
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=tee, mode="w|", format=tarfile.PAX_FORMAT, copybufsize=_COPY_BUFFER
        ) as tar:
            for entry in _with_parents(entries):
                _add_entry(tar, entry)
        if gz is not None:
            gz.close()
        desc = blob.commit()
    diff_id = "sha256:" + tee.hash.hexdigest() if gz is not None else desc.digest
    return LayerInfo(desc.digest, desc.size, diff_id, media)


def _add_entry(tar: tarfile.TarFile, entry: Entry) -> None:
    info = tarfile.TarInfo(entry.path if entry.kind != "dir" else entry.path + "/")
    info.mtime = BUILD_EPOCH
    info.uid, info.gid, info.uname, info.gname = entry.uid, entry.gid, "", ""
    info.mode = entry.mode & 0o7777
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link
        tar.addfile(info)
    elif entry.kind == "whiteout":
        info.name = posixpath.join(posixpath.dirname(entry.path), ".wh." + posixpath.basename(entry.path))
        info.size = 0
        tar.addfile(info, io.BytesIO(b""))
    elif entry.data is not None:
        info.size = len(entry.data)
        tar.addfile(info, io.BytesIO(entry.data))
    else:
        assert entry.source is not None
        with entry.source.open("rb") as handle:
            info.size = os.fstat(handle.fileno()).st_size
            tar.addfile(info, handle)


def _tree_entries(root: Path, dest: str) -> list[Entry]:
    """A directory's contents (not the directory itself) placed under dest, as Docker COPY does."""
    out: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        base = (
            dest
            if rel_dir == "."
            else posixpath.join(dest, Path(rel_dir).as_posix())
            if dest
            else Path(rel_dir).as_posix()
        )
        if rel_dir != ".":
            out.append(Entry(base, "dir", os.stat(dirpath).st_mode))
        for name in sorted(filenames) + sorted(
            d for d in dirnames if os.path.islink(os.path.join(dirpath, d))
        ):
            path = Path(dirpath) / name
            target = posixpath.join(base, name) if base else name
            if path.is_symlink():
                out.append(Entry(target, "symlink", 0o777, link=os.readlink(path)))
            elif path.is_file():
                out.append(Entry(target, "file", path.stat().st_mode, source=path))
    return out


def _chmod_chown(entries: list[Entry], flags: tuple[str, ...]) -> list[Entry]:
    mode: int | None = None
    uid = gid = 0
    for flag in flags:
        key, _, value = flag[2:].partition("=")
        if key == "chmod":
            try:
                mode = int(value, 8)
            except ValueError:
                raise ImageError(f"--chmod={value}: not an octal mode", "e.g. --chmod=0755") from None
        elif key == "chown":
            user, _, group = value.partition(":")
            if not user.isdigit() or (group and not group.isdigit()):
                raise ImageError(f"--chown={value}: only numeric UID[:GID] are supported", "e.g. --chown=0:0")
            uid, gid = int(user), int(group or user)
    return [
        replace(e, mode=mode if mode is not None and e.kind == "file" else e.mode, uid=uid, gid=gid)
        for e in entries
    ]


async def _download(url: str, cache: Path) -> Path:
    """Fetch an http(s) source for ADD/APP into the build cache; the layer cache key uses its content."""
    target_dir = cache / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:32]
    target_dir.mkdir(parents=True, exist_ok=True)
    name = posixpath.basename(urlparse(url).path.rstrip("/")) or "index"
    target = target_dir / name
    tmp = target_dir / f".{name}.part"
    try:
        async with (
            httpx.AsyncClient(follow_redirects=True, timeout=120) as client,
            client.stream("GET", url) as resp,
        ):
            if resp.status_code != 200:
                raise ImageError(f"download of {url} failed: HTTP {resp.status_code}", "check the URL")
            with tmp.open("wb") as handle:
                async for chunk in resp.aiter_bytes(1 << 20):
                    handle.write(chunk)
    except httpx.HTTPError as err:
        tmp.unlink(missing_ok=True)
        raise ImageError(f"download of {url} failed: {err}", "check the URL and the network") from None
    os.replace(tmp, target)
    return target


def _unpacked(archive: Path, cache: Path, line: int) -> Path:
    """A local archive unpacked once into the build cache (keyed by its content)."""
    target = cache / "unpacked" / _file_digest(archive)
    if target.is_dir():
        _touch(target)  # last use, for `sealer prune --until`
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError, EOFError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ImageError(
            f"line {line}: ADD cannot unpack {archive.name}: {err}", "is it a tar archive?"
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another build unpacked it first
    return target


async def step_entries(step: Step, context: Path, dirs: set[str], cache: Path) -> list[Entry]:
    """What a COPY/ADD/APP/CNI/CSI step adds, following Docker's COPY rules for the destination."""
    root = context.resolve()
    dest_raw = step.dest or ""
    # Relative to the image root, and clamped there: `..` cannot climb out (as in Docker).
    dest = posixpath.normpath("/" + dest_raw).lstrip("/")
    dest = "" if dest == "." else dest
    sources: list[tuple[Path, bool]] = []  # (path, is_download)
    for source in step.sources:
        if source.remote:
            sources.append((await _download(source.path, cache), True))
            continue
        if step.instruction == "ADD" and source.path.endswith(_ARCHIVE_SUFFIXES):
            # As Docker does: ADD unpacks a local tar archive into the destination directory.
            sources.append((_unpacked(root / source.path, cache, step.line), False))
            continue
        matches = (
            sorted(root.glob(source.path)) if any(c in source.path for c in "*?[") else [root / source.path]
        )
        if source.path in (".", ""):
            matches = [root]
        for match in matches:
            if not (match.exists() or match.is_symlink()):
                raise KubefileError(
                    [Problem(f"{step.instruction} source {source.raw!r} not found", line=step.line)]
                )
            sources.append((match, False))
    as_dir = dest_raw.endswith("/") or dest == "" or len(sources) > 1 or dest in dirs
    entries: list[Entry] = []
    for path, _ in sources:
        if path.is_dir() and not path.is_symlink():
            entries.extend(_tree_entries(path, dest))
            if dest:
                entries.append(Entry(dest, "dir", 0o755))
        elif path.is_symlink():
            target = posixpath.join(dest, path.name) if as_dir else dest
            entries.append(Entry(target, "symlink", 0o777, link=os.readlink(path)))
        else:
            target = posixpath.join(dest, path.name) if as_dir and dest else (path.name if as_dir else dest)
            entries.append(Entry(target, "file", path.stat().st_mode, source=path))
    return _chmod_chown(entries, step.flags)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def entries_key(entries: list[Entry]) -> list[Any]:
    """What a layer is made of, for the cache key: paths, modes, owners and content hashes."""
    out: list[Any] = []
    for e in _with_parents(entries):
        content = (
            _file_digest(e.source)
            if e.source is not None
            else (hashlib.sha256(e.data).hexdigest() if e.data is not None else "")
        )
        out.append([e.path, e.kind, e.mode & 0o7777, e.uid, e.gid, e.link, content])
    return out


class BuildCache:
    """Layer cache: key (parent layers + instruction + inputs) -> a layer blob already in the store."""

    def __init__(self, root: Path, store: ImageStore, enabled: bool = True) -> None:
        self.root = root
        self.store = store
        self.enabled = enabled
        (root / "layers").mkdir(parents=True, exist_ok=True, mode=0o700)

    @staticmethod
    def key(parent: str, what: Any) -> str:
        return hashlib.sha256(json.dumps([parent, what], sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> LayerInfo | None:
        if not self.enabled:
            return None
        path = self.root / "layers" / f"{key}.json"
        try:
            data = json.loads(path.read_text())
            info = LayerInfo(data["digest"], int(data["size"]), data["diff_id"], data["media_type"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not self.store.has_blob(info.digest, info.size):
            return None
        _touch(path)  # last use, for `sealer prune --until`
        return info

    def put(self, key: str, info: LayerInfo) -> None:
        path = self.root / "layers" / f"{key}.json"
        # A unique temporary name: concurrent builds may record the same layer at once.
        fd, tmp = tempfile.mkstemp(prefix=".layer-", dir=path.parent)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(info.__dict__))
        os.replace(tmp, path)


def default_build_cache() -> Path:
    """Where `sealer build` keeps its cache unless told otherwise."""
    return sealer_home() / "build-cache"


def _touch(path: Path) -> None:
    # Best effort: a read-only cache still works, it just looks older to `sealer prune --until`.
    with contextlib.suppress(OSError):
        os.utime(path)


@dataclass(frozen=True)
class BuildCacheEntry:
    """One thing in the build cache that `sealer prune` can drop on its own."""

    path: Path
    kind: str  # "layer record" | "download" | "unpacked archive" | "image cache" | "leftover"
    size: int
    last_used: float  # epoch seconds; a leftover of a crashed build is as old as can be


# What the build cache holds (build_image, _download, _unpacked, registry_entries):
#   layers/<key>.json   which stored blob a step produced (tiny; touched on every hit)
#   downloads/<h>/      ADD/APP http(s) sources (fetched again at every build, so mtime = last use)
#   unpacked/<sha>/     local archives ADD unpacked (touched on every hit)
#   images/             an image store of the container images collected into registry/ (its
#                       index.json is rewritten by the pulls of every build that collects images)
#   sealer-build-*, .layer-*, .unpack-*, .*.part: work files of builds; a running build holds the
#                       image store's ingest lock, so with `ImageStore.exclusive()` held they are
#                       leftovers of crashed builds.
def build_cache_entries(cache_dir: Path) -> list[BuildCacheEntry]:
    """Everything in the build cache, as separately removable entries. Never follows a symlink out
    of the cache: a symlink is an entry of its own (the link is what goes)."""
    out: list[BuildCacheEntry] = []

    def add(path: Path, kind: str, last_used: float | None = None) -> None:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        is_tree = stat.S_ISDIR(st.st_mode)
        size = tree_bytes(path) if is_tree else st.st_size
        out.append(BuildCacheEntry(path, kind, size, st.st_mtime if last_used is None else last_used))

    for path in _entries(cache_dir / "layers"):
        add(path, "leftover" if path.name.startswith(".") else "layer record",
            0.0 if path.name.startswith(".") else None)
    for path in _entries(cache_dir / "downloads"):
        newest = max([_mtime(path), *(_mtime(p) for p in _entries(path))])
        add(path, "download", newest)
    for path in _entries(cache_dir / "unpacked"):
        add(path, "leftover" if path.name.startswith(".") else "unpacked archive",
            0.0 if path.name.startswith(".") else None)
    images = cache_dir / "images"
    if images.exists() or images.is_symlink():
        add(images, "image cache", _mtime(images / "index.json") if not images.is_symlink() else None)
    for path in _entries(cache_dir):
        if path.name.startswith("sealer-build-"):
            add(path, "leftover", 0.0)
    return out


def _entries(directory: Path) -> list[Path]:
    if directory.is_symlink() or not directory.is_dir():
        return []
    return sorted(directory.iterdir())


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0


def prune_build_cache(
    cache_dir: Path, *, unused_for: float | None, dry_run: bool, now: float | None = None
) -> list[BuildCacheEntry]:
    """Drop build cache entries (all, or those not used for `unused_for` seconds; leftovers of
    crashed builds always) and return them. The caller holds the image store's `exclusive()`, so
    no build is using the cache meanwhile."""
    limit = None if unused_for is None else (time.time() if now is None else now) - unused_for
    gone: list[BuildCacheEntry] = []
    for entry in build_cache_entries(cache_dir):
        if limit is not None and entry.kind != "leftover" and entry.last_used >= limit:
            continue
        if not dry_run:
            try:
                if entry.path.is_dir() and not entry.path.is_symlink():
                    shutil.rmtree(entry.path)
                else:
                    entry.path.unlink()
            except FileNotFoundError:
                continue
            except OSError as err:
                raise ImageError(
                    f"cannot remove {entry.path} from the build cache: {err.strerror or err}",
                    "check its owner and permissions; sealer prune can be run again",
                ) from None
        gone.append(entry)
    return gone


# ------------------------------------------------------------------ RUN
# RUN has no container engine behind it: a ClusterImage rootfs has no shell or libc of its own
# (FROM scratch + binaries), so the command runs with the HOST's shell and tools, with its working
# directory at the image rootfs, in a private mount namespace where every host mount is read-only
# and only the rootfs is writable. Relative paths change the image; absolute ones cannot change the
# host. No network isolation (downloads work), no chroot, no user namespace: it needs root.
_RUN_SCRIPT = r"""
set -e
R="$1"; T="$2"; shift 2
awk '{print $2}' /proc/self/mounts | sort -r | while read -r mp; do
  case "$mp" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;; esac
  mount -o remount,bind,ro "$mp" 2>/dev/null || true
done
# Fail closed: never run the command with a writable host root.
if [ -w / ]; then echo "sealer: could not make the host file system read-only for RUN" >&2; exit 97; fi
for d in "$R" "$T"; do mount --bind "$d" "$d"; mount -o remount,bind,rw "$d"; done
export TMPDIR="$T"
cd "$R"
exec /bin/sh -c "$1"
"""


def _snapshot(root: Path) -> dict[str, tuple[str, int, int, int, str]]:
    out: dict[str, tuple[str, int, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = Path(os.path.relpath(path, root)).as_posix()
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", st.st_mode, 0, 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mode, 0, 0, "")
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", st.st_mode, st.st_size, st.st_mtime_ns, "")
    return out


def _diff(root: Path, before: dict[str, tuple[str, int, int, int, str]]) -> list[Entry]:
    after = _snapshot(root)
    entries: list[Entry] = []
    for rel, meta in after.items():
        if before.get(rel) == meta:
            continue
        kind, mode, _, _, link = meta
        if kind == "file":
            entries.append(Entry(rel, "file", mode, source=root / rel))
        elif kind == "symlink":
            entries.append(Entry(rel, "symlink", 0o777, link=link))
        else:
            entries.append(Entry(rel, "dir", mode))
    removed = sorted(set(before) - set(after))
    for rel in removed:
        if posixpath.dirname(rel) in removed:
            continue  # the parent's whiteout covers it
        entries.append(Entry(rel, "whiteout", 0o644))
    return entries


class _WorkTree:
    """The image rootfs on disk, materialised only once a RUN needs it, then kept in step."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.applied = 0

    def sync(self, store: ImageStore, layers: list[LayerInfo]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for layer in layers[self.applied :]:
            apply_layer(store.verified_blob_path(layer.digest), self.root, lenient=True)
        self.applied = len(layers)


async def run_step(step: Step, work: Path, env: Mapping[str, str]) -> list[Entry]:
    """Execute a RUN in the work tree (see above) and return what it changed."""
    if os.geteuid() != 0:
        raise ImageError(
            f"line {step.line}: RUN needs root (it runs in a private mount namespace)",
            "build as root, or drop RUN and COPY prepared files instead",
        )
    if shutil.which("unshare") is None:
        raise ImageError(f"line {step.line}: RUN needs unshare (util-linux)", "apt-get install util-linux")
    command = step.args[0] if not step.json_form else shlex.join(step.args)
    before = _snapshot(work)
    # A private, writable TMPDIR outside the rootfs (the host's /tmp is read-only for RUN).
    scratch = work.parent / "run-tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    run_env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": "/root", **env}
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--mount", "--propagation", "private", "--fork", "--",
        "/bin/sh", "-c", _RUN_SCRIPT, "sealer-run", str(work), str(scratch), command,
        env=run_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        tail = "\n".join(output.decode(errors="replace").splitlines()[-20:])
        raise ImageError(
            f"line {step.line}: RUN {command!r} exited with {proc.returncode}:\n{tail}",
            "RUN runs host tools with the image rootfs as working directory; absolute paths are read-only",
        )
    return _diff(work, before)


# ------------------------------------------------------------------ container images -> registry/
REGISTRY_ROOT = "registry/docker/registry/v2"


def _link(path: str, digest: str) -> Entry:
    return Entry(path, "file", 0o644, data=digest.encode())


async def registry_entries(
    images: list[str],
    platform: Platform,
    cache_store: ImageStore,
    options: RegistryOptions,
    progress: ProgressFn | None,
    sources: Mapping[str, str] | None = None,
) -> tuple[list[Entry], list[str]]:
    """Pull each image for one platform and lay it out as docker-registry's filesystem storage.

    Blobs are shared between images (one copy per digest). Only the platform's own manifest is
    stored, as Go sealer does, so the registry serves it under the tag.
    """
    entries: dict[str, Entry] = {}
    stored: list[str] = []
    refs = [parse_reference(name) for name in images]
    sources = sources or {}
    async with RegistryClient(options) as client:

        async def pull(ref: Reference) -> None:
            if progress:
                progress(f"  pulling {ref} ({platform})")
            try:
                await client.pull(ref, cache_store, platforms=[platform])
            except (RegistryError, ImageError) as err:
                where = f" (found in {sources[str(ref)]})" if sources.get(str(ref)) else ""
                raise type(err)(
                    f"cannot collect container image {ref}{where}: {err.message}",
                    err.hint or "list it in --ignored-image-list to build without it, or --build-mode lite",
                ) from None

        # The client bounds concurrent blob transfers; images are fetched side by side. On the
        # first failure the other pulls are cancelled and awaited before the client closes.
        tasks = [asyncio.ensure_future(pull(ref)) for ref in refs]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        for ref in refs:
            image = cache_store.select(str(ref), platform)
            manifest_digest = image.descriptor.digest
            blobs = [
                manifest_digest,
                image.manifest.config.digest,
                *(layer.digest for layer in image.manifest.layers),
            ]
            for digest in blobs:
                hexd = digest.split(":", 1)[1]
                path = f"{REGISTRY_ROOT}/blobs/sha256/{hexd[:2]}/{hexd}/data"
                entries[path] = Entry(path, "file", 0o644, source=cache_store.blob_path(digest))
            repo = f"{REGISTRY_ROOT}/repositories/{ref.path}"
            mhex = manifest_digest.split(":", 1)[1]
            for path in (f"{repo}/_manifests/revisions/sha256/{mhex}/link",):
                entries[path] = _link(path, manifest_digest)
            if ref.tag:
                for path in (
                    f"{repo}/_manifests/tags/{ref.tag}/current/link",
                    f"{repo}/_manifests/tags/{ref.tag}/index/sha256/{mhex}/link",
                ):
                    entries[path] = _link(path, manifest_digest)
            for digest in blobs[1:]:
                path = f"{repo}/_layers/sha256/{digest.split(':', 1)[1]}/link"
                entries[path] = _link(path, digest)
            stored.append(str(ref))
    return list(entries.values()), stored


# ------------------------------------------------------------------ build
def _base_layers(
    store: ImageStore, base: str | None, platform: Platform
) -> tuple[list[Descriptor], dict[str, Any], list[dict[str, Any]]]:
    """The base image's layers, config and the container images its registry/ already holds."""
    if base in (None, "scratch"):
        return [], {}, []
    image = store.select(str(base), platform)
    held: list[dict[str, Any]] = []
    text = image.manifest.annotations.get(ANNOTATION_CONTAINER_IMAGES)
    if text:
        try:
            value = json.loads(text)
        except ValueError:
            value = []
        held = (
            [v for v in value if isinstance(v, dict) and isinstance(v.get("image"), str)]
            if isinstance(value, list)
            else []
        )
    return list(image.manifest.layers), image.config, held


async def build_image(
    options: BuildOptions,
    *,
    store: ImageStore,
    registry_options: RegistryOptions | None = None,
    cache_root: Path | None = None,
    progress: ProgressFn | None = None,
) -> BuildResult:
    """Build and tag a ClusterImage: one layer per filesystem step, plus registry/ with every image."""
    if not options.tag:
        raise InputError([Problem("a build needs a name", hint="sealer build -t my-image:v1 .")], "build")
    registry_options = registry_options or RegistryOptions()
    say = progress or (lambda _: None)
    cache_dir = cache_root or default_build_cache()
    platforms = list(options.platforms) or [host_platform()]
    # The base image must be local before parsing, so its apps are known to LAUNCH/APPCMDS.
    bases: list[str] = []

    def record(reference: str, platform: Platform) -> None:
        bases.append(reference)
        return None

    try:
        plan_build(replace(options, platforms=platforms[:1]), record)
    except KubefileError:
        if not bases:
            raise
        # Problems naming apps of a base image that is not local yet are re-checked after the pull.
    base = bases[0] if bases else None
    if base not in (None, "scratch"):
        say(f"base image {base}")
        await ensure_image(store, str(base), registry_options, platforms=platforms)
    plan = plan_build(replace(options, platforms=platforms), store_base_resolver(store))
    tag = plan.tag or options.tag
    cache = BuildCache(cache_dir, store, enabled=not options.no_cache)
    cache_store = ImageStore(cache_dir / "images")
    result = BuildResult(tag, "", "", [str(p) for p in platforms])
    manifests: list[Descriptor] = []
    with store.ingest(), tempfile.TemporaryDirectory(prefix="sealer-build-", dir=cache_dir) as tmp:
        for platform in platforms:
            kubefile = plan.kubefiles[str(platform)]
            manifests.append(
                await _build_platform(
                    plan,
                    kubefile,
                    platform,
                    store,
                    cache,
                    cache_store,
                    registry_options,
                    Path(tmp) / str(platform).replace("/", "_"),
                    result,
                    say,
                )
            )
        if len(manifests) == 1:
            top = manifests[0]
        else:
            index = oci.new_index(manifests)
            top = store.put_manifest(index, oci.MEDIA_OCI_INDEX)
            top = Descriptor(oci.MEDIA_OCI_INDEX, top.digest, top.size)
        store.tag(tag, top)
    result.digest, result.media_type = top.digest, top.media_type
    return result


async def _build_platform(
    plan: BuildPlan,
    kubefile: Kubefile,
    platform: Platform,
    store: ImageStore,
    cache: BuildCache,
    cache_store: ImageStore,
    registry_options: RegistryOptions,
    tmp: Path,
    result: BuildResult,
    say: ProgressFn,
) -> Descriptor:
    options = plan.options
    context = options.context
    base_layers, base_config, base_images = _base_layers(store, kubefile.base, platform)
    base_inner = base_config.get("config") or {}
    base_rootfs = base_config.get("rootfs") or {}
    diff_ids: list[str] = list(base_rootfs.get("diff_ids") or [])
    history: list[dict[str, Any]] = list(base_config.get("history") or [])
    layers: list[LayerInfo] = []
    parent = BuildCache.key("base", [str(platform), [d.digest for d in base_layers]])
    tree: dict[str, Path] = {}
    dirs: set[str] = set(WELL_KNOWN_DIRS)
    work: _WorkTree | None = None
    base_infos = [LayerInfo(d.digest, d.size, diff_ids[i] if i < len(diff_ids) else "", d.media_type)
                  for i, d in enumerate(base_layers)]  # fmt: skip
    steps = [s for s in kubefile.steps if s.changes_filesystem]
    for number, step in enumerate(kubefile.steps, start=1):
        label = f"[{platform} {number}/{len(kubefile.steps)}] {step.instruction} {step.summary()}"
        if not step.changes_filesystem:
            history.append({"created": ZERO_TIME, "created_by": step.original, "empty_layer": True})
            say(label)
            continue
        entries: list[Entry] | None = None
        if step.instruction == "RUN":
            env = {**kubefile.args, **kubefile.env}
            key = BuildCache.key(parent, ["RUN", list(step.args), step.json_form, sorted(env.items())])
        else:
            entries = await step_entries(step, context, dirs, cache.root)
            key = BuildCache.key(
                parent, [step.instruction, step.dest, list(step.flags), entries_key(entries)]
            )
        info = cache.get(key)
        cached = info is not None
        if info is None:
            if step.instruction == "RUN":
                if work is None:
                    work = _WorkTree(tmp / "rootfs")
                work.sync(store, base_infos + layers)
                entries = await run_step(step, work.root, {**kubefile.args, **kubefile.env})
            assert entries is not None
            info = write_layer(store, entries)
            cache.put(key, info)
        if work is not None:
            work.sync(store, base_infos + layers + [info])
        for entry in entries or []:
            if entry.kind == "dir":
                dirs.add(entry.path)
            if entry.kind == "file" and entry.source is not None:
                tree[entry.path] = entry.source
                dirs.add(posixpath.dirname(entry.path))
        say(label + ("  (cached)" if cached else f"  -> {info.digest[:19]}"))
        result.steps.append(StepReport(step.line, step.instruction, step.summary(), cached, info))
        layers.append(info)
        diff_ids.append(info.diff_id)
        history.append({"created": ZERO_TIME, "created_by": step.original})
        parent = BuildCache.key(parent, info.digest)
    if any(s.instruction == "RUN" for s in steps):
        # RUN may have written manifests or charts; scan the whole tree as it now stands.
        if work is None:
            work = _WorkTree(tmp / "rootfs")
        work.sync(store, base_infos + layers)
        tree = {**tree_of(work.root), **tree}
    collection = collect_images(
        tree,
        image_lists=image_list_sources(options.image_lists),
        ignored_lists=image_list_sources(options.ignored_image_lists),
    )
    # Images the base image's registry/ already serves are not pulled again.
    held = {str(i["image"]) for i in base_images}
    result.referenced += [n for n in collection.names() if n not in result.referenced]
    images = [name for name in collection.names() if name not in held]
    container_images: list[dict[str, Any]] = list(base_images)
    if images and options.build_mode == "all":
        say(f"[{platform}] collecting {len(images)} container image(s) into registry/")
        found_in = {i.image: i.source for i in collection.images}
        entries, stored = await registry_entries(
            images, platform, cache_store, registry_options, say, found_in
        )
        key_material = sorted(
            [e.path, e.data.decode() if e.data else (e.source.name if e.source else "")] for e in entries
        )
        key = BuildCache.key(parent, ["registry", key_material])
        info = cache.get(key)
        cached = info is not None
        if info is None:
            info = write_layer(store, entries, compress=False)
            cache.put(key, info)
        result.steps.append(StepReport(0, "IMAGES", f"{len(stored)} images", cached, info))
        layers.append(info)
        diff_ids.append(info.diff_id)
        history.append({"created": ZERO_TIME, "created_by": f"sealer: {len(stored)} container images"})
        apps = {i.image: i.app for i in collection.images}
        container_images += [
            {
                "image": name,
                **({"appName": apps[name]} if apps.get(name) else {}),
                "platform": platform.to_json(),
            }
            for name in stored
        ]
        for name in stored:
            if name not in result.images:
                result.images.append(name)
    config_env = [f"{k}={v}" for k, v in _merged_env(base_inner.get("Env"), kubefile.env).items()]
    labels = {**(base_inner.get("Labels") or {}), **kubefile.labels, "io.sealer.version": _version()}
    config: dict[str, Any] = {
        "created": ZERO_TIME,
        "architecture": platform.architecture,
        "os": platform.os,
        **({"variant": platform.variant} if platform.variant else {}),
        "config": {"Env": config_env, "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    config_desc = store.put_blob(oci.encode_json(config), media_type=oci.MEDIA_OCI_CONFIG)
    config_desc = Descriptor(oci.MEDIA_OCI_CONFIG, config_desc.digest, config_desc.size)
    annotations = {
        ANNOTATION_IMAGE_EXTENSION: json.dumps(
            kubefile.image_extension(options.image_type, _version()), separators=(",", ":")
        )
    }
    if container_images:
        annotations[ANNOTATION_CONTAINER_IMAGES] = json.dumps(container_images, separators=(",", ":"))
    all_layers = base_layers + [info.descriptor() for info in layers]
    manifest = oci.new_manifest(config_desc, all_layers, annotations)
    desc = store.put_manifest(manifest, oci.MEDIA_OCI_MANIFEST)
    result.layers += len(all_layers)
    result.size += sum(d.size for d in all_layers) + config_desc.size + desc.size
    return Descriptor(oci.MEDIA_OCI_MANIFEST, desc.digest, desc.size, platform=platform)


def _merged_env(base_env: Any, env: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in base_env or []:
        key, _, value = str(item).partition("=")
        out[key] = value
    out.update(env)
    return out


def _version() -> str:
    return __version__
