"""Building remote shell command lines safely: env passed on stdin, sudo wrapping, sudo diagnosis.

Pure functions; every value that reaches a shell goes through `shlex.quote`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from sealer.errors import SealerError
from sealer.infra.errors import SudoError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EnvNameError(SealerError):
    """An environment variable name a shell cannot export."""


class EnvValueError(SealerError):
    """An environment variable value no process environment can hold."""


# Env values never go on a command line: a command line is world-readable (`ps`,
# /proc/<pid>/cmdline) while the command runs, and env often carries tokens and passwords. The
# values go on stdin instead, one `NAME ESCAPED` line each and an empty line, ahead of the
# command's own input. This prelude reads them with the shell's `read` builtin (which takes
# a pipe byte by byte, so the command's input after the block stays untouched) and decodes
# them with the `printf` builtin (no process is started, so no argv or environ ever holds a
# value before the command's own processes). Values are printf formats made only of plain
# characters, `\ooo` octal escapes and `%%`.
ENV_PRELUDE = (
    'while IFS= read -r __sealer_kv && [ -n "$__sealer_kv" ]; do '
    '__sealer_v=$(printf "${__sealer_kv#* }"; printf x); '
    'export "${__sealer_kv%% *}=${__sealer_v%x}"; '
    "done; unset __sealer_kv __sealer_v; "
)
_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./:,+=@")


def _printf_format(name: str, value: str) -> str:
    if "\0" in value:
        raise EnvValueError(
            f"environment variable {name} contains a NUL character",
            "a process environment cannot hold NUL; remove it from the value",
        )
    out = []
    for b in value.encode("utf-8", "surrogateescape"):
        if b in _PLAIN:
            out.append(chr(b))
        elif b == ord("%"):
            out.append("%%")
        else:
            out.append(f"\\{b:03o}")
    return "".join(out)


def env_on_stdin(cmd: str, env: Mapping[str, str] | None) -> tuple[str, bytes]:
    """(command line, stdin block): the line reads env from stdin, then runs cmd with those
    variables exported; put the block on stdin first (after sudo's password line, if any),
    then the command's own input. Names are validated; values never reach a command line."""
    if not env:
        return cmd, b""
    lines = []
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise EnvNameError(
                f"environment variable name {name!r} is not a valid shell name",
                "use letters, digits and underscores, not starting with a digit",
            )
        lines.append(f"{name} {_printf_format(name, str(value))}\n")
    return ENV_PRELUDE + cmd, ("".join(lines) + "\n").encode("ascii")


@dataclass(frozen=True)
class SudoMode:
    """How a non-root login becomes root: `nopasswd` (sudo -n) or `password` (sudo -S from stdin)."""

    kind: str  # "root" | "nopasswd" | "password"


ROOT = SudoMode("root")
NOPASSWD = SudoMode("nopasswd")
PASSWORD = SudoMode("password")

# -k ignores cached credentials so sudo always reads the password line we send: a cached
# timestamp would otherwise leave the password in the command's own stdin.
SUDO_PASSWORD_PREFIX = "sudo -k -S -p '' -- "
SUDO_NOPASSWD_PREFIX = "sudo -n -- "


def as_root(cmd: str, mode: SudoMode) -> str:
    """Wrap a shell command so it runs as root; the command is one quoted `sh -c` argument."""
    if mode.kind == "root":
        return cmd
    prefix = SUDO_PASSWORD_PREFIX if mode.kind == "password" else SUDO_NOPASSWD_PREFIX
    return prefix + "sh -c " + shlex.quote(cmd)


# The probes that decide the SudoMode of a connection, run once per connection.
SUDO_PROBE_NOPASSWD = "sudo -k -n true"
SUDO_PROBE_PASSWORD = "sudo -k -S -p '' true"


def sudo_preamble(mode: SudoMode, password: str | None) -> bytes:
    """The stdin line `sudo -S` reads first in PASSWORD mode; nothing otherwise."""
    return (password or "").encode() + b"\n" if mode is PASSWORD else b""


SudoProbe = Callable[[str, bytes], Awaitable[tuple[int, str]]]
"""Run a probe command with stdin as the login user; (exit code, stderr)."""


async def probe_sudo(host: str, user: str, password: str | None, probe: SudoProbe) -> SudoMode:
    """How `user` becomes root: sudo without a password, else with `password` on stdin.
    Raises SudoError (with sudo's own reason) when neither works."""
    code, err = await probe(SUDO_PROBE_NOPASSWD, b"")
    if code == 0:
        return NOPASSWD
    if password is None:
        raise SudoError(host, *sudo_failure(err, user, False))
    code, err = await probe(SUDO_PROBE_PASSWORD, (password + "\n").encode())
    if code != 0:
        raise SudoError(host, *sudo_failure(err, user, True))
    return PASSWORD


def sudo_failure(stderr: str, user: str, had_password: bool) -> tuple[str, str]:
    """(message, hint) for a failed sudo probe, from sudo's own stderr."""
    text = stderr.lower()
    if "not in the sudoers" in text or "not allowed to" in text or "may not run sudo" in text:
        return (
            f"sudo refused: user {user} may not run commands as root",
            f"add {user} to the sudo group (or a sudoers rule) on the host, or log in as root",
        )
    if "incorrect password" in text or "sorry, try again" in text:
        return (
            f"sudo refused: incorrect sudo password for user {user}",
            "fix ssh.sudoPasswd (or ssh.passwd, used when sudoPasswd is empty) in the Clusterfile",
        )
    if "a password is required" in text or "no password was provided" in text or not had_password:
        return (
            f"sudo needs a password for user {user} and none was given",
            "set ssh.sudoPasswd for this host in the Clusterfile, or allow NOPASSWD sudo",
        )
    if "command not found" in text or "not found" in text:
        return (f"sudo is not installed (user {user} is not root)", "install sudo or log in as root")
    first = stderr.strip().splitlines()[0] if stderr.strip() else "no message"
    return (f"sudo failed for user {user}: {first}", "check the sudo configuration on the host")


def quote_path(path: str) -> str:
    return shlex.quote(path)
