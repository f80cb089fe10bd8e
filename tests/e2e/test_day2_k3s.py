"""Day 2 end to end on the test bed (lab `d2`, stand-in k3s, real containerd, registry and sshd): a
1 master + 1 worker cluster becomes 3 + 3 (HA promotion through `apply`, one more worker through
`scale-up`), shrinks to 3 + 1 (drained, deleted, reset and clean), is upgraded to a newer k3s while a
worker keeps asking the API, is backed up and restored, and is deleted with every host left clean.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import day2
from tests.e2e.day2 import ApiProbe
from tests.e2e.images import SEALER, BuiltImages, run_sealer, sealer_env

pytestmark = [pytest.mark.e2e, pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(3600)]

CLUSTER = "d2"
# The lab id; another name lets a second copy of this test run beside a full-suite run.
LAB = os.environ.get("SEALER_E2E_DAY2_LAB", "d2")
NEXT_VERSION = "v1.31.2+k3s1"
NEXT_IMAGE = "e2e.local/sealer/k3s-demo:2"
# The worker's own path to the API: its kubelet's kubeconfig, through the node-local balancer.
KUBELET_CONF = "/var/lib/rancher/k3s/agent/kubelet.kubeconfig"


@dataclass
class UpgradeImage:
    home: Path  # a SEALER_HOME holding the base, app and upgrade images
    old: str
    new: str


def build_upgrade_image(images: BuiltImages, work: Path) -> UpgradeImage:
    """The app image again with the stand-in k3s stamped as a newer release (and its version label),
    built with `sealer build` like any image derived from a ClusterImage."""
    home = work / "sealer-home"
    shutil.copytree(images.home, home, symlinks=True)
    day2.build_upgrade_image(home, images.app, {"k3s": NEXT_VERSION}, NEXT_IMAGE, work)
    return UpgradeImage(home, images.app, NEXT_IMAGE)


@pytest.fixture(scope="module")
def upgrade_images(k3s_images: BuiltImages, tmp_path_factory: pytest.TempPathFactory) -> UpgradeImage:
    return build_upgrade_image(k3s_images, tmp_path_factory.mktemp("d2-images"))


def clusterfile(image: str, key: Path, masters: list[str], workers: list[str], **kw: Any) -> str:
    return day2.clusterfile(image, key, masters, workers, CLUSTER, **kw)


def prepare_hosts(tb: Any, hosts: list[Any]) -> None:
    # Test-bed only (see tests/e2e/README.md): containerd's snapshots need the ext4 bind mount.
    for h in hosts:
        tb.run_on(
            h,
            "mkdir -p /var/lib/containerd/k3s /var/lib/rancher/k3s/agent && "
            "ln -sfn /var/lib/containerd/k3s /var/lib/rancher/k3s/agent/containerd",
        )


def kube_client(home: Path) -> Any:
    return day2.kube_client(home, CLUSTER)


def nodes_by_ip(home: Path) -> dict[str, Any]:
    return day2.nodes_by_ip(home, CLUSTER)


def assert_clean(tb: Any, h: Any) -> None:
    day2.assert_clean(tb, h, CLUSTER, "k3s")


@pytest.fixture
def d2_lab(testbed_factory: Any) -> Iterator[Any]:
    tb = testbed_factory(nested=True, lab=LAB)
    yield tb


def test_day2_k3s_scale_ha_shrink_upgrade_restore_delete(
    d2_lab: Any, upgrade_images: UpgradeImage, tmp_path: Path
) -> None:
    from lightkube.core.exceptions import ApiError
    from lightkube.models.core_v1 import Container, PodSpec
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ConfigMap, Pod

    tb = d2_lab
    home = tmp_path / "sealer-home"
    shutil.copytree(upgrade_images.home, home, symlinks=True)
    hosts = tb.up(6)
    h1, h2, h3, h4, h5, h6 = hosts
    prepare_hosts(tb, hosts)
    key = tb.key_path
    cf = tmp_path / "Clusterfile"

    # 1. day 1: one master, one worker
    cf.write_text(clusterfile(upgrade_images.old, key, [h1.ip], [h2.ip]))
    run_sealer(home, "run", "-f", str(cf))
    assert set(nodes_by_ip(home)) == {h1.ip, h2.ip}

    # 2. one master becomes three and a worker joins, through apply (asks nothing: nothing is removed)
    cf.write_text(clusterfile(upgrade_images.old, key, [h1.ip, h3.ip, h4.ip], [h2.ip, h5.ip]))
    dry = run_sealer(home, "apply", "-f", str(cf), "--dry-run", "-o", "json")
    kinds = [a["kind"] for a in json.loads(dry.stdout)["actions"]]
    assert kinds == ["join-master", "join-master", "join-workers"], kinds
    grown = run_sealer(home, "apply", "-f", str(cf))
    assert "update done" in grown.stdout, grown.stdout + grown.stderr
    day2.report("1+1 -> 3+2 (apply)", grown.stdout)
    nodes = nodes_by_ip(home)
    assert set(nodes) == {h1.ip, h2.ip, h3.ip, h4.ip, h5.ip}
    assert all(day2.ready(n) for n in nodes.values())
    for h in (h3, h4):  # new servers joined the embedded etcd, carry the group's labels
        labels = nodes[h.ip].metadata.labels
        assert labels.get("node-role.kubernetes.io/etcd") == "true", labels
        assert labels.get("node-role.kubernetes.io/control-plane") == "true", labels
        assert labels["tier"] == "control"
        sans = tb.run_on(h, "grep -A5 tls-san /etc/rancher/k3s/config.yaml").stdout
        assert all(m.ip in sans for m in (h1, h3, h4)), sans
    taints = [(t.key, t.effect) for t in nodes[h5.ip].spec.taints or []]
    assert ("dedicated", "NoSchedule") in taints and nodes[h5.ip].metadata.labels["disk"] == "ssd"
    # A new server serves the API itself with a certificate for its own address.
    admin = yaml.safe_load((home / CLUSTER / "admin.conf").read_text())
    admin["clusters"][0]["cluster"]["server"] = f"https://{h3.ip}:6443"
    alt = tmp_path / "admin-h3.conf"
    alt.write_text(yaml.safe_dump(admin))
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import Node

    assert len(list(Client(KubeConfig.from_file(alt)).list(Node))) == 5

    # 3. scale-up edits the last-applied Clusterfile and applies it
    up = run_sealer(home, "scale-up", "-n", h6.ip, "--cluster", CLUSTER)
    assert "update done" in up.stdout, up.stdout + up.stderr
    day2.report("3+2 -> 3+3 (scale-up)", up.stdout)
    assert h6.ip in (home / CLUSTER / "Clusterfile").read_text()
    assert set(nodes_by_ip(home)) == {h.ip for h in hosts}
    refused = run_sealer(home, "scale-up", "-n", h6.ip, "--cluster", CLUSTER, check=False)
    assert refused.returncode == 1 and f"{h6.ip} already in the cluster" in refused.stderr

    # 3b. in place: worker labels and taints change, a host alias appears on every host
    last_cf = (home / CLUSTER / "Clusterfile").read_text()
    cf.write_text(
        clusterfile(
            upgrade_images.old,
            key,
            [h1.ip, h3.ip, h4.ip],
            [h2.ip, h5.ip, h6.ip],
            worker_labels={"disk": "nvme", "zone": "a"},
            worker_taints=["gpu=yes:NoExecute"],
            aliases={"10.99.0.1": ["db.e2e.local"]},
        )
    )
    dry = json.loads(run_sealer(home, "apply", "-f", str(cf), "--dry-run", "-o", "json").stdout)
    # h6 joined through scale-up in a group of its own (no labels/taints): its changes differ from h2/h5's
    assert {a["kind"] for a in dry["actions"]} == {"update-host-aliases", "update-labels", "update-taints"}
    updated = run_sealer(home, "apply", "-f", str(cf))
    assert "update done" in updated.stdout, updated.stdout + updated.stderr
    day2.report("in-place update", updated.stdout)
    nodes = nodes_by_ip(home)
    for h in (h2, h5, h6):
        assert nodes[h.ip].metadata.labels["disk"] == "nvme" and nodes[h.ip].metadata.labels["zone"] == "a"
        taints = {(t.key, t.effect) for t in nodes[h.ip].spec.taints or []}
        assert ("gpu", "NoExecute") in taints and ("dedicated", "NoSchedule") not in taints, taints
    for h in hosts:
        assert "10.99.0.1 db.e2e.local" in tb.run_on(h, "cat /etc/hosts").stdout
    assert "db.e2e.local" in (home / CLUSTER / "Clusterfile").read_text() != last_cf

    # 3c. a node deleted by hand is noticed by the next apply, reset and joined again
    kube_client(home).delete(Node, nodes_by_ip(home)[h6.ip].metadata.name)
    dry = json.loads(run_sealer(home, "apply", "-f", str(cf), "--dry-run", "-o", "json").stdout)
    assert [(a["kind"], a["hosts"], a["details"]) for a in dry["actions"]] == [
        ("join-workers", [h6.ip], {"rejoin": True})
    ], dry
    flag = tmp_path / "paused"
    proc = subprocess.Popen(
        [str(SEALER), "apply", "-f", str(cf)],
        env=sealer_env(
            home, SEALER_TEST_PAUSE_BEFORE=f"forget-node@{h6.ip}", SEALER_TEST_PAUSE_FILE=str(flag)
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    while not flag.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the rejoin never reached its forget-node step"
        time.sleep(0.2)
    prepare_hosts(tb, [h6])  # test-bed only: the reset removed the containerd link (see README)
    flag.unlink()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert "join 1 lost host again" in out, out
    nodes = nodes_by_ip(home)
    assert h6.ip in nodes and day2.ready(nodes[h6.ip]) and nodes[h6.ip].metadata.labels["disk"] == "nvme"

    # 4. 3 + 3 -> 3 + 1: a pod on h5 is drained; h5 and h6 are deleted, reset and clean
    kube = kube_client(home)
    h5_name = nodes_by_ip(home)[h5.ip].metadata.name
    kube.create(
        Pod(
            metadata=ObjectMeta(name="on-h5", namespace="default"),
            spec=PodSpec(nodeName=h5_name, containers=[Container(name="c", image="busybox")]),
        )
    )
    no = run_sealer(home, "delete", "-n", f"{h5.ip},{h6.ip}", "--cluster", CLUSTER, check=False)
    assert no.returncode == 1 and "not confirmed; nothing was changed" in no.stderr, no.stderr
    assert set(nodes_by_ip(home)) == {h.ip for h in hosts}
    shrunk = run_sealer(home, "delete", "-n", f"{h5.ip},{h6.ip}", "--cluster", CLUSTER, "-y")
    assert "update done" in shrunk.stdout, shrunk.stdout + shrunk.stderr
    day2.report("3+3 -> 3+1 (delete -n)", shrunk.stdout)
    assert set(nodes_by_ip(home)) == {h1.ip, h2.ip, h3.ip, h4.ip}
    with pytest.raises(ApiError) as gone:
        kube.get(Pod, "on-h5", namespace="default")
    assert gone.value.status.code == 404
    for h in (h5, h6):
        assert_clean(tb, h)
    last = (home / CLUSTER / "Clusterfile").read_text()
    assert h5.ip not in last and h6.ip not in last
    refused = run_sealer(home, "delete", "-m", h1.ip, "--cluster", CLUSTER, "-y", check=False)
    assert refused.returncode == 1 and "master0" in refused.stderr and "Traceback" not in refused.stderr

    # 5. upgrade to a newer k3s, masters one at a time, then the worker; a worker asks the API
    with ApiProbe(tb, h2, day2.node_read_command(KUBELET_CONF)) as probe:
        upgraded = run_sealer(home, "upgrade", upgrade_images.new, "--cluster", CLUSTER)
        time.sleep(1.5)  # not a threshold: lets the probe ask once more after the upgrade
    assert "update done" in upgraded.stdout, upgraded.stdout + upgraded.stderr
    day2.report("upgrade 3+1", upgraded.stdout)
    nodes = nodes_by_ip(home)
    assert {ip: n.status.nodeInfo.kubeletVersion for ip, n in nodes.items()} == {
        h.ip: NEXT_VERSION for h in (h1, h2, h3, h4)
    }
    for h in (h1, h2, h3, h4):
        assert NEXT_VERSION in tb.run_on(h, "/usr/local/bin/k3s --version").stdout
    print(f"API read from {h2.ip} through its balancer during the upgrade: {probe.summary()}")
    # As for k0s and kubeadm: answered throughout but, at most, an isolated request a stopping server
    # held at that instant (seen once in a full-suite run under load: TLS EOF); never an HTTP error,
    # a refused balancer or two polls in a row.
    probe.assert_served_throughout()
    records = day2.journal(home, CLUSTER)
    upgrade_op = [r for r in records if r["type"] == "begin"][-1]["op"]
    order = [
        r["host"]
        for r in records
        if r["op"] == upgrade_op and r.get("step") == "upgrade" and r.get("status") == "done"
    ]
    assert order == [h1.ip, h3.ip, h4.ip, h2.ip], order  # masters first, one at a time, then workers
    drains = [
        r["host"]
        for r in records
        if r["op"] == upgrade_op and r.get("step") == "drain" and r["status"] == "done"
    ]
    assert drains == [h2.ip], drains  # the worker is drained (and uncordoned), control planes are not
    down = run_sealer(home, "upgrade", upgrade_images.old, "--cluster", CLUSTER, "-y", check=False)
    assert down.returncode == 1 and "downgrades are not supported" in down.stderr, down.stderr

    # 5b. a master leaves (3 + 1 -> 2 + 1): drained, its Node (and so its etcd member) deleted, reset
    left = run_sealer(home, "delete", "-m", h4.ip, "--cluster", CLUSTER, "-y")
    assert "update done" in left.stdout, left.stdout + left.stderr
    day2.report("3+1 -> 2+1 (delete -m)", left.stdout)
    assert set(nodes_by_ip(home)) == {h1.ip, h2.ip, h3.ip}
    assert_clean(tb, h4)
    assert all(day2.ready(n) for n in nodes_by_ip(home).values())

    # 6. status, then etcd backup; a ConfigMap deleted afterwards comes back with the restore
    status = json.loads(run_sealer(home, "status", "--cluster", CLUSTER, "-o", "json").stdout)
    assert status["exists"] and status["lastOperation"]["status"] == "done" and not status["unfinished"]
    assert status["image"] == upgrade_images.new
    # master0 keeps a copy of the journal for other operator machines
    copy = tb.run_on(
        h1,
        f"stat -c %a /var/lib/sealer/data/{CLUSTER}; tail -n1 /var/lib/sealer/data/{CLUSTER}/journal.jsonl",
    )
    assert copy.stdout.startswith("700\n") and '"type":"end"' in copy.stdout, copy.stdout
    snapshot = tmp_path / "d2.snapshot"
    run_sealer(home, "etcd", "backup", "--cluster", CLUSTER, "-o", str(snapshot))
    assert snapshot.stat().st_mode & 0o777 == 0o600 and snapshot.stat().st_size > 0
    kube.delete(ConfigMap, "sealer-e2e-demo", namespace="default")
    run_sealer(home, "etcd", "restore", str(snapshot), "--cluster", CLUSTER, "-y")
    kube = kube_client(home)
    assert kube.get(ConfigMap, "sealer-e2e-demo", namespace="default").data == {"launched": "by-sealer-run"}
    assert all(day2.ready(n) for n in nodes_by_ip(home).values())

    # 7. delete --all --prune: every host clean, the state gone here (journal kept for status)
    no = run_sealer(home, "delete", "--all", "--cluster", CLUSTER, check=False)
    assert no.returncode == 1 and "not confirmed" in no.stderr
    run_sealer(home, "delete", "--all", "--prune", "--cluster", CLUSTER, "--force")
    for h in hosts:
        assert_clean(tb, h)
        assert tb.run_on(h, "systemctl is-active sealer-registry", check=False).stdout.strip() != "active"
    assert not (home / CLUSTER / "Clusterfile").exists() and not (home / CLUSTER / "admin.conf").exists()
    status = json.loads(run_sealer(home, "status", "--cluster", CLUSTER, "-o", "json").stdout)
    assert status["deleted"] and status["lastOperation"]["kind"] == "delete"
