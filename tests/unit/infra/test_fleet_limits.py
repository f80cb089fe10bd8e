"""A run over many hosts makes room for their open files first (sockets and logs), or says up
front why it cannot, instead of failing hosts with EMFILE midway."""

from __future__ import annotations

import asyncio
import resource

import pytest

from sealer.infra import fleet as fleet_mod
from sealer.infra.fleet import FILES_BASE, FILES_PER_HOST, Fleet, OpenFilesError, ensure_open_files
from sealer.infra.host import Target


class Limits:
    def __init__(self, soft: int, hard: int) -> None:
        self.soft, self.hard = soft, hard
        self.set: list[tuple[int, int]] = []

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        if limits[0] > self.hard:
            raise ValueError("not allowed to raise maximum limit")
        self.set.append(limits)
        self.soft, self.hard = limits


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> Limits:
    fake = Limits(1024, 4096)
    monkeypatch.setattr(fleet_mod.resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(fleet_mod.resource, "setrlimit", fake.setrlimit)
    return fake


def test_a_short_soft_limit_is_raised_to_the_hard_one(limits: Limits) -> None:
    assert ensure_open_files(100) == 1024 and limits.set == []  # enough: left alone
    assert ensure_open_files(600) == 4096
    assert limits.set == [(4096, 4096)]


def test_a_short_hard_limit_is_a_clear_error_before_any_connection(limits: Limits) -> None:
    limits.soft, limits.hard = 256, 512
    hosts = [Target(f"10.0.{i // 250}.{i % 250}") for i in range(300)]
    need = FILES_BASE + FILES_PER_HOST * 300

    async def go() -> None:
        async with Fleet(known_hosts=None, detect_local=False) as fleet:
            await fleet.run_many(hosts, "true")

    with pytest.raises(OpenFilesError) as info:
        asyncio.run(go())
    assert f"300 hosts need about {need} open files" in info.value.message
    assert "512" in info.value.message
    assert info.value.hint and f"ulimit -Hn {need}" in info.value.hint
    assert limits.set == []


def test_an_unlimited_hard_limit_the_kernel_caps_gets_what_is_needed(
    limits: Limits, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits.hard = resource.RLIM_INFINITY
    calls: list[tuple[int, int]] = []

    def capped(which: int, new: tuple[int, int]) -> None:
        calls.append(new)
        if new[0] == resource.RLIM_INFINITY:
            raise ValueError("above fs.nr_open")
        limits.soft = new[0]

    monkeypatch.setattr(fleet_mod.resource, "setrlimit", capped)
    need = FILES_BASE + FILES_PER_HOST * 1000
    assert ensure_open_files(1000) == need
    assert calls[-1] == (need, resource.RLIM_INFINITY) and limits.soft == need
