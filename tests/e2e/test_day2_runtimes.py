"""Day 2 end to end for the k0s and kubernetes (kubeadm) runtimes on the test bed (stand-in k0s /
kubeadm + kubelet, real containerd, registry, haproxy and sshd), the story test_day2_k3s.py tells for
k3s: 1 master + 1 worker becomes 3 + 3 (HA promotion through `apply`, a worker through `scale-up`),
shrinks to 3 + 1 (drained, deleted, reset and clean), is upgraded to a newer stand-in release while a
worker keeps reading the API through its own node-local balancer, loses a master it cannot reach
(its etcd member is taken out from master0: k0s's `k0s etcd leave --peer-address`, kubeadm's with the
image's etcdctl), loses one more (its member leaves first), takes that host back as a master, and
is deleted with every host left clean. The unreachable master goes while three are members: etcd
removes a member only with a quorum, which two members with one of them dead no longer have. k0s
also runs with plain controllers (`K0sControllerWorker=false`: controllers are no Nodes) through the
whole story.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import day2
from tests.e2e.images import run_sealer
from tests.e2e.runtime_images import RuntimeImage, prepare_hosts
from tests.e2e.test_run_runtimes import KUBELET_CONF, NEXT_RELEASE

pytestmark = [pytest.mark.e2e, pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(3600)]


CLUSTER = "d2r"
# another lab id lets a second copy run beside a full suite (the scenarios run one after another)
LAB = os.environ.get("SEALER_E2E_DAY2R_LAB")
# (runtime, lab, Clusterfile env)
SCENARIOS = [
    pytest.param("k0s", LAB or "dk0", (), id="k0s"),
    pytest.param("k0s", LAB or "dk0", ("K0sControllerWorker=false",), id="k0s-plain-controllers"),
    pytest.param("kubernetes", LAB or "dku", (), id="kubernetes"),
]
ETCD_PKI = "/etc/kubernetes/pki/etcd"
# what each host runs after the upgrade: every command must print the new release
BINARY_VERSION = {
    "k0s": ("/usr/local/bin/k0s version",),
    "kubernetes": ("/usr/local/bin/kubelet --version", "/usr/local/bin/kubeadm version -o short"),
}


def etcd_members(tb: Any, runtime: str, master0: Any) -> set[str]:
    """The member IPs of the cluster's etcd as its own tool shows them on master0: `k0s etcd
    member-list`, or `etcdctl member list` (the image's, with kubeadm's etcd client certificate)."""
    if runtime == "k0s":
        out = tb.run_on(master0, "/usr/local/bin/k0s etcd member-list").stdout
        members = json.loads(out)["members"]
        return {url.split("//")[1].split(":")[0] for url in members.values()}
    etcdctl = f"/var/lib/sealer/data/{CLUSTER}/rootfs/bin/etcdctl"
    out = tb.run_on(
        master0,
        f"ETCDCTL_API=3 {etcdctl} --endpoints=https://127.0.0.1:2379 --cacert={ETCD_PKI}/ca.crt "
        f"--cert={ETCD_PKI}/healthcheck-client.crt --key={ETCD_PKI}/healthcheck-client.key "
        "member list -w json",
    ).stdout
    listed = json.loads(out).get("members", [])
    return {url.split("//")[1].split(":")[0] for m in listed for url in m["peerURLs"]}


@pytest.mark.parametrize(("runtime", "lab", "env"), SCENARIOS)
def test_day2_scale_ha_shrink_upgrade_delete(
    runtime: str,
    lab: str,
    env: tuple[str, ...],
    request: pytest.FixtureRequest,
    testbed_factory: Any,
    tmp_path: Path,
) -> None:
    img: RuntimeImage = request.getfixturevalue(f"{runtime}_image")
    home = tmp_path / "sealer-home"
    shutil.copytree(img.home, home, symlinks=True)
    tb = testbed_factory(nested=True, lab=lab)
    hosts = tb.up(6)
    h1, h2, h3, h4, h5, h6 = hosts
    prepare_hosts(tb, hosts, img)
    key = tb.key_path
    cf = tmp_path / "Clusterfile"
    # plain k0s controllers are no Nodes: only workers show up in the API
    controllers_are_nodes = "K0sControllerWorker=false" not in env
    label = runtime if controllers_are_nodes else f"{runtime} (plain controllers)"

    def node_ips(masters: list[Any], workers: list[Any]) -> set[str]:
        return {h.ip for h in (*(masters if controllers_are_nodes else ()), *workers)}

    def write(masters: list[Any], workers: list[Any], image: str = img.image) -> None:
        ips = [m.ip for m in masters], [w.ip for w in workers]
        cf.write_text(day2.clusterfile(image, key, *ips, CLUSTER, env=env))

    def balanced(worker: Any, masters: list[Any]) -> None:
        cfg = tb.run_on(worker, "cat /etc/sealer/apiserver-lb/haproxy.cfg").stdout
        servers = [ln.split() for ln in cfg.splitlines() if ln.strip().startswith("server ")]
        backends = {words[2].split(":")[0] for words in servers}
        assert backends == {m.ip for m in masters}, f"{worker.name}: {cfg}"
        conf = tb.run_on(worker, f"grep 'server:' {KUBELET_CONF[runtime]}").stdout
        assert "https://127.0.0.1:6443" in conf, f"{worker.name}: the kubelet bypasses the balancer: {conf}"

    # 1. day 1: one master, one worker. The worker goes through its node-local balancer already.
    write([h1], [h2])
    done = run_sealer(home, "run", "-f", str(cf), timeout=1500)
    day2.report(f"{label} run 1+1", done.stdout)
    assert set(day2.nodes_by_ip(home, CLUSTER)) == node_ips([h1], [h2])
    balanced(h2, [h1])

    # 2. one master becomes three and a worker joins, through apply (asks nothing: nothing is removed)
    write([h1, h3, h4], [h2, h5])
    dry = run_sealer(home, "apply", "-f", str(cf), "--dry-run", "-o", "json")
    kinds = [a["kind"] for a in json.loads(dry.stdout)["actions"]]
    assert kinds == ["join-master", "join-master", "join-workers"], kinds
    grown = run_sealer(home, "apply", "-f", str(cf), timeout=1500)
    assert "update done" in grown.stdout, grown.stdout + grown.stderr
    day2.report(f"{label} 1+1 -> 3+2 (apply)", grown.stdout)
    nodes = day2.nodes_by_ip(home, CLUSTER)
    assert set(nodes) == node_ips([h1, h3, h4], [h2, h5])
    assert all(day2.ready(n) for n in nodes.values())
    if controllers_are_nodes:
        for h in (h3, h4):
            labels = nodes[h.ip].metadata.labels
            assert "node-role.kubernetes.io/control-plane" in labels and labels["tier"] == "control", labels
    taints = [(t.key, t.effect) for t in nodes[h5.ip].spec.taints or []]
    assert ("dedicated", "NoSchedule") in taints and nodes[h5.ip].metadata.labels["disk"] == "ssd"
    # the worker joined to one master now balances over three, without being re-pointed
    for w in (h2, h5):
        balanced(w, [h1, h3, h4])
    assert etcd_members(tb, runtime, h1) == {h1.ip, h3.ip, h4.ip}
    # a new master serves the API itself with a certificate for its own address
    admin = yaml.safe_load((home / CLUSTER / "admin.conf").read_text())
    admin["clusters"][0]["cluster"]["server"] = f"https://{h3.ip}:6443"
    alt = tmp_path / "admin-h3.conf"
    alt.write_text(yaml.safe_dump(admin))
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import Node

    assert {n.metadata.name for n in Client(KubeConfig.from_file(alt)).list(Node)} == {
        n.metadata.name for n in nodes.values()
    }

    # 3. scale-up edits the last-applied Clusterfile and applies it
    up = run_sealer(home, "scale-up", "-n", h6.ip, "--cluster", CLUSTER, timeout=1500)
    assert "update done" in up.stdout, up.stdout + up.stderr
    day2.report(f"{label} 3+2 -> 3+3 (scale-up)", up.stdout)
    assert set(day2.nodes_by_ip(home, CLUSTER)) == node_ips([h1, h3, h4], [h2, h5, h6])
    balanced(h6, [h1, h3, h4])

    # 4. 3 + 3 -> 3 + 1: h5 and h6 are drained, deleted, reset and clean
    shrunk = run_sealer(home, "delete", "-n", f"{h5.ip},{h6.ip}", "--cluster", CLUSTER, "-y", timeout=1500)
    assert "update done" in shrunk.stdout, shrunk.stdout + shrunk.stderr
    day2.report(f"{label} 3+3 -> 3+1 (delete -n)", shrunk.stdout)
    assert set(day2.nodes_by_ip(home, CLUSTER)) == node_ips([h1, h3, h4], [h2])
    for h in (h5, h6):
        day2.assert_clean(tb, h, CLUSTER, runtime)
    last = (home / CLUSTER / "Clusterfile").read_text()
    assert h5.ip not in last and h6.ip not in last

    # 5. upgrade to a newer stand-in: masters one at a time, then the worker, while the worker reads
    # the Node list through its own balancer (its kubelet's kubeconfig) twice a second
    binaries = NEXT_RELEASE[runtime]
    target = next(iter(binaries.values()))
    new_image = day2.build_upgrade_image(
        home, img.image, binaries, f"{img.image.rsplit(':', 1)[0]}:day2-next", tmp_path
    )
    with day2.ApiProbe(tb, h2, day2.node_read_command(KUBELET_CONF[runtime])) as probe:
        upgraded = run_sealer(home, "upgrade", new_image, "--cluster", CLUSTER, "-y", timeout=1800)
        time.sleep(1.5)  # not a threshold: lets the probe ask once more after the upgrade
    assert "update done" in upgraded.stdout, upgraded.stdout + upgraded.stderr
    day2.report(f"{label} upgrade 3+1", upgraded.stdout)
    nodes = day2.nodes_by_ip(home, CLUSTER)
    assert {ip: n.status.nodeInfo.kubeletVersion for ip, n in nodes.items()} == {
        ip: target for ip in node_ips([h1, h3, h4], [h2])
    }
    for h in (h1, h3, h4, h2):
        for cmd in BINARY_VERSION[runtime]:
            shown = tb.run_on(h, cmd).stdout
            assert target in shown, f"{h.name} {cmd}: {shown}"
    print(f"\n  {label}: API read from {h2.ip} through its balancer during the upgrade: {probe.summary()}")
    probe.assert_served_throughout()
    assert day2.last_op_steps(home, CLUSTER, "upgrade") == [h1.ip, h3.ip, h4.ip, h2.ip]
    assert day2.last_op_steps(home, CLUSTER, "drain") == [h2.ip]  # workers drained, masters not

    # 5b. a master that cannot be reached leaves (3 + 1 -> 2 + 1): out of the API, its etcd member
    # taken out from master0 (the two left answer: a quorum), the worker's balancer forgets it
    tb.stop_host(h3)
    lost = run_sealer(home, "delete", "-m", h3.ip, "--cluster", CLUSTER, "-y", timeout=1500)
    said = lost.stdout + lost.stderr
    assert "update done" in lost.stdout and f"{h3.ip} could not be reached" in said, said
    day2.report(f"{label} 3+1 -> 2+1 (delete -m, unreachable)", lost.stdout)
    assert set(day2.nodes_by_ip(home, CLUSTER)) == node_ips([h1, h4], [h2])
    assert etcd_members(tb, runtime, h1) == {h1.ip, h4.ip}
    assert day2.last_op_steps(home, CLUSTER, "etcd-forget") == [h3.ip]
    # removed, not merely warned about
    etcd_warnings = [ln for ln in said.splitlines() if "warning" in ln.lower() and "etcd" in ln]
    assert not etcd_warnings and "could not be removed" not in said, said
    balanced(h2, [h1, h4])

    # 5c. a reachable master leaves (2 + 1 -> 1 + 1): its etcd member goes first (k0s etcd leave /
    # kubeadm reset, checked from master0), then the host is reset; the worker's balancer forgets it
    left = run_sealer(home, "delete", "-m", h4.ip, "--cluster", CLUSTER, "-y", timeout=1500)
    assert "update done" in left.stdout, left.stdout + left.stderr
    day2.report(f"{label} 2+1 -> 1+1 (delete -m)", left.stdout)
    assert set(day2.nodes_by_ip(home, CLUSTER)) == node_ips([h1], [h2])
    assert etcd_members(tb, runtime, h1) == {h1.ip}
    day2.assert_clean(tb, h4, CLUSTER, runtime)
    balanced(h2, [h1])
    assert all(day2.ready(n) for n in day2.nodes_by_ip(home, CLUSTER).values())

    # 5d. a master joins again (1 + 1 -> 2 + 1): h4, reset above, joins the etcd membership the two
    # removals left behind (a member left over from either would be in its initial cluster)
    write([h1, h4], [h2], image=new_image)
    rejoined = run_sealer(home, "apply", "-f", str(cf), timeout=1500)
    assert "update done" in rejoined.stdout, rejoined.stdout + rejoined.stderr
    day2.report(f"{label} 1+1 -> 2+1 (apply, a master again)", rejoined.stdout)
    assert set(day2.nodes_by_ip(home, CLUSTER)) == node_ips([h1, h4], [h2])
    assert etcd_members(tb, runtime, h1) == {h1.ip, h4.ip}
    balanced(h2, [h1, h4])
    assert all(day2.ready(n) for n in day2.nodes_by_ip(home, CLUSTER).values())

    # 6. delete --all --prune: every host clean, the state gone here (journal kept for status)
    gone = run_sealer(home, "delete", "--all", "--prune", "--cluster", CLUSTER, "--force", timeout=1500)
    day2.report(f"{label} delete --all", gone.stdout)
    for h in (h1, h2, h4, h5, h6):  # h3 is down
        day2.assert_clean(tb, h, CLUSTER, runtime)
        assert tb.run_on(h, "systemctl is-active sealer-registry", check=False).stdout.strip() != "active"
        assert tb.run_on(h, "ls -A /var/lib/sealer/data 2>/dev/null; true").stdout.strip() == ""
    assert not (home / CLUSTER / "Clusterfile").exists() and not (home / CLUSTER / "admin.conf").exists()
    status = json.loads(run_sealer(home, "status", "--cluster", CLUSTER, "-o", "json").stdout)
    assert status["deleted"] and status["lastOperation"]["kind"] == "delete"
