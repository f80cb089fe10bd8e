"""State directory: SEALER_HOME, private modes whatever the umask, atomic writes that survive crashes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealer.errors import StateError
from sealer.state import ClusterState, sealer_home
from sealer.state.files import atomic_write, remove_stale_temps

CLUSTERFILE = textwrap.dedent(
    """\
    apiVersion: sealer.io/v2
    kind: Cluster
    metadata: {name: demo}
    spec:
      image: example/k8s:v1
      ssh: {passwd: S3cret}
      hosts:
        - {ips: [10.0.0.1], roles: [master]}
    """
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0)  # the worst case: everything would be world-writable by default
    try:
        yield
    finally:
        os.umask(old)


def test_sealer_home_env_overrides_home() -> None:
    assert sealer_home({"SEALER_HOME": "/srv/sealer", "HOME": "/root"}) == Path("/srv/sealer")
    assert sealer_home({"HOME": "/home/ops"}) == Path("/home/ops/.sealer")
    assert sealer_home({"SEALER_HOME": "  ", "HOME": "/home/ops"}) == Path("/home/ops/.sealer")


def test_state_object_touches_nothing_until_written(tmp_path: Path) -> None:
    state = ClusterState("demo", tmp_path / "home")
    assert state.read_clusterfile() is None and state.last_applied() is None
    assert not (tmp_path / "home").exists()


def test_dirs_are_0700_and_files_0600_even_with_umask_0(tmp_path: Path, loose_umask: None) -> None:
    state = ClusterState("demo", tmp_path / "home")
    state.write_clusterfile(CLUSTERFILE)
    state.write_admin_conf("apiVersion: v1\nkind: Config\n")
    state.update_meta(runtime_type="k3s")
    with state.journal() as journal:
        journal.begin("apply", "sha256:x")
    log = state.log_path("op1", "fd00::1")
    log.write_text("x")  # the caller writes the log; the directories around it must be private
    with state.lock("sealer apply"):
        pass
    assert mode(state.home) == 0o700 and mode(state.dir) == 0o700
    assert mode(state.logs_dir) == 0o700 and mode(log.parent) == 0o700
    assert log.name == "fd00__1.log"
    for path in (state.clusterfile_path, state.admin_conf_path, state.meta_path, state.journal_path,
                 state.lock_path):
        assert mode(path) == 0o600, path


def test_existing_loose_dir_is_tightened(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "demo").mkdir(parents=True)
    os.chmod(home / "demo", 0o777)
    ClusterState("demo", home).write_clusterfile(CLUSTERFILE)
    assert mode(home / "demo") == 0o700


def test_last_applied_round_trip_and_meta(tmp_path: Path) -> None:
    state = ClusterState("demo", tmp_path)
    state.write_clusterfile(CLUSTERFILE)
    cf = state.last_applied()
    assert cf is not None and cf.cluster.name == "demo" and cf.cluster.master0 is not None
    assert cf.cluster.master0.ip == "10.0.0.1"
    state.update_meta(runtime_type="k0s")
    state.update_meta(image_id="sha256:abc")
    assert state.read_meta() == {"runtime_type": "k0s", "image_id": "sha256:abc"}


def test_damaged_last_applied_is_a_state_error_with_a_hint(tmp_path: Path) -> None:
    state = ClusterState("demo", tmp_path)
    state.write_clusterfile("kind: Cluster\nspec: [not, a, mapping\n")
    with pytest.raises(StateError) as err:
        state.last_applied()
    assert "last-applied Clusterfile of cluster demo cannot be read" in err.value.message
    assert err.value.hint and str(state.clusterfile_path) in err.value.hint


def test_damaged_meta_is_a_state_error(tmp_path: Path) -> None:
    state = ClusterState("demo", tmp_path)
    state.ensure()
    state.meta_path.write_text("{not json")
    with pytest.raises(StateError, match="not valid JSON"):
        state.read_meta()


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "UPPER", "-x", "x" * 70, ".hidden"])
def test_cluster_names_that_would_escape_the_state_dir_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(StateError, match="cannot be used as a state directory name"):
        ClusterState(name, tmp_path)


@pytest.mark.parametrize("name", ["images", "build-cache"])
def test_names_of_other_sealer_data_in_the_home_are_reserved(tmp_path: Path, name: str) -> None:
    with pytest.raises(StateError, match="is reserved"):
        ClusterState(name, tmp_path)


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "Clusterfile"
    atomic_write(target, "old\n")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StateError, match="No space left on device"):
        atomic_write(target, "new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Clusterfile"]  # no temp left behind


def test_a_process_killed_mid_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "Clusterfile"
    atomic_write(target, CLUSTERFILE)
    # The child writes a large new version and dies (no cleanup, no finally) just before the rename.
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from sealer.state.files import atomic_write
        os.replace = lambda *a: os._exit(9)
        atomic_write(Path({str(target)!r}), "x" * 5_000_000)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == 9
    assert target.read_text() == CLUSTERFILE
    leftovers = [p for p in tmp_path.iterdir() if p.name != "Clusterfile"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".Clusterfile.")
    assert mode(leftovers[0]) == 0o600  # even the torn temp never exposed the secret
    remove_stale_temps(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["Clusterfile"]


def test_state_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "demo").write_text("oops")
    with pytest.raises(StateError, match="not a directory"):
        ClusterState("demo", tmp_path).write_clusterfile(CLUSTERFILE)


def test_record_applied_keeps_the_users_text_and_merges_facts(tmp_path: Path) -> None:
    state = ClusterState("demo", tmp_path)
    state.update_meta(image_id="sha256:old")
    commented = "# production cluster, owned by team-a\n" + CLUSTERFILE
    state.record_applied(commented, runtime_type="k3s")
    assert state.read_clusterfile() == commented
    assert state.read_meta() == {"image_id": "sha256:old", "runtime_type": "k3s"}
