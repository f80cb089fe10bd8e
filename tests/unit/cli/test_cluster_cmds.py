"""`sealer validate`, `apply --dry-run`, `diff` and `unlock` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from sealer.cli.main import cli
from sealer.state import ClusterState

BASE = textwrap.dedent(
    """\
    apiVersion: sealer.io/v2
    kind: Cluster
    metadata:
      name: demo
    spec:
      image: docker.io/sealerio/kubernetes:v1.22.15
      ssh:
        passwd: S3cret-pass
      hosts:
        - ips: [192.168.0.2, 192.168.0.3]
          roles: [master]
        - ips: [192.168.0.5-192.168.0.7]
          roles: [node]
          labels: {disk: hdd}
    """
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "sealer-home"
    monkeypatch.setenv("SEALER_HOME", str(home))
    return home


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    yield CliRunner()


def write(tmp_path: Path, text: str, name: str = "Clusterfile") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(cli, list(args), prog_name="sealer", catch_exceptions=False)


def applied(home: Path, text: str = BASE) -> None:
    ClusterState("demo", home).write_clusterfile(text)


# validate ------------------------------------------------------------------------------------------------
def test_validate_a_good_file(tmp_path: Path, runner: CliRunner) -> None:
    result = run(runner, "validate", "-f", write(tmp_path, BASE))
    assert result.exit_code == 0, result.output
    assert "valid: cluster demo" in result.stdout
    assert "5 host(s): 2 master(s) (master0 192.168.0.2), 3 worker(s)" in result.stdout


def test_validate_reports_every_problem_with_location_and_hint(tmp_path: Path, runner: CliRunner) -> None:
    bad = BASE.replace("roles: [node]", "roles: [node]\n      taints: [\"a=b:Sometimes\"]").replace(
        "ips: [192.168.0.2, 192.168.0.3]", "ips: [192.168.0.2, 192.168.0.300]"
    ).replace("  image:", "  imagee:")
    path = write(tmp_path, bad)
    result = run(runner, "validate", "-f", path)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) >= 3, result.stderr
    assert all(line.startswith(f"{path}:") for line in errors)
    assert "spec.hosts[0].ips[1]" in result.stderr
    assert "hint:" in result.stderr
    assert "error(s)" in result.stderr


def test_validate_json_output(tmp_path: Path, runner: CliRunner) -> None:
    path = write(tmp_path, BASE.replace("192.168.0.3]", "192.168.0.3, x]"))
    result = run(runner, "validate", "-f", path, "-o", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["valid"] is False and data["cluster"] is None
    assert data["problems"][0]["severity"] == "error" and data["problems"][0]["line"] == 10


@pytest.mark.parametrize(
    "content",
    [
        b"", b"\x00\xff\xfe garbage \x89PNG", b"a: &a [x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n" * 3,
        b"- [1, 2\n",
    ],
    ids=["empty", "binary", "aliases", "broken-yaml"],
)
def test_validate_never_tracebacks(tmp_path: Path, runner: CliRunner, content: bytes) -> None:
    path = tmp_path / "Clusterfile"
    path.write_bytes(content)
    result = run(runner, "validate", "-f", str(path))
    assert result.exit_code == 1
    assert "Traceback" not in result.output and f"{path}" in result.stderr


def test_validate_missing_file_and_directory(tmp_path: Path, runner: CliRunner) -> None:
    missing = run(runner, "validate", "-f", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 1 and "cannot read the Clusterfile" in missing.stderr
    directory = run(runner, "validate", "-f", str(tmp_path))
    assert directory.exit_code == 1 and "is a directory" in directory.stderr


# apply --dry-run -----------------------------------------------------------------------------------------
def test_dry_run_without_state_plans_a_create(tmp_path: Path, runner: CliRunner, home: Path) -> None:
    result = run(runner, "apply", "-f", write(tmp_path, BASE), "--dry-run")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Plan for cluster demo (create)" in out
    for expected in ("install", "join-master", "join-workers", "launch-apps", "192.168.0.2"):
        assert expected in out
    assert not home.exists(), "a dry run must not create state"


def test_dry_run_json_and_yaml_carry_the_plan(tmp_path: Path, runner: CliRunner, home: Path) -> None:
    path = write(tmp_path, BASE)
    as_json = json.loads(run(runner, "apply", "-f", path, "--dry-run", "-o", "json").stdout)
    as_yaml = yaml.safe_load(run(runner, "apply", "-f", path, "--dry-run", "-o", "yaml").stdout)
    assert as_json == as_yaml
    assert as_json["kind"] == "Plan" and as_json["operation"] == "create"
    kinds = [a["kind"] for a in as_json["actions"]]
    assert kinds == ["install", "join-master", "join-workers", "launch-apps"]
    assert as_json["actions"][2]["hosts"] == ["192.168.0.5", "192.168.0.6", "192.168.0.7"]
    assert "S3cret-pass" not in json.dumps(as_json)


def test_dry_run_against_last_applied_plans_only_the_change(
    tmp_path: Path, runner: CliRunner, home: Path
) -> None:
    applied(home)
    changed = BASE.replace("192.168.0.5-192.168.0.7", "192.168.0.6-192.168.0.9")
    changed = changed.replace("disk: hdd", "disk: ssd")
    data = json.loads(run(runner, "apply", "-f", write(tmp_path, changed), "--dry-run", "-o", "json").stdout)
    assert data["operation"] == "update"
    kinds = [(a["kind"], a["hosts"]) for a in data["actions"]]
    assert kinds == [
        ("remove-workers", ["192.168.0.5"]),
        ("join-workers", ["192.168.0.8", "192.168.0.9"]),
        ("update-labels", ["192.168.0.6", "192.168.0.7"]),
    ]


def test_dry_run_unchanged_says_nothing_to_do(tmp_path: Path, runner: CliRunner, home: Path) -> None:
    applied(home)
    result = run(runner, "apply", "-f", write(tmp_path, BASE), "--dry-run")
    assert result.exit_code == 0 and "nothing to do" in result.stdout


def test_impossible_transition_exits_1_with_reason_and_hint(
    tmp_path: Path, runner: CliRunner, home: Path
) -> None:
    applied(home)
    swapped = BASE.replace("[192.168.0.2, 192.168.0.3]", "[192.168.0.3, 192.168.0.2]")
    result = run(runner, "apply", "-f", write(tmp_path, swapped), "--dry-run")
    assert result.exit_code == 1
    assert "master0 would change from 192.168.0.2 to 192.168.0.3" in result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.output


def test_runtime_type_from_state_meta_is_used(tmp_path: Path, runner: CliRunner, home: Path) -> None:
    # The desired runtime type comes from the image, which a dry run does not pull: nothing to refuse
    # yet, but the recorded runtime type is read without error.
    applied(home)
    ClusterState("demo", home).update_meta(runtime_type="k3s")
    result = run(runner, "apply", "-f", write(tmp_path, BASE), "--dry-run")
    assert result.exit_code == 0, result.output


def test_damaged_state_is_a_clear_error(tmp_path: Path, runner: CliRunner, home: Path) -> None:
    applied(home, "kind: Cluster\nspec: {hosts: 7}\n")
    result = run(runner, "apply", "-f", write(tmp_path, BASE), "--dry-run")
    assert result.exit_code == 1
    assert "last-applied Clusterfile of cluster demo cannot be read" in result.stderr


# apply (no dry run) --------------------------------------------------------------------------------------
def test_apply_that_removes_hosts_asks_first_and_changes_nothing_without_a_yes(
    tmp_path: Path, runner: CliRunner, home: Path
) -> None:
    # Execution itself is covered on the test bed (tests/e2e/test_day2_k3s.py); here: the plan is shown
    # and a removal is refused before any host is contacted when nobody confirms it.
    applied(home)
    ClusterState("demo", home).update_meta(runtime_type="k3s")
    smaller = BASE.replace("192.168.0.5-192.168.0.7", "192.168.0.5-192.168.0.6")
    result = runner.invoke(cli, ["apply", "-f", write(tmp_path, smaller)], input="n\n", prog_name="sealer")
    assert result.exit_code == 1, result.output
    assert "remove-workers" in result.stdout and "192.168.0.7" in result.stdout
    assert "will reset 1 host(s): 192.168.0.7. Continue?" in result.stderr
    assert "not confirmed; nothing was changed" in result.stderr and "--yes" in result.stderr
    state = ClusterState("demo", home)
    assert state.read_clusterfile() == BASE, "nothing applied, so the last-applied file is unchanged"
    assert not state.journal_path.exists(), "no operation may start without the confirmation"
    assert state.lock_path.read_text() == ""  # the lock was taken and released


def test_apply_while_another_apply_holds_the_lock(tmp_path: Path, runner: CliRunner, home: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from sealer.state import ClusterState
        ClusterState("demo", Path(sys.argv[1])).lock("sealer apply -f prod.yaml").acquire()
        print("locked", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        result = run(runner, "apply", "-f", write(tmp_path, BASE))
        assert result.exit_code == 1
        assert f"cluster demo is locked by 'sealer apply -f prod.yaml' (pid {proc.pid}" in result.stderr
        assert "sealer unlock --cluster demo" in result.stderr
        unlock = run(runner, "unlock", "--cluster", "demo")
        assert unlock.exit_code == 1 and "that process is running" in unlock.stderr
        # A dry run does not need the lock: people may look while an apply runs.
        assert run(runner, "apply", "-f", write(tmp_path, BASE), "--dry-run").exit_code == 0
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


# diff ------------------------------------------------------------------------------------------------
def test_diff_without_state(tmp_path: Path, runner: CliRunner, home: Path) -> None:
    result = run(runner, "diff", "-f", write(tmp_path, BASE))
    assert result.exit_code == 0
    assert "no last-applied state for cluster demo" in result.stdout


def test_diff_shows_fields_hides_secrets_and_summarises_the_plan(
    tmp_path: Path, runner: CliRunner, home: Path
) -> None:
    applied(home)
    changed = (
        BASE.replace("disk: hdd", "disk: ssd")
        .replace("S3cret-pass", "N3w-pass")
        .replace("v1.22.15", "v1.23.17")
    )
    result = run(runner, "diff", "-f", write(tmp_path, changed))
    assert result.exit_code == 0, result.output
    out = result.stdout
    image = "docker.io/sealerio/kubernetes"
    assert f"~ Cluster.spec.image: {image}:v1.22.15 -> {image}:v1.23.17" in out
    assert "~ Cluster.spec.hosts[1].labels.disk: hdd -> ssd" in out
    assert "~ Cluster.spec.ssh.passwd: ***** -> *****" in out
    assert "S3cret-pass" not in out and "N3w-pass" not in out
    assert "apply would: upgrade the image; update in place: labels" in out


def test_diff_json_and_exit_code(tmp_path: Path, runner: CliRunner, home: Path) -> None:
    applied(home)
    same = run(runner, "diff", "-f", write(tmp_path, BASE), "--exit-code")
    assert same.exit_code == 0 and "no differences" in same.stdout
    more = BASE.replace("192.168.0.5-192.168.0.7", "192.168.0.5-192.168.0.8")
    result = run(runner, "diff", "-f", write(tmp_path, more), "--exit-code", "-o", "json")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["changes"] == [
        {"path": "Cluster.spec.hosts[1].ips", "change": "changed",
         "old": ["192.168.0.5", "192.168.0.6", "192.168.0.7"],
         "new": ["192.168.0.5", "192.168.0.6", "192.168.0.7", "192.168.0.8"]},
    ]
    assert data["apply"] == "add 1 worker" and data["refused"] is None


def test_diff_of_an_impossible_change_says_apply_would_refuse(
    tmp_path: Path, runner: CliRunner, home: Path
) -> None:
    applied(home)
    flipped = BASE.replace("roles: [node]", "roles: [master]")
    result = run(runner, "diff", "-f", write(tmp_path, flipped))
    assert result.exit_code == 0
    assert "roles" in result.stdout and "would change role from node to master" in result.stdout


# unlock ---------------------------------------------------------------------------------------------------
def test_unlock_without_state_or_lock(runner: CliRunner, home: Path) -> None:
    assert "nothing to unlock" in run(runner, "unlock", "--cluster", "demo").stdout
    ClusterState("demo", home).ensure()
    with ClusterState("demo", home).lock("sealer apply"):
        pass
    assert "cluster demo is not locked" in run(runner, "unlock", "--cluster", "demo").stdout


def test_unlock_rejects_a_path_as_cluster_name(runner: CliRunner, home: Path) -> None:
    result = run(runner, "unlock", "--cluster", "../../etc")
    assert result.exit_code == 1 and "cannot be used as a state directory name" in result.stderr


# help -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["validate", "apply", "diff", "unlock"])
def test_every_command_explains_itself(runner: CliRunner, command: str) -> None:
    result = run(runner, command, "--help")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Usage: sealer {command} ")
    assert len(result.stdout.splitlines()) > 8  # a real explanation, not just the option list
    assert "--help" in result.stdout


SEALER = str(Path(sys.executable).parent / "sealer")


@pytest.mark.skipif(not Path(SEALER).exists(), reason="the sealer console script is not next to python")
def test_the_installed_command_prints_no_traceback_for_garbage(tmp_path: Path, home: Path) -> None:
    path = tmp_path / "Clusterfile"
    path.write_bytes(bytes(range(256)) * 64)
    for args in (
        ["validate", "-f", str(path)], ["apply", "-f", str(path), "--dry-run"], ["diff", "-f", str(path)]
    ):
        proc = subprocess.run([SEALER, *args], capture_output=True, text=True, check=False)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and str(path) in proc.stderr


# runtime type from the local image store ---------------------------------------------------------------
def store_image(home: Path, name: str, runtime: str) -> None:
    from sealer.image import oci
    from sealer.image.metadata import LABEL_CLUSTER_RUNTIME_TYPE
    from sealer.image.store import ImageStore

    store = ImageStore(home / "images")
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Labels": {LABEL_CLUSTER_RUNTIME_TYPE: runtime}}}
    ).encode()
    desc = store.put_blob(config, media_type=oci.MEDIA_OCI_CONFIG)
    manifest = json.dumps(
        {
            "schemaVersion": 2, "mediaType": oci.MEDIA_OCI_MANIFEST,
            "config": {"mediaType": oci.MEDIA_OCI_CONFIG, "digest": desc.digest, "size": desc.size},
            "layers": [],
        }
    ).encode()
    store.tag(name, store.put_manifest(manifest))


def test_switching_runtime_type_is_refused_using_the_local_images(
    tmp_path: Path, runner: CliRunner, home: Path
) -> None:
    store_image(home, "example.com/k3s:v1.27", "k3s")
    store_image(home, "example.com/k0s:v1.27", "k0s")
    applied(home, BASE.replace("docker.io/sealerio/kubernetes:v1.22.15", "example.com/k3s:v1.27"))
    desired = write(tmp_path, BASE.replace("docker.io/sealerio/kubernetes:v1.22.15", "example.com/k0s:v1.27"))
    result = run(runner, "apply", "-f", desired, "--dry-run")
    assert result.exit_code == 1
    assert "cluster demo runs k3s, and image example.com/k0s:v1.27 is a k0s image" in result.stderr
    # The recorded runtime type (written by the engine after an apply) takes precedence.
    ClusterState("demo", home).update_meta(runtime_type="k0s")
    assert run(runner, "apply", "-f", desired, "--dry-run").exit_code == 0


def test_image_not_in_the_store_is_a_note_not_an_error(tmp_path: Path, runner: CliRunner, home: Path) -> None:
    applied(home)
    upgraded = write(tmp_path, BASE.replace("v1.22.15", "v1.23.17"))
    result = run(runner, "apply", "-f", upgraded, "--dry-run", "-o", "json")
    assert result.exit_code == 0
    notes = json.loads(result.stdout)["notes"]
    assert any("runtime type not checked yet" in n and "not in the local store" in n for n in notes)
    assert not (home / "images").exists(), "planning must not create the image store"


def test_the_lock_records_the_command_without_secrets() -> None:
    from sealer.cli.cluster_cmds import _command_line

    line = _command_line(["apply", "-f", "my file", "-p", "hunter2", "--pk-passwd=s3", "--dry-run"])
    assert line == "sealer apply -f 'my file' -p ***** --pk-passwd=***** --dry-run"


@pytest.mark.parametrize("bad_home", ["file", "under-a-file"])
def test_unusable_sealer_home_is_a_clear_error(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch, bad_home: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SEALER_HOME", str(blocker if bad_home == "file" else blocker / "home"))
    path = write(tmp_path, BASE)
    for args in (["apply", "-f", path], ["apply", "-f", path, "--dry-run"], ["diff", "-f", path]):
        result = run(runner, *args)
        assert result.exit_code == 1, (args, result.output)
        assert "Traceback" not in result.output
        assert str(blocker) in result.stderr and "hint:" in result.stderr


def test_apply_says_when_the_last_operation_did_not_finish(
    tmp_path: Path, runner: CliRunner, home: Path
) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from pathlib import Path
        from sealer.state import ClusterState
        ClusterState("demo", Path(sys.argv[1])).lock("sealer apply -f crashed.yaml").acquire()
        os._exit(1)
        """
    )
    subprocess.run([sys.executable, "-c", script, str(home)], check=False)
    result = run(runner, "apply", "-f", write(tmp_path, BASE))
    assert result.exit_code == 1
    assert "note: the last operation on cluster demo, 'sealer apply -f crashed.yaml'" in result.stderr
    assert "did not finish" in result.stderr


def test_unlock_takes_the_name_from_a_clusterfile_and_needs_exactly_one(
    tmp_path: Path, runner: CliRunner, home: Path
) -> None:
    path = write(tmp_path, BASE)
    ClusterState("demo", home).ensure()
    assert "cluster demo is not locked" in run(runner, "unlock", "-f", path).stdout
    neither = run(runner, "unlock")
    both = run(runner, "unlock", "--cluster", "demo", "-f", path)
    assert neither.exit_code == both.exit_code == 2
    assert "exactly one of --cluster NAME or -f Clusterfile" in neither.stderr


def test_table_shows_action_details_verbatim(tmp_path: Path, runner: CliRunner, home: Path) -> None:
    applied(home)
    relabelled = write(tmp_path, BASE.replace("disk: hdd", "disk: ssd"))
    result = run(runner, "apply", "-f", relabelled, "--dry-run")
    assert result.exit_code == 0, result.output
    flat = " ".join(result.stdout.split())
    assert "update-labels" in flat and "[set: disk=ssd]" in flat  # data, not rich markup
