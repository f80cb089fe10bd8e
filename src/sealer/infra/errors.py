"""Host-level failures of the infra layer, each naming the host and the cause.

All derive from `sealer.errors.HostError`, so callers may catch that one class.
"""

from __future__ import annotations

from sealer.errors import HostError, HostKeyError

__all__ = [
    "CommandTimeoutError",
    "ConnectionLostError",
    "ConnectionRefusedHostError",
    "DiskFullError",
    "HostAuthError",
    "HostKeyError",
    "HostUnreachableError",
    "RemoteCommandError",
    "SudoError",
    "TransferError",
]


class HostUnreachableError(HostError):
    """No answer from the host within the connect timeout (down, firewalled, wrong address)."""


class ConnectionRefusedHostError(HostError):
    """The host answered but nothing listens on the SSH port."""


class HostAuthError(HostError):
    """SSH authentication failed: bad password, key not accepted, or a key that cannot be decrypted."""


class SudoError(HostError):
    """sudo refused: wrong sudo password, none given, or the user may not use sudo."""


class CommandTimeoutError(HostError):
    """A command did not finish within its timeout."""


class ConnectionLostError(HostError):
    """An established connection broke (link cut, host stopped, sshd killed)."""


class RemoteCommandError(HostError):
    """A command exited non-zero where success was required."""

    def __init__(
        self, host: str, message: str, hint: str | None = None, exit_code: int | None = None
    ) -> None:
        super().__init__(host, message, hint)
        self.exit_code = exit_code


class TransferError(HostError):
    """A file copy to or from a host failed."""


class DiskFullError(TransferError):
    """The target ran out of space (ENOSPC) while receiving files."""
