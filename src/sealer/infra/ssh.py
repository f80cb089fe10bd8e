"""The SSH connector (asyncssh): one connection per host per run, bounded handshakes, pinned
host keys, sudo with a password on stdin, bastions, per-host logs, tar-stream copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import getpass
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.config import SSHClientConfig
from asyncssh.public_key import load_default_keypairs

from sealer.errors import HostError, HostKeyError, SealerError
from sealer.infra import transfer
from sealer.infra.connector import Exec, ExecStdin, Result, TransferStats, logged_run
from sealer.infra.errors import (
    CommandTimeoutError,
    ConnectionLostError,
    ConnectionRefusedHostError,
    HostAuthError,
    HostUnreachableError,
    SudoError,
)
from sealer.infra.host import Target
from sealer.infra.hostlog import HostLogs
from sealer.infra.knownhosts import (
    HostIndex,
    KnownHostsFile,
    fingerprint,
    normalize_key,
    user_known_hosts,
)
from sealer.infra.shell import (
    ROOT,
    SudoMode,
    as_root,
    env_on_stdin,
    probe_sudo,
    sudo_preamble,
)

log = logging.getLogger(__name__)

# AES-GCM first: on small CPUs it is ~1.6x faster than asyncssh's default chacha20 (testbed.md).
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
DEFAULT_MAX_HANDSHAKES = 32
DEFAULT_CONNECT_TIMEOUT = 10.0
SUDO_PROBE_TIMEOUT = 30.0
PID_MARK = b"SEALER_PID="
MAX_SESSIONS = 8


@dataclass
class _HostKeyCheck:
    """Decides on a presented host key during the handshake, before any password is sent."""

    target: Target
    pinned: dict[str, str]  # normalized key -> where it is pinned
    presented: str | None = None
    to_record: str | None = None

    def validate(self, key: str) -> bool:
        self.presented = key
        if key in self.pinned:
            return True
        if not self.pinned and self.target.host_key_policy == "tofu":
            self.to_record = key
            return True
        return False


class _Client(asyncssh.SSHClient):
    def __init__(self, check: _HostKeyCheck) -> None:
        self._check = check

    def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
        text = key.export_public_key("openssh").decode()
        return self._check.validate(normalize_key(text))


@dataclass
class _Conn:
    target: Target
    conn: Any  # asyncssh.SSHClientConnection
    username: str
    sudo: SudoMode | None = None
    sudo_error: SealerError | None = None
    sudo_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # sshd's MaxSessions (default 10) caps concurrent channels per connection; beyond it a new
    # session is refused, so queue here instead
    sessions: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_SESSIONS))

    @property
    def is_root(self) -> bool:
        return self.username == "root"


@dataclass(frozen=True)
class Peer:
    """A host's SSH server as the operator reached it."""

    host_key: str  # OpenSSH public key line ("ssh-ed25519 AAAA..."), "" if the server showed none
    address: str  # the IP connected to (sshd matches authorized_keys from= against it)


def _stale(task: asyncio.Task[_Conn]) -> bool:
    """A finished connect that failed, or whose connection has closed since: connect again.
    (Callers share one in-flight connect; a failure is not remembered past it.)"""
    if not task.done():
        return False
    if task.cancelled() or task.exception() is not None:
        return True
    return bool(task.result().conn.is_closed())


def _conn_key(t: Target) -> tuple[object, ...]:
    # Everything that changes how we log in or become root: two Targets for the same address with
    # different credentials must not share a connection (or its cached sudo mode).
    bastion = _conn_key(t.bastion) if t.bastion is not None else None
    return (t.address, t.port, t.user, t.password, t.pk, t.pk_password, t.sudo_password, bastion)


class SSHConnector:
    """Connector over SSH. Use `async with SSHConnector(...) as c:`; connections open lazily."""

    def __init__(
        self,
        *,
        known_hosts: str | os.PathLike[str] | None,
        logdir: str | os.PathLike[str] | None = None,
        max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        keepalive_interval: float = 5.0,
        keepalive_count_max: int = 3,
        ssh_config: bool = True,
        trust_user_known_hosts: bool = True,
        cluster: str | None = None,
    ) -> None:
        self.known_hosts = KnownHostsFile(known_hosts) if known_hosts is not None else None
        self.logs = HostLogs(logdir)
        self.max_handshakes = max(1, max_handshakes)
        self.connect_timeout = connect_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self.ssh_config = ssh_config
        self.trust_user_known_hosts = trust_user_known_hosts
        self.cluster = cluster
        self.copy_batch_bytes = transfer.BATCH_BYTES
        self._handshakes: asyncio.Semaphore | None = None
        self._conns: dict[tuple[object, ...], asyncio.Task[_Conn]] = {}
        self._keys: dict[tuple[str, str | None], Any] = {}
        self._user_known: HostIndex | None = None
        self._pins: list[tuple[Target, str, asyncio.Future[bool]]] = []
        self._pin_task: asyncio.Task[None] | None = None
        self._default_key_tasks: dict[str, asyncio.Future[Any]] = {}
        self.handshakes_done = 0
        self.max_handshakes_seen = 0
        self._in_flight = 0

    async def __aenter__(self) -> SSHConnector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ connections

    def _semaphore(self) -> asyncio.Semaphore:
        if self._handshakes is None:
            self._handshakes = asyncio.Semaphore(self.max_handshakes)
        return self._handshakes

    async def _connection(self, target: Target) -> _Conn:
        key = _conn_key(target)
        task = self._conns.get(key)
        if task is None or _stale(task):
            task = asyncio.ensure_future(self._connect(target))
            self._conns[key] = task
        return await asyncio.shield(task)

    def _drop(self, target: Target) -> None:
        self._conns.pop(_conn_key(target), None)

    def _pinned(self, target: Target) -> dict[str, str]:
        pinned: dict[str, str] = {}
        if target.host_key:
            try:
                pinned[normalize_key(target.host_key)] = "the Clusterfile (ssh.hostKey)"
            except ValueError:
                raise HostKeyError(
                    target.name,
                    f"ssh.hostKey is not a public key: {target.host_key!r}",
                    "write it as in known_hosts: 'ssh-ed25519 AAAA...'",
                )
        if self.known_hosts is not None:
            for k in self.known_hosts.keys_for(target.address, target.port):
                pinned.setdefault(k, str(self.known_hosts.path))
        if self.trust_user_known_hosts:
            if self._user_known is None:  # read once per run, not once per host
                self._user_known = HostIndex(user_known_hosts())
            for k in self._user_known.keys_for(target.address, target.port):
                pinned.setdefault(k, "~/.ssh/known_hosts")
        return pinned

    def _client_key(self, path: str, passphrase: str | None, host: str) -> Any:
        cache_key = (path, passphrase)
        if cache_key not in self._keys:
            expanded = os.path.expanduser(path)
            try:
                self._keys[cache_key] = asyncssh.read_private_key(expanded, passphrase)
            except FileNotFoundError:
                raise HostAuthError(
                    host, f"private key {path} does not exist", "fix ssh.pk in the Clusterfile"
                )
            except OSError as err:
                raise HostAuthError(
                    host, f"cannot read private key {path}: {err.strerror}", "check the file's permissions"
                )
            except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as err:
                text = str(err)
                if "assphrase" in text and passphrase is None:
                    msg = f"private key {path} is encrypted and no passphrase was given"
                elif "ecrypt" in text or "assphrase" in text:
                    msg = f"cannot decrypt private key {path}: wrong passphrase"
                else:
                    msg = f"cannot load private key {path}: {text}"
                raise HostAuthError(host, msg, "set ssh.pkPasswd to the key's passphrase in the Clusterfile")
        return self._keys[cache_key]

    async def _default_keys(self, target: Target, passphrase: str) -> list[Any] | None:
        """The ~/.ssh keys asyncssh would decrypt for a host given ssh.pkPasswd but no ssh.pk,
        loaded once per run instead of once per host: decrypting a key costs ~120 ms of CPU
        (bcrypt KDF), 36 s for 300 hosts. None leaves it to asyncssh: ~/.ssh/config names an
        IdentityFile for this host, or we cannot tell."""
        if self.ssh_config and self._config_identity_files(target) != ():
            return None
        task = self._default_key_tasks.get(passphrase)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = asyncio.ensure_future(asyncio.to_thread(load_default_keypairs, passphrase))
            self._default_key_tasks[passphrase] = task
        return list(await asyncio.shield(task))

    def _config_identity_files(self, target: Target) -> tuple[str, ...] | None:
        # asyncssh reads ~/.ssh/config only (not /etc/ssh/ssh_config) unless given a config
        path = Path("~", ".ssh", "config").expanduser()
        if not os.access(path, os.R_OK):
            return ()
        try:
            config = SSHClientConfig.load(
                None, [path], False, False, False, getpass.getuser(),
                target.user or (), target.address, target.port or (),
            )
            files: Any = config.get("IdentityFile", ())
            return tuple(str(f) for f in files)
        except Exception:  # asyncssh's config reader is not public API: let asyncssh decide
            return None

    def _forget_hint(self, target: Target, sources: set[str] | None = None) -> str:
        where = str(self.known_hosts.path) if self.known_hosts is not None else "the known_hosts file"
        cmd = f"sealer hosts forget {target.address}"
        if self.cluster:
            cmd += f" --cluster {self.cluster}"
        steps = [f"`{cmd}` (or delete its line from {where})"]
        sources = sources or {where}
        if "~/.ssh/known_hosts" in sources:
            steps.append(f"`ssh-keygen -R {target.address}`")
        if any("Clusterfile" in src for src in sources):
            steps.append("update ssh.hostKey in the Clusterfile")
        return (
            "if the host was reinstalled on purpose, verify the new fingerprint out of band (on its "
            "console: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then "
            + ", ".join(steps)
            + ", and connect again"
        )

    async def _connect(self, target: Target) -> _Conn:
        tunnel: Any = ()
        if target.bastion is not None:
            try:
                tunnel = (await self._connection(target.bastion)).conn
            except HostError as err:
                raise type(err)(target.name, f"via bastion {err.message}", err.hint) from err
        check = _HostKeyCheck(target, self._pinned(target))
        trusted = []
        for k in check.pinned:
            # a key type this asyncssh cannot load still counts as pinned: a mismatch is refused
            with contextlib.suppress(asyncssh.KeyImportError, ValueError):
                trusted.append(asyncssh.import_public_key(k))
        options: dict[str, Any] = {
            "known_hosts": (trusted, [], []),
            "encryption_algs": list(CIPHERS),
            "connect_timeout": self.connect_timeout,
            "keepalive_interval": self.keepalive_interval,
            "keepalive_count_max": self.keepalive_count_max,
            "tunnel": tunnel,
        }
        if not self.ssh_config:
            options["config"] = None
        if target.port:
            options["port"] = target.port
        if target.user:
            options["username"] = target.user
        if target.password:
            options["password"] = target.password
        if target.pk:
            options["client_keys"] = [self._client_key(target.pk, target.pk_password, target.name)]
        elif target.pk_password:
            options["passphrase"] = target.pk_password
            try:
                keys = await self._default_keys(target, target.pk_password)
            except Exception as err:
                raise self._connect_error(target, check, err) from None
            if keys is not None:
                options["client_keys"] = keys
        async with self._semaphore():
            self._in_flight += 1
            self.max_handshakes_seen = max(self.max_handshakes_seen, self._in_flight)
            try:
                conn, _ = await asyncssh.create_connection(lambda: _Client(check), target.address, **options)
            except BaseException as err:
                raise self._connect_error(target, check, err) from None
            finally:
                self._in_flight -= 1
                self.handshakes_done += 1
        try:
            recorded = check.to_record is not None and await self._pin(target, check.to_record)
        except BaseException:
            conn.close()  # a key we could not pin is a key we must not use
            raise
        if recorded and check.to_record is not None:
            log.info("%s: recorded host key %s", target.name, fingerprint(check.to_record))
        username = conn.get_extra_info("username") or target.login_user
        return _Conn(target, conn, str(username))

    async def _pin(self, target: Target, key: str) -> bool:
        """Record a first-contact host key; False if it was pinned already. Handshakes that end
        while a write is pending share the next one (one lock and one append per batch, not per
        host: on a network home directory every flock is a round trip)."""
        if self.known_hosts is None:
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pins.append((target, key, future))
        if self._pin_task is None or self._pin_task.done():
            self._pin_task = asyncio.ensure_future(self._write_pins(self.known_hosts))
        return await future

    async def _write_pins(self, store: KnownHostsFile) -> None:
        await asyncio.sleep(0)  # let handshakes that finish in this loop iteration join the batch
        while self._pins:
            batch, self._pins = self._pins, []
            try:
                added = store.record_many([(t.address, t.port, key) for t, key, _ in batch])
            except Exception as err:  # any failure must reach every waiting handshake
                message = err.message if isinstance(err, SealerError) else f"cannot pin its host key: {err}"
                hint = err.hint if isinstance(err, SealerError) else None
                for t, _, future in batch:
                    if not future.done():  # each host fails with its own error, naming it
                        future.set_exception(HostError(t.name, message, hint))
                continue
            for (_, _, future), ok in zip(batch, added, strict=True):
                if not future.done():
                    future.set_result(ok)

    def _connect_error(self, target: Target, check: _HostKeyCheck, err: BaseException) -> BaseException:
        name = target.name
        port = target.port or 22
        if isinstance(err, SealerError):
            return err
        if isinstance(err, asyncssh.HostKeyNotVerifiable):
            presented = check.presented
            if presented is not None and check.pinned:
                old = ", ".join(f"{fingerprint(k)} (pinned in {src})" for k, src in check.pinned.items())
                return HostKeyError(
                    name,
                    f"host key changed: expected {old}, but the host presented {fingerprint(presented)}. "
                    "Someone may be intercepting the connection, or the host was reinstalled",
                    self._forget_hint(target, set(check.pinned.values())),
                )
            if presented is not None:
                return HostKeyError(
                    name,
                    f"host key {fingerprint(presented)} is not pinned and ssh.hostKeyPolicy is strict",
                    "add the host's key to ssh.hostKey or the cluster known_hosts after verifying it, "
                    "or use hostKeyPolicy: tofu",
                )
            return HostKeyError(name, f"host key not accepted: {err.reason}", self._forget_hint(target))
        if isinstance(err, asyncssh.PermissionDenied):
            user = target.user or "(from ~/.ssh/config or root)"
            how = []
            if target.pk:
                how.append(f"key {target.pk}")
            if target.password:
                how.append("password")
            if not how:
                how.append("default keys/agent")
            return HostAuthError(
                name,
                f"authentication failed for user {user} using {' and '.join(how)}",
                "check ssh.user, ssh.passwd and ssh.pk in the Clusterfile, and that the key is in the "
                "user's ~/.ssh/authorized_keys on the host",
            )
        if isinstance(err, asyncssh.KeyImportError):
            return HostAuthError(
                name, f"cannot load a private key: {err}", "set ssh.pkPasswd to the key's passphrase"
            )
        if isinstance(err, asyncssh.KeyEncryptionError):
            # ssh.pkPasswd given without ssh.pk: it is tried on the keys in ~/.ssh
            return HostAuthError(
                name,
                f"cannot decrypt the keys in ~/.ssh with ssh.pkPasswd: {err}",
                "fix ssh.pkPasswd, or set ssh.pk to the private key it belongs to",
            )
        if isinstance(err, (asyncio.TimeoutError, TimeoutError)):
            return HostUnreachableError(
                name,
                f"no SSH answer on port {port} within {self.connect_timeout:g}s (host down or unreachable)",
                "check that the host is up, the address and port are right, and no firewall drops SSH",
            )
        if isinstance(err, ConnectionRefusedError):
            return ConnectionRefusedHostError(
                name,
                f"connection refused on port {port}",
                "is sshd running there and listening on that port?",
            )
        if isinstance(err, OSError) and err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN):
            return HostUnreachableError(
                name, f"unreachable: {err.strerror}", "check the address and the network route to it"
            )
        if isinstance(err, OSError):
            return HostUnreachableError(name, f"cannot connect: {err.strerror or err}", None)
        if isinstance(err, asyncssh.Error):
            return ConnectionLostError(
                name, f"SSH handshake failed: {err.reason}", "check sshd on the host (journalctl -u ssh)"
            )
        return err

    # ------------------------------------------------------------ sudo

    async def _sudo_mode(self, c: _Conn) -> SudoMode:
        if c.is_root:
            return ROOT
        async with c.sudo_lock:
            if c.sudo_error is not None:
                raise c.sudo_error
            if c.sudo is not None:
                return c.sudo

            async def probe(cmd: str, stdin: bytes) -> tuple[int, str]:
                code, _, stderr = await self._exec(c, cmd, stdin, SUDO_PROBE_TIMEOUT, "sudo")
                return code, stderr

            password = c.target.sudo_password or c.target.password
            try:
                c.sudo = await probe_sudo(c.target.name, c.username, password, probe)
            except SudoError as exc:
                c.sudo_error = exc
                raise
            return c.sudo

    async def _prepare(self, c: _Conn, cmd: str, sudo: bool) -> tuple[str, bytes]:
        """The command line and the stdin preamble (the sudo password line, if any)."""
        if not sudo:
            return cmd, b""
        mode = await self._sudo_mode(c)
        return as_root(cmd, mode), sudo_preamble(mode, c.target.sudo_password or c.target.password)

    # ------------------------------------------------------------ commands

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
        c = await self._connection(host)
        line, env_block = env_on_stdin(cmd, env)
        line, preamble = await self._prepare(c, line, sudo)
        stdin = preamble + env_block + (input.encode() if input else b"")
        return await logged_run(
            self.logs.for_host(host.name),
            host.name,
            cmd,
            sudo=sudo,
            env=env,
            run=lambda sink: self._exec(c, line, stdin, timeout, cmd, sink, kill_as_root=sudo),
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
        on_stdout: Callable[[bytes], None] | None = None,
    ) -> Exec:
        """Low level (see `StreamingConnector.exec`): one command on the host's shared
        connection, `stdin` streamed to it after sudo's password line (when sudo needs one),
        raw output back; not host-logged. Bulk tools (copies, the fan-out) build on it.
        With `on_stdout`, stdout goes to it chunk by chunk as it arrives instead of into the
        result: a long-lived command's output is read while it runs (the fan-out's progress)."""
        c = await self._connection(host)
        line, preamble = await self._prepare(c, cmd, sudo)
        data = preamble + stdin if isinstance(stdin, bytes) else transfer.with_preamble(preamble, stdin)
        code, out, err = await self._exec(
            c, line, data, timeout, shown or cmd, kill_as_root=sudo, on_stdout=on_stdout
        )
        return Exec(code, out, err)

    async def peer(self, host: Target) -> Peer:
        """The host's SSH server as this run sees it (connecting if need be): the host key it
        presented (already checked against the pinned keys) and the IP address reached."""
        c = await self._connection(host)
        key = c.conn.get_server_host_key()
        host_key = key.export_public_key("openssh").decode().strip() if key is not None else ""
        # through a bastion the socket's peer is the bastion, so the target's address is all we know
        peername = None if host.bastion is not None else c.conn.get_extra_info("peername")
        return Peer(host_key, str(peername[0]) if peername else host.address)

    async def _exec(
        self,
        c: _Conn,
        line: str,
        stdin: bytes | AsyncIterator[bytes],
        timeout: float | None,
        shown: str,
        sink: Any = None,
        kill_as_root: bool = False,
        on_stdout: Callable[[bytes], None] | None = None,
    ) -> tuple[int, bytes, str]:
        """Run one command line on an open connection; stdout as bytes, stderr as text."""
        name = c.target.name
        out: list[bytes] = []
        err: list[bytes] = []

        pid: list[int] = []

        async def pump(
            reader: Any, into: list[bytes], first_line_is_pid: bool = False,
            tap: Callable[[bytes], None] | None = None,
        ) -> None:
            head = b""
            while chunk := await reader.read(65536):
                if first_line_is_pid and not pid:
                    head += chunk
                    if b"\n" not in head:
                        continue
                    mark, _, chunk = head.partition(b"\n")
                    pid.append(int(mark.removeprefix(PID_MARK)) if mark.startswith(PID_MARK) else 0)
                    if not chunk:
                        continue
                if tap is not None:
                    tap(chunk)
                    continue
                into.append(chunk)
                if sink is not None:
                    sink(chunk.decode("utf-8", "replace"))
            if head and not pid:
                into.append(head)

        async def feed(writer: Any, preamble: bytes) -> None:
            # Errors of the source (a local file) propagate; errors writing mean the remote side
            # ended early, and its exit status says why.
            try:
                if isinstance(stdin, bytes):
                    if stdin:
                        writer.write(stdin)
                else:
                    async for chunk in stdin:
                        writer.write(chunk)
                        await writer.drain()
            except (BrokenPipeError, ConnectionError, asyncssh.Error):
                return
            finally:
                try:
                    writer.write_eof()
                except (BrokenPipeError, ConnectionError, asyncssh.Error, OSError):
                    pass

        async def open_session() -> Any:
            # sshd starts the command as a session leader; its pid (first stderr line, stripped)
            # lets a timeout end the whole process group, which closing the channel does not.
            command = f"echo {PID_MARK.decode()}$$ >&2; {line}"
            for attempt in range(20):
                try:
                    return await c.conn.create_process(command, encoding=None)
                except asyncssh.ChannelOpenError:
                    # refused while the connection lives: a server MaxSessions below ours; wait
                    # for a session of this connection to end and try again
                    if c.conn.is_closed() or attempt == 19:
                        raise
                    await asyncio.sleep(0.05 * (attempt + 1))
            raise AssertionError("unreachable")

        async def whole() -> Any:
            return await run_session(await open_session())

        async def run_session(proc: Any) -> Any:
            try:
                await asyncio.gather(
                    pump(proc.stdout, out, tap=on_stdout), pump(proc.stderr, err, True), feed(proc.stdin, b"")
                )
                await proc.wait_closed()
            finally:
                proc.close()
            return proc

        try:
            async with c.sessions:  # queued sessions do not spend their timeout waiting
                proc = await asyncio.wait_for(whole(), timeout)
        except TimeoutError:
            if c.conn.is_closed():
                self._drop(c.target)
                raise ConnectionLostError(
                    name,
                    f"connection lost while running `{shown}`",
                    "check the host and the network path to it",
                )
            if pid and pid[0] > 1:
                await self._kill_group(c, pid[0], as_root=kill_as_root)
            raise CommandTimeoutError(
                name,
                f"`{shown}` did not finish within {timeout:g}s (stopped it on the host)",
                "raise the timeout, or look at the host's log for where it hung",
            ) from None
        except (asyncssh.Error, OSError) as exc:
            # ChannelOpenError, ConnectionLost, DisconnectError, resets: the connection is gone
            self._drop(c.target)
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise ConnectionLostError(
                name,
                f"connection lost while running `{shown}`: {reason}",
                "check that the host is up and reachable, then run again",
            ) from None
        code = proc.exit_status
        stderr = b"".join(err).decode("utf-8", "replace")
        if code is None or code < 0:
            signal = proc.exit_signal
            if signal is not None:
                return 128 + 9, b"".join(out), stderr + f"\nkilled by signal {signal[0]}"
            self._drop(c.target)
            raise ConnectionLostError(
                name, f"connection lost while running `{shown}`", "check the host and the network path to it"
            )
        return int(code), b"".join(out), stderr

    async def _kill_group(self, c: _Conn, pid: int, *, as_root: bool) -> None:
        """Best effort: SIGKILL the process group of a timed-out command (bounded, errors ignored)."""
        cmd = f"kill -KILL -{pid} 2>/dev/null || kill -KILL {pid} 2>/dev/null; true"  # dash: no "--"
        with contextlib.suppress(Exception):
            line, preamble = await self._prepare(c, cmd, as_root)
            proc = await c.conn.create_process(line, encoding=None)
            proc.stdin.write(preamble)
            proc.stdin.write_eof()
            await asyncio.wait_for(proc.wait_closed(), 5)
            proc.close()

    # ------------------------------------------------------------ files

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
        """Copy a local file or directory to the host (see `transfer.local_tree` for the layout)."""
        tree = tree or transfer.local_tree(src, dst)
        await self._connection(host)  # connection errors before any work
        execb = self._execb(host, sudo, timeout)
        hlog = self.logs.for_host(host.name)
        return await transfer.upload(
            host.name, execb, tree, hlog, sudo=sudo, shown=str(src), batch_bytes=self.copy_batch_bytes
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
        """Fetch a remote file or directory to local path dst."""
        await self._connection(host)
        start = time.monotonic()
        count, size = await transfer.download(host.name, self._execb(host, sudo, timeout), src, dst)
        return TransferStats(host.name, count, 0, size, time.monotonic() - start)

    async def close(self) -> None:
        tasks = list(self._conns.values())
        self._conns.clear()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is None:
                task.result().conn.close()
            elif not task.done():
                task.cancel()
        # all at once and bounded: a host that vanished must not hold up the end of a run
        waits = [
            asyncio.ensure_future(task.result().conn.wait_closed())
            for task in tasks
            if task.done() and not task.cancelled() and task.exception() is None
        ]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=5)
            for w in pending:
                w.cancel()
        self.logs.close()
