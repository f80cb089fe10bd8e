"""Many hosts at once over real sshd: every first-contact key pinned, the cluster known_hosts read
once and written in batches, facts from every host, a short soft open-files limit raised, and an
encrypted default key decrypted once."""

from __future__ import annotations

import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from sealer.apply.facts import HostFacts, gather
from sealer.infra import ssh as ssh_mod
from sealer.infra.host import Target
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


def test_an_encrypted_default_key_is_decrypted_once_per_run_not_per_host(
    many: list[Any], fleet_args: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ssh.pkPasswd without ssh.pk: asyncssh decrypted ~/.ssh's keys on every connection (~120 ms
    of bcrypt each, 36 s of CPU for 300 hosts). Now once per run; an IdentityFile that
    ~/.ssh/config names for the hosts is still honoured."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    key = home / ".ssh" / "id_ed25519"
    shutil.copy(many[0].root_key, key)
    key.chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", "secret", "-f", str(key)], check=True)
    monkeypatch.setenv("HOME", str(home))
    loads: list[object] = []

    def counting(*args: Any, **kw: Any) -> Any:
        loads.append(args)
        return real(*args, **kw)

    real = asyncssh.public_key.load_default_keypairs
    monkeypatch.setattr(asyncssh.connection, "load_default_keypairs", counting)
    monkeypatch.setattr(ssh_mod, "load_default_keypairs", counting, raising=False)
    some = many[:12]

    async def go() -> list[Any]:
        async with fleet(fleet_args, ssh_config=True) as f:
            return await f.run_many([Target(h.ip, pk_password="secret") for h in some], "hostname")

    outcomes = run(go)
    assert [o.value.stdout.strip() for o in outcomes if o.value] == [h.name for h in some]
    assert len(loads) == 1

    # ~/.ssh/config names the key for these hosts: asyncssh loads it as configured
    key.rename(home / ".ssh" / "cluster_key")
    (home / ".ssh" / "config").write_text("Host 10.*\n  IdentityFile ~/.ssh/cluster_key\n")
    loads.clear()
    outcomes = run(go)
    assert all(o.ok for o in outcomes), [str(o.error) for o in outcomes if not o.ok][:3]
    assert loads == []
