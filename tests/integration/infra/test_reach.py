"""Reaching hosts: through a bastion when the target's port is closed to all but the bastion,
~/.ssh/config (User, IdentityFile, ProxyJump), pinned host keys (tofu, strict, changed keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sealer.errors import HostKeyError
from sealer.infra.errors import HostUnreachableError
from sealer.infra.host import Target
from sealer.infra.knownhosts import KnownHostsFile, fingerprint

from .conftest import fleet, root_target, run

pytestmark = [pytest.mark.integration, pytest.mark.testbed]


def test_host_reachable_only_through_bastion(
    testbed_factory: Any, fleet_args: dict[str, Any], tmp_path: Path
) -> None:
    tb = testbed_factory(light=True)
    jump, inner = tb.up(2)
    tb.allow_ssh_only_from(inner, [jump.ip])
    (tmp_path / "f").write_text("through the bastion\n")

    async def go() -> tuple[Any, Any, Any]:
        async with fleet(fleet_args, connect_timeout=2.0) as f:
            direct = await f.each([root_target(inner)], lambda t: f.run(t, "hostname"))
            via = root_target(inner, bastion=root_target(jump))
            res = await f.run(via, "hostname; echo $SSH_CONNECTION")
            copied = await f.put(via, tmp_path / "f", "/tmp/f")
            return direct, res, copied

    direct, res, copied = run(go)
    assert isinstance(direct[0].error, HostUnreachableError)
    name, conn = res.stdout.splitlines()
    assert name == inner.name
    assert conn.split()[0] == jump.ip  # the session really came from the bastion
    assert copied.files_sent == 1
    assert tb.run_on(inner, "cat /tmp/f").stdout == "through the bastion\n"
    pinned = KnownHostsFile(fleet_args["known_hosts"])
    assert pinned.keys_for(jump.ip, None) and pinned.keys_for(inner.ip, None)  # both keys checked


def test_ssh_config_user_identity_and_proxyjump(
    testbed_factory: Any, fleet_args: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tb = testbed_factory(light=True)
    jump, inner = tb.up(2)
    tb.allow_ssh_only_from(inner, [jump.ip])
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".ssh" / "config").write_text(
        f"Host {jump.ip}\n  User root\n  IdentityFile {jump.root_key}\n"
        f"Host {inner.ip}\n  User tbuser\n  ProxyJump {jump.ip}\n  IdentityFile {inner.root_key}\n"
    )
    # the jump hop is verified by asyncssh against ~/.ssh/known_hosts, like OpenSSH would
    (home / ".ssh" / "known_hosts").write_text(f"{jump.ip} {jump.host_key}\n")
    tb.run_on(
        inner,
        "install -d -m700 -o tbuser -g tbuser /home/tbuser/.ssh && cat /root/.ssh/authorized_keys "
        "> /home/tbuser/.ssh/authorized_keys && chown tbuser: /home/tbuser/.ssh/authorized_keys",
    )
    monkeypatch.setenv("HOME", str(home))
    user, password = inner.sudo_user

    async def go() -> tuple[Any, Any]:
        async with fleet(fleet_args, ssh_config=True, trust_user_known_hosts=True) as f:
            from_config = await f.run(Target(inner.ip), "id -un; hostname")
            # a user written in the Clusterfile wins over the config's User
            explicit = await f.run(Target(inner.ip, user=user, password=password), "id -un")
            return from_config, explicit

    from_config, explicit = run(go)
    assert from_config.stdout.split() == ["tbuser", inner.name]
    assert explicit.stdout.strip() == user


def test_changed_host_key_refused_with_both_fingerprints(
    testbed_factory: Any, fleet_args: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tb = testbed_factory(light=True)
    h, other = tb.up(2)
    old_key = h.host_key

    async def connect(**over: Any) -> Any:
        targets = [root_target(h, **over)]
        async with fleet(fleet_args, cluster="demo") as f:
            return (await f.run_many(targets, "hostname"))[0]

    first = run(lambda: connect())
    assert first.ok  # tofu: recorded on first contact
    new_key = tb.rotate_host_key(h)
    changed = run(lambda: connect())
    err = changed.error
    assert isinstance(err, HostKeyError)
    assert str(err).startswith(h.ip + ": host key changed")
    assert fingerprint(old_key) in err.message and fingerprint(new_key) in err.message
    assert err.hint is not None and f"sealer hosts forget {h.ip} --cluster demo" in err.hint
    assert KnownHostsFile(fleet_args["known_hosts"]).keys_for(h.ip, None) == [old_key.strip()]

    # deliberately accepting the new key: forget, connect, the new key is pinned
    assert KnownHostsFile(fleet_args["known_hosts"]).forget(h.ip) == 1
    assert run(lambda: connect()).ok
    assert KnownHostsFile(fleet_args["known_hosts"]).keys_for(h.ip, None) == [new_key.strip()]

    # strict: an unpinned host is refused; a key given in the Clusterfile is enough
    strict = run(lambda: connect_other(fleet_args, other, host_key_policy="strict"))
    assert isinstance(strict.error, HostKeyError) and "not pinned" in strict.error.message
    pinned_in_file = run(
        lambda: connect_other(fleet_args, other, host_key_policy="strict", host_key=other.host_key)
    )
    assert pinned_in_file.ok
    # a wrong key given in the Clusterfile is refused even on first contact
    KnownHostsFile(fleet_args["known_hosts"]).forget(other.ip)
    wrong = run(lambda: connect_other(fleet_args, other, host_key=old_key))
    assert isinstance(wrong.error, HostKeyError) and fingerprint(other.host_key) in wrong.error.message

    # keys the operator already trusts in ~/.ssh/known_hosts count as pinned
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(f"{other.ip} {other.host_key}\n")
    monkeypatch.setenv("HOME", str(home))
    trusted = run(
        lambda: connect_other({**fleet_args, "trust_user_known_hosts": True}, other, host_key_policy="strict")
    )
    assert trusted.ok


async def connect_other(args: dict[str, Any], h: Any, **over: Any) -> Any:
    async with fleet(args) as f:
        return (await f.run_many([root_target(h, **over)], "true"))[0]
