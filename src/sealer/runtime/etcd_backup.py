"""Datastore backup and restore for the k0s and kubernetes runtimes (k3s's backup is in k3s.py), each
the way its project documents it, and every runtime's restore as a sequence of steps that a
journaled restore (apply/restore.py) can resume after a kill or a failure:

- k0s: `k0s backup` on master0 (etcd snapshot + pki + k0s.yaml in one archive); restore = stop every
  controller, `k0s reset` + `k0s restore` on master0, start it, then reset and re-join the other
  controllers (k0s's HA restore: one controller restored, the rest join it); workers restart, or
  re-join when the archive carries another cluster CA.
- kubernetes (stacked etcd in static Pods): `etcdctl snapshot save` against https://127.0.0.1:2379
  with the etcd client certificate on master0, bundled with the PKI kubeadm keeps outside etcd (CAs
  with keys, ServiceAccount keys); onto a cluster with another CA (re-created since), every host is
  reset, master0 re-initialised with that PKI and restored alone, the others join; restore onto
  the same cluster = every master's static Pods
  stopped (their manifests moved aside), `etcdutl snapshot restore` of the same snapshot into a new
  data dir on each master with the full member list, the old data dir kept as
  `<data-dir>.sealer-before-restore`, manifests back, kubelets restarted. etcdctl/etcdutl come from
  the ClusterImage's bin/.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from sealer.errors import RuntimeErrorSealer, SealerError
from sealer.infra.shell import quote_path
from sealer.model.cluster import Host
from sealer.runtime import k0s as k0smod
from sealer.runtime import k3s as k3smod
from sealer.runtime.base import RuntimeContext
from sealer.runtime.containerd import last_line, run_checked
from sealer.runtime.k0s import K0sRuntime
from sealer.runtime.k3s import K3sRuntime
from sealer.runtime.kubernetes import KubernetesRuntime

BACKUP_DIR = "/var/lib/sealer/backup"
STOP_TIMEOUT = 120
START_TIMEOUT = 300


async def _sh(ctx: RuntimeContext, host: Host, script: str, timeout: float = 300) -> str:
    return await run_checked(ctx, host, script, timeout=timeout)


# resumable restores --------------------------------------------------------------------------------
Work = Callable[[], Awaitable[str | None]]


class RestoreRun(Protocol):
    """What a restore runs its work through. The journaled one (apply/restore.py) records each
    step and, when the same restore is run again after it was killed or failed, skips the steps
    that finished and redoes the interrupted one, so every step must be safe to redo. Decisions
    taken before anything changed (the backup is of another cluster, the CA before) are
    remembered across such runs: the hosts no longer show them once the restore has begun."""

    async def step(self, name: str, host: Host, inputs: Any, work: Work) -> None: ...

    async def each(
        self, name: str, hosts: Sequence[Host], work: Callable[[Host], Awaitable[str | None]]
    ) -> None:
        """The step `name` on every host at once."""
        ...

    def remember(self, key: str, value: str) -> None: ...

    def recall(self, key: str) -> str | None: ...

    async def api_back(self) -> None:
        """The cluster's API answers again (from the restored datastore)."""
        ...


class DirectRun:
    """Every step run as it comes, nothing recorded: a restore without a journal (k0s_restore,
    kubeadm_restore; tests)."""

    def __init__(self) -> None:
        self.memo: dict[str, str] = {}

    async def step(self, name: str, host: Host, inputs: Any, work: Work) -> None:
        await work()

    async def each(
        self, name: str, hosts: Sequence[Host], work: Callable[[Host], Awaitable[str | None]]
    ) -> None:
        await asyncio.gather(*(work(h) for h in hosts))

    def remember(self, key: str, value: str) -> None:
        self.memo[key] = value

    def recall(self, key: str) -> str | None:
        return self.memo.get(key)

    async def api_back(self) -> None:
        return None


def recalled(run: RestoreRun, key: str) -> str:
    value = run.recall(key)
    if value is None:
        # only when the record of an interrupted restore was lost (its prepare step is done)
        raise RuntimeErrorSealer(
            f"the interrupted restore's record of {key!r} (taken before anything changed) is missing",
            "the local state of the restore was lost; re-create the cluster (`sealer delete --all`, "
            "`sealer run -f Clusterfile`) and restore onto it",
        )
    return value


async def _note(work: Awaitable[Any], note: str) -> str:
    await work
    return note


def then(note: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Work:
    """`fn(*args)` as a step's work, called only when the step runs; `note` is what it reports."""

    async def work() -> str:
        await fn(*args)
        return note

    return work


async def _copy_to_masters(ctx: RuntimeContext, path: str, masters: list[Host]) -> None:
    """The snapshot master0 received, to the same path on the other masters (through this machine:
    the hosts need no SSH trust among themselves)."""
    if not masters:
        return
    parent = path.rsplit("/", 1)[0]
    with tempfile.TemporaryDirectory(prefix="sealer-restore-") as tmp:
        local = Path(tmp) / "snapshot"
        await ctx.fleet.get(ctx.target(ctx.master0), path, local, sudo=True)
        local.chmod(0o600)
        for host in masters:
            await _sh(ctx, host, f"mkdir -p {quote_path(parent)} && chmod 0700 {quote_path(parent)}")
            await ctx.fleet.put(ctx.target(host), local, path, sudo=True)
            await _sh(ctx, host, f"chmod 0600 {quote_path(path)}")


def leftovers_script(uploaded: str) -> str:
    """What a finished restore leaves on a master that is a copy of the snapshot: the file uploaded
    (master0), what the runtime unpacked from it (k3s: the db; kubernetes: the db, the PKI, also on
    the other masters); the directories go when empty. What a runtime keeps as the state before the
    restore (k0s's archive in BACKUP_DIR, etcd's `<data-dir>.sealer-before-restore`, k3s's
    db/etcd-old-*) is elsewhere and stays."""
    work = (k3smod.RESTORE_DIR, RESTORE_WORK)
    dirs = sorted({uploaded.rsplit("/", 1)[0], *(w.rsplit("/", 1)[0] for w in work)})
    return f"rm -f {quote_path(uploaded)} && rm -rf {' '.join(quote_path(w) for w in work)}\n" + "".join(
        f"rmdir {quote_path(d)} 2>/dev/null || true\n" for d in dirs
    )


def can_restore(runtime: object) -> bool:
    return isinstance(runtime, K3sRuntime | K0sRuntime | KubernetesRuntime)


async def restore_steps(runtime: object, ctx: RuntimeContext, snapshot: str, run: RestoreRun) -> None:
    """The restore of `runtime` (one `can_restore` accepts) from `snapshot` on master0, through `run`."""
    if isinstance(runtime, K3sRuntime):
        await k3s_restore_steps(runtime, ctx, snapshot, run)
    elif isinstance(runtime, K0sRuntime):
        await k0s_restore_steps(runtime, ctx, snapshot, run)
    elif isinstance(runtime, KubernetesRuntime):
        await kubeadm_restore_steps(runtime, ctx, snapshot, run)
    else:
        raise RuntimeErrorSealer(
            f"the {getattr(runtime, 'name', runtime)} runtime of this sealer cannot restore its datastore",
            "restore with the runtime's own tool on master0",
        )


# k3s ---------------------------------------------------------------------------------------------
async def k3s_restore_steps(rt: K3sRuntime, ctx: RuntimeContext, snapshot: str, run: RestoreRun) -> None:
    """k3s's restore as steps: the bundle unpacked and its token compared
    with the cluster's, every server stopped, master0 cluster-reset from the snapshot (with the
    backup's token when the cluster was created anew since) and started; then either the other
    servers re-join with their db wiped and the agents restart, or (another token) the snapshot's
    node-password Secrets are deleted, the other servers are reset and re-join, the agents re-join."""
    masters, workers = list(ctx.cluster.masters), list(ctx.cluster.workers)
    m0 = ctx.master0
    others = [h for h in masters if h.ip != m0.ip]

    async def prepare() -> str:
        unpacked = await ctx.fleet.run(ctx.target(m0), k3smod.unpack_script(snapshot), sudo=True, timeout=120)
        if not unpacked.ok:
            raise RuntimeErrorSealer(
                f"{snapshot}: not a k3s backup ({(unpacked.stderr or unpacked.stdout).strip()[-200:]})",
                "give the file `sealer etcd backup` wrote for a k3s cluster; nothing was changed",
            )
        words = unpacked.stdout.split()
        run.remember("snapshot", words[-2])
        run.remember("mode", words[-1])
        return words[-1]

    await run.step("prepare", m0, {}, prepare)
    db, foreign = recalled(run, "snapshot"), recalled(run, "mode") == "other-token"
    stop = f"systemctl stop {k3smod.SERVER_UNIT}"
    for host in masters:
        await run.step("stop", host, {}, then("k3s stopped", rt._sh, ctx, host, stop, 180))
    if foreign:
        ctx.say(m0.ip, "the backup's cluster token differs: restoring with it (the old CAs come back)")
        # k3s's cluster-reset reads the token from config.yaml's token-file: the original one
        install = f"install -m 0600 {k3smod.RESTORE_DIR}/token {k3smod.TOKEN_FILE}"
        await run.step("install-token", m0, {}, then("backup's token installed", rt._sh, ctx, m0, install))

    async def cluster_reset() -> str:
        reset = (
            f"{k3smod.BIN_DIR}/k3s server --cluster-reset --cluster-reset-restore-path={shlex.quote(db)} 2>&1"
        )
        result = await ctx.fleet.run(ctx.target(m0), reset, sudo=True, timeout=600)
        if not result.ok:
            lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
            raise RuntimeErrorSealer(
                f"{m0.ip}: k3s --cluster-reset failed: {(lines or ['no output'])[-1]}",
                "k3s is stopped on the masters; fix the cause and run the same restore again"
                + (
                    ""
                    if foreign
                    else f", or start {k3smod.SERVER_UNIT} by hand to go back to the state before the restore"
                ),
            )
        return "cluster-reset from the snapshot"

    # The snapshot is restored again when this step is redone: k3s's cluster-reset replaces the db.
    await run.step("cluster-reset", m0, {}, cluster_reset)
    await run.step("start", m0, {}, then("k3s started", rt._start, ctx, m0, k3smod.SERVER_UNIT, True))
    await run.api_back()
    # the token is k3s's server/token again
    drop = f"rm -f {k3smod.RESTORE_DIR}/token"
    await run.step("drop-token-copy", m0, {}, then("removed", rt._sh, ctx, m0, drop))
    ctx.shared.pop("k3s-node-token", None)  # master0's node-token may have changed with the CA
    if not foreign:
        for host in others:
            await run.step("rejoin", host, {}, then("re-joined", _k3s_rejoin, rt, ctx, host))
        await run.each(
            "restart",
            workers,
            lambda w: _note(rt._start(ctx, w, k3smod.AGENT_UNIT, restart=True), "restarted"),
        )
        return
    names = [f"{ctx.node_names[h.ip]}.node-password.k3s" for h in masters + workers]
    quoted = " ".join(shlex.quote(n) for n in names)
    # one at a time: a Secret the snapshot does not hold (NotFound) is no failure
    forget = (
        f"for n in {quoted}; do out=$({k3smod.BIN_DIR}/k3s kubectl -n kube-system delete secret "
        '"$n" 2>&1) || echo "$out" | grep -q NotFound || { echo "$out" >&2; exit 1; }; done'
    )
    await run.step("forget-node-passwords", m0, {"secrets": names}, then("deleted", rt._sh, ctx, m0, forget))
    for host in others:  # one at a time, so etcd keeps quorum while members are added
        await run.step("reset", host, {}, then("reset", rt.reset, ctx, [host]))
        await run.step("join", host, {}, then("joined", rt.join, ctx, [host], []))
    if workers:
        ctx.say(m0.ip, "agents re-join with the restored cluster token")
        await rt._node_token(ctx)  # fetched once, before the parallel joins
        await run.each("join", workers, lambda w: _note(rt._agent(ctx, w), "joined"))


async def _k3s_rejoin(rt: K3sRuntime, ctx: RuntimeContext, host: Host) -> None:
    """A server of the same cluster joins the restored master0 with its old db wiped, as k3s's
    restore documentation says (its etcd member comes back as a fresh one)."""
    await rt._sh(ctx, host, "rm -rf /var/lib/rancher/k3s/server/db")
    await rt._start(ctx, host, k3smod.SERVER_UNIT, restart=True)


# k0s ---------------------------------------------------------------------------------------------
K0S_ARCHIVE = f"{BACKUP_DIR}/k0s-backup.tar.gz"
K0S_BEFORE_RESTORE = f"{BACKUP_DIR}/k0s-before-restore.tar.gz"
K0S_RESTORED_CONFIG = "/etc/k0s/sealer-restored-k0s.yaml"
K0S_CA = "/var/lib/k0s/pki/ca.crt"


def k0s_backup_script(k0s: str, dest: str) -> str:
    """`k0s backup` into a fresh directory, the archive then moved to `dest` (the previous one
    replaced): one archive per purpose on the host, not one per run."""
    return f"""set -e
umask 077
mkdir -p {BACKUP_DIR} && chmod 0700 {BACKUP_DIR}
d=$(mktemp -d {BACKUP_DIR}/k0s.XXXXXX)
trap 'rm -rf "$d"' EXIT
if ! {k0s} backup --save-path "$d" > "$d/log" 2>&1; then tail -n 3 "$d/log" >&2; exit 1; fi
set -- "$d"/k0s_backup_*.tar.gz
[ -f "$1" ] || {{ echo "k0s backup wrote no k0s_backup_*.tar.gz" >&2; exit 1; }}
chmod 0600 "$1" && mv -f "$1" {dest}
echo {dest}
"""


def k0s_stop_script(k0s: str, unit: str) -> str:
    return f"""systemctl stop {unit} 2>/dev/null
for i in $(seq 1 {STOP_TIMEOUT}); do
  {k0s} status >/dev/null 2>&1 || exit 0
  sleep 1
done
echo "k0s still answers on its status socket after {STOP_TIMEOUT}s" >&2; exit 1
"""


def k0s_clean_script(k0s: str) -> str:
    """What `k0s restore` (master0) or a fresh join (other controllers) needs: k0s down, its data dir
    gone (`k0s reset`), containers and mounts it left behind gone; the binaries, /etc/k0s (config,
    registry settings) and the image's rootfs stay."""
    return f"""for p in $(pgrep -f 'containerd-shi[m].*(/run/k0s|k8s.io)' 2>/dev/null); do
  kill -9 "$p" 2>/dev/null
done
for m in $(awk '$2 ~ "^/(run/k0s|var/lib/k0s|var/lib/kubelet)" {{print $2}}' /proc/self/mounts | sort -r); do
  umount -l "$m" 2>/dev/null
done
out=$({k0s} reset 2>&1) || {{ echo "$out" | tail -n 2 >&2; exit 1; }}
rm -rf /var/lib/k0s
"""


async def k0s_snapshot(rt: K0sRuntime, ctx: RuntimeContext) -> str:
    out = await ctx.fleet.run(
        ctx.target(ctx.master0),
        k0s_backup_script(f"{k0smod.BIN_DIR}/k0s", K0S_ARCHIVE),
        sudo=True,
        timeout=600,
    )
    if not out.ok:
        raise RuntimeErrorSealer(
            f"{ctx.master0.ip}: k0s backup failed: {last_line(out.stderr or out.stdout)}",
            "is the k0s controller on master0 running? (`k0s status`, `journalctl -u k0scontroller`)",
        )
    return K0S_ARCHIVE


async def k0s_restore(rt: K0sRuntime, ctx: RuntimeContext, snapshot: str) -> None:
    await k0s_restore_steps(rt, ctx, snapshot, DirectRun())


async def k0s_restore_steps(rt: K0sRuntime, ctx: RuntimeContext, snapshot: str, run: RestoreRun) -> None:
    """k0s's HA restore as steps: the archive checked and the CA before it noted, the state being
    replaced archived, every controller stopped, master0 reset + `k0s restore`d and started, each
    other controller reset and re-joined, the workers restarted (or, with another CA, reset and
    re-joined)."""
    k0s = f"{k0smod.BIN_DIR}/k0s"
    m0 = ctx.master0
    masters = list(ctx.cluster.masters)
    others = [h for h in masters if h.ip != m0.ip]
    workers = list(ctx.cluster.workers)
    snap = quote_path(snapshot)

    async def prepare() -> str:
        listed = await ctx.fleet.run(ctx.target(m0), f"tar -tzf {snap} 2>/dev/null", sudo=True, timeout=120)
        names = set(listed.stdout.split())
        if not listed.ok or "etcd-snapshot.db" not in names or "k0s.yaml" not in names:
            raise RuntimeErrorSealer(
                f"{snapshot}: not a k0s backup archive (no etcd-snapshot.db and k0s.yaml inside)",
                "give the file `sealer etcd backup` wrote for this k0s cluster; nothing was changed",
            )
        ca = await _sh(ctx, m0, f"sha256sum {K0S_CA} 2>/dev/null | cut -d' ' -f1; true")
        run.remember("ca-before", ca.strip())
        return "k0s archive checked"

    await run.step("prepare", m0, {}, prepare)
    ca_before = recalled(run, "ca-before")

    async def keep() -> str:
        # A way back: the state being replaced, archived by k0s itself while it still runs.
        kept = await ctx.fleet.run(
            ctx.target(m0), k0s_backup_script(k0s, K0S_BEFORE_RESTORE), sudo=True, timeout=600
        )
        run.remember("kept", "yes" if kept.ok else "no")
        if kept.ok:
            ctx.say(m0.ip, f"the state before the restore is kept in {K0S_BEFORE_RESTORE}")
        return "state kept" if kept.ok else "no state kept (k0s backup failed)"

    await run.step("keep", m0, {}, keep)
    ctx.say(m0.ip, "stopping every k0s controller")
    await run.each(
        "stop", masters, lambda h: _note(_sh(ctx, h, k0s_stop_script(k0s, k0smod.CONTROLLER_UNIT)), "stopped")
    )

    async def restore() -> str:
        ctx.say(m0.ip, "k0s reset + k0s restore")
        # reset first, also when an interrupted attempt of this step left a half-restored data dir
        await _sh(ctx, m0, k0s_clean_script(k0s), timeout=180)
        restored = await ctx.fleet.run(
            ctx.target(m0),
            f"umask 077; {k0s} restore {snap} --config-out {K0S_RESTORED_CONFIG} 2>&1",
            sudo=True,
            timeout=600,
        )
        if not restored.ok:
            raise RuntimeErrorSealer(
                f"{m0.ip}: k0s restore failed: {last_line(restored.stdout)}",
                "k0s is stopped on the controllers; fix the cause and run the same restore again"
                + (
                    f", or restore {K0S_BEFORE_RESTORE} on master0 to go back"
                    if run.recall("kept") == "yes"
                    else ""
                ),
            )
        return "restored"

    await run.step("restore", m0, {}, restore)
    # The restored controller with sealer's own config and unit (k0s reset removed the unit; the
    # archived k0s.yaml stays in K0S_RESTORED_CONFIG for reference), then fresh join tokens.
    await run.step("start", m0, {}, lambda: _note(rt.install(ctx, [m0], []), "controller started"))
    await run.api_back()
    ca_after = await _sh(ctx, m0, f"sha256sum {K0S_CA} | cut -d' ' -f1")
    for host in others:  # one at a time: etcd membership changes one member at a time
        ctx.say(host.ip, "re-joining the restored controller")
        await run.step("reset", host, {}, then("reset", _sh, ctx, host, k0s_clean_script(k0s), 180))
        await run.step("join", host, {}, then("joined", rt.join, ctx, [host], []))
    if ca_before != ca_after.strip():
        # The archive holds another cluster CA: the workers' kubelet credentials are void; they join
        # the restored cluster afresh.
        ctx.say(m0.ip, "the backup carries another cluster CA: workers re-join")
        await run.each("reset", workers, lambda w: _note(rt.reset(ctx, [w]), "reset"))
        await run.each("join", workers, lambda w: _note(rt.join(ctx, [], [w]), "joined"))
        return
    restart = f"""systemctl restart {k0smod.WORKER_UNIT}
for i in $(seq 1 {START_TIMEOUT}); do {k0s} status >/dev/null 2>&1 && exit 0; sleep 1; done
echo "k0s worker did not come back" >&2; exit 1
"""
    await run.each(
        "restart", workers, lambda w: _note(_sh(ctx, w, restart, timeout=START_TIMEOUT + 30), "restarted")
    )


# kubernetes --------------------------------------------------------------------------------------
MANIFESTS = "/etc/kubernetes/manifests"
PARKED = "/etc/kubernetes/sealer-restore-manifests"
ETCD_PKI = "/etc/kubernetes/pki/etcd"
ETCD_BUNDLE = f"{BACKUP_DIR}/etcd-backup.tar.gz"
K8S_PKI = "/etc/kubernetes/pki"
K8S_CA = f"{K8S_PKI}/ca.crt"
# what `kubeadm init` takes as given ("Using existing ... certificate authority") instead of making
PKI_FILES = (
    "ca.crt",
    "ca.key",
    "sa.key",
    "sa.pub",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
)
RESTORE_WORK = "/var/lib/sealer/restore-work/etcd"  # beside, not in, where snapshots are uploaded
ETCD_ENDPOINT = "https://127.0.0.1:2379"
API_PORT = 6443
ETCD_CLIENT_PORT = 2379


def etcd_tools(rootfs: str) -> tuple[str, str]:
    root = quote_path(rootfs)
    return f"{root}/bin/etcdctl", f"{root}/bin/etcdutl"


async def _need_tools(ctx: RuntimeContext, host: Host) -> tuple[str, str]:
    etcdctl, etcdutl = etcd_tools(ctx.rootfs)
    found = await ctx.fleet.run(ctx.target(host), f"[ -x {etcdctl} ] && [ -x {etcdutl} ]", sudo=True)
    if not found.ok:
        raise RuntimeErrorSealer(
            f"{host.ip}: the ClusterImage has no bin/etcdctl and bin/etcdutl",
            "build the image with images/kubernetes/build.sh (it bundles etcd's release tools), or add "
            "them to the image's bin/ (`COPY etcdctl etcdutl bin/` in a Kubefile)",
        )
    return etcdctl, etcdutl


def snapshot_script(etcdctl: str, etcdutl: str) -> str:
    """etcdctl's snapshot of master0's member, checked with etcdutl, bundled with the cluster PKI
    kubeadm keeps on the masters, not in etcd (the CAs with their keys, the ServiceAccount key
    pair): a restore tells a snapshot of another cluster by pki/ca.crt, and can bring that cluster
    back on re-created hosts. ETCD_BUNDLE = etcd-snapshot.db + pki/..., 0600 (it holds CA keys)."""
    return f"""set -e
umask 077
mkdir -p {BACKUP_DIR} && chmod 0700 {BACKUP_DIR}
d=$(mktemp -d {BACKUP_DIR}/etcd.XXXXXX)
trap 'rm -rf "$d"' EXIT
if ! out=$(ETCDCTL_API=3 {etcdctl} --endpoints={ETCD_ENDPOINT} --cacert={ETCD_PKI}/ca.crt \\
      --cert={ETCD_PKI}/healthcheck-client.crt --key={ETCD_PKI}/healthcheck-client.key \\
      snapshot save "$d/etcd-snapshot.db" 2>&1); then
  echo "$out" | tail -n 1 >&2; exit 1
fi
{etcdutl} snapshot status "$d/etcd-snapshot.db" -w json >/dev/null
mkdir -p "$d/pki/etcd"
for f in {" ".join(PKI_FILES)}; do cp {K8S_PKI}/$f "$d/pki/$f"; done
tar -czf "$d/bundle.tar.gz" -C "$d" etcd-snapshot.db {" ".join("pki/" + f for f in PKI_FILES)}
chmod 0600 "$d/bundle.tar.gz" && mv -f "$d/bundle.tar.gz" {ETCD_BUNDLE}
"""


async def kubeadm_snapshot(rt: KubernetesRuntime, ctx: RuntimeContext) -> str:
    m0 = ctx.master0
    etcdctl, etcdutl = await _need_tools(ctx, m0)
    out = await ctx.fleet.run(ctx.target(m0), snapshot_script(etcdctl, etcdutl), sudo=True, timeout=600)
    if not out.ok:
        raise RuntimeErrorSealer(
            f"{m0.ip}: etcdctl snapshot save failed: {last_line(out.stderr or out.stdout)}",
            "is etcd on master0 running? (`crictl ps --name etcd`, the kubelet's log)",
        )
    return ETCD_BUNDLE


def unpack_script(bundle: str) -> str:
    """On master0 before anything stops: the etcd snapshot out of a bundle `sealer etcd backup`
    wrote, or a bare etcd snapshot (etcdctl's own) as it is; prints the snapshot's path last,
    preceded by a line `other-ca` when the bundle is of a cluster with another CA and carries that
    cluster's whole PKI (exit 5 when it has another CA and no PKI: a bundle of an older sealer).
    Exit 4: neither."""
    src = quote_path(bundle)
    pki = " ".join(f"pki/{f}" for f in PKI_FILES if f != "ca.crt")
    return f"""set -e
umask 077
rm -rf {RESTORE_WORK} && mkdir -p {RESTORE_WORK} && chmod 0700 {RESTORE_WORK}
if tar -tzf {src} >/dev/null 2>&1; then
  tar -xzf {src} -C {RESTORE_WORK} etcd-snapshot.db pki/ca.crt 2>/dev/null || exit 4
  if ! cmp -s {RESTORE_WORK}/pki/ca.crt {K8S_CA}; then
    tar -xzf {src} -C {RESTORE_WORK} {pki} 2>/dev/null || exit 5
    echo other-ca
  fi
else
  cp {src} {RESTORE_WORK}/etcd-snapshot.db
fi
echo {RESTORE_WORK}/etcd-snapshot.db
"""


MEMBER_PROBE = f"""f={MANIFESTS}/etcd.yaml; [ -f "$f" ] || f={PARKED}/etcd.yaml
if [ ! -f "$f" ]; then
  echo "no etcd static Pod manifest in {MANIFESTS} (stacked etcd) on this host" >&2; exit 3
fi
sed -n "s/^ *- *['\\"]*--\\(name\\|data-dir\\|initial-advertise-peer-urls\\)=\\([^'\\"]*\\).*$/\\1=\\2/p" "$f"
"""


def parse_member(text: str) -> dict[str, str]:
    """`name=`, `data-dir=`, `initial-advertise-peer-urls=` lines of MEMBER_PROBE."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("name", "data-dir", "initial-advertise-peer-urls"):
            found.setdefault(key, value.strip())
    return found


def initial_cluster(members: list[dict[str, str]]) -> str:
    return ",".join(f"{m['name']}={m['initial-advertise-peer-urls']}" for m in members)


def wait_ports_script(ports: tuple[int, ...], listening: bool, seconds: int) -> str:
    test = " && ".join(
        f"{'' if listening else '! '}ss -Hltn 'sport = :{p}' 2>/dev/null | grep -q LISTEN" for p in ports
    )
    state = "listening" if listening else "free"
    return f"""for i in $(seq 1 {seconds}); do
  if {test}; then exit 0; fi
  sleep 1
done
echo "port(s) {", ".join(str(p) for p in ports)} not {state} after {seconds}s" >&2; exit 1
"""


STOP_STATIC_PODS = f"""set -e
mkdir -p {PARKED} && chmod 0700 {PARKED}
for f in {MANIFESTS}/*.yaml; do [ -e "$f" ] && mv -f "$f" {PARKED}/; done
"""
START_STATIC_PODS = f"""set -e
for f in {PARKED}/*.yaml; do [ -e "$f" ] && mv -f "$f" {MANIFESTS}/; done
rmdir {PARKED} 2>/dev/null || true
"""


def restore_member_script(
    etcdutl: str, snapshot: str, member: dict[str, str], cluster: str, restore_id: str = ""
) -> str:
    """The member's data dir rebuilt from the snapshot, the old one kept beside it. `restore_id`
    names the restore: the data dir it made is marked with it, so the step redone after a kill that
    came after the swap keeps the data that was there before the restore, not the restored copy."""
    data = quote_path(member["data-dir"])
    new = quote_path(member["data-dir"] + ".sealer-restore")
    old = quote_path(member["data-dir"] + ".sealer-before-restore")
    mark = quote_path(member["data-dir"] + ".sealer-restored")
    done = (
        f'if [ -d {data} ] && [ "$(cat {mark} 2>/dev/null)" = {shlex.quote(restore_id)} ]; then exit 0; fi\n'
        if restore_id
        else ""
    )
    return f"""set -e
{done}rm -rf {new}
if ! out=$({etcdutl} snapshot restore {quote_path(snapshot)} --name={shlex.quote(member["name"])} \\
      --initial-cluster={shlex.quote(cluster)} \\
      --initial-advertise-peer-urls={shlex.quote(member["initial-advertise-peer-urls"])} \\
      --data-dir={new} 2>&1); then
  echo "$out" | tail -n 1 >&2; exit 1
fi
if [ -e {data} ]; then rm -rf {old}; mv {data} {old}; fi
# marked before the last move: the mark counts only with the data dir in place
echo {shlex.quote(restore_id)} > {mark}
mv {new} {data}
"""


async def kubeadm_restore(rt: KubernetesRuntime, ctx: RuntimeContext, snapshot: str) -> None:
    await kubeadm_restore_steps(rt, ctx, snapshot, DirectRun())


async def kubeadm_restore_steps(
    rt: KubernetesRuntime, ctx: RuntimeContext, snapshot: str, run: RestoreRun
) -> None:
    given = snapshot
    m0 = ctx.master0
    masters = list(ctx.cluster.masters)
    hosts = list(ctx.cluster.hosts)
    tools = await asyncio.gather(*(_need_tools(ctx, h) for h in masters))
    etcdutl = tools[0][1]

    async def prepare() -> str:
        unpacked = await ctx.fleet.run(ctx.target(m0), unpack_script(given), sudo=True, timeout=300)
        if unpacked.exit_code == 5:
            raise RuntimeErrorSealer(
                f"{given}: a snapshot of a cluster with another CA, without that cluster's PKI (a "
                "backup of an older sealer; kubeadm keeps its PKI on the masters, not in etcd): restored "
                "here it would bring back that cluster's cluster-info, ServiceAccount tokens and "
                "certificates' trust",
                "restore it onto the cluster it was taken from; nothing was changed",
            )
        if not unpacked.ok:
            raise RuntimeErrorSealer(
                f"{given}: not a backup of a kubernetes cluster (no etcd-snapshot.db and pki/ca.crt "
                f"inside: {last_line(unpacked.stderr or unpacked.stdout)})",
                "give the file `sealer etcd backup` wrote for this cluster; nothing was changed",
            )
        lines = unpacked.stdout.strip().splitlines()
        db = lines[-1]
        checked = await ctx.fleet.run(
            ctx.target(m0), f"{etcdutl} snapshot status {quote_path(db)} -w json 2>&1", sudo=True
        )
        if not checked.ok:
            raise RuntimeErrorSealer(
                f"{given}: not an etcd snapshot ({last_line(checked.stdout)})",
                "give the file `sealer etcd backup` wrote for this kubernetes cluster; nothing was changed",
            )
        run.remember("snapshot", db)
        run.remember("mode", "other-ca" if "other-ca" in lines[:-1] else "same-ca")
        run.remember("id", secrets.token_hex(8))
        return "snapshot checked"

    await run.step("prepare", m0, {}, prepare)
    snapshot, restore_id = recalled(run, "snapshot"), recalled(run, "id")
    if recalled(run, "mode") == "other-ca":
        await _recreate_with_pki(rt, ctx, snapshot, etcdutl, run)
        return
    probes = await asyncio.gather(*(ctx.fleet.run(ctx.target(h), MEMBER_PROBE, sudo=True) for h in masters))
    members: list[dict[str, str]] = []
    for host, probe in zip(masters, probes, strict=True):
        member = parse_member(probe.stdout)
        if not probe.ok or len(member) != 3:
            raise RuntimeErrorSealer(
                f"{host.ip}: cannot read the etcd member from its static Pod manifest: "
                f"{last_line(probe.stderr or probe.stdout)}",
                "sealer restores kubeadm's stacked etcd (etcd.yaml in /etc/kubernetes/manifests); "
                "nothing was changed",
            )
        members.append(member)
    cluster = initial_cluster(members)
    member_of = {h.ip: m for h, m in zip(masters, members, strict=True)}
    etcdutl_of = {h.ip: t[1] for h, t in zip(masters, tools, strict=True)}
    await run.each(
        "copy-snapshot",
        [h for h in masters if h.ip != m0.ip],
        lambda h: _note(_copy_to_masters(ctx, snapshot, [h]), "snapshot copied"),
    )

    ctx.say(m0.ip, "stopping the control plane (static Pods) on every master")
    stopped = wait_ports_script((API_PORT, ETCD_CLIENT_PORT), listening=False, seconds=STOP_TIMEOUT)
    await run.each(
        "stop",
        masters,
        lambda h: _note(_sh(ctx, h, STOP_STATIC_PODS + stopped, STOP_TIMEOUT + 30), "stopped"),
    )
    for host, member in zip(masters, members, strict=True):
        ctx.say(
            host.ip,
            f"etcdutl snapshot restore (member {member['name']}); old data kept in "
            f"{member['data-dir']}.sealer-before-restore",
        )

    async def restore_member(h: Host) -> str:
        script = restore_member_script(etcdutl_of[h.ip], snapshot, member_of[h.ip], cluster, restore_id)
        try:
            await _sh(ctx, h, script, 600)
        except SealerError as err:
            raise RuntimeErrorSealer(
                f"etcd restore failed: {err.message}",
                f"the control planes are stopped (manifests parked in {PARKED}); fix the cause and run "
                "the same restore again (a master whose data dir was already replaced keeps the "
                "previous one as <data-dir>.sealer-before-restore)",
            ) from None
        return f"member {member_of[h.ip]['name']} restored"

    await run.each("restore-member", masters, restore_member)
    # all members at once: a restored multi-member etcd has no quorum until enough of them run
    await run.each("start", masters, lambda h: _note(_sh(ctx, h, START_STATIC_PODS), "started"))
    up = wait_ports_script((API_PORT,), listening=True, seconds=START_TIMEOUT)
    await run.each("wait-api", masters, lambda h: _note(_sh(ctx, h, up, START_TIMEOUT + 30), "API up"))
    await run.api_back()
    # Kubernetes' advice after a restore: restart the components that cached the old state.
    await run.each(
        "restart-kubelet",
        hosts,
        lambda h: _note(_sh(ctx, h, "systemctl restart kubelet.service"), "restarted"),
    )


INSTALL_PKI = f"""set -e
umask 077
mkdir -p {ETCD_PKI}
for f in {" ".join(PKI_FILES)}; do
  case $f in *.key) m=0600 ;; *) m=0644 ;; esac
  install -m $m {RESTORE_WORK}/pki/$f {K8S_PKI}/$f
done
"""


async def _recreate_with_pki(
    rt: KubernetesRuntime, ctx: RuntimeContext, snapshot: str, etcdutl: str, run: RestoreRun
) -> None:
    """Onto a cluster with another CA (deleted and created anew since the backup): the cluster is
    brought back as the one backed up. Every host is reset; master0 gets the bundle's PKI and
    `kubeadm init` takes it as given (new leaf certificates from the old CAs); its one-member etcd
    is restored from the snapshot; the Nodes the snapshot holds for the other hosts are deleted
    (kubeadm join refuses a name a Ready Node has); the other masters and the workers join with
    fresh tokens, their kubelets trusting the old CA."""
    m0 = ctx.master0
    masters = list(ctx.cluster.masters)
    others = [h for h in masters if h.ip != m0.ip]
    workers = list(ctx.cluster.workers)
    ctx.say(m0.ip, "the backup carries another cluster's PKI: the cluster is re-created with it")
    await run.each("reset", list(ctx.cluster.hosts), lambda h: _note(rt.reset(ctx, [h]), "reset"))
    await run.step("install-pki", m0, {}, then("PKI of the backup installed", _sh, ctx, m0, INSTALL_PKI))

    async def init() -> str:
        for key in ("kubeadm-token", "kubeadm-ca-hash", "kubeadm-certificate-key"):
            ctx.shared.pop(key, None)
        await rt.install(ctx, [m0], [])
        return "kubeadm init with the backup's CAs"

    await run.step("init", m0, {}, init)
    probe = await ctx.fleet.run(ctx.target(m0), MEMBER_PROBE, sudo=True)
    member = parse_member(probe.stdout)
    if not probe.ok or len(member) != 3:
        raise RuntimeErrorSealer(
            f"{m0.ip}: cannot read the etcd member kubeadm init made: "
            f"{last_line(probe.stderr or probe.stdout)}",
            "run the same restore again",
        )
    stopped = wait_ports_script((API_PORT, ETCD_CLIENT_PORT), listening=False, seconds=STOP_TIMEOUT)
    await run.step(
        "stop", m0, {}, then("stopped", _sh, ctx, m0, STOP_STATIC_PODS + stopped, STOP_TIMEOUT + 30)
    )
    ctx.say(m0.ip, f"etcdutl snapshot restore (member {member['name']})")
    script = restore_member_script(etcdutl, snapshot, member, initial_cluster([member]), recalled(run, "id"))
    await run.step("restore-member", m0, {}, then("restored", _sh, ctx, m0, script, 600))
    await run.step("start", m0, {}, then("started", _sh, ctx, m0, START_STATIC_PODS))
    up = wait_ports_script((API_PORT,), listening=True, seconds=START_TIMEOUT)
    await run.step("wait-api", m0, {}, then("API up", _sh, ctx, m0, up, START_TIMEOUT + 30))
    await run.step(
        "restart-kubelet", m0, {}, then("restarted", _sh, ctx, m0, "systemctl restart kubelet.service")
    )
    await run.api_back()
    names = [ctx.node_names[h.ip] for h in [*others, *workers]]
    if names:
        quoted = " ".join(shlex.quote(n) for n in names)
        kubectl = "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf"
        forget = (
            f'for n in {quoted}; do out=$({kubectl} delete node "$n" 2>&1) || echo "$out" '
            '| grep -q NotFound || { echo "$out" >&2; exit 1; }; done'
        )
        await run.step("delete-nodes", m0, {"nodes": names}, then("old Nodes deleted", _sh, ctx, m0, forget))
    for key in ("kubeadm-token", "kubeadm-ca-hash", "kubeadm-certificate-key"):
        ctx.shared.pop(key, None)  # the restored etcd has none of the tokens made before
    # the CA keys are in /etc/kubernetes/pki now: no second copy left behind
    await run.step("drop-pki-copy", m0, {}, then("removed", _sh, ctx, m0, f"rm -rf {RESTORE_WORK}/pki"))
    if others or workers:
        ctx.say(m0.ip, "the other hosts join the restored cluster")
    for host in others:  # one at a time: stacked etcd grows one member at a time
        await run.step("join", host, {}, then("joined", rt.join, ctx, [host], []))
    await run.each("join", workers, lambda w: _note(rt.join(ctx, [], [w]), "joined"))
