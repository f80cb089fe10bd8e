"""Helpers for infra tests on the test bed: targets for test hosts, a one-call asyncio runner."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sealer.infra.fleet import Fleet
from sealer.infra.host import Target
from tests.testbed import TestHost

T = TypeVar("T")


def root_target(h: TestHost, **kw: Any) -> Target:
    return Target(h.ip, pk=str(h.root_key), env={"HostIP": h.ip}, **kw)


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


@pytest.fixture
def fleet_args(tmp_path: Path) -> dict[str, Any]:
    """A Fleet with its own known_hosts and logs, blind to this machine's ~/.ssh."""
    return {
        "known_hosts": tmp_path / "state" / "known_hosts",
        "logdir": tmp_path / "state" / "logs",
        "trust_user_known_hosts": False,
        "ssh_config": False,
        "connect_timeout": 5.0,
    }


def fleet(args: dict[str, Any], **over: Any) -> Fleet:
    return Fleet(**{**args, **over})
