"""`sealer build`: Kubefile -> ClusterImage (`--dry-run` parses, checks and shows the plan)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from sealer.cli.output import emit_data, output_option, quiet_for
from sealer.errors import ImageError, InputError, Problem
from sealer.image.build import (
    BUILD_MODES,
    IMAGE_TYPES,
    BuildOptions,
    BuildPlan,
    build_image,
    local_store_resolver,
    plan_build,
)
from sealer.image.kubefile import parse_platform
from sealer.image.oci import Platform
from sealer.image.registry import RegistryOptions
from sealer.image.store import ImageStore


def _platforms(value: str | None) -> list[Platform]:
    if not value:
        return []
    out: list[Platform] = []
    for part in value.split(","):
        if not part.strip():
            continue
        try:
            out.append(parse_platform(part))
        except ImageError as err:
            raise click.BadParameter(err.message, param_hint="--platform") from None
    return out


def _build_args(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    problems: list[Problem] = []
    for value in values:
        key, eq, val = value.partition("=")
        if not eq or not key:
            problems.append(
                Problem(f"--build-arg {value!r} is not KEY=VALUE", hint="--build-arg Version=1.2")
            )
            continue
        out[key] = val
    if problems:
        raise InputError(problems, "command line")
    return out


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def render_plan(plan: BuildPlan, console: Console) -> None:
    """The dry-run report: steps, apps, launch, env/labels, images to collect, warnings."""
    kubefile = plan.primary
    console.print(
        f"[bold]Kubefile[/] {plan.kubefile_path}  [bold]context[/] {plan.options.context}  "
        f"[bold]base[/] {kubefile.base}  [bold]platforms[/] {', '.join(plan.kubefiles)}"
        + (f"  [bold]tag[/] {plan.tag}" if plan.tag else "")
    )
    steps = Table(title="steps", title_justify="left")
    for column in ("line", "instruction", "what", "layer"):
        steps.add_column(column)
    for step in kubefile.steps:
        steps.add_row(
            str(step.line), step.instruction, step.summary(), "yes" if step.changes_filesystem else ""
        )
    console.print(steps)
    if kubefile.applications:
        apps = Table(title="applications", title_justify="left")
        for column in ("name", "type", "files", "APPCMDS", "from"):
            apps.add_column(column)
        for app in kubefile.applications.values():
            apps.add_row(
                app.name,
                app.type or "(none)",
                ", ".join(app.files),
                " ".join(app.cmds),
                app.inherited_from or f"line {app.line}",
            )
        console.print(apps)
    launch = kubefile.launch_commands()
    inherited = " (inherited from the base image)" if kubefile.launch_inherited else ""
    console.print(f"[bold]launch{inherited}:[/]" + ("" if launch else " nothing"))
    for cmd in launch:
        console.print(f"  {cmd}", markup=False)
    for title, data in (("env", kubefile.env), ("labels", kubefile.labels)):
        if data:
            console.print(f"[bold]{title}:[/]")
            for key, value in data.items():
                console.print(f"  {key}={value}", markup=False)
    images = plan.collection.images
    mode = "" if plan.options.build_mode == "all" else " (build mode lite: not pulled)"
    console.print(f"[bold]container images to collect{mode}:[/] {len(images)}")
    for found in images:
        owner = f" [app {found.app}]" if found.app else ""
        console.print(f"  {found.image}  <- {found.source}{owner}", markup=False)
    remote = [src.path for step in kubefile.steps for src in step.sources if src.remote]
    if remote:
        console.print(
            f"  (+ whatever the {len(remote)} remote source(s) reference: a dry run does not download them)",
            markup=False,
        )
    for name in plan.collection.ignored:
        console.print(f"  ignored: {name}", markup=False)
    for problem in plan.collection.skipped + plan.warnings():
        console.print(problem.render(), markup=False, style="yellow")


def register(group: click.Group) -> None:
    """Add this module's commands to the root group."""

    @group.command()
    @click.argument("context", type=click.Path(path_type=Path), default=".")
    @click.option(
        "-f",
        "--file",
        "kubefile",
        type=click.Path(path_type=Path),
        help="Kubefile (default: CONTEXT/Kubefile).",
    )
    @click.option("-t", "--tag", help="Name of the ClusterImage, e.g. my-k3s:v1.27.")
    @click.option("--platform", help="Target platforms, comma-separated: linux/amd64,linux/arm64.")
    @click.option(
        "--build-arg", "build_args", multiple=True, metavar="KEY=VALUE", help="Set an ARG (repeatable)."
    )
    @click.option(
        "--image-list",
        "image_lists",
        multiple=True,
        type=click.Path(path_type=Path),
        help="Extra images, one a line.",
    )
    @click.option(
        "--ignored-image-list",
        "ignored_lists",
        multiple=True,
        type=click.Path(path_type=Path),
        help="Images not to collect, one a line.",
    )
    @click.option("--build-mode", type=click.Choice(BUILD_MODES), default="all", show_default=True,
                  help="lite: do not pull container images into the image.")  # fmt: skip
    @click.option(
        "--type", "image_type", type=click.Choice(IMAGE_TYPES), default="kube-installer", show_default=True
    )
    @click.option("--no-cache", is_flag=True, help="Rebuild every layer.")
    @click.option(
        "--insecure",
        "--skip-tls-verify",
        "insecure",
        is_flag=True,
        help="Allow plain-HTTP or unverified-TLS registries when pulling base and container images.",
    )
    @click.option(
        "--ca-file", type=click.Path(path_type=Path, dir_okay=False), help="CA bundle for registries."
    )
    @click.option(
        "--authfile", type=click.Path(path_type=Path, dir_okay=False), help="Registry credentials file."
    )
    @click.option(
        "--dry-run", is_flag=True, help="Parse and check the Kubefile against its context; build nothing."
    )
    @output_option()
    @click.pass_context
    def build(
        ctx: click.Context,
        context: Path,
        kubefile: Path | None,
        tag: str | None,
        platform: str | None,
        build_args: tuple[str, ...],
        image_lists: tuple[Path, ...],
        ignored_lists: tuple[Path, ...],
        build_mode: str,
        image_type: str,
        no_cache: bool,
        insecure: bool,
        ca_file: Path | None,
        authfile: Path | None,
        dry_run: bool,
        output: str,
    ) -> None:
        """Build a ClusterImage from a Kubefile and its build CONTEXT directory."""
        quiet = quiet_for()
        options = BuildOptions(
            context=context,
            kubefile=kubefile,
            tag=tag,
            platforms=_platforms(platform),
            build_args=_build_args(build_args),
            image_lists=image_lists,
            ignored_image_lists=ignored_lists,
            build_mode=build_mode,
            image_type=image_type,
            no_cache=no_cache,
        )
        plan = plan_build(options, local_store_resolver())
        if dry_run:
            if not emit_data(plan.to_dict(), output):
                render_plan(plan, Console())
            return
        store = ImageStore()
        result = asyncio.run(
            build_image(
                options,
                store=store,
                registry_options=RegistryOptions(insecure=insecure, ca_file=ca_file, authfile=authfile),
                progress=None if quiet else lambda line: click.echo(line, err=True),
            )
        )
        if emit_data(result.to_dict(), output):
            return
        cached = sum(1 for s in result.steps if s.cached)
        click.echo(
            f"built {result.name} ({', '.join(result.platforms)}): {result.digest}\n"
            f"  {result.layers} layers ({cached} of this build's {len(result.steps)} from cache), "
            f"{_size(result.size)}, {len(result.images)} container images collected"
            + (
                f" (build mode lite: {len(result.referenced)} referenced, not pulled)"
                if build_mode == "lite" and result.referenced
                else ""
            )
        )
