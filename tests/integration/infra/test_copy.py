"""Copies on real hosts: a copy cut half-way by a link failure leaves no partial file, a re-copy
skips what already landed equal; a full disk is reported by name; the operator's own address
is served locally in the same fan-out."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from sealer.infra.errors import ConnectionLostError, DiskFullError
from sealer.infra.host import Target

from .conftest import fleet, root_target, run

pytestmark = [pytest.mark.integration, pytest.mark.testbed]

MB = 1 << 20


def remote_hashes(tb: Any, h: Any, root: str) -> dict[str, str]:
    out = tb.run_on(h, f"cd {root} 2>/dev/null && find . -type f -exec sha256sum {{}} + || true").stdout
    return {line.split(None, 1)[1].removeprefix("./"): line.split()[0] for line in out.splitlines()}


def test_cut_copy_leaves_no_partial_file_and_recopy_skips_landed(
    testbed_factory: Any, fleet_args: dict[str, Any], tmp_path: Path
) -> None:
    tb = testbed_factory(light=True)
    (h,) = tb.up(1)
    src = tmp_path / "src"
    src.mkdir()
    local: dict[str, str] = {}
    for i in range(12):
        data = os.urandom(2 * MB)
        (src / f"part{i:02}.bin").write_bytes(data)
        local[f"part{i:02}.bin"] = hashlib.sha256(data).hexdigest()
    tb.shape(h, "40mbit")  # ~5 MB/s: 24 MB takes seconds, time to cut the link in the middle
    target = root_target(h)

    async def cut_half_way() -> Any:
        async with fleet(
            fleet_args, keepalive_interval=1.0, keepalive_count_max=2, copy_batch_bytes=4 * MB
        ) as f:
            task = asyncio.ensure_future(f.copy_many([target], src, "/srv/data"))
            while not [k for k in remote_hashes(tb, h, "/srv/data") if not k.startswith(".sealer-stage.")]:
                # the first batch has not landed yet
                await asyncio.sleep(0.1)
            tb.cut_link(h)
            return (await task)[0]

    try:
        cut = run(cut_half_way)
    finally:
        tb.restore_link(h)
        tb.shape(h, None)
    assert isinstance(cut.error, ConnectionLostError) and str(cut.error).startswith(h.ip)
    landed = remote_hashes(tb, h, "/srv/data")
    staged = {k: v for k, v in landed.items() if k.startswith(".sealer-stage.")}
    final = {k: v for k, v in landed.items() if k not in staged}
    assert 0 < len(final) < len(local)
    for name, digest in final.items():
        assert digest == local[name], f"{name} at the destination is not the whole file"

    async def recopy() -> Any:
        async with fleet(fleet_args, copy_batch_bytes=4 * MB) as f:
            return (await f.copy_many([target], src, "/srv/data"))[0]

    again = run(recopy)
    assert again.ok, again.error
    assert again.value.files_skipped == len(final)
    assert again.value.files_sent == len(local) - len(final)
    after = remote_hashes(tb, h, "/srv/data")
    assert {k: v for k, v in after.items() if not k.startswith(".sealer-stage.")} == local
    # the cut copy's stage stays only while its remote shell lives on (sshd never noticed the
    # dead connection); it holds no file at a destination path and a later copy removes it


def test_disk_full_is_reported_and_leaves_nothing(
    testbed_factory: Any, fleet_args: dict[str, Any], tmp_path: Path
) -> None:
    tb = testbed_factory(light=True)
    full, roomy = tb.up(2)
    for h in (full, roomy):
        tb.run_on(h, "mkdir -p /mnt/small && mount -t tmpfs -o size=1m tmpfs /mnt/small")
    tb.run_on(roomy, "umount /mnt/small")
    (tmp_path / "big.bin").write_bytes(os.urandom(3 * MB))

    async def go() -> list[Any]:
        async with fleet(fleet_args) as f:
            return await f.copy_many(
                [root_target(full), root_target(roomy)], tmp_path / "big.bin", "/mnt/small/big.bin"
            )

    bad, good = run(go)
    assert isinstance(bad.error, DiskFullError)
    assert str(bad.error).startswith(full.ip) and "no space left on device" in bad.error.message
    assert tb.run_on(full, "ls -A /mnt/small").stdout == ""  # no partial file, no stage
    assert good.ok and good.value.files_sent == 1


def test_own_address_runs_locally_in_the_same_fanout(
    testbed_factory: Any, fleet_args: dict[str, Any], tmp_path: Path
) -> None:
    tb = testbed_factory(light=True)
    (h,) = tb.up(1)
    me = Target("127.0.0.1", env={"HostIP": "127.0.0.1"})
    (tmp_path / "f").write_text("x\n")

    async def go() -> tuple[Any, Any, bool]:
        async with fleet(fleet_args) as f:
            res = await f.run_many([me, root_target(h)], 'hostname; echo "$HostIP"', host_env=True)
            cp = await f.copy_many([me], tmp_path / "f", str(tmp_path / "out" / "f"))
            await f.get(root_target(h), "/etc/ssh", tmp_path / "fetched")  # a directory, over SSH
            return res, cp, f.connector_for(me) is f.local

    res, cp, local = run(go)
    assert local
    assert res[0].value.stdout.split() == [socket.gethostname(), "127.0.0.1"]
    assert res[1].value.stdout.split() == [h.name, h.ip]
    assert cp[0].ok and (tmp_path / "out" / "f").read_text() == "x\n"
    fetched = (tmp_path / "fetched" / "ssh_host_ed25519_key.pub").read_text()
    assert fetched.split()[:2] == h.host_key.split()[:2]
    assert (tmp_path / "fetched" / "ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600
