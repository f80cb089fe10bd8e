"""The copy machinery run against real sh/tar/coreutils on this machine through the local
connector: manifest diff, modes, temp-name landing, interrupted streams, re-copy skipping."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import subprocess
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sealer.infra import transfer
from sealer.infra.errors import DiskFullError, TransferError
from sealer.infra.host import Target
from sealer.infra.local import LocalConnector, is_local_address
from sealer.infra.transfer import (
    LocalSourceError,
    batches,
    local_tree,
    manifest_script,
    needed,
    parse_manifest,
    tar_stream,
)

ME = Target("127.0.0.1")


def make_tree(root: Path) -> None:
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "sub" / "run.sh").chmod(0o750)
    (root / "sub" / "deep" / "big.bin").write_bytes(os.urandom(300_000))
    (root / "name with 'quotes' and\nnewline").write_text("odd\n")
    (root / "link").symlink_to("a.txt")
    (root / "private").mkdir(mode=0o700)
    (root / "private" / "key").write_text("k")
    (root / "private" / "key").chmod(0o600)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


def test_local_tree_file_and_dir_layouts(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    t = local_tree(tmp_path / "src" / "a.txt", "/etc/app.conf")
    assert (t.root, [e.rel for e in t.entries]) == ("/etc", ["app.conf"])
    t = local_tree(tmp_path / "src" / "a.txt", "/opt/app/")
    assert (t.root, [e.rel for e in t.entries]) == ("/opt/app", ["a.txt"])
    t = local_tree(tmp_path / "src", "/opt/app/")
    assert t.root == "/opt/app"
    kinds = {e.rel: e.kind for e in t.entries}
    assert kinds["."] == "dir" and kinds["link"] == "symlink" and kinds["sub/deep/big.bin"] == "file"
    big = next(e for e in t.entries if e.rel == "sub/deep/big.bin")
    assert big.sha256 == digest(tmp_path / "src" / "sub" / "deep" / "big.bin")
    with pytest.raises(LocalSourceError, match="no such file"):
        local_tree(tmp_path / "missing", "/x")


def test_tar_stream_is_a_valid_tar_with_modes(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    t = local_tree(tmp_path / "src", "/x")
    data = asyncio.run(collect(tar_stream(t.entries)))
    assert len(data) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["./sub/run.sh"].mode == 0o750
    assert members["./link"].issym() and members["./link"].linkname == "a.txt"
    # GNU tar agrees (long and odd names included)
    listing = subprocess.run(["tar", "-t", "-f", "-"], input=data, capture_output=True, check=True).stdout
    assert b"./name with 'quotes' and\\nnewline" in listing


def test_batches_split_files_and_carry_dirs_everywhere(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    entries = list(local_tree(tmp_path / "src", "/x").entries)
    parts = batches(entries, limit=100)
    files = [e.rel for p in parts for e in p if e.kind == "file"]
    assert sorted(files) == sorted(e.rel for e in entries if e.kind == "file")
    assert len(parts) >= 2
    dirs = {e.rel for e in entries if e.kind == "dir"}
    assert all(dirs <= {e.rel for e in p} for p in parts)


def run_local(coro_factory):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        async with LocalConnector() as conn:
            return await coro_factory(conn)

    return asyncio.run(go())


def test_copy_then_recopy_skips_equal_and_fixes_changed(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    first = run_local(lambda c: c.put(ME, src, str(dst)))
    assert first.files_sent == 5 and first.files_skipped == 0
    assert digest(dst / "sub" / "deep" / "big.bin") == digest(src / "sub" / "deep" / "big.bin")
    assert (dst / "sub" / "run.sh").stat().st_mode & 0o7777 == 0o750
    assert (dst / "private").stat().st_mode & 0o7777 == 0o700
    assert (dst / "private" / "key").stat().st_mode & 0o7777 == 0o600
    assert os.readlink(dst / "link") == "a.txt"
    assert (dst / "name with 'quotes' and\nnewline").read_text() == "odd\n"
    assert not [p for p in dst.iterdir() if p.name.startswith(transfer.STAGE_PREFIX)]

    (src / "a.txt").write_text("changed\n")
    (dst / "sub" / "run.sh").chmod(0o644)  # mode drift on the host is repaired too
    again = run_local(lambda c: c.put(ME, src, str(dst)))
    assert (again.files_sent, again.files_skipped) == (2, 3)
    assert (dst / "a.txt").read_text() == "changed\n"
    assert (dst / "sub" / "run.sh").stat().st_mode & 0o7777 == 0o750


def test_manifest_reports_only_regular_files(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "f").write_text("x")
    (root / "d").mkdir()
    (root / "l").symlink_to("f")
    names = b"f\0d\0l\0missing\0"
    out = subprocess.run(["sh", "-c", manifest_script(str(root))], input=names, capture_output=True).stdout
    found = parse_manifest(out)
    assert found["f"].regular and found["f"].sha256 == hashlib.sha256(b"x").hexdigest()
    assert not found["l"].regular and not found["d"].regular
    assert "missing" not in found
    # a symlink where a file should be is replaced, not trusted
    tree = transfer.LocalTree(str(root), (transfer.LocalEntry("l", "file", 0o644, 1, found["f"].sha256),))
    assert [e.rel for e in needed(tree, found)] == ["l"]
    # a destination that does not exist yet is simply empty
    out = subprocess.run(
        ["sh", "-c", manifest_script(str(tmp_path / "nope"))], input=names, capture_output=True, check=True
    ).stdout
    assert parse_manifest(out) == {}


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize("cut", ["mid-file", "member-boundary"])
def test_cut_stream_leaves_no_file_at_destination(tmp_path: Path, cut: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(10_000))
    (src / "b.bin").write_bytes(os.urandom(2_000_000))
    dst.mkdir()
    (dst / "b.bin").write_bytes(b"old")
    tree = local_tree(src, str(dst))
    data = asyncio.run(collect(tar_stream(tree.entries)))
    if cut == "mid-file":
        part = data[: len(data) // 2]
    else:  # right after a.bin: a valid tar, only the rest is missing
        a_end = 512 * 2 + 10_240  # "." header, a.bin header, a.bin data padded
        part = data[:a_end]

    async def go(conn: LocalConnector) -> tuple[int | None, bytes, str]:
        execb = conn._execb(ME, False, None)
        return await execb(transfer.extract_script(str(dst), is_dir=True), _chunks(part))

    code, _, err = run_local(go)
    assert code != 0
    assert ("Unexpected EOF" in err) if cut == "mid-file" else ("incomplete transfer" in err)
    assert (dst / "b.bin").read_bytes() == b"old"  # the old file, whole; never a part of the new
    assert sorted(p.name for p in dst.iterdir()) == ["b.bin"]  # nothing else landed; stage removed


def test_local_file_failing_mid_copy_is_reported_and_lands_nothing(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 100_000)
    tree = local_tree(src, str(dst))
    (src / "f").write_bytes(b"x" * 10)  # shrinks after the manifest was taken
    with pytest.raises(LocalSourceError, match="shrank"):
        run_local(lambda c: c.put(ME, src, str(dst), tree=tree))
    assert not (dst / "f").exists()


def test_copy_errors_name_host_and_cause(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_text("x")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TransferError, match=r"127\.0\.0\.1: copying to"):
        run_local(lambda c: c.put(ME, src, str(blocker / "under" / "x")))
    err = transfer.transfer_failure(
        "h1", "copying to", "tar: x: Cannot write: No space left on device\n", "/d"
    )
    assert isinstance(err, DiskFullError) and "h1" in str(err) and "no space" in err.message


def test_get_fetches_file_and_dir(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    got = tmp_path / "got"
    stats = run_local(lambda c: c.get(ME, str(tmp_path / "src" / "sub"), got))
    assert stats.files_sent == 2
    assert (got / "run.sh").stat().st_mode & 0o777 == 0o750
    run_local(lambda c: c.get(ME, str(tmp_path / "src" / "a.txt"), tmp_path / "a.copy"))
    assert (tmp_path / "a.copy").read_text() == "alpha\n"


def test_local_addresses_are_detected() -> None:
    assert is_local_address("127.0.0.1")
    assert is_local_address("::1") or not os.path.exists("/proc/net/if_inet6")
    assert not is_local_address("192.0.2.77")  # TEST-NET-1, never assigned
    assert not is_local_address("not-an-ip")


def test_stale_stages_go_live_ones_stay(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "f").write_text("x")
    dst.mkdir()
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    stages = {
        "dead": dst / f"{transfer.STAGE_PREFIX}{dead}.aaaaaa",
        "live": dst / f"{transfer.STAGE_PREFIX}{os.getpid()}.bbbbbb",
        "old": dst / f"{transfer.STAGE_PREFIX}1.cccccc",  # pid 1 lives, but untouched for long
    }
    for d in stages.values():
        d.mkdir()
        (d / "part").write_text("partial")
    subprocess.run(["touch", "-d", "20 minutes ago", str(stages["old"])], check=True)
    run_local(lambda c: c.put(ME, src, str(dst)))
    assert (dst / "f").read_text() == "x"
    assert [k for k, d in stages.items() if d.exists()] == ["live"]


def test_concurrent_copies_into_one_directory(tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    sources = []
    for name in ("a", "b", "c"):
        d = tmp_path / name
        d.mkdir()
        for i in range(20):
            (d / f"{name}{i}.bin").write_bytes(os.urandom(50_000))
        sources.append(d)

    async def go(conn: LocalConnector) -> list[object]:
        return list(await asyncio.gather(*(conn.put(ME, s, str(dst)) for s in sources)))

    stats = run_local(go)
    assert [s.files_sent for s in stats] == [20, 20, 20]  # type: ignore[attr-defined]
    for s in sources:
        for f in s.iterdir():
            assert (dst / f.name).read_bytes() == f.read_bytes()
    assert not [p for p in dst.iterdir() if p.name.startswith(transfer.STAGE_PREFIX)]


def test_file_onto_a_directory_says_to_end_dst_with_slash(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "dir").mkdir()
    with pytest.raises(TransferError) as info:
        run_local(lambda c: c.put(ME, tmp_path / "f", str(tmp_path / "dir")))
    assert info.value.hint is not None and "end DST with '/'" in info.value.hint
    run_local(lambda c: c.put(ME, tmp_path / "f", str(tmp_path / "dir") + "/"))
    assert (tmp_path / "dir" / "f").read_text() == "x"
