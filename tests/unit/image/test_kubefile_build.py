"""Builder internals: reproducible layers, whiteouts, the work tree, and the layer cache."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealer.image.build import (
    BuildCache,
    Entry,
    LayerInfo,
    _diff,
    _snapshot,
    entries_key,
    write_layer,
)
from sealer.image.layers import apply_layer
from sealer.image.store import ImageStore


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


def test_layer_is_reproducible_whatever_the_file_times_and_owners(tmp_path: Path, store: ImageStore) -> None:
    src = tmp_path / "a.yaml"
    src.write_text("kind: x\n")
    entries = [
        Entry("manifests/a.yaml", "file", 0o644, source=src),
        Entry("bin/tool", "file", 0o755, data=b"t"),
    ]
    first = write_layer(store, entries)
    os.utime(src, (1, 1_700_000_000))
    second = write_layer(store, list(reversed(entries)))
    assert first == second
    with tarfile.open(store.blob_path(first.digest)) as tar:
        members = tar.getmembers()
    assert [(m.name, m.isdir()) for m in members] == [
        ("bin", True), ("bin/tool", False), ("manifests", True), ("manifests/a.yaml", False)
    ]  # fmt: skip
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert first.media_type.endswith("tar+gzip") and first.diff_id != first.digest


def test_uncompressed_layer_diff_id_is_its_digest(store: ImageStore) -> None:
    info = write_layer(store, [Entry("registry/x", "file", data=b"blob")], compress=False)
    assert info.diff_id == info.digest and info.media_type.endswith("layer.v1.tar")


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z]{1,3}(/[a-z]{1,3}){0,2}", fullmatch=True), st.binary(max_size=64), max_size=8
    ),
    st.randoms(),
)
def test_entry_order_never_changes_the_digest(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes], rnd: object
) -> None:
    store = ImageStore(tmp_path_factory.mktemp("s"))
    # A path cannot be both a file and a parent directory of another file.
    paths = [p for p in files if not any(o.startswith(p + "/") for o in files)]
    entries = [Entry(p, "file", 0o644, data=files[p]) for p in paths]
    shuffled = list(entries)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert write_layer(store, entries) == write_layer(store, shuffled)
    assert entries_key(entries) == entries_key(shuffled)


def test_whiteouts_are_written_and_applied(tmp_path: Path, store: ImageStore) -> None:
    root = tmp_path / "rootfs"
    first = write_layer(store, [Entry("etc/a", "file", data=b"a"), Entry("etc/b", "file", data=b"b"),
                                Entry("old/x", "file", data=b"x")])  # fmt: skip
    apply_layer(store.blob_path(first.digest), root, lenient=True)
    before = _snapshot(root)
    (root / "etc/a").unlink()
    (root / "etc/b").write_text("changed, longer")
    (root / "old/x").unlink()
    (root / "old").rmdir()
    (root / "new").mkdir()
    (root / "new/link").symlink_to("../etc/b")
    changes = _diff(root, before)
    kinds = {(e.path, e.kind) for e in changes}
    assert kinds == {("etc/b", "file"), ("new", "dir"), ("new/link", "symlink"), ("etc/a", "whiteout"),
                     ("old", "whiteout")}  # fmt: skip
    second = write_layer(store, changes)
    with tarfile.open(store.blob_path(second.digest)) as tar:
        assert {"etc/.wh.a", ".wh.old"} <= set(tar.getnames())
    fresh = tmp_path / "fresh"
    apply_layer(store.blob_path(first.digest), fresh, lenient=True)
    apply_layer(store.blob_path(second.digest), fresh, lenient=True)
    assert sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*")) == [
        "etc",
        "etc/b",
        "new",
        "new/link",
    ]
    assert (fresh / "etc/b").read_text() == "changed, longer" and os.readlink(
        fresh / "new/link"
    ) == "../etc/b"


def test_extract_refuses_paths_out_of_the_root(tmp_path: Path, store: ImageStore) -> None:
    info = write_layer(store, [Entry("../escape", "file", data=b"x"), Entry("ok", "file", data=b"y")])
    apply_layer(store.blob_path(info.digest), tmp_path / "root", lenient=True)
    assert not (tmp_path / "escape").exists() and (tmp_path / "root/ok").read_bytes() == b"y"


def test_cache_hits_only_when_the_blob_is_still_there(tmp_path: Path, store: ImageStore) -> None:
    cache = BuildCache(tmp_path / "cache", store)
    info = write_layer(store, [Entry("f", "file", data=b"1")])
    key = BuildCache.key("parent", ["COPY", "x"])
    assert cache.get(key) is None
    cache.put(key, info)
    assert cache.get(key) == info
    assert BuildCache(tmp_path / "cache", store, enabled=False).get(key) is None
    store.blob_path(info.digest).unlink()
    assert cache.get(key) is None
    (tmp_path / "cache/layers" / f"{key}.json").write_text("{not json")
    assert cache.get(key) is None
    assert BuildCache.key("a", [1]) != BuildCache.key("b", [1]) and isinstance(info, LayerInfo)
