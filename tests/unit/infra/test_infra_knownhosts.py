"""known_hosts handling: OpenSSH format, hashed names, ports, record under a lock, forget."""

from __future__ import annotations

import base64
import hashlib
import hmac
import multiprocessing
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sealer.infra import knownhosts
from sealer.infra.knownhosts import (
    HostIndex,
    KnownHostsFile,
    KnownHostsFileError,
    fingerprint,
    host_pattern,
    keys_for,
    parse,
    patterns_match,
)

needs_keygen = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="ssh-keygen (openssh-client) missing"
)

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh2m3Y1p8dYQw1c3Gd3lqYqG1w0r9M0mQyq0G2oX7hU"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJq8d9pOeKxV2bT7C1u0zFjv9u6wY5k2l8fR3nQ4sE1m"


@needs_keygen
def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = (tmp_path / "k.pub").read_text()
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "k.pub")], capture_output=True, text=True)
    assert fingerprint(pub) == out.stdout.split()[1]
    assert fingerprint(pub).startswith("SHA256:")


def test_host_pattern_uses_brackets_off_port_22() -> None:
    assert host_pattern("10.0.0.1", None) == "10.0.0.1"
    assert host_pattern("10.0.0.1", 22) == "10.0.0.1"
    assert host_pattern("10.0.0.1", 2222) == "[10.0.0.1]:2222"


def test_patterns_lists_wildcards_and_negation() -> None:
    assert patterns_match("a,10.0.0.*", "10.0.0.7")
    assert not patterns_match("10.0.0.*,!10.0.0.7", "10.0.0.7")
    assert not patterns_match("10.0.0.1", "10.0.0.10")


def test_hashed_entries_match_like_openssh() -> None:
    salt = os.urandom(20)
    digest = hmac.new(salt, b"10.1.2.3", hashlib.sha1).digest()
    entry = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()} {KEY_A}\n"
    entries = parse(entry + f"@cert-authority * {KEY_B}\n# comment\nbroken-line\n")
    assert keys_for(entries, "10.1.2.3", None) == [KEY_A]
    assert keys_for(entries, "10.1.2.4", None) == []


@needs_keygen
def test_hashed_entry_written_by_ssh_keygen_is_found(tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(f"10.9.9.9 {KEY_A}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert "10.9.9.9" not in kh.read_text()
    assert keys_for(parse(kh.read_text()), "10.9.9.9", None) == [KEY_A]


def test_record_forget_and_file_mode(tmp_path: Path) -> None:
    store = KnownHostsFile(tmp_path / "c" / "known_hosts")
    assert store.keys_for("10.0.0.1", None) == []
    assert store.record("10.0.0.1", None, KEY_A + " comment")
    assert not store.record("10.0.0.1", None, KEY_A)  # already pinned: no duplicate line
    assert store.record("10.0.0.1", 2222, KEY_B)
    assert store.keys_for("10.0.0.1", None) == [KEY_A]
    assert store.keys_for("10.0.0.1", 2222) == [KEY_B]
    assert (store.path.stat().st_mode & 0o777) == 0o600
    assert store.forget("10.0.0.1") == 1
    assert store.keys_for("10.0.0.1", None) == []
    assert store.keys_for("10.0.0.1", 2222) == [KEY_B]
    assert store.forget("10.0.0.99") == 0


def _record_many(path: str, start: int) -> None:
    store = KnownHostsFile(path)
    for i in range(start, start + 50):
        store.record(f"10.0.{i // 250}.{i % 250}", None, KEY_A)


def test_parallel_processes_never_corrupt_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "known_hosts")
    procs = [multiprocessing.Process(target=_record_many, args=(path, k * 50)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 200
    assert all(line.endswith(KEY_A) and len(line.split()) == 3 for line in lines)


def test_bad_key_text_is_rejected() -> None:
    with pytest.raises(ValueError):
        fingerprint("ssh-ed25519")
    with pytest.raises(ValueError):
        fingerprint("ssh-ed25519 !!notbase64!!")


@needs_keygen
def test_lookups_agree_with_ssh_keygen(tmp_path: Path) -> None:
    """OpenSSH's own `ssh-keygen -F` is the oracle for which lines match a host."""
    kh = tmp_path / "known_hosts"
    lines = [
        f"10.0.0.* {KEY_A}",
        f"[10.0.0.5]:2222 {KEY_B}",
        f"10.1.*,!10.1.0.7 {KEY_B}",
        f"10.2.0.?,host-b {KEY_A}",
        f"[10.3.0.1]:* {KEY_A}",
    ]
    kh.write_text("\n".join(lines) + "\n")
    entries = parse(kh.read_text())
    hosts = [
        ("10.0.0.5", None),
        ("10.0.0.5", 2222),
        ("10.1.0.7", None),
        ("10.1.0.8", None),
        ("10.0.1.1", None),
        ("10.2.0.3", None),
        ("10.2.0.33", None),
        ("10.3.0.1", 2200),
    ]
    for address, port in hosts:
        name = host_pattern(address, port)
        out = subprocess.run(["ssh-keygen", "-F", name, "-f", str(kh)], capture_output=True, text=True).stdout
        expected = [" ".join(line.split()[1:3]) for line in out.splitlines() if not line.startswith("#")]
        assert keys_for(entries, address, port) == expected, name


def _hashed(name: str) -> str:
    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def test_index_answers_like_a_scan_of_every_line() -> None:
    """HostIndex (plain names looked up, the rest matched) gives the same keys in the same order
    as matching every line, for plain, listed, wildcard, negated, hashed, ported and marked lines."""
    lines = [
        f"10.0.0.5 {KEY_A}",
        f"10.0.0.* {KEY_B}",
        f"10.0.0.5,10.0.0.6,10.0.0.5 {KEY_B}",
        f"[10.0.0.5]:2222 {KEY_A}",
        f"10.1.*,!10.1.0.7 {KEY_A}",
        f"{_hashed('10.2.0.1')} {KEY_B}",
        f"@revoked 10.0.0.5 {KEY_B}",
        f"@cert-authority * {KEY_A}",
        f"10.0.0.5 {KEY_B}",
    ]
    entries = parse("\n".join(lines))
    index = HostIndex(entries)
    hosts = [("10.0.0.5", None), ("10.0.0.5", 2222), ("10.0.0.6", None), ("10.0.0.7", 22),
             ("10.1.0.7", None), ("10.1.0.8", None), ("10.2.0.1", None), ("10.3.0.1", None)]
    for address, port in hosts:
        assert index.keys_for(address, port) == keys_for(entries, address, port), (address, port)
    assert index.keys_for("10.0.0.5", None) == [KEY_A, KEY_B, KEY_B, KEY_B]


def test_many_hosts_parse_the_file_once_not_once_per_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connecting to N hosts looks each up and records each: re-reading the file every time made
    that O(N^2) (300 hosts: 90,000 pattern matches). Our own appends keep the parsed copy valid."""
    parses = []
    real_parse = knownhosts.parse

    def counting_parse(text: str) -> list[knownhosts.Entry]:
        parses.append(len(text))
        return real_parse(text)

    monkeypatch.setattr(knownhosts, "parse", counting_parse)
    store = KnownHostsFile(tmp_path / "known_hosts")
    for i in range(300):
        address = f"10.0.{i // 250}.{i % 250}"
        assert store.keys_for(address, None) == []
        assert store.record(address, None, KEY_A)
    assert len(parses) == 1
    assert len(Path(store.path).read_text().splitlines()) == 300
    assert KnownHostsFile(store.path).keys_for("10.0.1.49", None) == [KEY_A]


def test_a_change_by_another_writer_is_seen(tmp_path: Path) -> None:
    ours, theirs = KnownHostsFile(tmp_path / "known_hosts"), KnownHostsFile(tmp_path / "known_hosts")
    assert ours.record("10.0.0.1", None, KEY_A)
    assert ours.keys_for("10.0.0.2", None) == []
    assert theirs.record("10.0.0.2", None, KEY_B)  # another sealer process, say
    assert ours.keys_for("10.0.0.2", None) == [KEY_B]
    assert not ours.record("10.0.0.2", None, KEY_B)  # no duplicate line
    assert theirs.forget("10.0.0.1") == 1
    assert ours.keys_for("10.0.0.1", None) == []
    # a hand edit that leaves no newline at the end: our next line still starts on its own
    with open(tmp_path / "known_hosts", "a") as f:
        f.write(f"10.0.0.3 {KEY_A}")
    assert ours.record("10.0.0.4", None, KEY_B)
    assert ours.keys_for("10.0.0.3", None) == [KEY_A]
    assert KnownHostsFile(tmp_path / "known_hosts").keys_for("10.0.0.4", None) == [KEY_B]


def test_record_many_takes_one_write_for_a_batch(tmp_path: Path) -> None:
    store = KnownHostsFile(tmp_path / "known_hosts")
    assert store.record("10.0.0.1", None, KEY_A)
    items: list[tuple[str, int | None, str]] = [
        ("10.0.0.1", None, KEY_A),  # pinned already
        ("10.0.0.2", None, KEY_A + " comment"),
        ("10.0.0.2", None, KEY_A),  # twice in one batch
        ("10.0.0.2", 2222, KEY_B),
    ]
    writes = store.writes
    assert store.record_many(items) == [False, True, False, True]
    assert store.writes == writes + 1
    assert Path(store.path).read_text().splitlines() == [
        f"10.0.0.1 {KEY_A}", f"10.0.0.2 {KEY_A}", f"[10.0.0.2]:2222 {KEY_B}"
    ]


def test_record_into_an_unwritable_place_names_the_file_with_a_hint(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    store = KnownHostsFile(blocker / "known_hosts")
    with pytest.raises(KnownHostsFileError) as info:
        store.record_many([("10.0.0.1", None, KEY_A), ("10.0.0.2", None, KEY_A)])
    assert str(blocker / "known_hosts") in info.value.message
    assert info.value.hint
