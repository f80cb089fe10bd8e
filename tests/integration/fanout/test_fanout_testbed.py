"""Fan-out on real sshd hosts: data flows host to host and is verified; a host cut off mid-way
does not stop the others and a re-run resumes it; a corrupted piece is detected and re-sent;
no key, listener, process or temp file of the run stays on any host."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from sealer.infra.fanout import FanoutResult, HostProgress, fanout_copy
from sealer.infra.fleet import Fleet
from sealer.infra.host import Target
from tests.testbed import Testbed, TestHost

pytestmark = [pytest.mark.integration, pytest.mark.testbed, pytest.mark.slow]

MB = 1 << 20
DST = "/srv/fo-data"


def make_payload(root: Path, big: int = 6 * MB, small: int = 40) -> Path:
    src = root / "payload"
    (src / "bin").mkdir(parents=True)
    (src / "conf/private").mkdir(parents=True)
    (src / "bin/big.img").write_bytes(os.urandom(big))
    tool = src / "bin/tool"
    tool.write_bytes(b"#!/bin/sh\necho ok\n")
    tool.chmod(0o755)
    for i in range(small):
        (src / "conf" / f"c{i:03}.yaml").write_bytes(os.urandom(3000 + i))
    (src / "conf/private/secret").write_bytes(b"s3cret")
    (src / "conf/private").chmod(0o750)
    os.symlink("bin/tool", src / "tool-link")
    return src


def digest_tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = f"{stat.S_IMODE(p.stat().st_mode):o} " + hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = f"dir {stat.S_IMODE(p.stat().st_mode):o}"
    return out


def remote_digest(tb: Testbed, h: TestHost) -> dict[str, str]:
    script = (
        f"cd {DST} && find . -mindepth 1 | sort | while IFS= read -r p; do r=${{p#./}}; "
        'if [ -L "$p" ]; then echo "$r|-> $(readlink "$p")"; '
        'elif [ -f "$p" ]; then echo "$r|$(stat -c %a "$p") $(sha256sum < "$p" | cut -c1-64)"; '
        'else echo "$r|dir $(stat -c %a "$p")"; fi; done'
    )
    out = tb.run_on(h, script).stdout
    return dict(line.split("|", 1) for line in out.splitlines())


def footprint(tb: Testbed, h: TestHost) -> dict[str, str]:
    """What a run could leave behind: key lines, work dirs, stage dir, listeners, processes."""
    return {
        "keys": tb.run_on(h, "grep -c sealer-fanout /root/.ssh/authorized_keys || true").stdout.strip(),
        "tmp": tb.run_on(h, "ls -d /tmp/sealer-fanout-* 2>/dev/null || true").stdout.strip(),
        "stage": tb.run_on(h, f"ls -A {DST}/.sealer-fanout 2>/dev/null || true").stdout.strip(),
        "listeners": tb.run_on(h, "ss -Hltnp | awk '{print $4, $6}' | sed 's/pid=[0-9]*,//' | sort").stdout,
        "procs": tb.run_on(h, "ps -eo comm= | grep -Ev '^(ps|grep|sort|sshd|sh|bash|nsenter|env)$' | sort")
        .stdout,
    }


def targets(hosts: list[TestHost]) -> list[Target]:
    return [Target(h.ip, pk=str(h.root_key)) for h in hosts]


def copy(state: Path, hosts: list[TestHost], src: Path, **kw: Any) -> FanoutResult:
    async def go() -> FanoutResult:
        async with Fleet(known_hosts=state / "known_hosts", trust_user_known_hosts=False, ssh_config=False,
                         connect_timeout=5.0) as f:
            return await fanout_copy(f, targets(hosts), src, DST, **kw)

    return asyncio.run(go())


def test_chain_copies_everything_verified_and_leaves_nothing(testbed_factory: Any, tmp_path: Path) -> None:
    tb: Testbed = testbed_factory(light=True)
    hosts = tb.up(4)
    before = {h.name: footprint(tb, h) for h in hosts}
    src = make_payload(tmp_path)
    seen: list[HostProgress] = []
    res = copy(tmp_path, hosts, src, chunk_bytes=1 * MB, progress=seen.append)
    assert res.ok, [o.error for o in res.outcomes]
    want = digest_tree(src)
    for h in hosts:
        assert remote_digest(tb, h) == want
        assert footprint(tb, h) == before[h.name]
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    # the operator sent the stream once (plus tar headers), not once per host
    assert total <= res.operator_bytes < 1.2 * total
    for o in res.outcomes:
        assert o.value is not None and o.value.bytes_sent == total
    # progress came from every host, fed by the host before it in the chain
    # (a fast transfer may end before a poll: the "received" event names the feeder too)
    parents = {p.host: p.parent for p in seen if p.state in ("receiving", "received")}
    chain = {b.ip: a.ip for a, b in itertools.pairwise(hosts)}
    assert parents == {hosts[0].ip: "operator", **chain}
    assert all(p.total > 0 for p in seen if p.state in ("receiving", "received"))
    assert [p.host for p in seen if p.state == "done"] != [] and all(
        any(p.host == h.ip and p.state == "done" for p in seen) for h in hosts)

    # a second run finds every file equal and sends nothing
    again = copy(tmp_path, hosts, src, chunk_bytes=1 * MB)
    assert again.ok and again.operator_bytes <= 2048
    for o in again.outcomes:
        assert o.value is not None and o.value.bytes_sent == 0 and o.value.files_skipped == len(
            [p for p in src.rglob("*") if p.is_file() and not p.is_symlink()])
    for h in hosts:
        assert footprint(tb, h) == before[h.name]


def test_cut_host_is_routed_around_and_a_rerun_resumes_it(testbed_factory: Any, tmp_path: Path) -> None:
    tb: Testbed = testbed_factory(light=True)
    hosts = tb.up(4)
    before = {h.name: footprint(tb, h) for h in hosts}
    for h in hosts:
        tb.shape(h, "40mbit")  # long enough to cut a host in the middle
    src = make_payload(tmp_path, big=16 * MB)
    victim = hosts[1]
    cut: list[int] = []

    def watch(p: HostProgress) -> None:
        if p.host == victim.ip and p.state == "receiving" and not cut and p.received > p.total // 3:
            tb.cut_link(victim)
            cut.append(p.received)

    res = copy(tmp_path, hosts, src, chunk_bytes=1 * MB, progress=watch, stall_timeout=4.0,
               host_idle_timeout=10.0, rounds=1)
    assert cut, "the victim never reached a third of the stream"
    by_host = {o.host: o for o in res.outcomes}
    assert by_host[victim.ip].error is not None
    assert victim.ip in by_host[victim.ip].error.message or by_host[victim.ip].error.host == victim.ip
    want = digest_tree(src)
    for h in hosts:
        if h is not victim:
            assert by_host[h.ip].ok, by_host[h.ip].error
            assert remote_digest(tb, h) == want
    assert any(victim.ip in r for r in res.reroutes), res.reroutes

    tb.restore_link(victim)
    # the host's watchdog cleans up the run it lost (the operator could not reach it)
    deadline = 30.0
    while deadline > 0:
        fp = footprint(tb, victim)
        if fp["keys"] == "0" and not fp["tmp"] and fp["procs"] == before[victim.name]["procs"]:
            break
        deadline -= 1
        asyncio.run(asyncio.sleep(1))
    assert footprint(tb, victim)["keys"] == "0"
    assert not footprint(tb, victim)["tmp"]
    staged = tb.run_on(victim, f"ls {DST}/.sealer-fanout/c {DST}/.sealer-fanout/t 2>/dev/null | wc -l").stdout
    assert int(staged) > 0, "what arrived before the cut was kept for the re-run"
    # corrupt one staged piece: the re-run must find it by digest and send it again
    tb.run_on(victim, f"f=$(find {DST}/.sealer-fanout/c -type f | head -1); "
                      '[ -n "$f" ] && printf X | dd of="$f" bs=1 seek=10 conv=notrunc 2>/dev/null; true')

    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    again = copy(tmp_path, hosts, src, chunk_bytes=1 * MB)
    assert again.ok, [o.error for o in again.outcomes]
    resent = {o.host: o.value.bytes_sent for o in again.outcomes if o.value is not None}
    assert 0 < resent[victim.ip] < total  # continued, not from zero
    assert all(resent[h.ip] == 0 for h in hosts if h is not victim)
    for h in hosts:
        assert remote_digest(tb, h) == want
        assert footprint(tb, h) == before[h.name]


def test_corrupted_piece_in_flight_is_detected_and_resent(testbed_factory: Any, tmp_path: Path) -> None:
    tb: Testbed = testbed_factory(light=True)
    hosts = tb.up(3)
    src = make_payload(tmp_path)
    hit: list[str] = []

    def tamper(name: str, data: bytes) -> bytes:
        # flip one byte of the first chunk of the big file, the first time it is sent only
        if name.startswith("c/") and name.endswith(".2") and not hit:
            hit.append(name)
            return data[:5] + bytes([data[5] ^ 0xFF]) + data[6:]
        return data

    res = copy(tmp_path, hosts, src, chunk_bytes=1 * MB, tamper=tamper)
    assert hit
    assert res.ok, [o.error for o in res.outcomes]
    assert res.rounds == 2  # the bad piece was found on every host and sent again
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    assert res.operator_bytes < total + 2 * MB  # only that piece travelled twice
    want = digest_tree(src)
    for h in hosts:
        assert remote_digest(tb, h) == want


def test_fanout_as_a_sudo_user(testbed_factory: Any, tmp_path: Path) -> None:
    tb: Testbed = testbed_factory(light=True)
    hosts = tb.up(2)
    src = make_payload(tmp_path, big=2 * MB, small=5)
    user, password = hosts[0].sudo_user
    ts = [Target(h.ip, user=user, password=password) for h in hosts]

    async def go() -> FanoutResult:
        async with Fleet(known_hosts=tmp_path / "kh", trust_user_known_hosts=False, ssh_config=False) as f:
            return await fanout_copy(f, ts, src, DST, sudo=True, chunk_bytes=1 * MB)

    res = asyncio.run(go())
    assert res.ok, [o.error for o in res.outcomes]
    want = digest_tree(src)
    for h in hosts:
        assert remote_digest(tb, h) == want
        keys = tb.run_on(h, f"grep -c sealer-fanout /home/{user}/.ssh/authorized_keys || true").stdout
        assert keys.strip() in ("0", "")
        assert tb.run_on(h, "ls -d /tmp/sealer-fanout-* 2>/dev/null || true").stdout.strip() == ""




def test_slow_host_is_routed_around(testbed_factory: Any, tmp_path: Path) -> None:
    tb: Testbed = testbed_factory(light=True)
    hosts = tb.up(4)
    for h in hosts:
        tb.shape(h, "40mbit")
    slow = hosts[1]
    tb.shape(slow, "6mbit")  # eight times slower than the rest, both ways
    src = make_payload(tmp_path, big=20 * MB, small=5)
    seen: list[HostProgress] = []
    res = copy(tmp_path, hosts, src, chunk_bytes=4 * MB, progress=seen.append, stall_timeout=4.0)
    assert res.ok, [o.error for o in res.outcomes]
    assert any(r.startswith(f"{slow.ip}: slow") for r in res.reroutes), res.reroutes
    # the hosts behind the slow one were fed by the host before it instead, and finished first
    feeders = {p.host: p.parent for p in seen if p.state in ("receiving", "received")}
    assert feeders[hosts[2].ip] == hosts[0].ip
    done = [p.host for p in seen if p.state == "done"]
    assert done.index(hosts[2].ip) < done.index(slow.ip)
    assert done.index(hosts[3].ip) < done.index(slow.ip)
    want = digest_tree(src)
    for h in hosts:
        assert remote_digest(tb, h) == want


def test_the_operators_own_machine_gets_a_local_copy(testbed_factory: Any, tmp_path: Path) -> None:
    tb: Testbed = testbed_factory(light=True)
    hosts = tb.up(2)
    src = make_payload(tmp_path, big=2 * MB, small=3)
    dst = str(tmp_path / "dst")
    me = Target(tb.net.operator_ip)  # this machine's own address on the lab: no SSH to it

    async def go() -> FanoutResult:
        async with Fleet(known_hosts=tmp_path / "kh", trust_user_known_hosts=False, ssh_config=False) as f:
            return await fanout_copy(f, [me, *targets(hosts)], src, dst, chunk_bytes=1 * MB)

    res = asyncio.run(go())
    assert res.ok, [o.error for o in res.outcomes]
    assert [o.host for o in res.outcomes] == [me.name, *(h.ip for h in hosts)]
    assert digest_tree(Path(dst)) == digest_tree(src)
    assert res.operator_bytes < 2 * 2 * MB  # the two SSH hosts still got one stream between them


def test_a_single_file_and_an_empty_directory(testbed_factory: Any, tmp_path: Path) -> None:
    tb: Testbed = testbed_factory(light=True)
    hosts = tb.up(2)
    one = tmp_path / "app.conf"
    one.write_bytes(b"key: value\n")
    one.chmod(0o640)
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o711)

    async def go() -> tuple[FanoutResult, FanoutResult]:
        async with Fleet(known_hosts=tmp_path / "kh", trust_user_known_hosts=False, ssh_config=False) as f:
            a = await fanout_copy(f, targets(hosts), one, "/etc/fo-app/app.conf")
            b = await fanout_copy(f, targets(hosts), empty, "/srv/fo-empty")
            return a, b

    a, b = asyncio.run(go())
    assert a.ok and b.ok, [o.error for o in a.outcomes + b.outcomes]
    for h in hosts:
        conf = tb.run_on(h, "stat -c %a /etc/fo-app/app.conf; cat /etc/fo-app/app.conf").stdout
        assert conf == "640\nkey: value\n"
        empty_dir = tb.run_on(h, "stat -c %a /srv/fo-empty; ls -A /srv/fo-empty | wc -l").stdout
        assert empty_dir.split() == ["711", "0"]
        assert tb.run_on(h, "ls -A /etc/fo-app").stdout.split() == ["app.conf"]


def test_a_host_its_peer_cannot_reach_is_fed_by_the_operator(testbed_factory: Any, tmp_path: Path) -> None:
    tb: Testbed = testbed_factory(light=True)
    hosts = tb.up(3)
    walled = hosts[1]
    # only the operator may open SSH to it: the host before it in the chain cannot
    tb.allow_ssh_only_from(walled, [tb.net.operator_ip])
    src = make_payload(tmp_path, big=2 * MB, small=5)
    seen: list[HostProgress] = []
    res = copy(tmp_path, hosts, src, chunk_bytes=1 * MB, progress=seen.append)
    assert res.ok, [o.error for o in res.outcomes]
    feeders = [p.parent for p in seen if p.host == walled.ip and p.state in ("receiving", "received")]
    assert feeders and feeders[-1] == "operator"
    want = digest_tree(src)
    for h in hosts:
        assert remote_digest(tb, h) == want
