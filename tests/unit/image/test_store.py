"""The OCI-layout store: content addressing, verification, naming, removal and GC, concurrency."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from sealer.errors import ImageError
from sealer.image import oci
from sealer.image.oci import Descriptor, Platform
from sealer.image.store import ImageStore
from tests.registry_fixture import make_test_image


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


def names(store: ImageStore) -> list[str]:
    return sorted(r.name for r in store.records())


def test_layout_files_follow_the_oci_image_layout(store: ImageStore) -> None:
    assert json.loads((store.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(store.index_path.read_text())
    assert index["schemaVersion"] == 2 and index["manifests"] == []
    assert (store.root / "blobs" / "sha256").is_dir()
    assert oct(store.root.stat().st_mode & 0o777) == "0o700"


def test_blobs_are_content_addressed_and_deduplicated(store: ImageStore) -> None:
    a = store.put_blob(b"hello")
    b = store.put_blob(b"hello")
    assert a.digest == b.digest == sha(b"hello") and a.size == 5
    assert store.blob_path(a.digest).read_bytes() == b"hello"
    assert len(list(store.blobs_dir.iterdir())) == 1
    assert list(store.ingest_dir.iterdir()) == []


def test_streamed_write_verifies_digest_and_leaves_nothing_on_mismatch(store: ImageStore) -> None:
    with pytest.raises(ImageError, match="digest mismatch"):
        store.put_blob_stream([b"abc", b"def"], expected_digest=sha(b"something else"))
    assert list(store.blobs_dir.iterdir()) == []
    assert list(store.ingest_dir.iterdir()) == []
    desc = store.put_blob_stream([b"abc", b"def"], expected_digest=sha(b"abcdef"), expected_size=6)
    assert store.has_blob(desc.digest, 6)


def test_declared_size_is_enforced(store: ImageStore) -> None:
    with pytest.raises(ImageError, match="larger than"):
        store.put_blob_stream([b"abcdef"], expected_digest=sha(b"abcdef"), expected_size=3)
    with pytest.raises(ImageError, match="descriptor says 6") as info:
        store.put_blob_stream([b"abc"], expected_size=6)
    assert "truncated" in (info.value.hint or "")
    assert list(store.blobs_dir.iterdir()) == []


def test_corruption_is_detected_on_every_read_path(store: ImageStore) -> None:
    desc = make_test_image(store, "app:v1", [b"layer-one" * 1000])
    man = store.load_manifest(desc)  # type: ignore[arg-type]
    layer = man.layers[0]
    path = store.blob_path(layer.digest)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="corrupt blob") as info:
        store.verify_blob(layer.digest)
    assert "sealer rmi --force" in (info.value.hint or "")
    assert not store.has_blob(layer.digest)  # deleted at once, so nothing can use it again
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="corrupt blob"), store.open_blob(layer.digest) as r:
        while r.read(4096):
            pass
    assert not path.exists()
    cfg = store.blob_path(man.config.digest)
    cfg.write_bytes(cfg.read_bytes().replace(b"linux", b"linuy"))
    with pytest.raises(ImageError, match="corrupt blob"):
        store.read_blob(man.config.digest)
    with pytest.raises(ImageError, match="is missing from the image store"):
        store.select("app:v1")


def test_put_manifest_refuses_missing_blobs(store: ImageStore) -> None:
    cfg = Descriptor(oci.MEDIA_OCI_CONFIG, sha(b"nope"), 4)
    with pytest.raises(ImageError, match="not in the store"):
        store.put_manifest(oci.new_manifest(cfg, []))
    with pytest.raises(ImageError, match="not in the store"):
        store.put_manifest(oci.new_index([Descriptor(oci.MEDIA_OCI_MANIFEST, sha(b"x"), 1)]))


def test_tag_resolve_by_name_id_and_digest(store: ImageStore) -> None:
    desc = make_test_image(store, "registry.local/sealer/k3s:v1", [b"x"])
    assert isinstance(desc, Descriptor)
    rec = store.resolve("registry.local/sealer/k3s:v1")
    assert rec.descriptor.digest == desc.digest
    img = store.select("registry.local/sealer/k3s:v1")
    assert store.resolve(img.id[7:19]).name == rec.name  # short ID as `images` shows it
    assert store.resolve(desc.digest).name == rec.name
    assert store.resolve(f"registry.local/sealer/k3s@{desc.digest}").name == rec.name
    entry = json.loads(store.index_path.read_text())["manifests"][0]
    assert entry["annotations"][oci.ANNOTATION_REF_NAME] == "registry.local/sealer/k3s:v1"
    assert entry["mediaType"] == oci.MEDIA_OCI_MANIFEST
    with pytest.raises(ImageError, match="not in the local store") as info:
        store.resolve("registry.local/sealer/k3s:v2")
    assert "sealer pull" in (info.value.hint or "")


def test_retag_replaces_the_name(store: ImageStore) -> None:
    make_test_image(store, "app:v1", [b"one"])
    second = make_test_image(store, "app:v1", [b"two"])
    assert names(store) == ["docker.io/library/app:v1"]
    assert store.resolve("app:v1").descriptor.digest == second.digest  # type: ignore[attr-defined]


def test_rmi_untags_and_collects_only_unshared_blobs(store: ImageStore) -> None:
    shared = b"shared-base" * 100
    make_test_image(store, "a:v1", [shared, b"only-a"])
    make_test_image(store, "b:v1", [shared, b"only-b"])
    before = {p.name for p in store.blobs_dir.iterdir()}
    assert store.remove("a:v1") == ["docker.io/library/a:v1"]
    after = {p.name for p in store.blobs_dir.iterdir()}
    assert sha(b"only-a")[7:] in before - after
    assert sha(shared)[7:] in after and sha(b"only-b")[7:] in after
    store.select("b:v1")  # still whole
    store.remove("b:v1")
    assert list(store.blobs_dir.iterdir()) == []


def test_rmi_by_id_refuses_an_image_other_tags_need_unless_forced(store: ImageStore) -> None:
    desc = make_test_image(store, "a:v1", [b"x"])
    store.tag("a:v2", desc)  # type: ignore[arg-type]
    image_id = store.select("a:v1").id[7:19]
    with pytest.raises(ImageError, match="tagged as") as info:
        store.remove(image_id)
    assert "--force" in (info.value.hint or "")
    assert len(names(store)) == 2
    assert store.remove("a:v2") == ["docker.io/library/a:v2"]  # by name: just untag
    store.tag("a:v2", desc)  # type: ignore[arg-type]
    assert sorted(store.remove(image_id, force=True)) == ["docker.io/library/a:v1", "docker.io/library/a:v2"]
    assert names(store) == [] and list(store.blobs_dir.iterdir()) == []


def test_rmi_refuses_a_manifest_a_multi_platform_image_includes(store: ImageStore) -> None:
    amd = make_test_image(store, "app:amd64", [b"amd"], arch="amd64")
    arm = make_test_image(store, "app:arm64", [b"arm"], arch="arm64")
    kids = [
        Descriptor(oci.MEDIA_OCI_MANIFEST, d.digest, d.size, platform=Platform("linux", a))  # type: ignore[attr-defined]
        for d, a in ((amd, "amd64"), (arm, "arm64"))
    ]
    store.tag("app:multi", store.put_manifest(oci.new_index(kids)))
    with pytest.raises(ImageError, match="part of multi-platform image"):
        store.remove("app:arm64")
    store.remove("app:arm64", force=True)
    assert store.select("app:multi", Platform("linux", "arm64")).platform == Platform("linux", "arm64")
    details = store.details(store.resolve("app:multi"))
    assert details.is_index and len(details.images) == 2


def test_select_picks_the_platform_and_explains_a_missing_one(store: ImageStore) -> None:
    amd = make_test_image(store, "x:amd", [b"a"], arch="amd64", tag=False)
    desc = Descriptor(oci.MEDIA_OCI_MANIFEST, amd.digest, amd.size, platform=Platform("linux", "amd64"))  # type: ignore[attr-defined]
    ghost = Descriptor(oci.MEDIA_OCI_MANIFEST, sha(b"absent"), 10, platform=Platform("linux", "arm64"))
    idx = oci.new_index([desc, ghost])
    # A partial index (only some platforms local) is legal in an OCI layout.
    store.tag("multi:v1", store.put_blob(idx, media_type=oci.MEDIA_OCI_INDEX))
    assert store.select("multi:v1", Platform("linux", "amd64")).platform == Platform("linux", "amd64")
    with pytest.raises(ImageError, match="no linux/arm64") as info:
        store.select("multi:v1", Platform("linux", "arm64"))
    assert "--platform linux/arm64" in (info.value.hint or "")
    assert store.details(store.resolve("multi:v1")).missing_platforms == [Platform("linux", "arm64")]


def test_gc_spares_blobs_of_an_import_in_progress(store: ImageStore) -> None:
    with store.ingest():
        pending = store.put_blob(b"not yet referenced")
        assert store.gc() is None  # another writer is active: GC backs off
        assert store.has_blob(pending.digest)
    assert store.gc() == (1, len(b"not yet referenced"))
    assert not store.has_blob(pending.digest)


def _tagger(root: str, prefix: str, count: int) -> None:
    s = ImageStore(root)
    for i in range(count):
        make_test_image(s, f"{prefix}:v{i}", [f"{prefix}-{i}".encode()])


def test_two_processes_tagging_at_once_lose_nothing(tmp_path: Path) -> None:
    root = str(tmp_path / "images")
    ImageStore(root)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_tagger, args=(root, p, 25)) for p in ("aa", "bb", "cc")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    s = ImageStore(root)
    assert len(s.records()) == 75
    for rec in s.records():
        s.select(rec.name)


def test_index_json_damage_is_reported_with_its_path(store: ImageStore) -> None:
    store.index_path.write_text("{not json")
    with pytest.raises(ImageError, match=r"index\.json"):
        store.records()


def test_sealer_home_decides_the_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALER_HOME", str(tmp_path / "home"))
    assert ImageStore().root == tmp_path / "home" / "images"


def test_unwritable_root_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ImageError, match="cannot create the image store") as info:
        ImageStore(blocker / "images")
    assert "SEALER_HOME" in (info.value.hint or "")


def test_write_failure_from_the_disk_is_an_image_error(store: ImageStore) -> None:
    import errno

    w = store.writer()

    class Full:
        name = "x"

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self) -> None:
            pass

    w._file = Full()  # type: ignore[assignment]
    with pytest.raises(ImageError, match="no space left") as info:
        w.write(b"data")
    assert "store is unchanged" in (info.value.hint or "")
    assert list(store.ingest_dir.iterdir()) == []


def test_builder_api_commits_images_and_indexes(store: ImageStore, tmp_path: Path) -> None:
    layer_file = tmp_path / "layer.tar"
    layer_file.write_bytes(b"tar bytes" * 1000)
    with store.ingest():
        layer = store.put_blob_file(layer_file, media_type=oci.MEDIA_OCI_LAYER)
        with store.writer(expected_size=6) as w:
            w.write(b"abc")
            w.write(b"def")
            streamed = w.commit()
        streamed = Descriptor(oci.MEDIA_OCI_LAYER, streamed.digest, streamed.size)
        cfg = {"os": "linux", "architecture": "arm64", "config": {"Labels": {"k": "v"}}}
        arm = store.commit_image(None, cfg, [layer, streamed], {"sealer.image.extension": "{}"})
        amd = store.commit_image("reg.local/app:amd64", {**cfg, "architecture": "amd64"}, [layer])
        assert store.records()[0].name == "reg.local/app:amd64"
        index = store.commit_index(
            "reg.local/app:v1",
            [
                Descriptor(arm.media_type, arm.digest, arm.size, platform=Platform("linux", "arm64")),
                Descriptor(amd.media_type, amd.digest, amd.size, platform=Platform("linux", "amd64")),
            ],
        )
    img = store.select("reg.local/app:v1", Platform("linux", "arm64"))
    assert img.manifest.annotations == {"sealer.image.extension": "{}"}
    assert [x.digest for x in img.manifest.layers] == [layer.digest, streamed.digest]
    assert store.resolve("reg.local/app:v1").descriptor.digest == index.digest
    with pytest.raises(ImageError, match="no media type"):
        store.commit_image(None, cfg, [Descriptor("", layer.digest, layer.size)])
    with pytest.raises(ImageError, match="no platform"):
        store.commit_index(None, [arm])


def test_verified_blob_path_checks_content_and_refuses_corruption(store: ImageStore) -> None:
    desc = store.put_blob(b"layer content" * 100)
    path = store.verified_blob_path(desc.digest)
    assert path == store.blob_path(desc.digest)
    assert store.verified_blob_path(desc.digest) == path  # memoised while unchanged
    before = path.stat().st_mtime_ns
    path.write_bytes(b"tampered!!!!!" * 100)  # same size
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a coarse clock must not hide the change
    with pytest.raises(ImageError, match="corrupt blob"):
        store.verified_blob_path(desc.digest)
    with pytest.raises(ImageError, match="missing"):
        store.verified_blob_path(desc.digest)
