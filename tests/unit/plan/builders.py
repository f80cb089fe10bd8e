"""Small constructors for Cluster objects in planner tests (the model's types, built directly)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sealer.model.cluster import Cluster, HostAlias, HostGroup, Taint

IMAGE = "docker.io/sealerio/kubernetes:v1.22.15"


def group(
    ips: Sequence[str],
    roles: Sequence[str] = ("node",),
    *,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[Taint] = (),
    env: Mapping[str, str] | None = None,
) -> HostGroup:
    return HostGroup(
        ips=tuple(ips), roles=tuple(roles), labels=dict(labels or {}), taints=tuple(taints),
        env=dict(env or {}),
    )


def cluster(
    masters: Sequence[str] = ("10.0.0.1",),
    workers: Sequence[str] = (),
    *,
    name: str = "demo",
    image: str | None = IMAGE,
    groups: Sequence[HostGroup] | None = None,
    env: Mapping[str, str] | None = None,
    host_aliases: Sequence[HostAlias] = (),
) -> Cluster:
    if groups is None:
        groups = [group(masters, ("master",))]
        if workers:
            groups.append(group(workers, ("node",)))
    return Cluster(
        name=name, image=image, host_groups=tuple(groups), env=dict(env or {}),
        host_aliases=tuple(host_aliases),
    )
