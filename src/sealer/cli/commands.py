"""The list of command modules; each exposes `register(group)`."""

from __future__ import annotations

from types import ModuleType

from sealer.cli import build_cmds, cluster_cmds, day2_cmds, host_cmds, image_cmds, run_cmds

MODULES: tuple[ModuleType, ...] = (cluster_cmds, run_cmds, image_cmds, build_cmds, host_cmds, day2_cmds)
