"""Registry credentials in the Docker `config.json` format, shared with docker, podman and skopeo.

Read from --authfile, $REGISTRY_AUTH_FILE, the containers auth.json files, ~/.docker/config.json and Go
sealer's ~/.sealer/auth.json; `sealer login` writes one of them (0600, atomic, other keys preserved).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealer.errors import ImageError

log = logging.getLogger(__name__)

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str = ""

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def read_paths(authfile: Path | str | None = None) -> list[Path]:
    """Files consulted for credentials, most specific first. An explicit --authfile is the only one."""
    if authfile:
        return [Path(authfile)]
    paths: list[Path] = []
    if env := os.environ.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(env))
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        paths.append(Path(xdg) / "containers" / "auth.json")
    paths.append(_home() / ".config" / "containers" / "auth.json")
    docker_config = os.environ.get("DOCKER_CONFIG")
    paths.append(
        Path(docker_config) / "config.json" if docker_config else _home() / ".docker" / "config.json"
    )
    sealer_home = os.environ.get("SEALER_HOME")
    paths.append(Path(sealer_home) / "auth.json" if sealer_home else _home() / ".sealer" / "auth.json")
    return paths


def write_path(authfile: Path | str | None = None) -> Path:
    if authfile:
        return Path(authfile)
    if env := os.environ.get("REGISTRY_AUTH_FILE"):
        return Path(env)
    docker_config = os.environ.get("DOCKER_CONFIG")
    return Path(docker_config) / "config.json" if docker_config else _home() / ".docker" / "config.json"


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise ImageError(f"cannot read credentials file {path}: {err.strerror or err}")
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise ImageError(f"credentials file {path} is not valid JSON: {err}", "fix or remove the file")
    if not isinstance(doc, dict):
        raise ImageError(f"credentials file {path} is not a JSON object", "fix or remove the file")
    return doc


def _normalise_key(key: str) -> str:
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    key = key.rstrip("/")
    if key.endswith("/v1") or key.endswith("/v2"):
        key = key[:-3]
    if key in ("index.docker.io", "registry-1.docker.io"):
        key = "docker.io"
    return key


def _decode(entry: Any, path: Path, key: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ImageError(f"credentials file {path}: the auth for {key!r} is not base64 user:password")
        if sep:
            return Credentials(user, password, str(path))
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str) and name:
        return Credentials(name, secret, str(path))
    return None


def find_credentials(
    registry: str, repository: str | None = None, authfile: Path | str | None = None
) -> Credentials | None:
    """Credentials for `registry` (host[:port] as in the reference; `docker.io` for Docker Hub).

    containers-auth.json allows keys scoped to a namespace (host/ns/repo); the longest match wins.
    """
    want = _normalise_key(registry)
    candidates = [want]
    if repository:
        parts = repository.split("/")
        candidates = [f"{want}/{'/'.join(parts[:i])}" for i in range(len(parts), 0, -1)] + [want]
    for path in read_paths(authfile):
        doc = _load(path)
        helper = _helper_for(doc, want)
        if helper:
            creds = _from_helper(helper, want, path)
            if creds is not None:
                return creds
        auths = doc.get("auths")
        if not isinstance(auths, dict):
            continue
        by_key = {_normalise_key(k): (k, v) for k, v in auths.items() if isinstance(k, str)}
        for cand in candidates:
            if cand in by_key:
                key, entry = by_key[cand]
                creds = _decode(entry, path, key)
                if creds is not None:
                    return creds
    return None


def _helper_for(doc: dict[str, Any], registry: str) -> str | None:
    """docker's order: a per-registry credHelpers entry, else the global credsStore."""
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if isinstance(key, str) and isinstance(name, str) and _normalise_key(key) == registry:
                return name
    store = doc.get("credsStore")
    return store if isinstance(store, str) and store else None


def _from_helper(helper: str, registry: str, path: Path) -> Credentials | None:
    """Ask a docker credential helper (`docker-credential-<name> get`, server URL on stdin)."""
    exe = shutil.which(f"docker-credential-{helper}")
    if exe is None:
        log.warning(
            "%s names credential helper %r but docker-credential-%s is not on PATH", path, helper, helper
        )
        return None
    servers = [DOCKER_HUB_KEYS[0]] if registry == "docker.io" else [registry, f"https://{registry}"]
    for server in servers:
        try:
            proc = subprocess.run([exe, "get"], input=server, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ImageError(f"credential helper docker-credential-{helper} failed: {err}")
        if proc.returncode != 0:
            continue  # "credentials not found in native keychain"
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            raise ImageError(
                f"credential helper docker-credential-{helper} printed something that is not JSON"
            )
        user, secret = data.get("Username"), data.get("Secret")
        if user == "<token>":
            log.warning("credential helper %s returned an identity token, which sealer does not use", helper)
            return None
        if isinstance(user, str) and isinstance(secret, str) and user:
            return Credentials(user, secret, f"{path} (docker-credential-{helper})")
    return None


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".auth-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)  # secrets: never world-readable, not even for an instant
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent="\t")
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise ImageError(f"cannot write credentials file {path}: {err.strerror or err}")


def _store_key(registry: str) -> str:
    key = _normalise_key(registry)
    # docker itself only looks up Docker Hub under its legacy URL.
    return DOCKER_HUB_KEYS[0] if key == "docker.io" else key


def save_credentials(registry: str, username: str, password: str, authfile: Path | str | None = None) -> Path:
    path = write_path(authfile)
    doc = _load(path)
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        auths = {}
    want = _normalise_key(registry)
    for key in [k for k in auths if _normalise_key(k) == want]:
        del auths[key]
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    auths[_store_key(registry)] = {"auth": token}
    doc["auths"] = auths
    _write(path, doc)
    return path


def remove_credentials(registry: str, authfile: Path | str | None = None) -> list[Path]:
    """Drop the registry's entry from every file we would read it from; returns the files changed."""
    want = _normalise_key(registry)
    changed: list[Path] = []
    paths = read_paths(authfile)
    target = write_path(authfile)
    if target not in paths:
        paths.append(target)
    for path in paths:
        doc = _load(path)
        auths = doc.get("auths")
        if not isinstance(auths, dict):
            continue
        keys = [k for k in auths if isinstance(k, str) and _normalise_key(k) == want]
        if not keys:
            continue
        for key in keys:
            del auths[key]
        _write(path, doc)
        changed.append(path)
    return changed
