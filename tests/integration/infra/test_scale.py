"""Many hosts at once over real sshd: every first-contact key pinned, the cluster known_hosts read
once and written in batches, facts from every host, and a short soft open-files limit raised."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import pytest

from sealer.apply.facts import HostFacts, gather
from sealer.infra.knownhosts import KnownHostsFile, normalize_key
from tests.integration.infra.conftest import fleet, root_target, run
from tests.testbed import Testbed

HOSTS = 40

pytestmark = [pytest.mark.integration, pytest.mark.testbed]


@pytest.fixture
def many(testbed_factory: Any) -> list[Any]:
    tb: Testbed = testbed_factory(light=True, lab="h6c")
    return tb.up(HOSTS)


def test_first_contact_with_many_hosts_pins_every_key_reading_the_file_once(
    many: list[Any], fleet_args: dict[str, Any]
) -> None:
    targets = [root_target(h) for h in many]

    async def go() -> tuple[dict[str, Any], int, int]:
        async with fleet(fleet_args) as f:
            facts = await gather(f, targets, "/var/lib/sealer")
            store = f.ssh.known_hosts
            assert store is not None
            return facts, store.reads, store.writes

    facts, reads, writes = run(go)
    assert all(isinstance(facts[h.ip], HostFacts) and facts[h.ip].hostname == h.name for h in many)
    pinned = KnownHostsFile(fleet_args["known_hosts"])
    for h in many:
        assert pinned.keys_for(h.ip, None) == [normalize_key(h.host_key)]
    assert reads == 1  # parsed once, not once per host (the O(N^2) of before)
    assert 1 <= writes <= HOSTS
    lines = Path(fleet_args["known_hosts"]).read_text().splitlines()
    assert len(lines) == HOSTS  # no host twice

    async def again() -> int:  # a second run over pinned keys writes nothing
        async with fleet(fleet_args) as f:
            outcomes = await f.run_many(targets, "true")
            assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
            assert f.ssh.known_hosts is not None
            return f.ssh.known_hosts.writes

    assert run(again) == 0


def test_a_short_soft_open_files_limit_is_raised_for_many_hosts(
    many: list[Any], fleet_args: dict[str, Any]
) -> None:
    """A soft limit below what HOSTS sockets and logs need (as 1024 is for ~500 hosts) made
    hosts fail with EMFILE midway; the run raises it to the hard limit first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    short = 40 + HOSTS  # fewer than a socket and a log per host on top of what is open already
    resource.setrlimit(resource.RLIMIT_NOFILE, (short, hard))
    try:
        async def go() -> list[Any]:
            async with fleet(fleet_args) as f:
                return await f.run_many([root_target(h) for h in many], "true")

        outcomes = run(go)
        assert all(o.ok for o in outcomes), [str(o.error) for o in outcomes if not o.ok][:3]
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > short
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
