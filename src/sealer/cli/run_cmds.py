"""`sealer run`: install a cluster from a ClusterImage onto hosts."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add this module's commands to the root group."""
