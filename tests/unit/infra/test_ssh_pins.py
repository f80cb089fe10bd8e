"""First-contact host keys of many hosts are pinned in batches: one lock and one append for the
handshakes that end together, not one per host."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sealer.errors import HostError
from sealer.infra.host import Target
from sealer.infra.knownhosts import KnownHostsFile
from sealer.infra.ssh import SSHConnector

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh2m3Y1p8dYQw1c3Gd3lqYqG1w0r9M0mQyq0G2oX7hU"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJq8d9pOeKxV2bT7C1u0zFjv9u6wY5k2l8fR3nQ4sE1m"


def test_keys_of_hosts_connecting_together_are_written_once(tmp_path: Path) -> None:
    async def go() -> tuple[list[bool], list[bool], int]:
        conn = SSHConnector(known_hosts=tmp_path / "known_hosts", trust_user_known_hosts=False)
        targets = [Target(f"10.0.{i // 250}.{i % 250}") for i in range(300)]
        first = await asyncio.gather(*(conn._pin(t, KEY_A) for t in targets))
        again = await asyncio.gather(conn._pin(targets[0], KEY_A), conn._pin(targets[1], KEY_B))
        assert conn.known_hosts is not None
        writes = conn.known_hosts.writes
        await conn.close()
        return first, again, writes

    first, again, writes = asyncio.run(go())
    assert first == [True] * 300
    assert again == [False, True]  # a second key for a host is added, a pinned one is not
    assert writes == 2
    store = KnownHostsFile(tmp_path / "known_hosts")
    assert store.keys_for("10.0.1.49", None) == [KEY_A]
    assert store.keys_for("10.0.0.1", None) == [KEY_A, KEY_B]


def test_a_failed_write_fails_every_host_of_the_batch_by_name(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")

    async def go() -> list[BaseException | bool]:
        conn = SSHConnector(known_hosts=blocker / "known_hosts", trust_user_known_hosts=False)
        try:
            return await asyncio.gather(
                *(conn._pin(Target(f"10.0.0.{i}"), KEY_A) for i in (1, 2)), return_exceptions=True
            )
        finally:
            await conn.close()

    results = asyncio.run(go())
    for ip, result in zip(("10.0.0.1", "10.0.0.2"), results, strict=True):
        assert isinstance(result, HostError)
        assert result.host == ip and str(blocker / "known_hosts") in result.message
        assert result.hint


def test_without_a_known_hosts_file_nothing_is_pinned() -> None:
    async def go() -> bool:
        conn = SSHConnector(known_hosts=None, trust_user_known_hosts=False)
        try:
            return await conn._pin(Target("10.0.0.1"), KEY_A)
        finally:
            await conn.close()

    assert asyncio.run(go()) is False
