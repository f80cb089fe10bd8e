"""Rendering data for the terminal: table (rich), JSON or YAML, chosen by `-o`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
import yaml

OUTPUT_FORMATS = ("table", "json", "yaml")


def output_option(default: str = "table") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "-o",
        "--output",
        type=click.Choice(OUTPUT_FORMATS),
        default=default,
        show_default=True,
        help="Output format: a table for people, json or yaml for programs.",
    )


def quiet_for(output: str = "table") -> bool:
    """No progress output: the global -q was given, or the output is data (-o json|yaml) that
    progress lines would spoil."""
    root = click.get_current_context().find_root().obj
    return output != "table" or bool(getattr(root, "quiet", False))


def emit_data(data: Any, fmt: str) -> bool:
    """Print data as JSON or YAML; returns False when fmt is "table" (the caller renders)."""
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=False))
        return True
    if fmt == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
        return True
    return False
