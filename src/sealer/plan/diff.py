"""Field-level difference between two Clusterfiles, in the Clusterfile's own vocabulary (`sealer diff`).

Paths read like the file (`spec.hosts[1].labels.disk`). Secrets are compared but never shown, and
file contents (Config data, Plugin scripts) are summarised, because diffs end up in terminals and logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sealer.model.cluster import SSH, Bastion, Cluster, Clusterfile, Registry

HIDDEN = "*****"
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


def _drop_empty(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v not in (None, "", [], {})}


def _bastion_doc(bastion: Bastion | None) -> dict[str, Any] | None:
    if bastion is None:
        return None
    return _drop_empty(
        {
            "host": bastion.host, "port": bastion.port, "user": bastion.user, "passwd": bastion.password,
            "pk": bastion.pk, "pkPasswd": bastion.pk_password,
        }
    )


def _ssh_doc(ssh: SSH) -> dict[str, Any]:
    return _drop_empty(
        {
            "user": ssh.user, "passwd": ssh.password, "pk": ssh.pk, "pkPasswd": ssh.pk_password,
            "port": ssh.port, "sudoPasswd": ssh.sudo_password, "bastion": _bastion_doc(ssh.bastion),
            "hostKeyPolicy": ssh.host_key_policy, "hostKey": ssh.host_key,
        }
    )


def _registry_doc(registry: Registry) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if registry.local is not None:
        local = registry.local
        doc["localRegistry"] = _drop_empty(
            {
                "domain": local.domain, "port": local.port, "username": local.username,
                "password": local.password, "ha": local.ha, "insecure": local.insecure,
                "cert": _drop_empty(
                    {"subjectAltName": _drop_empty(
                        {"dnsNames": list(local.cert_dns_names), "ips": list(local.cert_ips)}
                    )}
                ),
            }
        )
    if registry.external is not None:
        ext = registry.external
        doc["externalRegistry"] = _drop_empty(
            {"domain": ext.domain, "port": ext.port, "username": ext.username, "password": ext.password}
        )
    return doc


def cluster_document(cluster: Cluster) -> dict[str, Any]:
    """The Cluster as a plain dict shaped like its `kind: Cluster` document (real values, unredacted)."""
    spec: dict[str, Any] = {
        "image": cluster.image,
        "env": dict(cluster.env),
        "cmd": list(cluster.cmd),
        "appNames": list(cluster.app_names) if cluster.app_names is not None else None,
        "ssh": _ssh_doc(cluster.ssh),
        "hosts": [
            _drop_empty(
                {
                    "ips": list(g.ips), "roles": list(g.roles), "ssh": _ssh_doc(g.ssh), "env": dict(g.env),
                    "labels": dict(g.labels), "taints": [str(t) for t in g.taints],
                }
            )
            for g in cluster.host_groups
        ],
        "containerRuntime": {"type": cluster.container_runtime} if cluster.container_runtime else None,
        "hostAliases": [{"ip": a.ip, "hostnames": list(a.hostnames)} for a in cluster.host_aliases],
        "registry": _registry_doc(cluster.registry),
        "dataRoot": cluster.data_root,
    }
    return {"metadata": {"name": cluster.name}, "spec": _drop_empty(spec)}


def clusterfile_documents(cf: Clusterfile) -> dict[str, Any]:
    """Every document of a Clusterfile keyed by `Kind/name` (kubeadm documents by kind)."""
    docs: dict[str, Any] = {"Cluster": cluster_document(cf.cluster)}
    for config in cf.configs:
        docs[f"Config/{config.name}"] = _drop_empty(
            {
                "path": config.path, "appName": config.app_name, "strategy": config.strategy,
                "process": list(config.process), "data": config.data,
            }
        )
    for plugin in cf.plugins:
        docs[f"Plugin/{plugin.name}"] = _drop_empty(
            {
                "type": plugin.type, "action": list(plugin.actions), "scope": list(plugin.scope),
                "data": plugin.data,
            }
        )
    for doc in cf.kubeadm_documents:
        docs[str(doc.get("kind", "Unknown"))] = _to_plain(doc)
    for doc in cf.other_documents:
        meta = doc.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        kind = str(doc.get("kind", "Unknown"))
        docs[f"{kind}/{name}" if name else kind] = _to_plain(doc)
    return docs


def _to_plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value


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
