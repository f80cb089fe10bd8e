"""Benchmark: `true` on 1, 10 and 30 hosts, sealer's fan-out vs OpenSSH `ssh` in a parallel shell
loop, side by side in one run (rounds alternate between the two; medians are printed).

    .venv/bin/python -m bench.exec_fanout [--sizes 1,10,30] [--rounds 3] [--lab ifb]
    .venv/bin/python -m bench.exec_fanout --sizes 10,100,300 --lab h6a,h6b   # 240 hosts per lab

Needs root and the test bed (light hosts: sshd as PID 1). "sealer cold" includes connecting and
the host-key check; "sealer warm" is a second fan-out on the same connections (what every step of
an install after the first pays). Ratio = sealer / ssh (< 1.0: sealer is faster).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.testbed import Testbed

from sealer.infra.fleet import Fleet
from sealer.infra.host import Target

LAB_MAX = 240  # hosts per lab (tests/testbed/net.py)


def ssh_loop(hosts: list[tuple[str, Path]], known_hosts: Path) -> float:
    opts = f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o BatchMode=yes"
    script = "".join(f"ssh {opts} -i {key} root@{ip} true &\n" for ip, key in hosts) + "wait"
    start = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return time.perf_counter() - start


async def sealer_fanout(hosts: list[tuple[str, Path]], state: Path) -> tuple[float, float, int]:
    targets = [Target(ip, pk=str(key)) for ip, key in hosts]
    async with Fleet(known_hosts=state / "known_hosts", trust_user_known_hosts=False, ssh_config=False) as f:
        start = time.perf_counter()
        cold = await f.run_many(targets, "true")
        t_cold = time.perf_counter() - start
        start = time.perf_counter()
        warm = await f.run_many(targets, "true")
        t_warm = time.perf_counter() - start
    failed = sum(1 for o in cold + warm if not o.ok)
    return t_cold, t_warm, failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,10,30")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lab", default="ifb")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    labs: list[Testbed] = []
    scratch = tempfile.TemporaryDirectory(prefix="exec-fanout-")
    try:
        hosts: list[tuple[str, Path]] = []
        for lab in args.lab.split(","):
            want = min(LAB_MAX, max(sizes) - len(hosts))
            if want <= 0:
                break
            tb = Testbed(lab, light=True)
            labs.append(tb)
            hosts += [(h.ip, tb.key_path) for h in tb.up(want)]
        if len(hosts) < max(sizes):
            raise SystemExit(f"{max(sizes)} hosts need {-(-max(sizes) // LAB_MAX)} labs: --lab a,b")
        kh = Path(scratch.name) / "known_hosts"
        kh.write_text("".join((tb.dir / "known_hosts").read_text() for tb in labs))
        heads = ("hosts", "sealer cold", "sealer warm", "ssh loop", "cold/ssh", "warm/ssh")
        print("{:>5} {:>12} {:>12} {:>10} {:>9} {:>9}".format(*heads))
        for n in sizes:
            some = hosts[:n]
            cold, warm, loop = [], [], []
            for _ in range(args.rounds):
                with tempfile.TemporaryDirectory() as tmp:
                    c, w, failed = asyncio.run(sealer_fanout(some, Path(tmp)))
                if failed:
                    raise SystemExit(f"{failed} host(s) failed in the sealer fan-out")
                cold.append(c)
                warm.append(w)
                loop.append(ssh_loop(some, kh))
            mc, mw, ml = (statistics.median(x) for x in (cold, warm, loop))
            print(f"{n:>5} {mc:>11.3f}s {mw:>11.3f}s {ml:>9.3f}s {mc / ml:>9.2f} {mw / ml:>9.2f}")
    finally:
        for tb in labs:
            tb.down(fast=True)
        scratch.cleanup()


if __name__ == "__main__":
    main()
