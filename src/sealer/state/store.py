"""Where a cluster's state lives on the operator machine: `$SEALER_HOME/<cluster>/` and its files.

Layout (dir 0700, files 0600): `Clusterfile` (last applied), `journal.jsonl`, `known_hosts`,
`admin.conf`, `meta.json` (facts the Clusterfile does not hold, e.g. the runtime type), `lock`, `logs/`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sealer.errors import StateError
from sealer.model.cluster import Clusterfile
from sealer.model.clusterfile import parse_clusterfile
from sealer.state.files import atomic_write, ensure_private_dir, read_text_or_none, remove_stale_temps
from sealer.state.journal import Journal
from sealer.state.lock import ClusterLock

SEALER_HOME_ENV = "SEALER_HOME"

# The cluster name becomes a directory name: keep it to what Kubernetes allows for object names, so
# a Clusterfile can never point the state at "../../etc".
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")


def sealer_home(environ: Mapping[str, str] | None = None) -> Path:
    """`$SEALER_HOME` if set, else `~/.sealer`."""
    env = os.environ if environ is None else environ
    configured = env.get(SEALER_HOME_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path(env.get("HOME") or Path.home()) / ".sealer"


# Other parts of sealer keep their own data next to the cluster directories in SEALER_HOME.
RESERVED_NAMES = frozenset({"images", "build-cache", "auth.json", "cache", "tmp", "logs"})


def check_cluster_name(name: str) -> str:
    if name in RESERVED_NAMES:
        raise StateError(
            f"cluster name {name!r} is reserved: sealer keeps other data under $SEALER_HOME/{name}",
            "choose another metadata.name (reserved: " + ", ".join(sorted(RESERVED_NAMES)) + ")",
        )
    if not _NAME.match(name) or ".." in name:
        raise StateError(
            f"cluster name {name!r} cannot be used as a state directory name",
            "use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit "
            "(metadata.name in the Clusterfile)",
        )
    return name


class ClusterState:
    """The state directory of one cluster. Creating the object touches nothing on disk; reads of a
    missing cluster return None; the directory is created (0700) on the first write or lock."""

    def __init__(self, name: str, home: Path | None = None) -> None:
        self.name = check_cluster_name(name)
        self.home = home if home is not None else sealer_home()
        self.dir = self.home / name

    # paths -------------------------------------------------------------------------------------
    @property
    def clusterfile_path(self) -> Path:
        return self.dir / "Clusterfile"

    @property
    def journal_path(self) -> Path:
        return self.dir / "journal.jsonl"

    @property
    def known_hosts_path(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def admin_conf_path(self) -> Path:
        return self.dir / "admin.conf"

    @property
    def meta_path(self) -> Path:
        return self.dir / "meta.json"

    @property
    def lock_path(self) -> Path:
        return self.dir / "lock"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    def exists(self) -> bool:
        return self.dir.is_dir()

    def ensure(self) -> Path:
        """Create the home and cluster directories, owner-only."""
        ensure_private_dir(self.home)
        return ensure_private_dir(self.dir)

    # last-applied Clusterfile ------------------------------------------------------------------
    def read_clusterfile(self) -> str | None:
        """The text of the last applied Clusterfile, or None if this cluster was never applied."""
        return read_text_or_none(self.clusterfile_path)

    def last_applied(self) -> Clusterfile | None:
        """The last applied Clusterfile, decoded; None if this cluster was never applied."""
        text = self.read_clusterfile()
        if text is None:
            return None
        clusterfile, problems = parse_clusterfile(text, str(self.clusterfile_path))
        if clusterfile is None:
            first = next((p for p in problems if p.severity == "error"), None)
            detail = f": {first.render()}" if first else ""
            raise StateError(
                f"the last-applied Clusterfile of cluster {self.name} cannot be read{detail}",
                f"it was edited or damaged; put the Clusterfile you last applied back at "
                f"{self.clusterfile_path} (without it sealer cannot tell what is installed)",
            )
        return clusterfile

    def write_clusterfile(self, text: str) -> None:
        self.ensure()
        atomic_write(self.clusterfile_path, text)

    def record_applied(self, text: str, **facts: Any) -> None:
        """After a successful apply: the Clusterfile as the user wrote it (comments kept) becomes the
        last applied one, and `facts` (runtime_type, image_id, ...) are merged into meta.json.
        Call it only once every action succeeded: a failed run must leave the previous file, so the
        next plan still sees what is really installed (Go sealer saved first, see issue #1802)."""
        self.write_clusterfile(text)
        if facts:
            self.update_meta(**facts)

    # other files ------------------------------------------------------------------------------
    def write_admin_conf(self, text: str) -> None:
        self.ensure()
        atomic_write(self.admin_conf_path, text)

    def read_admin_conf(self) -> str | None:
        return read_text_or_none(self.admin_conf_path)

    def read_meta(self) -> dict[str, Any]:
        """Facts about the applied cluster the Clusterfile does not carry (runtime type, image id)."""
        text = read_text_or_none(self.meta_path)
        if text is None:
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise StateError(
                f"{self.meta_path} is not valid JSON (line {err.lineno}): {err.msg}",
                "it is rewritten on the next successful apply; move it away to continue",
            )
        if not isinstance(data, dict):
            raise StateError(f"{self.meta_path} does not hold a JSON object", "move it away to continue")
        return data

    def update_meta(self, **values: Any) -> None:
        data = self.read_meta()
        data.update(values)
        self.ensure()
        atomic_write(self.meta_path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def log_path(self, operation: str, host: str) -> Path:
        """Per-host log file of one operation: `logs/<operation>/<host>.log` (dirs created 0700)."""
        safe_host = host.replace(":", "_").replace("/", "_")
        self.ensure()
        ensure_private_dir(self.logs_dir)
        op_dir = ensure_private_dir(self.logs_dir / operation.replace("/", "_"))
        return op_dir / f"{safe_host}.log"

    def journal(self) -> Journal:
        self.ensure()
        return Journal(self.journal_path)

    def lock(self, command: str) -> ClusterLock:
        """The cluster lock, not yet taken: use `with state.lock("sealer apply ..."):`."""
        self.ensure()
        return ClusterLock(self.lock_path, cluster=self.name, command=command)

    def clean_temps(self) -> None:
        """Remove leftovers of writes interrupted by a crash; call only while holding the lock."""
        remove_stale_temps(self.dir)
