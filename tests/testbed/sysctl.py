"""Global sysctls the test bed must raise, shared by all labs: the first lab records the original value,
the last lab to go down restores it (a lock-protected reference count on disk)."""

from __future__ import annotations

import json
from pathlib import Path

from .common import BASE, flock

STATE = BASE / "sysctl.json"


def _path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _load() -> dict[str, dict[str, object]]:
    try:
        data = json.loads(STATE.read_text())
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, ValueError):
        return {}


def raise_to(name: str, minimum: int, lab: str) -> None:
    """Ensure sysctl `name` >= minimum while `lab` is up."""
    with flock(BASE / ".sysctl.lock"):
        state = _load()
        entry = state.get(name)
        cur = int(_path(name).read_text().split()[0])
        if entry is None:
            entry = {"original": cur, "users": []}
            state[name] = entry
        users = entry["users"]
        assert isinstance(users, list)
        if lab not in users:
            users.append(lab)
        if cur < minimum:
            _path(name).write_text(str(minimum))
        STATE.write_text(json.dumps(state, indent=1))


def release(lab: str) -> dict[str, int]:
    """Drop `lab`'s claim; restore every sysctl nobody claims any more. Returns what was restored."""
    restored: dict[str, int] = {}
    with flock(BASE / ".sysctl.lock"):
        state = _load()
        for name in list(state):
            entry = state[name]
            users = entry.get("users", [])
            assert isinstance(users, list)
            if lab in users:
                users.remove(lab)
            if not users:
                orig = entry.get("original")
                assert isinstance(orig, int)
                _path(name).write_text(str(orig))
                restored[name] = orig
                del state[name]
        if state:
            STATE.write_text(json.dumps(state, indent=1))
        else:
            STATE.unlink(missing_ok=True)
    return restored
