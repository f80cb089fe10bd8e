"""Pure parts of the day-2 lifecycle: version-skew rules, Clusterfile edits of scale-up/delete,
the confirmation of plans that remove hosts, the host clean-up script, and `status` from a journal."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sealer.apply.lifecycle import (
    Day2Options,
    _cleanup_script,
    check_upgrade,
    cluster_status,
    confirm_removal,
    edit_hosts,
    parse_version,
    status_lines,
)
from sealer.errors import PlanError, SealerError
from sealer.model.clusterfile import parse_clusterfile
from sealer.plan import make_plan
from sealer.state import ClusterState

BASE = textwrap.dedent(
    """\
    apiVersion: sealer.io/v2
    kind: Cluster
    metadata:
      name: demo
    spec:
      image: e2e.local/k3s:1
      hosts:
        - ips: [10.0.0.2]
          roles: [master]
        - ips: [10.0.0.5-10.0.0.6]
          roles: [node]
          labels: {disk: ssd}
    """
)


def _cf(text: str = BASE):  # type: ignore[no-untyped-def]
    cf, problems = parse_clusterfile(text, "test")
    assert cf is not None, problems
    return cf


# version skew ----------------------------------------------------------------------------------------
def test_parse_version_reads_k3s_and_kubernetes_versions() -> None:
    assert parse_version("v1.30.6+k3s1") == (1, 30, 6, "k3s1")
    assert parse_version("1.22.15") == (1, 22, 15, "")
    with pytest.raises(ValueError):
        parse_version("latest")


def test_upgrade_to_a_newer_k3s_is_allowed_and_described() -> None:
    note = check_upgrade("k3s", ["v1.30.6+k3s1", "v1.30.6+k3s1"], "v1.31.2+k3s1", "img:2")
    assert note == "k3s v1.30.6+k3s1 -> v1.31.2+k3s1"
    # a newer k3s build of the same release is newer too
    assert "->" in check_upgrade("k3s", ["v1.30.6+k3s1"], "v1.30.6+k3s2", "img:2")


def test_downgrade_is_refused_naming_both_versions_and_a_way_back() -> None:
    with pytest.raises(PlanError) as err:
        check_upgrade("k3s", ["v1.31.2+k3s1", "v1.30.6+k3s1"], "v1.30.6+k3s1", "img:old")
    assert "older than the v1.31.2+k3s1 the cluster runs" in err.value.message
    assert "downgrades are not supported" in err.value.message
    assert err.value.hint and "sealer etcd restore" in err.value.hint
    with pytest.raises(PlanError):
        check_upgrade("k3s", ["v1.30.6+k3s2"], "v1.30.6+k3s1", "img")


def test_kubernetes_moves_one_minor_at_a_time_from_its_oldest_node() -> None:
    assert "->" in check_upgrade("kubernetes", ["v1.22.15"], "v1.23.17", "k8s:1.23")
    with pytest.raises(PlanError) as err:
        check_upgrade("kubernetes", ["v1.23.17", "v1.22.15"], "v1.24.0", "k8s:1.24")
    assert "one minor version at a time" in err.value.message
    assert err.value.hint == "upgrade to a v1.23.x image first, then to v1.24.0"
    # k3s has no such rule (its own docs allow skipping minors within support)
    assert "->" in check_upgrade("k3s", ["v1.28.1+k3s1"], "v1.30.6+k3s1", "img")


def test_unknown_versions_are_not_guessed() -> None:
    assert "not checked" in check_upgrade("k3s", ["v1.30.6+k3s1"], None, "img")
    assert "not checked" in check_upgrade("k3s", ["v1.30.6+k3s1"], "nightly", "img")
    assert "not checked" in check_upgrade("k3s", [""], "v1.31.0+k3s1", "img")


# Clusterfile edits ----------------------------------------------------------------------------------
def test_scale_up_appends_a_group_per_role_and_the_plan_joins_them() -> None:
    current = _cf()
    desired = edit_hosts(current, add_masters=["10.0.0.3", "10.0.0.4"], add_workers=["10.0.0.7"])
    groups = desired.cluster.host_groups
    assert [g.ips for g in groups] == [
        ("10.0.0.2",),
        ("10.0.0.5", "10.0.0.6"),
        ("10.0.0.3", "10.0.0.4"),
        ("10.0.0.7",),
    ]
    assert groups[2].roles == ("master",) and groups[3].roles == ("node",)
    plan = make_plan(desired.cluster, current.cluster)
    assert [(a.kind, a.hosts) for a in plan.actions] == [
        ("join-master", ("10.0.0.3",)),
        ("join-master", ("10.0.0.4",)),
        ("join-workers", ("10.0.0.7",)),
    ]


def test_delete_takes_ips_out_of_their_groups_and_drops_empty_groups() -> None:
    current = _cf()
    desired = edit_hosts(current, remove=["10.0.0.5"])
    assert [g.ips for g in desired.cluster.host_groups] == [("10.0.0.2",), ("10.0.0.6",)]
    assert desired.cluster.host_groups[1].labels == {"disk": "ssd"}  # the group keeps its settings
    gone = edit_hosts(current, remove=["10.0.0.5", "10.0.0.6"])
    assert [g.ips for g in gone.cluster.host_groups] == [("10.0.0.2",)]


def test_edits_refuse_known_additions_and_unknown_removals_by_ip() -> None:
    with pytest.raises(PlanError, match=r"10\.0\.0\.5 already in the cluster"):
        edit_hosts(_cf(), add_workers=["10.0.0.5", "10.0.0.9"])
    with pytest.raises(PlanError, match=r"10\.0\.0\.99 not in the cluster"):
        edit_hosts(_cf(), remove=["10.0.0.99"])


# confirmation --------------------------------------------------------------------------------------------
def test_removals_need_a_yes_and_additions_do_not() -> None:
    current = _cf()
    shrink = make_plan(edit_hosts(current, remove=["10.0.0.6"]).cluster, current.cluster)
    asked: list[str] = []
    with pytest.raises(SealerError, match="not confirmed; nothing was changed"):
        confirm_removal(shrink, Day2Options(confirm=lambda q: asked.append(q) or False), "applying")
    assert asked == ["applying will reset 1 host(s): 10.0.0.6. Continue?"]
    confirm_removal(shrink, Day2Options(confirm=lambda q: True), "applying")
    confirm_removal(shrink, Day2Options(yes=True), "applying")
    with pytest.raises(SealerError):  # no way to ask and no --yes: refused, never assumed
        confirm_removal(shrink, Day2Options(), "applying")
    grow = make_plan(edit_hosts(current, add_workers=["10.0.0.9"]).cluster, current.cluster)
    confirm_removal(grow, Day2Options(), "applying")  # nothing removed: no question


# host clean-up -----------------------------------------------------------------------------------------
def test_cleanup_removes_only_our_hosts_block_marker_and_data(tmp_path: Path) -> None:
    import subprocess

    cluster = _cf().cluster
    etc = tmp_path / "etc"
    (etc / "sealer").mkdir(parents=True)
    hosts = etc / "hosts"
    hosts.write_text(
        "127.0.0.1 localhost\n# BEGIN sealer cluster demo\n10.0.0.2 sea.hub\n# END sealer cluster demo\n"
        "# BEGIN sealer cluster other\n10.9.9.9 x\n# END sealer cluster other\n10.1.1.1 mine\n"
    )
    (etc / "sealer" / "cluster").write_text("demo\n")
    script = _cleanup_script(cluster, data=False).replace("/etc/", f"{etc}/")
    subprocess.run(["sh", "-c", script], check=True)
    assert hosts.read_text() == (
        "127.0.0.1 localhost\n# BEGIN sealer cluster other\n10.9.9.9 x\n# END sealer cluster other\n"
        "10.1.1.1 mine\n"
    )
    assert not (etc / "sealer").exists()
    assert "rm -rf /var/lib/sealer/data/demo" in _cleanup_script(cluster, data=True)
    assert "rm -rf" not in _cleanup_script(cluster, data=False)


# status ----------------------------------------------------------------------------------------------------
def test_status_names_the_unfinished_step_and_the_command_to_finish(tmp_path: Path) -> None:
    state = ClusterState("demo", tmp_path)
    state.record_applied(BASE, runtime_type="k3s")
    journal = state.journal()
    run = journal.resume_or_begin("scale-up", "sha256:plan")
    state.update_meta(
        last_operation={"op": run.op, "kind": "scale-up", "command": "sealer scale-up -n 10.0.0.7"}
    )
    journal.step(run.op, "a1", "rootfs", "start", host="10.0.0.7", digest="d1")
    journal.step(run.op, "a1", "rootfs", "done", host="10.0.0.7", digest="d1")
    journal.step(run.op, "a1", "runtime", "start", host="10.0.0.7", digest="d2")
    journal.step(
        run.op, "a1", "runtime", "failed", host="10.0.0.7", digest="d2", error="k3s-agent did not start"
    )
    journal.end(run.op, "failed", "k3s-agent did not start")
    journal.close()
    data = cluster_status(state)
    assert data["exists"] and data["runtime"] == "k3s" and data["workers"] == ["10.0.0.5", "10.0.0.6"]
    assert data["lastOperation"]["status"] == "failed" and data["lastOperation"]["kind"] == "scale-up"
    assert data["unfinished"] == [
        {
            "action": "a1",
            "step": "runtime",
            "host": "10.0.0.7",
            "status": "failed",
            "error": "k3s-agent did not start",
            "time": data["unfinished"][0]["time"],
        }
    ]
    assert data["toFinish"] == "sealer scale-up -n 10.0.0.7"
    text = "\n".join(status_lines(data))
    assert "unfinished: a1 runtime on 10.0.0.7 (failed): k3s-agent did not start" in text
    assert text.endswith("to finish it, run: sealer scale-up -n 10.0.0.7")


def test_status_of_a_finished_operation_has_nothing_to_finish(tmp_path: Path) -> None:
    state = ClusterState("demo", tmp_path)
    state.record_applied(BASE, runtime_type="k3s")
    journal = state.journal()
    run = journal.resume_or_begin("apply", "sha256:p")
    journal.step(run.op, "a1", "rootfs", "start", host="10.0.0.7", digest="d")
    journal.step(run.op, "a1", "rootfs", "done", host="10.0.0.7", digest="d")
    journal.end(run.op, "done")
    journal.close()
    data = cluster_status(state)
    assert data["unfinished"] == [] and data["toFinish"] is None
    assert "to finish" not in "\n".join(status_lines(data))


def _half_finished_upgrade(tmp_path: Path, errors: dict[int, str]) -> dict[str, object]:
    """An upgrade of 300 workers stopped half way: 150 done, the hosts in `errors` failed with that
    error (prefixed with the host, as step errors are), the others started and interrupted; three
    masters' restart step started too."""
    from sealer.state.journal import Journal

    state = ClusterState("demo", tmp_path)
    state.record_applied(BASE, runtime_type="kubernetes")
    journal = Journal(state.journal_path, durable=False)  # 1,000 records: no fsync needed in a test
    run = journal.resume_or_begin("upgrade", "sha256:plan")
    state.update_meta(last_operation={"op": run.op, "kind": "upgrade", "command": "sealer upgrade x:2"})
    workers = [f"10.0.{1 + i // 250}.{1 + i % 250}" for i in range(300)]
    for i, ip in enumerate(workers):
        journal.step(run.op, "upgrade-worker", "upgrade", "start", host=ip, digest="d")
        if i % 2 == 0:
            journal.step(run.op, "upgrade-worker", "upgrade", "done", host=ip, digest="d")
        elif i in errors:
            journal.step(run.op, "upgrade-worker", "upgrade", "failed", host=ip, digest="d",
                         error=f"{ip}: {errors[i]}")
    for ip in ("10.0.0.2", "10.0.0.3", "10.0.0.4"):
        journal.step(run.op, "upgrade-master", "restart", "start", host=ip, digest="d")
    journal.end(run.op, "failed", "interrupted")
    journal.close()
    return cluster_status(state)


def test_status_of_a_half_finished_300_host_upgrade_groups_hosts_by_step(tmp_path: Path) -> None:
    failed = {1: "kubelet did not start", 3: "kubelet did not start", 5: "kubelet did not start",
              7: "image pull timed out"}
    data = _half_finished_upgrade(tmp_path, failed)
    unfinished = data["unfinished"]
    assert isinstance(unfinished, list) and len(unfinished) == 153  # JSON: every host, with its error
    assert {u["error"] for u in unfinished if u["status"] == "failed"} == {
        "10.0.1.2: kubelet did not start", "10.0.1.4: kubelet did not start",
        "10.0.1.6: kubelet did not start", "10.0.1.8: image pull timed out"}
    lines = status_lines(data)
    assert len(lines) < 15, lines
    worker = [line for line in lines if "upgrade-worker upgrade" in line]
    # failed hosts lead the sample: they are the ones to look at
    assert worker == [
        "  unfinished: upgrade-worker upgrade on 150 hosts (4 failed, 146 started): 10.0.1.2, 10.0.1.4, "
        "10.0.1.6, 10.0.1.8, 10.0.1.10, 10.0.1.12, 10.0.1.14, 10.0.1.16, 10.0.1.18, 10.0.1.20, +140 more"
    ]
    text = "\n".join(lines)
    assert "    3 host(s) (10.0.1.2, 10.0.1.4, 10.0.1.6): kubelet did not start" in text
    assert "    1 host(s) (10.0.1.8): image pull timed out" in text
    # three hosts on a step: one line each, as before
    for ip in ("10.0.0.2", "10.0.0.3", "10.0.0.4"):
        assert f"  unfinished: upgrade-master restart on {ip} (start)" in lines
    assert "every host and error: sealer status -o json" in text
    assert lines[-1] == "to finish it, run: sealer upgrade x:2"
    # 300 workers in the header: a count and a sample, not 300 addresses
    workers = [f"10.0.{1 + i // 250}.{1 + i % 250}" for i in range(300)]
    header = status_lines({**data, "workers": workers})[0]
    assert header.endswith(", 300 worker(s) 10.0.1.1, 10.0.1.2, 10.0.1.3, 10.0.1.4, 10.0.1.5, 10.0.1.6, "
                           "10.0.1.7, 10.0.1.8, 10.0.1.9, 10.0.1.10, +290 more")


def test_status_caps_the_distinct_errors_of_a_step_and_counts_the_rest(tmp_path: Path) -> None:
    failed = {i: f"disk full on /dev/sd{chr(97 + i // 2)}" for i in range(1, 16, 2)}  # 8 distinct errors
    lines = status_lines(_half_finished_upgrade(tmp_path, failed))
    errors = [line for line in lines if line.startswith("    ") and "disk full" in line]
    assert len(errors) == 5
    assert "    3 other error(s) on 3 host(s)" in lines


def test_status_keeps_per_host_lines_for_up_to_five_hosts_on_a_step(tmp_path: Path) -> None:
    state = ClusterState("demo", tmp_path)
    state.record_applied(BASE, runtime_type="k3s")
    journal = state.journal()
    run = journal.resume_or_begin("apply", "sha256:p")
    for n, action in ((5, "five"), (6, "six")):
        for i in range(n):
            journal.step(run.op, action, "rootfs", "start", host=f"10.0.0.{10 + i}", digest="d")
    journal.end(run.op, "failed", "x")
    journal.close()
    lines = status_lines(cluster_status(state))
    assert [line for line in lines if "five rootfs" in line] == [
        f"  unfinished: five rootfs on 10.0.0.{10 + i} (start)" for i in range(5)]
    assert [line for line in lines if "six rootfs" in line] == [
        "  unfinished: six rootfs on 6 hosts (6 started): 10.0.0.10, 10.0.0.11, 10.0.0.12, 10.0.0.13, "
        "10.0.0.14, 10.0.0.15"]


def test_only_runtimes_with_upgrade_host_are_upgraded_in_place() -> None:
    from sealer.apply.lifecycle import EtcdSnapshots, _host_upgrader
    from sealer.runtime.base import choose_runtime

    k3s = choose_runtime({"cluster.alpha.sealer.io/cluster-runtime-type": "k3s"}, None, "img")
    assert _host_upgrader(k3s) is k3s and isinstance(k3s, EtcdSnapshots)

    class WholeClusterOnly:  # a runtime without upgrade_host: refused before anything changes
        name = "other"

        async def upgrade(self, ctx: object, image: str) -> None: ...

    assert _host_upgrader(WholeClusterOnly()) is None  # type: ignore[arg-type]
