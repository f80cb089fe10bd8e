"""Quoting and sudo wrapping: values reach the command unchanged and can never inject."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealer.infra import shell
from sealer.infra.errors import SudoError
from sealer.infra.shell import (
    NOPASSWD,
    PASSWORD,
    ROOT,
    EnvNameError,
    EnvValueError,
    as_root,
    env_on_stdin,
    sudo_failure,
)


def sh(line: str) -> str:
    # bytes, then decode: text mode would turn "\r" into "\n"
    out = subprocess.run(["/bin/sh", "-c", line], capture_output=True, check=True).stdout
    return out.decode("utf-8", "surrogateescape")


def sh_env(env: dict[str, str], cmd: str, input: bytes = b"", shell: str = "/bin/sh") -> str:
    line, block = env_on_stdin(cmd, env)
    out = subprocess.run([shell, "-c", line], input=block + input, capture_output=True, check=True).stdout
    return out.decode("utf-8", "surrogateescape")


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40))
def test_env_values_arrive_verbatim_through_a_real_shell(value: str) -> None:
    # dash and bash (a login shell may be either), and the command's own stdin after the env
    # block reaches it untouched
    for login_shell in ("/bin/sh", "/bin/bash"):
        out = sh_env({"V": value, "W": "2"}, 'printf %s "$V|$W|"; cat', b"own input\n", login_shell)
        assert out == value + "|2|own input\n"


def test_env_values_are_never_on_the_command_line() -> None:
    secret = "hunter2 'x' $(y) %s \\n"
    line, block = env_on_stdin("run-it", {"TOKEN": secret})
    assert "hunter2" not in line and line.endswith("run-it")
    assert b"hunter2" in block and block.endswith(b"\n\n")


def test_injection_attempt_stays_a_value() -> None:
    evil = "'; echo PWNED; '$(echo PWNED)`echo PWNED`"
    assert sh_env({"X": evil}, 'printf %s "$X"') == evil


def test_bad_env_name_or_value_is_an_error_naming_it() -> None:
    with pytest.raises(EnvNameError, match="A-B"):
        env_on_stdin("true", {"A-B": "1"})
    with pytest.raises(EnvNameError):
        env_on_stdin("true", {"X; rm -rf /": "1"})
    with pytest.raises(EnvValueError, match="NUL"):
        env_on_stdin("true", {"X": "a\0b"})
    assert env_on_stdin("true", {}) == ("true", b"")


def test_as_root_wraps_one_quoted_argument_and_never_the_password() -> None:
    cmd = "echo 'a b' && id -u"
    assert as_root(cmd, ROOT) == cmd
    wrapped = as_root(cmd, PASSWORD)
    assert wrapped.startswith("sudo -k -S -p '' -- sh -c ")
    assert as_root(cmd, NOPASSWD).startswith("sudo -n -- sh -c ")
    # the wrapped command, unwrapped by a shell, is the original one
    inner = wrapped.removeprefix("sudo -k -S -p '' -- sh -c ")
    assert sh(f"printf %s {inner}") == cmd


@pytest.mark.parametrize(
    ("stderr", "had_password", "expect"),
    [
        ("Sorry, try again.\nsudo: 1 incorrect password attempt\n", True, "incorrect sudo password"),
        ("sudo: a password is required\n", False, "needs a password"),
        ("bob is not in the sudoers file.  This incident will be reported.\n", True, "may not run"),
        ("Sorry, user bob may not run sudo on h1.\n", False, "may not run"),
        ("sh: 1: sudo: not found\n", True, "not installed"),
    ],
)
def test_sudo_failures_are_told_apart(stderr: str, had_password: bool, expect: str) -> None:
    message, hint = sudo_failure(stderr, "bob", had_password)
    assert expect in message
    assert hint


def _probe(results: dict[str, tuple[int, str]], seen: list[tuple[str, bytes]]) -> shell.SudoProbe:
    async def probe(cmd: str, stdin: bytes) -> tuple[int, str]:
        seen.append((cmd, stdin))
        return results[cmd]

    return probe


def test_probe_sudo_nopasswd_needs_no_password() -> None:
    seen: list[tuple[str, bytes]] = []
    probe = _probe({shell.SUDO_PROBE_NOPASSWD: (0, "")}, seen)
    assert asyncio.run(shell.probe_sudo("h1", "ops", "pw", probe)) is shell.NOPASSWD
    assert seen == [(shell.SUDO_PROBE_NOPASSWD, b"")]


def test_probe_sudo_password_goes_on_stdin() -> None:
    seen: list[tuple[str, bytes]] = []
    results = {shell.SUDO_PROBE_NOPASSWD: (1, "a password is required"), shell.SUDO_PROBE_PASSWORD: (0, "")}
    assert asyncio.run(shell.probe_sudo("h1", "ops", "pw", _probe(results, seen))) is shell.PASSWORD
    assert seen[1] == (shell.SUDO_PROBE_PASSWORD, b"pw\n")
    assert shell.sudo_preamble(shell.PASSWORD, "pw") == b"pw\n"
    assert shell.sudo_preamble(shell.NOPASSWD, "pw") == b""


def test_probe_sudo_refusals_name_the_host() -> None:
    no_pw = _probe({shell.SUDO_PROBE_NOPASSWD: (1, "a password is required")}, [])
    with pytest.raises(SudoError) as err:
        asyncio.run(shell.probe_sudo("h1", "ops", None, no_pw))
    assert err.value.host == "h1"
    refused = {
        shell.SUDO_PROBE_NOPASSWD: (1, "a password is required"),
        shell.SUDO_PROBE_PASSWORD: (1, "Sorry, try again."),
    }
    wrong = _probe(refused, [])
    with pytest.raises(SudoError):
        asyncio.run(shell.probe_sudo("h1", "ops", "bad", wrong))
