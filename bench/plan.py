"""Benchmark: planning large clusters (issue 2: 5,000 hosts "well under a second").

Measures, side by side in one run, a small vs a large cluster (default 500 vs 5,000 hosts; `--sizes
30,300` for the operator's 300-host case) for: parsing the Clusterfile, planning a create, planning
an update against the last-applied file (10% of workers replaced, image changed, one group
relabelled), the field-level diff, and `sealer status` (cluster_status + its lines) on a state dir
whose journal holds a finished install and an upgrade that stopped halfway, every host with its
steps. Prints times and the large/small ratio (equal to the size ratio = linear).

    .venv/bin/python bench/plan.py [--repeat N] [--sizes 30,300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sealer.apply.lifecycle import cluster_status, status_lines
from sealer.model.cluster import Cluster, Clusterfile, HostGroup
from sealer.model.clusterfile import dump_clusterfile, parse_clusterfile
from sealer.plan import make_plan
from sealer.plan.diff import diff_clusterfiles
from sealer.state.journal import Journal, digest_of
from sealer.state.store import ClusterState

# per-host steps of an install and an upgrade, as the engine journals them (begin + done each)
_SCRATCH = tempfile.TemporaryDirectory(prefix="sealer-bench-status-")  # removed at exit
HOST_STEPS = ("facts", "preflight", "rootfs", "registry-ca", "runtime-install", "join", "labels")


def make_cluster(hosts: int, *, image: str = "example/k8s:v1.22.15", replaced: int = 0) -> Cluster:
    """3 masters, the rest workers in groups of 100 (realistic: racks), each group labelled."""
    count = hosts + replaced
    addresses = [f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}" for n in range(256, 256 + count)]
    masters = addresses[:3]
    workers = addresses[3 + replaced:hosts + replaced]
    groups = [HostGroup(ips=tuple(masters), roles=("master",))]
    for start in range(0, len(workers), 100):
        rack = start // 100
        groups.append(
            HostGroup(
                ips=tuple(workers[start:start + 100]), roles=("node",),
                labels={"rack": f"r{rack}", "disk": "ssd" if rack % 2 else "hdd"},
            )
        )
    return Cluster(name="bench", image=image, host_groups=tuple(groups))


def workload(hosts: int) -> dict[str, Callable[[], Any]]:
    """The operations to time for one cluster size (10% of workers replaced, image changed, one
    group relabelled)."""
    current = make_cluster(hosts)
    desired = make_cluster(hosts, image="example/k8s:v1.23.17", replaced=hosts // 10)
    relabelled = list(desired.host_groups)
    relabelled[1] = replace(relabelled[1], labels={"rack": "r0", "disk": "nvme"})
    desired = replace(desired, host_groups=tuple(relabelled))
    text = dump_clusterfile(Clusterfile(cluster=desired))
    parsed, problems = parse_clusterfile(text, "bench")
    assert parsed is not None, problems
    update = make_plan(desired, current)
    assert len(update.actions) >= 3, update.text()
    old_cf, new_cf = Clusterfile(cluster=current), Clusterfile(cluster=desired)
    state = status_state(current, dump_clusterfile(old_cf))
    return {
        "parse": lambda: parse_clusterfile(text, "bench"),
        "plan create": lambda: make_plan(desired, None),
        "plan update": lambda: make_plan(desired, current),
        "diff": lambda: diff_clusterfiles(old_cf, new_cf),
        "status": lambda: status_lines(cluster_status(state)),
    }


def status_state(cluster: Cluster, text: str) -> ClusterState:
    """A state dir as `sealer run` then a failed `sealer upgrade` leave it on `cluster`'s hosts."""
    home = Path(tempfile.mkdtemp(dir=_SCRATCH.name))
    state = ClusterState(cluster.name, home)
    state.ensure()
    state.record_applied(text, runtime_type="kubernetes")
    ips = [ip for group in cluster.host_groups for ip in group.ips]
    journal = Journal(state.journal_path, durable=False)
    for kind, stop in (("run", len(ips)), ("upgrade", len(ips) // 2)):
        op = journal.begin(kind, digest_of(kind))
        for step in HOST_STEPS:
            for n, ip in enumerate(ips):
                journal.step(op, kind, step, "start", host=ip)
                if kind == "run" or n < stop:
                    journal.step(op, kind, step, "done", host=ip)
        if kind == "run":
            journal.end(op, "done")
    journal.close()
    return state


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--sizes", default="500,5000", help="small,large host counts")
    args = parser.parse_args()
    small, large = (int(n) for n in args.sizes.split(","))
    work = {small: workload(small), large: workload(large)}
    samples: dict[tuple[int, str], list[float]] = {}
    # Interleave sizes round by round, so background load hits both sides of each ratio alike.
    for _ in range(args.repeat):
        for name in work[small]:
            for size in (small, large):
                samples.setdefault((size, name), []).append(timed(work[size][name]))
    med = {key: statistics.median(values) for key, values in samples.items()}
    print(f"{'operation':<14}{small:>10} hosts{large:>10} hosts{'ratio':>9}   (medians of {args.repeat})")
    for name in work[small]:
        a, b = med[(small, name)], med[(large, name)]
        print(f"{name:<14}{a * 1000:>13.1f} ms{b * 1000:>13.1f} ms{b / a:>9.1f}")
    total = med[(large, "parse")] + med[(large, "plan update")]
    print(f"{large:,} hosts, parse + plan an update: {total * 1000:.0f} ms "
          f"(linear scaling = ratio {large / small:g})")


if __name__ == "__main__":
    main()
