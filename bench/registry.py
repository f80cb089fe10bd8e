"""Benchmark: sealer push/pull vs `skopeo copy` of the same ~500 MB, 20-layer image, side by side, one run.

    .venv/bin/python -m bench.registry [--mb 500] [--layers 20] [--rounds 2]

Each tool gets its own fresh docker-registry on 127.0.0.1 (so no tool benefits from blobs the other
uploaded). The image lives in a sealer store, which is an OCI layout, so skopeo reads the very same
files (`oci:<store>:<name>`). Printed ratios are sealer time / skopeo time (< 1.0: sealer is faster).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.registry_fixture import start_registry

from sealer.image import oci
from sealer.image.reference import parse_reference
from sealer.image.registry import RegistryClient, RegistryOptions
from sealer.image.store import ImageStore


def make_image(store: ImageStore, name: str, total_mb: int, layers: int) -> int:
    """Incompressible layers (labelled gzip, as real layers are) so neither tool can shortcut."""
    size = total_mb * 1_000_000 // layers
    descs = []
    for _ in range(layers):
        descs.append(store.put_blob(os.urandom(size), media_type=oci.MEDIA_OCI_LAYER_GZIP))
    config = oci.encode_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [d.digest for d in descs]},
        }
    )
    cdesc = store.put_blob(config, media_type=oci.MEDIA_OCI_CONFIG)
    store.tag(name, store.put_manifest(oci.new_manifest(cdesc, descs)))
    return size * layers


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def skopeo(*args: str) -> None:
    subprocess.run(["skopeo", *args], check=True, capture_output=True)


def sealer_push(store: ImageStore, name: str, dest: str) -> None:
    async def go() -> None:
        async with RegistryClient(RegistryOptions(insecure=True)) as c:
            await c.push(store, name, parse_reference(dest))

    asyncio.run(go())


def sealer_pull(root: Path, ref: str) -> None:
    async def go() -> None:
        async with RegistryClient(RegistryOptions(insecure=True)) as c:
            await c.pull(parse_reference(ref), ImageStore(root))

    asyncio.run(go())


def one_round(work: Path, store: ImageStore, name: str, rnd: int, results: dict[str, list[float]]) -> None:
    with start_registry(work / f"reg-sealer-{rnd}") as rs, start_registry(work / f"reg-skopeo-{rnd}") as rk:
        dest_s, dest_k = rs.ref("bench/big:v1"), rk.ref("bench/big:v1")
        pull_s, pull_k = work / f"pull-sealer-{rnd}", work / f"pull-skopeo-{rnd}"
        pushes = [
            ("sealer push", lambda: sealer_push(store, name, dest_s)),
            (
                "skopeo push",
                lambda: skopeo(
                    "copy",
                    "--dest-tls-verify=false",
                    "--preserve-digests",
                    f"oci:{store.root}:{name}",
                    f"docker://{dest_k}",
                ),
            ),
        ]
        pulls = [
            ("sealer pull", lambda: sealer_pull(pull_s, dest_s)),
            (
                "skopeo pull",
                lambda: skopeo("copy", "--src-tls-verify=false", f"docker://{dest_k}", f"oci:{pull_k}:v1"),
            ),
        ]
        for group in (pushes, pulls):
            # Alternate who goes first so page-cache warmth does not favour one tool.
            for label, fn in group if rnd % 2 == 0 else list(reversed(group)):
                results[label].append(timed(fn))
        for path in (pull_s, pull_k, rs.storage, rk.storage):
            shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if not shutil.which("skopeo"):
        sys.exit("skopeo is not installed")
    work = Path(tempfile.mkdtemp(prefix="sealer-bench-"))
    try:
        store = ImageStore(work / "store")
        name = "bench.local/sealer/big:v1"
        total = make_image(store, name, args.mb, args.layers)
        print(f"image: {total / 1e6:.0f} MB in {args.layers} layers; {args.rounds} round(s)")
        results: dict[str, list[float]] = {
            "sealer push": [],
            "skopeo push": [],
            "sealer pull": [],
            "skopeo pull": [],
        }
        for rnd in range(args.rounds):
            one_round(work, store, name, rnd, results)
        med = {k: statistics.median(v) for k, v in results.items()}
        for op in ("push", "pull"):
            s, k = med[f"sealer {op}"], med[f"skopeo {op}"]
            print(
                f"{op}: sealer {s:6.2f} s ({total / 1e6 / s:6.0f} MB/s)   skopeo {k:6.2f} s "
                f"({total / 1e6 / k:6.0f} MB/s)   ratio sealer/skopeo = {s / k:.2f}"
            )
            print(
                f"      rounds: sealer {[round(x, 2) for x in results[f'sealer {op}']]} "
                f"skopeo {[round(x, 2) for x in results[f'skopeo {op}']]}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
