"""The main job on one machine: three local test-bed hosts, the k3s ClusterImage built by
images/k3s/build.sh, `sealer run` onto them (1 master + 2 workers), then the nodes as the API sees them.

    sudo .venv/bin/python -m tests.e2e.demo            # keeps the cluster; prints how to remove it
    sudo .venv/bin/python -m tests.e2e.demo --down     # removes the demo lab and its state

Online (github.com reachable) it builds with the real k3s release; offline it builds with the k3s
stand-in of tests/doubles and says so. State and images live in $SEALER_HOME (default
/var/lib/sealer-demo), away from your own ~/.sealer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from tests.e2e.images import SEALER, build_prerequisites, build_standin_images, sealer_env
from tests.testbed import Testbed, TestbedError, require_root_and_tools

LAB = "demo"
CLUSTER = "demo"
ROOT = Path(__file__).resolve().parents[2]


def _online() -> bool:
    try:
        urllib.request.urlopen("https://github.com", timeout=4).close()
        return True
    except OSError:
        return False


def _build_real(home: Path) -> str:
    tag = "sealerio/k3s:demo"
    done = subprocess.run(["bash", str(ROOT / "images/k3s/build.sh"), "--tag", tag, "--sealer", str(SEALER)],
                          env=sealer_env(home), check=False)
    if done.returncode != 0:
        raise SystemExit("demo: images/k3s/build.sh failed (see above)")
    return tag


def _print_nodes(admin: Path) -> None:
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import Node

    client = Client(KubeConfig.from_file(admin))
    print(f"\nnodes, from the API at {client.config.cluster.server}:")
    for node in client.list(Node):
        ready = next((c.status for c in node.status.conditions or [] if c.type == "Ready"), "?")
        roles = sorted(k.split("/", 1)[1] for k in (node.metadata.labels or {}) if k.startswith("node-role."))
        print(f"  {node.metadata.name:<10} Ready={ready:<5} {','.join(roles) or '-':<28} "
              f"{node.status.nodeInfo.kubeletVersion if node.status.nodeInfo else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--down", action="store_true", help="remove the demo lab and its sealer state")
    parser.add_argument("--standin", action="store_true", help="use the k3s stand-in even when online")
    args = parser.parse_args(argv)
    home = Path(os.environ.get("SEALER_HOME") or "/var/lib/sealer-demo")
    if args.down:
        Testbed(LAB, nested=True).down()
        shutil.rmtree(home / CLUSTER, ignore_errors=True)
        print(f"demo: lab {LAB} is down and {home / CLUSTER} removed")
        return 0
    for why in (build_prerequisites(), require_root_and_tools()):
        if why:
            print(f"demo: cannot run here: {why} (run scripts/setup as root first)", file=sys.stderr)
            return 1
    if (home / CLUSTER / "Clusterfile").exists():
        print(f"demo: cluster {CLUSTER} already runs; remove it first with `python -m tests.e2e.demo --down`")
        return 1
    real = _online() and not args.standin
    print(f"demo: building the k3s ClusterImage with {'the real k3s release' if real else 'the k3s STAND-IN'}"
          f"{'' if real else ' (github.com is not reachable, or --standin)'}")
    if real:
        home.mkdir(parents=True, exist_ok=True)
        image = _build_real(home)
    else:
        work = home / "build"
        shutil.rmtree(work, ignore_errors=True)
        built = build_standin_images(work)
        image = built.app
        # the built images live in work/sealer-home: make that the demo's home
        for entry in (work / "sealer-home").iterdir():
            target = home / entry.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            shutil.move(str(entry), target)
    print(f"demo: starting 3 test-bed hosts (lab {LAB})")
    try:
        tb = Testbed(LAB, nested=True)
        hosts = tb.up(3)
    except TestbedError as err:
        print(f"demo: test bed: {err}", file=sys.stderr)
        return 1
    for h in hosts:  # the test-bed caveat of tests/e2e/README.md: containerd's root on ext4
        tb.run_on(h, "mkdir -p /var/lib/containerd/k3s /var/lib/rancher/k3s/agent && "
                     "ln -sfn /var/lib/containerd/k3s /var/lib/rancher/k3s/agent/containerd")
    clusterfile = home / "Clusterfile"
    clusterfile.write_text(yaml.safe_dump({
        "apiVersion": "sealer.io/v2", "kind": "Cluster", "metadata": {"name": CLUSTER},
        "spec": {"image": image, "ssh": {"pk": str(tb.key_path), "user": "root"},
                 "hosts": [{"ips": [hosts[0].ip], "roles": ["master"]},
                           {"ips": [h.ip for h in hosts[1:]], "roles": ["node"]}]},
    }, sort_keys=False))
    print(f"demo: sealer run -f {clusterfile}\n")
    done = subprocess.run([str(SEALER), "run", "-f", str(clusterfile)], env=sealer_env(home), check=False)
    if done.returncode != 0:
        print("demo: sealer run failed (see above); run this demo again to resume", file=sys.stderr)
        return 1
    _print_nodes(home / CLUSTER / "admin.conf")
    print(f"\nkubectl: export KUBECONFIG={home / CLUSTER / 'admin.conf'}"
          f"\nremove:  sudo .venv/bin/python -m tests.e2e.demo --down")
    return 0


if __name__ == "__main__":
    sys.exit(main())

