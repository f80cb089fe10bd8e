"""`sealer prune` and `sealer rmi` as a user meets them: what a dry run lists, what a prune frees,
an entry another process uses is skipped with a word, and bad input is a clear error."""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sealer.apply.rootfs import release_cache_holds, unpack
from sealer.cli.main import cli
from sealer.image.store import ImageStore
from tests.registry_fixture import make_test_image, tar_layer

pytestmark = pytest.mark.usefixtures("released_cache_holds")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def sealer(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"SEALER_HOME": str(home)})


def _seed(home: Path, name: str, size: int) -> tuple[str, Path]:
    store = ImageStore(home / "images")
    make_test_image(store, name, [tar_layer({"bin/tool": os.urandom(size)})])
    image = store.select(name)
    top = unpack(store, image, home / "cache" / "rootfs").rootfs.parent
    release_cache_holds()  # as when that `sealer run` ended
    return image.id, top


def _build(home: Path, tmp_path: Path) -> Result:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "bundle.tar").write_bytes(tar_layer({"opt/a": b"a" * 4000, "opt/b": b"b" * 2000}))
    (ctx / "conf").write_text("x=1\n")
    (ctx / "Kubefile").write_text("FROM scratch\nCOPY conf etc/\nADD bundle.tar /\n")
    return sealer(home, "build", "-t", "built:1", str(ctx))


def test_dry_run_lists_what_would_go_and_removes_nothing(home: Path, tmp_path: Path) -> None:
    built = _build(home, tmp_path)
    assert built.exit_code == 0, built.output
    gone_id, gone_top = _seed(home, "gone:1", 3000)
    assert sealer(home, "rmi", "gone:1").exit_code == 0  # drops its cache entry at once
    assert not gone_top.exists()
    _, kept_top = _seed(home, "kept:1", 2000)
    before = sorted(str(p) for p in home.rglob("*"))
    dry = sealer(home, "prune", "--dry-run")
    assert dry.exit_code == 0, dry.output
    lines = dry.output.splitlines()
    assert any(re.fullmatch(r"Would remove \d+ build cache layer record\(s\) \(.* B\)", ln) for ln in lines)
    assert any(line.startswith("Would remove build cache (unpacked archive): ") for line in lines)
    assert lines[-1].endswith("would be freed") and not lines[-1].startswith("0 item(s)")
    assert sorted(str(p) for p in home.rglob("*")) == before
    data = json.loads(sealer(home, "prune", "--dry-run", "-o", "json").output)
    assert data["dryRun"] is True and data["bytes"] == sum(r["bytes"] for r in data["removed"])
    assert {r["kind"] for r in data["removed"]} == {
        "build cache (layer record)", "build cache (unpacked archive)", "build cache (image cache)"
    }
    # the real thing frees what the dry run said, and the kept image's rootfs stays
    real = sealer(home, "prune", "-o", "json")
    assert json.loads(real.output)["bytes"] == data["bytes"]
    assert kept_top.is_dir()
    assert sorted(p.name for p in (home / "build-cache").iterdir()) == ["layers", "unpacked"]
    cache = home / "build-cache"
    assert [*(cache / "layers").iterdir(), *(cache / "unpacked").iterdir()] == []
    # the build cache was a cache: the same context builds again to the same image
    digest = ImageStore(home / "images").resolve("built:1").descriptor.digest
    assert _build(home, tmp_path).exit_code == 0
    assert ImageStore(home / "images").resolve("built:1").descriptor.digest == digest
    assert gone_id not in sealer(home, "prune", "--all", "--dry-run").output


def test_rmi_drops_the_rootfs_cache_of_what_it_removed(home: Path) -> None:
    image_id, top = _seed(home, "a:1", 5000)
    res = sealer(home, "rmi", "a:1")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [
        "Untagged: docker.io/library/a:1",
        f"Deleted rootfs cache of {image_id[:19]} (5.1 kB)",
    ]
    assert not top.exists() and list((home / "cache" / "rootfs").iterdir()) == []


def test_an_entry_in_use_is_skipped_and_said_so(home: Path) -> None:
    image_id, top = _seed(home, "a:1", 1000)
    # flock is per open file: this second open contends exactly as another sealer process would
    holder = os.open(home / "cache" / "rootfs" / f".{image_id[7:]}.lock", os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_SH)
        rmi = sealer(home, "rmi", "a:1")
        assert rmi.exit_code == 0
        assert f"Kept rootfs cache of {image_id[:19]}: in use by another sealer process" in rmi.output
        res = sealer(home, "prune")
        assert res.exit_code == 0, res.output
        assert f"Skipped rootfs cache of {image_id[:19]}: in use by another sealer process" in res.output
        assert top.is_dir()
    finally:
        os.close(holder)
    res = sealer(home, "prune")
    assert f"Removed rootfs cache {image_id[:19]}: {top}" in res.output
    assert not top.exists()


def test_until_keeps_recent_build_cache(home: Path, tmp_path: Path) -> None:
    assert _build(home, tmp_path).exit_code == 0
    records = list((home / "build-cache" / "layers").iterdir())
    assert records
    res = sealer(home, "prune", "--until", "1h", "-o", "json")
    assert res.exit_code == 0 and json.loads(res.output)["removed"] == []
    old = records[0]
    os.utime(old, (1_000_000_000, 1_000_000_000))
    removed = json.loads(sealer(home, "prune", "--until", "7d", "-o", "json").output)["removed"]
    assert [r["path"] for r in removed] == [str(old)]


@pytest.mark.parametrize("bad", ["3x", "", "h", "1h-", "-1h"])
def test_a_bad_duration_is_a_clear_error(home: Path, bad: str) -> None:
    res = sealer(home, "prune", "--until", bad)
    assert res.exit_code == 2 and "--until" in res.output and "not a duration" in res.output
    assert "Traceback" not in res.output


def test_quiet_prints_only_the_total(home: Path) -> None:
    _seed(home, "a:1", 1000)
    res = CliRunner().invoke(cli, ["-q", "prune", "--all"], env={"SEALER_HOME": str(home)})
    assert res.exit_code == 0 and res.output.splitlines() == ["1 item(s), 1.1 kB freed"]


def test_rmi_failing_on_a_later_name_still_drops_the_cache_of_the_earlier(home: Path) -> None:
    image_id, top = _seed(home, "a:1", 1000)
    res = sealer(home, "rmi", "a:1", "absent:9")
    assert res.exit_code == 1 and "absent:9" in res.output and "Traceback" not in res.output
    assert f"Deleted rootfs cache of {image_id[:19]}" in res.output
    assert not top.exists()
