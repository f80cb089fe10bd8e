"""Benchmark: one ~100 MB payload to N = 1, 5, 10 hosts with every link capped by tc (the
operator's own link too): sealer's host-to-host fan-out vs the naive parallel copy from the
operator (Fleet.copy_many, the peers' strategy) vs ansible-core, side by side in one run.

    .venv/bin/python -m bench.distribute [--rates 100mbit,50mbit] [--ns 1,5,10] [--lab fob]
                                          [--no-ansible] [--host-cpu-weight]

Needs root and the test bed (light hosts). Payload: 1 x 40 MB, 8 x 5 MB, 100 x 150 KB,
500 x 10 KB (609 files). ansible-core is installed into a throwaway venv under /tmp for this
benchmark only; the hosts have no rsync, so `synchronize` cannot run and ansible-core's
`unarchive` (copy one tar, extract on the host) stands for it — the fastest way ansible-core has
to move many files. Every time includes connecting. The last line printed is
`ratio time(10)/time(1) at 50mbit: X.XX` (sealer's fan-out).

CPU: the test bed puts all hosts of a lab in one cpu cgroup whose weight (cpu.shares 1024) equals
that of ONE process outside it, so when the machine is busy with other work the lab's N hosts
together get one process's share, while on real machines each host has its own CPU. At 100
Mbit/s, where the hosts' SSH hops need a good part of the 2 cores, this makes the times depend on
the machine's load more than on the method. `--host-cpu-weight` gives the lab the weight of N
processes (N x 1024) for the run (restored afterwards), so each host weighs like one process;
without it the weight is left as the test bed made it. Either way every row prints the load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.testbed import Testbed, TestHost, cgroup

from sealer.infra.fanout import fanout_copy
from sealer.infra.fleet import Fleet
from sealer.infra.host import Target

MB = 1 << 20
LAYOUT = ((1, 40 * MB), (8, 5 * MB), (100, 150 * 1024), (500, 10 * 1024))
ANSIBLE_VENV = Path("/tmp/sealer-bench-ansible")
DST = "/srv/bench-dist"


def make_tree(root: Path) -> int:
    total = 0
    for group, (count, size) in enumerate(LAYOUT):
        d = root / f"g{group}"
        d.mkdir(parents=True)
        for i in range(count):
            (d / f"f{i:04}.bin").write_bytes(os.urandom(size))
            total += size
    return total


def ansible_bin() -> Path | None:
    exe = ANSIBLE_VENV / "bin" / "ansible"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True, capture_output=True)
        subprocess.run([str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", "ansible-core"], check=True,
                       capture_output=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as err:
        print(f"ansible-core could not be installed ({err}); its column is n/a", file=sys.stderr)
        return None
    return exe if exe.exists() else None


def lab_cpu_shares(lab: str) -> Path | None:
    """The lab's cpu.shares file (cgroup v1 cpu controller), if there is one."""
    for base in cgroup.lab_bases(lab):
        f = Path(base) / "cpu.shares"
        if "/cpu" in base and f.is_file():
            return f
    return None


def state_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="sealer-bench-dist."))


async def sealer_fanout(targets: list[Target], src: Path) -> float:
    st = state_dir()
    start = time.perf_counter()
    async with Fleet(known_hosts=st / "kh", trust_user_known_hosts=False, ssh_config=False) as f:
        res = await fanout_copy(f, targets, src, DST)
    took = time.perf_counter() - start
    shutil.rmtree(st)
    bad = [o for o in res.outcomes if not o.ok]
    if bad:
        raise SystemExit(f"fan-out failed on {bad[0].host}: {bad[0].error}")
    phases = " ".join(f"{k} {v:.1f}s" for k, v in res.phases.items())
    print(f"    fan-out N={len(targets)}: {phases}; operator sent {res.operator_bytes / MB:.0f} MB; "
          f"reroutes: {res.reroutes or 'none'}", flush=True)
    return took


async def naive(targets: list[Target], src: Path) -> float:
    st = state_dir()
    start = time.perf_counter()
    async with Fleet(known_hosts=st / "kh", trust_user_known_hosts=False, ssh_config=False) as f:
        out = await f.copy_many(targets, src, DST)
    took = time.perf_counter() - start
    shutil.rmtree(st)
    if not all(o.ok for o in out):
        raise SystemExit("naive copy failed")
    return took


def ansible(exe: Path, hosts: list[TestHost], key: Path, known_hosts: Path, tarball: Path) -> float:
    st = state_dir()
    inv = st / "inventory"
    inv.write_text("".join(f"{h.ip}\n" for h in hosts))
    env = {
        **os.environ,
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={known_hosts} -o ControlMaster=auto "
        "-o ControlPersist=60s",
        "ANSIBLE_LOCAL_TEMP": str(st / "tmp"),
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "ANSIBLE_FORKS": str(len(hosts)),
    }
    args = [str(exe), "all", "-i", str(inv), "-u", "root", "--private-key", str(key), "-m",
            "ansible.builtin.unarchive", "-a", f"src={tarball} dest={DST}"]
    subprocess.run([str(exe), "all", "-i", str(inv), "-u", "root", "--private-key", str(key), "-m", "file",
                    "-a", f"path={DST} state=directory"], check=True, env=env, capture_output=True)
    start = time.perf_counter()
    cp = subprocess.run(args, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    shutil.rmtree(st)
    if cp.returncode != 0:
        raise SystemExit(f"ansible failed: {cp.stdout[-800:]} {cp.stderr[-800:]}")
    return took


def verify(tb: Testbed, hosts: list[TestHost], expect: str) -> None:
    for h in hosts:
        cmd = f"cd {DST} && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum"
        out = tb.run_on(h, cmd).stdout
        if out.split()[0] != expect:
            raise SystemExit(f"{h.name}: the copy differs from the source")


def clear(tb: Testbed, hosts: list[TestHost]) -> None:
    for h in hosts:
        tb.run_on(h, f"rm -rf {DST}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--rates", default="100mbit,50mbit")
    ap.add_argument("--ns", default="1,5,10")
    ap.add_argument("--lab", default="fob")
    ap.add_argument("--no-ansible", action="store_true")
    ap.add_argument("--host-cpu-weight", action="store_true",
                    help="give the lab's cpu cgroup the weight of one process per host for the run")
    args = ap.parse_args()
    rates = args.rates.split(",")
    ns = [int(x) for x in args.ns.split(",")]
    exe = None if args.no_ansible else ansible_bin()
    tb = Testbed(args.lab, light=True)
    rows: list[tuple[str, int, float, float, float | None]] = []
    shares: Path | None = None
    old_shares: str | None = None
    load_before = os.getloadavg()
    try:
        hosts = tb.up(max(ns))
        shares = lab_cpu_shares(tb.name)
        old_shares = shares.read_text().strip() if shares is not None else None
        if shares is not None and args.host_cpu_weight:
            shares.write_text(str(1024 * max(ns)))
        print(f"lab cpu.shares: {shares.read_text().strip() if shares is not None else 'n/a'} "
              f"(a process outside the lab: 1024)", flush=True)
        with tempfile.TemporaryDirectory(prefix="sealer-bench-dist.") as tmp:
            src = Path(tmp) / "payload"
            total = make_tree(src)
            tarball = Path(tmp) / "payload.tar"
            with tarfile.open(tarball, "w") as tar:
                tar.add(src, arcname=".")
            listing = subprocess.run(
                f"cd {src} && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum",
                shell=True, check=True, capture_output=True, text=True).stdout.split()[0]
            files = sum(c for c, _ in LAYOUT)
            print(f"payload {total / MB:.0f} MB in {files} files; load average before: "
                  f"{load_before[0]:.1f} {load_before[1]:.1f} {load_before[2]:.1f} (2 cores)", flush=True)
            for rate in rates:
                for h in hosts:
                    tb.shape(h, rate)
                tb.shape_operator(rate)
                for n in ns:
                    part = hosts[:n]
                    targets = [Target(h.ip, pk=str(h.root_key)) for h in part]
                    clear(tb, part)
                    t_fan = asyncio.run(sealer_fanout(targets, src))
                    verify(tb, part, listing)
                    clear(tb, part)
                    t_naive = asyncio.run(naive(targets, src))
                    verify(tb, part, listing)
                    clear(tb, part)
                    t_ans = None
                    if exe is not None:
                        t_ans = ansible(exe, part, tb.key_path, tb.dir / "known_hosts", tarball)
                        verify(tb, part, listing)
                        clear(tb, part)
                    rows.append((rate, n, t_fan, t_naive, t_ans))
                    a = f"{t_ans:7.1f}" if t_ans is not None else "    n/a"
                    load = os.getloadavg()[0]
                    print(f"  {rate:>8} N={n:<3} fan-out {t_fan:7.1f}s  naive {t_naive:7.1f}s  ansible {a}s"
                          f"  (load {load:.1f})", flush=True)
    finally:
        if shares is not None and old_shares is not None:
            with contextlib.suppress(OSError):
                shares.write_text(old_shares)
        tb.down(fast=True)
    load_after = os.getloadavg()
    print()
    print(f"{'rate':>8} {'N':>3} {'fan-out s':>10} {'naive s':>9} {'ansible s':>10} {'naive/fan':>10}")
    for rate, n, f, nv, an in rows:
        a = f"{an:10.1f}" if an is not None else f"{'n/a':>10}"
        print(f"{rate:>8} {n:>3} {f:10.1f} {nv:9.1f} {a} {nv / f:10.2f}")
    print(f"load average after: {load_after[0]:.1f} {load_after[1]:.1f} {load_after[2]:.1f}")
    last = ""
    for rate in rates:
        by_n = {n: f for r, n, f, _, _ in rows if r == rate}
        if 1 in by_n and max(ns) in by_n:
            line = f"ratio time({max(ns)})/time(1) at {rate}: {by_n[max(ns)] / by_n[1]:.2f}"
            if rate == "50mbit":
                last = line
            else:
                print(line)
        naive_top = [nv / f for r, n, f, nv, _ in rows if r == rate and n == max(ns)]
        if naive_top:
            print(f"naive/fan-out at N={max(ns)}, {rate}: {naive_top[0]:.2f}x")
    if last:
        print(last)


if __name__ == "__main__":
    main()
