"""The planner: order, reasons and refusals for every kind of change."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from sealer.errors import PlanError
from sealer.model.cluster import (
    SSH,
    Cluster,
    Clusterfile,
    ConfigDoc,
    HostAlias,
    LocalRegistry,
    PluginDoc,
    Registry,
    Taint,
)
from sealer.plan import Action, ObservedState, Plan, make_plan, plan_clusterfile, plan_delete
from sealer.plan.actions import compact_ips
from tests.unit.plan.builders import IMAGE, cluster, group
from tests.unit.plan.simulate import simulate


def kinds(plan: Plan) -> list[str]:
    return [a.kind for a in plan.actions]


def roles_of(c: Cluster) -> dict[str, str]:
    return {h.ip: "master" if h.is_master else "worker" for h in c.hosts}


# create ---------------------------------------------------------------------------------------------
def test_create_installs_master0_then_masters_one_by_one_then_workers_in_parallel() -> None:
    desired = cluster(["10.0.0.1", "10.0.0.2", "10.0.0.3"], ["10.0.0.4", "10.0.0.5"])
    plan = make_plan(desired, None)
    assert plan.operation == "create"
    assert kinds(plan) == ["install", "join-master", "join-master", "join-workers", "launch-apps"]
    install, m1, m2, workers, apps = plan.actions
    assert install.hosts == ("10.0.0.1",) and install.details["image"] == IMAGE
    assert (m1.hosts, m1.depends_on) == (("10.0.0.2",), (install.id,))
    assert (m2.hosts, m2.depends_on) == (("10.0.0.3",), (m1.id,))
    assert workers.hosts == ("10.0.0.4", "10.0.0.5") and workers.parallel
    assert workers.depends_on == (m2.id,)
    assert apps.hosts == ("10.0.0.1",)
    assert "create" in plan.reason and plan.reason.endswith("create it with 3 masters and 2 workers")
    assert simulate(plan, {}, None) == roles_of(desired)


def test_create_single_host_cluster() -> None:
    plan = make_plan(cluster(["192.168.1.10"]), None)
    assert kinds(plan) == ["install", "launch-apps"]


def test_master0_is_first_ip_of_first_master_group_even_after_a_worker_group() -> None:
    desired = cluster(groups=[group(["10.0.0.9"], ("node",)), group(["10.0.0.5", "10.0.0.2"], ("master",))])
    plan = make_plan(desired, None)
    assert plan.actions[0].hosts == ("10.0.0.5",)
    assert plan.actions[1].kind == "join-master" and plan.actions[1].hosts == ("10.0.0.2",)


# nothing to do ----------------------------------------------------------------------------------------
def test_same_cluster_gives_an_empty_plan_with_a_reason() -> None:
    c = cluster(["10.0.0.1"], ["10.0.0.2"])
    plan = make_plan(c, c)
    assert plan.empty and plan.operation == "none"
    assert plan.reason.startswith("nothing to do")
    assert plan.to_dict()["actions"] == []


def test_ssh_only_change_is_a_note_not_an_action() -> None:
    old = cluster(["10.0.0.1"], ["10.0.0.2"])
    new = replace(old, ssh=SSH(user="admin", password="hunter2"))
    plan = make_plan(new, old)
    assert plan.empty
    assert any("SSH" in note for note in plan.notes)
    assert "hunter2" not in plan.to_json()


# scale ------------------------------------------------------------------------------------------------
def test_add_masters_one_at_a_time_and_workers_in_parallel() -> None:
    old = cluster(["10.0.0.1"], ["10.0.0.4"])
    new = cluster(["10.0.0.1", "10.0.0.2", "10.0.0.3"], ["10.0.0.4", "10.0.0.5", "10.0.0.6"])
    plan = make_plan(new, old)
    assert plan.operation == "update"
    assert kinds(plan) == ["join-master", "join-master", "join-workers"]
    assert [a.hosts for a in plan.actions[:2]] == [("10.0.0.2",), ("10.0.0.3",)]
    assert plan.actions[1].depends_on == (plan.actions[0].id,)
    assert plan.actions[2].hosts == ("10.0.0.5", "10.0.0.6") and plan.actions[2].parallel
    assert plan.reason == "add 2 masters and 2 workers"
    assert simulate(plan, roles_of(old), "10.0.0.1") == roles_of(new)


def test_remove_workers_first_then_masters_last_joined_first() -> None:
    old = cluster(["10.0.0.1", "10.0.0.2", "10.0.0.3"], ["10.0.0.4", "10.0.0.5"])
    new = cluster(["10.0.0.1"], ["10.0.0.5"])
    plan = make_plan(new, old)
    assert kinds(plan) == ["remove-workers", "remove-master", "remove-master"]
    assert plan.actions[0].hosts == ("10.0.0.4",)
    assert [a.hosts for a in plan.actions[1:]] == [("10.0.0.3",), ("10.0.0.2",)]
    assert all("no longer in the Clusterfile" in a.reason for a in plan.actions)
    assert simulate(plan, roles_of(old), "10.0.0.1") == roles_of(new)


def test_replacing_hosts_removes_before_it_joins() -> None:
    old = cluster(["10.0.0.1", "10.0.0.2"], ["10.0.0.4"])
    new = cluster(["10.0.0.1", "10.0.0.3"], ["10.0.0.5"])
    plan = make_plan(new, old)
    assert kinds(plan) == ["remove-workers", "remove-master", "join-master", "join-workers"]
    assert simulate(plan, roles_of(old), "10.0.0.1") == roles_of(new)


# upgrade ----------------------------------------------------------------------------------------------
def test_image_change_upgrades_remaining_hosts_before_new_hosts_join() -> None:
    old = cluster(["10.0.0.1", "10.0.0.2"], ["10.0.0.4", "10.0.0.5"])
    new = replace(cluster(["10.0.0.1", "10.0.0.2"], ["10.0.0.5", "10.0.0.6"]), image="example/k8s:v1.23")
    plan = make_plan(new, old)
    assert kinds(plan) == ["remove-workers", "upgrade", "join-workers", "launch-apps"]
    upgrade = plan.actions[1]
    assert upgrade.hosts == ("10.0.0.1", "10.0.0.2", "10.0.0.5")
    assert dict(upgrade.details) == {"from": IMAGE, "to": "example/k8s:v1.23"}
    assert (plan.image, plan.previous_image) == ("example/k8s:v1.23", IMAGE)
    assert "upgrade the image" in plan.reason


def test_cmd_or_app_names_change_relaunches_apps_only() -> None:
    old = cluster(["10.0.0.1"])
    plan = make_plan(replace(old, app_names=("calico",)), old)
    assert kinds(plan) == ["launch-apps"]
    assert "spec.cmd / spec.appNames" in plan.actions[0].reason


# in-place updates ----------------------------------------------------------------------------------
def test_label_changes_are_grouped_per_distinct_change() -> None:
    old = cluster(groups=[
        group(["10.0.0.1"], ("master",)),
        group(["10.0.0.2", "10.0.0.3"], labels={"disk": "hdd", "zone": "a"}),
        group(["10.0.0.4"], labels={"gpu": "yes"}),
    ])
    new = cluster(groups=[
        group(["10.0.0.1"], ("master",)),
        group(["10.0.0.2", "10.0.0.3"], labels={"disk": "ssd"}),
        group(["10.0.0.4"], labels={"gpu": "yes"}),
    ])
    plan = make_plan(new, old)
    assert kinds(plan) == ["update-labels"]
    (action,) = plan.actions
    assert action.hosts == ("10.0.0.2", "10.0.0.3") and action.parallel
    assert action.to_dict()["details"] == {"set": {"disk": "ssd"}, "remove": ["zone"]}


def test_custom_role_change_updates_the_role_label() -> None:
    old = cluster(groups=[group(["10.0.0.1"], ("master",)), group(["10.0.0.2"], ("node",))])
    new = cluster(groups=[group(["10.0.0.1"], ("master",)), group(["10.0.0.2"], ("node", "db"))])
    plan = make_plan(new, old)
    assert kinds(plan) == ["update-labels"]
    assert plan.actions[0].to_dict()["details"] == {"set": {"node-role.kubernetes.io/db": ""}}


def test_taint_changes_add_new_and_remove_dropped_and_explicit_removals() -> None:
    keep = Taint("dedicated", "db", "NoSchedule")
    dropped = Taint("old", "", "NoExecute")
    old = cluster(groups=[group(["10.0.0.1"], ("master",), taints=[keep, dropped])])
    new = cluster(groups=[group(["10.0.0.1"], ("master",), taints=[
        keep, Taint("gpu", "true", "PreferNoSchedule"),
        Taint("node-role.kubernetes.io/master", "", "NoSchedule", remove=True),
    ])])
    plan = make_plan(new, old)
    assert kinds(plan) == ["update-taints"]
    assert plan.actions[0].to_dict()["details"] == {
        "add": ["gpu=true:PreferNoSchedule"],
        "remove": ["node-role.kubernetes.io/master:NoSchedule-", "old:NoExecute-"],
    }


def test_env_change_lists_keys_never_values() -> None:
    old = cluster(["10.0.0.1"], ["10.0.0.2"], env={"A": "1", "GONE": "x"})
    new = cluster(["10.0.0.1"], ["10.0.0.2"], env={"A": "2", "DB_PASSWORD": "s3cr3t-value"})
    plan = make_plan(new, old)
    assert kinds(plan) == ["update-env"]
    (action,) = plan.actions
    assert action.hosts == ("10.0.0.1", "10.0.0.2")
    assert action.to_dict()["details"] == {"set": ["A", "DB_PASSWORD"], "unset": ["GONE"]}
    assert "s3cr3t-value" not in plan.to_json()


def test_host_alias_change_updates_existing_hosts_after_joins() -> None:
    old = cluster(["10.0.0.1"])
    new = replace(
        cluster(["10.0.0.1"], ["10.0.0.2"]), host_aliases=(HostAlias("10.0.0.100", ("api.internal",)),)
    )
    plan = make_plan(new, old)
    assert kinds(plan) == ["join-workers", "update-host-aliases"]
    aliases = plan.actions[1]
    assert aliases.hosts == ("10.0.0.1",)  # the new worker gets them when it joins
    assert aliases.depends_on == (plan.actions[0].id,)
    assert aliases.to_dict()["details"] == {"hostAliases": {"10.0.0.100": ["api.internal"]}}


# refusals -----------------------------------------------------------------------------------------------
def test_runtime_type_change_is_refused() -> None:
    c = cluster(["10.0.0.1"])
    with pytest.raises(PlanError) as err:
        make_plan(
            replace(c, image="k0s:v1"), c, ObservedState(runtime_type="k3s"), desired_runtime_type="k0s"
        )
    assert "runs k3s" in err.value.message and "cannot change in place" in err.value.message
    assert err.value.hint and "sealer delete -a" in err.value.hint


def test_same_runtime_type_is_fine() -> None:
    c = cluster(["10.0.0.1"])
    plan = make_plan(c, c, ObservedState(runtime_type="k3s"), desired_runtime_type="k3s")
    assert plan.empty


def test_removing_all_masters_is_refused() -> None:
    old = cluster(["10.0.0.1"], ["10.0.0.2"])
    new = cluster(groups=[group(["10.0.0.2"], ("node",))])
    with pytest.raises(PlanError, match="removes every master"):
        make_plan(new, old)


def test_no_master_on_create_is_refused() -> None:
    with pytest.raises(PlanError, match="no host has the master role") as err:
        make_plan(cluster(groups=[group(["10.0.0.2"], ("node",))]), None)
    assert err.value.hint and "roles: [master]" in err.value.hint


def test_ip_family_change_is_refused() -> None:
    old = cluster(["10.0.0.1"])
    new = cluster(["fd00::1"])
    with pytest.raises(PlanError, match="IPv4 addresses and the Clusterfile uses IPv6"):
        make_plan(new, old)


def test_master0_reorder_is_refused_with_a_reorder_hint() -> None:
    old = cluster(["10.0.0.1", "10.0.0.2"])
    new = cluster(["10.0.0.2", "10.0.0.1"])
    with pytest.raises(PlanError, match=r"master0 would change from 10\.0\.0\.1 to 10\.0\.0\.2") as err:
        make_plan(new, old)
    assert err.value.hint and "make 10.0.0.1 the first IP" in err.value.hint


def test_removing_master0_is_refused() -> None:
    old = cluster(["10.0.0.1", "10.0.0.2"])
    new = cluster(["10.0.0.2"])
    with pytest.raises(PlanError, match="master0 would change") as err:
        make_plan(new, old)
    assert err.value.hint and "sealer delete -a" in err.value.hint


@pytest.mark.parametrize(
    ("old_roles", "new_roles", "words"),
    [(("node",), ("master",), "from node to master"), (("master",), ("node",), "from master to node")],
)
def test_role_flip_in_place_is_refused(old_roles: tuple[str], new_roles: tuple[str], words: str) -> None:
    old = cluster(groups=[group(["10.0.0.1"], ("master",)), group(["10.0.0.2"], old_roles)])
    new = cluster(groups=[group(["10.0.0.1"], ("master",)), group(["10.0.0.2"], new_roles)])
    with pytest.raises(PlanError, match=words) as err:
        make_plan(new, old)
    assert err.value.hint and "remove 10.0.0.2" in err.value.hint and "add it back" in err.value.hint


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("container_runtime", "docker", "spec.containerRuntime"),
        ("data_root", "/data/sealer", "spec.dataRoot"),
        ("registry", Registry(local=LocalRegistry(domain="hub.local")), "spec.registry"),
        ("name", "other", "cannot be renamed"),
    ],
)
def test_unchangeable_fields_are_refused(field: str, value: object, words: str) -> None:
    old = cluster(["10.0.0.1"])
    with pytest.raises(PlanError) as err:
        make_plan(replace(old, **{field: value}), old)
    assert words in err.value.message + (err.value.hint or "")


def test_missing_image_is_refused() -> None:
    with pytest.raises(PlanError, match=r"spec\.image is empty"):
        make_plan(cluster(["10.0.0.1"], image=None), None)


def test_duplicate_ip_is_refused() -> None:
    c = cluster(groups=[group(["10.0.0.1"], ("master",)), group(["10.0.0.1"], ("node",))])
    with pytest.raises(PlanError, match="listed twice"):
        make_plan(c, None)


# delete ----------------------------------------------------------------------------------------------------
def test_delete_plan_removes_master0_last() -> None:
    c = cluster(["10.0.0.1", "10.0.0.2", "10.0.0.3"], ["10.0.0.4"])
    plan = plan_delete(c)
    assert plan.operation == "delete"
    assert [(a.kind, a.hosts) for a in plan.actions] == [
        ("remove-workers", ("10.0.0.4",)),
        ("remove-master", ("10.0.0.3",)),
        ("remove-master", ("10.0.0.2",)),
        ("uninstall", ("10.0.0.1",)),
    ]


# rendering --------------------------------------------------------------------------------------------------
def test_plan_renders_rows_and_json_and_a_stable_digest() -> None:
    workers = [f"10.0.1.{i}" for i in range(1, 11)]
    plan = make_plan(cluster(["10.0.0.1"], workers), None)
    rows = plan.rows()
    assert rows[0][:3] == ("a1", "install", "10.0.0.1")
    assert rows[1][2] == "10.0.1.1-10.0.1.10 [10 hosts] (parallel)"
    assert json.loads(plan.to_json())["actions"][1]["hosts"] == workers
    assert plan.digest() == make_plan(cluster(["10.0.0.1"], workers), None).digest()
    assert plan.digest() != make_plan(cluster(["10.0.0.1"], workers[:-1]), None).digest()
    assert "a2 join-workers on 10.0.1.1-10.0.1.10" in plan.text()


def test_host_lists_print_as_ranges_and_are_shortened() -> None:
    ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.7", "fd00::1", "10.0.0.255", "10.0.1.0"]
    assert compact_ips(ips) == [
        "10.0.0.1-10.0.0.3", "10.0.0.7", "fd00::1", "10.0.0.255-10.0.1.0",
    ]
    assert compact_ips(["10.0.0.2", "10.0.0.1"]) == ["10.0.0.2", "10.0.0.1"]  # order is kept
    scattered = Action("a1", "join-workers", tuple(f"10.0.0.{i}" for i in range(1, 20, 2)), "why")
    assert scattered.hosts_text() == "10.0.0.1, 10.0.0.3, 10.0.0.5, 10.0.0.7 … (+6 hosts)"
    mixed = Action("a1", "join-workers", ("10.0.0.1", "10.0.0.2", "10.0.0.9", "10.0.1.1", "10.0.1.2",
                                          "10.0.2.1", "10.0.3.1"), "why")
    assert mixed.hosts_text() == (
        "10.0.0.1-10.0.0.2, 10.0.0.9, 10.0.1.1-10.0.1.2, 10.0.2.1 … (+1 hosts) [7 hosts]"
    )


def test_changed_documents_are_noted_because_no_action_reapplies_them() -> None:
    c = cluster(["10.0.0.1"])
    old = Clusterfile(cluster=c, configs=(ConfigDoc("values", "etc/values.yaml", "a: 1\n"),))
    new = Clusterfile(cluster=c, configs=(ConfigDoc("values", "etc/values.yaml", "a: 2\n"),),
                      plugins=(PluginDoc("swap", "SHELL", "swapoff -a", ("pre-init-host",)),))
    plan = plan_clusterfile(new, old)
    assert plan.empty
    assert any(n.startswith("Config, Plugin documents changed") for n in plan.notes)
    assert plan_clusterfile(old, old).notes == ()
    assert plan_clusterfile(new, None).operation == "create"


# observed nodes -------------------------------------------------------------------------------------
def test_hosts_missing_from_the_cluster_join_again() -> None:
    c = cluster(["10.0.0.1", "10.0.0.2"], ["10.0.0.3", "10.0.0.4"])
    observed = ObservedState(nodes=frozenset({"10.0.0.1", "10.0.0.3", "10.0.0.77"}))
    plan = make_plan(c, c, observed)
    assert [(a.kind, a.hosts, dict(a.details)) for a in plan.actions] == [
        ("join-master", ("10.0.0.2",), {"rejoin": True}),
        ("join-workers", ("10.0.0.4",), {"rejoin": True}),
    ]
    assert "not a node of the cluster" in plan.actions[0].reason
    assert plan.reason == "join 2 lost hosts again"
    assert any("10.0.0.77 are in the cluster but not in the Clusterfile" in n for n in plan.notes)


def test_k0s_controllers_are_not_nodes_and_master0_is_never_rejoined() -> None:
    c = cluster(["10.0.0.1", "10.0.0.2"], ["10.0.0.3"])
    k0s = make_plan(c, c, ObservedState(runtime_type="k0s", nodes=frozenset({"10.0.0.3"})))
    assert k0s.empty and k0s.notes == ()
    k8s = make_plan(c, c, ObservedState(runtime_type="kubernetes", nodes=frozenset({"10.0.0.2", "10.0.0.3"})))
    assert k8s.empty
    assert any(n.startswith("master0 10.0.0.1 is not a node of the cluster") for n in k8s.notes)
