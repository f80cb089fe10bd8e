"""The list of command modules; each exposes `register(group)`."""

from __future__ import annotations

from types import ModuleType

from sealer.cli import cluster_cmds, host_cmds, image_cmds

MODULES: tuple[ModuleType, ...] = (cluster_cmds, image_cmds, host_cmds)
