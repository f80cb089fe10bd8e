"""Write a Clusterfile back as YAML (the inverse of `model.clusterfile`): what sealer saves as the
last-applied state and shows in `sealer diff`. Go-sealer-compatible: IPs are listed, not ranged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from sealer.model.cluster import (
    RESERVED_ENV,
    SSH,
    Cluster,
    Clusterfile,
    ConfigDoc,
    PluginDoc,
)
from sealer.model.yamlnodes import SAFE_DUMPER


def dump_clusterfile(cf: Clusterfile, *, redact: bool = False) -> str:
    """YAML text for `cf` (Cluster first, then kubeadm, Config, Plugin and other documents).

    Parsing the result gives back an equal Clusterfile. With `redact`, secrets become `*****`
    (for display only: such a file cannot log in anywhere).
    """
    docs: list[Mapping[str, Any]] = [_cluster_doc(cf.cluster, redact)]
    docs.extend(dict(d) for d in cf.kubeadm_documents)
    docs.extend(_config_doc(c) for c in cf.configs)
    docs.extend(_plugin_doc(p) for p in cf.plugins)
    docs.extend(dict(d) for d in cf.other_documents)
    return yaml.dump_all(
        docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096
    )


class _Dumper(SAFE_DUMPER):  # type: ignore[valid-type,misc]  # chosen at import: C or Python
    """Multi-line strings (plugin scripts, Config data) as `|` blocks, as people write them."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _ssh_dict(ssh: SSH, redact: bool) -> dict[str, Any]:
    if redact:
        ssh = ssh.redacted()
    out: dict[str, Any] = {}
    for key, value in (
        ("user", ssh.user),
        ("passwd", ssh.password),
        ("pk", ssh.pk),
        ("pkPasswd", ssh.pk_password),
        ("port", str(ssh.port) if ssh.port is not None else None),
        ("sudoPasswd", ssh.sudo_password),
        ("hostKeyPolicy", ssh.host_key_policy),
        ("hostKey", ssh.host_key),
        ("encrypted", ssh.encrypted),
    ):
        if value is not None:
            out[key] = value
    if ssh.bastion is not None:
        b = ssh.bastion
        bastion: dict[str, Any] = {"host": b.host, "port": b.port}
        for key, value in (
            ("user", b.user),
            ("passwd", b.password),
            ("pk", b.pk),
            ("pkPasswd", b.pk_password),
        ):
            if value is not None:
                bastion[key] = value
        out["bastion"] = bastion
    return out


def _env_list(env: Mapping[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in env.items() if k not in RESERVED_ENV]


def _cluster_doc(cluster: Cluster, redact: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if cluster.image is not None:
        spec["image"] = cluster.image
    env = _env_list(cluster.env)
    if env:
        spec["env"] = env
    if cluster.cmd:
        spec["cmd"] = list(cluster.cmd)
    if cluster.app_names is not None:
        spec["appNames"] = list(cluster.app_names)
    ssh = _ssh_dict(cluster.ssh, redact)
    if ssh:
        spec["ssh"] = ssh
    hosts = []
    for group in cluster.host_groups:
        entry: dict[str, Any] = {"ips": list(group.ips), "roles": list(group.roles)}
        group_ssh = _ssh_dict(group.ssh, redact)
        if group_ssh:
            entry["ssh"] = group_ssh
        if group.env:
            entry["env"] = [f"{k}={v}" for k, v in group.env.items()]
        if group.labels:
            entry["labels"] = dict(group.labels)
        if group.taints:
            entry["taints"] = [str(t) for t in group.taints]
        hosts.append(entry)
    spec["hosts"] = hosts
    if cluster.container_runtime:
        spec["containerRuntime"] = {"type": cluster.container_runtime}
    if cluster.host_aliases:
        spec["hostAliases"] = [{"ip": a.ip, "hostnames": list(a.hostnames)} for a in cluster.host_aliases]
    registry: dict[str, Any] = {}
    if cluster.registry.local is not None:
        local = cluster.registry.local
        lr: dict[str, Any] = {
            "domain": local.domain,
            "port": local.port,
            "ha": local.ha,
            "insecure": local.insecure,
        }
        if local.username is not None:
            lr["username"] = local.username
        if local.password is not None:
            lr["password"] = "*****" if redact else local.password
        if local.cert_dns_names or local.cert_ips:
            lr["cert"] = {
                "subjectAltName": {"dnsNames": list(local.cert_dns_names), "ips": list(local.cert_ips)}
            }
        registry["localRegistry"] = lr
    if cluster.registry.external is not None:
        ext = cluster.registry.external
        er: dict[str, Any] = {"domain": ext.domain}
        if ext.port is not None:
            er["port"] = ext.port
        if ext.username is not None:
            er["username"] = ext.username
        if ext.password is not None:
            er["password"] = "*****" if redact else ext.password
        registry["externalRegistry"] = er
    spec["registry"] = registry
    spec["dataRoot"] = cluster.data_root
    return {"apiVersion": "sealer.io/v2", "kind": "Cluster", "metadata": {"name": cluster.name}, "spec": spec}


def _config_doc(config: ConfigDoc) -> dict[str, Any]:
    spec: dict[str, Any] = {"path": config.path, "data": config.data, "strategy": config.strategy}
    if config.app_name is not None:
        spec["appName"] = config.app_name
    if config.process:
        spec["process"] = "|".join(config.process)
    return {"apiVersion": "sealer.io/v1", "kind": "Config", "metadata": {"name": config.name}, "spec": spec}


def _plugin_doc(plugin: PluginDoc) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": plugin.type, "action": "|".join(plugin.actions), "data": plugin.data}
    if plugin.scope:
        spec["scope"] = "|".join(plugin.scope)
    return {"apiVersion": "sealer.io/v1", "kind": "Plugin", "metadata": {"name": plugin.name}, "spec": spec}
