"""pytest fixtures of the test bed: `rootfs` (session, cached Debian tree) and `testbed_factory`
(per test; every lab it made is torn down after the test, also on failure, SIGTERM or Ctrl-C)."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from . import rootfs as _rootfs
from .common import TestbedError
from .lab import Testbed, TestbedFactory, reap_stale_labs, require_root_and_tools

_live: list[Testbed] = []


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """A second Ctrl-C or SIGTERM must not cut a teardown in half; it is delivered right after."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _down_live() -> None:
    with _signals_deferred():
        while _live:
            tb = _live.pop()
            try:
                tb.down(fast=True)
            except TestbedError as e:  # keep going: the other labs must still be torn down
                print(f"testbed: teardown of lab {tb.name} failed: {e}", file=sys.stderr)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM/SIGHUP into the same path as Ctrl-C, so pytest runs fixture finalizers.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    atexit.register(_down_live)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)


_timings: list[str] = []


@pytest.fixture
def testbed_timing() -> Callable[[str], None]:
    """record(line): a measured figure shown in the test run's summary (measured, never asserted)."""

    def record(line: str) -> None:
        _timings.append(line)
        print(line)

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _timings:
        terminalreporter.section("test bed timings")
        for line in _timings:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def rootfs() -> Path:
    """The shared lower rootfs (debootstrapped once per recipe; about 80 s the first time)."""
    why = require_root_and_tools(light=True)
    if why:
        pytest.skip(f"test bed: {why}")
    if not _rootfs.is_ready() and shutil.which("debootstrap") is None:
        pytest.skip("test bed: debootstrap is not installed and no rootfs is cached (run scripts/setup)")
    reap_stale_labs()
    return _rootfs.prepare()


@pytest.fixture
def testbed_factory(rootfs: Path) -> Iterator[TestbedFactory]:
    """make(nested=False, light=False, lab=None) -> Testbed; call .up(n) on it for hosts.

    lab=None picks a free lab id and subnet, so tests of several engineers run side by side."""
    made: list[Testbed] = []

    def make(*, nested: bool = False, light: bool = False, lab: str | None = None) -> Testbed:
        why = require_root_and_tools(light=light)
        if why:
            pytest.skip(f"test bed: {why}")
        tb = Testbed(lab, nested=nested, light=light)
        made.append(tb)
        _live.append(tb)
        return tb

    yield make
    errors: list[str] = []
    with _signals_deferred():
        for tb in reversed(made):
            try:
                tb.down(fast=True)
            except TestbedError as e:
                errors.append(f"lab {tb.name}: {e}")
            with contextlib.suppress(ValueError):
                _live.remove(tb)
    if errors:
        pytest.fail("test bed teardown left things behind:\n" + "\n".join(errors))
