"""Host commands: exec and cp on the hosts of a Clusterfile."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add this module's commands to the root group."""
