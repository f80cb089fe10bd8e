"""Host commands: `sealer exec` and `sealer cp` on the hosts of a Clusterfile, `sealer hosts forget`."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from sealer.cli.output import emit_data, output_option, quiet_for
from sealer.errors import SealerError
from sealer.infra.connector import Outcome, Result, TransferStats
from sealer.infra.fleet import Fleet
from sealer.infra.host import Target, targets_from_cluster
from sealer.infra.knownhosts import KnownHostsFile
from sealer.model.cluster import Cluster
from sealer.state.store import ClusterState

T = TypeVar("T")


def _split(values: Sequence[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _load_cluster(clusterfile: str | None, cluster_name: str | None) -> Cluster:
    from sealer.model.clusterfile import load_clusterfile, parse_clusterfile

    if clusterfile:
        return load_clusterfile(clusterfile).cluster
    if cluster_name:
        state = ClusterState(cluster_name)
        text = state.read_clusterfile()
        if text is None:
            raise SealerError(
                f"cluster {cluster_name!r} has no applied Clusterfile in {state.dir}",
                "pass the Clusterfile with -f, or check the name with `sealer status`",
            )
        parsed, problems = parse_clusterfile(text, str(state.clusterfile_path))
        if parsed is None:
            from sealer.errors import ClusterfileError

            raise ClusterfileError(problems)
        return parsed.cluster
    raise click.UsageError("give the cluster's hosts with -f CLUSTERFILE or -c CLUSTER")


def select_targets(cluster: Cluster, roles: Sequence[str], ips: Sequence[str]) -> list[Target]:
    """The cluster's hosts filtered by role (any of) and IP; an unknown IP or role is an error."""
    wanted_roles = _split(roles)
    wanted_ips = _split(ips)
    hosts = list(cluster.hosts)
    for ip in wanted_ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise SealerError(f"--ips: {ip!r} is not an IP address", "give IPs like 10.0.0.2,10.0.0.3")
        if cluster.host(ip) is None:
            raise SealerError(
                f"--ips: {ip} is not a host of cluster {cluster.name}",
                f"hosts are: {', '.join(h.ip for h in hosts) or 'none'}",
            )
    known_roles = {r for h in hosts for r in h.roles}
    for role in wanted_roles:
        if role not in known_roles:
            raise SealerError(
                f"--roles: no host of cluster {cluster.name} has role {role!r}",
                f"roles in the Clusterfile: {', '.join(sorted(known_roles)) or 'none'}",
            )
    chosen = [
        h
        for h in hosts
        if (not wanted_roles or set(wanted_roles) & set(h.roles)) and (not wanted_ips or h.ip in wanted_ips)
    ]
    if not chosen:
        raise SealerError("no host matches the given --roles/--ips", "drop a filter or fix it")
    chosen_ips = {h.ip for h in chosen}
    return [t for t in targets_from_cluster(cluster) if t.address in chosen_ips]


def _fleet(cluster: Cluster, operation: str, max_handshakes: int, connect_timeout: float) -> Fleet:
    state = ClusterState(cluster.name)
    state.ensure()
    return Fleet(
        known_hosts=state.known_hosts_path,
        logdir=state.logs_dir / operation,
        max_handshakes=max_handshakes,
        connect_timeout=connect_timeout,
        cluster=cluster.name,
    )


def _message(outcome: Outcome[Any]) -> str:
    """The error without the "host: " prefix (the host has its own column/field)."""
    err = outcome.error
    if err is None:
        return ""
    return err.message.removeprefix(f"{outcome.host}: ")


def _error_dict(outcome: Outcome[Any]) -> dict[str, Any]:
    err = outcome.error
    if err is None:
        return {}
    return {"error": _message(outcome), "hint": err.hint, "kind": type(err).__name__}


def _roles_of(targets: Sequence[Target]) -> dict[str, str]:
    return {t.name: ",".join(t.roles) for t in targets}


def _console() -> Console:
    return Console(soft_wrap=True, highlight=False)


def _first_line(text: str, width: int = 60) -> str:
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def _print_table_and_summary(
    console: Console, table: Table, outcomes: Sequence[Outcome[Any]], logdir: Path | None
) -> None:
    """The per-host table, then how many hosts are ok, each failed host's hint and where the logs are."""
    console.print(table)
    failed = [o for o in outcomes if not o.ok]
    summary = f"{len(outcomes) - len(failed)}/{len(outcomes)} hosts ok"
    console.print(summary if not failed else f"[red]{summary}[/]")
    for o in failed:
        if o.error is not None and o.error.hint:
            console.print(f"  {o.host}: hint: {o.error.hint}", style="dim")
    if failed and logdir is not None:
        console.print(f"  per-host logs: {logdir}/<host>.log", style="dim")


def _host_items(
    outcomes: Sequence[Outcome[T]], targets: Sequence[Target], fields: Callable[[T], dict[str, Any]]
) -> list[dict[str, Any]]:
    """One dict per host for -o json/yaml: host, roles, ok, the value's fields, any error."""
    roles = _roles_of(targets)
    data: list[dict[str, Any]] = []
    for o in outcomes:
        item: dict[str, Any] = {"host": o.host, "roles": roles.get(o.host, ""), "ok": o.ok}
        if o.value is not None:
            item.update(fields(o.value))
        item.update(_error_dict(o))
        data.append(item)
    return data


def print_host_output(outcome: Outcome[Result]) -> None:
    """One host's output, printed as soon as that host is done."""
    r = outcome.value
    if r is None:
        return
    console = _console()
    console.rule(f"{outcome.host} (exit {r.exit_code}, {r.duration:.2f}s)", align="left")
    if r.stdout:
        console.out(r.stdout.rstrip("\n"), highlight=False)
    if r.stderr:
        console.out(r.stderr.rstrip("\n"), style="red", highlight=False)


def render_exec(
    outcomes: Sequence[Outcome[Result]], targets: Sequence[Target], logdir: Path | None = None
) -> None:
    console = _console()
    roles = _roles_of(targets)
    table = Table(title=None, show_edge=False)
    for col in ("HOST", "ROLES", "STATUS", "TIME", "DETAIL"):
        table.add_column(col)
    for o in outcomes:
        if o.error is not None:
            table.add_row(o.host, roles.get(o.host, ""), "[red]error[/]", "-", _message(o))
        elif o.value is not None:
            r = o.value
            status = "[green]ok[/]" if r.ok else f"[red]exit {r.exit_code}[/]"
            detail = _first_line(r.stderr if not r.ok else r.stdout)
            table.add_row(o.host, roles.get(o.host, ""), status, f"{r.duration:.2f}s", detail)
    _print_table_and_summary(console, table, outcomes, logdir)


def exec_data(outcomes: Sequence[Outcome[Result]], targets: Sequence[Target]) -> list[dict[str, Any]]:
    return _host_items(
        outcomes,
        targets,
        lambda r: {
            "exit_code": r.exit_code,
            "stdout": r.stdout,
            "stderr": r.stderr,
            "duration": round(r.duration, 3),
        },
    )


def copy_data(outcomes: Sequence[Outcome[TransferStats]], targets: Sequence[Target]) -> list[dict[str, Any]]:
    return _host_items(
        outcomes,
        targets,
        lambda s: {
            "files_sent": s.files_sent,
            "files_skipped": s.files_skipped,
            "bytes_sent": s.bytes_sent,
            "duration": round(s.duration, 3),
        },
    )


def render_copy(
    outcomes: Sequence[Outcome[TransferStats]], targets: Sequence[Target], logdir: Path | None = None
) -> None:
    console = _console()
    roles = _roles_of(targets)
    table = Table(show_edge=False)
    for col in ("HOST", "ROLES", "STATUS", "SENT", "SKIPPED", "BYTES", "TIME", "DETAIL"):
        table.add_column(col)
    for o in outcomes:
        if o.error is not None or o.value is None:
            message = _message(o) if o.error is not None else "no result"
            table.add_row(o.host, roles.get(o.host, ""), "[red]error[/]", "-", "-", "-", "-", message)
        else:
            s = o.value
            table.add_row(
                o.host,
                roles.get(o.host, ""),
                "[green]ok[/]",
                str(s.files_sent),
                str(s.files_skipped),
                str(s.bytes_sent),
                f"{s.duration:.2f}s",
                "",
            )
    _print_table_and_summary(console, table, outcomes, logdir)


def _host_options(f: Any) -> Any:
    f = click.option("-f", "--clusterfile", type=click.Path(dir_okay=False), help="The Clusterfile.")(f)
    f = click.option(
        "-c", "--cluster", "cluster_name", help="A cluster applied before (its saved Clusterfile)."
    )(f)
    f = click.option(
        "-r",
        "--roles",
        multiple=True,
        help="Only hosts with one of these roles (comma-separated or repeated).",
    )(f)
    f = click.option("--ips", multiple=True, help="Only these host IPs (comma-separated or repeated).")(f)
    f = click.option("--sudo", is_flag=True, help="Run as root via sudo when the login user is not root.")(f)
    f = click.option(
        "--max-handshakes",
        type=click.IntRange(1, 1024),
        default=32,
        show_default=True,
        help="SSH handshakes in flight at once (sshd's MaxStartups is 10:30:100 by default).",
    )(f)
    f = click.option(
        "--connect-timeout", type=click.FloatRange(0.1), default=10.0, show_default=True, help="Seconds."
    )(f)
    return f


@click.command("exec", context_settings={"ignore_unknown_options": False})
@_host_options
@click.option(
    "--timeout", type=click.FloatRange(0.1), default=None, help="Per-host command timeout, seconds."
)
@output_option()
@click.argument("command", nargs=-1, required=True)
@click.pass_context
def exec_cmd(
    ctx: click.Context,
    clusterfile: str | None,
    cluster_name: str | None,
    roles: tuple[str, ...],
    ips: tuple[str, ...],
    sudo: bool,
    max_handshakes: int,
    connect_timeout: float,
    timeout: float | None,
    output: str,
    command: tuple[str, ...],
) -> None:
    """Run a shell command on the cluster's hosts in parallel (put it after `--`).

    \b
      sealer exec -f Clusterfile -- systemctl is-active kubelet
      sealer exec -f Clusterfile --roles master -o json -- 'df -h /'

    Each host's output goes to ~/.sealer/<cluster>/logs/exec/<ip>.log too. Exit status 1 if any
    host failed (could not be reached or the command exited non-zero).
    """
    cluster = _load_cluster(clusterfile, cluster_name)
    targets = select_targets(cluster, roles, ips)
    cmd = " ".join(command)

    live = not quiet_for(output)

    async def go() -> list[Outcome[Result]]:
        async with _fleet(cluster, "exec", max_handshakes, connect_timeout) as fleet:
            return await fleet.run_many(
                targets,
                cmd,
                sudo=sudo,
                host_env=True,
                timeout=timeout,
                on_done=print_host_output if live else None,
            )

    outcomes = asyncio.run(go())
    if not emit_data(exec_data(outcomes, targets), output):
        render_exec(outcomes, targets, ClusterState(cluster.name).logs_dir / "exec")
    if not all(o.ok for o in outcomes):
        ctx.exit(1)


@click.command("cp")
@_host_options
@output_option()
@click.option(
    "--fanout",
    is_flag=True,
    help="Send the data out of this machine once: hosts pass it on to each other while receiving "
    "(sha256-verified, resumable, slow or failed hosts routed around). See docs/distribution.md.",
)
@click.argument("src", type=click.Path(exists=True))
@click.argument("dst")
@click.pass_context
def cp_cmd(
    ctx: click.Context,
    clusterfile: str | None,
    cluster_name: str | None,
    roles: tuple[str, ...],
    ips: tuple[str, ...],
    sudo: bool,
    max_handshakes: int,
    connect_timeout: float,
    output: str,
    fanout: bool,
    src: str,
    dst: str,
) -> None:
    """Copy a local file or directory to the cluster's hosts.

    \b
      sealer cp -f Clusterfile ./app.conf /etc/app/app.conf   # a file to that path
      sealer cp -f Clusterfile ./bin/ /usr/local/bin/ --sudo  # a directory's contents into a dir

    Files already present and equal (sha256, mode) are skipped; each file lands whole (temp name,
    then rename), so an interrupted copy leaves no half-written file. Exit status 1 if any host failed.
    """
    cluster = _load_cluster(clusterfile, cluster_name)
    targets = select_targets(cluster, roles, ips)
    if dst.strip() in ("", "."):
        raise click.UsageError("DST must be a path on the hosts, e.g. /opt/app/ or /etc/app.conf")

    live = not quiet_for(output)

    def progress(o: Outcome[TransferStats]) -> None:
        s = o.value
        if s is not None:
            _console().print(
                f"{o.host}: sent {s.files_sent} file(s) ({s.bytes_sent} bytes), "
                f"{s.files_skipped} already equal, {s.duration:.2f}s",
                style="dim",
            )

    async def go() -> list[Outcome[TransferStats]]:
        async with _fleet(cluster, "cp", max_handshakes, connect_timeout) as fleet:
            if fanout:
                from sealer.infra.fanout import fanout_copy
                from sealer.infra.fanout_render import live_view

                if not live:
                    return (await fanout_copy(fleet, targets, src, dst, sudo=sudo)).outcomes
                with live_view(_console()) as view:
                    return (await fanout_copy(fleet, targets, src, dst, sudo=sudo, progress=view)).outcomes
            return await fleet.copy_many(targets, src, dst, sudo=sudo, on_done=progress if live else None)

    outcomes = asyncio.run(go())
    if not emit_data(copy_data(outcomes, targets), output):
        render_copy(outcomes, targets, ClusterState(cluster.name).logs_dir / "cp")
    if not all(o.ok for o in outcomes):
        ctx.exit(1)


@click.group("hosts")
def hosts_group() -> None:
    """Manage what sealer knows about a cluster's hosts (pinned SSH host keys)."""


@hosts_group.command("forget")
@click.argument("ips", nargs=-1, required=True)
@click.option("-c", "--cluster", "cluster_name", required=True, help="The cluster whose known_hosts to edit.")
@click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True)
def forget_cmd(ips: tuple[str, ...], cluster_name: str, port: int) -> None:
    """Drop the pinned host key of IPS, so the next connection records the key the host has now.

    Do this only after checking the new key's fingerprint out of band (e.g. on the host's console:
    `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`).
    """
    state = ClusterState(cluster_name)
    store = KnownHostsFile(state.known_hosts_path)
    total = 0
    for ip in _split(ips):
        removed = store.forget(ip, port)
        total += removed
        click.echo(f"{ip}: {'forgot ' + str(removed) + ' key(s)' if removed else 'no pinned key'}")
    if not total:
        click.echo(f"nothing pinned for those hosts in {store.path}", err=True)


def register(group: click.Group) -> None:
    """Add this module's commands to the root group."""
    group.add_command(exec_cmd)
    group.add_command(cp_cmd)
    group.add_command(hosts_group)
