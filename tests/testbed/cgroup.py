"""Per-lab cgroups below the current process's cgroup in every hierarchy, so hosts (and containers
nested in them) never land in a shared cgroup at the root and can all be found again at teardown."""

from __future__ import annotations

import os
from pathlib import Path

CG = Path("/sys/fs/cgroup")


def lab_bases(lab: str) -> list[str]:
    """'<mountpoint><current cgroup>/sealer-testbed-<lab>' for each hierarchy this process is in."""
    bases: list[str] = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrl, path = line.split(":", 2)
        if ctrl == "":
            mp = CG / "unified" if (CG / "unified").is_dir() else CG
        elif ctrl == "name=systemd":
            mp = CG / "systemd"
        elif ctrl.startswith("name="):
            continue
        else:
            mp = CG / ctrl.split(",")[0]
        if mp.is_dir():
            bases.append(f"{mp}{path.rstrip('/')}/sealer-testbed-{lab}")
    return bases


def _fill_cpuset(d: Path) -> None:
    # cgroup v1 cpuset: a new cgroup accepts no task until cpus and mems are set ("I/O error").
    for f in ("cpuset.cpus", "cpuset.mems"):
        p = d / f
        if p.is_file() and not p.read_text().strip():
            p.write_text((d.parent / f).read_text())


def make(bases: list[str], host: str) -> None:
    for b in bases:
        d = Path(b) / host
        d.mkdir(parents=True, exist_ok=True)
        _fill_cpuset(Path(b))
        _fill_cpuset(d)


def join_self(bases: list[str], host: str) -> None:
    """Move the calling process into the host's cgroups (runs in the child before exec)."""
    pid = str(os.getpid())
    for b in bases:
        with open(f"{b}/{host}/cgroup.procs", "w") as f:
            f.write(pid)


def pids(bases: list[str], host: str | None = None) -> set[int]:
    """Every process in the lab's (or one host's) cgroups, nested cgroups included."""
    found: set[int] = set()
    for b in bases:
        root = Path(b) / host if host else Path(b)
        if not root.is_dir():
            continue
        for dirpath, _, files in os.walk(root):
            if "cgroup.procs" in files:
                try:
                    found.update(int(x) for x in Path(dirpath, "cgroup.procs").read_text().split())
                except OSError:
                    pass
    return found


def remove(bases: list[str], host: str | None = None) -> list[str]:
    """rmdir the cgroup trees depth first; returns directories that could not be removed."""
    left: list[str] = []
    for b in bases:
        root = Path(b) / host if host else Path(b)
        if not root.is_dir():
            continue
        for dirpath, _, _ in sorted(os.walk(root), key=lambda t: -t[0].count("/")):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                pass
            except OSError:
                left.append(dirpath)
    return left
