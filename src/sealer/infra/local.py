"""The local connector: commands addressed to the operator machine's own IP run here, through
the same interface (and the same copy scripts) as SSH, without a login.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import ipaddress
import os
import socket
import time
from collections.abc import AsyncIterator, Mapping

from sealer.infra import transfer
from sealer.infra.connector import Exec, ExecStdin, Result, TransferStats, logged_run
from sealer.infra.errors import CommandTimeoutError, SudoError
from sealer.infra.host import Target
from sealer.infra.hostlog import HostLogs
from sealer.infra.shell import (
    ROOT,
    SudoMode,
    as_root,
    env_on_stdin,
    probe_sudo,
    sudo_preamble,
)


def is_local_address(address: str) -> bool:
    """True if address belongs to this machine: loopback, or bindable here (an interface's IP)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


class LocalConnector:
    """Connector for this machine. Runs `sh -c` as the current user; sudo as SSH does."""

    def __init__(self, *, logdir: str | os.PathLike[str] | None = None) -> None:
        self.logs = HostLogs(logdir)
        self._sudo: SudoMode | None = None
        self._sudo_error: SudoError | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> LocalConnector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _sudo_mode(self, host: Target) -> SudoMode:
        if os.geteuid() == 0:
            return ROOT
        async with self._lock:
            if self._sudo_error is not None:
                raise self._sudo_error
            if self._sudo is not None:
                return self._sudo

            async def probe(cmd: str, stdin: bytes) -> tuple[int, str]:
                code, _, err = await self._exec(cmd, stdin, None, host, "sudo")
                return code, err

            password = host.sudo_password or host.password
            try:
                self._sudo = await probe_sudo(host.name, getpass.getuser(), password, probe)
            except SudoError as exc:
                self._sudo_error = exc
                raise
            return self._sudo

    async def _prepare(self, host: Target, cmd: str, sudo: bool) -> tuple[str, bytes]:
        if not sudo:
            return cmd, b""
        mode = await self._sudo_mode(host)
        return as_root(cmd, mode), sudo_preamble(mode, host.sudo_password or host.password)

    async def _exec(
        self,
        line: str,
        stdin: bytes | AsyncIterator[bytes],
        timeout: float | None,
        host: Target,
        shown: str,
        sink: object = None,
    ) -> tuple[int, bytes, str]:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            line,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        out: list[bytes] = []
        err: list[bytes] = []

        async def pump(reader: asyncio.StreamReader | None, into: list[bytes]) -> None:
            assert reader is not None
            while chunk := await reader.read(65536):
                into.append(chunk)
                if callable(sink):
                    sink(chunk.decode("utf-8", "replace"))

        async def feed(writer: asyncio.StreamWriter | None) -> None:
            assert writer is not None
            try:
                if isinstance(stdin, bytes):
                    writer.write(stdin)
                    await writer.drain()
                else:
                    async for chunk in stdin:
                        writer.write(chunk)
                        await writer.drain()
            except (BrokenPipeError, ConnectionResetError):
                return
            finally:
                writer.close()

        async def whole() -> int:
            await asyncio.gather(pump(proc.stdout, out), pump(proc.stderr, err), feed(proc.stdin))
            return await proc.wait()

        try:
            code = await asyncio.wait_for(whole(), timeout)
        except TimeoutError:
            # the command's whole process group started with it; end it so nothing lingers
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
            raise CommandTimeoutError(
                host.name,
                f"`{shown}` did not finish within {timeout:g}s",
                "raise the timeout, or look at the host's log",
            ) from None
        except BaseException:
            # e.g. a local file vanished mid-copy: the command saw EOF and fails on its own
            # (no completion mark); end it anyway so no child outlives this call
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            await asyncio.shield(proc.wait())
            raise
        return code, b"".join(out), b"".join(err).decode("utf-8", "replace")

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
        line, env_block = env_on_stdin(cmd, env)
        line, preamble = await self._prepare(host, line, sudo)
        data = preamble + env_block + (input.encode() if input else b"")
        return await logged_run(
            self.logs.for_host(host.name),
            host.name,
            cmd,
            sudo=sudo,
            env=env,
            run=lambda sink: self._exec(line, data, timeout, host, cmd, sink),
        )

    async def exec(
        self,
        host: Target,
        cmd: str,
        stdin: ExecStdin = b"",
        *,
        sudo: bool = False,
        timeout: float | None = None,
        shown: str | None = None,
    ) -> Exec:
        """Low level (see `StreamingConnector.exec`): `stdin` streamed to the command after
        sudo's password line (when sudo needs one), raw output back; not host-logged."""
        line, preamble = await self._prepare(host, cmd, sudo)
        data = preamble + stdin if isinstance(stdin, bytes) else transfer.with_preamble(preamble, stdin)
        return Exec(*await self._exec(line, data, timeout, host, shown or cmd))

    def _execb(self, host: Target, sudo: bool, timeout: float | None) -> transfer.ExecBytes:
        async def execb(script: str, stdin: transfer.Stdin) -> tuple[int | None, bytes, str]:
            return await self.exec(host, script, b"" if stdin is None else stdin, sudo=sudo,
                                   timeout=timeout, shown="copy")

        return execb

    async def put(
        self,
        host: Target,
        src: str | os.PathLike[str],
        dst: str,
        *,
        sudo: bool = False,
        tree: transfer.LocalTree | None = None,
        timeout: float | None = None,
    ) -> TransferStats:
        tree = tree or transfer.local_tree(src, dst)
        hlog = self.logs.for_host(host.name)
        return await transfer.upload(
            host.name, self._execb(host, sudo, timeout), tree, hlog, sudo=sudo, shown=str(src)
        )

    async def get(
        self,
        host: Target,
        src: str,
        dst: str | os.PathLike[str],
        *,
        sudo: bool = False,
        timeout: float | None = None,
    ) -> TransferStats:
        start = time.monotonic()
        count, size = await transfer.download(host.name, self._execb(host, sudo, timeout), src, dst)
        return TransferStats(host.name, count, 0, size, time.monotonic() - start)

    async def close(self) -> None:
        self.logs.close()
