"""Facts parsing and the pre-flight report: every refusal names its host and says what to do."""

from __future__ import annotations

from sealer.apply.facts import HostFacts, facts_script, parse_facts, preflight

SS_OUTPUT = """arch=x86_64
kernel=6.1.0-18-amd64
os=debian 12
hostname=Node-A
time=1000
disk_path=/var/lib
disk_free_kb=2048
systemd=yes
cluster=
listen=22 users:(("sshd",pid=99,fd=3))
listen=6443 users:(("python3",pid=120,fd=3))
listen=10250
"""


def test_parse_facts_from_ss() -> None:
    f = parse_facts("10.0.0.2", SS_OUTPUT, now=990.0)
    assert (f.arch, f.platform_arch, f.os, f.node_name) == ("x86_64", "amd64", "debian 12", "node-a")
    assert f.clock_skew == 10.0 and f.disk_free == 2048 * 1024 and f.disk_path == "/var/lib"
    assert f.systemd and f.cluster == ""
    assert f.listening == {22: "sshd", 6443: "python3", 10250: ""}


def test_parse_facts_from_proc_net_tcp_fallback() -> None:
    f = parse_facts("h", "arch=aarch64\nlistenhex=1A0B\nlistenhex=zz\n", now=0)
    assert f.platform_arch == "arm64" and f.listening == {6667: ""}


def test_facts_script_quotes_the_data_root() -> None:
    assert "d='/var/lib/my data'" in facts_script("/var/lib/my data")


def _ok(host: str, **kw: object) -> HostFacts:
    base = {"arch": "x86_64", "hostname": host, "systemd": True, "disk_free": 10 << 30, "disk_path": "/var"}
    base.update(kw)
    return HostFacts(host, **base)  # type: ignore[arg-type]


def _check(facts: dict[str, HostFacts], cluster: str = "c1") -> list[tuple[str, str, str]]:
    found = preflight(
        facts,
        cluster=cluster,
        masters=["m"],
        master0="m",
        registry_port=5000,
        arches=["amd64"],
        need_bytes={"m": 2 << 30, "w": 1 << 30},
    )
    return [(f.host, f.severity, f.message) for f in found]


def test_clean_hosts_pass() -> None:
    assert _check({"m": _ok("m"), "w": _ok("w")}) == []


def test_busy_ports_full_disk_wrong_arch_no_systemd_are_refused_per_host() -> None:
    found = _check(
        {
            "m": _ok("m", listening={6443: "python3", 5000: "", 22: "sshd"}),
            "w": _ok("w", disk_free=1 << 20, arch="aarch64", systemd=False, listening={6443: "x"}),
        }
    )
    errors = {(h, m) for h, sev, m in found if sev == "error"}
    assert ("m", "port 6443 is already in use by python3") in errors
    assert ("m", "port 5000 is already in use") in errors  # the registry port, on master0 only
    assert ("w", "too little disk at /var: 1.0 MiB free, 1.0 GiB needed for the rootfs") in errors
    assert any(h == "w" and "architecture aarch64" in m for h, m in errors)
    assert any(h == "w" and "systemd" in m for h, m in errors)
    assert not any(h == "w" and "6443" in m for h, m in errors)  # a worker does not need 6443


def test_rerun_tolerates_our_own_services_but_not_strangers() -> None:
    ours = {"m": _ok("m", cluster="c1", listening={6443: "k3s", 5000: "sealer-registry", 2379: "nginx"})}
    assert [m for _, _, m in _check(ours)] == ["port 2379 is already in use by nginx"]
    other = {"m": _ok("m", cluster="other")}
    assert any("already belongs to sealer cluster 'other'" in m for _, _, m in _check(other))


def test_duplicate_hostnames_and_clock_skew() -> None:
    found = _check({"m": _ok("m", hostname="same", clock_skew=-120.0), "w": _ok("w", hostname="SAME")})
    assert ("w", "error", "hostname SAME is also the hostname of m; node names must be unique") in found
    assert ("m", "warning", "clock differs from this machine's by -120s") in found


def test_hostnames_that_cannot_be_node_names() -> None:
    found = _check({"m": _ok("m", hostname="web_01"), "w": _ok("w", hostname="Worker-1.lab")})
    assert ("m", "error", "hostname 'web_01' is not a valid Kubernetes node name") in found
    assert not any(h == "w" for h, _, _ in found)  # upper case is lowered, as the kubelet does
