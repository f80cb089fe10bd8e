"""`sealer etcd backup` / `sealer etcd restore` end to end for k0s and kubernetes (k3s's is in
test_day2_k3s.py), on ClusterImages built as tests/e2e/test_run_runtimes.py builds them (stand-in
k0s; stand-in kubeadm/kubelet with stand-in etcdctl/etcdutl from a GitHub-shaped etcd release):
install, back up, delete a ConfigMap and create another, restore: the deleted one is back, the
later one gone, every node Ready; a second restore of the same snapshot gives the same state; a file
that is no snapshot is refused before anything stops. Onto a reset cluster (deleted, created anew):
k0s's archive carries the cluster's PKI, so it restores (workers re-join); k3s's bundle carries the
server token its snapshot's bootstrap data (CAs) is encrypted with, so it restores (the other servers
and agents re-join with that token, and a later scale-up still joins); etcd does not hold kubeadm's
PKI, so kubeadm's bundle carries it (CA keys, ServiceAccount keys): every host is reset,
master0 re-initialised with that PKI and restored, the other hosts join it.

A restore is a journaled operation. For k3s the second restore is SIGKILLed twice at step
boundaries (before master0's cluster-reset, the API down; before a worker's restart, the API back)
and the same command resumes it; the restore onto the re-created cluster is killed before the
agent re-joins, once master0 runs with the backup's token, and resumes on the path decided before
(the agents re-join with that token). For k0s and kubernetes the second restore is killed once
with the control planes down (k0s: before master0's restore; kubeadm: before the static Pods
start again) and resumed. The backup holds the in-cluster Lease while it takes the
snapshot, so the snapshot holds it; no restore leaves it behind.

Between backup and restore the workers' labels and taints change in the Clusterfile and are
applied (for k3s a worker that was in the cluster at backup time is also removed): every restore
ends with the Nodes as the last-applied Clusterfile says (the label changed, the one added there,
the taint dropped since the backup off; no Node of the removed host, which later joins again under
the same name), the in-cluster Clusterfile the last-applied one, and no snapshot copy left on the
masters.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.day2 import assert_no_finished_step_started_again
from tests.e2e.images import SEALER, run_sealer, sealer_env
from tests.e2e.runtime_images import RuntimeImage, prepare_hosts
from tests.e2e.test_run_runtimes import CLUSTER, clusterfile

pytestmark = [pytest.mark.e2e, pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(2400)]

# (runtime, masters, lab); SEALER_E2E_BACKUP_MASTERS=3 runs the HA variant of both
AGENT_ENV = "/etc/systemd/system/k3s-agent.service.env"
MASTERS = int(os.environ.get("SEALER_E2E_BACKUP_MASTERS", "1"))
# SEALER_E2E_BACKUP_LAB: another lab id, so a second copy can run beside a full suite
LAB = os.environ.get("SEALER_E2E_BACKUP_LAB")
SCENARIOS = [
    # every runtime's restore runs as journaled steps (runtime/etcd_backup.py, apply/restore.py)
    pytest.param("k3s", MASTERS, LAB or "bk0", id=f"k3s-{MASTERS}m1n"),
    pytest.param("k0s", MASTERS, LAB or "bk0", id=f"k0s-{MASTERS}m1n"),
    pytest.param("kubernetes", MASTERS, LAB or "bku", id=f"kubernetes-{MASTERS}m1n"),
]


def _kube(home: Path):  # type: ignore[no-untyped-def]
    from lightkube import Client, KubeConfig

    return Client(KubeConfig.from_file(home / CLUSTER / "admin.conf"))


def _config_map(name: str, value: str):  # type: ignore[no-untyped-def]
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ConfigMap

    return ConfigMap(metadata=ObjectMeta(name=name, namespace="default"), data={"v": value})


def _assert_restored(home: Path, hosts) -> None:  # type: ignore[no-untyped-def]
    """The state of the snapshot: the ConfigMap deleted after it is back with its data, the one
    created after it is gone, and every host is a Ready Node."""
    from lightkube import ApiError
    from lightkube.resources.core_v1 import ConfigMap, Node

    kube = _kube(home)
    assert kube.get(ConfigMap, "backup-probe", namespace="default").data == {"v": "before-backup"}
    with pytest.raises(ApiError) as gone:
        kube.get(ConfigMap, "after-backup", namespace="default")
    assert gone.value.status.code == 404
    nodes = {n.metadata.name: n for n in kube.list(Node)}
    assert set(nodes) == {h.name for h in hosts}, nodes.keys()
    for node in nodes.values():
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True", node.metadata.name


# the workers' labels and taints after the backup (clusterfile() gives them disk=ssd and the taint
# dedicated=e2e:NoSchedule, both in the snapshot)
LATER_LABELS = {"disk": "nvme", "zone": "after-backup"}


def _changed_since_backup(text: str) -> str:
    """The Clusterfile with the workers' labels changed and their taint dropped."""
    docs = list(yaml.safe_load_all(text))
    for group in docs[0]["spec"]["hosts"]:
        if group["roles"] == ["node"]:
            group["labels"] = dict(LATER_LABELS)
            group.pop("taints", None)
    return yaml.safe_dump_all(docs, sort_keys=False)


def _assert_as_clusterfile(home: Path, tb, masters, workers) -> None:  # type: ignore[no-untyped-def]
    """The restore ended with what the last-applied Clusterfile says, not what the snapshot held:
    the workers' labels of after the backup and their dropped taint off (the masters' label kept),
    the in-cluster Clusterfile the last-applied one; and the snapshot's copies are gone from the
    masters (what the runtimes keep as the state before the restore is asserted where it is)."""
    from lightkube.resources.core_v1 import ConfigMap, Node

    from sealer.kube.client import CLUSTERFILE_CONFIGMAP, STATE_NAMESPACE

    kube = _kube(home)
    for w in workers:
        node = kube.get(Node, w.name)
        labels = node.metadata.labels or {}
        assert {k: labels.get(k) for k in LATER_LABELS} == LATER_LABELS, (w.name, labels)
        taints = [t.key for t in (node.spec.taints or [])]
        assert "dedicated" not in taints, (w.name, taints)
    for m in masters:  # unchanged since the backup, and not taken off
        labels = kube.get(Node, m.name).metadata.labels or {}
        assert labels.get("tier") == "control", (m.name, labels)
    saved = kube.get(ConfigMap, CLUSTERFILE_CONFIGMAP, namespace=STATE_NAMESPACE).data["Clusterfile"]
    assert "after-backup" in saved and "dedicated" not in saved, saved
    for m in masters:
        left = tb.run_on(m, "ls -A /var/lib/sealer/restore /var/lib/sealer/restore-work 2>/dev/null; true")
        assert left.stdout.strip() == "", (m.name, left.stdout)


def _journal(home: Path) -> list[dict[str, Any]]:
    path = home / CLUSTER / "journal.jsonl"
    out = []
    for line in path.read_bytes().split(b"\n"):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # empty, or torn by a kill: skipped as the journal's own reader does
    return out


def _killed_at(home: Path, args: list[str], point: str, flag: Path) -> None:
    """Run sealer until it is about to start the journaled step `point` (step@host), then SIGKILL it
    there: the steps before are done, that one not begun."""
    proc = subprocess.Popen(
        [str(SEALER), *args],
        env=sealer_env(home, SEALER_TEST_PAUSE_BEFORE=point, SEALER_TEST_PAUSE_FILE=str(flag)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 1200  # a bound for a hung run, not a speed check
        while not flag.exists():
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"sealer ended ({proc.returncode}) before {point}:\n{out}\n{err}")
            assert time.monotonic() < deadline, f"sealer never reached {point}"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)
        flag.unlink(missing_ok=True)
    assert proc.returncode == -signal.SIGKILL, proc.returncode


def _killed_twice_then_resumed(home: Path, tb, snapshot: Path, hosts, masters, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The same restore killed twice at step boundaries (before master0's cluster-reset, with every
    server stopped and the API down; then before a worker's restart, after the API came back from
    the snapshot), an apply refused meanwhile, and the third run resumes the one operation and
    finishes it without starting a finished step again."""
    m0, worker = masters[0], hosts[len(masters)]
    args = ["etcd", "restore", str(snapshot), "--cluster", CLUSTER, "-y"]
    flag = tmp_path / "paused"
    _killed_at(home, args, f"cluster-reset@{m0.ip}", flag)
    status = json.loads(run_sealer(home, "status", "--cluster", CLUSTER, "-o", "json").stdout)
    last = status["lastOperation"]
    assert last["kind"] == "etcd-restore" and last["status"] != "done", status
    assert status["toFinish"] and "etcd restore" in status["toFinish"], status
    assert {(u["step"], u["host"]) for u in status["unfinished"]} <= {("cluster-reset", m0.ip)}, status
    text = run_sealer(home, "status", "--cluster", CLUSTER).stdout
    assert "to finish it, run: sealer etcd restore" in text, text
    # another change to the half-restored cluster is refused, naming the restore that finishes it
    refused = run_sealer(home, "upgrade", "e2e.local/other:1", "--cluster", CLUSTER, "-y", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stdout + refused.stderr
    assert "an etcd restore did not finish" in refused.stderr, refused.stderr
    assert "sealer etcd restore" in refused.stderr, refused.stderr
    op = last["op"]
    _killed_at(home, args, f"restart@{worker.ip}", flag)
    recs = _journal(home)
    assert [r["op"] for r in recs if r["type"] == "begin"][-1] == op  # the second run resumed it
    done = {
        (r["step"], r.get("host"))
        for r in recs
        if r["op"] == op and r["type"] == "step" and r["status"] == "done"
    }
    assert {("cluster-reset", m0.ip), ("start", m0.ip)} <= done, done
    resumed = run_sealer(home, *args, timeout=1500)
    assert "resuming operation" in resumed.stderr, resumed.stdout + resumed.stderr
    assert f"cluster {CLUSTER} restored from {snapshot}" in resumed.stdout, resumed.stdout + resumed.stderr
    recs = _journal(home)
    assert [r["op"] for r in recs if r["type"] == "begin"][-1] == op
    end = [r for r in recs if r["type"] == "end"][-1]
    assert (end["op"], end["status"]) == (op, "done"), end
    assert_no_finished_step_started_again(recs)
    assert not (home / CLUSTER / "etcd-restore.json").exists()


def _failed_then_resumed(
    home: Path, tb, snapshot: Path, worker, tmp_path: Path
) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    """A restore that fails midway (the worker's k3s binary gone just before its agent restarts):
    the error names the host, the cause and the way on; status shows the failed step; with the
    binary back, the same command resumes and redoes only that step and what follows."""
    args = ["etcd", "restore", str(snapshot), "--cluster", CLUSTER, "-y"]
    flag = tmp_path / "paused"
    proc = subprocess.Popen(
        [str(SEALER), *args],
        env=sealer_env(
            home, SEALER_TEST_PAUSE_BEFORE=f"restart@{worker.ip}", SEALER_TEST_PAUSE_FILE=str(flag)
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 1200  # a bound for a hung run, not a speed check
        while not flag.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "sealer never reached the worker's restart"
            time.sleep(0.2)
        tb.run_on(worker, "mv /usr/local/bin/k3s /usr/local/bin/k3s.away")
        flag.unlink()
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err, out + err
    assert f"{worker.ip}: k3s-agent.service did not start" in err, err
    assert "it continues from the failed step" in err, err
    status = json.loads(run_sealer(home, "status", "--cluster", CLUSTER, "-o", "json").stdout)
    assert [(u["step"], u["host"], u["status"]) for u in status["unfinished"]] == [
        ("restart", worker.ip, "failed")
    ], status
    tb.run_on(worker, "mv /usr/local/bin/k3s.away /usr/local/bin/k3s")
    done = run_sealer(home, *args, timeout=1500)
    assert "resuming operation" in done.stderr, done.stdout + done.stderr
    assert_no_finished_step_started_again(_journal(home))
    return done


def _assert_lease_released(home: Path) -> None:
    """The snapshot holds the Lease `sealer etcd backup` held while taking it; the restore took it
    back and released it, so no holder from the snapshot is left to block later operations."""
    from lightkube import ApiError
    from lightkube.resources.coordination_v1 import Lease

    with pytest.raises(ApiError) as gone:
        _kube(home).get(Lease, f"sealer-{CLUSTER}", namespace="kube-system")
    assert gone.value.status.code == 404


@pytest.mark.parametrize(("runtime", "n_masters", "lab"), SCENARIOS)
def test_backup_then_restore(
    runtime: str, n_masters: int, lab: str, request: pytest.FixtureRequest, testbed_factory, tmp_path: Path
) -> None:
    img: RuntimeImage = request.getfixturevalue(f"{runtime}_image")
    home = tmp_path / "sealer-home"
    shutil.copytree(img.home, home, symlinks=True)
    tb = testbed_factory(nested=True, lab=lab)
    # k3s: one host more, outside the cluster, for a scale-up after the restore onto a new cluster
    hosts = tb.up(n_masters + 1 + (runtime == "k3s"))
    hosts, spare = hosts[: n_masters + 1], hosts[n_masters + 1 :]
    masters, workers = hosts[:n_masters], hosts[n_masters:]
    prepare_hosts(tb, [*hosts, *spare], img)
    cf = tmp_path / "Clusterfile"
    # k3s: the spare is a worker at backup time, removed before the restore (its Node is in the
    # snapshot), joined again at the end
    at_backup = [*workers, *spare]
    cf.write_text(clusterfile(img.image, tb.key_path, [m.ip for m in masters], [w.ip for w in at_backup]))
    done = run_sealer(home, "run", "-f", str(cf), timeout=1500)
    n = len(masters) + len(at_backup)
    assert f"cluster {CLUSTER} is up: {n} node(s)" in done.stdout, done.stdout + done.stderr

    from lightkube.resources.core_v1 import ConfigMap

    kube = _kube(home)
    kube.create(_config_map("backup-probe", "before-backup"))
    snapshot = tmp_path / "backups" / f"{runtime}.snapshot"
    made = run_sealer(home, "etcd", "backup", "--cluster", CLUSTER, "-o", str(snapshot), timeout=600)
    assert f"written to {snapshot}" in made.stdout, made.stdout + made.stderr
    assert snapshot.stat().st_mode & 0o777 == 0o600 and snapshot.stat().st_size > 0
    assert not [p for p in snapshot.parent.iterdir() if p != snapshot], "a temporary file was left"
    if runtime == "k3s":  # k3s's snapshot and the server token its bootstrap data is encrypted with
        with tarfile.open(snapshot) as tar:
            assert set(tar.getnames()) == {"etcd-snapshot", "token"}
            token = tar.extractfile("token")
            assert token is not None and token.read().startswith(b"K10")
            # the backup held the in-cluster Lease while k3s took the snapshot (the stand-in's
            # snapshot is its store as JSON): the restore must not leave that holder behind
            raw = tar.extractfile("etcd-snapshot")
            assert raw is not None
            held = json.loads(raw.read())["objects"][
                f"coordination.k8s.io/leases/kube-system/sealer-{CLUSTER}"
            ]
            assert "sealer etcd backup" in json.loads(held["spec"]["holderIdentity"])["command"], held
    elif runtime == "k0s":
        with tarfile.open(snapshot) as tar:
            assert {"etcd-snapshot.db", "k0s.yaml", "pki/ca.crt"} <= set(tar.getnames())
    else:  # etcdctl's snapshot (with etcd's integrity hash) and the PKI kubeadm keeps outside etcd
        with tarfile.open(snapshot) as tar:
            assert {"etcd-snapshot.db", "pki/ca.crt", "pki/ca.key", "pki/sa.key", "pki/etcd/ca.key"} <= set(
                tar.getnames()
            )
            assert tar.getmember("etcd-snapshot.db").size % 512 == 32

    kube.delete(ConfigMap, "backup-probe", namespace="default")
    kube.create(_config_map("after-backup", "too-late"))
    # the Clusterfile changes after the backup: the workers' labels and taints (and for k3s the
    # spare is removed); the restore must end with this, not with the snapshot's Nodes
    later = clusterfile(img.image, tb.key_path, [m.ip for m in masters], [w.ip for w in workers])
    cf.write_text(_changed_since_backup(later))
    applied = run_sealer(home, "apply", "-f", str(cf), "-y", timeout=900)
    assert applied.returncode == 0, applied.stdout + applied.stderr

    # a file that is no snapshot of this runtime: refused before anything stops, the cluster untouched
    # (k3s's own restore checks the file only after stopping its servers: not asserted here)
    junk = tmp_path / "junk.snapshot" if runtime != "k3s" else None
    if junk is not None:
        junk.write_bytes(b"this is not a snapshot\n" * 40)
        refused = subprocess.run(
            [str(SEALER), "etcd", "restore", str(junk), "--cluster", CLUSTER, "-y"],
            env=sealer_env(home),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stdout + refused.stderr
        assert "nothing was changed" in refused.stderr, refused.stderr
        assert _kube(home).get(ConfigMap, "after-backup", namespace="default").data == {"v": "too-late"}
        # no restore resumes a refused one: its upload is not left on master0
        left = tb.run_on(masters[0], "ls -A /var/lib/sealer/restore 2>/dev/null; true").stdout
        assert left.strip() == "", left

    no = run_sealer(home, "etcd", "restore", str(snapshot), "--cluster", CLUSTER, check=False)
    assert no.returncode == 1 and "not confirmed" in no.stderr, no.stdout + no.stderr

    if runtime == "k3s":  # the worker's agent fails to start; fixed, the same command finishes
        restored = _failed_then_resumed(home, tb, snapshot, hosts[n_masters], tmp_path)
    else:
        restored = run_sealer(
            home, "etcd", "restore", str(snapshot), "--cluster", CLUSTER, "-y", timeout=1500
        )
    assert f"cluster {CLUSTER} restored from {snapshot}" in restored.stdout, restored.stdout + restored.stderr
    _assert_restored(home, hosts)  # for k3s: the spare's Node, in the snapshot, is gone
    _assert_as_clusterfile(home, tb, masters, workers)
    m0 = masters[0]
    if runtime == "kubernetes":
        for m in masters:  # every member restored, its old data kept, the static Pods back in place
            assert tb.run_on(m, "test -d /var/lib/etcd.sealer-before-restore", check=False).returncode == 0
            assert (
                tb.run_on(m, "test -e /etc/kubernetes/sealer-restore-manifests", check=False).returncode != 0
            )
            assert tb.run_on(m, "test -f /etc/kubernetes/manifests/etcd.yaml", check=False).returncode == 0
    elif runtime == "k0s":
        kept = tb.run_on(m0, "stat -c %a /var/lib/sealer/backup/k0s-before-restore.tar.gz", check=False)
        assert kept.returncode == 0 and kept.stdout.strip() == "600", kept.stdout + kept.stderr
        for m in masters:  # re-installed controllers keep pulling through the cluster's registry
            config = tb.run_on(m, "cat /etc/k0s/k0s.yaml").stdout
            assert "repository: sea.hub:5000" in config, config

    _assert_lease_released(home)

    # the same snapshot again: the same state (a restore is repeatable, e.g. after a failed one)
    _kube(home).create(_config_map("after-backup", "again"))
    if runtime == "k3s":  # killed twice on the way, the same command resumes it
        _killed_twice_then_resumed(home, tb, snapshot, hosts, masters, tmp_path)
    else:  # killed once with the control planes down (k0s: stopped; kubeadm: members restored)
        args = ["etcd", "restore", str(snapshot), "--cluster", CLUSTER, "-y"]
        point = {"k0s": "restore", "kubernetes": "start"}[runtime]
        _killed_at(home, args, f"{point}@{m0.ip}", tmp_path / "paused")
        again = run_sealer(home, *args, timeout=1500)
        assert "resuming operation" in again.stderr, again.stdout + again.stderr
        assert f"cluster {CLUSTER} restored" in again.stdout, again.stdout + again.stderr
        assert_no_finished_step_started_again(_journal(home))
    _assert_restored(home, hosts)
    _assert_as_clusterfile(home, tb, masters, workers)
    _assert_lease_released(home)
    status = run_sealer(home, "status", "--cluster", CLUSTER).stdout
    assert "unfinished" not in status, status

    if runtime == "kubernetes":
        # onto a reset cluster (deleted, created anew, another CA): the bundle's PKI comes back,
        # master0 is re-initialised with it and restored, the other hosts join it
        old_ca = tb.run_on(m0, "cat /etc/kubernetes/pki/ca.crt").stdout
        run_sealer(home, "delete", "--all", "--cluster", CLUSTER, "-y", timeout=900)
        prepare_hosts(tb, hosts, img)
        run_sealer(home, "run", "-f", str(cf), timeout=1500)
        assert tb.run_on(m0, "cat /etc/kubernetes/pki/ca.crt").stdout != old_ca
        _kube(home).create(_config_map("after-backup", "new-cluster"))
        onto = run_sealer(home, "etcd", "restore", str(snapshot), "--cluster", CLUSTER, "-y", timeout=1500)
        assert "re-created with it" in onto.stdout + onto.stderr, onto.stdout + onto.stderr
        _assert_restored(home, hosts)
        _assert_as_clusterfile(home, tb, masters, workers)
        for h in hosts:  # every host trusts the old CA again
            assert tb.run_on(h, "cat /etc/kubernetes/pki/ca.crt").stdout == old_ca, h.name
        # no second copy of the CA keys left where the bundle was unpacked
        assert tb.run_on(m0, "test -e /var/lib/sealer/restore-work/etcd/pki", check=False).returncode != 0
    if runtime == "k3s":
        # onto a reset cluster: deleted and created anew (another token and CA); the bundle's token
        # decrypts the snapshot's bootstrap data, the old CAs come back, the other servers and the
        # agents re-join with the original token
        old_token = tb.run_on(m0, "cat /var/lib/rancher/k3s/server/token").stdout.strip()
        run_sealer(home, "delete", "--all", "--cluster", CLUSTER, "-y", timeout=900)
        prepare_hosts(tb, [*hosts, *spare], img)
        run_sealer(home, "run", "-f", str(cf), timeout=1500)
        from lightkube import ApiError

        assert tb.run_on(m0, "cat /var/lib/rancher/k3s/server/token").stdout.strip() != old_token
        with pytest.raises(ApiError):
            _kube(home).get(ConfigMap, "backup-probe", namespace="default")
        _kube(home).create(_config_map("after-backup", "new-cluster"))
        # killed once master0 runs with the backup's token (its token now compares equal to the
        # bundle's): the resumed run keeps to the path decided before, so the agents re-join
        args = ["etcd", "restore", str(snapshot), "--cluster", CLUSTER, "-y"]
        _killed_at(home, args, f"join@{workers[0].ip}", tmp_path / "paused")
        onto = run_sealer(home, *args, timeout=1500)
        assert "resuming operation" in onto.stderr, onto.stdout + onto.stderr
        assert "restoring with it" in onto.stdout + onto.stderr, onto.stdout + onto.stderr
        assert f"cluster {CLUSTER} restored from {snapshot}" in onto.stdout, onto.stdout + onto.stderr
        _assert_restored(home, hosts)  # the spare's Node and node-password Secret are gone
        _assert_as_clusterfile(home, tb, masters, workers)
        for h in hosts:  # every node runs with the original cluster token now
            f = AGENT_ENV if h not in masters else "/etc/rancher/k3s/sealer-token"
            assert old_token.rsplit(":", 1)[1] in tb.run_on(h, f"cat {f}").stdout, h.name
        assert tb.run_on(m0, "test -e /var/lib/sealer/restore-work/k3s/token", check=False).returncode != 0
        # a later scale-up joins with the restored token
        up = run_sealer(home, "scale-up", "-n", spare[0].ip, "--cluster", CLUSTER, timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        _assert_restored(home, [*hosts, *spare])
    if runtime == "k0s":
        # onto a reset cluster: everything deleted, the cluster created anew (another CA), restored:
        # the archive brings the old CA back, so the workers re-join and the kubeconfig is refetched
        run_sealer(home, "delete", "--all", "--cluster", CLUSTER, "-y", timeout=900)
        prepare_hosts(tb, hosts, img)
        run_sealer(home, "run", "-f", str(cf), timeout=1500)
        from lightkube import ApiError

        with pytest.raises(ApiError):
            _kube(home).get(ConfigMap, "backup-probe", namespace="default")
        _kube(home).create(_config_map("after-backup", "new-cluster"))
        onto = run_sealer(home, "etcd", "restore", str(snapshot), "--cluster", CLUSTER, "-y", timeout=1500)
        assert "workers re-join" in onto.stdout + onto.stderr, onto.stdout + onto.stderr
        _assert_restored(home, hosts)
        _assert_as_clusterfile(home, tb, masters, workers)
