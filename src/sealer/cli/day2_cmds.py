"""Day-2 commands: `sealer scale-up`/`join`, `sealer delete`, `sealer upgrade`, `sealer status`,
`sealer etcd backup|restore`. Each edits the last-applied Clusterfile and applies it (cluster_cmds)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from sealer.apply.engine import RunOptions
from sealer.apply.lifecycle import (
    DRAIN_TIMEOUT,
    Day2Options,
    cluster_status,
    delete_cluster,
    delete_unfinished,
    edit_hosts,
    status_lines,
)
from sealer.apply.progress import Progress
from sealer.apply.restore import etcd_backup_held, etcd_restore
from sealer.cli.cluster_cmds import (
    _command_line,
    _confirm,
    _console,
    _local_image_runtime,
    _note_unfinished,
    render_plan,
    run_apply,
)
from sealer.cli.output import emit_data, output_option, quiet_for
from sealer.cli.run_cmds import _split, distributor_option
from sealer.errors import InputError, Problem, SealerError
from sealer.model.cluster import SSH, Clusterfile
from sealer.model.clusterfile import load_clusterfile
from sealer.plan import Plan
from sealer.state import ClusterState, check_cluster_name, sealer_home

_CLUSTER_HELP = "metadata.name of the cluster (default: the only cluster in $SEALER_HOME)."


def _cluster_name(name: str | None) -> str:
    if name:
        return check_cluster_name(name)
    home = sealer_home()
    found = sorted(p.name for p in home.iterdir() if (p / "Clusterfile").is_file()) if home.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise SealerError(
            f"no installed cluster in {home}",
            "install one with `sealer run` / `sealer apply -f Clusterfile`, or set SEALER_HOME",
        )
    raise SealerError(f"{len(found)} clusters in {home}: {', '.join(found)}", "name one with --cluster NAME")


def _installed(name: str | None) -> tuple[ClusterState, Clusterfile]:
    state = ClusterState(_cluster_name(name))
    current = state.last_applied()
    if current is None:
        raise SealerError(
            f"cluster {state.name} is not installed (no last-applied Clusterfile in {state.dir})",
            "see `sealer status`; create it with `sealer run` or `sealer apply -f Clusterfile`",
        )
    return state, current


def _with_ssh(cf: Clusterfile, ips: list[str], ssh: SSH) -> Clusterfile:
    """New host groups get the SSH flags given, only where they differ from spec.ssh."""
    if ssh == SSH():
        return cf
    groups = tuple(
        replace(g, ssh=ssh) if any(ip in ips for ip in g.ips) else g for g in cf.cluster.host_groups
    )
    return replace(cf, cluster=replace(cf.cluster, host_groups=groups))


def _expand_ips(values: list[str], flag: str) -> list[str]:
    """Addresses and ranges (a-b) given on the command line, one IP each; a bad one names the flag."""
    from sealer.model import ipaddr

    out: list[str] = []
    for v in values:
        try:
            out.extend(ipaddr.expand_entry(v))
        except ipaddr.AddressError as err:
            raise InputError([Problem(str(err), file="command line", path=flag)], "the command line")
    return out


def _ssh_flags(user: str | None, password: str | None, pk: str | None, port: int | None) -> SSH:
    return SSH(user=user, password=password, pk=pk, port=port)


_yes = click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
_cluster = click.option("--cluster", "cluster", default=None, metavar="NAME", help=_CLUSTER_HELP)


# scale-up / join -----------------------------------------------------------------------------------
def _scale_up(
    cluster: str | None,
    masters: tuple[str, ...],
    nodes: tuple[str, ...],
    user: str | None,
    password: str | None,
    pk: str | None,
    port: int | None,
    yes: bool,
    distributor: str,
    output: str,
) -> None:
    new_masters, new_nodes = _split(masters), _split(nodes)
    if not new_masters and not new_nodes:
        raise click.UsageError("give the hosts to add with -m/--masters and/or -n/--nodes")
    add_m, add_n = _expand_ips(new_masters, "--masters"), _expand_ips(new_nodes, "--nodes")
    state, current = _installed(cluster)
    desired = edit_hosts(current, add_masters=add_m, add_workers=add_n)
    desired = _with_ssh(desired, add_m + add_n, _ssh_flags(user, password, pk, port))
    run_apply(
        desired,
        state,
        command=_command_line(sys.argv[1:]),
        yes=yes,
        output=output,
        kind="scale-up",
        distributor=distributor,
    )


def _scale_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options: list[Callable[..., Any]] = [
        _cluster,
        click.option("-m", "--masters", multiple=True, metavar="IPS", help="Masters to add (a,b or a-b)."),
        click.option("-n", "--nodes", multiple=True, metavar="IPS", help="Workers to add."),
        click.option("-u", "--user", default=None, help="SSH user of the new hosts."),
        click.option("-p", "--passwd", "password", default=None, help="SSH password of the new hosts."),
        click.option("--pk", default=None, metavar="FILE", help="SSH private key of the new hosts."),
        click.option("--port", type=int, default=None, help="SSH port of the new hosts."),
        _yes,
        distributor_option(),
        output_option(),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _scale_command(name: str, doc: str) -> click.Command:
    # scale-up and join are one command under two names; only the help differs
    return click.command(name, help=doc)(_scale_options(_scale_up))


scale_up_cmd = _scale_command(
    "scale-up",
    """Add masters and workers to an installed cluster.

    Appends the hosts to the last-applied Clusterfile (a new host group per role) and applies it:
    rootfs and registry settings to the new hosts, then the runtime joins them (masters one at a
    time: one master becomes three), labels and taints. Resumable like apply.

    \b
    Example:
      sealer scale-up -m 10.0.0.3,10.0.0.4 -n 10.0.0.10-10.0.0.12
    """,
)
join_cmd = _scale_command("join", "Same as scale-up (Go sealer's older name).")


# delete --------------------------------------------------------------------------------------------
@click.command("delete")
@_cluster
@click.option(
    "-f",
    "--Clusterfile",
    "clusterfile",
    default=None,
    metavar="FILE",
    help="The cluster this Clusterfile names (also for a cluster whose install never finished).",
)
@click.option("-m", "--masters", multiple=True, metavar="IPS", help="Masters to remove.")
@click.option("-n", "--nodes", multiple=True, metavar="IPS", help="Workers to remove.")
@click.option("-a", "--all", "all_", is_flag=True, help="Delete the whole cluster: reset every host.")
@click.option("-p", "--prune", is_flag=True, help="With --all: also remove the data dir (rootfs) on hosts.")
@click.option("-y", "--yes", "--force", "yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--drain-timeout",
    type=float,
    default=DRAIN_TIMEOUT,
    show_default=True,
    help="Seconds to wait for a node's pods to leave.",
)
@output_option()
def delete_cmd(
    cluster: str | None,
    clusterfile: str | None,
    masters: tuple[str, ...],
    nodes: tuple[str, ...],
    all_: bool,
    prune: bool,
    yes: bool,
    drain_timeout: float,
    output: str,
) -> None:
    """Remove hosts from a cluster, or delete the whole cluster.

    -m/-n: the hosts are drained (pods evicted, with a timeout), deleted from the cluster (a master's
    etcd member is removed too, from master0 when the master cannot be reached) and reset; master0
    stays. --all: every host is reset
    (workers, then masters, master0 last), the registry and sealer's files removed, then the
    cluster's state here and in the cluster. Asks first unless --yes/--force.

    \b
    Example:
      sealer delete -n 10.0.0.12
      sealer delete -m 10.0.0.4 -y
      sealer delete --all --prune --cluster prod-a
    """
    if clusterfile and cluster:
        raise click.UsageError("name the cluster with --cluster or -f, not both")
    name = load_clusterfile(clusterfile).cluster.name if clusterfile else cluster
    if all_:
        if masters or nodes:
            raise click.UsageError("--all deletes every host; drop -m/-n")
        state = ClusterState(_cluster_name(name))
        shown: list[Plan] = []

        def on_plan(plan: Plan) -> None:
            shown.append(plan)
            if output == "table":
                render_plan(plan, _console())

        command = _command_line(sys.argv[1:])
        day2 = Day2Options(yes=yes, prune=prune, confirm=_confirm, on_plan=on_plan)
        options = RunOptions(command=command)
        progress = Progress(quiet=quiet_for(output))
        with state.lock(command):
            if clusterfile and state.last_applied() is None:
                # An install that never finished: the Clusterfile says which hosts to reset.
                cf = load_clusterfile(clusterfile)
                runtime_type, why = _local_image_runtime(cf.cluster.image)
                if runtime_type is None:
                    raise SealerError(
                        f"cluster {state.name}: cannot tell its runtime: {why}",
                        f"pull the image first (`sealer pull {cf.cluster.image}`), then delete again",
                    )
                work = delete_unfinished(
                    cf, runtime_type, state, options=options, day2=day2, progress=progress
                )
            else:
                work = delete_cluster(state, options=options, day2=day2, progress=progress)
            result = asyncio.run(work)
        if not emit_data(
            {"plan": shown[-1].to_dict() if shown else None, "result": result.to_dict()}, output
        ):
            for line in result.lines():
                click.echo(line)
        return
    if prune:
        raise click.UsageError("--prune goes with --all (removed hosts always lose the cluster's data dir)")
    gone = _split(masters) + _split(nodes)
    if not gone:
        raise click.UsageError("give the hosts to remove with -m/-n, or --all for the whole cluster")
    expanded = _expand_ips(gone, "-m/-n")
    state, current = _installed(name)
    by_ip = {h.ip: h for h in current.cluster.hosts}
    wrong_role = [ip for ip in _split(masters) if ip in by_ip and not by_ip[ip].is_master] + [
        ip for ip in _split(nodes) if ip in by_ip and by_ip[ip].is_master
    ]
    if wrong_role:
        raise InputError(
            [
                Problem(
                    f"{ip} is a {'worker' if not by_ip[ip].is_master else 'master'} of cluster {state.name}",
                    file="command line",
                    path="-m/-n",
                    hint="masters go with -m, workers with -n",
                )
                for ip in wrong_role
            ],
            "the command line",
        )
    desired = edit_hosts(current, remove=expanded)
    run_apply(
        desired,
        state,
        command=_command_line(sys.argv[1:]),
        yes=yes,
        output=output,
        kind="scale-down",
        drain_timeout=drain_timeout,
    )


# upgrade -------------------------------------------------------------------------------------------
@click.command("upgrade")
@click.argument("image", required=False)
@_cluster
@click.option(
    "-f",
    "--Clusterfile",
    "clusterfile",
    default=None,
    metavar="FILE",
    help="Apply this Clusterfile (its spec.image is the new image).",
)
@_yes
@click.option(
    "--drain-timeout",
    type=float,
    default=DRAIN_TIMEOUT,
    show_default=True,
    help="Seconds to wait for a worker's pods to leave.",
)
@click.option(
    "--worker-batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Workers upgraded at a time (each drained first).",
)
@distributor_option()
@output_option()
def upgrade_cmd(
    image: str | None,
    cluster: str | None,
    clusterfile: str | None,
    yes: bool,
    drain_timeout: float,
    worker_batch: int,
    distributor: str,
    output: str,
) -> None:
    """Upgrade a cluster to a new ClusterImage of the same runtime.

    Checks the version skew first (no downgrades; kubernetes one minor at a time), copies the new
    rootfs to every host, then upgrades control planes one at a time and workers with
    cordon/drain, waiting for each node to report the new version; the image's upgrade-host and
    upgrade hooks run too. Resumable like apply.

    \b
    Example:
      sealer upgrade registry.local/sealer/k3s:v1.31.2
      sealer upgrade -f Clusterfile      # spec.image changed
    """
    if (image is None) == (clusterfile is None):
        raise click.UsageError("give the new IMAGE or a Clusterfile (-f), one of them")
    if clusterfile:
        desired = load_clusterfile(clusterfile)
        state = ClusterState(desired.cluster.name)
        if state.last_applied() is None:
            raise SealerError(
                f"cluster {state.name} is not installed", "create it with `sealer apply -f Clusterfile`"
            )
    else:
        state, current = _installed(cluster)
        if current.cluster.image == image:
            raise SealerError(f"cluster {state.name} already runs {image}", "give the image to upgrade to")
        desired = replace(current, cluster=replace(current.cluster, image=image))
    run_apply(
        desired,
        state,
        command=_command_line(sys.argv[1:]),
        yes=yes,
        output=output,
        kind="upgrade",
        worker_batch=worker_batch,
        drain_timeout=drain_timeout,
        distributor=distributor,
    )


# status --------------------------------------------------------------------------------------------
@click.command("status")
@_cluster
@output_option()
def status_cmd(cluster: str | None, output: str) -> None:
    """Show a cluster, its last operation and any unfinished step with the command to finish it.

    Reads the local state only ($SEALER_HOME/<name>/), so it works when the cluster does not answer.

    \b
    Example:
      sealer status
      sealer status --cluster prod-a -o json
    """
    if cluster is None:
        home = sealer_home()
        names = (
            sorted(p.name for p in home.iterdir() if (p / "journal.jsonl").is_file()) if home.is_dir() else []
        )
        cluster = names[0] if len(names) == 1 else _cluster_name(None)
    state = ClusterState(check_cluster_name(cluster))
    if not state.exists():
        raise SealerError(
            f"no state for cluster {state.name} in {state.home}", "check --cluster and SEALER_HOME"
        )
    data = cluster_status(state)
    if not emit_data(data, output):
        for line in status_lines(data):
            click.echo(line)


# etcd ----------------------------------------------------------------------------------------------
@click.group("etcd")
def etcd_group() -> None:
    """Back up and restore the cluster's datastore (etcd) with the runtime's own tools.

    \b
    k3s:        k3s etcd-snapshot save / k3s server --cluster-reset --cluster-reset-restore-path
    k0s:        k0s backup (etcd snapshot + pki + k0s.yaml) / k0s restore
    kubernetes: etcdctl snapshot save (bundled with the cluster CA's certificate) / etcdutl
                snapshot restore on every master (etcd tools from the ClusterImage)
    """


@etcd_group.command("backup")
@_cluster
@click.option(
    "-o",
    "--output",
    "out",
    default=None,
    metavar="FILE",
    help="Where to write the snapshot (default ./<cluster>-etcd-<time>.snapshot).",
)
def etcd_backup_cmd(cluster: str | None, out: str | None) -> None:
    """Snapshot the datastore on master0 and copy it here (mode 0600: it holds the cluster's secrets;
    for k0s and kubernetes the file also holds the cluster's CA keys and ServiceAccount signing key,
    for k3s the cluster's server token, which decrypts the CA keys in the snapshot). Keep it
    somewhere safe: with it anyone can impersonate the cluster. Holds the in-cluster lease while
    it snapshots, so no other operator changes the cluster meanwhile.

    \b
    Example:
      sealer etcd backup -o prod-a.snapshot
    """
    state = ClusterState(_cluster_name(cluster))
    import time

    path = Path(out or f"{state.name}-etcd-{time.strftime('%Y%m%dT%H%M%S')}.snapshot")
    command = _command_line(sys.argv[1:])
    with state.lock(command):
        written = asyncio.run(
            etcd_backup_held(state, path, command=command, progress=Progress(quiet=quiet_for("table")))
        )
    click.echo(f"snapshot of cluster {state.name} written to {written} ({written.stat().st_size} bytes)")


@etcd_group.command("restore")
@click.argument("snapshot", type=click.Path(dir_okay=False))
@_cluster
@_yes
def etcd_restore_cmd(snapshot: str, cluster: str | None, yes: bool) -> None:
    """Roll the whole cluster state back to a snapshot `sealer etcd backup` wrote.

    Everything written to the API after the snapshot (objects created, changed or deleted) is
    lost; the API is down while the control planes restart. Asks first unless --yes.

    \b
    k3s:        every server stops, master0 runs k3s --cluster-reset from the snapshot, the
                other servers re-join it, agents restart; onto a cluster deleted and created
                anew (another token), master0 is reset with the backup's token (the old CAs
                come back), the other servers are reset and re-join, the agents re-join
    k0s:        every controller stops; master0 is reset and `k0s restore`d from the archive
                (its state before is kept in /var/lib/sealer/backup/k0s-before-restore.tar.gz),
                the other controllers are reset and re-join it, workers restart
    kubernetes: the static Pods stop on every master (manifests parked), each master's etcd
                data dir is rebuilt with `etcdutl snapshot restore` of the same snapshot (the
                old one kept as <data-dir>.sealer-before-restore), then everything restarts;
                onto a cluster deleted and created anew (another CA), every host is reset,
                master0 re-initialised with the backup's PKI and restored, the other hosts
                join it; a snapshot of another CA without its PKI is refused
    Restoring the same snapshot again gives the same state. Every step is journaled: after a
    failure or a kill, run the same command again and it continues where it stopped (`sealer
    status` shows the unfinished step); other changes to the cluster are refused until it has.
    Holds the in-cluster lease while the API answers, as every change does.

    \b
    Example:
      sealer etcd restore prod-a.snapshot
    """
    state = ClusterState(_cluster_name(cluster))
    question = (
        f"restoring cluster {state.name} from {snapshot} stops its API and loses every change made "
        "after that snapshot. Continue?"
    )
    if not yes and not _confirm(question):
        raise SealerError(
            f"cluster {state.name}: not confirmed; nothing was changed", "pass --yes to skip the question"
        )
    command = _command_line(sys.argv[1:])
    with state.lock(command) as lock:
        _note_unfinished(state.name, lock)
        result = asyncio.run(
            etcd_restore(state, Path(snapshot), command=command, progress=Progress(quiet=quiet_for("table")))
        )
    resumed = f"; resumed, {result.steps_skipped} finished step(s) not redone" if result.resumed else ""
    click.echo(
        f"cluster {state.name} restored from {snapshot} (copied to master0:{result.remote}) "
        f"in {result.seconds:.0f}s{resumed}"
    )


def register(group: click.Group) -> None:
    """Add this module's commands to the root group."""
    for command in (scale_up_cmd, join_cmd, delete_cmd, upgrade_cmd, status_cmd, etcd_group):
        group.add_command(command)
