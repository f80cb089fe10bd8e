"""Benchmark: 100 MB of mixed file sizes to 10 hosts, sealer's tar-stream copy vs OpenSSH
`scp -r` run in parallel from a shell loop, side by side in one run (medians of the rounds).

    .venv/bin/python -m bench.copy_files [--hosts 10] [--rounds 3] [--lab ifc]

Needs root and the test bed (light hosts). The tree: 1 x 40 MB, 8 x 5 MB, 100 x 150 KB,
500 x 10 KB (~100 MB, 609 files). Every round copies into a fresh destination; the order of
the three runs rotates between rounds and each starts after `sync`. Also printed:
sealer's re-copy of the same tree (every file already equal, so only manifests travel).
Ratio = sealer / scp time (< 1.0: sealer is faster).
"""

from __future__ import annotations

import argparse
import asyncio
import os
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

MB = 1 << 20
LAYOUT = ((1, 40 * MB), (8, 5 * MB), (100, 150 * 1024), (500, 10 * 1024))


def make_tree(root: Path) -> int:
    total = 0
    for group, (count, size) in enumerate(LAYOUT):
        d = root / f"g{group}"
        d.mkdir(parents=True)
        for i in range(count):
            (d / f"f{i:04}.bin").write_bytes(os.urandom(size))
            total += size
    return total


def scp_loop(ips: list[str], key: Path, known_hosts: Path, src: Path, dst: str) -> float:
    opts = f"-q -r -i {key} -o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o BatchMode=yes"
    script = "for ip in " + " ".join(ips) + f"; do scp {opts} {src} root@$ip:{dst} & done; wait"
    start = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return time.perf_counter() - start


async def sealer_copy(ips: list[str], key: Path, state: Path, src: Path, dst: str) -> tuple[float, float]:
    targets = [Target(ip, pk=str(key)) for ip in ips]
    async with Fleet(known_hosts=state / "known_hosts", trust_user_known_hosts=False, ssh_config=False) as f:
        await f.run_many(targets, "true")  # connect first: scp's time includes its handshake, so
        # both sides are timed from the same point below by adding sealer's connect back in
        start = time.perf_counter()
        first = await f.copy_many(targets, src, dst)
        t_first = time.perf_counter() - start
        start = time.perf_counter()
        again = await f.copy_many(targets, src, dst)
        t_again = time.perf_counter() - start
    bad = [o for o in first + again if not o.ok]
    if bad:
        raise SystemExit(f"sealer copy failed: {bad[0].error}")
    if any(o.value is None or o.value.files_sent for o in again):
        raise SystemExit("the re-copy sent files although all were equal")
    return t_first, t_again


async def sealer_copy_cold(ips: list[str], key: Path, state: Path, src: Path, dst: str) -> float:
    targets = [Target(ip, pk=str(key)) for ip in ips]
    start = time.perf_counter()
    async with Fleet(known_hosts=state / "known_hosts", trust_user_known_hosts=False, ssh_config=False) as f:
        out = await f.copy_many(targets, src, dst)
    if not all(o.ok for o in out):
        raise SystemExit("sealer cold copy failed")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lab", default="ifc")
    args = ap.parse_args()
    tb = Testbed(args.lab, light=True)
    try:
        hosts = tb.up(args.hosts)
        ips = [h.ip for h in hosts]
        key, kh = tb.key_path, tb.dir / "known_hosts"
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "tree"
            total = make_tree(src)
            moved = total * len(ips) / MB
            cold, warm, again, scp = [], [], [], []
            def run_cold(r: int) -> None:
                with tempfile.TemporaryDirectory() as st:
                    cold.append(asyncio.run(sealer_copy_cold(ips, key, Path(st), src, f"/srv/cold{r}")))

            def run_warm(r: int) -> None:
                with tempfile.TemporaryDirectory() as st:
                    w, a = asyncio.run(sealer_copy(ips, key, Path(st), src, f"/srv/warm{r}"))
                warm.append(w)
                again.append(a)

            def run_scp(r: int) -> None:
                scp.append(scp_loop(ips, key, kh, src, f"/srv/scp{r}"))

            order = [run_cold, run_warm, run_scp]
            for r in range(args.rounds):
                # rotate who goes first, and start each from clean page-cache writeback, so that no
                # tool pays for the disk writes of the one before it
                for step in order[r % 3 :] + order[: r % 3]:
                    os.sync()
                    step(r)
                for h in hosts:  # keep the hosts' overlay dirs from filling the machine's disk
                    tb.run_on(h, f"rm -rf /srv/cold{r} /srv/warm{r} /srv/scp{r}")
            mc, mw, ma, ms = (statistics.median(x) for x in (cold, warm, again, scp))
            print(
                f"{total / MB:.0f} MB, {sum(c for c, _ in LAYOUT)} files, to {len(ips)} hosts "
                f"({moved:.0f} MB moved per copy), medians of {args.rounds} rounds"
            )
            print(
                f"  sealer (incl. connect):  {mc:6.2f}s  {moved / mc:7.1f} MB/s   ratio to scp {mc / ms:.2f}"
            )
            print(
                f"  sealer (connected):      {mw:6.2f}s  {moved / mw:7.1f} MB/s   ratio to scp {mw / ms:.2f}"
            )
            print(f"  scp -r x{len(ips)} in parallel:   {ms:6.2f}s  {moved / ms:7.1f} MB/s")
            print(f"  sealer re-copy, all equal (manifests only): {ma:.2f}s")
    finally:
        tb.down(fast=True)


if __name__ == "__main__":
    main()
