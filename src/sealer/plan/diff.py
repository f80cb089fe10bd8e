"""Field-level difference between two Clusterfiles, in the Clusterfile's own vocabulary (`sealer diff`).

Paths read like the file (`spec.hosts[1].labels.disk`). Secrets are compared but never shown, and
file contents (Config data, Plugin scripts) are summarised, because diffs end up in terminals and logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from sealer.model.cluster import Clusterfile
from sealer.model.clusterfile import dump_clusterfile, env_list_to_map

HIDDEN = "*****"
# libyaml's safe loader when present (5x faster on a 5,000-host file); same safe semantics.
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SECRET_KEY = re.compile(r"(passw|secret|token|certificatekey|privatekey)", re.IGNORECASE)
_CONTENT_KEYS = frozenset({"data"})
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

ChangeKind = Literal["added", "removed", "changed"]


@dataclass(frozen=True)
class FieldChange:
    path: str
    change: ChangeKind
    old: Any = None
    new: Any = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "change": self.change}
        if self.change != "added":
            data["old"] = self.old
        if self.change != "removed":
            data["new"] = self.new
        return data

    def text(self) -> str:
        if self.change == "added":
            return f"+ {self.path}: {_show(self.new)}"
        if self.change == "removed":
            return f"- {self.path}: {_show(self.old)}"
        if isinstance(self.old, list) and isinstance(self.new, list):
            # Long IP lists: say which entries came and went rather than print both lists.
            gone = [v for v in self.old if v not in self.new]
            came = [v for v in self.new if v not in self.old]
            if not gone and not came:
                return f"~ {self.path}: reordered to {_show(self.new)}"
            parts = ([f"-{_show(gone)}"] if gone else []) + ([f"+{_show(came)}"] if came else [])
            return f"~ {self.path}: " + " ".join(parts)
        return f"~ {self.path}: {_show(self.old)} -> {_show(self.new)}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value if value and value.strip() == value and "\n" not in value else repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _env_map(value: Any) -> Any:
    # Env is written as a list of K=V; as a map, one changed variable is one changed field.
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return env_list_to_map(value)
    return value


def clusterfile_documents(cf: Clusterfile) -> dict[str, Any]:
    """Every document of a Clusterfile as plain data shaped like the file (real values, unredacted),
    keyed by `Kind` or `Kind/name`."""
    docs: dict[str, Any] = {}
    # Through the model's own writer, so the diff speaks exactly the file's vocabulary.
    for doc in yaml.load_all(dump_clusterfile(cf), Loader=_SAFE_LOADER):
        if not isinstance(doc, dict):
            continue
        kind = str(doc.get("kind", "Unknown"))
        meta = doc.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) and kind != "Cluster" else None
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
        if kind == "Cluster" and isinstance(body.get("spec"), dict):
            spec = body["spec"]
            if "env" in spec:
                spec["env"] = _env_map(spec["env"])
            for host in spec.get("hosts") or []:
                if isinstance(host, dict) and "env" in host:
                    host["env"] = _env_map(host["env"])
        key = f"{kind}/{name}" if name else kind
        while key in docs:  # two unnamed documents of one kind: keep both
            key += "+"
        docs[key] = body
    return docs


def _key_path(path: str, key: str) -> str:
    if not path:
        return key
    if _PLAIN_KEY.match(key):
        return f"{path}.{key}"
    return f'{path}["{key}"]'


def _redact(key: str, value: Any) -> Any:
    if value is None:
        return None
    if _SECRET_KEY.search(key):
        return HIDDEN
    if key in _CONTENT_KEYS and isinstance(value, str):
        lines = value.count("\n") + (0 if value.endswith("\n") else 1)
        return f"<{lines} line(s)>"
    if isinstance(value, Mapping):
        return {str(k): _redact(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(key, v) for v in value]
    return value


def diff_values(old: Any, new: Any, path: str = "", key: str = "") -> list[FieldChange]:
    """Every field that differs between two plain values, with secrets hidden."""
    out: list[FieldChange] = []
    _diff(path, key, old, new, out)
    return out


def _diff(path: str, key: str, old: Any, new: Any, out: list[FieldChange]) -> None:
    if old == new:
        return
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for k in list(old) + [k for k in new if k not in old]:
            sub = _key_path(path, str(k))
            if k not in new:
                out.append(FieldChange(sub, "removed", old=_redact(str(k), old[k])))
            elif k not in old:
                out.append(FieldChange(sub, "added", new=_redact(str(k), new[k])))
            else:
                _diff(sub, str(k), old[k], new[k], out)
        return
    if (
        isinstance(old, list) and isinstance(new, list)
        and any(isinstance(v, Mapping) for v in old + new)
    ):
        for i in range(max(len(old), len(new))):
            sub = f"{path}[{i}]"
            if i >= len(new):
                out.append(FieldChange(sub, "removed", old=_redact(key, old[i])))
            elif i >= len(old):
                out.append(FieldChange(sub, "added", new=_redact(key, new[i])))
            else:
                _diff(sub, key, old[i], new[i], out)
        return
    if old is None:
        out.append(FieldChange(path, "added", new=_redact(key, new)))
    elif new is None:
        out.append(FieldChange(path, "removed", old=_redact(key, old)))
    else:
        out.append(FieldChange(path, "changed", old=_redact(key, old), new=_redact(key, new)))


def diff_clusterfiles(old: Clusterfile, new: Clusterfile) -> list[FieldChange]:
    """Field-level changes from the last-applied Clusterfile `old` to `new`; paths start with the
    document (`Cluster.spec.image`, `Config/mysql-values.data`)."""
    return diff_values(clusterfile_documents(old), clusterfile_documents(new))
