"""Plugin hooks (sealer v0.9 semantics, reference §8): SHELL plugins from the image's plugins/ and
the Clusterfile, run per phase in name order, host by host, as `cd <rootfs> && <data>` with the
host's env. Master0 phases run on master0; host phases on hosts whose roles match the scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sealer.errors import HostError
from sealer.infra.fleet import Fleet
from sealer.infra.host import Target
from sealer.infra.shell import quote_path
from sealer.model.cluster import Host, PluginDoc

MASTER0_PHASES = frozenset(
    {
        "pre-install",
        "post-install",
        "pre-scaleup",
        "post-scaleup",
        "pre-uninstall",
        "post-uninstall",
        "upgrade",
        "rollback",
    }
)
HOST_PHASES = frozenset(
    {"pre-init-host", "post-init-host", "pre-clean-host", "post-clean-host", "upgrade-host"}
)


def plugins_for(phase: str, plugins: Iterable[PluginDoc]) -> list[PluginDoc]:
    """The SHELL plugins of one phase, in alphabetical order of name (as sealer runs them)."""
    return sorted((p for p in plugins if phase in p.actions and p.type == "SHELL"), key=lambda p: p.name)


def in_scope(plugin: PluginDoc, host: Host) -> bool:
    """Host phases: the host has one of the scope's roles (an empty scope selects no host)."""
    return any(role in host.roles for role in plugin.scope)


def hosts_for(phase: str, plugin: PluginDoc, hosts: Sequence[Host], master0: Host) -> list[Host]:
    if phase in MASTER0_PHASES:
        return [master0]
    return [h for h in hosts if in_scope(plugin, h)]


async def run_phase(
    fleet: Fleet,
    phase: str,
    plugins: Iterable[PluginDoc],
    hosts: Sequence[Host],
    master0: Host,
    targets: dict[str, Target],
    rootfs: str,
) -> int:
    """Run every plugin of `phase` on its hosts; the first failure stops the operation, naming the
    plugin and host. Returns how many hook runs happened."""
    runs = 0
    for plugin in plugins_for(phase, plugins):
        for host in hosts_for(phase, plugin, hosts, master0):
            target = targets[host.ip]
            cmd = f"cd {quote_path(rootfs)} && {plugin.data}"
            result = await fleet.run(target, cmd, sudo=True, env=dict(host.env), timeout=600)
            runs += 1
            if not result.ok:
                tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
                raise HostError(
                    host.ip,
                    f"plugin {plugin.name} ({phase}) exited {result.exit_code}: "
                    + ("; ".join(tail) or "no output"),
                    "fix the plugin (Clusterfile or the image's plugins/) and run the same command again",
                )
    return runs
