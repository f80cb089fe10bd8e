"""sealer's image commands against a real distribution registry (Debian docker-registry) on loopback.

Plain HTTP and TLS + htpasswd. Covers push/pull identity, login/logout, resumable uploads after a
killed push, corruption, and the errors users meet (registry down, bad TLS, bad password, full disk).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sealer.cli.main import cli
from sealer.image.store import ImageStore
from tests.registry_fixture import (
    Registry,
    free_port,
    htpasswd_missing_reason,
    make_test_image,
    registry_missing_reason,
    start_registry,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(registry_missing_reason() is not None, reason=str(registry_missing_reason())),
]
REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("plain-registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if reason := htpasswd_missing_reason():
        pytest.skip(reason)
    with start_registry(tmp_path_factory.mktemp("tls-registry"), tls=True, auth=True) as reg:
        yield reg


@pytest.fixture(params=["plain", "tls+htpasswd"])
def registry(request: pytest.FixtureRequest) -> Registry:
    return request.getfixturevalue("plain" if request.param == "plain" else "secure")  # type: ignore[no-any-return]


def sealer(home: Path, *args: str, input: str | None = None) -> Result:
    runner = CliRunner()
    return runner.invoke(
        cli, ["-q", *args], env={"SEALER_HOME": str(home)}, input=input, catch_exceptions=False
    )


def reg_flags(reg: Registry) -> list[str]:
    if not reg.tls:
        return ["--insecure"]
    return ["--ca-file", str(reg.ca_file), "--authfile", str(reg.authfile)]


def blob_digests(store: ImageStore, name: str) -> list[str]:
    img = store.select(name)
    return [img.descriptor.digest, img.manifest.config.digest, *(x.digest for x in img.manifest.layers)]


def test_push_then_pull_gives_identical_digests(registry: Registry, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    name = registry.ref("sealer/k3s:v1.27")
    make_test_image(
        ImageStore(a / "images"),
        name,
        [os.urandom(300_000), os.urandom(5000), b"small"],
        labels={"cluster.alpha.sealer.io/cluster-runtime-type": "k3s"},
    )
    res = sealer(a, "push", name, *reg_flags(registry))
    assert res.exit_code == 0, res.output
    pushed_digest = res.output.strip()
    res = sealer(b, "pull", name, *reg_flags(registry))
    assert res.exit_code == 0, res.output
    sa, sb = ImageStore(a / "images"), ImageStore(b / "images")
    assert blob_digests(sa, name) == blob_digests(sb, name)
    assert sb.resolve(name).descriptor.digest == pushed_digest
    for digest in blob_digests(sb, name):
        sb.verify_blob(digest)
    rows = json.loads(sealer(b, "images", "-o", "json").output)
    assert rows[0]["name"] == name and rows[0]["clusterRuntime"] == "k3s"
    # Pushing again sends nothing: the registry answers HEAD with 200 for every blob.
    res = CliRunner().invoke(cli, ["push", name, *reg_flags(registry)], env={"SEALER_HOME": str(a)})
    assert res.exit_code == 0 and "0 blob(s)" in res.output and "4 already there" in res.output


def test_cross_repository_mount(registry: Registry, tmp_path: Path) -> None:
    home = tmp_path / "h"
    src, dst = registry.ref("mount/src:v1"), registry.ref("mount/dst:v1")
    store = ImageStore(home / "images")
    desc = make_test_image(store, src, [os.urandom(100_000)])
    assert sealer(home, "push", src, *reg_flags(registry)).exit_code == 0
    store.tag(dst, desc)  # type: ignore[arg-type]
    res = CliRunner().invoke(cli, ["push", dst, *reg_flags(registry)], env={"SEALER_HOME": str(home)})
    assert res.exit_code == 0, res.output
    assert "2 mounted" in res.output and "0 blob(s)" in res.output


def test_login_checks_and_stores_credentials_0600_and_logout_removes_them(
    secure: Registry, tmp_path: Path
) -> None:
    home, authfile = tmp_path / "h", tmp_path / "cfg" / "config.json"
    base = ["--ca-file", str(secure.ca_file), "--authfile", str(authfile)]
    bad = sealer(home, "login", secure.host, "-u", "sealer", "--password-stdin", *base, input="wrong\n")
    assert bad.exit_code == 1 and "login to" in bad.output and "rejected" in bad.output
    assert not authfile.exists()
    ok = sealer(
        home, "login", secure.host, "-u", "sealer", "--password-stdin", *base, input=f"{secure.password}\n"
    )
    assert ok.exit_code == 0, ok.output
    assert oct(authfile.stat().st_mode & 0o777) == "0o600"
    assert secure.password not in ok.output
    assert secure.host in json.loads(authfile.read_text())["auths"]
    name = secure.ref("login/app:v1")
    make_test_image(ImageStore(home / "images"), name, [b"x" * 1000])
    assert sealer(home, "push", name, *base).exit_code == 0
    out = sealer(home, "logout", secure.host, "--authfile", str(authfile))
    assert out.exit_code == 0 and json.loads(authfile.read_text())["auths"] == {}
    denied = sealer(home, "push", name, *base)
    assert denied.exit_code == 1 and "requires authentication" in denied.output


def test_registry_errors_are_clear(secure: Registry, plain: Registry, tmp_path: Path) -> None:
    home = tmp_path / "h"
    down = sealer(home, "pull", f"127.0.0.1:{free_port()}/x:v1", "--insecure")
    assert down.exit_code == 1 and "cannot reach registry" in down.output and "hint:" in down.output
    no_ca = sealer(home, "pull", secure.ref("x:v1"), "--authfile", str(secure.authfile))
    assert no_ca.exit_code == 1 and "TLS" in no_ca.output and "--ca-file" in no_ca.output
    http_without_opt_in = sealer(home, "pull", plain.ref("x:v1"))
    assert http_without_opt_in.exit_code == 1 and "--insecure" in http_without_opt_in.output
    missing = sealer(home, "pull", plain.ref("nothing/here:v1"), "--insecure")
    assert missing.exit_code == 1 and "not found" in missing.output
    bad_ref = sealer(home, "pull", "Not A Ref")
    assert bad_ref.exit_code == 1 and "invalid image reference" in bad_ref.output
    assert "Traceback" not in down.output + no_ca.output + missing.output + bad_ref.output


KILLER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from sealer.image.store import ImageStore
    from sealer.image.reference import parse_reference
    from sealer.image.registry import RegistryClient, RegistryOptions

    root, name, digest, status, limit = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

    def progress(ev):
        if ev.digest == digest and ev.status == status and ev.done >= limit:
            os.kill(os.getpid(), signal.SIGKILL)  # killed half-way: no cleanup, no goodbye

    async def main():
        opts = RegistryOptions(insecure=True, chunk_size=2 << 20, max_parallel=1)
        async with RegistryClient(opts) as c:
            await c.push(ImageStore(root), name, parse_reference(name), progress=progress)

    asyncio.run(main())
    """
)


def _killed_push(tmp_path: Path, root: Path, name: str, digest: str, status: str, limit: int) -> None:
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    proc = subprocess.run(
        [sys.executable, str(script), str(root), name, digest, status, str(limit)],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


def _push_again(store: ImageStore, name: str) -> tuple[object, list[object]]:
    import asyncio

    from sealer.image.reference import parse_reference
    from sealer.image.registry import RegistryClient, RegistryOptions, TransferEvent

    events: list[TransferEvent] = []

    async def go() -> object:
        async with RegistryClient(RegistryOptions(insecure=True, chunk_size=2 << 20)) as c:
            return await c.push(store, name, parse_reference(name), progress=events.append)

    return asyncio.run(go()), events  # type: ignore[return-value]


def test_upload_killed_between_chunks_resumes_at_the_registry_offset(plain: Registry, tmp_path: Path) -> None:
    root = tmp_path / "images"
    store = ImageStore(root)
    name = plain.ref("resume/chunks:v1")
    layer = os.urandom(8 << 20)
    make_test_image(store, name, [layer])
    digest = store.select(name).manifest.layers[0].digest
    _killed_push(tmp_path, root, name, digest, "chunk", 4 << 20)
    assert list((root / "uploads").iterdir()), "the killed push left its upload session on disk"
    result, events = _push_again(store, name)
    start = next(e for e in events if e.digest == digest and e.status == "start")  # type: ignore[attr-defined]
    assert start.done == 4 << 20  # type: ignore[attr-defined]
    assert result.bytes_transferred == 4 << 20  # type: ignore[attr-defined]
    assert list((root / "uploads").iterdir()) == []
    other = tmp_path / "other"
    assert sealer(other, "pull", name, "--insecure").exit_code == 0
    assert ImageStore(other / "images").blob_path(digest).read_bytes() == layer


def test_upload_killed_mid_chunk_recovers_and_keeps_finished_layers(plain: Registry, tmp_path: Path) -> None:
    # distribution keeps the partial chunk and then refuses the session; sealer must notice, restart
    # that blob, and still skip every layer that was finished before the kill.
    root = tmp_path / "images"
    store = ImageStore(root)
    name = plain.ref("resume/mid:v1")
    layers = [os.urandom(3 << 20) for _ in range(3)]
    make_test_image(store, name, layers)
    last = store.select(name).manifest.layers[-1].digest
    _killed_push(tmp_path, root, name, last, "progress", 3 << 19)
    result, _ = _push_again(store, name)
    assert result.blobs_skipped >= 2  # type: ignore[attr-defined]
    assert result.bytes_transferred <= 3 << 20  # type: ignore[attr-defined]
    other = tmp_path / "other"
    assert sealer(other, "pull", name, "--insecure").exit_code == 0
    pulled = ImageStore(other / "images")
    assert [pulled.blob_path(x.digest).read_bytes() for x in pulled.select(name).manifest.layers] == layers


def test_corrupted_blob_in_the_store_is_detected_and_repairable(plain: Registry, tmp_path: Path) -> None:
    home, clean = tmp_path / "h", tmp_path / "clean"
    name = plain.ref("corrupt/app:v1")
    layer_data = os.urandom(50_000)
    make_test_image(ImageStore(home / "images"), name, [layer_data])
    make_test_image(ImageStore(clean / "images"), name, [layer_data])
    store = ImageStore(home / "images")
    layer = store.select(name).manifest.layers[0].digest
    path = store.blob_path(layer)
    data = bytearray(path.read_bytes())
    data[1234] ^= 0x01
    path.write_bytes(bytes(data))
    res = sealer(home, "push", name, "--insecure")
    assert res.exit_code == 1 and "corrupt blob" in res.output and "nothing was pushed" in res.output
    assert "sealer pull" in res.output
    assert not path.exists()  # the bad copy is gone, so nothing can use it
    saved = sealer(home, "save", "-o", str(tmp_path / "x.tar"), name)
    assert saved.exit_code == 1 and "incomplete" in saved.output
    assert not (tmp_path / "x.tar").exists()
    assert not any(f.name.startswith(".x.tar") for f in tmp_path.iterdir())
    # The registry never got the bad bytes (nor a manifest naming them).
    assert sealer(tmp_path / "probe", "pull", name, "--insecure").exit_code == 1
    # A clean copy reaches the registry from elsewhere; pulling repairs the store in place.
    assert sealer(clean, "push", name, "--insecure").exit_code == 0
    assert sealer(home, "pull", name, "--insecure").exit_code == 0
    ImageStore(home / "images").verify_blob(layer)


def _can_mount_tmpfs() -> bool:
    return os.geteuid() == 0 and bool(subprocess.run(["which", "mount"], capture_output=True).returncode == 0)


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs root to mount a small tmpfs")
def test_disk_full_during_pull_leaves_the_store_as_it_was(plain: Registry, tmp_path: Path) -> None:
    src = tmp_path / "src"
    name = plain.ref("big/app:v1")
    make_test_image(ImageStore(src / "images"), name, [os.urandom(3 << 20), os.urandom(3 << 20)])
    assert sealer(src, "push", name, "--insecure").exit_code == 0
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        make_test_image(ImageStore(small / "images"), "local/keep:v1", [b"already here"])
        index_before = (small / "images" / "index.json").read_bytes()
        res = sealer(small, "pull", name, "--insecure")
        assert res.exit_code == 1
        assert "no space left on device" in res.output and "store is unchanged" in res.output
        assert "Traceback" not in res.output
        after = ImageStore(small / "images")
        assert (small / "images" / "index.json").read_bytes() == index_before
        assert [r.name for r in after.records()] == ["docker.io/local/keep:v1"]
        assert list(after.ingest_dir.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("token-registry"), token_auth=True) as reg:
        yield reg


def test_bearer_token_auth_against_distribution(token_registry: Registry, tmp_path: Path) -> None:
    reg = token_registry
    assert reg.token_server is not None
    a, b = tmp_path / "a", tmp_path / "b"
    name = reg.ref("token/app:v1")
    make_test_image(ImageStore(a / "images"), name, [os.urandom(100_000)])
    pushed = sealer(a, "push", name, "--insecure", "--authfile", str(reg.authfile))
    assert pushed.exit_code == 0, pushed.output
    scopes = [s for q in reg.token_server.requests for s in q.get("scope", [])]
    assert "repository:token/app:pull,push" in scopes
    assert all(q.get("service") == ["sealer-test-registry"] for q in reg.token_server.requests)
    pulled = sealer(b, "pull", name, "--insecure", "--authfile", str(reg.authfile))
    assert pulled.exit_code == 0, pulled.output
    assert ImageStore(b / "images").resolve(name).descriptor.digest == pushed.output.strip()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"auths": {reg.host: {"auth": "c2VhbGVyOndyb25n"}}}))  # sealer:wrong
    denied = sealer(tmp_path / "c", "pull", name, "--insecure", "--authfile", str(bad))
    assert denied.exit_code == 1 and "rejected the credentials of sealer" in denied.output
    anonymous = sealer(tmp_path / "d", "pull", name, "--insecure", "--authfile", str(tmp_path / "none.json"))
    assert anonymous.exit_code == 1 and "sealer login" in anonymous.output
    info = subprocess.run(
        ["skopeo", "inspect", *reg.skopeo_flags(), f"docker://{name}"], capture_output=True, text=True
    )
    if info.returncode == 0:  # skopeo is optional here; when present it agrees on the digest
        assert json.loads(info.stdout)["Digest"] == pushed.output.strip()


def test_ensure_image_pulls_only_what_is_missing(plain: Registry, tmp_path: Path) -> None:
    import asyncio

    from sealer.errors import ImageError
    from sealer.image import service
    from sealer.image.registry import RegistryOptions

    src, dst = tmp_path / "src", tmp_path / "dst"
    name = plain.ref("ensure/app:v1")
    make_test_image(
        ImageStore(src / "images"),
        name,
        [b"e" * 1000],
        labels={"cluster.alpha.sealer.io/cluster-runtime-type": "k0s"},
    )
    assert sealer(src, "push", name, "--insecure").exit_code == 0
    store = ImageStore(dst / "images")
    opts = RegistryOptions(insecure=True)
    with pytest.raises(ImageError, match="pull policy is never"):
        asyncio.run(service.ensure_image(store, name, opts, policy="never"))
    rec = asyncio.run(service.ensure_image(store, name, opts, policy="missing"))
    assert rec.name == name
    assert service.image_info(store, name).cluster_runtime == "k0s"
    plain_stop = plain.process.pid  # the registry is not needed once the image is local
    assert (
        asyncio.run(service.ensure_image(store, name, RegistryOptions(insecure=True), policy="never")).name
        == name
    )
    assert plain_stop == plain.process.pid


def test_two_sealer_processes_pulling_into_one_store(plain: Registry, tmp_path: Path) -> None:
    src, home = tmp_path / "src", tmp_path / "shared"
    names = [plain.ref(f"parallel/app{i}:v1") for i in range(2)]
    shared_layer = os.urandom(2 << 20)
    for i, name in enumerate(names):
        make_test_image(
            ImageStore(src / "images"),
            name,
            [shared_layer, os.urandom(1 << 20)],
            arch="amd64",
            created=f"2026-01-0{i + 1}T00:00:00Z",
        )
        assert sealer(src, "push", name, "--insecure").exit_code == 0
    exe = Path(sys.executable).parent / "sealer"
    env = {**os.environ, "SEALER_HOME": str(home)}
    procs = [
        subprocess.Popen(
            [str(exe), "-q", "pull", "--insecure", name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in names * 2
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1].decode() for o in outs]
    store = ImageStore(home / "images")
    assert sorted(r.name for r in store.records()) == sorted(names)
    for name in names:
        store.verify_image(store.resolve(name))
    assert list(store.ingest_dir.iterdir()) == []


def test_per_host_ca_directory_is_trusted_like_docker_and_podman(
    secure: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sealer.image import registry as registry_module

    certs_d = tmp_path / "certs.d"
    (certs_d / secure.host).mkdir(parents=True)
    assert secure.ca_file is not None
    (certs_d / secure.host / "ca.crt").write_bytes(secure.ca_file.read_bytes())
    monkeypatch.setattr(registry_module, "CERT_DIRS", (certs_d,))
    home = tmp_path / "h"
    name = secure.ref("certsd/app:v1")
    make_test_image(ImageStore(home / "images"), name, [b"c" * 100])
    res = sealer(home, "push", name, "--authfile", str(secure.authfile))  # no --ca-file, no --insecure
    assert res.exit_code == 0, res.output


PULL_KILLER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from sealer.image.store import ImageStore
    from sealer.image.reference import parse_reference
    from sealer.image.registry import RegistryClient, RegistryOptions

    root, name, after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    done = []

    def progress(ev):
        if ev.status == "done":
            done.append(ev.digest)
            if len(done) >= after:
                os.kill(os.getpid(), signal.SIGKILL)

    async def main():
        async with RegistryClient(RegistryOptions(insecure=True, max_parallel=1)) as c:
            await c.pull(parse_reference(name), ImageStore(root), progress=progress)

    asyncio.run(main())
    """
)


def test_pull_killed_half_way_keeps_finished_blobs_and_shows_nothing(plain: Registry, tmp_path: Path) -> None:
    src, root = tmp_path / "src", tmp_path / "dst" / "images"
    name = plain.ref("killpull/app:v1")
    make_test_image(ImageStore(src / "images"), name, [os.urandom(1 << 20) for _ in range(4)])
    assert sealer(src, "push", name, "--insecure").exit_code == 0
    script = tmp_path / "pull_killer.py"
    script.write_text(PULL_KILLER)
    proc = subprocess.run(
        [sys.executable, str(script), str(root), name, "3"], cwd=REPO_ROOT, capture_output=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    store = ImageStore(root)
    assert store.records() == []  # nothing half-pulled is visible
    res = CliRunner().invoke(cli, ["pull", name, "--insecure"], env={"SEALER_HOME": str(root.parent)})
    assert res.exit_code == 0, res.output
    assert "3 already present" in res.output
    store.verify_image(store.resolve(name))
