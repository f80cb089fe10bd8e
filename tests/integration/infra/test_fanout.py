"""Fan-out on ten real sshd hosts: per-host results, one connection per host, bounded handshakes,
logs, recorded host keys, and faults (a stopped host, a cut link) reported by name while the
other hosts succeed."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from sealer.infra.errors import (
    CommandTimeoutError,
    ConnectionLostError,
    ConnectionRefusedHostError,
    HostUnreachableError,
)
from sealer.infra.knownhosts import KnownHostsFile, normalize_key

from .conftest import fleet, root_target, run

pytestmark = [pytest.mark.integration, pytest.mark.testbed]


def test_ten_hosts_in_parallel_then_faults(testbed_factory: Any, fleet_args: dict[str, Any]) -> None:
    tb = testbed_factory(light=True)
    hosts = tb.up(10)
    targets = [root_target(h) for h in hosts]

    async def healthy() -> tuple[Any, Any, int, int, int]:
        async with fleet(fleet_args, max_handshakes=4) as f:
            first = await f.run_many(
                targets, 'hostname; printf "%s\\n" "$HostIP"; echo oops >&2; exit 7', host_env=True
            )
            done = f.ssh.handshakes_done
            second = await f.run_many(targets, "true")
            return first, second, done, f.ssh.handshakes_done, f.ssh.max_handshakes_seen

    first, second, done1, done2, peak = run(healthy)
    for h, o in zip(hosts, first, strict=True):
        assert o.error is None and o.value is not None
        assert o.host == h.ip
        assert o.value.stdout.split() == [h.name, h.ip]
        assert (o.value.exit_code, o.value.stderr.strip()) == (7, "oops")
        assert not o.ok
    assert all(o.ok for o in second)
    assert done1 == done2 == 10  # the second fan-out reused every connection
    assert peak <= 4  # never more handshakes in flight than allowed

    pinned = KnownHostsFile(fleet_args["known_hosts"])
    for h in hosts:
        assert pinned.keys_for(h.ip, None) == [normalize_key(h.host_key)]
    assert stat.S_IMODE(Path(fleet_args["known_hosts"]).stat().st_mode) == 0o600
    for h in hosts:
        log = Path(fleet_args["logdir"]) / f"{h.ip}.log"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert h.name in log.read_text() and "exit 7" in log.read_text()

    stopped, cut = hosts[2], hosts[6]

    async def faulty() -> tuple[Any, Any]:
        async with fleet(fleet_args) as old, fleet(fleet_args, connect_timeout=3.0) as new:
            await old.run_many(targets, "true")  # connections open before the faults
            tb.stop_host(stopped, hard=True)
            tb.cut_link(cut)
            on_open = await old.run_many(targets, "hostname", timeout=4)
            on_new = await new.run_many(targets, "hostname")
            return on_open, on_new

    try:
        on_open, on_new = run(faulty)
    finally:
        tb.restore_link(cut)
    for outcomes in (on_open, on_new):
        bad = {o.host: o.error for o in outcomes if not o.ok}
        assert set(bad) == {stopped.ip, cut.ip}
        assert all(
            o.value is not None and o.value.stdout.strip() == h.name
            for h, o in zip(hosts, outcomes, strict=True)
            if h not in (stopped, cut)
        )
        for ip, err in bad.items():
            assert err is not None and str(err).startswith(ip + ":") and err.hint
    open_errs = {o.host: o.error for o in on_open}
    new_errs = {o.host: o.error for o in on_new}
    # the open connection breaks; if asyncssh saw the close first, the reconnect is refused
    assert isinstance(open_errs[stopped.ip], ConnectionLostError | ConnectionRefusedHostError)
    assert isinstance(open_errs[cut.ip], CommandTimeoutError | ConnectionLostError)
    assert isinstance(new_errs[stopped.ip], ConnectionRefusedHostError)
    assert isinstance(new_errs[cut.ip], HostUnreachableError)
    assert "within 3s" in new_errs[cut.ip].message


@pytest.mark.slow
def test_thirty_hosts_bounded_handshakes(testbed_factory: Any, fleet_args: dict[str, Any]) -> None:
    tb = testbed_factory(light=True)
    hosts = tb.up(30)

    async def go() -> tuple[Any, int]:
        async with fleet(fleet_args, max_handshakes=8) as f:
            out = await f.run_many([root_target(h) for h in hosts], "cat /etc/hostname")
            return out, f.ssh.max_handshakes_seen

    out, peak = run(go)
    assert [o.value.stdout.strip() if o.value else o.error for o in out] == [h.name for h in hosts]
    assert 1 < peak <= 8


def test_many_concurrent_commands_share_one_connection(
    testbed_factory: Any, fleet_args: dict[str, Any]
) -> None:
    """More concurrent commands on one host than sshd's MaxSessions (default 10, here lowered to
    2): they queue on the one connection instead of failing or reconnecting."""
    tb = testbed_factory(light=True)
    default, strict = tb.up(2)
    tb.run_on(
        strict, "sed -i '/^MaxSessions/d' /etc/ssh/sshd_config; echo 'MaxSessions 2' >> /etc/ssh/sshd_config"
    )
    tb.run_on(strict, "kill -HUP 1")  # sshd (PID 1 of a light host) re-executes with the new config
    tb._wait_ready([strict])

    async def go() -> tuple[list[Any], int]:
        async with fleet(fleet_args) as f:
            targets = [root_target(default)] * 25 + [root_target(strict)] * 6
            out = await f.each(targets, lambda t: f.run(t, "sleep 0.3; cat /etc/hostname"))
            return out, f.ssh.handshakes_done

    out, handshakes = run(go)
    assert [o.error for o in out if o.error] == []
    assert [o.value.stdout.strip() for o in out] == [default.name] * 25 + [strict.name] * 6
    assert handshakes == 2
