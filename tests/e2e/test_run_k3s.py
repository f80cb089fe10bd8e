"""`sealer run` end to end on the test bed: a k3s ClusterImage built by images/k3s/build.sh and
`sealer build` (stand-in k3s, real containerd, real registry) onto 1 master + 2 workers in nested
hosts. One lab carries the whole story, in the order a user meets it: pre-flight refuses busy or
full hosts, a host dying mid-install fails the run naming it, the same command then finishes without
redoing finished steps, the cluster is Ready with labels, taints, the app and its state, every node
pulls an image that exists only in the ClusterImage, and a second run changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.e2e.images import HELLO_REPO, HELLO_TAG, SEALER, BuiltImages, run_sealer, sealer_env

pytestmark = [pytest.mark.e2e, pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(1800)]

CLUSTER = "e2e"


def clusterfile(image: str, key: Path, master: str, workers: list[str]) -> str:
    doc = {
        "apiVersion": "sealer.io/v2",
        "kind": "Cluster",
        "metadata": {"name": CLUSTER},
        "spec": {
            "image": image,
            "ssh": {"pk": str(key), "user": "root"},
            "env": ["E2E_GREETING=hello"],
            "hosts": [
                {"ips": [master], "roles": ["master"], "labels": {"tier": "control"}},
                {
                    "ips": workers,
                    "roles": ["node", "storage"],
                    "labels": {"disk": "ssd"},
                    "taints": ["dedicated=e2e:NoSchedule"],
                },
            ],
        },
    }
    # A hook of the kind image authors and operators write: after each worker is up, as sealer runs it
    # (cd <rootfs> && data, the host's env), scoped by role.
    plugin = {
        "apiVersion": "sealer.io/v1",
        "kind": "Plugin",
        "metadata": {"name": "mark-workers"},
        "spec": {
            "type": "SHELL",
            "action": "post-init-host",
            "scope": "node",
            "data": 'test -d bin && echo "$E2E_GREETING from $HostIP" > /etc/sealer-e2e-hook\n',
        },
    }
    # A Config document: the operator's own values laid over the image's app manifest before launch.
    config = {
        "apiVersion": "sealer.io/v1",
        "kind": "Config",
        "metadata": {"name": "demo-settings"},
        "spec": {
            "appName": "demo",
            "path": "demo.yaml",
            "strategy": "merge",
            "data": "data:\n  launched: by-sealer-run\n  tuned: by-config\n",
        },
    }
    return yaml.safe_dump_all([doc, plugin, config], sort_keys=False)


def journal_records(home: Path) -> list[dict[str, object]]:
    path = home / CLUSTER / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"sealer run ended before the pause point:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("sealer run never reached the pause point")
        time.sleep(0.2)


def test_run_k3s_one_master_two_workers(testbed_factory, k3s_images: BuiltImages, tmp_path: Path) -> None:
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import ConfigMap, Node, Secret

    home = tmp_path / "sealer-home"
    shutil.copytree(k3s_images.home, home, symlinks=True)
    tb = testbed_factory(nested=True, lab="rn")
    h1, h2, h3 = tb.up(3)
    for h in (h1, h2, h3):
        # Test-bed only: the host's / is overlayfs, where containerd's overlay snapshots cannot live;
        # the nested lab gives /var/lib/containerd an ext4 bind mount, so k3s's containerd root goes there.
        tb.run_on(
            h,
            "mkdir -p /var/lib/containerd/k3s /var/lib/rancher/k3s/agent && "
            "ln -sfn /var/lib/containerd/k3s /var/lib/rancher/k3s/agent/containerd",
        )
    cf = tmp_path / "Clusterfile"
    cf.write_text(clusterfile(k3s_images.app, tb.key_path, h1.ip, [h2.ip, h3.ip]))

    # 1. pre-flight: a busy API port on the master and a full disk on a worker are refused, by host
    pid = tb.run_on(
        h1, "setsid python3 -m http.server --bind 0.0.0.0 6443 >/dev/null 2>&1 & echo $!"
    ).stdout.strip()
    tb.run_on(h2, "mkdir -p /var/lib/sealer && mount -t tmpfs -o size=1m tmpfs /var/lib/sealer")
    for _ in range(50):
        if tb.run_on(h1, "ss -Hltn 'sport = :6443' | grep -q LISTEN", check=False).returncode == 0:
            break
        time.sleep(0.1)
    refused = run_sealer(home, "run", "-f", str(cf), check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"{h1.ip}: port 6443 is already in use" in refused.stderr, refused.stderr
    assert f"{h2.ip}: too little disk at /var/lib/sealer" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (home / CLUSTER / "journal.jsonl").exists(), "pre-flight must not start an operation"
    for h in (h1, h2, h3):
        assert tb.run_on(h, f"test -e /var/lib/sealer/data/{CLUSTER}", check=False).returncode != 0
    tb.run_on(h1, f"kill {pid}")
    tb.run_on(h2, "umount /var/lib/sealer")

    # 2. a worker dies in the middle of the install: the run fails and names it
    flag = tmp_path / "paused"
    proc = subprocess.Popen(
        [str(SEALER), "run", "-f", str(cf)],
        env=sealer_env(home, SEALER_TEST_PAUSE_BEFORE=f"runtime@{h3.ip}", SEALER_TEST_PAUSE_FILE=str(flag)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(flag, proc, 900)
    tb.stop_host(h3)
    flag.unlink()
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 1, out + err
    assert h3.ip in err and "Traceback" not in err, err
    tb.start_host(h3)
    first = journal_records(home)
    done_first = {(r["action"], r["step"], r["host"]) for r in first if r.get("status") == "done"}
    assert ("a1", "runtime", h1.ip) in done_first and ("a2", "runtime", h2.ip) in done_first, err
    assert ("a2", "runtime", h3.ip) not in done_first

    # 3. the same command again finishes the job without redoing a finished step
    resumed = run_sealer(home, "run", "-f", str(cf))
    print(f"--- first run (host {h3.ip} stopped mid-install)\n{err}")
    print(f"--- re-run\n{resumed.stderr}{resumed.stdout}")
    assert "resum" in resumed.stderr + resumed.stdout, resumed.stderr
    records = journal_records(home)
    starts = Counter((r["action"], r["step"], r["host"]) for r in records if r.get("status") == "start")
    for key in done_first:
        assert starts[key] == 1, f"step {key} finished in the first run but was started again"
    assert starts[("a2", "runtime", h3.ip)] == 2  # failed once (host stopped), then done
    assert len({r["op"] for r in records}) == 1, "the re-run resumes the same operation"
    assert records[-1]["type"] == "end" and records[-1]["status"] == "done"
    assert f"cluster {CLUSTER} is up: 3 node(s)" in resumed.stdout, resumed.stdout

    # 4. the cluster through its API: nodes Ready, labels, taints, the app, the state
    admin = home / CLUSTER / "admin.conf"
    assert admin.stat().st_mode & 0o777 == 0o600
    assert (home / CLUSTER / "Clusterfile").stat().st_mode & 0o777 == 0o600
    assert (home / CLUSTER / "pki" / "ca.key").stat().st_mode & 0o777 == 0o600
    kube = Client(KubeConfig.from_file(admin))
    assert kube.config.cluster.server == f"https://{h1.ip}:6443"
    nodes = {n.metadata.name: n for n in kube.list(Node)}
    assert set(nodes) == {h.name for h in (h1, h2, h3)}, nodes.keys()
    for node in nodes.values():
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True", node.metadata.name
    assert nodes[h1.name].metadata.labels["tier"] == "control"
    for h in (h2, h3):
        labels = nodes[h.name].metadata.labels
        assert labels["disk"] == "ssd" and labels["node-role.kubernetes.io/storage"] == ""
        taints = [(t.key, t.value, t.effect) for t in nodes[h.name].spec.taints or []]
        assert ("dedicated", "e2e", "NoSchedule") in taints
    demo = kube.get(ConfigMap, "sealer-e2e-demo", namespace="default")
    assert demo.data == {"launched": "by-sealer-run", "tuned": "by-config"}  # image manifest + Config merge
    stored = kube.get(ConfigMap, "sealer-clusterfile", namespace="kube-system").data["Clusterfile"]
    assert f"name: {CLUSTER}" in stored and h2.ip in stored
    assert "by-config" not in stored and "<kept on the operator machine: sha256:" in stored  # Config data
    assert kube.get(Secret, "admin.conf", namespace="kube-system").data["admin.conf"]

    # 5. offline: every node's real containerd pulls an image that exists only in the ClusterImage,
    # through the mirror on master0 (the build's source registry is stopped)
    certs_d = (
        "/var/lib/rancher/k3s/agent/etc/containerd/certs.d"  # the hosts.toml k3s wrote from registries.yaml
    )
    for h in (h1, h2, h3):
        by_name = tb.run_on(
            h,
            f"/usr/local/bin/k3s ctr images pull --hosts-dir {certs_d} sea.hub:5000/{HELLO_REPO}:{HELLO_TAG}",
            check=False,
            timeout=120,
        )
        assert by_name.returncode == 0, f"{h.name}: {by_name.stdout}{by_name.stderr}"
        # docker.io is mirrored too: the CRI pull of a Docker Hub name is served by master0
        short = HELLO_REPO.removeprefix("library/")
        via_cri = tb.run_on(
            h, f"/usr/local/bin/k3s crictl pull {short}:{HELLO_TAG}", check=False, timeout=120
        )
        assert via_cri.returncode == 0, f"{h.name}: {via_cri.stdout}{via_cri.stderr}"
    original = tb.run_on(
        h2,
        f"/usr/local/bin/k3s ctr images pull --hosts-dir {certs_d} {k3s_images.hello_ref}",
        check=False,
        timeout=120,
    )
    assert original.returncode == 0, original.stdout + original.stderr  # the build's source, mirrored
    listed = tb.run_on(h3, "/usr/local/bin/k3s ctr images ls -q").stdout
    assert (
        f"sea.hub:5000/{HELLO_REPO}:{HELLO_TAG}" in listed and f"docker.io/{HELLO_REPO}:{HELLO_TAG}" in listed
    )

    # the hook ran on the workers only, in the rootfs, with each host's env
    for h in (h2, h3):
        assert tb.run_on(h, "cat /etc/sealer-e2e-hook").stdout == f"hello from {h.ip}\n"
    assert tb.run_on(h1, "test -e /etc/sealer-e2e-hook", check=False).returncode != 0

    assert tb.run_on(h1, "test -s /etc/sealer-e2e-image-hook", check=False).returncode == 0  # image plugin
    for h in (h2, h3):
        assert tb.run_on(h, "test -e /etc/sealer-e2e-image-hook", check=False).returncode != 0

    # secrets stay on the hosts, 0600, and out of every log and output
    token = tb.run_on(h1, "cat /etc/rancher/k3s/sealer-token").stdout.strip()
    node_token = tb.run_on(h1, "cat /var/lib/rancher/k3s/server/token").stdout.strip()
    assert len(token) >= 32 and node_token
    for h in (h2, h3):
        assert tb.run_on(h, "stat -c %a /etc/systemd/system/k3s-agent.service.env").stdout.strip() == "600"
    logs = "".join(p.read_text(errors="replace") for p in (home / CLUSTER / "logs").rglob("*") if p.is_file())
    for secret in (token, node_token.rsplit(":", 1)[-1]):
        assert secret not in logs + out + err + resumed.stdout + resumed.stderr

    # 6. a second run of the same cluster says so and changes nothing
    before = (home / CLUSTER / "journal.jsonl").read_bytes()
    again = run_sealer(home, "run", "-f", str(cf))
    assert "already exists" in again.stdout and "nothing was changed" in again.stdout, again.stdout
    assert (home / CLUSTER / "journal.jsonl").read_bytes() == before
    assert os.path.exists(home / CLUSTER / "Clusterfile")

    # 7. reset leaves every host without k3s: no units, files, binaries or processes (issue 9's delete
    # drives this through the same runtime call)
    asyncio.run(_reset(home, cf))
    for h in (h1, h2, h3):
        left = tb.run_on(
            h,
            "ls -d /etc/rancher /var/lib/rancher /run/k3s /usr/local/bin/k3s /usr/local/bin/kubectl "
            "/usr/local/bin/containerd /etc/systemd/system/k3s.service /etc/systemd/system/k3s-agent.service "
            "/etc/systemd/system/k3s-agent.service.env /etc/systemd/system/sealer-registry.service "
            "/etc/sealer/registry 2>/dev/null; pgrep -a -f 'k3s|containerd|sealer-registry' | grep -v pgrep",
            check=False,
        ).stdout.strip()
        assert left == "", f"{h.name} keeps: {left}"


async def _reset(home: Path, cf: Path) -> None:
    from sealer.infra.fleet import Fleet
    from sealer.infra.host import target_from_host
    from sealer.model.clusterfile import load_clusterfile
    from sealer.runtime.base import RuntimeContext
    from sealer.runtime.k3s import K3sRuntime
    from sealer.runtime.registry import remove_registry

    cluster = load_clusterfile(cf).cluster
    targets = {h.ip: target_from_host(h) for h in cluster.hosts}
    async with Fleet(known_hosts=home / CLUSTER / "known_hosts", cluster=CLUSTER) as fleet:
        ctx = RuntimeContext(fleet=fleet, cluster=cluster, targets=targets, node_names={}, registry=None)
        await K3sRuntime().reset(ctx, list(cluster.hosts))
        await remove_registry(fleet, targets[cluster.hosts[0].ip])
