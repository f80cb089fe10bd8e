"""Benchmark: `sealer build` collecting 10 container images (~300 MB) vs `skopeo copy` of the same images.

Side by side in one run, against the same local docker-registry (Debian's, on loopback):
  skopeo   skopeo copy of each image into a fresh docker-registry (its storage is a registry directory)
  build    sealer build, cold (new SEALER_HOME): parse, pull all 10 into registry/, write the layers
  rebuild  the same build again, unchanged (layer cache; manifests re-checked with the registry)
Prints seconds and the ratios build/skopeo and rebuild/skopeo.

    .venv/bin/python bench/build.py [--total-mb 300] [--images 10]
"""

from __future__ import annotations

import os
import sys

# `python bench/build.py` puts bench/ first on sys.path, where sibling scripts (copy.py ...) would
# shadow the standard library; drop it before importing anything else.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import asyncio
import io
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.registry_fixture import make_test_image, start_registry

from sealer.image.build import BuildOptions, build_image
from sealer.image.oci import Platform
from sealer.image.registry import RegistryOptions
from sealer.image.store import ImageStore


def layer(name: str, size: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return raw.getvalue()


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-mb", type=int, default=300)
    parser.add_argument("--images", type=int, default=10)
    args = parser.parse_args()
    per_image = args.total_mb * (1 << 20) // args.images
    work = Path(tempfile.mkdtemp(prefix="sealer-bench-build-"))
    try:
        layout = ImageStore(work / "layout")
        source = start_registry(work / "source")
        names = []
        try:
            print(f"preparing {args.images} images of {per_image >> 20} MiB (3 layers each) ...", flush=True)
            for i in range(args.images):
                layers = [layer(f"l{j}", per_image // 3) for j in range(3)]
                make_test_image(layout, f"bench/img{i}:1", layers)
                name = f"{source.host}/bench/img{i}:1"
                subprocess.run(
                    ["skopeo", "copy", "-q", "--dest-tls-verify=false",
                     f"oci:{layout.root}:docker.io/bench/img{i}:1", f"docker://{name}"],
                    check=True,
                )  # fmt: skip
                names.append(name)

            dest = start_registry(work / "dest", storage=work / "dest-storage")
            try:

                def skopeo_all() -> None:
                    for name in names:
                        target = name.replace(source.host, dest.host)
                        subprocess.run(
                            ["skopeo", "copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false",
                             f"docker://{name}", f"docker://{target}"],
                            check=True,
                        )  # fmt: skip

                t_skopeo = timed(skopeo_all)
            finally:
                dest.stop()

            ctx = work / "ctx"
            ctx.mkdir()
            (ctx / "imageList").write_text("\n".join(names) + "\n")
            (ctx / "Kubefile").write_text("FROM scratch\nCOPY imageList manifests/\n")
            os.environ["SEALER_HOME"] = str(work / "home")
            store = ImageStore(work / "home" / "images")
            options = BuildOptions(
                context=ctx, tag="bench/cluster:v1", platforms=[Platform("linux", "amd64")]
            )
            registry = RegistryOptions(insecure=True)

            def build() -> None:
                asyncio.run(build_image(options, store=store, registry_options=registry))

            t_build = timed(build)
            t_rebuild = timed(build)
        finally:
            source.stop()
        print(f"{'skopeo copy x' + str(args.images):<22}{t_skopeo:8.2f} s")
        print(f"{'sealer build (cold)':<22}{t_build:8.2f} s   ratio build/skopeo   {t_build / t_skopeo:6.2f}")
        ratio = t_rebuild / t_skopeo
        print(f"{'sealer build (cached)':<22}{t_rebuild:8.2f} s   ratio rebuild/skopeo {ratio:6.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
