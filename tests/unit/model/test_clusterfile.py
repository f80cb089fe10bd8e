"""Clusterfile decoding: every field, its default, and the error (located, with a hint) for bad values."""

from __future__ import annotations

import base64
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from sealer.errors import ClusterfileError, Problem
from sealer.model.cluster import DEFAULT_DATA_ROOT, Bastion, Clusterfile, LocalRegistry, Taint
from sealer.model.clusterfile import dump_clusterfile, load_clusterfile, parse_clusterfile, parse_plugins

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def doc(spec: str = "", *, extra: str = "", name: str = "demo") -> str:
    """A minimal valid Clusterfile; `spec` lines are added under spec (indented by 2)."""
    base = f"""\
apiVersion: sealer.io/v2
kind: Cluster
metadata:
  name: {name}
spec:
  image: kubernetes:v1.22.15
"""
    text = base + textwrap.indent(textwrap.dedent(spec), "  ")
    if "hosts:" not in spec:
        text += "  hosts:\n    - ips: [10.0.0.1]\n      roles: [master]\n"
    return text + extra


def ok(text: str) -> Clusterfile:
    cf, problems = parse_clusterfile(text, "Clusterfile")
    assert cf is not None, "\n".join(p.render() for p in problems)
    return cf


def errors(text: str) -> list[Problem]:
    cf, problems = parse_clusterfile(text, "Clusterfile")
    found = [p for p in problems if p.severity == "error"]
    assert cf is None and found, "expected errors"
    return found


def warnings(text: str) -> list[Problem]:
    cf, problems = parse_clusterfile(text, "Clusterfile")
    assert cf is not None, "\n".join(p.render() for p in problems)
    return [p for p in problems if p.severity == "warning"]


def one_error(text: str, path: str | None, message: str, hint: str | None = None) -> Problem:
    found = errors(text)
    matching = [p for p in found if p.path == path and message in p.message]
    assert matching, "\n".join(p.render() for p in found)
    if hint is not None:
        assert matching[0].hint is not None and hint in matching[0].hint, matching[0].render()
    return matching[0]


# -- the minimal file and defaults -----------------------------------------------------------


def test_minimal_file_and_defaults() -> None:
    cf = ok(doc())
    c = cf.cluster
    assert c.name == "demo" and c.image == "kubernetes:v1.22.15"
    assert c.data_root == DEFAULT_DATA_ROOT and c.rootfs == "/var/lib/sealer/data/demo/rootfs"
    assert c.registry.local == LocalRegistry() and c.registry.external is None
    assert c.registry.url == "sea.hub:5000"
    assert c.app_names is None and c.cmd == () and c.container_runtime is None
    assert c.master0 is not None and c.master0.ip == "10.0.0.1"
    host = c.hosts[0]
    assert host.ssh.user == "root" and host.ssh.port == 22 and host.ssh.host_key_policy == "tofu"
    # derived env, as Go sealer's decoder appends it
    assert {k: c.env[k] for k in ("LocalRegistryDomain", "LocalRegistryPort", "LocalRegistryURL")} == {
        "LocalRegistryDomain": "sea.hub",
        "LocalRegistryPort": "5000",
        "LocalRegistryURL": "sea.hub:5000",
    }
    assert (c.env["RegistryDomain"], c.env["RegistryPort"], c.env["RegistryURL"]) == (
        "sea.hub",
        "5000",
        "sea.hub:5000",
    )
    assert host.env["HostIP"] == "10.0.0.1"
    assert cf.source == "Clusterfile"


def test_missing_name_defaults_with_a_warning() -> None:
    text = doc().replace("metadata:\n  name: demo\n", "")
    found = warnings(text)
    assert ok(text).cluster.name == "my-cluster"
    assert any(p.path == "metadata.name" for p in found)


def test_api_version_is_not_decisive() -> None:
    for api in ("sealer.cloud/v2", "sealer.aliyun.com/v1alpha1", ""):
        text = doc().replace("apiVersion: sealer.io/v2", f"apiVersion: {api}" if api else "")
        assert ok(text).cluster.name == "demo"


# -- hosts, roles, master0 ------------------------------------------------------------------


def test_hosts_roles_and_master0() -> None:
    c = ok(
        doc(
            """\
            hosts:
              - ips: [10.0.0.2-10.0.0.3]
                roles: [master]
              - ips: [10.0.0.1]
                roles: [master, etcd]
              - ips: [10.0.0.9, 10.0.0.8]
                roles: [node, db]
            """
        )
    ).cluster
    assert [h.ip for h in c.masters] == ["10.0.0.2", "10.0.0.3", "10.0.0.1"]
    assert c.master0 is not None and c.master0.ip == "10.0.0.2"
    assert [h.ip for h in c.workers] == ["10.0.0.9", "10.0.0.8"]
    assert c.host("10.0.0.8") is not None and c.host("10.0.0.8").roles == ("node", "db")  # type: ignore[union-attr]


def test_ipv6_cluster_gets_host_ip_family() -> None:
    c = ok(doc("hosts:\n  - ips: [fd00::1-fd00::3]\n    roles: [master]\n")).cluster
    assert [h.ip for h in c.hosts] == ["fd00::1", "fd00::2", "fd00::3"]
    assert c.env["HostIPFamily"] == "IPv6"
    assert c.ip_family == 6 and ok(doc()).cluster.ip_family == 4


def test_bad_ip_is_located_precisely() -> None:
    text = doc(
        "hosts:\n  - ips: [10.0.0.1]\n    roles: [master]\n"
        "  - ips: [10.0.0.2, 10.0.0.300]\n    roles: [node]\n"
    )
    p = one_error(text, "spec.hosts[1].ips[1]", "'10.0.0.300' is not a valid", "by address")
    assert p.file == "Clusterfile"
    assert (p.line, p.column) == (10, 23)
    assert p.render().startswith("Clusterfile:10:23: error: spec.hosts[1].ips[1]: ")


def test_reversed_range_and_cidr() -> None:
    one_error(
        doc("hosts:\n  - ips: [10.0.0.9-10.0.0.1]\n    roles: [master]\n"), "spec.hosts[0].ips[0]", "ends at"
    )
    one_error(
        doc("hosts:\n  - ips: [10.0.0.0/24]\n    roles: [master]\n"), "spec.hosts[0].ips[0]", "is a CIDR"
    )


def test_duplicate_ips_across_groups() -> None:
    text = doc(
        "hosts:\n  - ips: [10.0.0.1-10.0.0.3]\n    roles: [master]\n  - ips: [10.0.0.3]\n    roles: [node]\n"
    )
    one_error(text, "spec.hosts[1].ips", "10.0.0.3 is listed twice", "spec.hosts[0].ips (line 8)")


def test_mixed_ip_families() -> None:
    text = doc("hosts:\n  - ips: [10.0.0.1]\n    roles: [master]\n  - ips: [fd00::1]\n    roles: [node]\n")
    one_error(text, "spec.hosts[1].ips", "fd00::1 is IPv6 but 10.0.0.1 is IPv4", "one IP family")


def test_host_without_role_and_no_master() -> None:
    one_error(doc("hosts:\n  - ips: [10.0.0.1]\n"), "spec.hosts[0].roles", "has no role", "roles: [master]")
    one_error(
        doc("hosts:\n  - ips: [10.0.0.1]\n    roles: [node]\n"), "spec.hosts", "no host has the master role"
    )


def test_no_hosts_and_hosts_as_mapping() -> None:
    one_error(doc("hosts: []\n"), "spec.hosts", "no hosts", "hosts:")
    one_error(doc("hosts:\n  ips: [10.0.0.1]\n  roles: [master]\n"), "spec.hosts", "must be a list", "'- '")


def test_group_without_ips_and_bad_role() -> None:
    one_error(doc("hosts:\n  - roles: [master]\n"), "spec.hosts[0].ips", "has no ips")
    one_error(doc("hosts:\n  - ips: []\n    roles: [master]\n"), "spec.hosts[0].ips", "has no ips")
    one_error(
        doc("hosts:\n  - ips: [10.0.0.1]\n    roles: [master, 'bad role']\n"),
        "spec.hosts[0].roles[1]",
        "not valid",
    )


def test_custom_roles_only_warn() -> None:
    text = doc("hosts:\n  - ips: [10.0.0.1]\n    roles: [master]\n  - ips: [10.0.0.2]\n    roles: [db]\n")
    assert any("neither master nor node" in p.message for p in warnings(text))


def test_a_scalar_where_a_list_belongs() -> None:
    one_error(
        doc("hosts:\n  - ips: 10.0.0.1\n    roles: [master]\n"),
        "spec.hosts[0].ips",
        "expected a list",
        "[10.0.0.1]",
    )


# -- labels, taints --------------------------------------------------------------------------


def test_labels_and_taints() -> None:
    c = ok(
        doc(
            """\
            hosts:
              - ips: [10.0.0.1]
                roles: [master]
                labels: {disk: ssd, gpu: 1, spot: true, example.com/tier: ""}
                taints: ["dedicated=db:NoSchedule", "k:NoExecute-", "gone-"]
            """
        )
    ).cluster
    host = c.hosts[0]
    assert host.labels == {"disk": "ssd", "gpu": "1", "spot": "true", "example.com/tier": ""}
    assert host.taints == (
        Taint("dedicated", "db", "NoSchedule"),
        Taint("k", "", "NoExecute", remove=True),
        Taint("gone", "", None, remove=True),
    )


def test_bad_taint_effect_has_did_you_mean() -> None:
    text = doc("hosts:\n  - ips: [10.0.0.1]\n    roles: [master]\n    taints: [a=b:NoSchedul]\n")
    one_error(text, "spec.hosts[0].taints[0]", "unknown taint effect 'NoSchedul'", "did you mean NoSchedule?")


def test_bad_labels() -> None:
    text = doc(
        "hosts:\n  - ips: [10.0.0.1]\n    roles: [master]\n    labels: {'bad key': x, ok: 'bad value'}\n"
    )
    found = errors(text)
    assert {p.path for p in found} == {"spec.hosts[0].labels.bad key", "spec.hosts[0].labels.ok"}


# -- env ---------------------------------------------------------------------------------------


def test_env_list_host_override_and_last_wins() -> None:
    c = ok(
        doc(
            """\
            env: [A=1, B=x=y, A=2, EMPTY=]
            hosts:
              - ips: [10.0.0.1]
                roles: [master]
                env: [B=host]
            """
        )
    ).cluster
    assert (c.env["A"], c.env["B"], c.env["EMPTY"]) == ("2", "x=y", "")
    assert c.hosts[0].env["B"] == "host" and c.hosts[0].env["A"] == "2"


def test_env_mapping_is_accepted_with_a_warning() -> None:
    text = doc("env:\n  A: 1\n")
    assert ok(text).cluster.env["A"] == "1"
    assert any("env is a mapping" in p.message for p in warnings(text))


def test_env_entry_without_equals() -> None:
    one_error(doc("env: [JUSTAKEY]\n"), "spec.env[0]", "is not KEY=VALUE", "JUSTAKEY=value")


def test_reserved_env_is_rederived() -> None:
    text = doc("env: [RegistryURL=evil:1, SvcCIDR=10.96.0.0/16]\ncontainerRuntime: {type: containerd}\n")
    c = ok(text).cluster
    assert c.env["RegistryURL"] == "sea.hub:5000"
    assert (c.env["KubeSvcIP"], c.env["DNSSvcIP"]) == ("10.96.0.1", "10.96.0.10")
    assert c.env["ContainerRuntime"] == "containerd"
    reserved = [p for p in warnings(text) if "RegistryURL is derived" in p.message]
    assert reserved and reserved[0].path == "spec.env[0]" and reserved[0].line == 7


def test_bad_svc_cidr() -> None:
    one_error(
        doc("env: [SvcCIDR=10.96.0.1/16]\n"),
        "spec.env[0]",
        "SvcCIDR: '10.96.0.1/16' has host bits",
        "10.96.0.0/16",
    )


# -- ssh, bastion, host keys ----------------------------------------------------------------

HOST_KEY = (
    "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + b"k" * 32).decode()
)


def test_ssh_fields_and_per_host_override() -> None:
    c = ok(
        doc(
            f"""\
            ssh: {{user: admin, passwd: 123, pk: /k, pkPasswd: pp, port: 2222, sudoPasswd: s,
                  encrypted: false}}
            hosts:
              - ips: [10.0.0.1]
                roles: [master]
                ssh: {{passwd: hostpw, port: "22", hostKey: "{HOST_KEY}"}}
              - ips: [10.0.0.2]
                roles: [node]
            """
        )
    ).cluster
    first, second = c.hosts
    assert (first.ssh.user, first.ssh.password, first.ssh.port, first.ssh.pk) == ("admin", "hostpw", 22, "/k")
    assert first.ssh.host_key == HOST_KEY
    assert (second.ssh.password, second.ssh.port, second.ssh.sudo_password) == ("123", 2222, "s")
    assert second.ssh.pk_password == "pp" and second.ssh.encrypted is False


def test_bastion_and_host_key_policy() -> None:
    c = ok(
        doc("ssh:\n  hostKeyPolicy: strict\n  bastion: {host: jump.example.com, user: ops, port: '2200'}\n")
    ).cluster
    ssh = c.hosts[0].ssh
    assert ssh.host_key_policy == "strict"
    assert ssh.bastion == Bastion(host="jump.example.com", port=2200, user="ops")


@pytest.mark.parametrize(
    ("ssh", "path", "message", "hint"),
    [
        ("port: 70000", "spec.ssh.port", "out of range", "1 to 65535"),
        ("port: twenty", "spec.ssh.port", "expected a number", None),
        (
            "hostKeyPolicy: stict",
            "spec.ssh.hostKeyPolicy",
            "unknown host key policy",
            "did you mean 'strict'?",
        ),
        ("bastion: {user: x}", "spec.ssh.bastion.host", "is required", None),
        ("bastion: {host: 'a b'}", "spec.ssh.bastion.host", "neither an IP address nor a host name", None),
        ("passwrd: x", "spec.ssh.passwrd", "unknown field 'passwrd'", "did you mean 'passwd'?"),
        ("user: [a]", "spec.ssh.user", "expected a string, got a list", None),
    ],
)
def test_ssh_errors(ssh: str, path: str, message: str, hint: str | None) -> None:
    one_error(doc(f"ssh:\n  {ssh}\n"), path, message, hint)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("ssh-ed25519", "'<type> <base64>'"),
        ("ssh-foo AAAA", "unknown host key type"),
        ("ssh-ed25519 !!!notbase64", "not valid base64"),
        ("ssh-rsa " + HOST_KEY.split()[1], "not a ssh-rsa key"),
    ],
)
def test_bad_pinned_host_keys(key: str, message: str) -> None:
    text = doc(f"hosts:\n  - ips: [10.0.0.1]\n    roles: [master]\n    ssh: {{hostKey: '{key}'}}\n")
    one_error(text, "spec.hosts[0].ssh.hostKey", message, "ssh-keyscan")


# -- image, cmd, appNames, containerRuntime, hostAliases, registry, dataRoot ---------------------


def test_image_is_required() -> None:
    one_error(doc().replace("  image: kubernetes:v1.22.15\n", ""), "spec.image", "no image", "spec.image")
    one_error(doc().replace("image: kubernetes:v1.22.15", "image:"), "spec.image", "must not be empty")
    one_error(doc().replace("image: kubernetes:v1.22.15", "image: [a, b]"), "spec.image", "got a list")
    one_error(
        doc().replace("image: kubernetes:v1.22.15", "image: 'a b'"), "spec.image", "not an image reference"
    )


def test_cmd_and_app_names() -> None:
    c = ok(doc("cmd: [kubectl apply -f a.yaml]\nappNames: ['']\n")).cluster
    assert c.cmd == ("kubectl apply -f a.yaml",) and c.app_names == ("",)
    assert ok(doc("appNames: [nginx, mysql]\n")).cluster.app_names == ("nginx", "mysql")
    assert ok(doc("appNames: []\n")).cluster.app_names is None


def test_container_runtime() -> None:
    assert ok(doc("containerRuntime: {type: docker}\n")).cluster.container_runtime == "docker"
    one_error(
        doc("containerRuntime: {type: contianerd}\n"), "spec.containerRuntime.type", "unknown", "'containerd'"
    )


def test_host_aliases() -> None:
    c = ok(doc("hostAliases:\n  - ip: 10.0.0.100\n    hostnames: [api.example.com, api]\n")).cluster
    assert c.host_aliases[0].ip == "10.0.0.100" and c.host_aliases[0].hostnames == ("api.example.com", "api")
    one_error(
        doc("hostAliases:\n  - ip: 10.0.0.300\n    hostnames: [a]\n"), "spec.hostAliases[0].ip", "not a valid"
    )
    one_error(
        doc("hostAliases:\n  - ip: 10.0.0.1\n    hostnames: ['a_b']\n"),
        "spec.hostAliases[0].hostnames[0]",
        "host name",
    )
    one_error(doc("hostAliases:\n  - hostnames: [a]\n"), "spec.hostAliases[0].ip", "is required")


def test_local_registry_fields() -> None:
    c = ok(
        doc(
            """\
            registry:
              localRegistry:
                domain: hub.local
                port: "5443"
                username: u
                password: p
                ha: false
                insecure: true
                cert: {subjectAltName: {dnsNames: [hub.local, '*.hub.local'], ips: [10.0.0.5]}}
            """
        )
    ).cluster
    local = c.registry.local
    assert local == LocalRegistry(
        "hub.local", 5443, "u", "p", False, True, ("hub.local", "*.hub.local"), ("10.0.0.5",)
    )
    assert c.env["RegistryURL"] == "hub.local:5443"


def test_external_registry() -> None:
    c = ok(doc("registry:\n  externalRegistry: {domain: reg.example.com, port: 443, username: u}\n")).cluster
    assert c.registry.local is None and c.registry.external is not None
    assert c.registry.url == "reg.example.com:443"
    assert (c.env["ExternalRegistryURL"], c.env["RegistryURL"]) == (
        "reg.example.com:443",
        "reg.example.com:443",
    )
    one_error(
        doc("registry:\n  externalRegistry: {port: 443}\n"),
        "spec.registry.externalRegistry.domain",
        "required",
    )
    one_error(
        doc("registry:\n  localRegistry: {domain: 'sea.hub:5000'}\n"),
        "spec.registry.localRegistry.domain",
        "port",
    )
    one_error(
        doc("registry:\n  localRegistry: {ha: maybe}\n"), "spec.registry.localRegistry.ha", "true or false"
    )


def test_data_root() -> None:
    assert ok(doc("dataRoot: /data/sealer\n")).cluster.rootfs == "/data/sealer/demo/rootfs"
    one_error(doc("dataRoot: data/sealer\n"), "spec.dataRoot", "not an absolute path")


def test_cluster_name_must_be_safe_for_paths() -> None:
    one_error(doc(name="../etc"), "metadata.name", "not a valid name", "directories")


# -- keys, kinds, documents --------------------------------------------------------------------


def test_misspelt_roles_or_ips_is_reported_once() -> None:
    for spec, key in (
        ("ips: [10.0.0.1]\n    role: [master]", "role"),
        ("ip: [10.0.0.1]\n    roles: [master]", "ip"),
    ):
        found = errors(doc(f"hosts:\n  - {spec}\n"))
        assert [p.message for p in found if p.path and p.path.startswith("spec.hosts[0]")] == [
            f"unknown field {key!r}"
        ]


def test_total_host_count_is_capped() -> None:
    ranges = ", ".join(f"10.{i}.0.0-10.{i}.255.255" for i in range(3))
    one_error(
        doc(f"hosts:\n  - ips: [{ranges}]\n    roles: [master]\n"), "spec.hosts[0].ips[1]", "more than 65536"
    )


def test_misspelt_keys_have_did_you_mean_and_unknown_keys_warn() -> None:
    one_error(
        doc("hosts:\n  - ips: [10.0.0.1]\n    role: [master]\n"),
        "spec.hosts[0].role",
        "unknown field",
        "'roles'",
    )
    one_error(doc("dataroot: /x\n"), "spec.dataroot", "unknown field 'dataroot'", "'dataRoot'")
    assert any(p.path == "spec.whatever" for p in warnings(doc("whatever: 1\n")))


def test_duplicate_keys() -> None:
    one_error(doc("dataRoot: /a\ndataRoot: /b\n"), "spec.dataRoot", "duplicate key", "line")


def test_every_problem_in_one_run() -> None:
    text = doc(
        """\
        dataRoot: relative
        hosts:
          - ips: [10.0.0.1, bad]
            roles: [master]
            taints: [x:Nope]
          - ips: [10.0.0.1]
        """
    )
    assert {p.path for p in errors(text)} >= {
        "spec.dataRoot",
        "spec.hosts[0].ips[1]",
        "spec.hosts[0].taints[0]",
        "spec.hosts[1].roles",
        "spec.hosts[1].ips",
    }


def test_document_kinds() -> None:
    extra = """\
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
networking: {podSubnet: 100.64.0.0/10}
---
apiVersion: sealer.io/v2
kind: Application
spec: {launchApps: [a]}
---
apiVersion: example.com/v1
kind: Gadget
spec: {}
"""
    cf, problems = parse_clusterfile(doc(extra=extra), "Clusterfile")
    assert cf is not None
    assert [d["kind"] for d in cf.kubeadm_documents] == ["ClusterConfiguration"]
    assert cf.kubeadm_documents[0]["networking"] == {"podSubnet": "100.64.0.0/10"}
    assert [d["kind"] for d in cf.other_documents] == ["Application", "Gadget"]
    gadget = [p for p in problems if "Gadget" in p.message]
    assert gadget and gadget[0].severity == "warning" and gadget[0].line == 20


def test_kind_typo_is_an_error() -> None:
    one_error(doc().replace("kind: Cluster", "kind: cluster"), "kind", "unknown kind 'cluster'", "'Cluster'")


def test_bad_kubeadm_subnet() -> None:
    extra = "---\nkind: ClusterConfiguration\nnetworking: {podSubnet: 100.64.0.0/33}\n"
    one_error(doc(extra=extra), "networking.podSubnet", "not a valid CIDR")


def test_config_and_plugin_documents() -> None:
    extra = """\
---
apiVersion: sealer.io/v1
kind: Config
metadata: {name: values}
spec: {appName: mysql, path: values.yaml, strategy: merge, process: value|toJson, data: "a: 1"}
---
apiVersion: sealer.io/v1
kind: Plugin
metadata: {name: swap}
spec: {type: SHELL, action: pre-init-host|post-init-host, scope: master | node, data: swapoff -a}
"""
    cf = ok(doc(extra=extra))
    (config,) = cf.configs
    assert (config.name, config.app_name, config.path, config.strategy, config.process, config.data) == (
        "values",
        "mysql",
        "values.yaml",
        "merge",
        ("value", "toJson"),
        "a: 1",
    )
    (plugin,) = cf.plugins
    assert (plugin.name, plugin.type, plugin.actions, plugin.scope) == (
        "swap",
        "SHELL",
        ("pre-init-host", "post-init-host"),
        ("master", "node"),
    )


@pytest.mark.parametrize(
    ("spec", "path", "message", "hint"),
    [
        (
            "{type: LABEL, action: pre-install, data: x}",
            "spec.type",
            "type 'LABEL' is not supported",
            "hosts[].labels",
        ),
        ("{action: pre-install, data: x}", "spec.type", "type (none)", "SHELL"),
        (
            "{type: SHELL, action: pre-instal, data: x}",
            "spec.action",
            "unknown plugin action",
            "'pre-install'",
        ),
        ("{type: SHELL, data: x}", "spec.action", "has no action", None),
        ("{type: SHELL, action: pre-install}", "spec.data", "is required", None),
    ],
)
def test_plugin_errors(spec: str, path: str, message: str, hint: str | None) -> None:
    extra = f"---\nkind: Plugin\nmetadata: {{name: p}}\nspec: {spec}\n"
    one_error(doc(extra=extra), path, message, hint)


def test_plugin_legacy_action_and_scope_warn() -> None:
    extra = (
        "---\nkind: Plugin\nmetadata: {name: p}\n"
        "spec: {type: SHELL, action: PostInstall, scope: master/node, data: x}\n"
    )
    messages = [p.message for p in warnings(doc(extra=extra))]
    assert any("v0.8 action 'PostInstall'" in m for m in messages)
    assert any("scope 'master/node' is not a role name" in m for m in messages)
    extra = extra.replace("PostInstall", "pre-init-host").replace("master/node", "master|gpu")
    assert any("scope 'gpu' matches no host role" in p.message for p in warnings(doc(extra=extra)))


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ("{path: a}", "spec.data", "is required"),
        ("{data: a}", "spec.path", "is required"),
        ("{path: a, data: {k: v}}", "spec.data", "must be a string"),
        ("{path: a, data: b, strategy: merj}", "spec.strategy", "unknown strategy"),
        ("{path: a, data: b, process: toJSON}", "spec.process", "unknown processor"),
    ],
)
def test_config_errors(spec: str, path: str, message: str) -> None:
    one_error(doc(extra=f"---\nkind: Config\nmetadata: {{name: c}}\nspec: {spec}\n"), path, message)


def test_application_rules() -> None:
    extra = (
        "---\nkind: Application\nspec:\n  configs:\n"
        "    - name: a\n      launch: {cmds: []}\n      files: [{path: x}]\n"
    )
    found = errors(doc(extra=extra))
    assert {p.path for p in found} == {"spec.configs[0].launch.cmds", "spec.configs[0].files[0].data"}


def test_no_cluster_document_and_two_cluster_documents() -> None:
    p = errors("kind: Config\nspec: {path: a, data: b}\n")
    assert p[0].message == "no kind: Cluster document" and p[0].hint and "fragment" in p[0].hint
    second = doc().replace("demo", "other")
    one_error(doc(extra="---\n" + second), None, "a second kind: Cluster document", "line 1")


def test_documents_that_are_not_mappings_or_lack_kind() -> None:
    one_error(doc(extra="---\n- a\n- b\n"), None, "not a mapping")
    one_error(doc(extra="---\nspec: {}\n"), "kind", "document has no kind")


def test_v1_cluster_is_converted_with_a_deprecation_warning() -> None:
    text = """\
apiVersion: sealer.aliyun.com/v1alpha1
kind: Cluster
metadata: {name: old}
spec:
  image: kubernetes:v1.19.8
  provider: BAREMETAL
  ssh: {passwd: x}
  network: {podCIDR: 100.64.0.0/10}
  masters: {ipList: [10.0.0.1, 10.0.0.2]}
  nodes: {ipList: [10.0.0.3]}
"""
    c = ok(text).cluster
    assert [h.ip for h in c.masters] == ["10.0.0.1", "10.0.0.2"] and [h.ip for h in c.workers] == ["10.0.0.3"]
    found = warnings(text)
    deprecation = [p for p in found if "deprecated" in p.message]
    assert deprecation and deprecation[0].hint and "roles: [master]" in deprecation[0].hint
    assert any(p.path == "spec.network" for p in found)


def test_v1_cloud_cluster_gets_a_migration_hint() -> None:
    text = "kind: Cluster\nmetadata: {name: old}\nspec:\n  image: k\n"
    text += "  provider: ALI_CLOUD\n  masters: {count: 3}\n"
    one_error(text, "spec", "provider ALI_CLOUD machines are no longer created", "spec.hosts")


# -- YAML-level problems -----------------------------------------------------------------------


def test_yaml_syntax_errors_are_located_with_hints() -> None:
    p = errors("kind: Cluster\nspec:\n  ssh:\n    passwd: *****\n")[0]
    assert p.line == 4 and p.hint and "quote" in p.hint
    p = errors("kind: Cluster\nspec:\n\timage: x\n")[0]
    assert p.hint and "tabs" in p.hint
    p = errors("// Copyright 2021\n//\n// Licensed: yes\n\nkind: Cluster\n")[0]
    assert p.hint and "'#'" in p.hint
    p = one_error(doc(extra="// note: x\n"), "// note", "does not start a comment")
    assert p.hint and "'#'" in p.hint


def test_yaml_merge_keys_are_applied() -> None:
    text = doc(
        """\
        hosts:
          - &base {ips: [10.0.0.1], roles: [master], labels: {a: b}}
          - <<: *base
            ips: [10.0.0.2]
            roles: [node]
        """
    )
    c = ok(text).cluster
    assert c.hosts[1].labels == {"a": "b"} and c.hosts[1].roles == ("node",)


# -- load / dump -------------------------------------------------------------------------------


def test_load_reads_file_and_raises_clusterfile_error(tmp_path: Path) -> None:
    path = tmp_path / "Clusterfile"
    path.write_text(doc())
    assert load_clusterfile(path).source == str(path)
    path.write_text(doc("hosts:\n  - ips: [bad]\n    roles: [master]\n"))
    with pytest.raises(ClusterfileError) as info:
        load_clusterfile(str(path))
    assert info.value.problems[0].file == str(path)
    assert "spec.hosts[0].ips[0]" in info.value.render()


def test_load_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ClusterfileError, match="1 problem"):
        load_clusterfile(tmp_path / "nope")
    with pytest.raises(ClusterfileError) as info:
        load_clusterfile(tmp_path)
    assert "cannot read" in info.value.problems[0].message
    with pytest.raises(ClusterfileError, match="1 problem"):
        load_clusterfile(str(tmp_path / "bad\x00name"))


def test_dump_round_trips_every_field() -> None:
    text = doc(
        f"""\
        env: [A=1]
        cmd: [echo hi]
        appNames: [a]
        ssh: {{user: u, passwd: p, pk: /k, pkPasswd: kp, port: 2222, sudoPasswd: s, hostKeyPolicy: strict,
               bastion: {{host: 10.9.9.9, port: 22, user: j, passwd: jp}}, encrypted: true}}
        containerRuntime: {{type: docker}}
        hostAliases: [{{ip: 10.0.0.100, hostnames: [x]}}]
        registry:
          localRegistry: {{domain: d.local, port: 5001, ha: false,
                          cert: {{subjectAltName: {{ips: [10.0.0.7]}}}}}}
          externalRegistry: {{domain: r.example.com, username: ru, password: rp}}
        dataRoot: /srv/sealer
        hosts:
          - ips: [10.0.0.1-10.0.0.3]
            roles: [master]
            ssh: {{hostKey: "{HOST_KEY}"}}
            labels: {{a: b}}
            taints: [a=b:NoSchedule, c-]
            env: [B=2]
        """,
        extra="---\nkind: Config\nmetadata: {name: c}\nspec: {path: p, data: d, process: toBase64}\n"
        "---\nkind: Plugin\nmetadata: {name: pl}\n"
        "spec: {type: SHELL, action: upgrade, data: x, scope: master}\n"
        "---\nkind: InitConfiguration\nnodeRegistration: {criSocket: /run/containerd/containerd.sock}\n",
    )
    cf = ok(text)
    again = ok(dump_clusterfile(cf))
    assert replace(again, source=None) == replace(cf, source=None)


def test_dump_redacts_secrets() -> None:
    cf = ok(doc("ssh: {passwd: hunter2, pkPasswd: pkpw, sudoPasswd: sudopw}\n"))
    text = dump_clusterfile(cf, redact=True)
    assert "hunter2" not in text and "pkpw" not in text and "sudopw" not in text
    assert "hunter2" in dump_clusterfile(cf)


@pytest.mark.parametrize("name", ["Clusterfile", "Clusterfile.k3s-1m2n"])
def test_examples_are_valid_without_warnings(name: str) -> None:
    cf, problems = parse_clusterfile((EXAMPLES / name).read_text(), name)
    assert cf is not None and problems == []
    assert all(ip.startswith("10.213.0.") for ip in (h.ip for h in cf.cluster.hosts))


def test_example_shape() -> None:
    cf = load_clusterfile(EXAMPLES / "Clusterfile")
    assert len(cf.cluster.masters) == 3 and len(cf.cluster.workers) == 2
    assert cf.plugins and cf.kubeadm_documents
    assert any(h.labels for h in cf.cluster.hosts) and any(h.taints for h in cf.cluster.hosts)
    k3s = load_clusterfile(EXAMPLES / "Clusterfile.k3s-1m2n")
    assert len(k3s.cluster.masters) == 1 and len(k3s.cluster.workers) == 2


def test_parse_plugins_for_image_plugin_files() -> None:
    text = """\
---
apiVersion: sealer.io/v1
kind: Plugin
metadata: {name: a}
spec: {type: SHELL, action: pre-init-host, scope: master, data: echo a}
---
kind: Plugin
metadata: {name: b}
spec: {type: SHELL, action: post-install, data: echo b}
"""
    plugins, problems = parse_plugins(text, "plugins/x.yaml")
    assert problems == []
    assert [(p.name, p.actions, p.scope, p.data) for p in plugins] == [
        ("a", ("pre-init-host",), ("master",), "echo a"),
        ("b", ("post-install",), (), "echo b"),
    ]
    plugins, problems = parse_plugins(text.replace("SHELL", "LABEL", 1), "plugins/x.yaml")
    assert plugins == () and problems[0].path == "spec.type" and problems[0].line == 5
    plugins, problems = parse_plugins(b"\xff", "plugins/x.yaml")
    assert plugins == () and "UTF-8" in problems[0].message
    assert parse_plugins("", "p.yaml")[1][0].message == "the plugin file is empty"


@pytest.mark.parametrize(
    "spec",
    [
        "ssh: hunter2secret\n",
        "ssh: {bastion: hunter2secret}\n",
        "ssh: {port: hunter2secret}\n",
        "registry: {localRegistry: {password: [hunter2secret]}}\n",
        "registry: {externalRegistry: hunter2secret}\n",
    ],
)
def test_misplaced_secrets_are_not_echoed(spec: str) -> None:
    found = errors(doc(spec))
    assert found and not any("hunter2secret" in p.render() for p in found)


def test_anchor_instead_of_a_password() -> None:
    one_error(
        doc(
            "ssh: {user: root}\nhosts:\n  - ips: [10.0.0.1]\n    roles: [master]\n"
            "    ssh:\n      passwd: &Secret1\n"
        ),
        "spec.hosts[0].ssh.passwd",
        "only a YAML anchor",
        "quote",
    )
    text = doc("ssh:\n  passwd: &Secret1 rest\n")
    assert ok(text).cluster.ssh.password == "rest"
    assert any("starts with a YAML anchor" in p.message for p in warnings(text))


def test_undefined_alias_name_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from sealer.model import clusterfile

    monkeypatch.setattr(clusterfile, "SAFE_LOADER", yaml.SafeLoader)  # its message names the alias
    found = errors(doc("ssh:\n  passwd: *Hunter2pw\n"))
    assert found and not any("Hunter2pw" in p.render() for p in found)


def test_tag_or_comment_instead_of_a_password() -> None:
    one_error(doc("ssh:\n  passwd: !Secret1\n"), "spec.ssh.passwd", "only a YAML tag", "quote")
    text = doc("ssh:\n  passwd: #Secret1\n")
    assert ok(text).cluster.ssh.password is None
    assert any("' #' starts a YAML comment" in p.message for p in warnings(text))
    # an explicit standard tag is fine
    assert ok(doc("ssh:\n  passwd: !!str 123\n")).cluster.ssh.password == "123"


def test_one_host_key_for_several_hosts_warns() -> None:
    text = doc(
        f"hosts:\n  - ips: [10.0.0.1-10.0.0.2]\n    roles: [master]\n    ssh: {{hostKey: '{HOST_KEY}'}}\n"
    )
    found = [p for p in warnings(text) if "one pinned host key for 2 hosts" in p.message]
    assert found and found[0].path == "spec.hosts[0].ssh.hostKey" and found[0].line == 10
