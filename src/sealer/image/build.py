"""Planning a ClusterImage build: find and parse the Kubefile per platform, check it against the
context, and work out which container images the build will collect (what `build --dry-run` shows).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealer.errors import ImageError, InputError, KubefileError, Problem
from sealer.image.collect import Collection, collect_images, image_list_sources, planned_tree
from sealer.image.kubefile import BaseImage, BaseImageResolver, Kubefile, check_context, parse_kubefile
from sealer.image.metadata import ANNOTATION_IMAGE_EXTENSION
from sealer.image.oci import Platform, host_platform
from sealer.image.reference import parse_reference
from sealer.image.store import ImageStore, default_store_root

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
