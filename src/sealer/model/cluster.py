"""The Clusterfile's data types: a cluster, its hosts and how to reach them.

These are the decoded, validated, defaults-filled form (sealer.io/v2 compatible). Parsing and
validation live in `model.clusterfile`; this module only holds data and pure derivations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

MASTER = "master"
NODE = "node"

DEFAULT_DATA_ROOT = "/var/lib/sealer/data"
DEFAULT_REGISTRY_DOMAIN = "sea.hub"
DEFAULT_REGISTRY_PORT = 5000
DEFAULT_SSH_USER = "root"
DEFAULT_SSH_PORT = 22

# Environment keys the decoder derives itself (Go sealer strips user values and recomputes them).
RESERVED_ENV = (
    "LocalRegistryDomain",
    "LocalRegistryPort",
    "LocalRegistryURL",
    "ExternalRegistryDomain",
    "ExternalRegistryPort",
    "ExternalRegistryURL",
    "RegistryDomain",
    "RegistryPort",
    "RegistryURL",
    "ContainerRuntime",
    "KubeSvcIP",
    "DNSSvcIP",
    "HostIPFamily",
)

HostKeyPolicy = Literal["tofu", "strict"]
"""tofu: record a host's key on first contact, refuse a changed one (default).
strict: the key must already be pinned (cluster known_hosts, ~/.ssh/known_hosts or `hostKey`)."""

TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
TAINT_EFFECTS: tuple[str, ...] = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class Bastion:
    """A jump host through which a host is reached (ProxyJump)."""

    host: str
    port: int = DEFAULT_SSH_PORT
    user: str | None = None
    password: str | None = None
    pk: str | None = None
    pk_password: str | None = None


@dataclass(frozen=True)
class SSH:
    """How to log in to a host. Every field may be unset; `merged_over` fills gaps from a default."""

    user: str | None = None
    password: str | None = None
    pk: str | None = None
    pk_password: str | None = None
    port: int | None = None
    sudo_password: str | None = None
    bastion: Bastion | None = None
    host_key_policy: HostKeyPolicy | None = None
    host_key: str | None = None  # pinned public key, "ssh-ed25519 AAAA..." (per host)
    encrypted: bool | None = None  # Go sealer: passwd is encrypted (kept for round trips)

    def merged_over(self, default: SSH) -> SSH:
        """Non-empty fields of self win (Go sealer's mergo semantics)."""
        values: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            mine = getattr(self, name)
            values[name] = mine if mine not in (None, "") else getattr(default, name)
        return SSH(**values)

    def with_defaults(self) -> SSH:
        return replace(
            self,
            user=self.user or DEFAULT_SSH_USER,
            port=self.port or DEFAULT_SSH_PORT,
            host_key_policy=self.host_key_policy or "tofu",
        )

    def redacted(self) -> SSH:
        """A copy safe to print or log."""
        hide = "*****"
        bastion = self.bastion
        if bastion is not None:
            bastion = replace(
                bastion,
                password=hide if bastion.password else None,
                pk_password=hide if bastion.pk_password else None,
            )
        return replace(
            self,
            password=hide if self.password else None,
            pk_password=hide if self.pk_password else None,
            sudo_password=hide if self.sudo_password else None,
            bastion=bastion,
        )


@dataclass(frozen=True)
class Taint:
    """One taint in sealer's grammar: `k=v:Effect`, `k:Effect`, `k=:Effect`, `k-`, `k:Effect-`."""

    key: str
    value: str = ""
    effect: str | None = None  # None only for removals of every effect (`k-`)
    remove: bool = False

    def __str__(self) -> str:
        text = self.key
        if self.value:
            text += f"={self.value}"
        if self.effect:
            text += f":{self.effect}"
        if self.remove:
            text += "-"
        return text


@dataclass(frozen=True)
class HostGroup:
    """One `spec.hosts[]` entry as written: several IPs sharing roles and settings."""

    ips: tuple[str, ...]
    roles: tuple[str, ...]
    ssh: SSH = field(default_factory=SSH)
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()


@dataclass(frozen=True)
class Host:
    """One machine of the cluster, with everything merged: cluster ssh/env under host ssh/env."""

    ip: str
    roles: tuple[str, ...]
    ssh: SSH
    env: Mapping[str, str]
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]

    @property
    def is_master(self) -> bool:
        return MASTER in self.roles


@dataclass(frozen=True)
class HostAlias:
    ip: str
    hostnames: tuple[str, ...]


@dataclass(frozen=True)
class LocalRegistry:
    domain: str = DEFAULT_REGISTRY_DOMAIN
    port: int = DEFAULT_REGISTRY_PORT
    username: str | None = None
    password: str | None = None
    ha: bool = True
    insecure: bool = False
    cert_dns_names: tuple[str, ...] = ()
    cert_ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExternalRegistry:
    domain: str
    port: int | None = None
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class Registry:
    local: LocalRegistry | None = field(default_factory=LocalRegistry)
    external: ExternalRegistry | None = None

    @property
    def url(self) -> str:
        if self.external is not None:
            port = f":{self.external.port}" if self.external.port else ""
            return f"{self.external.domain}{port}"
        local = self.local or LocalRegistry()
        return f"{local.domain}:{local.port}"


@dataclass(frozen=True)
class Cluster:
    """`kind: Cluster` (sealer.io/v2), decoded and defaults filled."""

    name: str
    image: str | None
    env: Mapping[str, str] = field(default_factory=dict)
    cmd: tuple[str, ...] = ()
    app_names: tuple[str, ...] | None = None  # None: use the image's LAUNCH; ("",): launch nothing
    ssh: SSH = field(default_factory=SSH)
    host_groups: tuple[HostGroup, ...] = ()
    container_runtime: str | None = None
    host_aliases: tuple[HostAlias, ...] = ()
    registry: Registry = field(default_factory=Registry)
    data_root: str = DEFAULT_DATA_ROOT

    @property
    def hosts(self) -> tuple[Host, ...]:
        """Every host, in file order, with cluster ssh/env merged under the host's own."""
        result: list[Host] = []
        for group in self.host_groups:
            ssh = group.ssh.merged_over(self.ssh).with_defaults()
            env = {**self.env, **group.env}
            for ip in group.ips:
                result.append(
                    Host(
                        ip=ip,
                        roles=group.roles,
                        ssh=ssh,
                        env={**env, "HostIP": ip},
                        labels=dict(group.labels),
                        taints=group.taints,
                    )
                )
        return tuple(result)

    @property
    def masters(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.is_master)

    @property
    def workers(self) -> tuple[Host, ...]:
        """Every non-master host (custom-role-only hosts are workers too, unlike Go sealer's kubeadm path)."""
        return tuple(h for h in self.hosts if not h.is_master)

    @property
    def master0(self) -> Host | None:
        """The first IP of the first host group having the master role."""
        masters = self.masters
        return masters[0] if masters else None

    @property
    def ip_family(self) -> int | None:
        """4 or 6 (validation guarantees one family per cluster); None without hosts."""
        for group in self.host_groups:
            for ip in group.ips:
                return 6 if ":" in ip else 4
        return None

    @property
    def rootfs(self) -> str:
        return f"{self.data_root.rstrip('/')}/{self.name}/rootfs"

    def host(self, ip: str) -> Host | None:
        for h in self.hosts:
            if h.ip == ip:
                return h
        return None


@dataclass(frozen=True)
class ConfigDoc:
    """`kind: Config` (sealer.io/v1): a file written into the rootfs (or an app dir) before distribution."""

    name: str
    path: str
    data: str
    app_name: str | None = None
    strategy: str = "overwrite"  # "overwrite" | "merge"
    process: tuple[str, ...] = ()


@dataclass(frozen=True)
class PluginDoc:
    """`kind: Plugin` (sealer.io/v1): a SHELL hook for a phase, scoped to roles."""

    name: str
    type: str
    data: str
    actions: tuple[str, ...] = ()
    scope: tuple[str, ...] = ()


@dataclass(frozen=True)
class Clusterfile:
    """Every document of one Clusterfile."""

    cluster: Cluster
    configs: tuple[ConfigDoc, ...] = ()
    plugins: tuple[PluginDoc, ...] = ()
    # raw kubeadm / kubelet / kube-proxy documents, each a mapping with apiVersion and kind kept
    kubeadm_documents: tuple[Mapping[str, Any], ...] = ()
    # other documents kept verbatim so a round trip loses nothing (e.g. Application)
    other_documents: tuple[Mapping[str, Any], ...] = ()
    source: str | None = None
