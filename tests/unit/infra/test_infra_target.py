"""From Clusterfile hosts to Targets: merged ssh settings, defaults left to ~/.ssh/config,
bastions, secrets kept out of repr; and host selection by role and IP for exec/cp."""

from __future__ import annotations

import pytest

from sealer.cli.host_cmds import select_targets
from sealer.errors import SealerError
from sealer.infra.connector import Outcome, Result
from sealer.infra.host import Target, target_from_host
from sealer.model.cluster import SSH, Bastion, Cluster, HostGroup


def cluster() -> Cluster:
    return Cluster(
        name="c1",
        image="x:1",
        ssh=SSH(user="ops", password="cluster-secret", port=2222, sudo_password="sudo-secret"),
        host_groups=(
            HostGroup(ips=("10.0.0.2",), roles=("master",)),
            HostGroup(
                ips=("10.0.0.3", "10.0.0.4"),
                roles=("node", "gpu"),
                ssh=SSH(
                    user="root",
                    pk="/keys/id",
                    pk_password="phrase",
                    port=22,
                    bastion=Bastion(host="10.0.0.1", user="jump", pk="/keys/jump"),
                    host_key_policy="strict",
                    host_key="ssh-ed25519 AAAA",
                ),
                env={"A": "1"},
            ),
        ),
    )


def test_targets_carry_merged_settings() -> None:
    master, node, _ = (target_from_host(h) for h in cluster().hosts)
    assert (master.address, master.port, master.user, master.password) == (
        "10.0.0.2",
        2222,
        "ops",
        "cluster-secret",
    )
    assert master.sudo_password == "sudo-secret" and master.host_key_policy == "tofu"
    assert master.name == "10.0.0.2:2222" and master.roles == ("master",)
    # root and 22 are the model's defaults: left unset so ~/.ssh/config may supply them
    assert (node.user, node.port, node.login_user, node.name) == (None, None, "root", "10.0.0.3")
    assert (node.pk, node.pk_password, node.host_key_policy, node.host_key) == (
        "/keys/id",
        "phrase",
        "strict",
        "ssh-ed25519 AAAA",
    )
    assert node.bastion == Target("10.0.0.1", user="jump", pk="/keys/jump", host_key_policy="strict")
    assert node.env["A"] == "1" and node.env["HostIP"] == "10.0.0.3"


def test_secrets_stay_out_of_repr() -> None:
    text = repr([target_from_host(h) for h in cluster().hosts])
    for secret in ("cluster-secret", "sudo-secret", "phrase"):
        assert secret not in text


def test_select_by_role_and_ip() -> None:
    c = cluster()
    assert [t.address for t in select_targets(c, (), ())] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert [t.address for t in select_targets(c, ("node",), ())] == ["10.0.0.3", "10.0.0.4"]
    assert [t.address for t in select_targets(c, ("master,gpu",), ())] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert [t.address for t in select_targets(c, ("node",), ("10.0.0.4",))] == ["10.0.0.4"]
    with pytest.raises(SealerError, match="not a host of cluster c1"):
        select_targets(c, (), ("10.0.0.9",))
    with pytest.raises(SealerError, match="not an IP address"):
        select_targets(c, (), ("host-a",))
    with pytest.raises(SealerError, match="has role 'etcd'"):
        select_targets(c, ("etcd",), ())
    with pytest.raises(SealerError, match="no host matches"):
        select_targets(c, ("master",), ("10.0.0.3",))


def test_outcome_ok_reflects_exit_code_and_error() -> None:
    ok = Result("h", "true", 0, "", "", 0.1)
    bad = Result("h", "false", 1, "", "boom\n", 0.1)
    assert Outcome("h", value=ok).ok and not Outcome("h", value=bad).ok
    assert not Outcome("h", error=SealerError("x")).ok
    with pytest.raises(SealerError, match="`false` exited 1: boom"):
        bad.check()


def test_values_written_in_the_clusterfile_win_even_when_they_are_the_defaults() -> None:
    from sealer.infra.host import targets_from_cluster

    master, node, _ = targets_from_cluster(cluster())
    assert (master.user, master.port) == ("ops", 2222)
    assert (node.user, node.port, node.name) == ("root", 22, "10.0.0.3")  # written: root, 22
    bare = Cluster(name="b", image=None, host_groups=(HostGroup(ips=("10.0.0.9",), roles=("master",)),))
    (only,) = targets_from_cluster(bare)
    assert (only.user, only.port, only.login_user) == (None, None, "root")  # left to ~/.ssh/config
