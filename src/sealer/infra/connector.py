"""The Connector contract (DESIGN §3): run a command, put and get files on one host.

`Result` is what a finished command gives back; `Outcome` is one host's share of a fan-out.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, NamedTuple, Protocol, TypeVar

from sealer.errors import HostError, SealerError
from sealer.infra.errors import RemoteCommandError
from sealer.infra.host import Target
from sealer.infra.hostlog import HostLog


@dataclass(frozen=True)
class Result:
    """A finished command: its exit code and output. A non-zero exit is data, not an exception."""

    host: str
    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> Result:
        """Raise RemoteCommandError naming host, command and the end of stderr if it failed."""
        if self.ok:
            return self
        tail = (self.stderr.strip() or self.stdout.strip()).splitlines()[-3:]
        detail = ("; ".join(tail)) if tail else "no output"
        raise RemoteCommandError(
            self.host,
            f"`{self.command}` exited {self.exit_code}: {detail}",
            "see the host's log for the full output",
            exit_code=self.exit_code,
        )


@dataclass(frozen=True)
class TransferStats:
    """What a copy did on one host."""

    host: str
    files_sent: int
    files_skipped: int
    bytes_sent: int
    duration: float


T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """One host's share of a fan-out: a value, or the error that host met."""

    host: str
    value: T | None = None
    error: SealerError | None = None

    @property
    def ok(self) -> bool:
        if self.error is not None:
            return False
        return not (isinstance(self.value, Result) and not self.value.ok)


class Connector(Protocol):
    """Reach hosts. One connection per host, reused; `close` ends them all."""

    async def run(
        self,
        host: Target,
        cmd: str,
        *,
        sudo: bool = False,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        input: str | None = None,
    ) -> Result: ...

    async def put(
        self, host: Target, src: str | os.PathLike[str], dst: str, *, sudo: bool = False
    ) -> TransferStats: ...

    async def get(
        self, host: Target, src: str, dst: str | os.PathLike[str], *, sudo: bool = False
    ) -> TransferStats: ...

    async def close(self) -> None: ...


class Exec(NamedTuple):
    """What a low-level `exec` gives back: the exit code and the raw output (stdout as bytes,
    which may be binary; stderr as text)."""

    exit_code: int
    stdout: bytes
    stderr: str


ExecStdin = bytes | AsyncIterator[bytes]
"""What `exec` feeds the command: bytes, or chunks streamed as they come (flow-controlled)."""


class StreamingConnector(Connector, Protocol):
    """A Connector with the low-level primitive that bulk tools (transfer, fan-out) build on."""

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
        """Run one shell command line with `stdin` streamed to it and return its raw result.

        With sudo, the command runs as root (`sudo ... sh -c`) and sudo's password line, when
        the host needs one, goes on stdin ahead of the data: `stdin` reaches the command
        unchanged. Not written to the host log (the data can be bulk or binary; `shown` names
        the command in errors instead), no env. A non-zero exit is data; a lost connection or
        a timeout (the command's process group is killed) raise a HostError, as `run` does."""
        ...


def host_error_of(err: BaseException, host: str) -> SealerError:
    """Any failure as a SealerError naming the host (unexpected ones keep their text)."""
    if isinstance(err, SealerError):
        return err
    return HostError(host, f"unexpected failure: {type(err).__name__}: {err}")


RunWithSink = Callable[[Callable[[str], None]], Awaitable[tuple[int, bytes, str]]]
"""Run one prepared command, passing its output text to the sink as it arrives;
(exit code, stdout bytes, stderr text)."""


async def logged_run(
    hlog: HostLog, host: str, cmd: str, *, sudo: bool, env: Mapping[str, str] | None, run: RunWithSink
) -> Result:
    """Run a command through `run` with its start, output and end (or failure) in the host's log;
    the log names the variables of env, never their values."""
    hlog.begin(cmd, sudo=sudo, env_names=sorted(env or {}))
    start = time.monotonic()
    try:
        code, out, err = await run(hlog.write)
    except SealerError as exc:
        hlog.end(None, time.monotonic() - start, f"failed: {exc.message}")
        raise
    duration = time.monotonic() - start
    hlog.end(code, duration)
    return Result(host, cmd, code, out.decode("utf-8", "replace"), err, duration)
