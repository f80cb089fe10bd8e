"""`sealer run` with the default distributor on three nested hosts (issue 10): the rootfs goes host
to host (the progress output and the journal say so), the registry data goes to master0 in one
direct stream, every host ends up with the image's files byte for byte, and the fan-out leaves
nothing behind (keys, spool, work dirs). Before that, pre-flight refuses a host without room for
the fan-out's spool, by name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.e2e.images import BuiltImages, run_sealer

pytestmark = [pytest.mark.e2e, pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(1800)]

CLUSTER = "dd"
ROOTFS = f"/var/lib/sealer/data/{CLUSTER}/rootfs"


def _clusterfile(image: str, key: Path, master: str, workers: list[str]) -> str:
    doc = {
        "apiVersion": "sealer.io/v2",
        "kind": "Cluster",
        "metadata": {"name": CLUSTER},
        "spec": {
            "image": image,
            "ssh": {"pk": str(key), "user": "root"},
            "hosts": [{"ips": [master], "roles": ["master"]}, {"ips": workers, "roles": ["node"]}],
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _local_digests(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _host_digests(tb, h, root: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    listed = tb.run_on(h, f"cd {root} && find . -type f -print0 | xargs -0 -r sha256sum", timeout=120).stdout
    out: dict[str, str] = {}
    for line in listed.splitlines():
        digest, _, name = line.partition("  ")
        out[name.removeprefix("./")] = digest
    return out


def test_default_run_fans_the_rootfs_out(testbed_factory, k3s_images: BuiltImages, tmp_path: Path) -> None:
    home = tmp_path / "sealer-home"
    shutil.copytree(k3s_images.home, home, symlinks=True)
    tb = testbed_factory(nested=True, lab="dd2")
    hosts = tb.up(3)
    for h in hosts:
        # Test-bed only (tests/e2e/README.md): k3s's containerd root on the lab's ext4 bind mount.
        tb.run_on(
            h,
            "mkdir -p /var/lib/containerd/k3s /var/lib/rancher/k3s/agent && "
            "ln -sfn /var/lib/containerd/k3s /var/lib/rancher/k3s/agent/containerd",
        )
    master, workers = hosts[0], hosts[1:]
    cf = tmp_path / "Clusterfile"
    cf.write_text(_clusterfile(k3s_images.app, tb.key_path, master.ip, [w.ip for w in workers]))

    # pre-flight counts the fan-out's spool on each host's disk and names the host that lacks it
    w = workers[0]
    tb.run_on(w, "mkdir -p /var/lib/sealer && mount -t tmpfs -o size=1m tmpfs /var/lib/sealer")
    refused = run_sealer(home, "run", "-f", str(cf), check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"{w.ip}: too little disk at /var/lib/sealer" in refused.stderr, refused.stderr
    assert "needed for the rootfs (sent host to host: spool + files while it arrives)" in refused.stderr
    assert "--distributor ssh" in refused.stderr and "Traceback" not in refused.stderr
    tb.run_on(w, "umount /var/lib/sealer")

    done = run_sealer(home, "run", "-f", str(cf), timeout=1500)  # no --distributor: the default
    said = done.stdout + done.stderr
    assert f"cluster {CLUSTER} is up: 3 node(s)" in done.stdout, said
    assert "rootfs sent host to host (fan-out) to 3/3 host(s)" in said, said
    assert "fan-out of the" not in said, said  # no host fell back to the direct copy

    records = [json.loads(line) for line in (home / CLUSTER / "journal.jsonl").read_text().splitlines()]
    fanned = [r for r in records if r.get("step") == "fanout:rootfs" and r.get("status") == "done"]
    assert len(fanned) == 1, records
    # one host serves the registry: its data is no fan-out payload
    assert not [r for r in records if r.get("step") == "fanout:registry"]
    rootfs_done = {r["host"] for r in records if r.get("step") == "rootfs" and r.get("status") == "done"}
    assert rootfs_done == {h.ip for h in hosts}  # the per-host steps still checked every host

    # every host holds the image's rootfs byte for byte; master0 also its registry data
    marker = tb.run_on(master, f"cat {ROOTFS}/.sealer-image").stdout.split()[0]
    cache = home / "cache" / "rootfs" / marker.split(":", 1)[-1]
    want_rootfs = _local_digests(cache / "rootfs")
    want_registry = _local_digests(cache / "registry")
    assert want_rootfs and want_registry
    for h in hosts:
        have = _host_digests(tb, h, ROOTFS)
        differ = sorted(name for name, digest in want_rootfs.items() if have.get(name) != digest)
        assert not differ, f"{h.name}: {len(differ)} file(s) differ from the image, e.g. {differ[:3]}"
    have = _host_digests(tb, master, f"{ROOTFS}/registry")
    assert all(have.get(name) == digest for name, digest in want_registry.items())
    for w in workers:
        assert tb.run_on(w, f"test -e {ROOTFS}/registry/docker", check=False).returncode != 0, w.name

    # the fan-out left nothing: no key line, no spool or staging dir, no work dir, no process
    for h in hosts:
        left = tb.run_on(
            h,
            f"grep -l sealer-fanout /root/.ssh/authorized_keys; ls -d {ROOTFS}/.sealer-fanout "
            "/tmp/sealer-fanout-* 2>/dev/null; pgrep -af sealer-fanout | grep -v pgrep",
            check=False,
        ).stdout.strip()
        assert left == "", f"{h.name} keeps: {left}"
