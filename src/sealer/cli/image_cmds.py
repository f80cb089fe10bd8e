"""Image commands: pull, push, tag, images, inspect, rmi, save, load, login, logout, prune
(build: build_cmds)."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from sealer.apply.prune import drop_rootfs_cache, image_ids_of
from sealer.apply.prune import prune as prune_disk
from sealer.cli.output import emit_data, output_option, quiet_for
from sealer.image import archive, service
from sealer.image.registry import RegistryOptions, TransferEvent
from sealer.image.store import ImageStore

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _quiet(ctx: click.Context, local: bool) -> bool:
    return local or quiet_for()


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class _StderrBars:
    """Progress bars on stderr, started on first use, so a command that fails before transferring
    prints no empty bars; stopped on leaving the `with`. A no-op when quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._progress: Progress | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _bars(self, *columns: ProgressColumn) -> Progress:
        if self._progress is None:
            self._progress = Progress(*columns, console=Console(stderr=True))
            self._progress.start()
        return self._progress


class TransferBars(_StderrBars):
    """One rich progress bar per blob; a no-op when quiet."""

    def __init__(self, verb: str, quiet: bool) -> None:
        super().__init__(quiet)
        self.verb = verb
        self._tasks: dict[str, TaskID] = {}

    @property
    def callback(self) -> Callable[[TransferEvent], None] | None:
        return None if self.quiet else self._on_event

    def _on_event(self, ev: TransferEvent) -> None:
        bars = self._bars(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        short = ev.digest.split(":", 1)[-1][:12]
        task = self._tasks.get(ev.digest)
        if task is None:
            task = bars.add_task(f"{self.verb} {short}", total=ev.total or None)
            self._tasks[ev.digest] = task
        label = {"exists": "already there", "mounted": "mounted"}.get(ev.status)
        if label:
            bars.update(task, completed=ev.total, description=f"{label:>8} {short}")
        else:
            bars.update(task, completed=ev.done)


class ByteBar(_StderrBars):
    """One progress bar for an archive being written or read; a no-op when quiet."""

    def __init__(self, label: str, total: int | None, quiet: bool) -> None:
        super().__init__(quiet)
        self.label, self.total = label, total
        self._task: TaskID | None = None

    @property
    def callback(self) -> Callable[[str, int], None] | None:
        return None if self.quiet else self._update

    def _update(self, _what: str, done: int) -> None:
        bar = self._bars(TextColumn(self.label), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        if self._task is None:
            self._task = bar.add_task(self.label, total=self.total)
        bar.update(self._task, completed=done)


def registry_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--max-parallel",
        type=click.IntRange(1, 32),
        default=4,
        show_default=True,
        help="Blobs transferred at the same time.",
    )(f)
    f = click.option(
        "--authfile",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Credentials file (Docker config.json format). Default: $REGISTRY_AUTH_FILE, then the "
        "containers/docker/sealer auth files.",
    )(f)
    f = click.option(
        "--ca-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="CA certificate (PEM) to trust for the registry's TLS certificate.",
    )(f)
    f = click.option(
        "--insecure",
        "--skip-tls-verify",
        "insecure",
        is_flag=True,
        help="Allow plain HTTP and unverified TLS for this registry. Only for registries you control.",
    )(f)
    return f


def _options(
    insecure: bool, ca_file: Path | None, authfile: Path | None, max_parallel: int
) -> RegistryOptions:
    return RegistryOptions(insecure=insecure, ca_file=ca_file, authfile=authfile, max_parallel=max_parallel)


@click.command()
@click.argument("images", nargs=-1, required=True)
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    help="os/arch[/variant] to pull from a multi-platform image (repeatable or comma-separated). "
    "Default: this machine's.",
)
@click.option("--all-platforms", is_flag=True, help="Pull every platform of a multi-platform image.")
@click.option(
    "--policy",
    type=click.Choice(service.PULL_POLICIES),
    default="always",
    show_default=True,
    help="always: ask the registry; missing: only if not in the local store; never: only check the store.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars; print only the names pulled.")
@registry_options
@click.pass_context
def pull(
    ctx: click.Context,
    images: tuple[str, ...],
    platforms: tuple[str, ...],
    all_platforms: bool,
    policy: str,
    quiet: bool,
    insecure: bool,
    ca_file: Path | None,
    authfile: Path | None,
    max_parallel: int,
) -> None:
    """Pull ClusterImages from a registry into the local store."""
    quiet = _quiet(ctx, quiet)
    if platforms and all_platforms:
        raise click.UsageError("--platform and --all-platforms exclude each other")
    if all_platforms and policy != "always":
        raise click.UsageError("--all-platforms pulls from the registry: use it with --policy always")
    plats = service.parse_platforms(platforms)
    store = ImageStore()
    opts = _options(insecure, ca_file, authfile, max_parallel)
    for name in images:
        if policy != "always":
            with TransferBars("pull", quiet) as bars:
                rec = _run(
                    service.ensure_image(
                        store, name, opts, platforms=plats, policy=policy, progress=bars.callback
                    )
                )
            click.echo(rec.name if quiet else f"{rec.name}: in the local store ({rec.descriptor.digest})")
            continue
        with TransferBars("pull", quiet) as bars:
            res = _run(
                service.pull(
                    store, name, opts, platforms=plats, all_platforms=all_platforms, progress=bars.callback
                )
            )
        if quiet:
            click.echo(res.name)
        else:
            click.echo(
                f"Pulled {res.name} ({', '.join(res.platforms)}): {res.blobs_transferred} blob(s), "
                f"{human_size(res.bytes_transferred)} fetched, {res.blobs_skipped} already present"
            )
            click.echo(f"Digest: {res.digest}")


@click.command()
@click.argument("image")
@click.argument("destination", required=False)
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    help="Push only this platform's image of a multi-platform image.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@registry_options
@click.pass_context
def push(
    ctx: click.Context,
    image: str,
    destination: str | None,
    platforms: tuple[str, ...],
    quiet: bool,
    insecure: bool,
    ca_file: Path | None,
    authfile: Path | None,
    max_parallel: int,
) -> None:
    """Push a ClusterImage to a registry (to DESTINATION if given, else to its own name)."""
    quiet = _quiet(ctx, quiet)
    store = ImageStore()
    opts = _options(insecure, ca_file, authfile, max_parallel)
    with TransferBars("push", quiet) as bars:
        res = _run(
            service.push(
                store,
                image,
                opts,
                dest=destination,
                platforms=service.parse_platforms(platforms),
                progress=bars.callback,
            )
        )
    if quiet:
        click.echo(res.digest)
        return
    click.echo(
        f"Pushed {res.name} ({', '.join(res.platforms)}): {res.blobs_transferred} blob(s), "
        f"{human_size(res.bytes_transferred)} sent, {res.blobs_skipped} already there, "
        f"{res.blobs_mounted} mounted"
    )
    click.echo(f"Digest: {res.digest}")


@click.command()
@click.argument("source")
@click.argument("targets", nargs=-1, required=True)
def tag(source: str, targets: tuple[str, ...]) -> None:
    """Give a local image more names: sealer tag SOURCE NEW [NEW...]."""
    for name in service.tag(ImageStore(), source, list(targets)):
        click.echo(name)


@click.command()
@output_option()
@click.option("--json", "as_json", is_flag=True, help="Same as -o json (Go sealer's flag).")
@click.option("--no-trunc", is_flag=True, help="Show full IDs.")
@click.option("-q", "--quiet", is_flag=True, help="Print only image IDs.")
def images(output: str, as_json: bool, no_trunc: bool, quiet: bool) -> None:
    """List the images in the local store."""
    rows = service.list_images(ImageStore())
    if quiet:
        for r in rows:
            click.echo(r["digest"] if no_trunc else r["id"])
        return
    if emit_data(rows, "json" if as_json else output):
        return
    table = Table(box=None, pad_edge=False)
    for col in ("NAME", "ID", "PLATFORMS", "RUNTIME", "CREATED", "SIZE"):
        table.add_column(col, no_wrap=col != "NAME")
    for r in rows:
        table.add_row(
            r["name"],
            r["digest"] if no_trunc else r["id"],
            ",".join(r["platforms"]),
            r.get("clusterRuntime") or "-",
            (r.get("created") or "-")[:19].replace("T", " "),
            human_size(r["size"]) if "error" not in r else f"[red]{r['error']}[/red]",
        )
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


@click.command()
@click.argument("image")
@click.option("--platform", help="For a multi-platform image, inspect only this platform.")
@click.option("-o", "--output", type=click.Choice(["json", "yaml"]), default="json", show_default=True)
def inspect(image: str, platform: str | None, output: str) -> None:
    """Show an image's config, labels, sealer metadata and layers."""
    plats = service.parse_platforms([platform] if platform else None)
    emit_data(service.inspect(ImageStore(), image, plats[0] if plats else None), output)


@click.command()
@click.argument("images", nargs=-1)
@click.option("-f", "--force", is_flag=True, help="Remove even if other names or images still refer to it.")
@click.option("-p", "--prune", is_flag=True, help="Also delete every blob no image needs (left by failures).")
def rmi(images: tuple[str, ...], force: bool, prune: bool) -> None:
    """Remove images from the local store (blobs nothing else needs are deleted)."""
    if not images and not prune:
        raise click.UsageError("name at least one image, or use --prune")
    store = ImageStore()
    ids = image_ids_of(store, list(images))
    try:
        for name in service.remove(store, list(images), force):
            click.echo(f"Untagged: {name}")
    finally:
        # Also when a later name failed: the images removed before it leave no cache behind.
        dropped = drop_rootfs_cache(ids, store=store)
        for item in dropped.removed:
            click.echo(f"Deleted {item.kind} of {item.detail[:19]} ({human_size(item.size)})")
        for sentence in dropped.skipped:
            click.echo(f"Kept {sentence}; `sealer prune` removes it once that process has finished")
    if prune:
        freed = store.gc()
        if freed is None:
            click.echo("another sealer is importing images; pruning skipped, try again later")
        else:
            click.echo(f"Deleted {freed[0]} unused blob(s), {human_size(freed[1])}")


@click.command()
@click.argument("images", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Archive file to write (an OCI archive: a tar of an OCI image layout).",
)
@click.option("-q", "--quiet", is_flag=True)
@click.pass_context
def save(ctx: click.Context, images: tuple[str, ...], output: Path, quiet: bool) -> None:
    """Save images into one OCI archive, to move them across an air gap."""
    quiet = _quiet(ctx, quiet)
    store = ImageStore()
    total = sum(store.image_size(store.resolve(name)) for name in images)
    with ByteBar("save", total, quiet) as bar:
        names = archive.save(store, list(images), output, progress=bar.callback)
    if not quiet:
        click.echo(f"Saved {', '.join(names)} to {output} ({human_size(output.stat().st_size)})")


@click.command()
@click.option(
    "-i",
    "--input",
    "input_",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="OCI archive to load (from `sealer save` or `skopeo copy ... oci-archive:FILE:NAME`).",
)
@click.option("-q", "--quiet", is_flag=True)
@click.pass_context
def load(ctx: click.Context, input_: Path, quiet: bool) -> None:
    """Load images from an OCI archive into the local store."""
    quiet = _quiet(ctx, quiet)
    with ByteBar("load", input_.stat().st_size, quiet) as bar:
        res = archive.load(ImageStore(), input_, progress=bar.callback)
    for name in res.names:
        click.echo(name if quiet else f"Loaded {name}")
    if not quiet:
        click.echo(
            f"{res.blobs_loaded} blob(s) ({human_size(res.bytes_loaded)}) imported, "
            f"{res.blobs_present} already present"
        )


@click.command()
@click.argument("registry")
@click.option("-u", "--username", required=True)
@click.option("-p", "--password", help="Password (visible in the process list; prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option(
    "--authfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to store credentials in. Default: $REGISTRY_AUTH_FILE or ~/.docker/config.json.",
)
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--insecure", "--skip-tls-verify", "insecure", is_flag=True)
def login(
    registry: str,
    username: str,
    password: str | None,
    password_stdin: bool,
    authfile: Path | None,
    ca_file: Path | None,
    insecure: bool,
) -> None:
    """Log in to a registry; credentials are checked, then stored (mode 0600)."""
    if password and password_stdin:
        raise click.UsageError("--password and --password-stdin exclude each other")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif password is None:
        password = click.prompt("Password", hide_input=True)
    path = _run(
        service.login(
            registry,
            username,
            password or "",
            RegistryOptions(insecure=insecure, ca_file=ca_file, authfile=authfile),
        )
    )
    click.echo(f"Login Succeeded (credentials saved in {path})")


@click.command()
@click.argument("registry")
@click.option("--authfile", type=click.Path(dir_okay=False, path_type=Path))
def logout(registry: str, authfile: Path | None) -> None:
    """Remove stored credentials for a registry."""
    for path in service.logout(registry, authfile):
        click.echo(f"Removed credentials for {service.registry_host(registry)} from {path}")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `24h`, `7d`, `1h30m` (docker's `--filter until=` style) -> seconds."""
    value = text.strip().lower()
    parts = _DURATION.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise click.BadParameter(
            f"{text!r} is not a duration; use e.g. 90s, 30m, 24h, 7d or 1h30m", param_hint="--until"
        )
    return sum(float(n) * _UNIT[u] for n, u in parts)


# Kinds that come by the hundred and mean nothing one by one: counted, not listed (-o json lists them).
_COUNTED_KINDS = {
    "unused blob": "unused blob(s)",
    "ingest leftover": "ingest leftover(s)",
    "build cache (layer record)": "build cache layer record(s)",
}


@click.command()
@click.option(
    "-a", "--all", "all_", is_flag=True,
    help="Also drop the unpacked rootfs of images still in the store (unpacked again on the next run).",
)
@click.option(
    "--until", "until", metavar="DURATION",
    help="Keep build cache entries used within DURATION (e.g. 24h, 7d); default: drop the whole build cache.",
)
@click.option("--dry-run", is_flag=True, help="List what would go and how many bytes; remove nothing.")
@output_option()
def prune(all_: bool, until: str | None, dry_run: bool, output: str) -> None:
    """Free disk space on this machine: caches and leftovers sealer can rebuild.

    \b
    Removes, all under $SEALER_HOME:
      - unpacked rootfs of images no longer in the store (--all: of every image), cache/rootfs/
      - leftovers of unpacks that crashed (.partial)
      - the build cache (build-cache/: layer records, downloads, unpacked archives, the container
        images collected for registry/), or what was not used within --until
      - blobs no image needs, and image-store ingest files idle for an hour
    Safe while other sealer commands run: a rootfs in use by one is skipped (and said so); the
    build cache and blobs wait until no pull, load or build is running.
    """
    unused_for = parse_duration(until) if until is not None else None
    report = prune_disk(all_rootfs=all_, build_unused_for=unused_for, dry_run=dry_run)
    if emit_data(report.to_dict(), output):
        return
    quiet = quiet_for(output)
    verb = "Would remove" if dry_run else "Removed"
    if not quiet:
        counted: dict[str, tuple[int, int]] = {}
        for item in report.removed:
            if item.kind in _COUNTED_KINDS:
                n, size = counted.get(item.kind, (0, 0))
                counted[item.kind] = (n + 1, size + item.size)
                continue
            what = f"{item.kind} {item.detail[:19]}".strip()
            click.echo(f"{verb} {what}: {item.path} ({human_size(item.size)})")
        for kind, (n, size) in counted.items():
            click.echo(f"{verb} {n} {_COUNTED_KINDS[kind]} ({human_size(size)})")
        for sentence in report.skipped:
            click.echo(f"Skipped {sentence}")
    freed = "would be freed" if dry_run else "freed"
    click.echo(f"{len(report.removed)} item(s), {human_size(report.total)} {freed}")


COMMANDS = (pull, push, tag, images, inspect, rmi, save, load, login, logout, prune)


def register(group: click.Group) -> None:
    """Add this module's commands to the root group."""
    for cmd in COMMANDS:
        group.add_command(cmd)
