"""The test bed itself on real hosts: many hosts up, each answering SSH as itself, the three logins,
no route out of the lab, faults and shaping, and a teardown that leaves nothing behind."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.testbed import TestbedFactory as Factory
from tests.testbed import TestHost
from tests.testbed import sysctl as tb_sysctl
from tests.testbed.client import ssh
from tests.testbed.lab import INOTIFY, leftovers

pytestmark = [pytest.mark.integration, pytest.mark.testbed]


def _sysctl(name: str) -> int:
    return int(Path("/proc/sys", name.replace(".", "/")).read_text())


def _others_hold_inotify(lab: str) -> bool:
    st = tb_sysctl._load().get(INOTIFY, {})
    users = st.get("users", [])
    return isinstance(users, list) and any(u != lab for u in users)


def _check_identity(h: TestHost) -> None:
    r = ssh(h, "hostname; cat /etc/hostname; ip -4 -o addr show dev eth0")
    assert r.returncode == 0, f"{h.name}: {r.stderr}"
    name, etc_name, addr = r.stdout.splitlines()
    assert name == h.name and etc_name == h.name
    assert f" {h.ip}/24 " in addr


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["nspawn", "nested", "light"])
def test_ten_hosts_answer_as_themselves_and_leave_nothing(
    testbed_factory: Factory, variant: str, testbed_timing: Callable[[str], None]
) -> None:
    timing = testbed_timing
    tb = testbed_factory(light=variant == "light", nested=variant == "nested")
    forward_before = _sysctl("net.ipv4.ip_forward")
    inotify_before = _sysctl(INOTIFY)
    t0 = time.monotonic()
    hosts = tb.up(10)
    t_up = time.monotonic() - t0
    assert [h.ip for h in hosts] == [tb.net.host_ip(i) for i in range(1, 11)]
    assert len({h.host_key for h in hosts}) == 10, "host keys must be generated per host"
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(_check_identity, hosts))
    if variant != "light":
        assert _sysctl(INOTIFY) >= 8192
        state = tb.run_on(hosts[0], "systemctl is-system-running --wait", check=False).stdout.strip()
        assert state == "running", tb.run_on(hosts[0], "systemctl --failed", check=False).stdout
    ids = {tb.run_on(h, "cat /etc/machine-id").stdout for h in hosts}
    assert len(ids) == 10, "machine-id is per host"
    footprint = tb.footprint()
    assert footprint[3], "a running lab has processes"
    t0 = time.monotonic()
    tb.down()
    t_down = time.monotonic() - t0
    timing(f"testbed {variant}: 10 hosts up (ssh answering) in {t_up:.2f} s, down in {t_down:.2f} s")
    assert leftovers(*footprint) == []
    assert _sysctl("net.ipv4.ip_forward") == forward_before
    if not _others_hold_inotify(tb.name):
        assert _sysctl(INOTIFY) == inotify_before
    tb.down()  # idempotent


@pytest.mark.parametrize("variant", ["nspawn", "light"])
def test_root_by_key_password_user_and_sudo_with_password(testbed_factory: Factory, variant: str) -> None:
    (h,) = testbed_factory(light=variant == "light").up(1)
    assert ssh(h, "id -u").stdout.strip() == "0"
    user, password = h.user_password_login
    r = ssh(h, "id -un", user=user, password=password)
    assert (r.returncode, r.stdout.strip()) == (0, user)
    assert ssh(h, "true", user=user, password=password + "x").returncode == 255
    assert ssh(h, "true", user="root", password="anything").returncode == 255, "root only by key"
    suser, spass = h.sudo_user
    r = ssh(h, "sudo -n id -u", user=suser, password=spass)
    assert r.returncode != 0 and "password is required" in r.stderr
    r = ssh(h, "sudo -S -p '' id -u", user=suser, password=spass, input=spass + "\n")
    assert (r.returncode, r.stdout.strip()) == (0, "0")
    r = ssh(h, "sudo -S -p '' id -u", user=suser, password=spass, input="wrong\n")
    assert r.returncode != 0
    r = ssh(h, "sudo -S -p '' id -u", user=user, password=password, input=password + "\n")
    assert r.returncode != 0, "the password user is not a sudoer"


def test_hosts_reach_each_other_and_the_operator_but_nothing_outside(testbed_factory: Factory) -> None:
    tb = testbed_factory()
    h1, h2 = tb.up(2)
    routes = tb.run_on(h1, "ip route; ip -6 route").stdout
    assert "default" not in routes
    r = tb.run_on(h1, "ip route get 1.1.1.1", check=False)
    assert r.returncode != 0 and "unreachable" in r.stderr.lower()
    assert tb.run_on(h1, f"ping -c1 -W2 {tb.net.operator_ip}", check=False).returncode == 0
    assert tb.run_on(h1, f"ping -c1 -W2 {h2.ip}", check=False).returncode == 0
    assert tb.run_on(h1, f"getent hosts {h2.name}").stdout.split()[0] == h2.ip
    # The operator side: a connected route via the lab veth, and the safety route behind it.
    from tests.testbed.common import run

    assert f"dev {tb.net.main_if}" in run(["ip", "route", "get", h1.ip]).stdout
    assert tb.net.subnet in run(["ip", "route", "show", "type", "unreachable"]).stdout


def test_two_labs_coexist_and_are_isolated(testbed_factory: Factory) -> None:
    a, b = testbed_factory(), testbed_factory(light=True)
    (ha,) = a.up(1)
    (hb,) = b.up(1)
    assert a.name != b.name and a.net.subnet != b.net.subnet
    _check_identity(ha)
    _check_identity(hb)
    r = a.run_on(ha, f"ping -c1 -W1 {hb.ip}", check=False)
    assert r.returncode != 0
    fp = b.footprint()
    b.down()
    assert leftovers(*fp) == []
    _check_identity(ha)  # the other lab is untouched


def test_stop_and_start_keep_disk_keys_and_address(testbed_factory: Factory) -> None:
    tb = testbed_factory()
    h1, h2 = tb.up(2)
    assert ssh(h1, "echo kept > /root/marker").returncode == 0
    for hard in (False, True):
        tb.stop_host(h1, hard=hard)
        assert not tb.is_running(h1)
        r = ssh(h1, "true", connect_timeout=3)
        assert r.returncode == 255 and "refused" in r.stderr, r.stderr
        assert ssh(h2, "true").returncode == 0, "the other host is unaffected"
        tb.start_host(h1)
        r = ssh(h1, "cat /root/marker; hostname")  # pinned host key: the same key after a reboot
        assert (r.returncode, r.stdout.split()) == (0, ["kept", h1.name]), r.stderr


def test_cut_link_times_out_and_restore_heals(testbed_factory: Factory) -> None:
    tb = testbed_factory(light=True)
    h1, h2 = tb.up(2)
    tb.cut_link(h1)
    assert not tb.net.link_is_up(h1.index) and tb.net.link_is_up(h2.index)
    r = ssh(h1, "true", connect_timeout=2)
    assert r.returncode == 255 and "timed out" in r.stderr, r.stderr
    assert ssh(h2, "true").returncode == 0
    assert tb.run_on(h1, "hostname").stdout.strip() == h1.name, "run_on works without the link"
    tb.restore_link(h1)
    assert tb.net.link_is_up(h1.index)
    assert ssh(h1, "hostname").stdout.strip() == h1.name


def test_cut_link_stalls_an_open_session(testbed_factory: Factory) -> None:
    import subprocess

    from tests.testbed.client import ssh_argv

    tb = testbed_factory(light=True)
    (h,) = tb.up(1)
    kh = tb.dir / "known_hosts"
    argv = [*ssh_argv(h, kh), "-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2", "cat"]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(b"ping\n")
        p.stdin.flush()
        assert p.stdout.readline() == b"ping\n"
        tb.cut_link(h)
        # Keepalives go unanswered: the client gives up by itself (nothing refuses or resets).
        assert p.wait(timeout=30) == 255
    tb.restore_link(h)


def test_shaping_installs_tbf_both_ways_and_limits_throughput(
    testbed_factory: Factory, testbed_timing: Callable[[str], None]
) -> None:
    timing = testbed_timing
    from tests.testbed.common import run

    tb = testbed_factory(light=True)
    h1, h2 = tb.up(2)
    payload = "x" * (1 << 20)

    def push(h: TestHost) -> float:
        t0 = time.monotonic()
        r = ssh(h, "cat > /dev/null", input=payload)
        assert r.returncode == 0, r.stderr
        return time.monotonic() - t0

    tb.shape(h1, "4mbit")
    bridge_q = run(["ip", "netns", "exec", tb.net.bridge_ns, "tc", "qdisc", "show", "dev", "v1"]).stdout
    host_q = run(["ip", "netns", "exec", h1.netns, "tc", "-s", "qdisc", "show", "dev", "eth0"]).stdout
    assert "tbf" in bridge_q and "rate 4Mbit" in bridge_q
    assert "tbf" in host_q and "rate 4Mbit" in host_q
    shaped, free = push(h1), push(h2)
    host_q = run(["ip", "netns", "exec", h1.netns, "tc", "-s", "qdisc", "show", "dev", "eth0"]).stdout
    assert " 0 bytes" not in host_q.split("Sent", 1)[1].split("\n")[0], "traffic went through the tbf"
    timing(
        f"testbed shaping: 1 MiB at 4mbit {shaped:.2f} s vs unshaped {free:.2f} s (ratio {shaped / free:.1f})"
    )
    tb.shape(h1, None)
    assert (
        "tbf" not in run(["ip", "netns", "exec", tb.net.bridge_ns, "tc", "qdisc", "show", "dev", "v1"]).stdout
    )
    tb.shape_operator("100mbit")
    assert "rate 100Mbit" in run(["tc", "qdisc", "show", "dev", tb.net.main_if]).stdout
    assert (
        "rate 100Mbit"
        in run(["ip", "netns", "exec", tb.net.bridge_ns, "tc", "qdisc", "show", "dev", "main"]).stdout
    )
    tb.shape_operator(None)
    assert "tbf" not in run(["tc", "qdisc", "show", "dev", tb.net.main_if]).stdout


def test_rotated_host_key_is_refused_by_the_pinned_client(testbed_factory: Factory) -> None:
    tb = testbed_factory()
    (h,) = tb.up(1)
    old = h.host_key
    old_line = h.known_hosts_line
    new = tb.rotate_host_key(h)
    assert new != old and h.host_key == new
    stale = TestHost(**{**h.__dict__, "host_key": old})
    r = ssh(stale, "true")
    assert r.returncode == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in r.stderr, old_line
    assert ssh(h, "true").returncode == 0


def test_ssh_firewalled_to_a_bastion(testbed_factory: Factory) -> None:
    tb = testbed_factory(light=True)
    target, bastion = tb.up(2)
    tb.allow_ssh_only_from(target, [bastion.ip])
    r = ssh(target, "true", connect_timeout=2)
    assert r.returncode == 255 and "timed out" in r.stderr
    probe = f"exec 3<>/dev/tcp/{target.ip}/22; head -c 4 <&3"
    assert tb.run_on(bastion, ["bash", "-c", probe]).stdout == "SSH-"
    tb.allow_ssh_only_from(target, None)
    assert ssh(target, "true").returncode == 0


@pytest.mark.slow
def test_nested_hosts_can_run_container_runtimes(testbed_factory: Factory) -> None:
    nested = testbed_factory(nested=True)
    plain = testbed_factory()
    (h,) = nested.up(1)
    (p,) = plain.up(1)
    # Over ssh, not run_on: only sshd's processes carry the container's seccomp filter and capabilities.
    mounts = ssh(h, "findmnt -no FSTYPE /var/lib/containerd; findmnt -no OPTIONS /sys/fs/cgroup/memory")
    fstype, memopts = mounts.stdout.split()
    assert fstype == "ext4", "overlay snapshots need a non-overlay /var/lib/containerd"
    assert memopts.startswith("rw"), "runc writes the cgroup v1 controllers"
    assert ssh(p, "findmnt -no OPTIONS /sys/fs/cgroup/memory").stdout.startswith("ro")
    # runc joins a session keyring: keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL) must not be filtered.
    keyctl = "python3 -c 'import ctypes; print(ctypes.CDLL(None).syscall(250, 1, None))'"
    assert int(ssh(h, keyctl).stdout) > 0
    assert int(ssh(p, keyctl).stdout) < 0, "control: a plain host filters keyctl"
    # CNI plugins create veths inside the host (CAP_NET_ADMIN).
    veth = "ip link add tbt0 type veth peer name tbt1 && ip link del tbt0"
    assert ssh(h, veth).returncode == 0
    assert ssh(p, veth).returncode != 0, "control: a plain host has no CAP_NET_ADMIN"


@pytest.mark.slow
def test_thirty_light_hosts_for_scale_tests(
    testbed_factory: Factory, testbed_timing: Callable[[str], None]
) -> None:
    timing = testbed_timing
    tb = testbed_factory(light=True)
    t0 = time.monotonic()
    hosts = tb.up(30)
    t_up = time.monotonic() - t0
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(_check_identity, hosts))
    # Each light host has its own filesystem and process tree.
    assert ssh(hosts[0], "echo one > /etc/tb-mark").returncode == 0
    assert ssh(hosts[1], "test -e /etc/tb-mark").returncode == 1
    assert ssh(hosts[2], "ps -e -o pid= | wc -l").stdout.strip() != ""
    footprint = tb.footprint()
    t0 = time.monotonic()
    tb.down()
    t_down = time.monotonic() - t0
    timing(f"testbed light: 30 hosts up (ssh answering) in {t_up:.2f} s, down in {t_down:.2f} s")
    assert leftovers(*footprint) == []


def test_authorize_key_and_small_disk_helpers(testbed_factory: Factory, tmp_path: Path) -> None:
    import subprocess

    tb = testbed_factory(light=True)
    (h,) = tb.up(1)
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret-pass", "-f", str(key)], check=True)
    tb.authorize_key(h, (tmp_path / "k.pub").read_text(), user=h.user_password_login[0])
    st = tb.run_on(h, f"stat -c '%a %U' /home/{h.user_password_login[0]}/.ssh/authorized_keys").stdout.split()
    assert st == ["600", h.user_password_login[0]]
    from tests.testbed.client import ssh_argv

    kh = tb.dir / "known_hosts"
    argv = [*ssh_argv(h, kh, user=h.user_password_login[0]), "id -un"]
    argv[argv.index(str(h.root_key))] = str(key)  # the passphrase key instead of the lab key
    env = {"SSH_ASKPASS": str(tmp_path / "ap"), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
    (tmp_path / "ap").write_text("#!/bin/sh\necho secret-pass\n")
    (tmp_path / "ap").chmod(0o700)
    argv[argv.index("BatchMode=yes")] = "BatchMode=no"
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30, check=False)
    assert (r.returncode, r.stdout.strip()) == (0, h.user_password_login[0]), r.stderr
    tb.small_disk(h, "/srv/small", "64k")
    r = ssh(h, "head -c 200000 /dev/zero > /srv/small/f")
    assert r.returncode != 0 and "No space left" in r.stderr


RUNC_HELLO = r"""set -e
b=/root/bundle; rm -rf $b; mkdir -p $b/rootfs/bin $b/rootfs/proc $b/rootfs/dev $b/rootfs/sys
cp /bin/sh $b/rootfs/bin/sh
for l in $(ldd /bin/sh | grep -o '/lib[^ ]*'); do mkdir -p $b/rootfs${l%/*}; cp $l $b/rootfs$l; done
cd $b && runc spec
python3 -c '
import json; c = json.load(open("config.json")); c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/sh", "-c", "echo hello-from-runc"]
json.dump(c, open("config.json", "w"))'
runc run tb-hello
"""


@pytest.mark.slow
def test_real_runc_runs_a_container_inside_a_nested_host(testbed_factory: Factory) -> None:
    import shutil

    runc = shutil.which("runc")
    if runc is None:
        pytest.skip("runc is not installed (scripts/setup installs it)")
    nested, plain = testbed_factory(nested=True), testbed_factory()
    (h,) = nested.up(1)
    (p,) = plain.up(1)
    for host, tb in ((h, nested), (p, plain)):
        tb.put_file(host, runc, "/usr/local/bin/runc")
    r = ssh(h, RUNC_HELLO, timeout=120)
    assert (r.returncode, r.stdout.strip()) == (0, "hello-from-runc"), r.stderr
    r = ssh(p, RUNC_HELLO, timeout=120)
    assert r.returncode != 0, "control: a plain nspawn host cannot run runc"


# Runs ON a test host (its python3): packs binaries and their libraries into a one-layer OCI image tar.
MKIMAGE = r"""
import hashlib, io, json, os, subprocess, sys, tarfile

out, ref, bins = sys.argv[1], sys.argv[2], sys.argv[3:]
files = set(bins)
for b in bins:
    for line in subprocess.run(["ldd", b], capture_output=True, text=True, check=True).stdout.splitlines():
        words = [w for w in line.split() if w.startswith("/")]
        files.update(words[:1])
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w") as t:
    for f in sorted(files):
        t.add(os.path.realpath(f), arcname=f.lstrip("/"))


def blob(b):
    return hashlib.sha256(b).hexdigest(), b


layer_d, layer_b = blob(layer.getvalue())
config_d, config_b = blob(json.dumps({
    "architecture": "amd64", "os": "linux", "config": {"Cmd": [bins[0]]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_d]}}).encode())
manifest_d, manifest_b = blob(json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": "sha256:" + config_d, "size": len(config_b)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": "sha256:" + layer_d, "size": len(layer_b)}]}).encode())
index = json.dumps({"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:" + manifest_d, "size": len(manifest_b),
    "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref}}]}).encode()
with tarfile.open(out, "w") as t:
    for name, b in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)] + [
            ("blobs/sha256/" + d, b) for d, b in ((layer_d, layer_b), (config_d, config_b),
                                                   (manifest_d, manifest_b))]:
        ti = tarfile.TarInfo(name)
        ti.size = len(b)
        t.addfile(ti, io.BytesIO(b))
"""

CONTAINERD_UNIT = """[Unit]
Description=containerd (test bed check)
[Service]
ExecStart=/usr/local/bin/containerd
Delegate=yes
KillMode=process
[Install]
WantedBy=multi-user.target
"""


@pytest.mark.slow
def test_real_containerd_under_systemd_inside_a_nested_host(testbed_factory: Factory) -> None:
    import shutil

    bins = {b: shutil.which(b) for b in ("containerd", "containerd-shim-runc-v2", "ctr", "runc")}
    if not all(bins.values()):
        pytest.skip(f"missing {[b for b, p in bins.items() if not p]} (scripts/setup installs them)")
    tb = testbed_factory(nested=True)
    (h,) = tb.up(1)
    for name, path in bins.items():
        assert path is not None
        tb.put_file(h, path, f"/usr/local/bin/{name}")
    tb.run_on(h, "cat > /root/mkimage.py", input=MKIMAGE)
    r = ssh(
        h,
        "cat > /etc/systemd/system/containerd.service && systemctl daemon-reload && "
        "systemctl enable --now containerd",
        input=CONTAINERD_UNIT,
    )
    assert r.returncode == 0, r.stderr
    script = (
        "set -e; for i in $(seq 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done; "
        "python3 /root/mkimage.py /root/img.tar docker.io/tb/hello:1 /bin/sh /bin/sleep; "
        "ctr image import /root/img.tar >/dev/null; "
        "ctr run --rm docker.io/tb/hello:1 c1 /bin/sh -c 'echo hello-from-containerd'; "
        "ctr run -d docker.io/tb/hello:1 c2 /bin/sleep 1000 >/dev/null; ctr task ls -q"
    )
    r = ssh(h, script, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["hello-from-containerd", "c2"]
    # The nested container's cgroups sit below the host's own cgroup, and go with the lab.
    fp = tb.footprint()
    nested_cgroups = [b for b in fp[2] if list(Path(b).rglob("c2"))]
    assert nested_cgroups, "runc made c2's cgroups inside the lab's tree"
    tb.down()
    assert leftovers(*fp) == []
