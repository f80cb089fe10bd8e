"""The Connector contract (DESIGN §3): run a command, put and get files on one host.

`Result` is what a finished command gives back; `Outcome` is one host's share of a fan-out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from sealer.errors import HostError, SealerError
from sealer.infra.errors import RemoteCommandError
from sealer.infra.host import Target


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


def host_error_of(err: BaseException, host: str) -> SealerError:
    """Any failure as a SealerError naming the host (unexpected ones keep their text)."""
    if isinstance(err, SealerError):
        return err
    return HostError(host, f"unexpected failure: {type(err).__name__}: {err}")
