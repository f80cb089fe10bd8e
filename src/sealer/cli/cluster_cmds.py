"""Cluster commands: `sealer validate`, `sealer apply` (plan, --dry-run, execute), `sealer diff`,
`sealer unlock`."""

from __future__ import annotations

import asyncio
import shlex
import sys
from dataclasses import replace
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sealer.apply.engine import RunOptions, RunSummary, summary_lines
from sealer.apply.lifecycle import DRAIN_TIMEOUT, Day2Options, apply_cluster, observed_nodes
from sealer.apply.progress import Progress
from sealer.apply.restore import refuse_if_restore_unfinished
from sealer.cli.output import emit_data, output_option, quiet_for
from sealer.cli.run_cmds import distributor_option
from sealer.errors import ImageError, PlanError, Problem
from sealer.image.service import image_info
from sealer.image.store import ImageStore, default_store_root
from sealer.model.cluster import Cluster, Clusterfile
from sealer.model.clusterfile import load_clusterfile, parse_clusterfile
from sealer.model.yamlnodes import MAX_BYTES
from sealer.plan import ObservedState, Plan, plan_clusterfile
from sealer.plan.diff import FieldChange, diff_clusterfiles
from sealer.state import ClusterLock, ClusterState, break_lock, check_cluster_name

_CLUSTERFILE_HELP = "Path of the Clusterfile (sealer.io/v2, multi-document YAML)."


def _console() -> Console:
    # Built per call so it writes to whatever stdout is now (CliRunner swaps it in tests).
    # No markup: every string printed is data (hosts, reasons, paths), never rich tags.
    return Console(highlight=False, soft_wrap=True, markup=False)


def _read_clusterfile(path: str) -> tuple[Clusterfile | None, list[Problem]]:
    """Decode a Clusterfile and keep every problem, warnings included (load_clusterfile keeps only
    the failure)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except IsADirectoryError:
        return None, [Problem("is a directory, not a Clusterfile", file=path,
                              hint="give the Clusterfile itself with -f, e.g. -f ./Clusterfile")]
    except OSError as err:
        return None, [Problem(f"cannot read the Clusterfile: {err.strerror}", file=path,
                              hint="check the path given with -f and that you may read it")]
    return parse_clusterfile(data, path)


def _summary(cluster: Cluster) -> dict[str, Any]:
    hosts = cluster.hosts
    masters = [h.ip for h in hosts if h.is_master]
    return {
        "name": cluster.name,
        "image": cluster.image,
        "hosts": len(hosts),
        "masters": len(masters),
        "workers": len(hosts) - len(masters),
        "master0": masters[0] if masters else None,
    }


# validate ----------------------------------------------------------------------------------------
@click.command("validate")
@click.option("-f", "--Clusterfile", "clusterfile", required=True, metavar="FILE", help=_CLUSTERFILE_HELP)
@output_option()
def validate_cmd(clusterfile: str, output: str) -> None:
    """Check a Clusterfile without touching any host.

    Prints every problem at once (errors and warnings), each with file:line:column, the field path
    and a hint. Exits 0 when the file is valid (warnings allowed), 1 when it has errors.

    \b
    Example:
      sealer validate -f Clusterfile
      sealer validate -f Clusterfile -o json     # for CI: {"valid": ..., "problems": [...]}
    """
    cf, problems = _read_clusterfile(clusterfile)
    errors = [p for p in problems if p.severity == "error"]
    valid = cf is not None and not errors
    data = {
        "file": clusterfile,
        "valid": valid,
        "problems": [
            {
                "severity": p.severity, "message": p.message, "file": p.file, "line": p.line,
                "column": p.column, "path": p.path, "hint": p.hint,
            }
            for p in problems
        ],
        "cluster": _summary(cf.cluster) if cf is not None else None,
    }
    if not emit_data(data, output):
        for problem in problems:
            click.echo(problem.render(), err=not valid)
        if valid and cf is not None:
            s = _summary(cf.cluster)
            warnings = len(problems)
            click.echo(
                f"{clusterfile}: valid: cluster {s['name']}, image {s['image'] or '(none)'}, "
                f"{s['hosts']} host(s): {s['masters']} master(s) (master0 {s['master0']}), "
                f"{s['workers']} worker(s)" + (f"; {warnings} warning(s)" if warnings else "")
            )
        else:
            click.echo(f"{clusterfile}: {len(errors)} error(s), {len(problems) - len(errors)} warning(s)",
                       err=True)
    if not valid:
        click.get_current_context().exit(1)


# apply ---------------------------------------------------------------------------------------------
_RUNTIME_ALIASES = {"k8s": "kubernetes"}


def _local_image_runtime(image: str | None) -> tuple[str | None, str | None]:
    """(cluster runtime type of `image` if it is in the local store, why it could not be read).
    Never pulls and never creates the store: planning must stay offline and side-effect free."""
    if not image:
        return None, None
    root = default_store_root()
    if not (root / "index.json").is_file():
        return None, f"image {image} is not in the local store"
    try:
        info = image_info(ImageStore(root), image)
    except ImageError as err:
        return None, err.message
    runtime = info.cluster_runtime.strip().lower()
    return _RUNTIME_ALIASES.get(runtime, runtime), None


def _load_current(state: ClusterState) -> tuple[Clusterfile | None, ObservedState]:
    current = state.last_applied()
    recorded = state.read_meta().get("runtime_type")
    runtime = str(recorded) if recorded else None
    if runtime is None and current is not None:
        # Not recorded by an apply yet: the image it was installed from tells, if it is still here.
        runtime, _ = _local_image_runtime(current.cluster.image)
    # The same node observation apply makes (hosts no longer nodes are joined again), so the
    # dry run shows what apply will do; no API answer: not looked at.
    nodes = asyncio.run(observed_nodes(state, current)) if current is not None else None
    return current, ObservedState(runtime_type=runtime, nodes=nodes)


def _plan(desired: Clusterfile, state: ClusterState) -> Plan:
    current, observed = _load_current(state)
    desired_runtime, unknown = _local_image_runtime(desired.cluster.image)
    plan = plan_clusterfile(desired, current, observed, desired_runtime_type=desired_runtime)
    if current is not None and desired_runtime is None and unknown:
        plan = replace(plan, notes=(*plan.notes, f"runtime type not checked yet: {unknown}; apply checks it "
                                    "after pulling the image"))
    return plan


# Values of these options are secrets; the lock file records the command line without them.
_SECRET_OPTIONS = ("-p", "--passwd", "--password", "--pk-passwd", "--sudo-passwd")


def _command_line(argv: list[str]) -> str:
    words: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            words.append("*****")
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        if name in _SECRET_OPTIONS:
            if eq:
                words.append(f"{name}=*****")
            else:
                words.append(arg)
                hide_next = True
            continue
        words.append(shlex.quote(arg))
    return "sealer " + " ".join(words)


def render_plan(plan: Plan, console: Console) -> None:
    """The plan as a table for people; `-o json` prints `plan.to_dict()` instead."""
    title = Text.assemble(
        ("Plan", "bold"), f" for cluster {plan.cluster} ", (f"({plan.operation})", "cyan"), f": {plan.reason}"
    )
    console.print(title)
    if plan.image and plan.previous_image and plan.image != plan.previous_image:
        console.print(f"image: {plan.previous_image} -> {plan.image}")
    if plan.actions:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
        table.add_column("#", no_wrap=True)
        table.add_column("ACTION", no_wrap=True)
        table.add_column("HOSTS", overflow="fold", max_width=34)
        table.add_column("AFTER", no_wrap=True)
        table.add_column("WHY", overflow="fold", ratio=1)
        for row in plan.rows():
            # Plain Text cells: a reason like "[set: disk=ssd]" is data, not rich markup.
            table.add_row(*(Text(cell) for cell in row))
        console.print(table)
    for note in plan.notes:
        console.print(f"note: {note}")


def _note_unfinished(cluster: str, lock: ClusterLock) -> None:
    """Say so when the lock just taken was left by an operation that died."""
    if lock.previous_holder is not None:
        click.echo(
            f"note: the last operation on cluster {cluster}, {lock.previous_holder.describe()}, "
            "did not finish",
            err=True,
        )


def _confirm(question: str) -> bool:
    """Ask on the terminal; no answer (EOF, no terminal) is a no."""
    try:
        return click.confirm(question, default=False, err=True)
    except click.Abort:
        return False


def run_apply(
    desired: Clusterfile,
    state: ClusterState,
    *,
    command: str,
    yes: bool,
    output: str,
    kind: str = "apply",
    drain_timeout: float = DRAIN_TIMEOUT,
    ready_timeout: float = 600.0,
    worker_batch: int = 1,
    distributor: str = "auto",
) -> None:
    """Plan and execute under the cluster lock (the plan is shown, and confirmed when it removes
    hosts), journaling every step. Shared by apply, scale-up, delete -m/-n and upgrade."""
    shown: list[Plan] = []

    def on_plan(plan: Plan) -> None:
        shown.append(plan)
        if output == "table":
            render_plan(plan, _console())

    quiet = quiet_for(output)
    day2 = Day2Options(
        yes=yes, confirm=_confirm, on_plan=on_plan, drain_timeout=drain_timeout, worker_batch=worker_batch
    )
    options = RunOptions(command=command, ready_timeout=ready_timeout, distributor=distributor)
    with state.lock(command) as lock:
        _note_unfinished(state.name, lock)
        refuse_if_restore_unfinished(state, f"`{command}`")
        result = asyncio.run(
            apply_cluster(desired, state=state, options=options, day2=day2, progress=Progress(quiet=quiet),
                          kind=kind)
        )
    data = {"plan": shown[-1].to_dict() if shown else None, "result": result.to_dict()}
    if emit_data(data, output):
        return
    lines = summary_lines(result) if isinstance(result, RunSummary) else result.lines()
    console = _console()
    for line in lines:
        console.print(line)


@click.command("apply")
@click.option("-f", "--Clusterfile", "clusterfile", required=True, metavar="FILE", help=_CLUSTERFILE_HELP)
@click.option("--dry-run", is_flag=True, help="Only print the plan: what would be done, where and why.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before removing hosts.")
@click.option("--drain-timeout", type=float, default=DRAIN_TIMEOUT, show_default=True,
              help="Seconds to wait for a node's pods to leave before giving up.")
@click.option("--ready-timeout", type=float, default=600.0, show_default=True,
              help="Seconds to wait for nodes to be Ready.")
@distributor_option()
@output_option()
def apply_cmd(clusterfile: str, dry_run: bool, yes: bool, drain_timeout: float, ready_timeout: float,
              distributor: str, output: str) -> None:
    """Make the cluster look like the Clusterfile.

    Compares the Clusterfile with the one last applied to this cluster (kept in
    $SEALER_HOME/<name>/Clusterfile, default ~/.sealer) and plans the difference: create the
    cluster, add or remove masters and workers, upgrade to a new image, update labels, taints,
    env and host aliases in place. Transitions that cannot be done in place (k3s -> k0s, a new
    master0, a host switching between master and node, another IP family) are refused with the
    reason and what to do instead. Only one apply runs on a cluster at a time.

    Removed hosts are drained, deleted from the cluster and reset (asks first unless --yes). Every
    step is journaled: after a failure, run the same command again to resume where it stopped
    (`sealer status` shows what is unfinished).

    \b
    Example:
      sealer apply -f Clusterfile --dry-run            # the plan as a table
      sealer apply -f Clusterfile --dry-run -o json    # the plan for programs (schema: sealer.plan.schema)
      sealer apply -f Clusterfile -y                   # execute it without asking
    """
    desired = load_clusterfile(clusterfile)
    state = ClusterState(desired.cluster.name)
    if dry_run:
        plan = _plan(desired, state)
        if not emit_data(plan.to_dict(), output):
            render_plan(plan, _console())
        return
    run_apply(desired, state, command=_command_line(sys.argv[1:]), yes=yes, output=output,
              drain_timeout=drain_timeout, ready_timeout=ready_timeout, distributor=distributor)


# diff -----------------------------------------------------------------------------------------------
def _render_changes(changes: list[FieldChange], console: Console) -> None:
    styles = {"added": "green", "removed": "red", "changed": "yellow"}
    for change in changes:
        console.print(Text(change.text(), style=styles[change.change]))


@click.command("diff")
@click.option("-f", "--Clusterfile", "clusterfile", required=True, metavar="FILE", help=_CLUSTERFILE_HELP)
@click.option(
    "--exit-code", is_flag=True, help="Exit 2 when there are differences (like `git diff --exit-code`)."
)
@output_option()
def diff_cmd(clusterfile: str, exit_code: bool, output: str) -> None:
    """Show what changed in a Clusterfile since it was last applied.

    Field by field, in the file's own terms (Cluster.spec.hosts[1].labels.disk), followed by what
    `sealer apply` would do about it. Passwords and other secrets are compared but never shown;
    Config data and Plugin scripts are summarised.

    \b
    Example:
      sealer diff -f Clusterfile
      sealer diff -f Clusterfile -o json
    """
    desired = load_clusterfile(clusterfile)
    state = ClusterState(desired.cluster.name)
    current = state.last_applied()
    if current is None:
        data: dict[str, Any] = {
            "cluster": desired.cluster.name, "lastApplied": None, "changes": [],
            "message": f"no last-applied state for cluster {desired.cluster.name}: "
            "`sealer apply` would create it",
        }
        if not emit_data(data, output):
            click.echo(
                f"no last-applied state for cluster {desired.cluster.name} ({state.clusterfile_path} "
                "does not exist): `sealer apply` would create the cluster"
            )
        return
    changes = diff_clusterfiles(current, desired)
    try:
        plan: Plan | None = _plan(desired, state)
        refusal = None
    except PlanError as err:
        plan, refusal = None, err
    data = {
        "cluster": desired.cluster.name,
        "lastApplied": str(state.clusterfile_path),
        "changes": [c.to_dict() for c in changes],
        "apply": plan.reason if plan else None,
        "refused": {"message": refusal.message, "hint": refusal.hint} if refusal else None,
    }
    if not emit_data(data, output):
        console = _console()
        if not changes:
            console.print(f"no differences from the last-applied Clusterfile ({state.clusterfile_path})")
        else:
            console.print(f"--- last applied ({state.clusterfile_path})\n+++ {clusterfile}")
            _render_changes(changes, console)
        if refusal is not None:
            click.echo(refusal.render())
        elif plan is not None and not plan.empty:
            console.print(f"apply would: {plan.reason} ({len(plan.actions)} action(s); see apply --dry-run)")
    if exit_code and changes:
        click.get_current_context().exit(2)


# unlock ---------------------------------------------------------------------------------------------
@click.command("unlock")
@click.option("--cluster", "cluster", metavar="NAME", help="metadata.name of the cluster.")
@click.option("-f", "--Clusterfile", "clusterfile", metavar="FILE", help="Or: the cluster this file names.")
@click.option("--force", is_flag=True,
              help="Break a lock held from another machine (sealer cannot check that process is gone).")
def unlock_cmd(cluster: str | None, clusterfile: str | None, force: bool) -> None:
    """Break a stale cluster lock.

    An apply or run holds the cluster lock until it ends; a crashed one normally releases it by
    itself. Use this when sealer reports the cluster locked and the holder is gone. A live holder
    on this machine is never broken; a holder on another machine (state on a shared disk) needs
    --force once you have checked it is not running.

    \b
    Example:
      sealer unlock --cluster prod-a
      sealer unlock -f Clusterfile --force
    """
    if (cluster is None) == (clusterfile is None):
        raise click.UsageError("name the cluster with exactly one of --cluster NAME or -f Clusterfile")
    name = cluster if cluster is not None else load_clusterfile(str(clusterfile)).cluster.name
    state = ClusterState(check_cluster_name(name))
    if not state.exists():
        click.echo(f"cluster {name} has no state in {state.home}; nothing to unlock")
        return
    click.echo(break_lock(state.lock_path, name, force=force))


def register(group: click.Group) -> None:
    """Add this module's commands to the root group."""
    for command in (validate_cmd, apply_cmd, diff_cmd, unlock_cmd):
        group.add_command(command)

