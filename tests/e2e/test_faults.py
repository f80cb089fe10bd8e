"""Faults on the test bed (lab `f2`): the sealer process is killed (SIGKILL) at random points of a
scale-up (1 + 1 -> 2 + 2) and of an upgrade, five times each; every re-run of the same command
resumes the same operation, the cluster converges, and the journal shows no finished step started
again. A second apply while one runs is refused by the lock. An install killed half-way is wiped by
`delete --all -f` and run anew. A second test (lab `f3`) kills sealer on purpose in the moment after
an operation's last step, which the random kills found to make the re-run redo the operation
(xfail until day-2 apply records its state before the journal's end record).

How the kill points are drawn. Each operation is first run once unkilled (the reference: the
scale-up is then undone by applying the 1 + 1 Clusterfile, the upgrade goes to an intermediate
release), and its journal
gives the ordered list of steps with how long each took. For the killed run, five distinct positions
in that list (all but the last step) are drawn, each with a fraction in [0, 1); kill `k` waits until
the journal records the start of the step at its position (or, when that one is done already, of the
first step after it that is not) and SIGKILLs sealer that fraction of the step's reference duration
later, or as soon as the step ends when it runs faster than in the reference. So a kill lands at the
start of a step, inside it, or right after it.

Why steps rather than moments drawn over the reference run's wall-clock duration: the machine is
shared and loaded, so the same moment lands in different steps from run to run, and late moments
may fall after the operation has ended (no kill at all). Anchored on journaled steps, a seed names
the same steps again on a re-run (the offset into a step moves with the load, and a kill that
overshoots its step can shift the next one's anchor by a step), each of the five kills is sure to
happen while work remains, and every part of the operation can be drawn, including the steps that
run on several hosts at once; the fraction reaches the work done inside a step.

Reproduce a failure with `SEALER_FAULT_SEED=<seed printed by the test>`; each kill prints the step
it waited for, the delay, the moment (seconds after sealer started) and the steps in flight.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.day2 import (
    assert_clean,
    assert_no_finished_step_started_again,
    build_upgrade_image,
    clusterfile,
    nodes_by_ip,
    ready,
)
from tests.e2e.images import SEALER, run_sealer, sealer_env
from tests.e2e.test_day2_k3s import (  # noqa: F401  (upgrade_images is a fixture)
    NEXT_VERSION,
    UpgradeImage,
    prepare_hosts,
    upgrade_images,
)

pytestmark = [pytest.mark.e2e, pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(3600)]

CLUSTER = "f2"
LAB = os.environ.get("SEALER_E2E_FAULT_LAB", "f2")  # another id lets a second copy run beside a full suite
KILLS = 5
WINDOW_LAB = os.environ.get("SEALER_E2E_FAULT_LAB2", "f3")
# The reference upgrade goes here first (a patch release between the suite's two k3s versions), so
# the killed upgrade has an unkilled twin of the same shape.
MID_VERSION = "v1.30.7+k3s1"
MID_IMAGE = "e2e.local/sealer/k3s-demo:1.5"

Step = tuple[str, str, str | None]  # (action, step, host): a journaled step, inputs digest aside


def records(home: Path) -> list[dict[str, Any]]:
    path = home / CLUSTER / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def parse_lines(lines: Sequence[bytes]) -> list[dict[str, Any]]:
    """Journal records; a line torn by the kill is skipped, as the journal's own reader does."""
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def step_of(r: dict[str, Any]) -> Step:
    return (r["action"], r["step"], r.get("host"))


def is_done_step(r: dict[str, Any]) -> bool:
    return bool(r["type"] == "step" and r["status"] == "done")


def last_op(recs: list[dict[str, Any]]) -> str:
    return str([r for r in recs if r["type"] == "begin"][-1]["op"])


def reference_steps(recs: list[dict[str, Any]], op: str) -> list[tuple[Step, float]]:
    """The steps of a finished operation in the order they started, with how long each took.
    The operation's closing bookkeeping step (saving the applied Clusterfile) is left out like its
    end record: with it, the last real step would become a kill point that a quick resumed run
    finishes, bookkeeping and all, before the kill lands (the moment after the last step has a test
    of its own below)."""
    started: dict[Step, datetime] = {}
    out: list[tuple[Step, float]] = []
    for r in recs:
        if r["op"] != op or r["type"] != "step" or r.get("step") == "save-state":
            continue
        at = datetime.fromisoformat(r["time"])
        if r["status"] == "start":
            started[step_of(r)] = at
            out.append((step_of(r), 0.0))
        elif r["status"] == "done":
            i = max(i for i, (s, _) in enumerate(out) if s == step_of(r))
            out[i] = (out[i][0], (at - started[step_of(r)]).total_seconds())
    return out


@dataclass
class Kill:
    """Where one kill landed, for the test's output (and a failure's message)."""

    target: Step  # the step whose start the kill waited for
    delay: float
    moment: float  # seconds after sealer started
    in_flight: list[Step]

    def __str__(self) -> str:
        running = ", ".join(f"{s}@{h}" for _, s, h in self.in_flight) or "none (between steps)"
        return (
            f"at {self.target[1]}@{self.target[2]} ({self.target[0]}) + {self.delay:.2f}s, "
            f"{self.moment:.1f}s after sealer started; steps running then: {running}"
        )


class RandomKiller:
    """Runs one sealer command again and again, each time SIGKILLed at the next drawn point."""

    def __init__(self, home: Path, seed: int, what: str, reference: list[tuple[Step, float]]) -> None:
        assert len(reference) > KILLS, f"{what}: only {len(reference)} journaled steps in the reference"
        self.home, self.what, self.reference = home, what, reference
        rng = random.Random(f"{seed}:{what}")
        # not the last step: a kill after it may find sealer gone (the moment after the last step
        # has a test of its own below)
        positions = sorted(rng.sample(range(len(reference) - 1), KILLS))
        self.points = [(p, rng.random()) for p in positions]
        self.kills: list[Kill] = []
        self.seed = seed

    def _pending(self, op: str | None) -> list[int]:
        """Positions of the reference steps the operation has not finished yet."""
        done = {step_of(r) for r in records(self.home) if r["op"] == op and is_done_step(r)}
        return [i for i, (s, _) in enumerate(self.reference) if s not in done]

    def run_and_kill(self, args: Sequence[str], op: str | None) -> None:
        position, fraction = self.points[len(self.kills)]
        pending = self._pending(op)
        assert pending, f"{self.what} seed {self.seed}: no step left to kill in, kills so far: {self.kills}"
        # The drawn step, or when it is done already (an earlier kill overshot it) the next one not
        # done; any of the later ones counts too, since a resumed run may skip work it no longer
        # needs (a fan-out when fewer hosts lack the payload) and must still be killed somewhere.
        later = [i for i in pending if i >= position] or pending
        candidates = {self.reference[i][0]: i for i in reversed(later)}
        journal = self.home / CLUSTER / "journal.jsonl"
        offset = journal.stat().st_size if journal.exists() else 0
        began = time.monotonic()
        proc = subprocess.Popen(
            [str(SEALER), *args],
            env=sealer_env(self.home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        target, delay = self.reference[later[0]][0], 0.0
        try:
            started = self._wait_for_start(journal, offset, candidates, proc)
            if started is not None:
                target, delay = started, fraction * self.reference[candidates[started]][1]
                delay = self._into(journal, offset, started, delay, proc)
                os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            out, err = proc.communicate(timeout=60)
        moment = time.monotonic() - began
        assert proc.returncode == -signal.SIGKILL, (
            f"{self.what} seed {self.seed}: sealer ended by itself ({proc.returncode}) before the kill "
            f"{delay:.2f}s into {target}:\n{out}\n{err}"
        )
        open_steps: dict[Step, None] = {}
        for r in parse_lines(journal.read_bytes()[offset:].split(b"\n")):
            if r.get("type") == "step":
                if r["status"] == "start":
                    open_steps[step_of(r)] = None
                else:
                    open_steps.pop(step_of(r), None)
        kill = Kill(target, delay, moment, list(open_steps))
        self.kills.append(kill)
        print(f"  {self.what} kill {len(self.kills)} (seed {self.seed}): {kill}")

    def _into(
        self, journal: Path, offset: int, step: Step, delay: float, proc: subprocess.Popen[str]
    ) -> float:
        """Wait `delay` seconds into `step` (not a threshold: it only places the kill), or less when
        the step ends sooner here than in the reference, so the kill still finds sealer running.
        Returns the time actually waited."""
        began = time.monotonic()
        while time.monotonic() - began < delay and proc.poll() is None:
            tail = parse_lines(journal.read_bytes()[offset:].split(b"\n"))
            if any(
                r["type"] == "end" or (r["type"] == "step" and r["status"] != "start" and step_of(r) == step)
                for r in tail
            ):
                break
            time.sleep(0.01)
        return time.monotonic() - began

    def _wait_for_start(
        self, journal: Path, offset: int, candidates: dict[Step, int], proc: subprocess.Popen[str]
    ) -> Step | None:
        """The first of `candidates` this run starts, as the journal records it; None if sealer ends
        before starting any."""
        deadline = time.monotonic() + 900
        seen = offset
        buf = b""
        while True:
            if journal.exists():
                with journal.open("rb") as f:
                    f.seek(seen)
                    chunk = f.read()
                seen += len(chunk)
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for r in parse_lines(lines):
                    if r.get("type") == "step" and r["status"] == "start" and step_of(r) in candidates:
                        return step_of(r)
            if proc.poll() is not None:
                return None  # the caller reports this with sealer's output
            assert time.monotonic() < deadline, f"{self.what} seed {self.seed}: none of {candidates} started"
            time.sleep(0.05)


def assert_resumed(done: subprocess.CompletedProcess[str], killer: RandomKiller) -> None:
    kills = "\n".join(f"  {k}" for k in killer.kills)
    assert "resuming operation" in done.stderr, (
        f"seed {killer.seed}: the last re-run of the {killer.what} did not resume the killed operation; "
        f"kills:\n{kills}\n(a kill after the operation's last step: see "
        f"test_a_kill_after_the_last_step_does_not_make_the_rerun_redo_the_operation)\n{done.stderr}"
    )


def not_ready(nodes: dict[str, Any]) -> dict[str, list[str]]:
    """Nodes that are not Ready, with their conditions (what a failure needs to say)."""
    return {
        ip: [f"{c.type}={c.status} {c.reason}: {c.message}" for c in n.status.conditions or []]
        for ip, n in nodes.items()
        if not ready(n)
    }


def converged(home: Path, ips: set[str], seed: int) -> dict[str, Any]:
    """The Nodes once every host is one and all are Ready. sealer waited for each joined node to be
    Ready; on this shared, loaded machine a stand-in node can still miss a heartbeat or a containerd
    check for a moment afterwards, so readiness is polled (a bound for a hung cluster, not a speed
    check) and any wait is printed: the cluster must converge, not be caught between heartbeats."""
    began = time.monotonic()
    while True:
        nodes = nodes_by_ip(home, CLUSTER)
        if set(nodes) == ips and not not_ready(nodes):
            if time.monotonic() - began > 1:
                print(f"  nodes all Ready after {time.monotonic() - began:.0f}s more")
            return nodes
        assert time.monotonic() - began < 300, (seed, sorted(nodes), not_ready(nodes))
        if time.monotonic() - began < 1:
            print(f"  not converged yet: nodes {sorted(nodes)}, not Ready: {not_ready(nodes)}")
        time.sleep(2)


def fault_seed() -> int:
    raw = os.environ.get("SEALER_FAULT_SEED")
    seed = int(raw) if raw else random.SystemRandom().randrange(1, 10**9)
    print(f"\n  fault seed: SEALER_FAULT_SEED={seed}")
    return seed


def test_killed_scale_up_and_upgrade_resume_and_converge(
    testbed_factory: Any,
    upgrade_images: UpgradeImage,  # noqa: F811
    tmp_path: Path,
) -> None:
    seed = fault_seed()
    home = tmp_path / "sealer-home"
    shutil.copytree(upgrade_images.home, home, symlinks=True)
    mid = build_upgrade_image(home, upgrade_images.old, {"k3s": MID_VERSION}, MID_IMAGE, tmp_path)
    tb = testbed_factory(nested=True, lab=LAB)
    h1, h2, h3, h4 = hosts = tb.up(4)
    prepare_hosts(tb, hosts)
    cf = tmp_path / "Clusterfile"
    cf.write_text(clusterfile(upgrade_images.old, tb.key_path, [h1.ip], [h2.ip], CLUSTER))
    flag = tmp_path / "paused"

    # an install killed half-way (at a chosen point) is wiped with delete --all -f (no last-applied
    # state yet), then run anew
    proc = subprocess.Popen(
        [str(SEALER), "run", "-f", str(cf)],
        env=sealer_env(home, SEALER_TEST_PAUSE_BEFORE=f"runtime@{h2.ip}", SEALER_TEST_PAUSE_FILE=str(flag)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_flag(flag, proc, "runtime")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    flag.unlink()
    status = json.loads(run_sealer(home, "status", "--cluster", CLUSTER, "-o", "json").stdout)
    assert not status["exists"] and status["lastOperation"]["kind"] == "run", status
    wiped = run_sealer(home, "delete", "--all", "--prune", "-f", str(cf), "-y")
    assert "delete done" in wiped.stdout, wiped.stdout + wiped.stderr
    for h in (h1, h2):
        assert_clean(tb, h, CLUSTER, "k3s")
    prepare_hosts(tb, [h1, h2])  # test-bed only: the reset removed the containerd link
    run_sealer(home, "run", "-f", str(cf))

    # the reference scale-up 1 + 1 -> 2 + 2, unkilled; while it runs a second apply is refused and
    # says who holds the cluster
    small = clusterfile(upgrade_images.old, tb.key_path, [h1.ip], [h2.ip], CLUSTER)
    big = clusterfile(upgrade_images.old, tb.key_path, [h1.ip, h3.ip], [h2.ip, h4.ip], CLUSTER)
    cf.write_text(big)
    apply = ["apply", "-f", str(cf)]
    first = subprocess.Popen(
        [str(SEALER), *apply],
        env=sealer_env(home, SEALER_TEST_PAUSE_BEFORE=f"etc-hosts@{h3.ip}", SEALER_TEST_PAUSE_FILE=str(flag)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_flag(flag, first, "etc-hosts")
    second = run_sealer(home, *apply, check=False)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "locked" in second.stderr.lower() and "sealer apply" in second.stderr, second.stderr
    flag.unlink()
    out, err = first.communicate(timeout=900)
    assert first.returncode == 0 and "update done" in out, out + err
    recs = records(home)
    scale_reference = reference_steps(recs, last_op(recs))

    # back to 1 + 1 (h3 and h4 reset), then the same scale-up again, killed at five random points
    cf.write_text(small)
    run_sealer(home, *apply, "-y")
    assert set(nodes_by_ip(home, CLUSTER)) == {h1.ip, h2.ip}
    for h in (h3, h4):
        assert_clean(tb, h, CLUSTER, "k3s")
    prepare_hosts(tb, [h3, h4])
    cf.write_text(big)
    killer = RandomKiller(home, seed, "scale-up", scale_reference)
    op: str | None = None
    for _ in range(KILLS):
        killer.run_and_kill(apply, op)
        recs = records(home)
        op = last_op(recs)
        status = json.loads(run_sealer(home, "status", "--cluster", CLUSTER, "-o", "json").stdout)
        assert status["lastOperation"]["status"] == "running", (seed, status)
        assert status["toFinish"].startswith("sealer apply -f"), (seed, status)
    assert_resumed(run_sealer(home, *apply), killer)
    nodes = converged(home, {h.ip for h in hosts}, seed)
    assert nodes[h4.ip].metadata.labels["disk"] == "ssd"
    assert nodes[h3.ip].metadata.labels["node-role.kubernetes.io/control-plane"] == "true"
    recs = records(home)
    assert last_op(recs) == op, f"seed {seed}: every re-run resumes the same operation"
    mine = [r for r in recs if r["op"] == op]
    assert sum(r["type"] == "resume" for r in mine) == KILLS, f"seed {seed}: each re-run resumes"
    assert mine[-1]["type"] == "end" and mine[-1]["status"] == "done"
    assert {step_of(r) for r in mine if is_done_step(r)} >= {s for s, _ in scale_reference}
    assert_no_finished_step_started_again(recs)
    assert h4.ip in (home / CLUSTER / "Clusterfile").read_text()
    scale_op = op

    # the reference upgrade (old -> mid, unkilled), then mid -> new killed at five random points
    run_sealer(home, "upgrade", mid, "--cluster", CLUSTER)
    recs = records(home)
    upgrade_reference = reference_steps(recs, last_op(recs))
    upgrade = ["upgrade", upgrade_images.new, "--cluster", CLUSTER]
    killer = RandomKiller(home, seed, "upgrade", upgrade_reference)
    op = None
    for _ in range(KILLS):
        killer.run_and_kill(upgrade, op)
        op = last_op(records(home))
    assert_resumed(run_sealer(home, *upgrade), killer)
    nodes = converged(home, {h.ip for h in hosts}, seed)
    assert {ip: n.status.nodeInfo.kubeletVersion for ip, n in nodes.items()} == {
        h.ip: NEXT_VERSION for h in hosts
    }, seed
    assert not [ip for ip, n in nodes.items() if n.spec.unschedulable], seed
    for h in hosts:
        assert NEXT_VERSION in tb.run_on(h, "/usr/local/bin/k3s --version").stdout
    recs = records(home)
    assert op not in (None, scale_op) and last_op(recs) == op
    mine = [r for r in recs if r["op"] == op]
    assert sum(r["type"] == "resume" for r in mine) == KILLS, f"seed {seed}: each re-run resumes"
    assert mine[-1]["type"] == "end" and mine[-1]["status"] == "done"
    assert_no_finished_step_started_again(recs)
    status = json.loads(run_sealer(home, "status", "--cluster", CLUSTER, "-o", "json").stdout)
    assert status["lastOperation"]["status"] == "done" and status["image"] == upgrade_images.new
    run_sealer(home, "delete", "--all", "--prune", "--cluster", CLUSTER, "-y")


def test_a_kill_after_the_last_step_does_not_make_the_rerun_redo_the_operation(
    testbed_factory: Any,
    upgrade_images: UpgradeImage,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The random kills above can land in the moment between an operation's last journaled step and
    the end of the process; here a kill is placed there on purpose (at the journal's `end` record)."""
    home = tmp_path / "sealer-home"
    shutil.copytree(upgrade_images.home, home, symlinks=True)
    tb = testbed_factory(nested=True, lab=WINDOW_LAB)
    (h1,) = tb.up(1)
    prepare_hosts(tb, [h1])
    cf = tmp_path / "Clusterfile"
    cf.write_text(clusterfile(upgrade_images.old, tb.key_path, [h1.ip], [], CLUSTER))
    run_sealer(home, "run", "-f", str(cf))
    aliases = {"10.99.0.1": ["db.e2e.local"]}
    cf.write_text(clusterfile(upgrade_images.old, tb.key_path, [h1.ip], [], CLUSTER, aliases=aliases))
    journal = home / CLUSTER / "journal.jsonl"
    offset = journal.stat().st_size
    proc = subprocess.Popen(
        [str(SEALER), "apply", "-f", str(cf)],
        env=sealer_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    while proc.poll() is None:
        tail = parse_lines(journal.read_bytes()[offset:].split(b"\n"))
        if any(r["type"] == "end" for r in tail):
            os.kill(proc.pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "the operation never ended"
        time.sleep(0.005)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("sealer exited on its own before the kill landed; nothing to check this time")
    assert proc.returncode == -signal.SIGKILL, out + err
    killed_op = [r for r in parse_lines(journal.read_bytes()[offset:].split(b"\n")) if r["type"] == "end"]
    assert killed_op and killed_op[0]["status"] == "done", killed_op
    before = journal.stat().st_size
    rerun = run_sealer(home, "apply", "-f", str(cf))
    redone = [
        f"{r['step']}@{r.get('host')} (operation {r['op']})"
        for r in parse_lines(journal.read_bytes()[before:].split(b"\n"))
        if r["type"] == "step" and r["status"] == "start"
    ]
    assert not redone, (
        f"operation {killed_op[0]['op']} had finished, yet the re-run ran again: {redone}\n{rerun.stdout}"
    )
    assert "db.e2e.local" in (home / CLUSTER / "Clusterfile").read_text()
    assert "10.99.0.1 db.e2e.local" in tb.run_on(h1, "cat /etc/hosts").stdout
    run_sealer(home, "delete", "--all", "--prune", "--cluster", CLUSTER, "-y")


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
