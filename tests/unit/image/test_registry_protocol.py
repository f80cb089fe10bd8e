"""The distribution client against an in-memory registry: auth flows, verification, resume, multi-arch."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from sealer.errors import ImageError, RegistryError
from sealer.image import oci
from sealer.image.oci import Platform
from sealer.image.reference import parse_reference
from sealer.image.registry import RegistryClient, RegistryOptions, TransferEvent, parse_challenge
from sealer.image.store import ImageStore
from tests.registry_fixture import make_test_image

from .fake_registry import FakeRegistry, sha


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def client(fake: FakeRegistry, **kw: object) -> RegistryClient:
    return RegistryClient(RegistryOptions(**kw), transport=fake.transport())  # type: ignore[arg-type]


def seed_image(
    fake: FakeRegistry, repo: str, tag: str, layers: list[bytes], *, docker: bool = False, arch: str = "amd64"
) -> tuple[str, dict[str, object]]:
    config = json.dumps(
        {
            "os": "linux",
            "architecture": arch,
            "created": "2026-01-01T00:00:00Z",
            "config": {"Labels": {"cluster.alpha.sealer.io/cluster-runtime-type": "k0s"}},
        }
    ).encode()
    cdesc = {
        "mediaType": oci.MEDIA_DOCKER_CONFIG if docker else oci.MEDIA_OCI_CONFIG,
        "digest": fake.add_blob(repo, config),
        "size": len(config),
    }
    ldescs = [
        {
            "mediaType": oci.MEDIA_DOCKER_LAYER_GZIP if docker else oci.MEDIA_OCI_LAYER_GZIP,
            "digest": fake.add_blob(repo, data),
            "size": len(data),
        }
        for data in layers
    ]
    media = oci.MEDIA_DOCKER_MANIFEST if docker else oci.MEDIA_OCI_MANIFEST
    doc: dict[str, object] = {"schemaVersion": 2, "mediaType": media, "config": cdesc, "layers": ldescs}
    return fake.put(repo, tag, doc, media), doc


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


def authfile(tmp_path: Path, host: str, user: str, pw: str) -> Path:
    path = tmp_path / "auth.json"
    path.write_text(
        json.dumps({"auths": {host: {"auth": base64.b64encode(f"{user}:{pw}".encode()).decode()}}})
    )
    return path


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:a/b:pull",
    }
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def test_pull_docker_v2_manifest_keeps_exact_bytes_and_digest(store: ImageStore) -> None:
    fake = FakeRegistry()
    digest, _ = seed_image(fake, "sealer/k0s", "v1", [b"layer" * 1000, b"two"], docker=True)
    events: list[TransferEvent] = []

    async def go() -> None:
        async with client(fake) as c:
            res = await c.pull(parse_reference("reg.test/sealer/k0s:v1"), store, progress=events.append)
            assert res.digest == digest and res.blobs_transferred == 3

    run(go())
    rec = store.resolve("reg.test/sealer/k0s:v1")
    assert rec.descriptor.digest == digest and rec.descriptor.media_type == oci.MEDIA_DOCKER_MANIFEST
    assert store.read_blob(digest) == fake.manifests[("sealer/k0s", "v1")][0]
    assert {e.status for e in events} >= {"start", "done"}
    # A second pull transfers nothing: every blob is already here.
    run(client(fake).pull(parse_reference("reg.test/sealer/k0s:v1"), store))
    blob_gets = [p for m, p in fake.requests if m == "GET" and "/blobs/" in p]
    assert len(blob_gets) == 3


def test_bearer_token_flow_uses_realm_service_scope_and_caches(store: ImageStore, tmp_path: Path) -> None:
    fake = FakeRegistry(users={"alice": "pw"}, bearer=True)
    seed_image(fake, "team/app", "v1", [b"a", b"b", b"c"])
    opts = {"authfile": authfile(tmp_path, "reg.test", "alice", "pw")}
    run(client(fake, **opts).pull(parse_reference("reg.test/team/app:v1"), store))
    assert store.resolve("reg.test/team/app:v1")
    scoped = [q for q in fake.token_requests if q.get("scope")]
    assert scoped and scoped[0]["service"] == "reg.test"
    assert scoped[0].get_list("scope") == ["repository:team/app:pull"]
    assert len(scoped) == 1  # one token served the manifest and all blobs


def test_wrong_password_and_missing_login_are_clear(store: ImageStore, tmp_path: Path) -> None:
    fake = FakeRegistry(users={"alice": "pw"}, bearer=True)
    seed_image(fake, "team/app", "v1", [b"a"])
    with pytest.raises(RegistryError, match="rejected") as info:
        run(
            client(fake, authfile=authfile(tmp_path, "reg.test", "alice", "nope")).pull(
                parse_reference("reg.test/team/app:v1"), store
            )
        )
    assert "sealer login reg.test" in (info.value.hint or "")
    basic = FakeRegistry(users={"alice": "pw"})
    seed_image(basic, "team/app", "v1", [b"a"])
    with pytest.raises(RegistryError, match="requires authentication") as info:
        run(
            client(basic, authfile=tmp_path / "none.json").pull(
                parse_reference("reg.test/team/app:v1"), store
            )
        )
    assert "sealer login reg.test" in (info.value.hint or "")
    assert store.records() == []


def test_unknown_image_is_an_image_error(store: ImageStore) -> None:
    with pytest.raises(ImageError, match=r"not found on registry reg\.test"):
        run(client(FakeRegistry()).pull(parse_reference("reg.test/nope:v1"), store))


def test_corrupt_blob_is_rejected_and_nothing_becomes_visible(store: ImageStore) -> None:
    fake = FakeRegistry()
    _, doc = seed_image(fake, "app", "v1", [b"good" * 100, b"bad" * 100])
    fake.corrupt.add(doc["layers"][1]["digest"])  # type: ignore[index]
    with pytest.raises(ImageError, match="digest mismatch"):
        run(client(fake).pull(parse_reference("reg.test/app:v1"), store))
    assert store.records() == []
    assert not store.has_blob(doc["layers"][1]["digest"])  # type: ignore[index]
    assert list(store.ingest_dir.iterdir()) == []


def test_manifest_digest_mismatch_is_detected(store: ImageStore) -> None:
    fake = FakeRegistry(wrong_manifest_digest_header=True)
    seed_image(fake, "app", "v1", [b"x"])
    with pytest.raises(ImageError, match="digest mismatch for manifest"):
        run(client(fake).pull(parse_reference("reg.test/app:v1"), store))


def test_dropped_download_resumes_with_a_range_request(store: ImageStore) -> None:
    fake = FakeRegistry()
    big = bytes(range(256)) * 4000
    _, doc = seed_image(fake, "app", "v1", [big])
    digest = doc["layers"][0]["digest"]  # type: ignore[index]
    fake.break_download_once[digest] = 300_000
    run(client(fake).pull(parse_reference("reg.test/app:v1"), store))
    store.verify_blob(digest)
    assert [p for m, p in fake.requests if p.endswith(digest)] == [f"/v2/app/blobs/{digest}"] * 2


def seed_index(fake: FakeRegistry) -> dict[str, str]:
    digests = {}
    kids = []
    for arch in ("amd64", "arm64"):
        d, _ = seed_image(fake, "multi", f"only-{arch}", [arch.encode() * 50], arch=arch)
        data = fake.manifests[("multi", d)][0]
        digests[arch] = d
        kids.append(
            {
                "mediaType": oci.MEDIA_OCI_MANIFEST,
                "digest": d,
                "size": len(data),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    kids.append(
        {
            "mediaType": oci.MEDIA_OCI_MANIFEST,
            "digest": sha(b"attest"),
            "size": 6,
            "platform": {"os": "unknown", "architecture": "unknown"},
        }
    )
    digests["index"] = fake.put(
        "multi",
        "v1",
        {"schemaVersion": 2, "mediaType": oci.MEDIA_OCI_INDEX, "manifests": kids},
        oci.MEDIA_OCI_INDEX,
    )
    return digests


def test_index_pull_takes_the_asked_platform_only(store: ImageStore) -> None:
    fake = FakeRegistry()
    d = seed_index(fake)
    res = run(
        client(fake).pull(parse_reference("reg.test/multi:v1"), store, platforms=[Platform("linux", "arm64")])
    )
    assert res.platforms == ["linux/arm64"]
    assert store.has_blob(d["arm64"]) and not store.has_blob(d["amd64"])
    assert store.resolve("reg.test/multi:v1").descriptor.digest == d["index"]
    with pytest.raises(ImageError, match="no linux/amd64"):
        store.select("reg.test/multi:v1", Platform("linux", "amd64"))
    # Pulling the other platform later completes the same index.
    run(
        client(fake).pull(parse_reference("reg.test/multi:v1"), store, platforms=[Platform("linux", "amd64")])
    )
    assert store.select("reg.test/multi:v1", Platform("linux", "amd64")).descriptor.digest == d["amd64"]


def test_index_pull_all_platforms_and_unknown_platform(store: ImageStore) -> None:
    fake = FakeRegistry()
    d = seed_index(fake)
    res = run(client(fake).pull(parse_reference("reg.test/multi:v1"), store, all_platforms=True))
    assert sorted(res.platforms) == ["linux/amd64", "linux/arm64"]  # the attestation entry is skipped
    assert store.has_blob(d["arm64"]) and store.has_blob(d["amd64"])
    with pytest.raises(
        ImageError, match=r"no image for platform linux/s390x \(it has: linux/amd64, linux/arm64\)"
    ):
        run(
            client(fake).pull(
                parse_reference("reg.test/multi:v1"), store, platforms=[Platform("linux", "s390x")]
            )
        )


def test_push_uploads_then_skips_then_mounts(store: ImageStore) -> None:
    fake = FakeRegistry()
    desc = make_test_image(store, "reg.test/team/a:v1", [b"L1" * 1000, b"L2" * 1000])
    first = run(client(fake).push(store, "reg.test/team/a:v1", parse_reference("reg.test/team/a:v1")))
    assert first.blobs_transferred == 3 and first.digest == desc.digest  # type: ignore[attr-defined]
    assert fake.manifests[("team/a", "v1")][0] == store.read_blob(desc.digest)  # type: ignore[attr-defined]
    again = run(client(fake).push(store, "reg.test/team/a:v1", parse_reference("reg.test/team/a:v1")))
    assert again.blobs_transferred == 0 and again.blobs_skipped == 3
    store.tag("reg.test/team/b:v1", desc)  # type: ignore[arg-type]
    mounted = run(client(fake).push(store, "reg.test/team/b:v1", parse_reference("reg.test/team/b:v1")))
    assert mounted.blobs_mounted == 3 and mounted.blobs_transferred == 0


def test_push_resumes_after_a_connection_reset_mid_chunk(store: ImageStore) -> None:
    fake = FakeRegistry()
    data = bytes(range(256)) * 2000  # 512000 bytes, 5 chunks of 100000+
    make_test_image(store, "reg.test/app:v1", [data])
    fake.break_patch_once = {2}
    res = run(
        client(fake, chunk_size=100_000).push(store, "reg.test/app:v1", parse_reference("reg.test/app:v1"))
    )
    assert fake.blobs[sha(data)] == data
    assert res.blobs_transferred == 2
    status_gets = [p for m, p in fake.requests if m == "GET" and "/uploads/" in p]
    assert len(status_gets) == 1  # asked the registry where it stopped, then continued from there


def test_killed_push_resumes_from_the_saved_upload_session(store: ImageStore) -> None:
    fake = FakeRegistry()
    data = bytes(range(256)) * 2000
    make_test_image(store, "reg.test/app:v1", [data])
    fake.break_patch_once = {1, 2, 3}  # three resets in a row: this push gives up
    with pytest.raises(RegistryError, match="failed 3 times") as info:
        run(
            client(fake, chunk_size=100_000, max_parallel=1).push(
                store, "reg.test/app:v1", parse_reference("reg.test/app:v1")
            )
        )
    assert "resumes" in (info.value.hint or "")
    posts_before = sum(1 for m, p in fake.requests if m == "POST")
    (upload,) = [u for u in fake.uploads.values() if len(u) > 0]
    kept = len(upload)
    assert kept > 0
    events: list[TransferEvent] = []
    run(
        client(fake, chunk_size=100_000).push(
            store, "reg.test/app:v1", parse_reference("reg.test/app:v1"), progress=events.append
        )
    )
    assert fake.blobs[sha(data)] == data
    assert sum(1 for m, p in fake.requests if m == "POST") == posts_before  # no new session for that blob
    start = next(e for e in events if e.digest == sha(data) and e.status == "start")
    assert start.done == kept
    assert list((store.root / "uploads").iterdir()) == []


def test_push_refuses_a_corrupt_local_blob(store: ImageStore) -> None:
    fake = FakeRegistry()
    data = b"precious" * 1000
    make_test_image(store, "reg.test/app:v1", [data])
    path = store.blob_path(sha(data))
    path.write_bytes(b"X" + path.read_bytes()[1:])
    with pytest.raises(ImageError, match="corrupt blob in the image store"):
        run(client(fake).push(store, "reg.test/app:v1", parse_reference("reg.test/app:v1")))
    assert ("app", "v1") not in fake.manifests


def test_pull_by_digest_is_named_by_digest(store: ImageStore) -> None:
    fake = FakeRegistry()
    digest, _ = seed_image(fake, "app", "v1", [b"x"])
    run(client(fake).pull(parse_reference(f"reg.test/app@{digest}"), store))
    rec = store.resolve(f"reg.test/app@{digest}")
    assert rec.name == f"reg.test/app@{digest}" and rec.descriptor.digest == digest
    assert store.find("reg.test/app:v1") == []


def test_explicit_platform_mismatch_on_a_single_platform_image(store: ImageStore) -> None:
    fake = FakeRegistry()
    _, doc = seed_image(fake, "app", "v1", [b"layer-bytes"], arch="amd64")
    with pytest.raises(ImageError, match="single-platform image for linux/amd64, not linux/arm64"):
        run(
            client(fake).pull(
                parse_reference("reg.test/app:v1"), store, platforms=[Platform("linux", "arm64")]
            )
        )
    assert store.records() == []
    assert not store.has_blob(doc["layers"][0]["digest"])  # type: ignore[index]
    run(client(fake).pull(parse_reference("reg.test/app:v1"), store, platforms=[Platform("linux", "amd64")]))
    assert store.resolve("reg.test/app:v1")


def test_push_of_a_partial_index_needs_all_platforms_or_one(store: ImageStore) -> None:
    fake = FakeRegistry()
    seed_index(fake)
    run(
        client(fake).pull(parse_reference("reg.test/multi:v1"), store, platforms=[Platform("linux", "arm64")])
    )
    with pytest.raises(ImageError, match="only part of it is in the local store") as info:
        run(client(fake).push(store, "reg.test/multi:v1", parse_reference("reg.test/copy:v1")))
    assert "--all-platforms" in (info.value.hint or "")
    res = run(
        client(fake).push(
            store,
            "reg.test/multi:v1",
            parse_reference("reg.test/copy:v1"),
            platforms=[Platform("linux", "arm64")],
        )
    )
    assert res.platforms == ["linux/arm64"]
    pushed, media = fake.manifests[("copy", "v1")]
    assert media == oci.MEDIA_OCI_MANIFEST
    assert sha(pushed) == store.select("reg.test/multi:v1", Platform("linux", "arm64")).descriptor.digest


def test_forbidden_repository_is_named_with_a_hint(store: ImageStore) -> None:
    fake = FakeRegistry(denied_repos={"secret/app"})
    make_test_image(store, "reg.test/secret/app:v1", [b"x"])
    with pytest.raises(RegistryError, match=r"access denied by registry reg\.test") as info:
        run(client(fake).push(store, "reg.test/secret/app:v1", parse_reference("reg.test/secret/app:v1")))
    assert "permission" in (info.value.hint or "")


def test_transient_503_is_retried(store: ImageStore) -> None:
    fake = FakeRegistry()
    seed_image(fake, "app", "v1", [b"x"])
    fake.unavailable_once = 2
    run(client(fake).pull(parse_reference("reg.test/app:v1"), store))
    assert store.resolve("reg.test/app:v1")
    fake.unavailable_once = 10
    with pytest.raises(RegistryError, match="failed after 3 attempts"):
        run(client(fake).pull(parse_reference("reg.test/app:v1"), ImageStore(store.root.parent / "other")))
