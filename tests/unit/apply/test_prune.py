"""Disk hygiene: what `sealer prune` and `rmi` remove from the rootfs cache, the build cache and the
image store, and what they must leave alone (entries in use, live ingest, anything outside
$SEALER_HOME)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sealer.apply.prune import INGEST_IDLE_SECONDS, PrunePaths, drop_rootfs_cache, image_ids_of, prune
from sealer.apply.rootfs import COMPLETE, prune_cache, release_cache_holds, unpack
from sealer.image.build import BuildCache, LayerInfo, build_cache_entries, prune_build_cache
from sealer.image.store import ImageStore
from tests.registry_fixture import make_test_image, tar_layer

pytestmark = pytest.mark.usefixtures("released_cache_holds")


@pytest.fixture
def paths(tmp_path: Path) -> PrunePaths:
    home = tmp_path / "home"
    return PrunePaths(home / "images", home / "cache" / "rootfs", home / "build-cache")


def _image(store: ImageStore, name: str, payload: bytes) -> str:
    make_test_image(store, name, [tar_layer({"bin/tool": payload, "registry/x": b"r"})])
    return store.select(name).id


def _unpacked(store: ImageStore, name: str, cache: Path) -> Path:
    top = unpack(store, store.select(name), cache).rootfs.parent
    release_cache_holds()
    return top


def test_unpack_holds_its_entry_until_released(paths: PrunePaths) -> None:
    store = ImageStore(paths.store)
    image_id = _image(store, "a:1", b"a" * 1000)
    unpack(store, store.select("a:1"), paths.rootfs_cache)
    ident = image_id.split(":", 1)[1]
    probe = os.open(paths.rootfs_cache / f".{ident}.lock", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)  # other users may share it
        fcntl.flock(probe, fcntl.LOCK_UN)
        release_cache_holds()
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(probe)


def test_prune_keeps_images_in_the_store_and_drops_the_rest(paths: PrunePaths) -> None:
    store = ImageStore(paths.store)
    kept_id = _image(store, "kept:1", b"k" * 5000)
    gone_id = _image(store, "gone:1", b"g" * 7000)
    kept_top = _unpacked(store, "kept:1", paths.rootfs_cache)
    gone_top = _unpacked(store, "gone:1", paths.rootfs_cache)
    store.untag([store.resolve("gone:1").name])  # as if removed by an older sealer that left its cache behind
    dry = prune(dry_run=True, paths=paths)
    assert [(r.kind, r.detail, r.path) for r in dry.removed if r.kind == "rootfs cache"] == [
        ("rootfs cache", gone_id, gone_top)
    ]
    assert gone_top.is_dir()  # a dry run removes nothing
    rootfs_bytes = next(r.size for r in dry.removed if r.kind == "rootfs cache")
    assert rootfs_bytes == 7000 + 1 + len(gone_id + "\n")  # bin/tool, registry/x, the COMPLETE marker
    report = prune(paths=paths)
    assert not gone_top.exists() and not (paths.rootfs_cache / f".{gone_id[7:]}.lock").exists()
    assert (kept_top / COMPLETE).exists() and (paths.rootfs_cache / f".{kept_id[7:]}.lock").exists()
    assert report.total >= rootfs_bytes
    # the unused blobs of the untagged image went too, and the kept image still runs
    assert any(r.kind == "unused blob" for r in report.removed)
    assert store.missing_blobs(store.resolve("kept:1").descriptor) == []
    assert prune(paths=paths).removed == []  # nothing left to do


def test_all_drops_every_rootfs_and_unpack_rebuilds_it(paths: PrunePaths) -> None:
    store = ImageStore(paths.store)
    _image(store, "a:1", b"a" * 100)
    top = _unpacked(store, "a:1", paths.rootfs_cache)
    assert [r.kind for r in prune(paths=paths).removed] == []
    assert [r.kind for r in prune(all_rootfs=True, paths=paths).removed] == ["rootfs cache"]
    assert not top.exists()
    again = unpack(store, store.select("a:1"), paths.rootfs_cache)
    assert (again.rootfs / "bin/tool").read_bytes() == b"a" * 100


def test_partial_leftovers_go_even_for_images_in_the_store(paths: PrunePaths) -> None:
    store = ImageStore(paths.store)
    image_id = _image(store, "a:1", b"a" * 100)
    top = _unpacked(store, "a:1", paths.rootfs_cache)
    partial = paths.rootfs_cache / f".{image_id[7:]}.partial"
    (partial / "rootfs").mkdir(parents=True)
    (partial / "rootfs" / "half").write_bytes(b"x" * 333)  # a crashed unpack
    report = prune(paths=paths)
    assert [(r.kind, r.size) for r in report.removed] == [("unpack leftover", 333)]
    assert not partial.exists() and (top / COMPLETE).exists()


def test_an_entry_in_use_is_skipped_and_said_so(paths: PrunePaths) -> None:
    store = ImageStore(paths.store)
    image_id = _image(store, "a:1", b"a" * 100)
    top = _unpacked(store, "a:1", paths.rootfs_cache)
    # flock is per open file: a second open in this process contends as another process would
    holder = os.open(paths.rootfs_cache / f".{image_id[7:]}.lock", os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_SH)
        report = prune(all_rootfs=True, paths=paths)
        assert report.removed == [] and top.is_dir()
        assert report.skipped == [
            f"rootfs cache of {image_id[:19]}: in use by another sealer process (left in place)"
        ]
    finally:
        os.close(holder)
    assert [r.kind for r in prune(all_rootfs=True, paths=paths).removed] == ["rootfs cache"]


def test_a_running_sealer_process_keeps_its_rootfs(paths: PrunePaths, tmp_path: Path) -> None:
    # The real case: another process unpacked the image and is distributing it from the cache.
    store = ImageStore(paths.store)
    _image(store, "a:1", b"a" * 100)
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from sealer.apply.rootfs import unpack
        from sealer.image.store import ImageStore
        store = ImageStore(Path({str(paths.store)!r}))
        unpack(store, store.select("a:1"), Path({str(paths.rootfs_cache)!r}))
        print("unpacked", flush=True)
        sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "unpacked"
        report = prune(all_rootfs=True, paths=paths)
        assert report.removed == [] and len(report.skipped) == 1
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    assert [r.kind for r in prune(all_rootfs=True, paths=paths).removed] == ["rootfs cache"]


def test_unpack_waiting_while_a_prune_removes_the_entry_holds_the_new_lock_file(paths: PrunePaths) -> None:
    # A run waits in flock while a prune holds the entry; the prune deletes the entry and unlinks the
    # lock file. The run must not end up holding the unlinked file (a later prune could not see
    # its hold): it opens the new one, unpacks afresh, and holds that.
    store = ImageStore(paths.store)
    image_id = _image(store, "a:1", b"a" * 100)
    top = _unpacked(store, "a:1", paths.rootfs_cache)
    lock_path = paths.rootfs_cache / f".{image_id[7:]}.lock"
    pruner = os.open(lock_path, os.O_RDWR)
    fcntl.flock(pruner, fcntl.LOCK_EX)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(unpack, store, store.select("a:1"), paths.rootfs_cache)
        time.sleep(0.2)  # let it reach flock (if it is slower, it simply finds the new state)
        shutil.rmtree(top)
        os.unlink(lock_path)
        os.close(pruner)  # releases the prune's lock
        again = waiting.result(timeout=60)
    assert (again.rootfs / "bin/tool").read_bytes() == b"a" * 100
    probe = os.open(lock_path, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(probe)
    assert prune(all_rootfs=True, paths=paths).removed == []


def test_only_names_the_cache_makes_are_touched_and_symlinks_are_not_followed(
    paths: PrunePaths, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "precious").mkdir(parents=True)
    (outside / "precious" / "file").write_text("keep me")
    paths.rootfs_cache.mkdir(parents=True)
    ident = "ab" * 32
    (paths.rootfs_cache / ident).symlink_to(outside / "precious")
    (paths.rootfs_cache / "notes.txt").write_text("a user's file")
    (paths.rootfs_cache / f".{ident}.partial").symlink_to(outside)
    ImageStore(paths.store)
    report = prune(paths=paths)
    assert sorted(r.kind for r in report.removed) == ["rootfs cache", "unpack leftover"]
    assert (outside / "precious" / "file").read_text() == "keep me"
    assert sorted(p.name for p in paths.rootfs_cache.iterdir()) == ["notes.txt"]
    assert all(r.path.is_relative_to(paths.rootfs_cache.parent.parent) for r in report.removed)


def test_drop_rootfs_cache_spares_an_image_another_name_still_has(paths: PrunePaths) -> None:
    store = ImageStore(paths.store)
    image_id = _image(store, "a:1", b"a" * 100)
    store.tag("b:1", store.resolve("a:1").descriptor)
    top = _unpacked(store, "a:1", paths.rootfs_cache)
    ids = image_ids_of(store, ["a:1"])
    assert ids == {image_id}
    store.untag([store.resolve("a:1").name])
    assert drop_rootfs_cache(ids, store=store, cache=paths.rootfs_cache).removed == []
    assert top.is_dir()
    store.untag([store.resolve("b:1").name])
    dropped = drop_rootfs_cache(ids, store=store, cache=paths.rootfs_cache)
    assert [(r.kind, r.detail) for r in dropped.removed] == [("rootfs cache", image_id)]
    assert not top.exists()


def test_prune_cache_only_touches_the_given_ids(paths: PrunePaths) -> None:
    store = ImageStore(paths.store)
    a, b = _image(store, "a:1", b"a"), _image(store, "b:1", b"b")
    top_a, top_b = _unpacked(store, "a:1", paths.rootfs_cache), _unpacked(store, "b:1", paths.rootfs_cache)
    result = prune_cache(paths.rootfs_cache, only={a})
    assert [r.image_id for r in result.removed] == [a]
    assert not top_a.exists() and top_b.is_dir() and b != a


# ingest and blobs --------------------------------------------------------------------------------------
def test_ingest_files_go_only_once_idle_for_an_hour(paths: PrunePaths) -> None:
    store = ImageStore(paths.store)
    old = store.ingest_dir / "blob-old"
    old.write_bytes(b"o" * 10)
    fresh = store.ingest_dir / "blob-fresh"
    fresh.write_bytes(b"f" * 20)
    past = time.time() - INGEST_IDLE_SECONDS - 60
    os.utime(old, (past, past))
    interrupted = store.root / ".tmp-abc"
    interrupted.write_bytes(b"t")
    os.utime(interrupted, (past, past))
    report = prune(paths=paths)
    assert sorted((r.kind, r.path.name, r.size) for r in report.removed) == [
        ("ingest leftover", ".tmp-abc", 1), ("ingest leftover", "blob-old", 10)
    ]
    assert fresh.exists() and not old.exists() and (store.root / "index.json").exists()


def test_while_a_pull_holds_the_store_build_cache_and_blobs_wait(paths: PrunePaths) -> None:
    store = ImageStore(paths.store)
    stray = store.put_blob(b"not referenced")
    (paths.build_cache / "layers").mkdir(parents=True)
    (paths.build_cache / "layers" / "k.json").write_text("{}")
    (paths.build_cache / "sealer-build-live").mkdir()  # a running build's work tree
    with store.ingest():  # what a pull, load or build holds
        report = prune(paths=paths)
        assert report.removed == [] and "a pull, load or build is running" in report.skipped[0]
        assert store.has_blob(stray.digest) and (paths.build_cache / "sealer-build-live").is_dir()
    report = prune(paths=paths)
    assert sorted(r.kind for r in report.removed) == [
        "build cache (layer record)", "build cache (leftover)", "unused blob"
    ]
    assert not store.has_blob(stray.digest)


# build cache ---------------------------------------------------------------------------------------------
def _age(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when), follow_symlinks=False)


def test_build_cache_entries_and_until(tmp_path: Path) -> None:
    cache = tmp_path / "build-cache"
    store = ImageStore(tmp_path / "images")
    layers = BuildCache(cache, store)
    blob = store.put_blob(b"layer")
    layers.put("old", LayerInfo(blob.digest, blob.size, blob.digest, "m"))
    layers.put("new", LayerInfo(blob.digest, blob.size, blob.digest, "m"))
    _age(cache / "layers" / "old.json", 3 * 86400)
    (cache / "downloads" / "h1").mkdir(parents=True)
    (cache / "downloads" / "h1" / "k3s").write_bytes(b"k" * 100)
    _age(cache / "downloads" / "h1" / "k3s", 3 * 86400)
    _age(cache / "downloads" / "h1", 3 * 86400)
    (cache / "unpacked" / "d1").mkdir(parents=True)
    (cache / "unpacked" / "d1" / "f").write_bytes(b"u" * 50)
    (cache / "sealer-build-x1").mkdir()
    (cache / "sealer-build-x1" / "work").write_bytes(b"w" * 7)
    ImageStore(cache / "images")
    kinds = sorted(e.kind for e in build_cache_entries(cache))
    assert kinds == [
        "download", "image cache", "layer record", "layer record", "leftover", "unpacked archive"
    ]
    gone = prune_build_cache(cache, unused_for=86400, dry_run=False)
    assert sorted((e.kind, e.path.name) for e in gone) == [
        ("download", "h1"), ("layer record", "old.json"), ("leftover", "sealer-build-x1")
    ]
    # a hit refreshes the record's last use: it survives the next --until prune
    _age(cache / "layers" / "new.json", 3 * 86400)
    assert layers.get("new") is not None
    assert prune_build_cache(cache, unused_for=86400, dry_run=False) == []
    rest = prune_build_cache(cache, unused_for=None, dry_run=True)
    assert sorted(e.kind for e in rest) == ["image cache", "layer record", "unpacked archive"]
    assert (cache / "unpacked" / "d1").is_dir()
    prune_build_cache(cache, unused_for=None, dry_run=False)
    assert build_cache_entries(cache) == []
    assert store.has_blob(blob.digest)  # the layers themselves belong to the image store


def test_build_cache_symlink_is_removed_as_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("keep")
    cache = tmp_path / "build-cache"
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / "h").symlink_to(outside)
    (cache / "unpacked").symlink_to(outside)  # a linked directory is not walked at all
    gone = prune_build_cache(cache, unused_for=None, dry_run=False)
    assert [e.path.name for e in gone] == ["h"]
    assert (outside / "f").read_text() == "keep"


def test_processes_unpacking_one_image_at_once_share_one_entry(paths: PrunePaths) -> None:
    # Threads of one process now share unpack's hold, so this takes real processes: each waits for
    # the first one's unpack and reuses it, and all of them hold it until they end.
    store = ImageStore(paths.store)
    files = {f"opt/f{i}": bytes([i]) * 40_000 for i in range(100)}
    make_test_image(store, "big:1", [tar_layer(files)])
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from sealer.apply.rootfs import unpack
        from sealer.image.store import ImageStore
        store = ImageStore(Path({str(paths.store)!r}))
        print(unpack(store, store.select("big:1"), Path({str(paths.rootfs_cache)!r})).rootfs, flush=True)
        sys.stdin.readline()
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    try:
        roots = {p.stdout.readline().strip() for p in procs if p.stdout is not None}
        assert len(roots) == 1
        root = Path(roots.pop())
        assert all((root / name).read_bytes() == data for name, data in files.items())
        assert [p.name for p in paths.rootfs_cache.iterdir() if p.name.endswith(".partial")] == []
        report = prune(all_rootfs=True, paths=paths)
        assert report.removed == [] and len(report.skipped) == 1
    finally:
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
        assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert [r.kind for r in prune(all_rootfs=True, paths=paths).removed] == ["rootfs cache"]
