"""Benchmark: the fan-out's per-host progress over one long-lived session (now) against a new
SSH session per host and tick (before), side by side in one run on the same lab and payload.

    .venv/bin/python -m bench.fanout_progress [--ns 10,30] [--rate 100mbit] [--mb 60]
                                              [--repeat 2] [--lab h2c] [--baseline REV]
                                              [--progress-only SECONDS]

"Before" is src/sealer/infra/fanout.py as it was at --baseline (a git revision; default: the
last commit with per-tick polling), loaded from git into a module of its own, so both versions
run in this process against the same connector code. Per run: the operator's CPU (user+sys of
this process, resource.getrusage, so the hosts' and sshd's CPU is not in it), wall time, and
the SSH sessions opened for progress. Runs alternate before/now (ABBA...) so drifting load hits
both alike. Every copy is verified on every host. Needs root and the test bed (light hosts).
The last lines print the ratios before/now per N.

--progress-only SECONDS measures the progress alone, without a copy: connected to N hosts that
each have a run's work dir and spool, the operator watches them for SECONDS at tick 1 s, before
(a poll session per host and tick, at most one in flight per host, as the old watch loop did)
and now (`_ProgressStream`). Connecting is outside the measured window, so this is the cost of
watching N hosts per second of transfer, the part that grows with N and the transfer's length.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.testbed import Testbed, TestHost

from sealer.infra import fanout, transfer
from sealer.infra.fleet import Fleet
from sealer.infra.host import Target
from sealer.infra.ssh import SSHConnector

MB = 1 << 20
DST = "/srv/bench-progress"
ROOT = Path(__file__).resolve().parents[1]
BASELINE = "15db36a"  # ssh exec(on_stdout=) added, fan-out still polling with a session per tick


def load_baseline(rev: str) -> types.ModuleType:
    """fanout.py at `rev`, as a module of its own (sealer.infra.fanout stays the current one)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:src/sealer/infra/fanout.py"],
                            check=True, capture_output=True, text=True).stdout
    if "poll_script" not in source:
        raise SystemExit(f"{rev}: its fanout.py has no per-tick poll; pass --baseline with one that has")
    name = "sealer.infra._fanout_baseline"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is made
    exec(compile(source, f"{rev}:src/sealer/infra/fanout.py", "exec"), mod.__dict__)
    return mod


def make_tree(root: Path, mb: int) -> None:
    """One large file (most of the bytes) and many small ones, as a rootfs has."""
    root.mkdir(parents=True)
    small = 200
    (root / "big.bin").write_bytes(os.urandom(max(mb * MB - small * 64 * 1024, MB)))
    d = root / "small"
    d.mkdir()
    for i in range(small):
        (d / f"f{i:03}").write_bytes(os.urandom(64 * 1024))


def listing(tb: Testbed | None, h: TestHost | None, path: str) -> str:
    cmd = f"cd {path} && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum"
    if tb is None or h is None:
        return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout.split()[0]
    return tb.run_on(h, cmd).stdout.split()[0]


SESSIONS: Counter[str] = Counter()


def count_sessions() -> None:
    real = SSHConnector.exec

    async def counting(self: SSHConnector, host: Any, cmd: str, *args: Any, **kw: Any) -> Any:
        SESSIONS[str(kw.get("shown"))] += 1
        return await real(self, host, cmd, *args, **kw)

    SSHConnector.exec = counting  # type: ignore[method-assign]


def one_run(impl: types.ModuleType, targets: list[Target], src: Path, tree: transfer.LocalTree,
            kh: Path) -> tuple[float, float, int, dict[str, float]]:
    """(operator CPU s, wall s, progress sessions, phases) of one copy."""
    async def go() -> Any:
        async with Fleet(known_hosts=kh, trust_user_known_hosts=False, ssh_config=False) as f:
            return await impl.fanout_copy(f, targets, src, DST, tree=tree)

    SESSIONS.clear()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    res = asyncio.run(go())
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    bad = [o for o in res.outcomes if not o.ok]
    if bad:
        raise SystemExit(f"{impl.__name__}: fan-out failed on {bad[0].host}: {bad[0].error}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return cpu, wall, SESSIONS["progress"], dict(res.phases)


async def watch_only(which: str, before: types.ModuleType, targets: list[Target], seconds: float,
                     kh: Path) -> tuple[float, int, int]:
    """(operator CPU s, sessions opened, answers) of watching the hosts for `seconds`."""
    tick = 1.0
    run = f"bench{os.getpid()}"
    async with Fleet(known_hosts=kh, trust_user_known_hosts=False, ssh_config=False) as f:
        hosts = []
        for i, t in enumerate(targets):
            conn = f.connector_for(t)
            assert isinstance(conn, SSHConnector)
            hosts.append(fanout._Host(conn, t, fanout._Paths(run, DST, t.login_user), i))
        p0 = hosts[0].paths
        await asyncio.gather(*(h.call(f"mkdir -p {p0.work} {p0.stage} && head -c 12345 /dev/zero > {p0.spool}"
                                      f" && touch {p0.work}/beat") for h in hosts))
        SESSIONS.clear()
        answers = 0
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        end = time.monotonic() + seconds
        if which == "before":
            polls: dict[str, asyncio.Task[Any]] = {}
            while time.monotonic() < end:
                for h in hosts:
                    task = polls.get(h.name)
                    if task is not None and task.done():
                        answers += not task.cancelled() and task.exception() is None
                    if task is None or task.done():
                        polls[h.name] = asyncio.ensure_future(
                            h.call(before.poll_script(h.paths), timeout=max(tick * 4, 3.0), shown="progress"))
                await asyncio.sleep(tick)
            await asyncio.gather(*polls.values(), return_exceptions=True)
        else:
            streams = [fanout._ProgressStream(h, tick, 5) for h in hosts]
            while time.monotonic() < end:
                await asyncio.sleep(tick)
            for st in streams:
                st.stop()
            await asyncio.gather(*(st.task for st in streams), return_exceptions=True)
            answers = sum(st.answers for st in streams)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        sessions = SESSIONS["progress"]
        await asyncio.gather(*(h.call(f"rm -rf {p0.work} {p0.stage}") for h in hosts))
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return cpu, sessions, answers


def progress_only(tb: Testbed, hosts: list[TestHost], ns: list[int], seconds: float, repeat: int,
                  before: types.ModuleType, state: Path) -> None:
    rows: dict[tuple[int, str], list[tuple[float, int, int]]] = {}
    for n in ns:
        targets = [Target(h.ip, pk=str(h.root_key)) for h in hosts[:n]]
        order = ["before", "now", "now", "before"] * ((repeat + 1) // 2)
        for k, which in enumerate(order[: 2 * repeat]):
            kh = state / f"w{n}{k}"
            cpu, sessions, answers = asyncio.run(watch_only(which, before, targets, seconds, kh))
            rows.setdefault((n, which), []).append((cpu, sessions, answers))
            print(f"  watch only, N={n:<3} {which:<6} {seconds:.0f}s: operator CPU {cpu:6.3f}s  "
                  f"sessions {sessions:5}  answers {answers:5}  (load {os.getloadavg()[0]:.1f})", flush=True)
    print()
    for n in ns:
        b, w = rows.get((n, "before")), rows.get((n, "now"))
        if not b or not w:
            continue
        cb, cw = sum(x[0] for x in b) / len(b), sum(x[0] for x in w) / len(w)
        per = seconds * n
        print(f"watch only N={n}: operator CPU before/now {cb / cw:.1f}x "
              f"({cb:.3f}s vs {cw:.3f}s for {seconds:.0f}s; "
              f"{1e3 * cb / per:.2f} vs {1e3 * cw / per:.2f} ms per host and second)")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--ns", default="10,30")
    ap.add_argument("--rate", default="100mbit", help="tc cap on every link, the operator's too")
    ap.add_argument("--mb", type=int, default=60, help="payload size")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each version per N")
    ap.add_argument("--lab", default="h2c")
    ap.add_argument("--baseline", default=BASELINE, help="git revision whose fanout.py polls per tick")
    ap.add_argument("--progress-only", type=float, default=0.0, metavar="SECONDS",
                    help="measure watching the hosts for SECONDS, without copies")
    args = ap.parse_args()
    ns = [int(x) for x in args.ns.split(",")]
    before = load_baseline(args.baseline)
    impls = {"before": before, "now": fanout}
    count_sessions()
    tb = Testbed(args.lab, light=True)
    rows: dict[tuple[int, str], list[tuple[float, float, int]]] = {}
    load0 = os.getloadavg()
    state = Path(tempfile.mkdtemp(prefix="sealer-bench-progress."))
    try:
        hosts = tb.up(max(ns))
        if args.progress_only:
            progress_only(tb, hosts, ns, args.progress_only, args.repeat, before, state)
            return
        for h in hosts:
            tb.shape(h, args.rate)
        tb.shape_operator(args.rate)
        src = state / "payload"
        make_tree(src, args.mb)
        want = listing(None, None, str(src))
        tree = transfer.local_tree(src, DST)
        print(f"payload {args.mb} MB, links {args.rate}, baseline {args.baseline}; load average "
              f"{load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f} (2 cores)", flush=True)
        for n in ns:
            part = hosts[:n]
            targets = [Target(h.ip, pk=str(h.root_key)) for h in part]
            order = ["before", "now", "now", "before"] * ((args.repeat + 1) // 2)
            for k, which in enumerate(order[: 2 * args.repeat]):
                for h in part:
                    tb.run_on(h, f"rm -rf {DST}")
                cpu, wall, sessions, phases = one_run(impls[which], targets, src, tree, state / f"kh{n}{k}")
                for h in part:
                    if listing(tb, h, DST) != want:
                        raise SystemExit(f"{which} N={n}: {h.name}'s copy differs from the source")
                rows.setdefault((n, which), []).append((cpu, wall, sessions))
                transfer_s = phases.get("transfer", 0.0)
                print(f"  N={n:<3} {which:<6} operator CPU {cpu:6.2f}s  wall {wall:6.1f}s  "
                      f"transfer phase {transfer_s:5.1f}s  progress sessions {sessions:5}  "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        tb.down(fast=True)
        shutil.rmtree(state, ignore_errors=True)
    print()
    print(f"{'N':>3} {'version':<7} {'CPU s':>7} {'wall s':>7} {'sessions':>9}   (means of {args.repeat})")
    means: dict[tuple[int, str], tuple[float, float, float]] = {}
    for (n, which), vals in sorted(rows.items()):
        m = tuple(sum(v[i] for v in vals) / len(vals) for i in range(3))
        means[(n, which)] = (m[0], m[1], m[2])
        print(f"{n:>3} {which:<7} {m[0]:7.2f} {m[1]:7.1f} {m[2]:9.0f}")
    load1 = os.getloadavg()
    print(f"load average after: {load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f}")
    for n in ns:
        b, w = means.get((n, "before")), means.get((n, "now"))
        if b is None or w is None:
            continue
        saved = (b[0] - w[0]) / n
        print(f"N={n}: operator CPU before/now {b[0] / w[0]:.2f}x, wall before/now {b[1] / w[1]:.2f}x, "
              f"progress sessions {b[2]:.0f} -> {w[2]:.0f}; CPU saved per host {saved:.3f}s")


if __name__ == "__main__":
    main()
