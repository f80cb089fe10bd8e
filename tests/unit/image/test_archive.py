"""OCI archives: save/load round trips, reproducibility, and refusal of broken or foreign archives."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from sealer.errors import ImageError
from sealer.image import archive, oci
from sealer.image.store import ImageStore
from tests.registry_fixture import make_test_image


@pytest.fixture
def src(tmp_path: Path) -> ImageStore:
    s = ImageStore(tmp_path / "src")
    make_test_image(s, "reg.local/a:v1", [b"shared" * 1000, b"only-a"])
    make_test_image(s, "reg.local/b:v1", [b"shared" * 1000, b"only-b"])
    return s


def names(store: ImageStore) -> dict[str, str]:
    return {r.name: r.descriptor.digest for r in store.records()}


def read_index(path: Path) -> dict[str, list[dict[str, object]]]:
    with tarfile.open(path) as tar:
        f = tar.extractfile("index.json")
        assert f is not None
        return json.loads(f.read())  # type: ignore[no-any-return]


def members(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def test_round_trip_between_stores_with_shared_blobs_once(src: ImageStore, tmp_path: Path) -> None:
    out = tmp_path / "x.tar"
    assert archive.save(src, ["reg.local/a:v1", "reg.local/b:v1"], out) == [
        "reg.local/a:v1",
        "reg.local/b:v1",
    ]
    listed = members(out)
    assert listed[:2] == ["oci-layout", "index.json"]
    blobs = [m for m in listed if m.startswith("blobs/sha256/")]
    assert len(blobs) == len(set(blobs)) == 7  # 2 manifests + 2 configs + shared + 2 own layers
    dst = ImageStore(tmp_path / "dst")
    res = archive.load(dst, out)
    assert sorted(res.names) == ["reg.local/a:v1", "reg.local/b:v1"]
    assert names(dst) == names(src)
    assert res.blobs_loaded == 7
    again = archive.load(dst, out)
    assert again.blobs_loaded == 0 and again.blobs_present == 7


def test_archives_are_reproducible(src: ImageStore, tmp_path: Path) -> None:
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    archive.save(src, ["reg.local/a:v1"], a)
    archive.save(src, ["reg.local/a:v1"], b)
    assert a.read_bytes() == b.read_bytes()
    index = read_index(a)
    ann = index["manifests"][0]["annotations"]
    assert ann[oci.ANNOTATION_REF_NAME] == ann[oci.ANNOTATION_CONTAINERD_NAME] == "reg.local/a:v1"


def test_gzipped_archive_loads(src: ImageStore, tmp_path: Path) -> None:
    out = tmp_path / "x.tar"
    archive.save(src, ["reg.local/a:v1"], out)
    gz = tmp_path / "x.tar.gz"
    gz.write_bytes(gzip.compress(out.read_bytes()))
    dst = ImageStore(tmp_path / "dst")
    assert archive.load(dst, gz).names == ["reg.local/a:v1"]


def rewrite(
    src_tar: Path,
    dst_tar: Path,
    *,
    drop: str | None = None,
    corrupt: str | None = None,
    index: bytes | None = None,
) -> None:
    with tarfile.open(src_tar) as tin, tarfile.open(dst_tar, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()  # type: ignore[union-attr]
            if m.name == drop:
                continue
            if m.name == corrupt:
                data = b"X" + data[1:]
            if m.name == "index.json" and index is not None:
                data = index
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data))


def test_missing_blob_means_incomplete_and_nothing_named(src: ImageStore, tmp_path: Path) -> None:
    out = tmp_path / "x.tar"
    archive.save(src, ["reg.local/a:v1"], out)
    layer = src.select("reg.local/a:v1").manifest.layers[1].digest
    broken = tmp_path / "broken.tar"
    rewrite(out, broken, drop=f"blobs/sha256/{layer[7:]}")
    dst = ImageStore(tmp_path / "dst")
    with pytest.raises(ImageError, match="incomplete"):
        archive.load(dst, broken)
    assert dst.records() == []


def test_corrupt_blob_in_archive_is_a_digest_mismatch(src: ImageStore, tmp_path: Path) -> None:
    out = tmp_path / "x.tar"
    archive.save(src, ["reg.local/a:v1"], out)
    layer = src.select("reg.local/a:v1").manifest.layers[0].digest
    bad = tmp_path / "bad.tar"
    rewrite(out, bad, corrupt=f"blobs/sha256/{layer[7:]}")
    dst = ImageStore(tmp_path / "dst")
    with pytest.raises(ImageError, match="digest mismatch") as info:
        archive.load(dst, bad)
    assert str(bad) in info.value.message
    assert dst.records() == [] and not dst.has_blob(layer)


def test_tag_only_names_and_docker_archives_are_explained(src: ImageStore, tmp_path: Path) -> None:
    out = tmp_path / "x.tar"
    archive.save(src, ["reg.local/a:v1"], out)
    entry = read_index(out)["manifests"][0]
    entry["annotations"] = {oci.ANNOTATION_REF_NAME: "v1"}
    tagonly = tmp_path / "tagonly.tar"
    rewrite(out, tagonly, index=json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode())
    with pytest.raises(ImageError, match="only by the tag 'v1'") as info:
        archive.load(ImageStore(tmp_path / "d1"), tagonly)
    assert "skopeo copy" in (info.value.hint or "")
    docker = tmp_path / "docker.tar"
    with tarfile.open(docker, "w") as tar:
        data = b"[]"
        ti = tarfile.TarInfo("manifest.json")
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))
    with pytest.raises(ImageError, match="docker-archive"):
        archive.load(ImageStore(tmp_path / "d2"), docker)


def test_save_of_unknown_image_writes_nothing(src: ImageStore, tmp_path: Path) -> None:
    out = tmp_path / "x.tar"
    with pytest.raises(ImageError, match="not in the local store"):
        archive.save(src, ["reg.local/a:v1", "reg.local/nope:v1"], out)
    assert list(tmp_path.glob("*.tar")) == [] and not any(
        p.name.startswith(".x.tar") for p in tmp_path.iterdir()
    )


def test_save_never_archives_a_corrupt_blob(src: ImageStore, tmp_path: Path) -> None:
    layer = src.select("reg.local/a:v1").manifest.layers[1].digest
    path = src.blob_path(layer)
    path.write_bytes(b"Z" + path.read_bytes()[1:])
    out = tmp_path / "x.tar"
    with pytest.raises(ImageError, match="corrupt blob"):
        archive.save(src, ["reg.local/a:v1"], out)
    assert not out.exists() and not any(p.name.startswith(".x.tar") for p in tmp_path.iterdir())
    with pytest.raises(ImageError, match="incomplete in the local store"):
        archive.save(src, ["reg.local/a:v1"], out)
