"""Faults on the test bed (lab `f2`): the sealer process is killed (SIGKILL) at five points of a
scale-up (1 + 1 -> 2 + 2) and five points of an upgrade, once in the middle of a step; each re-run
of the same command resumes the same operation and the cluster converges, and the journal shows no
finished step started again. A second apply while one runs is refused by the lock.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.images import SEALER, run_sealer, sealer_env
from tests.e2e.test_day2_k3s import (  # noqa: F401  (upgrade_images is a fixture)
    NEXT_VERSION,
    UpgradeImage,
    assert_clean,
    clusterfile,
    nodes_by_ip,
    prepare_hosts,
    ready,
    upgrade_images,
)

pytestmark = [pytest.mark.e2e, pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(3600)]

CLUSTER = "f2"
LAB = os.environ.get("SEALER_E2E_FAULT_LAB", "f2")  # another id lets a second copy run beside a full suite


def records(home: Path) -> list[dict[str, Any]]:
    path = home / CLUSTER / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_no_finished_step_started_again(recs: list[dict[str, Any]]) -> None:
    finished: set[tuple[Any, ...]] = set()
    for r in recs:
        if r["type"] != "step":
            continue
        key = (r["op"], r["action"], r["step"], r.get("host"), r.get("digest"))
        if r["status"] == "start":
            assert key not in finished, f"step {key} was started again after it had finished"
        elif r["status"] == "done":
            finished.add(key)


def start_paused(home: Path, flag: Path, point: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SEALER), *args],
        env=sealer_env(home, SEALER_TEST_PAUSE_BEFORE=point, SEALER_TEST_PAUSE_FILE=str(flag)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_flag(flag: Path, proc: subprocess.Popen[str], point: str) -> None:
    deadline = time.monotonic() + 900
    while not flag.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"sealer ended before {point}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"sealer never reached {point}")
        time.sleep(0.2)


def kill_at(home: Path, flag: Path, point: str, args: list[str], *, mid_step: bool = False) -> None:
    """Run the command until it is about to start `point` (step@host), then SIGKILL it there (or,
    mid_step, a moment after letting that step begin)."""
    proc = start_paused(home, flag, point, *args)
    wait_for_flag(flag, proc, point)
    if mid_step:
        flag.unlink()
        time.sleep(1.0)  # not a threshold: only places the kill inside the step's work
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    flag.unlink(missing_ok=True)


def test_killed_scale_up_and_upgrade_resume_and_converge(
    testbed_factory: Any,
    upgrade_images: UpgradeImage,  # noqa: F811
    tmp_path: Path,
) -> None:
    home = tmp_path / "sealer-home"
    shutil.copytree(upgrade_images.home, home, symlinks=True)
    tb = testbed_factory(nested=True, lab=LAB)
    h1, h2, h3, h4 = hosts = tb.up(4)
    prepare_hosts(tb, hosts)
    cf = tmp_path / "Clusterfile"
    cf.write_text(clusterfile(upgrade_images.old, tb.key_path, [h1.ip], [h2.ip], name=CLUSTER))
    flag = tmp_path / "paused"

    # an install killed half-way is wiped with delete --all -f (no last-applied state yet), then run anew
    kill_at(home, flag, f"runtime@{h2.ip}", ["run", "-f", str(cf)])
    status = json.loads(run_sealer(home, "status", "--cluster", CLUSTER, "-o", "json").stdout)
    assert not status["exists"] and status["lastOperation"]["kind"] == "run", status
    wiped = run_sealer(home, "delete", "--all", "--prune", "-f", str(cf), "-y")
    assert "delete done" in wiped.stdout, wiped.stdout + wiped.stderr
    for h in (h1, h2):
        assert_clean(tb, h, CLUSTER)
    prepare_hosts(tb, [h1, h2])  # test-bed only: the reset removed the containerd link
    run_sealer(home, "run", "-f", str(cf))

    # scale-up 1 + 1 -> 2 + 2, killed at five points (one inside the worker's join)
    cf.write_text(clusterfile(upgrade_images.old, tb.key_path, [h1.ip, h3.ip], [h2.ip, h4.ip], name=CLUSTER))
    apply = ["apply", "-f", str(cf)]
    first = start_paused(home, flag, f"etc-hosts@{h3.ip}", *apply)
    wait_for_flag(flag, first, "etc-hosts")
    # while it runs, a second apply is refused and says who holds the cluster
    second = run_sealer(home, *apply, check=False)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "locked" in second.stderr.lower() and "sealer apply" in second.stderr, second.stderr
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)
    flag.unlink()
    status = json.loads(run_sealer(home, "status", "--cluster", CLUSTER, "-o", "json").stdout)
    assert status["lastOperation"]["status"] == "running" and status["toFinish"].startswith("sealer apply -f")
    for point, mid in (
        (f"runtime@{h3.ip}", False),
        (f"labels-taints@{h3.ip}", False),
        (f"runtime@{h4.ip}", True),
        (f"labels-taints@{h4.ip}", False),
    ):
        kill_at(home, flag, point, apply, mid_step=mid)
    done = run_sealer(home, *apply)
    assert "resuming operation" in done.stderr, done.stderr
    nodes = nodes_by_ip(home, CLUSTER)
    assert set(nodes) == {h.ip for h in hosts} and all(ready(n) for n in nodes.values())
    assert nodes[h4.ip].metadata.labels["disk"] == "ssd"
    recs = records(home)
    scale_op = [r for r in recs if r["type"] == "begin"][-1]["op"]
    mine = [r for r in recs if r["op"] == scale_op]
    assert sum(r["type"] == "resume" for r in mine) == 5, "each re-run resumes the same operation"
    assert mine[-1]["type"] == "end" and mine[-1]["status"] == "done"
    assert_no_finished_step_started_again(recs)
    assert h4.ip in (home / CLUSTER / "Clusterfile").read_text()

    # upgrade, killed at five points: the new rootfs, master0's and h3's upgrade, h2's drain, h4's uncordon
    upgrade = ["upgrade", upgrade_images.new, "--cluster", CLUSTER]
    for point, mid in (
        (f"rootfs@{h1.ip}", False),
        (f"upgrade@{h1.ip}", False),
        (f"upgrade@{h3.ip}", True),
        (f"drain@{h2.ip}", False),
        (f"uncordon@{h4.ip}", False),
    ):
        kill_at(home, flag, point, upgrade, mid_step=mid)
    done = run_sealer(home, *upgrade)
    assert "resuming operation" in done.stderr, done.stderr
    nodes = nodes_by_ip(home, CLUSTER)
    assert {ip: n.status.nodeInfo.kubeletVersion for ip, n in nodes.items()} == {
        h.ip: NEXT_VERSION for h in hosts
    }
    assert all(ready(n) and not n.spec.unschedulable for n in nodes.values())
    recs = records(home)
    upgrade_op = [r for r in recs if r["type"] == "begin"][-1]["op"]
    assert upgrade_op != scale_op
    assert sum(r["type"] == "resume" for r in recs if r["op"] == upgrade_op) == 5
    assert_no_finished_step_started_again(recs)
    status = json.loads(run_sealer(home, "status", "--cluster", CLUSTER, "-o", "json").stdout)
    assert status["lastOperation"]["status"] == "done" and status["image"] == upgrade_images.new
    run_sealer(home, "delete", "--all", "--prune", "--cluster", CLUSTER, "-y")
