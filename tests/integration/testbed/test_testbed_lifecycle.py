"""The test bed's lifecycle from outside: the CLI, teardown when pytest is killed or interrupted, reaping
of labs whose owner died, and the rootfs cache under concurrent `prepare`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.testbed import Testbed, rootfs
from tests.testbed import TestbedFactory as Factory
from tests.testbed.common import BASE
from tests.testbed.lab import _starttime, lab_owner, leftovers, list_labs, reap_stale_labs

pytestmark = [pytest.mark.integration, pytest.mark.testbed]

REPO = Path(__file__).resolve().parents[3]


def _py(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _footprint_from_disk(lab: str) -> tuple[str, int, list[str], list[int]]:
    st = json.loads((BASE / lab / "lab.json").read_text())
    pids = [p["pid"] for p in st["procs"].values()]
    return lab, st["k"], st["cgroup_bases"], pids


def _unused_lab(prefix: str) -> str:
    for i in range(100):
        name = f"{prefix}{i}"
        if name not in list_labs():
            return name
    raise AssertionError("no free lab name")


def test_cli_up_status_down(rootfs: Path) -> None:
    lab = _unused_lab("cli")
    try:
        r = _py("-m", "tests.testbed", "up", "2", "--lab", lab, "--light")
        assert r.returncode == 0, r.stderr
        assert f"{lab}h2" in r.stdout and "hosts up in" in r.stdout
        r = _py("-m", "tests.testbed", "status", "--lab", lab, "-o", "json")
        st = json.loads(r.stdout)["labs"][0]
        assert [h["running"] for h in st["hosts"]] == [True, True]
        assert st["variant"] == "light"
        fp = _footprint_from_disk(lab)
        assert all(Path(f"/proc/{p}").exists() for p in fp[3]), "hosts outlive the CLI process"
        r = _py("-m", "tests.testbed", "ssh", f"{lab}h2", "hostname")
        assert (r.returncode, r.stdout.strip()) == (0, f"{lab}h2"), r.stderr
        assert _py("-m", "tests.testbed", "fault", "cut", f"{lab}h1").returncode == 0
        r = _py("-m", "tests.testbed", "ssh", f"{lab}h1", "-o", "ConnectTimeout=1", "true")
        assert r.returncode == 255 and "timed out" in r.stderr
        assert _py("-m", "tests.testbed", "fault", "restore", "1", "--lab", lab).returncode == 0
        r = _py("-m", "tests.testbed", "ssh", "--lab", lab, "1", "hostname")
        assert (r.returncode, r.stdout.strip()) == (0, f"{lab}h1"), r.stderr
        r = _py("-m", "tests.testbed", "down", "--lab", lab)
        assert r.returncode == 0, r.stderr
        assert leftovers(*fp) == []
        r = _py("-m", "tests.testbed", "down", "--lab", lab)
        assert r.returncode == 0 and "not up" in r.stdout
    finally:
        if lab in list_labs():
            Testbed.load(lab).down(fast=True)


def test_cli_errors_are_clear(rootfs: Path) -> None:
    r = _py("-m", "tests.testbed", "up", "1", "--lab", "Bad_Name")
    assert r.returncode == 1 and "bad lab id" in r.stderr and "hint:" in r.stderr
    assert "Traceback" not in r.stderr
    r = _py("-m", "tests.testbed", "up", "1", "--lab", "x", "--nested", "--light")
    assert r.returncode == 1 and "exclude each other" in r.stderr
    r = _py("-m", "tests.testbed", "status", "--lab", "nosuchlab")
    assert r.returncode == 1 and "no lab 'nosuchlab'" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killed_pytest_tears_its_hosts_down(rootfs: Path, tmp_path: Path, sig: signal.Signals) -> None:
    lab = _unused_lab("sig")
    ready = tmp_path / "ready"
    (tmp_path / "test_hold.py").write_text(
        textwrap.dedent(f"""
        import time
        from pathlib import Path

        def test_hold(testbed_factory):
            testbed_factory(lab="{lab}").up(2)
            Path("{ready}").write_text("up")
            time.sleep(600)
    """)
    )
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.testbed.plugin"]\n')
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "-c",
            "/dev/null",
            str(tmp_path / "test_hold.py"),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert p.poll() is None, p.communicate()[0]
            assert time.monotonic() < deadline, "hosts did not come up"
            time.sleep(0.1)
        fp = _footprint_from_disk(lab)
        assert fp[3]
        assert lab_owner(lab) == p.pid, "`down --all` leaves a lab alone while its owner lives"
        p.send_signal(sig)
        out = p.communicate(timeout=60)[0]
        assert leftovers(*fp) == [], out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if lab in list_labs():
            Testbed.load(lab).down(fast=True)


def test_labs_of_dead_owners_are_reaped(rootfs: Path) -> None:
    # A process that brings up an ephemeral lab and dies without any teardown (as on SIGKILL).
    r = _py(
        "-c",
        "import os; from tests.testbed import Testbed; tb = Testbed(None, light=True); tb.up(1); "
        "print(tb.name, flush=True); os._exit(0)",
    )
    assert r.returncode == 0, r.stderr
    lab = r.stdout.strip()
    assert lab_owner(lab) is None
    fp = _footprint_from_disk(lab)
    assert leftovers(*fp) != []
    assert lab in reap_stale_labs()
    assert leftovers(*fp) == []


def test_live_labs_are_not_reaped_and_a_with_block_tears_down(rootfs: Path) -> None:
    with Testbed(None, light=True) as tb:
        tb.up(1)
        fp = tb.footprint()
        assert tb.name not in reap_stale_labs(), "the owner (this process) is alive"
        assert leftovers(*fp) != []
    assert leftovers(*fp) == []


FAKE_DEBOOTSTRAP = """#!/bin/sh
# Stands in for debootstrap in the cache-locking test: counts its runs, then copies a finished tree.
echo run >> "$COUNT"
sleep 1
dest=$4
cp -a "$SRC" "$dest"
rm -f "$dest/.testbed-recipe.json"
"""


def test_concurrent_prepare_builds_once_and_publishes_atomically(rootfs: Path, tmp_path: Path) -> None:
    fake = tmp_path / "debootstrap"
    fake.write_text(FAKE_DEBOOTSTRAP)
    fake.chmod(0o755)
    count = tmp_path / "count"
    env = {
        "SEALER_TESTBED_DIR": str(tmp_path / "base"),
        "SEALER_TESTBED_DEBOOTSTRAP": str(fake),
        "SRC": str(rootfs),
        "COUNT": str(count),
        "SEALER_TESTBED_MIRROR": "http://unused.invalid/debian",
    }
    code = "from tests.testbed import rootfs; print(rootfs.prepare(quiet=True))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1
    built = Path(paths.pop())
    assert built.name == rootfs.name, "same recipe, same cache key"
    assert count.read_text().count("run") == 1, "one build, the others waited and reused it"
    assert (built / ".testbed-recipe.json").is_file()
    assert not list(built.parent.glob(".build-*")), "no half-built tree left"
    assert "tbsudo" in (built / "etc/passwd").read_text()
    assert (built / "etc/hostname").read_text().strip() == "tb-node"
    assert not list((built / "etc/ssh").glob("ssh_host_*")), "host keys are per host, not in the lower"
    subprocess.run(["rm", "-rf", str(tmp_path / "base")], check=True)


def test_recipe_hash_follows_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    before = rootfs.recipe_hash()
    assert before == rootfs.recipe_hash()
    monkeypatch.setattr(rootfs, "PACKAGES", (*rootfs.PACKAGES, "strace"))
    assert rootfs.recipe_hash() != before
    monkeypatch.undo()
    monkeypatch.setattr(rootfs, "POST_STEPS", rootfs.POST_STEPS + "true\n")
    assert rootfs.recipe_hash() != before


def test_adopt_refuses_an_unfinished_or_foreign_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.testbed import TestbedError

    monkeypatch.setattr(rootfs, "cache_root", lambda: tmp_path / "cache")
    tmp_path = tmp_path / "src"
    tmp_path.mkdir()

    (tmp_path / "debootstrap").mkdir()
    with pytest.raises(TestbedError, match="has not finished"):
        rootfs.adopt(tmp_path)
    (tmp_path / "debootstrap").rmdir()
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text("Package: openssh-server\nStatus: install ok installed\n")
    with pytest.raises(TestbedError, match="missing packages: openssh-sftp-server"):
        rootfs.adopt(tmp_path)


def test_down_cleans_up_after_a_sigkilled_nspawn_and_strays_in_the_netns(
    testbed_factory: Factory,
) -> None:

    tb = testbed_factory()
    h1, h2 = tb.up(2)
    # The pitfall: SIGKILL on nspawn itself leaves the container's systemd running, orphaned.
    nspawn = tb._procs[h1.name].pid
    init = tb._init_pid(h1)
    assert init is not None
    os.kill(nspawn, signal.SIGKILL)
    # And a stray process started in a host's netns by hand (outside any cgroup of the lab).
    stray = subprocess.Popen(["ip", "netns", "exec", h2.netns, "sleep", "600"], start_new_session=True)
    fp = tb.footprint()
    assert init in fp[3]
    tb.down()
    stray.wait(timeout=10)
    assert leftovers(*fp) == []
    assert _starttime(init) is None, "the orphaned container's systemd is gone (at most a zombie)"


CONCURRENT_LAB = """
import json, sys, time
from pathlib import Path
from tests.testbed import Testbed
from tests.testbed.client import ssh

me, n, sync = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
tb = Testbed(None, light=True)
try:
    hosts = tb.up(2)
    (sync / f"ready{me}").write_text("")
    deadline = time.monotonic() + 120
    while len(list(sync.glob("ready*"))) < n:  # all labs are up at the same time from here on
        assert time.monotonic() < deadline
        time.sleep(0.05)
    names = [ssh(h, "hostname").stdout.strip() for h in hosts]
    want = [h.name for h in hosts]
    print(json.dumps({"lab": tb.name, "subnet": tb.net.subnet, "names": names, "want": want}))
finally:
    tb.down(fast=True)
"""


def test_labs_made_at_the_same_time_get_their_own_names_and_subnets(rootfs: Path, tmp_path: Path) -> None:
    n = 3
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_LAB, str(i), str(n), str(tmp_path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    labs = [json.loads(o[0]) for o in outs]
    assert len({lab["lab"] for lab in labs}) == n
    assert len({lab["subnet"] for lab in labs}) == n
    for lab in labs:
        assert lab["names"] == lab["want"], "each host answered as itself, not a host of another lab"
        assert lab["lab"] not in list_labs()
