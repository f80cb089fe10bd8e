"""Read, validate and write Clusterfiles (sealer.io/v2, multi-document YAML) — the model's entry point.

`parse_clusterfile` returns every problem at once (errors and warnings, each located by file, line,
column and field path); `load_clusterfile` raises `ClusterfileError` and nothing else, for any input.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sealer.errors import ClusterfileError, Problem
from sealer.model import ipaddr
from sealer.model.cluster import (
    DEFAULT_DATA_ROOT,
    MASTER,
    NODE,
    RESERVED_ENV,
    SSH,
    Bastion,
    Cluster,
    Clusterfile,
    ConfigDoc,
    ExternalRegistry,
    HostAlias,
    HostGroup,
    LocalRegistry,
    PluginDoc,
    Registry,
    Taint,
)
from sealer.model.encode import dump_clusterfile
from sealer.model.taint import TaintError, label_value_problem, parse_taint, qualified_name_problem
from sealer.model.yamlnodes import (
    MAX_BYTES,
    SAFE_LOADER,
    BudgetExceeded,
    Reader,
    describe,
    did_you_mean,
    is_null,
    yaml_error_problem,
)

__all__ = [
    "KNOWN_KINDS",
    "KUBEADM_KINDS",
    "PLUGIN_ACTIONS",
    "RESERVED_ENV",
    "dump_clusterfile",
    "env_list_to_map",
    "load_clusterfile",
    "parse_clusterfile",
    "parse_plugins",
]

DEFAULT_CLUSTER_NAME = "my-cluster"
# Kubernetes supports 5,000 nodes; a typo in a range must not plan a million SSH sessions.
MAX_HOSTS = 65536

KUBEADM_KINDS = (
    "InitConfiguration",
    "JoinConfiguration",
    "ClusterConfiguration",
    "KubeletConfiguration",
    "KubeProxyConfiguration",
)
KNOWN_KINDS = ("Cluster", "Config", "Plugin", "Application", *KUBEADM_KINDS)

# Kinds that appear in sealer's design docs or sealos but that no sealer ever decoded.
_UNKNOWN_KIND_HINTS = {
    "KubeadmConfig": "KubeadmConfig was only a design proposal (sealer issue #1528); write kubeadm documents "
    "instead: kind: ClusterConfiguration / InitConfiguration / JoinConfiguration (kubeadm.k8s.io/v1beta3)",
    "Infra": "cloud infrastructure was removed from sealer; list existing machines under spec.hosts",
    "Image": "Image documents are not part of a Clusterfile; the image goes in spec.image",
}


_METADATA_KEYS = (
    "name",
    "namespace",
    "labels",
    "annotations",
    "creationTimestamp",
    "uid",
    "resourceVersion",
    "generation",
    "generateName",
    "finalizers",
    "ownerReferences",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
_CLUSTER_SPEC_KEYS = (
    "image",
    "env",
    "cmd",
    "appNames",
    "ssh",
    "hosts",
    "containerRuntime",
    "hostAliases",
    "registry",
    "dataRoot",
)
_V1_SPEC_KEYS = ("provider", "network", "certSANS", "masters", "nodes")
_SSH_KEYS = (
    "user",
    "passwd",
    "pk",
    "pkPasswd",
    "port",
    "encrypted",
    "sudoPasswd",
    "bastion",
    "hostKeyPolicy",
    "hostKey",
)
_BASTION_KEYS = ("host", "port", "user", "passwd", "pk", "pkPasswd")
_HOST_KEYS = ("ips", "roles", "ssh", "env", "labels", "taints")
_CONTAINER_RUNTIMES = ("docker", "containerd")
_HOST_KEY_POLICIES = ("tofu", "strict")
_HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
)
_CONFIG_STRATEGIES = ("overwrite", "merge")
_CONFIG_PROCESSORS = ("value", "toJson", "toBase64", "toSecret")
_PLUGIN_TYPES = ("SHELL",)
PLUGIN_ACTIONS = (
    "pre-install",
    "post-install",
    "pre-init-host",
    "post-init-host",
    "pre-scaleup",
    "post-scaleup",
    "pre-clean-host",
    "post-clean-host",
    "pre-uninstall",
    "post-uninstall",
    "upgrade-host",
    "upgrade",
    "rollback",
)
# v0.8 phase names: accepted by Go sealer, but they never fire there. Map to the current name.
_LEGACY_ACTIONS = {
    "Originally": "pre-install",
    "PreInit": "pre-init-host",
    "PreInstall": "pre-install",
    "PostInstall": "post-install",
    "PreJoin": "pre-scaleup",
    "PostJoin": "post-scaleup",
    "PreGuest": "post-install",
    "PreClean": "pre-clean-host",
    "PostClean": "post-clean-host",
}
_LEGACY_PLUGIN_HINTS = {
    "LABEL": "LABEL plugins were removed in sealer v0.9; set labels under spec.hosts[].labels",
    "TAINT": "TAINT plugins were removed in sealer v0.9; set taints under spec.hosts[].taints",
    "HOSTNAME": "HOSTNAME plugins were removed in sealer v0.9; use spec.hostAliases or a SHELL plugin",
    "CLUSTERCHECK": "CLUSTERCHECK plugins were removed in sealer v0.9; sealer waits for the cluster itself",
    "ETCD": "ETCD plugins were removed in sealer v0.9; back up etcd with a SHELL plugin",
}
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class _Seen:
    """Where an IP was first listed, to report duplicates across groups."""

    path: str
    line: int | None


# ---------------------------------------------------------------------------------------------
# public API


def parse_clusterfile(text: str | bytes, source: str = "<input>") -> tuple[Clusterfile | None, list[Problem]]:
    """Decode and validate; the Clusterfile is None when any problem has severity "error"."""
    reader = Reader(source)
    clusterfile = _guarded(reader, lambda: _parse(reader, text), "the Clusterfile")
    problems = _sorted(reader.problems)
    if any(p.severity == "error" for p in problems):
        clusterfile = None
    return clusterfile, problems


_T = TypeVar("_T")


def _guarded(reader: Reader, work: Callable[[], _T | None], what: str) -> _T | None:
    """Run a parse; whatever it raises becomes a Problem (the contract: no input yields a traceback)."""
    try:
        return work()
    except BudgetExceeded:
        reader.problems.append(
            Problem(
                "the YAML expands to too many nodes (an alias/anchor bomb or a huge file); refused",
                file=reader.source,
                hint="a Clusterfile needs no nested aliases; write the values out",
            )
        )
    except RecursionError:
        reader.problems.append(
            Problem(
                "the YAML is nested too deeply to be a Clusterfile; refused",
                file=reader.source,
                hint="check for runaway brackets or indentation",
            )
        )
    except Exception as exc:  # a bug in sealer, reported as one rather than as a traceback
        reader.problems.append(
            Problem(
                f"internal error while reading {what} ({type(exc).__name__}: {exc})",
                file=reader.source,
                hint="this is a bug in sealer; please report it with the file",
            )
        )
    return None


def _sorted(problems: list[Problem]) -> list[Problem]:
    """In file order, so a reader can walk down the file; whole-file problems last."""
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0, p.column or 0))


def load_clusterfile(path: str | Path) -> Clusterfile:
    """Read a Clusterfile from disk; raises ClusterfileError carrying every problem."""
    source = str(path)
    try:
        p = Path(path)
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise ClusterfileError([_size_problem(source, size)])
        with p.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except ClusterfileError:
        raise
    except (OSError, ValueError) as exc:  # ValueError: a path with a NUL byte
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        raise ClusterfileError(
            [
                Problem(
                    f"cannot read the Clusterfile: {reason}",
                    file=source,
                    hint="check the path given with -f and that you may read it",
                )
            ]
        ) from None
    clusterfile, problems = parse_clusterfile(data, source)
    if clusterfile is None:
        raise ClusterfileError(problems)
    return clusterfile


def parse_plugins(text: str | bytes, source: str = "<input>") -> tuple[tuple[PluginDoc, ...], list[Problem]]:
    """Plugin documents of an image's `plugins/*.yaml` (no Cluster document needed there); the
    plugins are empty when any problem is an error. Go sealer uses only the plugins of such a file."""
    reader = Reader(source)
    docs = _guarded(reader, lambda: _parse_documents(reader, text, what="plugin file"), "the plugin file")
    plugins: tuple[PluginDoc, ...] = ()
    if docs is not None:
        plugins = tuple(p for p, _ in docs.plugins)
        for node, _cluster in docs.clusters:
            reader.warn(node, "kind", "a Cluster document in a plugin file is not used")
    problems = _sorted(reader.problems)
    if any(p.severity == "error" for p in problems):
        plugins = ()
    return plugins, problems


def env_list_to_map(entries: list[str]) -> dict[str, str]:
    """Go sealer's ConvertStringSliceToMap: `K=V` entries, split on the first '=', last one wins."""
    result: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if sep:
            result[key.strip()] = value
    return result


# ---------------------------------------------------------------------------------------------
# decoding


def _size_problem(source: str, size: int) -> Problem:
    return Problem(
        f"the file is {size} bytes; a Clusterfile may be at most {MAX_BYTES} bytes",
        file=source,
        hint="is this the right file? A Clusterfile of thousands of hosts is well under a megabyte",
    )


def _decode_text(reader: Reader, text: str | bytes) -> str | None:
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            reader.problems.append(_size_problem(reader.source, len(text)))
            return None
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            before = text[: exc.start]
            line = before.count(b"\n") + 1
            column = len(before) - (before.rfind(b"\n") + 1) + 1
            reader.problems.append(
                Problem(
                    f"the file is not valid UTF-8 (byte 0x{text[exc.start]:02x} at offset {exc.start})",
                    file=reader.source,
                    line=line,
                    column=column,
                    hint="the file is UTF-16 (as some Windows editors save); save it as UTF-8"
                    if text[:2] in (b"\xff\xfe", b"\xfe\xff")
                    else "save the Clusterfile as UTF-8 text; is this a binary file?",
                )
            )
            return None
    else:
        decoded = text
        if len(decoded) > MAX_BYTES:
            reader.problems.append(_size_problem(reader.source, len(decoded)))
            return None
    return decoded.removeprefix("\ufeff")


@dataclass
class _Documents:
    """Every decoded document of one text, before the one-Cluster rule is applied."""

    clusters: list[tuple[yaml.Node, Cluster | None]] = field(default_factory=list)
    configs: list[ConfigDoc] = field(default_factory=list)
    plugins: list[tuple[PluginDoc, yaml.Node]] = field(default_factory=list)
    kubeadm: list[Mapping[str, Any]] = field(default_factory=list)
    others: list[Mapping[str, Any]] = field(default_factory=list)


def _parse_documents(reader: Reader, raw: str | bytes, what: str = "Clusterfile") -> _Documents | None:
    text = _decode_text(reader, raw)
    if text is None:
        return None
    if not text.strip():
        hint = (
            "start from examples/Clusterfile: a kind: Cluster document with spec.image and spec.hosts"
            if what == "Clusterfile"
            else None
        )
        reader.problems.append(Problem(f"the {what} is empty", file=reader.source, hint=hint))
        return None
    reader.text = text
    try:
        nodes = [n for n in yaml.compose_all(text, Loader=SAFE_LOADER) if n is not None]
    except yaml.YAMLError as exc:
        reader.problems.append(yaml_error_problem(exc, reader.source, text))
        return None

    docs = _Documents()
    for index, node in enumerate(nodes):
        reader.tick()
        if is_null(node):
            continue
        if not isinstance(node, yaml.MappingNode):
            reader.report(
                node,
                "",
                f"document {index + 1} is {describe(node)}, not a mapping",
                "each document needs apiVersion, kind, metadata and spec",
            )
            continue
        kind = _kind(reader, node)
        if kind is None:
            continue
        if kind == "Cluster":
            docs.clusters.append((node, _decode_cluster(reader, node)))
        elif kind == "Config":
            config = _decode_config(reader, node)
            if config is not None:
                docs.configs.append(config)
        elif kind == "Plugin":
            plugin = _decode_plugin(reader, node)
            if plugin is not None:
                docs.plugins.append((plugin, node))
        elif kind in KUBEADM_KINDS:
            doc = reader.plain(node, "")
            _check_kubeadm(reader, node, kind)
            docs.kubeadm.append(doc)
        elif kind == "Application":
            _check_application(reader, node)
            docs.others.append(reader.plain(node, ""))
        else:
            docs.others.append(reader.plain(node, ""))
    return docs


def _parse(reader: Reader, raw: str | bytes) -> Clusterfile | None:
    docs = _parse_documents(reader, raw)
    if docs is None:
        return None
    clusters, configs, kubeadm, others = docs.clusters, docs.configs, docs.kubeadm, docs.others
    plugins = docs.plugins
    if not clusters:
        fragment = bool(configs or plugins or kubeadm or others)
        hint = (
            "these documents are a fragment: add a kind: Cluster document (apiVersion: sealer.io/v2) with "
            "spec.image and spec.hosts, e.g. from examples/Clusterfile"
            if fragment
            else "a Clusterfile needs a kind: Cluster document (apiVersion: sealer.io/v2), "
            "see examples/Clusterfile"
        )
        reader.problems.append(Problem("no kind: Cluster document", file=reader.source, hint=hint))
        return None
    if len(clusters) > 1:
        for extra, _ in clusters[1:]:
            first = clusters[0][0].start_mark
            reader.report(
                extra,
                "",
                "a second kind: Cluster document",
                f"one Clusterfile describes one cluster; the first is at line {first.line + 1}. "
                "(Go sealer silently used the last one.)"
                if first
                else "keep one Cluster document",
            )
        return None
    cluster = clusters[0][1]
    if cluster is None:
        return None
    _check_plugin_scopes(reader, plugins, cluster)
    return Clusterfile(
        cluster=cluster,
        configs=tuple(configs),
        plugins=tuple(p for p, _ in plugins),
        kubeadm_documents=tuple(kubeadm),
        other_documents=tuple(others),
        source=reader.source,
    )


def _kind(reader: Reader, node: yaml.MappingNode) -> str | None:
    fields = {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}
    if "kind" not in fields:
        reader.report(
            node,
            "kind",
            "document has no kind",
            "add kind: Cluster (or Config, Plugin, Application, ClusterConfiguration, ...)",
        )
        return None
    kind = reader.string(fields["kind"][1], "kind", required=True)
    if kind is None:
        return None
    if kind in KNOWN_KINDS:
        return kind
    guess = did_you_mean(kind, KNOWN_KINDS)
    if guess and kind not in _UNKNOWN_KIND_HINTS:
        reader.report(fields["kind"][1], "kind", f"unknown kind {kind!r}", f"did you mean {guess!r}?")
        return None
    reader.warn(
        fields["kind"][1],
        "kind",
        f"unknown kind {kind!r}: this document is not used",
        _UNKNOWN_KIND_HINTS.get(kind, f"sealer reads kinds {', '.join(KNOWN_KINDS)}"),
    )
    return kind


def _decode_cluster(reader: Reader, node: yaml.MappingNode) -> Cluster | None:
    top = reader.mapping(node, "", ("apiVersion", "kind", "metadata", "spec", "status"))
    if top is None:
        return None
    errors_before = _error_count(reader)
    api = reader.string(top.get("apiVersion"), "apiVersion")
    if api is not None and api.startswith("apps.sealos.io"):
        reader.warn(
            top["apiVersion"],
            "apiVersion",
            f"{api} is a sealos Clusterfile; it is read as sealer.io/v2",
            "sealos and sealer Clusterfiles differ (sealos writes ip:port); prefer sealer.io/v2",
        )
    meta = reader.mapping(top.get("metadata"), "metadata", _METADATA_KEYS) or {}
    name = reader.string(meta.get("name"), "metadata.name")
    if name is None:
        name = DEFAULT_CLUSTER_NAME
        reader.warn(
            top.get("metadata") or node,
            "metadata.name",
            f"no cluster name; using {DEFAULT_CLUSTER_NAME!r}",
            "name the cluster: its state lives in ~/.sealer/<name>/ and its rootfs under dataRoot/<name>",
        )
    elif not _NAME_RE.match(name):
        reader.report(
            meta["name"],
            "metadata.name",
            f"cluster name {name!r} is not a valid name",
            "use lower-case letters, digits, '-' and '.' (it names directories on every host)",
        )
    spec_node = top.get("spec")
    if spec_node is None:
        reader.report(node, "spec", "the Cluster document has no spec", "add spec.image and spec.hosts")
        return None
    v1 = _is_v1(spec_node)
    spec = reader.mapping(
        spec_node,
        "spec",
        _CLUSTER_SPEC_KEYS + (_V1_SPEC_KEYS if v1 else ()),
        ignored={"cmd_args": "spec.cmd_args is a legacy field and is not used", "status": None},
    )
    if spec is None:
        return None

    image_node = spec.get("image")
    image = None
    if isinstance(image_node, yaml.SequenceNode):
        reader.report(
            image_node,
            "spec.image",
            "expected one image reference, got a list",
            "a cluster runs one ClusterImage (sealos lists several; sealer does not)",
        )
    else:
        image = reader.string(image_node, "spec.image")
    if image_node is None:
        reader.report(
            spec_node,
            "spec.image",
            "no image",
            "set spec.image to the ClusterImage to run, "
            "e.g. docker.io/sealerio/kubernetes:v1-22-15-sealerio-2",
        )
    elif image is not None and (not image.strip() or any(c.isspace() for c in image)):
        reader.report(
            spec["image"],
            "spec.image",
            f"{image!r} is not an image reference",
            "an image reference has no spaces, e.g. docker.io/sealerio/kubernetes:v1.22.15",
        )
    elif image is None and is_null(image_node):
        reader.report(
            image_node, "spec.image", "must not be empty", "set spec.image to the ClusterImage to run"
        )

    env_where: dict[str, tuple[str, yaml.Node]] = {}
    env = _decode_env(reader, spec.get("env"), "spec.env", env_where)
    cmd = tuple(text for _, text, _ in reader.strings(spec.get("cmd"), "spec.cmd"))
    app_names: tuple[str, ...] | None = None
    if "appNames" in spec and not is_null(spec["appNames"]):
        # Go sealer overrides the image's LAUNCH only with a non-empty list; [""] launches nothing.
        app_names = tuple(text for _, text, _ in reader.strings(spec["appNames"], "spec.appNames")) or None
    ssh = _decode_ssh(reader, spec.get("ssh"), "spec.ssh", cluster_level=True)

    if v1:
        groups = _convert_v1(reader, spec_node, spec)
    else:
        errors_before_hosts = _error_count(reader)
        groups = _decode_hosts(reader, spec.get("hosts"), "spec.hosts")
        if not groups and _error_count(reader) == errors_before_hosts:
            reader.report(
                spec.get("hosts") or spec_node,
                "spec.hosts",
                "no hosts",
                "list the machines: hosts: [{ips: [10.0.0.11], roles: [master]}, ...]",
            )

    container_runtime = None
    cr = reader.mapping(spec.get("containerRuntime"), "spec.containerRuntime", ("type",))
    if cr:
        container_runtime = reader.string(cr.get("type"), "spec.containerRuntime.type")
        if container_runtime is not None and container_runtime not in _CONTAINER_RUNTIMES:
            guess = did_you_mean(container_runtime, _CONTAINER_RUNTIMES)
            reader.report(
                cr["type"],
                "spec.containerRuntime.type",
                f"unknown container runtime {container_runtime!r}",
                f"did you mean {guess!r}?" if guess else "use docker or containerd",
            )
            container_runtime = None

    aliases = _decode_host_aliases(reader, spec.get("hostAliases"), "spec.hostAliases")
    registry = _decode_registry(reader, spec.get("registry"), "spec.registry")
    data_root = reader.string(spec.get("dataRoot"), "spec.dataRoot") or DEFAULT_DATA_ROOT
    if not data_root.startswith("/") or "\n" in data_root:
        reader.report(
            spec.get("dataRoot"),
            "spec.dataRoot",
            f"{data_root!r} is not an absolute path",
            f"write an absolute directory, e.g. {DEFAULT_DATA_ROOT}",
        )

    family = _check_hosts(reader, groups)
    env = _derive_env(reader, env, env_where, registry, container_runtime, family)
    if _error_count(reader) > errors_before:
        return None
    return Cluster(
        name=name,
        image=image,
        env=env,
        cmd=cmd,
        app_names=app_names,
        ssh=ssh,
        host_groups=tuple(g for g, _ in groups),
        container_runtime=container_runtime,
        host_aliases=aliases,
        registry=registry,
        data_root=data_root,
    )


def _error_count(reader: Reader) -> int:
    return sum(1 for p in reader.problems if p.severity == "error")


def _is_v1(spec_node: yaml.Node) -> bool:
    if not isinstance(spec_node, yaml.MappingNode):
        return False
    keys = {k.value for k, _ in spec_node.value if isinstance(k, yaml.ScalarNode)}
    return "hosts" not in keys and bool(keys & {"masters", "nodes", "provider"})


def _convert_v1(
    reader: Reader, spec_node: yaml.Node, spec: dict[str, yaml.Node]
) -> list[tuple[HostGroup, yaml.Node]]:
    """Go sealer's ConvertV1ClusterToV2Cluster: masters.ipList -> role master, nodes.ipList -> role node."""
    provider = reader.string(spec.get("provider"), "spec.provider")
    groups: list[tuple[HostGroup, yaml.Node]] = []
    snippet: list[str] = []
    for key, role in (("masters", MASTER), ("nodes", NODE)):
        part = (
            reader.mapping(
                spec.get(key),
                f"spec.{key}",
                ("ipList", "count", "cpu", "memory", "systemDisk", "dataDisks"),
            )
            or {}
        )
        ips: list[str] = []
        for sub, text, item in reader.strings(part.get("ipList"), f"spec.{key}.ipList"):
            try:
                ips.extend(ipaddr.expand_entry(text))
            except ipaddr.AddressError as exc:
                reader.report(item, sub, exc.message, exc.hint)
        if ips:
            groups.append((HostGroup(ips=tuple(ips), roles=(role,)), spec[key]))
            snippet.append(f"  - ips: [{', '.join(ips)}]\n    roles: [{role}]")
    if not groups:
        if provider in ("ALI_CLOUD", "CONTAINER"):
            why = f"provider {provider} machines are no longer created by sealer"
        else:
            why = "it lists no machine addresses (spec.masters.ipList / spec.nodes.ipList)"
        reader.report(
            spec_node,
            "spec",
            f"this is a v1 Clusterfile and {why}",
            "convert it to v2: list existing machines under spec.hosts, e.g.\n"
            "  hosts:\n  - ips: [10.0.0.11]\n    roles: [master]\n  - ips: [10.0.0.12]\n    roles: [node]",
        )
        return []
    reader.warn(
        spec_node,
        "spec",
        "v1 Clusterfile (spec.masters/spec.nodes) is deprecated; converted to v2 spec.hosts",
        "write it as v2 (apiVersion: sealer.io/v2, spec.hosts):\n  hosts:\n" + "\n".join(snippet),
    )
    if "network" in spec:
        reader.warn(
            spec["network"],
            "spec.network",
            "v1 spec.network is not used",
            "set pod/service subnets in a kubeadm ClusterConfiguration document (networking.podSubnet, "
            "networking.serviceSubnet) and SvcCIDR in spec.env",
        )
    if "certSANS" in spec:
        reader.warn(
            spec["certSANS"],
            "spec.certSANS",
            "v1 spec.certSANS is not used",
            "put extra API server names in spec.env: CertSANs=name1,10.0.0.2",
        )
    return groups


def _decode_env(
    reader: Reader, node: yaml.Node | None, path: str, where: dict[str, tuple[str, yaml.Node]] | None = None
) -> dict[str, str]:
    """`[K=V, ...]` (Go sealer's form); a mapping (sealer's design docs use it) is accepted with a warning."""
    result: dict[str, str] = {}
    if node is None or is_null(node):
        return result
    if isinstance(node, yaml.MappingNode):
        reader.warn(
            node,
            path,
            "env is a mapping; sealer writes env as a list of KEY=VALUE",
            "write it as a list: env: [KEY=VALUE, ...] (Go sealer rejects the mapping form)",
        )
        mapping = reader.mapping(node, path) or {}
        for key, value_node in mapping.items():
            text = reader.string(value_node, f"{path}.{key}")
            _env_key_check(reader, value_node, f"{path}.{key}", key)
            result[key] = text or ""
            if where is not None:
                where[key] = (f"{path}.{key}", value_node)
        return result
    for sub, entry, item in reader.strings(node, path):
        name, sep, value = entry.partition("=")
        name = name.strip()
        if not sep or not name:
            reader.report(item, sub, f"env entry {entry!r} is not KEY=VALUE", f"write {entry or 'KEY'}=value")
            continue
        _env_key_check(reader, item, sub, name)
        result[name] = value
        if where is not None:
            where[name] = (sub, item)
    return result


def _env_key_check(reader: Reader, node: yaml.Node, path: str, key: str) -> None:
    if not _ENV_KEY_RE.match(key):
        reader.warn(
            node,
            path,
            f"env key {key!r} is not a shell variable name",
            "templates still see it, but scripts cannot read it; use letters, digits and '_'",
        )


def _decode_ssh(reader: Reader, node: yaml.Node | None, path: str, *, cluster_level: bool) -> SSH:
    m = reader.mapping(node, path, _SSH_KEYS)
    if not m:
        return SSH()
    port = reader.integer(m.get("port"), f"{path}.port", low=1, high=65535)
    policy = reader.string(m.get("hostKeyPolicy"), f"{path}.hostKeyPolicy")
    if policy is not None and policy not in _HOST_KEY_POLICIES:
        guess = did_you_mean(policy, _HOST_KEY_POLICIES)
        reader.report(
            m["hostKeyPolicy"],
            f"{path}.hostKeyPolicy",
            f"unknown host key policy {policy!r}",
            f"did you mean {guess!r}?" if guess else "use tofu (trust on first use) or strict",
        )
        policy = None
    host_key = reader.string(m.get("hostKey"), f"{path}.hostKey")
    if host_key is not None:
        host_key = _check_host_key(reader, m["hostKey"], f"{path}.hostKey", host_key)
        if cluster_level and host_key is not None:
            reader.warn(
                m["hostKey"],
                f"{path}.hostKey",
                "a host key pinned for the whole cluster",
                "every host must then present this same key; pin keys per host under spec.hosts[].ssh",
            )
    return SSH(
        user=reader.string(m.get("user"), f"{path}.user"),
        password=reader.string(m.get("passwd"), f"{path}.passwd"),
        pk=reader.string(m.get("pk"), f"{path}.pk"),
        pk_password=reader.string(m.get("pkPasswd"), f"{path}.pkPasswd"),
        port=port,
        sudo_password=reader.string(m.get("sudoPasswd"), f"{path}.sudoPasswd"),
        bastion=_decode_bastion(reader, m.get("bastion"), f"{path}.bastion"),
        host_key_policy=policy,  # type: ignore[arg-type]  # checked against _HOST_KEY_POLICIES
        host_key=host_key,
        encrypted=reader.boolean(m.get("encrypted"), f"{path}.encrypted"),
    )


def _check_host_key(reader: Reader, node: yaml.Node, path: str, text: str) -> str | None:
    parts = text.split()
    hint = 'write the key as in known_hosts/ssh-keyscan output: "ssh-ed25519 AAAAC3Nza..."'
    if len(parts) < 2:
        reader.report(node, path, "a pinned host key is '<type> <base64>'", hint)
        return None
    key_type, blob = parts[0], parts[1]
    if key_type not in _HOST_KEY_TYPES:
        reader.report(node, path, f"unknown host key type {key_type!r}", hint)
        return None
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        reader.report(node, path, "the host key is not valid base64", hint)
        return None
    # The SSH wire format starts with the key type as a length-prefixed string.
    length = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if length <= 0 or raw[4 : 4 + length] != key_type.encode():
        reader.report(node, path, f"the key data is not a {key_type} key", hint)
        return None
    return f"{key_type} {blob}"


def _decode_bastion(reader: Reader, node: yaml.Node | None, path: str) -> Bastion | None:
    m = reader.mapping(node, path, _BASTION_KEYS)
    if not m:
        return None
    host = reader.string(m.get("host"), f"{path}.host", required=True, parent=node)
    if host is None:
        return None
    if not _valid_host(host):
        reader.report(
            m["host"],
            f"{path}.host",
            f"{host!r} is neither an IP address nor a host name",
            "write the jump host's address or DNS name (port goes in bastion.port)",
        )
    return Bastion(
        host=host,
        port=reader.integer(m.get("port"), f"{path}.port", low=1, high=65535) or 22,
        user=reader.string(m.get("user"), f"{path}.user"),
        password=reader.string(m.get("passwd"), f"{path}.passwd"),
        pk=reader.string(m.get("pk"), f"{path}.pk"),
        pk_password=reader.string(m.get("pkPasswd"), f"{path}.pkPasswd"),
    )


def _misspelt(node: yaml.Node, key: str, known: tuple[str, ...]) -> bool:
    """Whether the mapping has a key that did-you-mean maps to `key` (already reported once)."""
    pairs = node.value if isinstance(node, yaml.MappingNode) else []
    return any(
        isinstance(k, yaml.ScalarNode) and k.value != key and did_you_mean(k.value, known) == key
        for k, _ in pairs
    )


def _valid_host(text: str) -> bool:
    try:
        ipaddr.parse_ip(text)
        return True
    except ipaddr.AddressError:
        return bool(_HOSTNAME_RE.match(text))


def _decode_hosts(reader: Reader, node: yaml.Node | None, path: str) -> list[tuple[HostGroup, yaml.Node]]:
    if isinstance(node, yaml.MappingNode):
        reader.report(
            node,
            path,
            "hosts must be a list of host groups, got a mapping",
            "start each group with '- ', e.g.\n  hosts:\n  - ips: [10.0.0.11]\n    roles: [master]",
        )
        return []
    groups: list[tuple[HostGroup, yaml.Node]] = []
    total = 0
    for sub, item in reader.items(node, path, what="a list of host groups"):
        m = reader.mapping(item, sub, _HOST_KEYS)
        if m is None:
            continue
        ips: list[str] = []
        if "ips" not in m and not _misspelt(item, "ips", _HOST_KEYS):
            reader.report(
                item, f"{sub}.ips", "host group has no ips", "add ips: [10.0.0.11] (or a range a-b)"
            )
        for ip_path, text, ip_node in reader.strings(m.get("ips"), f"{sub}.ips"):
            try:
                expanded = ipaddr.expand_entry(text)
            except ipaddr.AddressError as exc:
                reader.report(ip_node, ip_path, exc.message, exc.hint)
                continue
            total += len(expanded)
            if total > MAX_HOSTS:
                reader.report(
                    ip_node,
                    ip_path,
                    f"more than {MAX_HOSTS} hosts in one cluster",
                    "Kubernetes supports 5,000 nodes; check the ranges for a typo",
                )
                return groups
            reader.tick(len(expanded))
            ips.extend(expanded)
        if "ips" in m and not ips and isinstance(m["ips"], yaml.SequenceNode) and not m["ips"].value:
            reader.report(m["ips"], f"{sub}.ips", "host group has no ips", "add at least one address")
        roles: list[str] = []
        for role_path, role, role_node in reader.strings(m.get("roles"), f"{sub}.roles"):
            role = role.strip()
            why = qualified_name_problem(f"node-role.kubernetes.io/{role}") if role else "it is empty"
            if why:
                reader.report(
                    role_node,
                    role_path,
                    f"role {role!r} is not valid: {why}",
                    "roles are master, node or a custom word (it becomes a node label)",
                )
                continue
            if role not in roles:
                roles.append(role)
        if not roles and ips and not _misspelt(item, "roles", _HOST_KEYS):
            reader.report(
                m.get("roles") or item,
                f"{sub}.roles",
                f"host group {', '.join(ips[:3])}{' ...' if len(ips) > 3 else ''} has no role",
                "add roles: [master] or roles: [node] (custom roles go next to them)",
            )
        elif roles and MASTER not in roles and NODE not in roles:
            reader.warn(
                m.get("roles") or item,
                f"{sub}.roles",
                f"roles {roles} have neither master nor node",
                "these hosts are prepared as workers; add node if they must join the cluster as nodes",
            )
        labels = _decode_labels(reader, m.get("labels"), f"{sub}.labels")
        taints: list[Taint] = []
        for taint_path, text, taint_node in reader.strings(m.get("taints"), f"{sub}.taints"):
            try:
                taints.append(parse_taint(text))
            except TaintError as exc:
                reader.report(taint_node, taint_path, exc.message, exc.hint)
        groups.append(
            (
                HostGroup(
                    ips=tuple(ips),
                    roles=tuple(roles),
                    ssh=_group_ssh(reader, m.get("ssh"), f"{sub}.ssh", len(ips)),
                    env=_decode_env(reader, m.get("env"), f"{sub}.env"),
                    labels=labels,
                    taints=tuple(taints),
                ),
                item,
            )
        )
    return groups


def _group_ssh(reader: Reader, node: yaml.Node | None, path: str, hosts: int) -> SSH:
    ssh = _decode_ssh(reader, node, path, cluster_level=False)
    if ssh.host_key is not None and hosts > 1 and isinstance(node, yaml.MappingNode):
        key_node = next((v for k, v in node.value if getattr(k, "value", None) == "hostKey"), node)
        reader.warn(
            key_node,
            f"{path}.hostKey",
            f"one pinned host key for {hosts} hosts",
            "every machine normally has its own host key; hosts cloned from one image share theirs "
            "(regenerate them) — otherwise give each host its own group and key",
        )
    return ssh


def _decode_labels(reader: Reader, node: yaml.Node | None, path: str) -> dict[str, str]:
    m = reader.mapping(node, path)
    labels: dict[str, str] = {}
    for key, value in (m or {}).items():
        sub = f"{path}.{key}"
        why = qualified_name_problem(key)
        if why:
            reader.report(
                value, sub, f"label key {key!r} is invalid: {why}", "label keys follow Kubernetes rules"
            )
            continue
        text = reader.string(value, sub) or ""
        why = label_value_problem(text)
        if why:
            reader.report(
                value, sub, f"label value {text!r} is invalid: {why}", "label values follow Kubernetes rules"
            )
            continue
        labels[key] = text
    return labels


def _check_hosts(reader: Reader, groups: list[tuple[HostGroup, yaml.Node]]) -> int | None:
    """Cross-group rules: duplicate IPs, one IP family, at least one master. Returns the family."""
    if not groups:
        return None
    seen: dict[str, _Seen] = {}
    family: int | None = None
    family_where = ""
    has_master = False
    for gi, (group, node) in enumerate(groups):
        path = f"spec.hosts[{gi}].ips"
        has_master = has_master or MASTER in group.roles
        for ip in group.ips:
            fam = ipaddr.family(ip)
            if family is None:
                family, family_where = fam, ip
            elif fam != family:
                reader.report(
                    node,
                    path,
                    f"{ip} is IPv{fam} but {family_where} is IPv{family}",
                    "all hosts of a cluster must be one IP family (IPv4 or IPv6)",
                )
            if ip in seen:
                first = seen[ip]
                where = f"{first.path} (line {first.line})" if first.line else first.path
                reader.report(
                    node,
                    path,
                    f"{ip} is listed twice",
                    f"it is already listed in {where}; list each host once",
                )
            else:
                line = node.start_mark.line + 1 if node.start_mark else None
                seen[ip] = _Seen(path, line)
    if not has_master and any(g.ips and g.roles for g, _ in groups):
        reader.report(
            groups[0][1],
            "spec.hosts",
            "no host has the master role",
            "give the first host group roles: [master]; master0 is its first IP",
        )
    return family


def _decode_host_aliases(reader: Reader, node: yaml.Node | None, path: str) -> tuple[HostAlias, ...]:
    result = []
    for sub, item in reader.items(node, path, what="a list of {ip, hostnames}"):
        m = reader.mapping(item, sub, ("ip", "hostnames"))
        if m is None:
            continue
        ip = reader.string(m.get("ip"), f"{sub}.ip", required=True, parent=item)
        if ip is not None:
            try:
                ip = str(ipaddr.parse_ip(ip))
            except ipaddr.AddressError as exc:
                reader.report(m["ip"], f"{sub}.ip", exc.message, exc.hint)
                ip = None
        names = []
        for name_path, name, name_node in reader.strings(m.get("hostnames"), f"{sub}.hostnames"):
            if not _HOSTNAME_RE.match(name):
                reader.report(
                    name_node,
                    name_path,
                    f"{name!r} is not a valid host name",
                    "letters, digits, '-' and '.', each label at most 63 characters",
                )
                continue
            names.append(name)
        if not names and ip is not None:
            reader.report(
                item, f"{sub}.hostnames", "host alias has no hostnames", f"add hostnames: [name] for {ip}"
            )
        if ip is not None and names:
            result.append(HostAlias(ip=ip, hostnames=tuple(names)))
    return tuple(result)


def _decode_registry(reader: Reader, node: yaml.Node | None, path: str) -> Registry:
    m = reader.mapping(node, path, ("localRegistry", "externalRegistry"))
    if not m:
        return Registry()
    local = None
    if "localRegistry" in m:
        local_path = f"{path}.localRegistry"
        lm = (
            reader.mapping(
                m["localRegistry"],
                local_path,
                ("domain", "port", "username", "password", "ha", "insecure", "cert"),
            )
            or {}
        )
        dns_names: list[str] = []
        cert_ips: list[str] = []
        cert = reader.mapping(lm.get("cert"), f"{local_path}.cert", ("subjectAltName",)) or {}
        san_path = f"{local_path}.cert.subjectAltName"
        san = reader.mapping(cert.get("subjectAltName"), san_path, ("dnsNames", "ips")) or {}
        for name_path, name, name_node in reader.strings(san.get("dnsNames"), f"{san_path}.dnsNames"):
            if not _HOSTNAME_RE.match(name.removeprefix("*.")):
                reader.report(name_node, name_path, f"{name!r} is not a valid DNS name")
            dns_names.append(name)
        for ip_path, text, ip_node in reader.strings(san.get("ips"), f"{san_path}.ips"):
            try:
                cert_ips.append(str(ipaddr.parse_ip(text)))
            except ipaddr.AddressError as exc:
                reader.report(ip_node, ip_path, exc.message, exc.hint)
        domain = reader.string(lm.get("domain"), f"{local_path}.domain") or LocalRegistry.domain
        _check_domain(reader, lm.get("domain"), f"{local_path}.domain", domain)
        ha = reader.boolean(lm.get("ha"), f"{local_path}.ha")
        insecure = reader.boolean(lm.get("insecure"), f"{local_path}.insecure")
        local = LocalRegistry(
            domain=domain,
            port=reader.integer(lm.get("port"), f"{local_path}.port", low=1, high=65535)
            or LocalRegistry.port,
            username=reader.string(lm.get("username"), f"{local_path}.username"),
            password=reader.string(lm.get("password"), f"{local_path}.password"),
            ha=True if ha is None else ha,
            insecure=False if insecure is None else insecure,
            cert_dns_names=tuple(dns_names),
            cert_ips=tuple(cert_ips),
        )
    external = None
    if "externalRegistry" in m:
        ext_path = f"{path}.externalRegistry"
        em = reader.mapping(m["externalRegistry"], ext_path, ("domain", "port", "username", "password")) or {}
        ext_domain = reader.string(
            em.get("domain"), f"{ext_path}.domain", required=True, parent=m["externalRegistry"]
        )
        if ext_domain is not None:
            _check_domain(reader, em.get("domain"), f"{ext_path}.domain", ext_domain)
            external = ExternalRegistry(
                domain=ext_domain,
                port=reader.integer(em.get("port"), f"{ext_path}.port", low=1, high=65535),
                username=reader.string(em.get("username"), f"{ext_path}.username"),
                password=reader.string(em.get("password"), f"{ext_path}.password"),
            )
    if local is None and external is None:
        local = LocalRegistry()
    return Registry(local=local, external=external)


def _check_domain(reader: Reader, node: yaml.Node | None, path: str, domain: str) -> None:
    if ":" in domain and not domain.startswith("["):
        host, _, port = domain.rpartition(":")
        if port.isdigit():
            reader.report(node, path, f"{domain!r} carries a port", f"write domain: {host} and port: {port}")
            return
    if not _valid_host(domain):
        reader.report(
            node,
            path,
            f"{domain!r} is not a valid domain",
            "a registry domain is a host name such as sea.hub",
        )


def _derive_env(
    reader: Reader,
    env: dict[str, str],
    where: dict[str, tuple[str, yaml.Node]],
    registry: Registry,
    container_runtime: str | None,
    family: int | None,
) -> dict[str, str]:
    """Go sealer's decoder: drop user-set reserved keys, then add the derived ones."""
    result = {}
    for key, value in env.items():
        if key in RESERVED_ENV:
            path, node = where.get(key, (f"spec.env.{key}", None))
            reader.warn(
                node,
                path,
                f"{key} is derived by sealer; the value in the file is ignored",
                "set spec.registry / spec.containerRuntime / SvcCIDR instead",
            )
            continue
        result[key] = value
    if registry.local is not None:
        local = registry.local
        result.update(
            LocalRegistryDomain=local.domain,
            LocalRegistryPort=str(local.port),
            LocalRegistryURL=f"{local.domain}:{local.port}",
        )
    if registry.external is not None:
        ext = registry.external
        result.update(
            ExternalRegistryDomain=ext.domain,
            ExternalRegistryPort=str(ext.port or ""),
            ExternalRegistryURL=registry.url,
        )
    chosen_port = (
        str(registry.external.port or "")
        if registry.external
        else str((registry.local or LocalRegistry()).port)
    )
    chosen_domain = (
        registry.external.domain if registry.external else (registry.local or LocalRegistry()).domain
    )
    result.update(RegistryDomain=chosen_domain, RegistryPort=chosen_port, RegistryURL=registry.url)
    if container_runtime:
        result["ContainerRuntime"] = container_runtime
    for cidr_key in ("SvcCIDR", "PodCIDR"):
        if cidr_key not in result:
            continue
        nets = []
        for part in result[cidr_key].split(","):
            try:
                nets.append(ipaddr.parse_cidr(part))
            except ipaddr.AddressError as exc:
                path, node = where.get(cidr_key, (f"spec.env.{cidr_key}", None))
                reader.report(node, path, f"{cidr_key}: {exc.message}", exc.hint)
        if cidr_key == "SvcCIDR" and nets:
            try:
                result["KubeSvcIP"] = ipaddr.nth_address(nets[0], 1)
                result["DNSSvcIP"] = ipaddr.nth_address(nets[0], 10)
            except ipaddr.AddressError as exc:
                path, node = where.get("SvcCIDR", ("spec.env.SvcCIDR", None))
                reader.report(node, path, f"SvcCIDR: {exc.message}", exc.hint)
    if family == 6:
        result["HostIPFamily"] = "IPv6"
    return result


# -- other documents ---------------------------------------------------------------------------


def _doc_name(reader: Reader, top: dict[str, yaml.Node], kind: str) -> str:
    meta = reader.mapping(top.get("metadata"), "metadata", _METADATA_KEYS) or {}
    return reader.string(meta.get("name"), "metadata.name") or ""


def _decode_config(reader: Reader, node: yaml.MappingNode) -> ConfigDoc | None:
    top = reader.mapping(node, "", ("apiVersion", "kind", "metadata", "spec")) or {}
    errors_before = _error_count(reader)
    name = _doc_name(reader, top, "Config")
    spec = reader.mapping(top.get("spec"), "spec", ("path", "data", "appName", "strategy", "process"))
    if spec is None:
        return None
    path = reader.string(spec.get("path"), "spec.path", required=True, parent=top.get("spec") or node)
    data_node = spec.get("data")
    if isinstance(data_node, yaml.MappingNode | yaml.SequenceNode):
        reader.report(
            data_node,
            "spec.data",
            f"Config data must be a string, got {describe(data_node)}",
            "write it as a block string: data: |  (then the content indented below)",
        )
        data = None
    else:
        data = reader.string(data_node, "spec.data", required=True, parent=top.get("spec") or node)
    strategy = reader.string(spec.get("strategy"), "spec.strategy") or "overwrite"
    if strategy not in _CONFIG_STRATEGIES:
        guess = did_you_mean(strategy, _CONFIG_STRATEGIES)
        reader.report(
            spec.get("strategy"),
            "spec.strategy",
            f"unknown strategy {strategy!r}",
            f"did you mean {guess!r}?" if guess else "use overwrite or merge",
        )
    process = _piped_names(
        reader,
        spec.get("process"),
        "spec.process",
        _CONFIG_PROCESSORS,
        "processor",
        f"processors: {'|'.join(_CONFIG_PROCESSORS)}",
    )
    if _error_count(reader) > errors_before or path is None or data is None:
        return None
    return ConfigDoc(
        name=name,
        path=path,
        data=data,
        app_name=reader.string(spec.get("appName"), "spec.appName"),
        strategy=strategy,
        process=tuple(process),
    )


def _piped_names(
    reader: Reader,
    node: yaml.Node | None,
    path: str,
    known: Sequence[str],
    kind: str,
    listing: str,
    *,
    legacy: Mapping[str, str] | None = None,
) -> list[str]:
    """The names of an `a|b|c` field that are known; an unknown one is reported (with the
    closest known name, else `listing`) and left out. A `legacy` name (v0.8, mapped to its
    successor) is kept with a warning that it never runs."""
    names: list[str] = []
    for part in (reader.string(node, path) or "").split("|"):
        part = part.strip()
        if not part:
            continue
        if legacy and part in legacy:
            reader.warn(
                node, path, f"v0.8 action {part!r} never runs in current sealer", f"use {legacy[part]!r}"
            )
        elif part not in known:
            guess = did_you_mean(part, known)
            reader.report(
                node, path, f"unknown {kind} {part!r}", f"did you mean {guess!r}?" if guess else listing
            )
            continue
        names.append(part)
    return names


def _decode_plugin(reader: Reader, node: yaml.MappingNode) -> PluginDoc | None:
    top = reader.mapping(node, "", ("apiVersion", "kind", "metadata", "spec")) or {}
    errors_before = _error_count(reader)
    name = _doc_name(reader, top, "Plugin")
    spec_node = top.get("spec")
    spec = reader.mapping(
        spec_node,
        "spec",
        ("type", "data", "action", "scope"),
        ignored={
            "on": "spec.on is a v0.8 selector and is not used; use spec.scope (roles, e.g. master|node)"
        },
    )
    if spec is None:
        return None
    ptype = reader.string(spec.get("type"), "spec.type") or ""
    if ptype not in _PLUGIN_TYPES:
        hint = _LEGACY_PLUGIN_HINTS.get(ptype.upper(), "the only plugin type is SHELL")
        shown = repr(ptype) if ptype else "(none)"
        reader.report(
            spec.get("type") or spec_node or node,
            "spec.type",
            f"plugin {name or '?'}: type {shown} is not supported",
            hint,
        )
    data = reader.string(spec.get("data"), "spec.data", required=True, parent=spec_node or node)
    actions = _piped_names(
        reader,
        spec.get("action"),
        "spec.action",
        PLUGIN_ACTIONS,
        "plugin action",
        f"actions: {', '.join(PLUGIN_ACTIONS)}",
        legacy=_LEGACY_ACTIONS,
    )
    if not actions:
        reader.report(
            spec.get("action") or spec_node or node,
            "spec.action",
            f"plugin {name or '?'} has no action",
            "set action to the phase it runs in, e.g. pre-init-host",
        )
    scope = tuple(
        p.strip() for p in (reader.string(spec.get("scope"), "spec.scope") or "").split("|") if p.strip()
    )
    for role in scope:
        if qualified_name_problem(f"node-role.kubernetes.io/{role}"):
            reader.warn(
                spec.get("scope"),
                "spec.scope",
                f"scope {role!r} is not a role name, so it matches no host",
                "join roles with '|', e.g. scope: master|node",
            )
    if _error_count(reader) > errors_before or data is None:
        return None
    return PluginDoc(name=name, type=ptype, data=data, actions=tuple(actions), scope=scope)


def _check_plugin_scopes(
    reader: Reader, plugins: list[tuple[PluginDoc, yaml.Node]], cluster: Cluster
) -> None:
    host_actions = {"pre-init-host", "post-init-host", "pre-clean-host", "post-clean-host", "upgrade-host"}
    roles = {r for g in cluster.host_groups for r in g.roles}
    for plugin, node in plugins:
        if not host_actions.intersection(plugin.actions):
            continue
        if not plugin.scope:
            reader.warn(
                node,
                f"Plugin {plugin.name}",
                "a host plugin without scope runs on no host",
                "set scope to roles joined by '|', e.g. master|node",
            )
        for role in plugin.scope:
            if role not in roles and not qualified_name_problem(f"node-role.kubernetes.io/{role}"):
                reader.warn(
                    node,
                    f"Plugin {plugin.name}",
                    f"scope {role!r} matches no host role",
                    "roles are joined with '|', e.g. scope: master|node",
                )


def _check_kubeadm(reader: Reader, node: yaml.MappingNode, kind: str) -> None:
    if kind != "ClusterConfiguration":
        return
    top = reader.mapping(node, "") or {}
    net = top.get("networking")
    if not isinstance(net, yaml.MappingNode):
        return
    fields = reader.mapping(net, "networking") or {}
    for key in ("podSubnet", "serviceSubnet"):
        text = reader.string(fields.get(key), f"networking.{key}")
        for part in (text or "").split(","):
            if not part.strip():
                continue
            try:
                ipaddr.parse_cidr(part)
            except ipaddr.AddressError as exc:
                reader.report(fields[key], f"networking.{key}", exc.message, exc.hint)


def _check_application(reader: Reader, node: yaml.MappingNode) -> None:
    """Go sealer's Application rules: configs need a name; launch needs cmds; files need path and data."""
    top = reader.mapping(node, "") or {}
    spec = reader.mapping(top.get("spec"), "spec", ("cmds", "launchApps", "configs"))
    if not spec:
        return
    reader.strings(spec.get("cmds"), "spec.cmds")
    reader.strings(spec.get("launchApps"), "spec.launchApps")
    for sub, item in reader.items(spec.get("configs"), "spec.configs"):
        cm = reader.mapping(item, sub, ("name", "env", "files", "launch"))
        if cm is None:
            continue
        reader.string(cm.get("name"), f"{sub}.name", required=True, parent=item)
        _decode_env(reader, cm.get("env"), f"{sub}.env")
        if "launch" in cm:
            launch = reader.mapping(cm["launch"], f"{sub}.launch", ("cmds",)) or {}
            if not reader.strings(launch.get("cmds"), f"{sub}.launch.cmds"):
                reader.report(cm["launch"], f"{sub}.launch.cmds", "launch needs at least one command")
        for file_path, file_node in reader.items(cm.get("files"), f"{sub}.files"):
            fm = reader.mapping(file_node, file_path, ("path", "strategy", "data"))
            if fm is None:
                continue
            reader.string(fm.get("path"), f"{file_path}.path", required=True, parent=file_node)
            reader.string(fm.get("data"), f"{file_path}.data", required=True, parent=file_node)
            strategy = reader.string(fm.get("strategy"), f"{file_path}.strategy")
            if strategy is not None and strategy not in _CONFIG_STRATEGIES:
                reader.report(
                    fm["strategy"],
                    f"{file_path}.strategy",
                    f"unknown strategy {strategy!r}",
                    "use overwrite or merge",
                )
