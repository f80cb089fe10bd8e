"""Entry point of the `sealer` command: the root group, global options and error rendering."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import click

from sealer import __version__
from sealer.errors import SealerError


@dataclass
class GlobalOptions:
    debug: bool = False
    quiet: bool = False


class SealerGroup(click.Group):
    """Turns SealerError into a clean message and exit 1; --debug keeps the traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SealerError as err:
            opts = ctx.find_object(GlobalOptions)
            if opts is not None and opts.debug:
                raise
            click.echo(err.render(), err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=SealerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-d", "--debug", is_flag=True, help="Verbose logs and full tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="Print only results and errors, no progress.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """sealer builds and runs ClusterImages: a whole Kubernetes-family cluster (kubeadm
    Kubernetes, k3s or k0s) packed into one OCI image and installed onto hosts over SSH, offline.

    \b
    Typical flow:
      sealer build -f Kubefile -t my-k3s:v1 .        # make a ClusterImage
      sealer run my-k3s:v1 -m 10.0.0.2 -n 10.0.0.3   # install it
      sealer apply -f Clusterfile --dry-run          # see what a change would do
    """
    ctx.obj = GlobalOptions(debug=debug, quiet=quiet)
    logging.basicConfig(
        level=logging.DEBUG if debug else (logging.ERROR if quiet else logging.WARNING),
        format="%(levelname)s %(name)s: %(message)s",
    )


@cli.command()
@click.option("--short", is_flag=True, help="Print only the version number.")
def version(short: bool) -> None:
    """Print sealer's version."""
    if short:
        click.echo(__version__)
    else:
        click.echo(f"sealer {__version__} (python {sys.version.split()[0]})")


def _register_commands() -> None:
    # Each command module owns its commands and registers them on the root group.
    from sealer.cli import commands

    for module in commands.MODULES:
        module.register(cli)


_register_commands()


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="sealer")
