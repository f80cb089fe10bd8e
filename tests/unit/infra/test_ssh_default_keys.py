"""ssh.pkPasswd without ssh.pk: the keys in ~/.ssh are decrypted once per run (bcrypt costs ~120 ms
of CPU per key), and a wrong passphrase is a clear per-host error, not a raw asyncssh exception."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sealer.infra import ssh as ssh_mod
from sealer.infra.errors import HostAuthError
from sealer.infra.host import Target
from sealer.infra.ssh import SSHConnector

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen missing")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ssh_dir = tmp_path / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(ssh_dir / "id_ed25519")],
                   check=True)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_many_hosts_share_one_decryption(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real = ssh_mod.load_default_keypairs

    def counting(passphrase: str) -> Any:
        calls.append(passphrase)
        return real(passphrase)

    monkeypatch.setattr(ssh_mod, "load_default_keypairs", counting)

    async def go() -> list[list[Any] | None]:
        conn = SSHConnector(known_hosts=None, trust_user_known_hosts=False)
        try:
            targets = [Target(f"10.0.0.{i}", pk_password="secret") for i in range(50)]
            return await asyncio.gather(*(conn._default_keys(t, "secret") for t in targets))
        finally:
            await conn.close()

    keys = asyncio.run(go())
    assert calls == ["secret"]
    assert all(k is not None and len(k) == 1 for k in keys)


def test_an_identity_file_in_ssh_config_is_left_to_asyncssh(home: Path) -> None:
    (home / ".ssh" / "config").write_text("Host 10.0.0.*\n  IdentityFile ~/.ssh/other\n")

    async def go() -> tuple[list[Any] | None, list[Any] | None]:
        conn = SSHConnector(known_hosts=None, trust_user_known_hosts=False)
        try:
            named = await conn._default_keys(Target("10.0.0.1", pk_password="secret"), "secret")
            other = await conn._default_keys(Target("10.9.0.1", pk_password="secret"), "secret")
            return named, other
        finally:
            await conn.close()

    named, other = asyncio.run(go())
    assert named is None  # the config decides for these hosts
    assert other is not None and len(other) == 1


def test_a_wrong_passphrase_names_the_host_with_a_hint(home: Path) -> None:
    async def go() -> None:
        conn = SSHConnector(known_hosts=None, trust_user_known_hosts=False, connect_timeout=2)
        try:
            await conn.run(Target("10.0.0.7", pk_password="wrong"), "true")
        finally:
            await conn.close()

    with pytest.raises(HostAuthError) as info:
        asyncio.run(go())
    assert info.value.host == "10.0.0.7"
    assert "ssh.pkPasswd" in info.value.message and info.value.hint and "ssh.pk" in info.value.hint
