"""`kind: Config` documents of a Clusterfile: files laid over the image's rootfs on every host
(overwrite, or a deep YAML merge into each `---` section of the image's file), with sealer's
processors value | toJson | toBase64. Computed on the operator machine before any host is touched.
"""

from __future__ import annotations

import base64
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sealer.errors import InputError, NotImplementedYet, Problem
from sealer.model.cluster import ConfigDoc

APP_ROOT = "application/apps"


@dataclass(frozen=True)
class RenderedConfig:
    name: str
    path: str  # relative to the rootfs
    content: str = field(repr=False)  # may hold secrets: never printed


def _problem(config: ConfigDoc, message: str, hint: str) -> InputError:
    return InputError([Problem(message, path=f"Config {config.name}: spec", hint=hint)], "Clusterfile")


def target_path(config: ConfigDoc) -> str:
    """Where the Config lands, relative to the rootfs; refuses paths that leave it."""
    raw = config.path.strip()
    base = f"{APP_ROOT}/{config.app_name}" if config.app_name else ""
    rel = posixpath.normpath(posixpath.join(base, raw)) if base else posixpath.normpath(raw)
    if raw.startswith("/") or rel == "." or rel.startswith("../") or rel == "..":
        raise _problem(
            config, f"spec.path {config.path!r} leaves the rootfs",
            "give a path relative to the image rootfs (e.g. etc/my.yaml), or to the app with spec.appName",
        )
    return rel


def deep_merge(base: Any, override: Any) -> Any:
    """Mappings merge key by key (recursively); anything else: the override wins."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = deep_merge(base[key], value) if key in base else value
        return merged
    return override


def _merge(config: ConfigDoc, existing: str | None) -> str:
    try:
        override = yaml.safe_load(config.data)
    except yaml.YAMLError as err:
        raise _problem(config, f"spec.data is not YAML, so it cannot be merged: {err}",
                       "fix the YAML, or use strategy: overwrite")
    if existing is None:
        return config.data
    try:
        sections = list(yaml.safe_load_all(existing))
    except yaml.YAMLError as err:
        raise _problem(config, f"the image's {config.path} is not YAML, so it cannot be merged: {err}",
                       "use strategy: overwrite")
    merged = [deep_merge(s, override) if s is not None else None for s in sections]
    return yaml.safe_dump_all([m for m in merged if m is not None], sort_keys=False)


def _process(config: ConfigDoc, data: str) -> str:
    steps = list(config.process)
    if "toSecret" in steps:
        raise NotImplementedYet(
            f"Config {config.name}: process toSecret is not supported yet",
            "write the Secret manifest with its base64 data yourself (strategy overwrite)",
        )
    if steps and steps[0] == "value":
        values = yaml.safe_load(data)
        if not isinstance(values, Mapping):
            raise _problem(
                config, "process value needs spec.data to be a YAML mapping", "write key: value lines"
            )
        out: dict[str, Any] = {}
        for key, value in values.items():
            text = value if isinstance(value, str) else json.dumps(value)
            for step in steps[1:]:
                text = _one(step, text)
            out[str(key)] = text
        return yaml.safe_dump(out, sort_keys=False)
    for step in steps:
        data = _one(step, data)
    return data


def _one(step: str, text: str) -> str:
    if step == "toJson":
        return json.dumps(yaml.safe_load(text))
    if step == "toBase64":
        return base64.b64encode(text.encode()).decode()
    return text


def render(config: ConfigDoc, image_rootfs: Path) -> RenderedConfig:
    rel = target_path(config)
    data = _process(config, config.data)
    if config.strategy == "merge":
        source = image_rootfs / rel
        existing = source.read_text(errors="replace") if source.is_file() else None
        data = _merge(ConfigDoc(config.name, config.path, data, config.app_name, config.strategy), existing)
    return RenderedConfig(config.name, rel, data)
