"""Shared pytest setup: registers the test bed's fixtures (rootfs, testbed_factory), and the
rootfs cache fixture the prune tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.testbed.plugin"]


@pytest.fixture
def released_cache_holds() -> Iterator[None]:
    """`unpack` keeps a hold on every rootfs cache entry it returned until the process ends, and a
    test session is one process: tests about those holds start and end without any."""
    from sealer.apply.rootfs import release_cache_holds

    release_cache_holds()
    yield
    release_cache_holds()
