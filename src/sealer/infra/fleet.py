"""Fan-out over many hosts: routes each host to the SSH or local connector and runs commands or
copies on all of them in parallel, one Outcome per host (one failure never hides the others).
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from sealer.errors import SealerError
from sealer.infra import transfer
from sealer.infra.connector import Connector, Outcome, Result, TransferStats, host_error_of
from sealer.infra.host import Target
from sealer.infra.local import LocalConnector, is_local_address
from sealer.infra.ssh import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_HANDSHAKES, SSHConnector

T = TypeVar("T")

# Open files a run holds per host: its SSH socket and its log file; plus what the process needs
# besides (the state files, the interpreter's own, a local connector's pipes).
FILES_PER_HOST = 2
FILES_BASE = 64


class OpenFilesError(SealerError):
    """The process may not open enough files for every host of the run."""


def ensure_open_files(hosts: int) -> int:
    """Make room for `hosts` connections: raise the soft RLIMIT_NOFILE to the hard limit when the
    soft one is short (it is 1024 on many systems: ~500 hosts would die with EMFILE midway),
    and fail up front, naming the limits, when even the hard limit is short. Returns the limit."""
    need = FILES_BASE + FILES_PER_HOST * hosts
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return soft
    if hard == resource.RLIM_INFINITY or hard >= need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
        except (ValueError, OSError):
            # some kernels cap the soft limit below an "unlimited" hard one (fs.nr_open)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
                return need
            except (ValueError, OSError):
                pass
    raise OpenFilesError(
        f"{hosts} hosts need about {need} open files, but this process may open only "
        f"{soft} and cannot raise that past its hard limit {hard} (ulimit -Hn)",
        f"raise the hard limit (`ulimit -Hn {need}` as root, LimitNOFILE= for a service, or "
        "nofile in /etc/security/limits.conf), or run on fewer hosts at once (--roles/--ips)",
    )


class Fleet:
    """Every connection of one run. `async with Fleet(known_hosts=..., logdir=...) as fleet:`."""

    def __init__(
        self,
        *,
        known_hosts: str | os.PathLike[str] | None,
        logdir: str | os.PathLike[str] | None = None,
        max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        cluster: str | None = None,
        detect_local: bool = True,
        ssh_config: bool = True,
        trust_user_known_hosts: bool = True,
        keepalive_interval: float = 5.0,
        keepalive_count_max: int = 3,
        copy_batch_bytes: int = transfer.BATCH_BYTES,
    ) -> None:
        self.ssh = SSHConnector(
            known_hosts=known_hosts,
            logdir=logdir,
            max_handshakes=max_handshakes,
            connect_timeout=connect_timeout,
            cluster=cluster,
            ssh_config=ssh_config,
            trust_user_known_hosts=trust_user_known_hosts,
            keepalive_interval=keepalive_interval,
            keepalive_count_max=keepalive_count_max,
        )
        self.ssh.copy_batch_bytes = copy_batch_bytes
        self.local = LocalConnector(logdir=logdir)
        self.detect_local = detect_local
        self._is_local: dict[str, bool] = {}

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def connector_for(self, host: Target) -> Connector:
        """Local for this machine's own address reached directly; SSH otherwise."""
        if not self.detect_local or host.bastion is not None or (host.port not in (None, 22)):
            return self.ssh
        local = self._is_local.get(host.address)
        if local is None:
            local = self._is_local[host.address] = is_local_address(host.address)
        return self.local if local else self.ssh

    async def run(
        self,
        host: Target,
        cmd: str,
        *,
        sudo: bool = False,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        input: str | None = None,
    ) -> Result:
        return await self.connector_for(host).run(host, cmd, sudo=sudo, env=env, timeout=timeout, input=input)

    async def put(
        self, host: Target, src: str | os.PathLike[str], dst: str, *, sudo: bool = False
    ) -> TransferStats:
        return await self.connector_for(host).put(host, src, dst, sudo=sudo)

    async def get(
        self, host: Target, src: str, dst: str | os.PathLike[str], *, sudo: bool = False
    ) -> TransferStats:
        return await self.connector_for(host).get(host, src, dst, sudo=sudo)

    async def each(
        self,
        hosts: Iterable[Target],
        action: Callable[[Target], Awaitable[T]],
        on_done: Callable[[Outcome[T]], None] | None = None,
    ) -> list[Outcome[T]]:
        """Run action on every host in parallel; results in the hosts' order. on_done sees each
        host's outcome as soon as it is known (for live progress)."""
        targets = list(hosts)
        ensure_open_files(len(targets))

        async def one(host: Target) -> Outcome[T]:
            outcome: Outcome[T]
            try:
                outcome = Outcome(host.name, value=await action(host))
            except Exception as err:
                outcome = Outcome(host.name, error=host_error_of(err, host.name))
            if on_done is not None:
                on_done(outcome)
            return outcome

        return list(await asyncio.gather(*(one(h) for h in targets)))

    async def run_many(
        self,
        hosts: Sequence[Target],
        cmd: str,
        *,
        sudo: bool = False,
        env: Mapping[str, str] | None = None,
        host_env: bool = False,
        timeout: float | None = None,
        on_done: Callable[[Outcome[Result]], None] | None = None,
    ) -> list[Outcome[Result]]:
        """cmd on every host at once. host_env=True exports each host's Clusterfile env first."""

        async def action(host: Target) -> Result:
            merged = {**host.env, **(env or {})} if host_env else env
            return await self.run(host, cmd, sudo=sudo, env=merged, timeout=timeout)

        return await self.each(hosts, action, on_done)

    async def copy_many(
        self,
        hosts: Sequence[Target],
        src: str | os.PathLike[str],
        dst: str,
        *,
        sudo: bool = False,
        timeout: float | None = None,
        on_done: Callable[[Outcome[TransferStats]], None] | None = None,
    ) -> list[Outcome[TransferStats]]:
        """src to dst on every host; the local manifest is computed once for all of them."""
        # hashing a big tree takes seconds: keep the event loop (and other work on it) running
        tree = await asyncio.to_thread(transfer.local_tree, src, dst)

        async def action(host: Target) -> TransferStats:
            conn = self.connector_for(host)
            assert isinstance(conn, SSHConnector | LocalConnector)
            return await conn.put(host, src, dst, sudo=sudo, tree=tree, timeout=timeout)

        return await self.each(hosts, action, on_done)

    async def close(self) -> None:
        await asyncio.gather(self.ssh.close(), self.local.close())
