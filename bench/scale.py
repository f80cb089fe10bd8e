"""Benchmark: does the operator's side scale from 10 to 300 hosts?

For each size N (default 10, 100, 300 light test-bed hosts), a fresh operator process (so its
peak RSS is its own) measures, as the engine does it:

- connect: first contact (host keys recorded in an empty cluster known_hosts, tofu) + facts
  gathering (`apply.facts.gather` over a Fleet, the same script `sealer run` sends);
- exec: a warm `true` on every host (the same connections);
- cp: a small `sealer cp` (3 files, 12 KiB) to every host (Fleet.copy_many);
- fanout (with --fanout): the same files host to host (infra.fanout.fanout_copy).

It prints wall time, time(N)/time(10) (10 = linear from 10 to 100), per-host cost, operator CPU
and peak RSS. With `--compare DIR` (a copy of an older `src/`, e.g. `git archive <rev> src | tar -x
-C DIR`) every size runs both trees alternately in the same run, so a fix is measured before/after
side by side. `--profile DIR` writes a cProfile of each child (pstats, by size and tree).

    .venv/bin/python -m bench.scale [--sizes 10,100,300] [--rounds 1] [--compare /tmp/old] [--fanout]
                                    [--nofile 1024] [--default-keys] [--max-handshakes N] [--profile DIR]

Needs root and the test bed. A lab holds at most 240 hosts, so sizes above that use a second lab
(--labs h6a,h6b). Every lab is torn down at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LAB_MAX = 240  # tests/testbed/net.py: a lab's subnet holds hosts 1..240


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _child(
    hosts: list[tuple[str, ...]], fanout: bool, default_keys: bool, max_handshakes: int | None
) -> dict[str, Any]:
    from sealer.apply.facts import gather
    from sealer.infra.fleet import Fleet
    from sealer.infra.host import Target

    if default_keys:
        # ssh.pkPasswd and no ssh.pk: each lab's key encrypted under a default name in ~/.ssh
        home = Path(tempfile.mkdtemp(prefix="sealer-scale-home-"))
        (home / ".ssh").mkdir(mode=0o700)
        names = ("id_ed25519", "id_ecdsa", "id_rsa")  # one default name per lab's key (2 labs)
        for name, key in zip(names, dict.fromkeys(k for _, k in hosts), strict=False):
            dest = home / ".ssh" / name
            dest.write_bytes(Path(key).read_bytes())
            dest.chmod(0o600)
            subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", "bench", "-f", str(dest)], check=True)
        os.environ["HOME"] = str(home)
        targets = [Target(ip, pk_password="bench") for ip, _ in hosts]
    else:
        targets = [Target(ip, pk=key) for ip, key in hosts]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sealer-scale-") as tmp:
        src = Path(tmp) / "payload"
        src.mkdir()
        for i in range(3):
            (src / f"f{i}.conf").write_bytes(os.urandom(4096))
        # as the engine: the cluster's own known_hosts (empty: first contact), per-host logs, and
        # ~/.ssh/config and ~/.ssh/known_hosts consulted
        known_hosts, logs = Path(tmp) / "known_hosts", Path(tmp) / "logs"
        extra = {"max_handshakes": max_handshakes} if max_handshakes else {}
        async with Fleet(known_hosts=known_hosts, logdir=logs, cluster="scale", **extra) as fleet:

            async def phase(name: str, coro: Any) -> Any:
                cpu, start = _cpu(), time.perf_counter()
                result = await coro
                out[name] = {"wall": time.perf_counter() - start, "cpu": _cpu() - cpu}
                return result

            facts = await phase("connect+facts", gather(fleet, targets, "/var/lib/sealer"))
            bad = {ip: str(f) for ip, f in facts.items() if isinstance(f, Exception)}
            ran = await phase("exec true", fleet.run_many(targets, "true"))
            bad.update({o.host: str(o.error) for o in ran if not o.ok})
            copied = await phase("cp", fleet.copy_many(targets, src, f"/tmp/sealer-scale-{os.getpid()}/"))
            bad.update({o.host: str(o.error) for o in copied if not o.ok})
            if fanout:
                from sealer.infra.fanout import fanout_copy

                result = await phase(
                    "fanout", fanout_copy(fleet, targets, src, f"/tmp/sealer-scale-fan-{os.getpid()}/")
                )
                bad.update({o.host: str(o.error) for o in result.outcomes if not o.ok})
            tag = os.getpid()
            await fleet.run_many(targets, f"rm -rf /tmp/sealer-scale-{tag} /tmp/sealer-scale-fan-{tag}")
            store = fleet.ssh.known_hosts
            out["known_hosts_io"] = [getattr(store, "reads", None), getattr(store, "writes", None)]
        # read once the connections are closed: a run out of file descriptors could not open it
        pinned = known_hosts.read_text().count("\n") if known_hosts.exists() else 0
    if default_keys:
        shutil.rmtree(os.environ["HOME"], ignore_errors=True)
    out["failed"] = bad
    out["pinned"] = pinned
    out["cpu_total"] = _cpu()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # the kernel's share: on the test bed a send into a host's netns delivers the packet in the
    # sender's syscall, which a real NIC does not
    out["cpu_sys"] = usage.ru_stime
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def child_main(args: argparse.Namespace) -> None:
    # "ip key" per line: each lab has its own key (a Clusterfile's per-host ssh.pk)
    hosts = [tuple(line.split()) for line in Path(args.ips).read_text().splitlines()][: args.child]
    if args.profile_out:
        import cProfile

        prof = cProfile.Profile()
        result = prof.runcall(asyncio.run, _child(hosts, args.fanout, args.default_keys, args.max_handshakes))
        prof.dump_stats(args.profile_out)
    else:
        result = asyncio.run(_child(hosts, args.fanout, args.default_keys, args.max_handshakes))
    print("RESULT " + json.dumps(result))


def run_child(n: int, tree: str, ips_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=f"{tree}:{ROOT}")
    cmd = [sys.executable, "-m", "bench.scale", "--child", str(n), "--ips", str(ips_file)]
    if args.fanout:
        cmd.append("--fanout")
    if args.default_keys:
        cmd.append("--default-keys")
    if args.max_handshakes:
        cmd += ["--max-handshakes", str(args.max_handshakes)]
    if args.profile:
        name = "now" if tree == str(ROOT / "src") else "before"
        cmd += ["--profile-out", str(Path(args.profile) / f"scale-{n}-{name}.pstats")]
    def limit() -> None:  # a soft limit as many systems have it, the hard one left as it is
        if args.nofile:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))

    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, preexec_fn=limit)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"size {n} ({tree}) failed:\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    if result["failed"]:  # shown, not fatal: a tree that fails at scale is a finding too
        some = sorted({msg.split(": ", 1)[-1][:120] for msg in result["failed"].values()})[:3]
        print(f"size {n} ({tree}): {len(result['failed'])} host(s) failed: {some}")
    elif result["pinned"] != n:
        raise SystemExit(f"size {n} ({tree}): {result['pinned']} keys pinned for {n} hosts")
    return result


def up(labs: list[str], total: int) -> tuple[list[Any], list[str]]:
    """Light hosts in as many labs as needed; "ip key" per host."""
    from tests.testbed import Testbed

    beds: list[Any] = []
    ips: list[str] = []
    for lab in labs:
        want = min(LAB_MAX, total - len(ips))
        if want <= 0:
            break
        tb = Testbed(lab, light=True)
        beds.append(tb)
        ips += [f"{h.ip} {tb.key_path}" for h in tb.up(want)]
    if len(ips) < total:
        raise SystemExit(f"{total} hosts need {-(-total // LAB_MAX)} labs; give more with --labs")
    return beds, ips


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--sizes", default="10,100,300")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--labs", default="h6a,h6b")
    ap.add_argument("--compare", help="an older src/ tree to run alternately with this one")
    ap.add_argument("--fanout", action="store_true", help="also a host-to-host copy (sealer cp --fanout)")
    ap.add_argument("--profile", help="write a cProfile of each child into this directory")
    ap.add_argument("--nofile", type=int, help="the operator's soft open-files limit (e.g. 1024)")
    ap.add_argument("--max-handshakes", type=int, help="SSH handshakes in flight (sealer's default 32)")
    ap.add_argument("--default-keys", action="store_true",
                    help="log in with encrypted keys in ~/.ssh and ssh.pkPasswd, no ssh.pk")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ips", help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args)
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    trees = {"now": str(ROOT / "src")}
    if args.compare:
        trees = {"before": str(Path(args.compare).resolve()), **trees}
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(f"RLIMIT_NOFILE soft {soft} hard {hard}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}")
    start = time.perf_counter()
    beds, ips = up(args.labs.split(","), max(sizes))
    print(f"{len(ips)} light hosts up in {time.perf_counter() - start:.1f}s")
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".ips") as f:
            f.write("\n".join(ips))
            f.flush()
            for _ in range(args.rounds):
                for n in sizes:
                    for label, tree in trees.items():
                        samples.setdefault((label, n), []).append(run_child(n, tree, Path(f.name), args))
    finally:
        for tb in beds:
            tb.down(fast=True)
    report(samples, sizes, list(trees))


def report(samples: dict[tuple[str, int], list[dict[str, Any]]], sizes: list[int], labels: list[str]) -> None:
    first = samples[(labels[0], sizes[0])][0]
    phases = [p for p in first if isinstance(first[p], dict) and "wall" in first[p]]
    base = sizes[0]

    def med(label: str, n: int, phase: str, what: str) -> float:
        return statistics.median(s[phase][what] for s in samples[(label, n)])

    print(f"\n{'phase':<14}{'tree':<8}{'hosts':>6}{'wall s':>9}{'/t(' + str(base) + ')':>9}"
          f"{'ms/host':>9}{'cpu s':>8}{'cpu ms/host':>12}")
    for phase in phases:
        for n in sizes:
            for label in labels:
                wall, cpu = med(label, n, phase, "wall"), med(label, n, phase, "cpu")
                ratio = wall / med(label, base, phase, "wall")
                print(f"{phase:<14}{label:<8}{n:>6}{wall:>9.3f}{ratio:>9.1f}{wall / n * 1000:>9.1f}"
                      f"{cpu:>8.2f}{cpu / n * 1000:>12.1f}")
    print(f"\n{'tree':<8}{'hosts':>6}{'failed':>7}{'cpu s':>8}{'(sys)':>7}{'peak RSS MB':>13}"
          "  known_hosts reads/writes")
    for n in sizes:
        for label in labels:
            cpu = statistics.median(s["cpu_total"] for s in samples[(label, n)])
            rss = max(s["maxrss_mb"] for s in samples[(label, n)])
            reads, writes = samples[(label, n)][-1].get("known_hosts_io", [None, None])
            io = "(not counted)" if reads is None else f"{reads}/{writes}"
            failed = max(len(s["failed"]) for s in samples[(label, n)])
            sys_cpu = statistics.median(s.get("cpu_sys", 0.0) for s in samples[(label, n)])
            print(f"{label:<8}{n:>6}{failed:>7}{cpu:>8.2f}{sys_cpu:>7.2f}{rss:>13.1f}  {io}")
    if len(labels) == 2:
        print("\nnow/before (wall):")
        for phase in phases:
            ratios = [med("now", n, phase, "wall") / med("before", n, phase, "wall") for n in sizes]
            print(f"  {phase:<14}" + "".join(f"{n:>6}: {r:.2f}" for n, r in zip(sizes, ratios, strict=True)))


if __name__ == "__main__":
    main()
