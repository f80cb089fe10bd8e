"""Shared pieces of the day-2 end-to-end tests (test_day2_k3s.py, test_day2_runtimes.py): the
Clusterfile they grow and shrink, reading Nodes and the journal, the per-operation timing line, a
probe that keeps asking the API from a worker during an upgrade, the newer stand-in image an upgrade
moves to, and the check that a reset host carries nothing of the cluster any more (per runtime).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from tests.doubles.build import build_executable
from tests.e2e.images import run_sealer


def clusterfile(
    image: str,
    key: Path,
    masters: list[str],
    workers: list[str],
    name: str,
    *,
    worker_labels: dict[str, str] | None = None,
    worker_taints: list[str] | None = None,
    aliases: dict[str, list[str]] | None = None,
    env: Sequence[str] = (),
) -> str:
    hosts: list[dict[str, Any]] = [
        {"ips": masters, "roles": ["master"], "labels": {"tier": "control"}},
    ]
    if workers:
        hosts.append(
            {
                "ips": workers,
                "roles": ["node"],
                "labels": worker_labels if worker_labels is not None else {"disk": "ssd"},
                "taints": worker_taints if worker_taints is not None else ["dedicated=e2e:NoSchedule"],
            }
        )
    spec: dict[str, Any] = {"image": image, "ssh": {"pk": str(key), "user": "root"}, "hosts": hosts}
    if env:
        spec["env"] = list(env)
    if aliases:
        spec["hostAliases"] = [{"ip": ip, "hostnames": names} for ip, names in aliases.items()]
    doc = {"apiVersion": "sealer.io/v2", "kind": "Cluster", "metadata": {"name": name}, "spec": spec}
    return yaml.safe_dump(doc, sort_keys=False)


def kube_client(home: Path, cluster: str) -> Any:
    from lightkube import Client, KubeConfig

    return Client(KubeConfig.from_file(home / cluster / "admin.conf"))


def nodes_by_ip(home: Path, cluster: str) -> dict[str, Any]:
    from lightkube.resources.core_v1 import Node

    out = {}
    for node in kube_client(home, cluster).list(Node):
        for a in node.status.addresses or []:
            if a.type == "InternalIP":
                out[a.address] = node
    return out


def ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def journal(home: Path, cluster: str) -> list[dict[str, Any]]:
    path = home / cluster / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_no_finished_step_started_again(recs: list[dict[str, Any]]) -> None:
    """The journal's promise after kills and re-runs: a step that finished never starts again."""
    finished: set[tuple[Any, ...]] = set()
    for r in recs:
        if r["type"] != "step":
            continue
        key = (r["op"], r["action"], r["step"], r.get("host"), r.get("digest"))
        if r["status"] == "start":
            assert key not in finished, f"step {key} was started again after it had finished"
        elif r["status"] == "done":
            finished.add(key)


def last_op_steps(home: Path, cluster: str, step: str, status: str = "done") -> list[str]:
    """Hosts of the last operation's `step` records with `status`, in journal order."""
    records = journal(home, cluster)
    op = [r for r in records if r["type"] == "begin"][-1]["op"]
    return [
        r["host"] for r in records if r["op"] == op and r.get("step") == step and r.get("status") == status
    ]


def report(what: str, stdout: str) -> str:
    """Print the operation's own timing line (a figure for people, never asserted on)."""
    took = next((ln for ln in stdout.splitlines() if ln.startswith("took ")), "took ?")
    print(f"\n  {what}: {took}")
    return took


# How a request in flight ends when the API server holding it stops (TLS EOF, reset, closed).
CUT_IN_FLIGHT = ("EOF", "Connection reset", "Remote end closed connection", "connection has been closed")


class ApiProbe:
    """Runs `command` on a worker host twice a second and keeps every answer (ok or not) until
    stopped: the API as that worker reaches it, during an operation."""

    def __init__(self, tb: Any, worker: Any, command: str | list[str]) -> None:
        self.tb, self.worker, self.command = tb, worker, command
        self.results: list[tuple[float, bool, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            done = self.tb.run_on(self.worker, self.command, check=False, timeout=30)
            why = (done.stderr.strip() or done.stdout.strip())[-200:]
            self.results.append((time.monotonic(), done.returncode == 0, why))
            self._stop.wait(0.5)

    @property
    def oks(self) -> list[bool]:
        return [ok for _, ok, _ in self.results]

    @property
    def failures(self) -> list[str]:
        return [why for _, ok, why in self.results if not ok]

    def summary(self) -> str:
        return f"{self.oks.count(True)} answered, {len(self.failures)} not"

    def assert_served_throughout(self) -> None:
        """The API answered every poll but, at most, isolated ones whose connection was cut in flight
        (an API server stopping for its upgrade drops the requests it holds at that instant; a client
        asks again, as client-go does). Never two polls in a row, never an HTTP error (a 503 from a
        server without its datastore), never a refused connection (the worker's balancer away), and
        the last poll answered."""
        oks = self.oks
        assert oks and oks[-1], self.results[-3:]
        assert not any(not a and not b for a, b in pairwise(oks)), (
            f"the API was away for two polls in a row: {self.failures[:5]}"
        )
        cut = [why for why in self.failures if any(w in why for w in CUT_IN_FLIGHT)]
        assert cut == self.failures, f"not a connection cut in flight: {self.failures[:5]}"

    def __enter__(self) -> ApiProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


# What a worker runs to reach the API its own way: python3 (the hosts have it) with the credentials
# of its kubelet's kubeconfig. argv: the kubeconfig, a path, and optionally an address to ask
# instead of the kubeconfig's server (the VIP, a given master). Prints the kubeconfig's server,
# then what answered: /version's gitVersion, or the number of items of a list.
KUBELET_GET = r"""
import base64, json, ssl, sys, tempfile, urllib.request, yaml
kc = yaml.safe_load(open(sys.argv[1]))
cluster, user = kc["clusters"][0]["cluster"], kc["users"][0]["user"]
tmp = tempfile.mkdtemp()
def f(name, key, path_key):
    if key in user or key in cluster:
        data = base64.b64decode((user.get(key) or cluster.get(key)))
        open(f"{tmp}/{name}", "wb").write(data); return f"{tmp}/{name}"
    return user.get(path_key) or cluster.get(path_key)
ctx = ssl.create_default_context(cafile=f("ca", "certificate-authority-data", "certificate-authority"))
ctx.load_cert_chain(f("crt", "client-certificate-data", "client-certificate"),
                    f("key", "client-key-data", "client-key"))
base = f"https://{sys.argv[3]}:6443" if len(sys.argv) > 3 else cluster["server"]
print(cluster["server"])
with urllib.request.urlopen(base + sys.argv[2], context=ctx, timeout=10) as r:
    body = json.loads(r.read())
print(body["gitVersion"] if "gitVersion" in body else len(body["items"]))
"""


def kubelet_get_command(kubelet_conf: str, path: str, address: str | None = None) -> list[str]:
    return ["python3", "-c", KUBELET_GET, kubelet_conf, path, *([address] if address else [])]


def node_read_command(kubelet_conf: str) -> list[str]:
    """The Node list through the worker's own path to the API (its kubeconfig's server: the
    node-local balancer), so every answer crosses the balancer, a live API server and the
    datastore behind it (/version would not)."""
    return kubelet_get_command(kubelet_conf, "/api/v1/nodes")


def build_upgrade_image(home: Path, base: str, binaries: Mapping[str, str], tag: str, work: Path) -> str:
    """`base` with its stand-in runtime binaries stamped as a newer release (and the version label
    saying so), built with `sealer build` like any image derived from a ClusterImage. `binaries`
    maps bin/ names to their version; the label takes the first one's. Returns `tag`."""
    ctx = work / f"upgrade-{tag.replace('/', '_').replace(':', '_')}"
    ctx.mkdir(parents=True)
    for name, version in binaries.items():
        build_executable(name, ctx / name, version=version)
    target = next(iter(binaries.values()))
    copies = "".join(f"COPY {name} bin/{name}\n" for name in binaries)
    (ctx / "Kubefile").write_text(
        f'FROM {base}\n{copies}LABEL cluster.alpha.sealer.io/cluster-runtime-version="{target}"\n'
    )
    run_sealer(home, "build", "-t", tag, str(ctx))
    return tag


# What each runtime leaves on a host while installed: units (name prefixes), processes (pgrep
# commands: -x matches the process name, which for the stand-ins' script binaries is the file's
# name; in -f patterns the [x] keeps pgrep from matching the checking shell) and paths. None of it
# may survive a reset. The node-local balancer and the VIP belong to every runtime.
_LB_UNITS = ("sealer-apiserver",)
_LB_PROCESSES = ("pgrep -a -x haproxy", "pgrep -a -x keepalived")
_LB_PATHS = (
    "/etc/sealer/apiserver-lb",
    "/usr/local/lib/sealer/haproxy",
    "/etc/sealer/apiserver-vip",
    "/usr/local/lib/sealer/keepalived",
)
FOOTPRINT: dict[str, dict[str, tuple[str, ...]]] = {
    "k3s": {
        "units": ("k3s",),
        "processes": ("pgrep -a -x k3s", "pgrep -af 'containerd-shi[m]'", "pgrep -af '[/]run/k3s'"),
        "paths": ("/etc/rancher", "/var/lib/rancher/k3s", "/run/k3s", "/usr/local/bin/k3s"),
    },
    "k0s": {
        "units": ("k0s",),
        "processes": ("pgrep -a -x k0s", "pgrep -af 'containerd-shi[m]'", "pgrep -af '[/]run/k0s'"),
        "paths": (
            "/etc/k0s",
            "/var/lib/k0s",
            "/run/k0s",
            "/usr/local/bin/k0s",
            "/var/lib/kubelet",
            "/etc/sealer/k0s-installed",
        ),
    },
    "kubernetes": {
        "units": ("kubelet", "containerd", "standin-kube"),
        "processes": (
            "pgrep -a -x kubelet",
            "pgrep -af 'kube_apiserver_mai[n]'",  # the stand-in's static-Pod API server
            "pgrep -af 'containerd --confi[g]'",
            "pgrep -af 'containerd-shi[m]'",
        ),
        "paths": (
            "/etc/kubernetes",
            "/var/lib/kubelet",
            "/var/lib/etcd",
            "/etc/containerd",
            "/usr/local/bin/kubeadm",
            "/usr/local/bin/kubelet",
            "/usr/local/bin/containerd",
            "/etc/sealer/kubernetes-installed",
        ),
    },
}


def assert_clean(tb: Any, h: Any, cluster: str, runtime: str = "k3s") -> None:
    """No unit, process or file of the runtime (or of sealer's balancer/VIP) is left on h, no
    sealer data of the cluster, no marker, no /etc/hosts block."""
    fp = FOOTPRINT[runtime]
    units = "|".join((*fp["units"], *_LB_UNITS))
    processes = "; ".join((*fp["processes"], *_LB_PROCESSES))
    paths = " ".join((*fp["paths"], *_LB_PATHS))
    loaded = " ".join(f"'{u}*'" for u in (*fp["units"], *_LB_UNITS))
    checks = {
        "unit files": f"ls /etc/systemd/system | grep -E '^({units})' || true",
        "units loaded": f"systemctl list-units --all --no-legend {loaded} | grep -v 'not-found' || true",
        "processes": f"{processes}; true",
        "files": f"ls -d {paths} 2>/dev/null; true",
        "sealer data": f"ls -d /var/lib/sealer/data/{cluster} /etc/sealer/cluster 2>/dev/null; true",
        "hosts block": f"grep -n 'sealer cluster {cluster}' /etc/hosts || true",
    }
    for what, cmd in checks.items():
        out = tb.run_on(h, cmd).stdout.strip()
        assert out == "", f"{h.name} ({h.ip}) is not clean after {runtime} was removed, {what}:\n{out}"
