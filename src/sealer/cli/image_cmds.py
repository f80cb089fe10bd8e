"""Image commands: build, pull, push, tag, images, inspect, rmi, save, load, login, logout."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add this module's commands to the root group."""
