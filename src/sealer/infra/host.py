"""How to reach one machine: `Target` (address, login, keys, sudo, bastion) built from a model Host.

Pure data; the connectors turn a Target into a connection. Secrets stay out of `repr`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sealer.model.cluster import (
    DEFAULT_SSH_PORT,
    DEFAULT_SSH_USER,
    SSH,
    Bastion,
    Cluster,
    Host,
    HostKeyPolicy,
)


@dataclass(frozen=True)
class Target:
    """One SSH endpoint. `user`/`port` None mean: let ~/.ssh/config decide, else root/22."""

    address: str
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    pk: str | None = None
    pk_password: str | None = field(default=None, repr=False)
    sudo_password: str | None = field(default=None, repr=False)
    bastion: Target | None = None
    host_key_policy: HostKeyPolicy = "tofu"
    host_key: str | None = None  # pinned "type base64" public key
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    roles: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """How messages and logs name this host: the address, plus the port when not 22."""
        if self.port and self.port != DEFAULT_SSH_PORT:
            address = f"[{self.address}]" if ":" in self.address else self.address
            return f"{address}:{self.port}"
        return self.address

    @classmethod
    def from_host(cls, host: Host) -> Target:
        return target_from_host(host)

    @property
    def login_user(self) -> str:
        return self.user or DEFAULT_SSH_USER

    @property
    def is_root(self) -> bool:
        return self.login_user == "root"


def _optional(value: str | None, default: str) -> str | None:
    # The model fills user=root/port=22 when the Clusterfile leaves them out; treating those
    # defaults as "unset" lets ~/.ssh/config supply User/Port for such hosts, as OpenSSH would.
    return None if value in (None, "", default) else value


def bastion_target(bastion: Bastion, host_key_policy: HostKeyPolicy = "tofu") -> Target:
    """The jump host's Target; it is held to the same host-key policy as the hosts behind it."""
    return Target(
        address=bastion.host,
        port=bastion.port if bastion.port != DEFAULT_SSH_PORT else None,
        user=bastion.user or None,
        password=bastion.password or None,
        pk=bastion.pk or None,
        pk_password=bastion.pk_password or None,
        host_key_policy=host_key_policy,
    )


def target_from_host(host: Host, written: SSH | None = None) -> Target:
    """The Target for a Clusterfile host (ssh settings already merged by the model).

    `written` is the host's ssh as the Clusterfile wrote it (group over cluster, no defaults
    filled): with it, a user or port the file states explicitly wins over ~/.ssh/config even when
    it is root/22; without it, root/22 are taken for defaults and left to ~/.ssh/config."""
    ssh = host.ssh
    if written is not None:
        user, port = written.user or None, written.port or None
    else:
        user = _optional(ssh.user, DEFAULT_SSH_USER)
        port = ssh.port if ssh.port and ssh.port != DEFAULT_SSH_PORT else None
    return Target(
        address=host.ip,
        port=port,
        user=user,
        password=ssh.password or None,
        pk=ssh.pk or None,
        pk_password=ssh.pk_password or None,
        sudo_password=ssh.sudo_password or None,
        bastion=bastion_target(ssh.bastion, ssh.host_key_policy or "tofu")
        if ssh.bastion is not None
        else None,
        host_key_policy=ssh.host_key_policy or "tofu",
        host_key=ssh.host_key or None,
        env=dict(host.env),
        roles=tuple(host.roles),
    )


def targets_from_cluster(cluster: Cluster) -> list[Target]:
    """Every host of the cluster as a Target, in file order, with explicit values winning."""
    written = {}
    for group in cluster.host_groups:
        raw = group.ssh.merged_over(cluster.ssh)
        for ip in group.ips:
            written[ip] = raw
    return [target_from_host(h, written.get(h.ip)) for h in cluster.hosts]
