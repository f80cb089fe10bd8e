"""`sealer run` end to end for each runtime from one parametrised suite: a ClusterImage built by
images/<runtime>/build.sh (stand-in runtime binary, real containerd, real registry, haproxy bundled
for the node-local API balancer) onto 1 master + 2 nodes, and 3 masters + 2 nodes (HA) where
stopping master0 leaves the API reachable from every worker through its local balancer.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.doubles.build import build_executable
from tests.e2e.day2 import kubelet_get_command
from tests.e2e.images import (
    HELLO_REPO,
    HELLO_TAG,
    SEALER,
    run_sealer,
    sealer_env,
)
from tests.e2e.runtime_images import RuntimeImage, prepare_hosts

pytestmark = [pytest.mark.e2e, pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(2400)]

CLUSTER = "rt"


# A user kubeadm document: its podSubnet and extra apiserver argument must reach kubeadm.
USER_KUBEADM = {
    "apiVersion": "kubeadm.k8s.io/v1beta3",
    "kind": "ClusterConfiguration",
    "networking": {"podSubnet": "10.123.0.0/16"},
    "apiServer": {"extraArgs": {"v": "3"}},
}


def clusterfile(
    image: str, key: Path, masters: list[str], workers: list[str], env: tuple[str, ...] = ()
) -> str:
    doc = {
        "apiVersion": "sealer.io/v2",
        "kind": "Cluster",
        "metadata": {"name": CLUSTER},
        "spec": {
            "image": image,
            "ssh": {"pk": str(key), "user": "root"},
            "env": list(env),
            "hosts": [
                {"ips": masters, "roles": ["master"], "labels": {"tier": "control"}},
                {
                    "ips": workers,
                    "roles": ["node"],
                    "labels": {"disk": "ssd"},
                    "taints": ["dedicated=e2e:NoSchedule"],
                },
            ],
        },
    }
    return yaml.safe_dump_all([doc, USER_KUBEADM], sort_keys=False)


def _listen(tb, h, port: int) -> str:  # type: ignore[no-untyped-def]
    pid = tb.run_on(
        h, f"setsid python3 -m http.server --bind 0.0.0.0 {port} >/dev/null 2>&1 & echo $!"
    ).stdout.strip()
    for _ in range(100):
        if tb.run_on(h, f"ss -Hltn 'sport = :{port}' | grep -q LISTEN", check=False).returncode == 0:
            return pid
        time.sleep(0.1)
    raise AssertionError(f"{h.name}: nothing listens on {port}")


def _refused_then_resumed(tb, img: RuntimeImage, home: Path, cf: Path, master, worker) -> None:  # type: ignore[no-untyped-def]
    """The runtime's own pre-flight (ports only it needs; for kubeadm also kernel settings) refuses
    before master0 is touched and names every bad host; once fixed, the same command finishes."""
    port = 9443 if img.runtime == "k0s" else 10259  # the k0s API; kube-scheduler (kubeadm)
    pid = _listen(tb, master, port)
    if img.runtime == "kubernetes":
        subprocess.run(
            ["ip", "netns", "exec", worker.netns, "sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True
        )
    done = subprocess.run(
        [str(SEALER), "run", "-f", str(cf)], env=sealer_env(home), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"{master.ip}: port" in done.stderr and str(port) in done.stderr, done.stderr
    if img.runtime == "kubernetes":
        assert f"{worker.ip}: sysctl net.ipv4.ip_forward cannot be set to 1" in done.stderr, done.stderr
        subprocess.run(
            ["ip", "netns", "exec", worker.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True
        )
    first = LEFTOVERS[img.runtime][0]  # /etc/k0s, /etc/kubernetes: the runtime did not start
    assert tb.run_on(master, f"test -e {first}", check=False).returncode != 0, f"{first} exists"
    tb.run_on(master, f"kill {pid}")


def _assert_cluster(tb, img: RuntimeImage, home: Path, masters, workers) -> None:  # type: ignore[no-untyped-def]
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import ConfigMap, Node

    admin = home / CLUSTER / "admin.conf"
    assert admin.stat().st_mode & 0o777 == 0o600
    kube = Client(KubeConfig.from_file(admin))
    assert kube.config.cluster.server == f"https://{masters[0].ip}:6443"
    nodes = {n.metadata.name: n for n in kube.list(Node)}
    assert set(nodes) == {h.name for h in (*masters, *workers)}, nodes.keys()
    for node in nodes.values():
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True", node.metadata.name
    for m in masters:
        assert nodes[m.name].metadata.labels["tier"] == "control"
    for w in workers:
        assert nodes[w.name].metadata.labels["disk"] == "ssd"
        taints = [(t.key, t.value, t.effect) for t in nodes[w.name].spec.taints or []]
        assert ("dedicated", "e2e", "NoSchedule") in taints
    demo = kube.get(ConfigMap, "sealer-e2e-demo", namespace="default")
    assert demo.data == {"launched": "by-sealer-run"}
    # offline: every node's real containerd pulls an image that exists only in the ClusterImage,
    # through the mirror on master0, with the hosts.toml files sealer wrote
    for h in (*masters, *workers):
        for ref in (f"sea.hub:5000/{HELLO_REPO}:{HELLO_TAG}", f"docker.io/{HELLO_REPO}:{HELLO_TAG}"):
            pulled = tb.run_on(
                h, f"{img.ctr} images pull --hosts-dir {img.certs_d} {ref}", check=False, timeout=120
            )
            assert pulled.returncode == 0, f"{h.name} {ref}: {pulled.stdout}{pulled.stderr}"


# What the runtime leaves on a host: none of it may survive a reset.
LEFTOVERS = {
    "k3s": ("/etc/rancher/k3s", "/var/lib/rancher/k3s", "/usr/local/bin/k3s"),
    "k0s": (
        "/etc/k0s",
        "/var/lib/k0s",
        "/run/k0s",
        "/usr/local/bin/k0s",
        "/etc/systemd/system/k0scontroller.service",
        "/etc/systemd/system/k0sworker.service",
    ),
    "kubernetes": (
        "/etc/kubernetes",
        "/var/lib/kubelet",
        "/var/lib/etcd",
        "/etc/containerd",
        "/usr/local/bin/kubeadm",
        "/usr/local/bin/kubelet",
        "/usr/local/bin/containerd",
        "/etc/systemd/system/kubelet.service",
        "/etc/systemd/system/containerd.service",
    ),
}
LB_LEFTOVERS = (
    "/etc/sealer/apiserver-lb",
    "/usr/local/lib/sealer/haproxy",
    "/etc/systemd/system/sealer-apiserver-lb.service",
    "/etc/sealer/apiserver-vip",
    "/usr/local/lib/sealer/keepalived",
    "/etc/systemd/system/sealer-apiserver-vip.service",
)


def _assert_clean(tb, img: RuntimeImage, h) -> None:  # type: ignore[no-untyped-def]
    for path in (*LEFTOVERS[img.runtime], *LB_LEFTOVERS):
        assert tb.run_on(h, f"test -e {path}", check=False).returncode != 0, f"{h.name}: {path} left behind"
    procs = tb.run_on(h, "ps -eo args", check=False).stdout
    for name in ("kubelet", "k0s ", "haproxy", "keepalived", "containerd --config"):
        assert name not in procs, f"{h.name}: a {name.strip()} process survived the reset:\n{procs}"


def _delete_and_check_clean(tb, img: RuntimeImage, home: Path, masters, workers) -> None:  # type: ignore[no-untyped-def]
    """`sealer delete -n` one worker (drained, Node deleted, host reset), then `delete --all`."""
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import Node

    kube = Client(KubeConfig.from_file(home / CLUSTER / "admin.conf"))
    gone = workers[-1]
    run_sealer(home, "delete", "-n", gone.ip, "--cluster", CLUSTER, "-y", timeout=600)
    assert gone.name not in {n.metadata.name for n in kube.list(Node)}
    _assert_clean(tb, img, gone)
    run_sealer(home, "delete", "--all", "--cluster", CLUSTER, "-y", timeout=600)
    for h in (*masters, *workers[:-1]):
        _assert_clean(tb, img, h)


def _probe_through_lb(
    tb, worker, kubelet_conf: str, address: str = "127.0.0.1"
) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    command = kubelet_get_command(kubelet_conf, "/version", address)
    return tb.run_on(worker, command, check=False, timeout=60)


def _probe_until_ok(
    tb, worker, kubelet_conf: str, address: str = "127.0.0.1"
) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    """Failover takes a few health checks (haproxy: 2 x 2 s; VRRP: 3 adverts): retry up to a minute."""
    deadline = time.monotonic() + 60
    while True:
        probe = _probe_through_lb(tb, worker, kubelet_conf, address)
        if probe.returncode == 0 or time.monotonic() > deadline:
            return probe
        time.sleep(1)


# The next release each runtime's stand-in binaries are stamped with for the upgrade check (kubeadm:
# one minor up, its skew limit).
NEXT_RELEASE = {
    "k0s": {"k0s": "v1.31.1+k0s.0"},
    "kubernetes": {"kubeadm": "v1.32.0", "kubelet": "v1.32.0"},
}


def _upgrade_and_check(tb, img: RuntimeImage, home: Path, work: Path, hosts) -> None:  # type: ignore[no-untyped-def]
    """`sealer upgrade` to the same app image with the runtime's binaries one release newer (and the
    version label saying so): every node reports the new version, the hosts run the new binaries,
    and going back is refused."""
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import Node

    ctx = work / "next-release"
    ctx.mkdir()
    binaries = NEXT_RELEASE[img.runtime]
    for name, version in binaries.items():
        build_executable(name, ctx / name, version=version)
    target = next(iter(binaries.values()))
    copies = "".join(f"COPY {name} bin/{name}\n" for name in binaries)
    (ctx / "Kubefile").write_text(
        f'FROM {img.image}\n{copies}LABEL cluster.alpha.sealer.io/cluster-runtime-version="{target}"\n'
    )
    new_image = f"{img.image.rsplit(':', 1)[0]}:next"
    run_sealer(home, "build", "-t", new_image, str(ctx))
    upgraded = run_sealer(home, "upgrade", new_image, "--cluster", CLUSTER, "-y", timeout=1500)
    assert "update done" in upgraded.stdout, upgraded.stdout + upgraded.stderr
    kube = Client(KubeConfig.from_file(home / CLUSTER / "admin.conf"))
    versions = {n.metadata.name: n.status.nodeInfo.kubeletVersion for n in kube.list(Node)}
    assert set(versions.values()) == {target}, versions
    binary = next(iter(binaries))
    for h in hosts:
        shown = tb.run_on(h, f"/usr/local/bin/{binary} version 2>&1", check=False).stdout
        assert target in shown, f"{h.name}: {shown}"
    down = run_sealer(home, "upgrade", img.image, "--cluster", CLUSTER, "-y", check=False)
    assert down.returncode == 1 and "downgrades are not supported" in down.stderr, down.stdout + down.stderr


# (runtime, masters, lab, Clusterfile env): workers get the node-local balancer by default (k0s
# 1m2n); the kubernetes one names it explicitly (APIServerLB=haproxy), which must mean the same.
SCENARIOS = [
    pytest.param("k3s", 3, "k3h", ("APIServerVIP=auto",), id="k3s-3m2n-ha-vip"),
    pytest.param("k0s", 1, "k0", (), id="k0s-1m2n"),
    pytest.param("k0s", 3, "k0h", ("APIServerVIP=auto",), id="k0s-3m2n-ha-vip"),
    pytest.param("kubernetes", 1, "ku", ("APIServerLB=haproxy",), id="kubernetes-1m2n-lb"),
    pytest.param("kubernetes", 3, "kuh", ("APIServerVIP=auto",), id="kubernetes-3m2n-ha-vip"),
]
KUBELET_CONF = {
    "k3s": "/var/lib/rancher/k3s/agent/kubelet.kubeconfig",
    "k0s": "/var/lib/k0s/kubelet.conf",
    "kubernetes": "/etc/kubernetes/kubelet.conf",
}
STATUS = {
    "k3s": "systemctl is-active --quiet k3s-agent.service",
    "k0s": "/usr/local/bin/k0s status",
    "kubernetes": "systemctl is-active --quiet kubelet.service",
}


@pytest.mark.parametrize(("runtime", "n_masters", "lab", "env"), SCENARIOS)
def test_run_runtime(
    runtime: str,
    n_masters: int,
    lab: str,
    env: tuple[str, ...],
    request: pytest.FixtureRequest,
    testbed_factory,
    tmp_path: Path,
) -> None:
    img: RuntimeImage = request.getfixturevalue(f"{runtime}_image")
    home = tmp_path / "sealer-home"
    shutil.copytree(img.home, home, symlinks=True)
    tb = testbed_factory(nested=True, lab=lab)
    hosts = tb.up(n_masters + 2)
    masters, workers = hosts[:n_masters], hosts[n_masters:]
    prepare_hosts(tb, hosts, img)
    # a free address of the lab's subnet for the VIP
    vip = masters[0].ip.rsplit(".", 1)[0] + ".200"
    env = tuple(f"APIServerVIP={vip}" if e == "APIServerVIP=auto" else e for e in env)
    cf = tmp_path / "Clusterfile"
    cf.write_text(clusterfile(img.image, tb.key_path, [m.ip for m in masters], [w.ip for w in workers], env))

    if n_masters == 1:
        _refused_then_resumed(tb, img, home, cf, masters[0], workers[-1])
    # the 5-host scenarios send the rootfs host to host (issue 10); the others from the operator
    how = ("--distributor", "fanout") if n_masters > 1 else ()
    done = run_sealer(home, "run", "-f", str(cf), *how, timeout=1500)
    assert f"cluster {CLUSTER} is up: {n_masters + 2} node(s)" in done.stdout, done.stdout + done.stderr
    if how:
        assert f"rootfs sent host to host (fan-out) to {n_masters + 2}/{n_masters + 2} host(s)" in (
            done.stdout + done.stderr
        ), done.stdout + done.stderr
    _assert_cluster(tb, img, home, masters, workers)

    kubelet_conf = KUBELET_CONF[runtime]
    if runtime == "kubernetes":
        # the user's kubeadm document reached kubeadm: in the config it was given, in what it stored
        # in the cluster, and in the API server it started
        given = tb.run_on(masters[0], "cat /etc/kubernetes/kubeadm.yaml").stdout
        assert "podSubnet: 10.123.0.0/16" in given, given
        manifest = tb.run_on(masters[0], "cat /etc/kubernetes/manifests/kube-apiserver.yaml").stdout
        assert "--v=3" in manifest, manifest
        from lightkube import Client, KubeConfig
        from lightkube.resources.core_v1 import ConfigMap

        kube = Client(KubeConfig.from_file(home / CLUSTER / "admin.conf"))
        stored = kube.get(ConfigMap, "kubeadm-config", namespace="kube-system").data["ClusterConfiguration"]
        assert "10.123.0.0/16" in stored, stored
    # every worker's kubelet goes through haproxy on 127.0.0.1:6443 to all masters (the default
    # with one master too, so it can become three without re-pointing any worker)
    for w in workers:
        cfg = tb.run_on(w, "cat /etc/sealer/apiserver-lb/haproxy.cfg").stdout
        for m in masters:
            assert f"{m.ip}:6443 check" in cfg, cfg
        probe = _probe_through_lb(tb, w, kubelet_conf)
        assert probe.returncode == 0, probe.stdout + probe.stderr
        assert probe.stdout.splitlines()[0] == "https://127.0.0.1:6443", probe.stdout
    if n_masters == 1:
        _upgrade_and_check(tb, img, home, tmp_path, [*masters, *workers])
        _delete_and_check_clean(tb, img, home, masters, workers)
        return
    with_vip = f"APIServerVIP={vip}" in env
    if with_vip:
        # exactly one master holds the VIP, and the API answers on it (its certificate covers it)
        holders = [m for m in masters if vip in tb.run_on(m, "ip -o -4 addr show").stdout]
        assert len(holders) == 1, [m.name for m in holders]
        probe = _probe_until_ok(tb, workers[0], kubelet_conf, vip)
        assert probe.returncode == 0, probe.stdout + probe.stderr
    # What the rest proves, for every runtime: with master0 gone, each worker's balancer (and the
    # VIP) routes to a live API server that presents a certificate the kubelet's CA verifies and
    # accepts the kubelet's client credentials (/version needs both). Resource reads are not
    # asserted: the stand-ins' other servers forward them to master0's datastore and answer 503
    # while it is down (tests/doubles/README.md, "HA model"); datastore failover is etcd's job.
    tb.stop_host(masters[0])
    for w in workers:
        probe = _probe_until_ok(tb, w, kubelet_conf)
        assert probe.returncode == 0, f"{w.name}: API not reachable through the balancer: {probe.stderr}"
        # and the worker keeps working: its runtime unit and containerd still answer
        assert tb.run_on(w, STATUS[runtime], check=False).returncode == 0
        assert tb.run_on(w, f"{img.ctr} images ls -q", check=False).returncode == 0
    if with_vip:
        # the VIP moved to a surviving master and still serves the API
        probe = _probe_until_ok(tb, workers[0], kubelet_conf, vip)
        assert probe.returncode == 0, f"VIP {vip} did not move: {probe.stderr}"
        holders = [m for m in masters[1:] if vip in tb.run_on(m, "ip -o -4 addr show").stdout]
        assert len(holders) == 1, [m.name for m in holders]


def test_k0s_plain_controllers_are_not_nodes(
    k0s_image: RuntimeImage, testbed_factory, tmp_path: Path
) -> None:
    """K0sControllerWorker=false: the controller is no Node, and the run's readiness, labels and taints
    cover only the hosts that are (before the engine knew, it waited for the controller forever)."""
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import Node

    home = tmp_path / "sealer-home"
    shutil.copytree(k0s_image.home, home, symlinks=True)
    tb = testbed_factory(nested=True, lab="k0p")
    master, worker = tb.up(2)
    prepare_hosts(tb, [master, worker], k0s_image)
    doc = yaml.safe_load(
        clusterfile(k0s_image.image, tb.key_path, [master.ip], [worker.ip]).split("\n---\n")[0]
    )
    doc["spec"]["env"] = ["K0sControllerWorker=false"]
    cf = tmp_path / "Clusterfile"
    cf.write_text(yaml.safe_dump(doc, sort_keys=False))
    run_sealer(home, "run", "-f", str(cf), timeout=1500)
    kube = Client(KubeConfig.from_file(home / CLUSTER / "admin.conf"))
    nodes = {n.metadata.name: n for n in kube.list(Node)}
    assert set(nodes) == {worker.name}, nodes.keys()
    assert nodes[worker.name].metadata.labels["disk"] == "ssd"
    status = tb.run_on(master, "/usr/local/bin/k0s status").stdout
    assert "Role: controller" in status and "Workloads: false" in status, status
