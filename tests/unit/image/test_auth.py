"""Credentials in Docker config.json format: where they are read from, how they are written."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from sealer.errors import ImageError
from sealer.image.auth import find_credentials, remove_credentials, save_credentials


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG", "SEALER_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def write(path: Path, auths: dict[str, object], **extra: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths, **extra}))
    return path


def test_reads_docker_config_including_docker_hub_legacy_key(home: Path) -> None:
    write(
        home / ".docker" / "config.json",
        {
            "https://index.docker.io/v1/": {"auth": b64("hubuser:hubpw")},
            "reg.local:5000": {"auth": b64("u:p:with:colons")},
        },
    )
    hub = find_credentials("docker.io")
    assert hub is not None and (hub.username, hub.password) == ("hubuser", "hubpw")
    local = find_credentials("reg.local:5000")
    assert local is not None and local.password == "p:with:colons"
    assert find_credentials("other.io") is None
    assert "p:with:colons" not in repr(local)


def test_containers_auth_json_wins_and_namespace_keys_are_most_specific(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(home / ".docker" / "config.json", {"reg.io": {"auth": b64("docker:1")}})
    write(
        home / ".config" / "containers" / "auth.json",
        {
            "reg.io": {"auth": b64("podman:2")},
            "reg.io/team": {"auth": b64("team:3")},
        },
    )
    assert find_credentials("reg.io").username == "podman"  # type: ignore[union-attr]
    assert find_credentials("reg.io", "team/app").username == "team"  # type: ignore[union-attr]
    assert find_credentials("reg.io", "other/app").username == "podman"  # type: ignore[union-attr]
    env_file = write(home / "env.json", {"https://reg.io/v2/": {"auth": b64("env:4")}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(env_file))
    assert find_credentials("reg.io").username == "env"  # type: ignore[union-attr]


def test_explicit_authfile_is_the_only_source(home: Path) -> None:
    write(home / ".docker" / "config.json", {"reg.io": {"auth": b64("docker:1")}})
    only = write(home / "only.json", {})
    assert find_credentials("reg.io", authfile=only) is None


def test_go_sealer_auth_file_is_read(home: Path) -> None:
    write(home / ".sealer" / "auth.json", {"reg.io": {"auth": b64("sealer:5")}})
    assert find_credentials("reg.io").username == "sealer"  # type: ignore[union-attr]


def test_save_is_0600_atomic_and_keeps_other_settings(home: Path) -> None:
    path = write(
        home / ".docker" / "config.json",
        {"reg.io": {"auth": b64("old:x")}},
        credHelpers={"gcr.io": "gcloud"},
        psFormat="table",
    )
    written = save_credentials("https://reg.io/", "new", "secret")
    assert written == path
    doc = json.loads(path.read_text())
    assert doc["credHelpers"] == {"gcr.io": "gcloud"} and doc["psFormat"] == "table"
    assert doc["auths"] == {"reg.io": {"auth": b64("new:secret")}}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]
    save_credentials("docker.io", "hub", "pw")
    assert "https://index.docker.io/v1/" in json.loads(path.read_text())["auths"]


def test_remove_drops_every_spelling_everywhere(home: Path) -> None:
    a = write(
        home / ".docker" / "config.json",
        {"https://reg.io": {"auth": b64("a:1")}, "keep.io": {"auth": b64("k:1")}},
    )
    b = write(home / ".config" / "containers" / "auth.json", {"reg.io": {"auth": b64("b:2")}})
    assert sorted(remove_credentials("reg.io")) == sorted([a, b])
    assert find_credentials("reg.io") is None
    assert find_credentials("keep.io") is not None
    assert remove_credentials("reg.io") == []


def test_damaged_files_name_themselves(home: Path) -> None:
    bad = home / ".docker" / "config.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{oops")
    with pytest.raises(ImageError, match=str(bad)):
        find_credentials("reg.io")
    write(bad, {"reg.io": {"auth": "%%%not-base64"}})
    with pytest.raises(ImageError, match="not base64"):
        find_credentials("reg.io")


HELPER = """#!/bin/sh
# docker credential helper protocol: `get`, server URL on stdin, JSON on stdout.
[ "$1" = get ] || { echo "unknown action $1" >&2; exit 1; }
read server
case "$server" in
  reg.io) printf '{"ServerURL":"reg.io","Username":"helped","Secret":"from-keychain"}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


def test_credential_helpers_are_asked_first(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = home / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-fake"
    helper.write_text(HELPER)
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '')}")
    write(
        home / ".docker" / "config.json",
        {"reg.io": {"auth": b64("file:pw")}, "other.io": {"auth": b64("o:p")}},
        credHelpers={"reg.io": "fake"},
    )
    creds = find_credentials("reg.io")
    assert creds is not None and (creds.username, creds.password) == ("helped", "from-keychain")
    assert "docker-credential-fake" in creds.source
    assert find_credentials("other.io").username == "o"  # type: ignore[union-attr]
    write(home / ".docker" / "config.json", {"other.io": {"auth": b64("o:p")}}, credsStore="fake")
    assert find_credentials("other.io").username == "o"  # type: ignore[union-attr]  (helper has none)
    write(home / ".docker" / "config.json", {}, credsStore="missing-helper")
    assert find_credentials("reg.io") is None
