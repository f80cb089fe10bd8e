"""`sealer run`: install a cluster from a ClusterImage onto hosts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import click
import yaml
from rich.console import Console

from sealer.apply.engine import ClusterExistsError, RunOptions, command_line, run_cluster, summary_lines
from sealer.apply.progress import Progress
from sealer.apply.rootfs import AUTO_FANOUT_MIN_HOSTS, DISTRIBUTORS
from sealer.cli.output import emit_data, output_option, quiet_for
from sealer.errors import InputError, Problem
from sealer.model.cluster import Clusterfile
from sealer.model.clusterfile import load_clusterfile, parse_clusterfile

DEFAULT_CLUSTER_NAME = "my-cluster"


def _split(values: tuple[str, ...]) -> list[str]:
    """`-m 10.0.0.1,10.0.0.2 -m 10.0.0.5-10.0.0.7` -> entries (ranges are expanded by the model)."""
    out: list[str] = []
    for value in values:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


def _own_address() -> str:
    """This machine's address towards the outside (the source of its default route), as Go sealer
    uses when no hosts are given; loopback when there is no route at all."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def construct_cluster(
    image: str,
    *,
    name: str,
    masters: list[str],
    nodes: list[str],
    user: str | None,
    password: str | None,
    pk: str | None,
    pk_password: str | None,
    port: int | None,
    env: list[str],
    cmds: list[str],
    apps: list[str] | None,
) -> Clusterfile:
    """The Clusterfile `sealer run` flags describe (Go sealer's ConstructClusterForRun), decoded
    and checked by the same parser as a Clusterfile, so bad flags get the same clear problems."""
    if not masters:
        if nodes:
            raise InputError(
                [Problem("--nodes given without --masters", hint="give at least one master with -m")],
                "command line",
            )
        masters = [_own_address()]
    ssh: dict[str, Any] = {}
    for key, value in (
        ("user", user),
        ("passwd", password),
        ("pk", pk),
        ("pkPasswd", pk_password),
        ("port", str(port) if port else None),
    ):
        if value:
            ssh[key] = value
    hosts: list[dict[str, Any]] = [{"ips": masters, "roles": ["master"]}]
    if nodes:
        hosts.append({"ips": nodes, "roles": ["node"]})
    spec: dict[str, Any] = {"image": image, "hosts": hosts}
    if ssh:
        spec["ssh"] = ssh
    if env:
        spec["env"] = env
    if cmds:
        spec["cmd"] = cmds
    if apps is not None:
        spec["appNames"] = apps
    doc = {"apiVersion": "sealer.io/v2", "kind": "Cluster", "metadata": {"name": name}, "spec": spec}
    text = yaml.safe_dump(doc, sort_keys=False)
    clusterfile, problems = parse_clusterfile(text, "command line")
    if clusterfile is None:
        # Name the flag, not the position in a YAML document the user never saw.
        errors = [p for p in problems if p.severity == "error"] or problems
        raise InputError([_as_flag_problem(p) for p in errors], "the command line")
    return clusterfile


_FLAG_OF_PATH = (
    ("spec.hosts[0]", "--masters"),
    ("spec.hosts[1]", "--nodes"),
    ("spec.ssh.passwd", "--passwd"),
    ("spec.ssh.pkPasswd", "--pk-passwd"),
    ("spec.ssh.pk", "--pk"),
    ("spec.ssh.port", "--port"),
    ("spec.ssh.user", "--user"),
    ("spec.env", "--env"),
    ("spec.cmd", "--cmds"),
    ("spec.appNames", "--apps"),
    ("spec.image", "IMAGE"),
    ("metadata.name", "--cluster"),
)


def _as_flag_problem(problem: Problem) -> Problem:
    flag = next((f for prefix, f in _FLAG_OF_PATH if (problem.path or "").startswith(prefix)), None)
    return Problem(
        problem.message, file="command line", path=flag, hint=problem.hint, severity=problem.severity
    )


DISTRIBUTOR_HELP = (
    "How the image's rootfs and registry data reach the hosts. auto: host to host (fan-out: sent "
    f"once out of this machine, each host passes it on) for what {AUTO_FANOUT_MIN_HOSTS} or more "
    "hosts need, straight from this machine otherwise. Why (bench/run_distribute.py, every link "
    "50 Mbit/s, 89 MB rootfs): the fan-out takes 0.48x the direct time for 3 hosts and 0.25x for "
    "6; for 2 hosts it wins only if this machine's link is no faster than a node's (0.66x, but "
    "1.16x with a 4x faster link) and it briefly adds a restricted key on the hosts. The registry "
    "data only master0 needs goes in one direct stream, alongside the fan-out. ssh: every host "
    "straight from this machine (when its link is many times faster than the hosts'). fanout: host "
    "to host whenever 2 or more hosts need it. Each host's journaled step checks the result by "
    "content and copies what is missing; a failed fan-out falls back to it. docs/distribution.md."
)


def distributor_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--distributor`, shared by `sealer run`, `apply`, `scale-up`/`join` and `upgrade`."""
    return click.option(
        "--distributor",
        type=click.Choice(list(DISTRIBUTORS)),
        default="auto",
        show_default=True,
        help=DISTRIBUTOR_HELP,
    )


@click.command("run")
@click.argument("image", required=False)
@click.option(
    "-m",
    "--masters",
    multiple=True,
    metavar="IPS",
    help="Master IPs: comma-separated, ranges as 10.0.0.2-10.0.0.4 (repeatable).",
)
@click.option("-n", "--nodes", multiple=True, metavar="IPS", help="Worker IPs, like --masters.")
@click.option("-u", "--user", default=None, help="SSH user (default root).")
@click.option("-p", "--passwd", "password", default=None, help="SSH password.")
@click.option("--pk", default=None, metavar="FILE", help="SSH private key file (default ~/.ssh/id_rsa etc.).")
@click.option("--pk-passwd", "pk_password", default=None, help="Passphrase of the private key.")
@click.option("--port", type=int, default=None, help="SSH port (default 22).")
@click.option(
    "-e", "--env", multiple=True, metavar="K=V", help="Cluster env for hooks and apps (repeatable)."
)
@click.option(
    "--cmds", multiple=True, metavar="CMD", help="Run these on master0 instead of the image's launch."
)
@click.option(
    "--apps", default=None, metavar="NAMES", help="Launch these apps of the image (comma-separated)."
)
@click.option(
    "--cluster",
    "cluster_name",
    default=None,
    metavar="NAME",
    help=f"Cluster name (default {DEFAULT_CLUSTER_NAME}).",
)
@click.option(
    "-f",
    "--Clusterfile",
    "clusterfile",
    default=None,
    metavar="FILE",
    help="Run the cluster a Clusterfile describes (IMAGE, if given, replaces spec.image).",
)
@distributor_option()
@click.option(
    "--ready-timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds to wait for every node to be Ready.",
)
@output_option()
@click.pass_context
def run_cmd(
    ctx: click.Context,
    image: str | None,
    masters: tuple[str, ...],
    nodes: tuple[str, ...],
    user: str | None,
    password: str | None,
    pk: str | None,
    pk_password: str | None,
    port: int | None,
    env: tuple[str, ...],
    cmds: tuple[str, ...],
    apps: str | None,
    cluster_name: str | None,
    clusterfile: str | None,
    ready_timeout: float,
    distributor: str,
    output: str,
) -> None:
    """Install a cluster from a ClusterImage onto hosts, offline.

    Copies the image's rootfs to every host, starts a private registry on master0 serving the
    image's container images (every host pulls through it), installs the cluster runtime the image
    names (label cluster.alpha.sealer.io/cluster-runtime-type: k3s, kubernetes or k0s), waits for
    every node to be Ready, applies labels and taints, launches the image's apps and keeps the
    cluster's state in $SEALER_HOME/<name>/ (default ~/.sealer).

    A failed run can be re-run as is: finished steps are not done again. Running an existing
    cluster changes nothing (use `sealer apply` to change it). No hosts: this machine.

    \b
    Example:
      sealer run docker.io/sealerio/k3s:v1.30.6 -m 192.168.0.2 -n 192.168.0.3-192.168.0.4 -p Secret
      sealer run my-k3s:latest -m 10.0.0.2 --pk ~/.ssh/id_ed25519 --cluster edge
      sealer run -f Clusterfile
    """
    if clusterfile:
        if masters or nodes:
            raise InputError(
                [
                    Problem(
                        "-m/-n cannot be combined with -f",
                        hint="list the hosts in the Clusterfile's spec.hosts",
                    )
                ],
                "command line",
            )
        cf = load_clusterfile(clusterfile)
        if image:
            cf = Clusterfile(
                cluster=_with_image(cf, image),
                configs=cf.configs,
                plugins=cf.plugins,
                kubeadm_documents=cf.kubeadm_documents,
                other_documents=cf.other_documents,
                source=cf.source,
            )
    else:
        if not image:
            raise click.UsageError("give the ClusterImage to run (IMAGE) or a Clusterfile (-f)")
        cf = construct_cluster(
            image,
            name=cluster_name or DEFAULT_CLUSTER_NAME,
            masters=_split(masters),
            nodes=_split(nodes),
            user=user,
            password=password,
            pk=pk,
            pk_password=pk_password,
            port=port,
            env=list(env),
            cmds=list(cmds),
            apps=[a for a in apps.split(",") if a] if apps is not None else None,
        )
    quiet = quiet_for(output)
    progress = Progress(quiet=quiet)
    options = RunOptions(ready_timeout=ready_timeout, command=command_line(), distributor=distributor)
    try:
        summary = asyncio.run(run_cluster(cf, options=options, progress=progress))
    except ClusterExistsError as err:
        if not err.same:
            raise
        if not emit_data({"cluster": cf.cluster.name, "exists": True, "changed": False}, output):
            click.echo(err.message)
        return
    if not emit_data(summary.to_dict(), output):
        console = Console(highlight=False, soft_wrap=True)
        for line in summary_lines(summary):
            console.print(line)


def _with_image(cf: Clusterfile, image: str) -> Any:
    from dataclasses import replace

    return replace(cf.cluster, image=image)


def register(group: click.Group) -> None:
    """Add this module's commands to the root group."""
    group.add_command(run_cmd)
