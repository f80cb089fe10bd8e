"""Benchmark: the run pipeline's distribution phase (what `sealer run` / `sealer apply` do in
"distribute rootfs": Engine.distribute, the optional host-to-host fan-out, then every host's
journaled rootfs step) with `--distributor ssh` against `--distributor fanout`, side by side in one
run, on light test-bed hosts with every link capped by tc (the operator's own link too).

    .venv/bin/python -m bench.run_distribute [--rate 50mbit] [--shapes 1+1,1+2,3+3]
                                              [--images standard,fat] [--lab dd1]

Needs root and the test bed. Two ClusterImage stand-ins, unpacked as the engine keeps them
(rootfs/ for every host, registry/ for master0 only), random bytes so nothing compresses:
- standard (~80 MB rootfs, like the e2e stand-in image: a few large binaries, shared libraries,
  scripts and manifests) with a small registry/ (one ~2 MB image);
- fat: the same rootfs with ~150 MB of container images in registry/ (distribution's layout:
  blobs of 2-40 MB, manifests, links).
Every time includes connecting; every host's tree is checked byte for byte afterwards.
CPU: the test bed gives all hosts of a lab together the cpu weight of one process (see
bench/distribute.py); the fan-out does more per host (each host re-encrypts for the next), so on
a busy machine that handicaps it. `--host-cpu-weight` gives each host one process's weight. The table
prints the direct/fan-out ratio per row (with --repeat N: of the fastest of N runs each, run
alternately so a load drift on the shared machine hits both), and which one `--distributor auto`
picks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.testbed import Testbed, TestHost, cgroup

from sealer.apply.engine import Engine, RunOptions, Steps
from sealer.apply.facts import HostFacts
from sealer.apply.progress import Progress
from sealer.apply.rootfs import UnpackedImage, fans_out
from sealer.infra.fleet import Fleet
from sealer.model.clusterfile import parse_clusterfile
from sealer.state import ClusterState

MB = 1 << 20
KB = 1 << 10
DATA_ROOT = "/srv/bench-run"
CLUSTER = "bench"
# (directory, count, size): the e2e k3s stand-in image's rootfs, scaled to ~80 MB.
ROOTFS = (
    ("bin", 1, 30 * MB),
    ("bin", 2, 12 * MB),
    ("bin", 3, 6 * MB),
    ("lib", 12, 1 * MB),
    ("lib", 40, 120 * KB),
    ("scripts", 30, 4 * KB),
    ("etc", 25, 2 * KB),
    ("manifests", 20, 8 * KB),
)
SMALL_REGISTRY = ((1, 2 * MB), (3, 2 * KB))
FAT_REGISTRY = ((2, 40 * MB), (4, 12 * MB), (10, 2 * MB), (60, 2 * KB))


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))


def make_rootfs(root: Path) -> None:
    for group, (sub, count, size) in enumerate(ROOTFS):
        for i in range(count):
            _write(root / sub / f"f{group}-{i:03}", size)
    (root / "Metadata").write_text('{"version": "bench"}\n')


def make_registry(root: Path, layout: tuple[tuple[int, int], ...]) -> None:
    base = root / "docker/registry/v2"
    for group, (count, size) in enumerate(layout):
        for _ in range(count):
            data = os.urandom(size)
            digest = hashlib.sha256(data).hexdigest()
            blob = base / "blobs/sha256" / digest[:2] / digest / "data"
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = base / f"repositories/bench/img{group}/_layers/sha256/{digest}/link"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.write_text(f"sha256:{digest}")


def make_image(
    top: Path, name: str, registry: tuple[tuple[int, int], ...], rootfs: Path | None
) -> UnpackedImage:
    """An unpacked ClusterImage as the engine's cache holds it; the rootfs is shared when given."""
    d = top / name
    if rootfs is None:
        rootfs = d / "rootfs"
        make_rootfs(rootfs)
    make_registry(d / "registry", registry)
    return UnpackedImage(f"sha256:{hashlib.sha256(name.encode()).hexdigest()}", rootfs, d / "registry")


def tree_digest(root: Path) -> str:
    out = subprocess.run(
        f"cd {root} && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum",
        shell=True, check=True, capture_output=True, text=True,
    ).stdout
    return out.split()[0]


def clusterfile_text(key: Path, masters: list[str], workers: list[str]) -> str:
    hosts = f"    - ips: [{', '.join(masters)}]\n      roles: [master]\n"
    if workers:
        hosts += f"    - ips: [{', '.join(workers)}]\n      roles: [node]\n"
    return (
        f"apiVersion: sealer.io/v2\nkind: Cluster\nmetadata:\n  name: {CLUSTER}\nspec:\n"
        f"  image: bench.local/standin:1\n  dataRoot: {DATA_ROOT}\n"
        f"  ssh:\n    pk: {key}\n    user: root\n  hosts:\n{hosts}"
    )


async def distribute(
    tb: Testbed, hosts: list[TestHost], n_masters: int, image: UnpackedImage, distributor: str, home: Path
) -> tuple[float, list[str]]:
    """The engine's distribution phase on these hosts; (seconds, the progress notes it printed)."""
    text = clusterfile_text(tb.key_path, [h.ip for h in hosts[:n_masters]], [h.ip for h in hosts[n_masters:]])
    cf, problems = parse_clusterfile(text, "bench")
    assert cf is not None, problems
    state = ClusterState(CLUSTER, home)
    progress = Progress(quiet=True)
    notes: list[str] = []
    progress.note = notes.append  # type: ignore[method-assign]
    progress.warn = notes.append  # type: ignore[method-assign]
    engine = Engine(cf, state, RunOptions(distributor=distributor), progress)
    for h in engine.hosts:
        engine.facts[h.ip] = HostFacts(h.ip, arch="x86_64")
    engine.unpacked["amd64"] = image
    journal = state.journal()
    op = journal.begin("bench", distributor)
    steps = Steps(journal, op, frozenset(), progress)
    start = time.perf_counter()
    known = tb.dir / "known_hosts"
    async with Fleet(known_hosts=known, trust_user_known_hosts=False, ssh_config=False) as fleet:

        async def one(h):  # type: ignore[no-untyped-def]
            await steps.step(
                "bench", "rootfs", h.ip, {"image": image.image_id}, lambda: engine._distribute(fleet, h)
            )

        await engine.distribute(fleet, steps, "bench", engine.hosts, one)
    took = time.perf_counter() - start
    journal.close()
    return took, notes


def verify(tb: Testbed, hosts: list[TestHost], image: UnpackedImage, want_rootfs: str, want_reg: str) -> None:
    rootfs = f"{DATA_ROOT}/{CLUSTER}/rootfs"
    for i, h in enumerate(hosts):
        cmd = (
            f"cd {rootfs} && find . -path ./registry -prune -o -type f ! -name .sealer-image -print0 "
            "| sort -z | xargs -0 sha256sum | sha256sum"
        )
        got = tb.run_on(h, cmd).stdout.split()[0]
        if got != want_rootfs:
            raise SystemExit(f"{h.name}: the rootfs differs from the image")
        if i == 0:
            cmd = f"cd {rootfs}/registry && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum"
            got = tb.run_on(h, cmd).stdout.split()[0]
            if got != want_reg:
                raise SystemExit(f"{h.name}: the registry data differs from the image")


def lab_cpu_shares(lab: str) -> Path | None:
    """The lab's cpu.shares file (cgroup v1 cpu controller), if there is one."""
    for base in cgroup.lab_bases(lab):
        f = Path(base) / "cpu.shares"
        if "/cpu" in base and f.is_file():
            return f
    return None


def clear(tb: Testbed, hosts: list[TestHost]) -> None:
    for h in hosts:
        tb.run_on(h, f"rm -rf {DATA_ROOT} /etc/sealer")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--rate", default="50mbit")
    ap.add_argument("--operator-rate", default=None,
                    help="cap of this machine's own link (default: --rate, as a node's NIC)")
    ap.add_argument("--shapes", default="1+1,1+2,3+3", help="masters+workers, comma-separated")
    ap.add_argument("--images", default="standard,fat")
    ap.add_argument("--lab", default="dd1")
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell; the table shows the fastest")
    ap.add_argument("--host-cpu-weight", action="store_true",
                    help="give the lab's cpu cgroup the weight of one process per host for the run")
    args = ap.parse_args()
    shapes = [tuple(int(x) for x in s.split("+")) for s in args.shapes.split(",")]
    names = args.images.split(",")
    tb = Testbed(args.lab, light=True)
    rows: list[tuple[str, str, float, float, str]] = []
    print(f"load average before: {os.getloadavg()[0]:.1f} (2 cores shared)", flush=True)
    shares: Path | None = None
    old_shares: str | None = None
    try:
        hosts = tb.up(max(m + w for m, w in shapes))
        shares = lab_cpu_shares(tb.name)
        old_shares = shares.read_text().strip() if shares is not None else None
        if shares is not None and args.host_cpu_weight:
            shares.write_text(str(1024 * len(hosts)))
        print(f"lab cpu.shares: {shares.read_text().strip() if shares is not None else 'n/a'} "
              "(a process outside the lab: 1024)", flush=True)
        for h in hosts:
            tb.shape(h, args.rate)
        operator_rate = args.operator_rate or args.rate
        tb.shape_operator(None if operator_rate == "off" else operator_rate)
        with tempfile.TemporaryDirectory(prefix="sealer-bench-run.") as tmp:
            top = Path(tmp)
            images: dict[str, UnpackedImage] = {}
            if "standard" in names:
                images["standard"] = make_image(top, "standard", SMALL_REGISTRY, None)
            if "fat" in names:
                shared = images["standard"].rootfs if "standard" in images else None
                images["fat"] = make_image(top, "fat", FAT_REGISTRY, shared)
            for name, image in images.items():
                size_r = sum(f.stat().st_size for f in image.rootfs.rglob("*") if f.is_file())
                size_g = sum(f.stat().st_size for f in image.registry.rglob("*") if f.is_file())
                print(f"image {name}: rootfs {size_r / MB:.0f} MB, registry {size_g / MB:.0f} MB", flush=True)
                want_r, want_g = tree_digest(image.rootfs), tree_digest(image.registry)
                for m, w in shapes:
                    part = hosts[: m + w]
                    times: dict[str, float] = {}
                    for rep in range(args.repeat):
                        for distributor in ("ssh", "fanout"):  # alternating: load drifts hit both
                            clear(tb, part)
                            home = top / f"home-{name}-{m}-{w}-{distributor}-{rep}"
                            took, notes = asyncio.run(distribute(tb, part, m, image, distributor, home))
                            verify(tb, part, image, want_r, want_g)
                            times[distributor] = min(took, times.get(distributor, took))
                            shown = "; ".join(n for n in notes if "host to host" in n or "failed" in n)
                            print(f"  {name:>8} {m}+{w} {distributor:>6}: {took:6.1f}s  {shown}", flush=True)
                    from sealer.apply.rootfs import Payload

                    rootfs_payload = Payload("rootfs", "rootfs", image.rootfs, "/", tuple(h.ip for h in part))
                    auto = "fanout" if fans_out("auto", rootfs_payload) else "ssh"
                    rows.append((name, f"{m}+{w}", times["ssh"], times["fanout"], auto))
        clear(tb, hosts)
    finally:
        if shares is not None and old_shares is not None:
            with contextlib.suppress(OSError):
                shares.write_text(old_shares)
        tb.down(fast=True)
    print()
    print(f"rate {args.rate} on every host's link, {args.operator_rate or args.rate} on this machine's; "
          f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"{'image':>8} {'hosts':>6} {'ssh s':>7} {'fanout s':>9} {'ssh/fanout':>11} {'auto picks':>11}")
    for name, shape, t_ssh, t_fan, auto in rows:
        print(f"{name:>8} {shape:>6} {t_ssh:7.1f} {t_fan:9.1f} {t_ssh / t_fan:11.2f} {auto:>11}")


if __name__ == "__main__":
    main()
