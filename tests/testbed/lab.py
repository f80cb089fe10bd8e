"""The test bed: a lab of real OpenSSH hosts on this machine (systemd-nspawn machines with real systemd,
or light namespace hosts with sshd as PID 1), created, faulted and destroyed as one unit."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import cgroup, rootfs, sysctl
from .common import BASE, LAB_RE, TestbedError, flock, run, write_private
from .net import LabNet, netns_list

INOTIFY = "fs.inotify.max_user_instances"
INOTIFY_MIN = 8192  # 128 (the default) lets only ~21 systemd containers start ("Too many open files")
MAX_SUBNETS = 255

# Runs in a private mount namespace made by `unshare`: the overlay exists only there, so it vanishes
# with the last process of the host and never shows up in the machine's mount table.
_NSPAWN_SH = (
    'set -e; m=$1; mount -t overlay overlay -o "lowerdir=$2,upperdir=$3,workdir=$4" "$m"; shift 4; '
    'exec systemd-nspawn --directory="$m" "$@"'
)

_NSPAWN_ARGS = "--quiet --boot --register=no --keep-unit --console=passive --link-journal=no"
# runc joins a session keyring (nspawn's seccomp blocks keyctl); CNI plugins make veths in the host.
_NESTED_ARGS = "--system-call-filter=@keyring --capability=CAP_NET_ADMIN"
_LIGHT_UNSHARE = "unshare --uts --ipc --mount --pid --fork --kill-child --propagation private"

# PID 1 of a light host (fresh pid/mount/uts/ipc namespaces inside the host's netns): overlay root,
# the few pseudo filesystems sshd needs, then sshd in the foreground.
_LIGHT_SH = r"""set -e
M=$1 NAME=$5
mount -t overlay overlay -o "lowerdir=$2,upperdir=$3,workdir=$4" "$M"
mount -t proc proc "$M/proc"
mount -t sysfs -o ro sysfs "$M/sys"
mount -t tmpfs -o mode=755,size=64m tmpfs "$M/run"
mount -t tmpfs -o mode=755,size=8m tmpfs "$M/dev"
for d in null zero full random urandom tty; do touch "$M/dev/$d"; mount --bind "/dev/$d" "$M/dev/$d"; done
mkdir -p "$M/dev/pts" "$M/dev/shm" "$M/run/sshd"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$M/dev/pts"
ln -s pts/ptmx "$M/dev/ptmx"; ln -s /proc/self/fd "$M/dev/fd"
mount -t tmpfs -o size=64m tmpfs "$M/dev/shm"
hostname "$NAME"
exec chroot "$M" /usr/sbin/sshd -D -e
"""

# nspawn mounts the cgroup v1 controllers read-only; runc inside a nested host needs them writable.
# Because the host runs in its own cgroup (cgroup.py), its runc only ever writes below that cgroup.
_CGROUP_RW_UNIT = """[Unit]
Description=testbed: make cgroup v1 controllers writable (nspawn mounts them read-only)
DefaultDependencies=no
Before=sysinit.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for c in /sys/fs/cgroup/*; do [ -L "$c" ] || [ "$c" = /sys/fs/cgroup/unified ] || \
[ "$c" = /sys/fs/cgroup/systemd ] || mount -o remount,bind,rw "$c"; done'
[Install]
WantedBy=sysinit.target
"""


@dataclass
class TestHost:
    """One host of the lab, with everything a test needs to reach it over SSH."""

    __test__ = False

    name: str
    index: int
    ip: str
    netns: str
    root_key: Path  # private key (OpenSSH format, 0600) that logs in as root
    host_key: str  # the host's public key line, e.g. "ssh-ed25519 AAAA..."
    port: int = 22
    user_password_login: tuple[str, str] = rootfs.PASSWORD_USER  # (user, password), no key installed
    sudo_user: tuple[str, str] = rootfs.SUDO_USER  # (user, password); `sudo` asks for that password

    @property
    def known_hosts_line(self) -> str:
        return f"{self.ip} {self.host_key}"


@dataclass
class _Proc:
    pid: int
    start: str  # /proc/<pid>/stat start time: tells our process from a later one with the same pid


def _starttime(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def _alive(p: _Proc | None) -> bool:
    return p is not None and _starttime(p.pid) == p.start


def _status(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            out[k] = v.strip()
    except OSError:
        pass
    return out


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and _status(int(d.name)).get("PPid") == str(pid):
            kids.append(int(d.name))
    return kids


def _keypair() -> tuple[bytes, str]:
    k = Ed25519PrivateKey.generate()
    priv = k.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    pub = k.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return priv, pub.decode()


def _sshd_answers(ip: str, port: int = 22) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5) as s:
            s.settimeout(2)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no output)"


def require_root_and_tools(*, light: bool = False) -> str | None:
    """Why the test bed cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "the test bed needs root (namespaces, mounts, cgroups)"
    tools = ["ip", "unshare", "nsenter", "tc", "mount", "sysctl"] + ([] if light else ["systemd-nspawn"])
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        return f"missing {' '.join(missing)} (scripts/setup installs them)"
    return None


def _load_state(lab: str) -> dict[str, Any] | None:
    try:
        data = json.loads((BASE / lab / "lab.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def list_labs() -> list[str]:
    if not BASE.is_dir():
        return []
    return sorted(d.name for d in BASE.iterdir() if (d / "lab.json").is_file())


class TestbedFactory(Protocol):
    """The type of the `testbed_factory` fixture. Import it under another name in test modules
    (`TestbedFactory as Factory`): pytest would try to collect a class named Test* there."""

    def __call__(self, *, nested: bool = False, light: bool = False, lab: str | None = None) -> Testbed: ...


def lab_owner(lab: str) -> int | None:
    """The pid of the live process that made the lab (a test session), or None if it is gone."""
    st = _load_state(lab)
    if not st:
        return None
    owner = _Proc(int(st.get("owner_pid", 0)), str(st.get("owner_start", "")))
    return owner.pid if _alive(owner) else None


def reap_stale_labs() -> list[str]:
    """Tear down ephemeral labs (made by test fixtures) whose owning process is gone."""
    reaped = []
    for lab in list_labs():
        st = _load_state(lab)
        if not st or not st.get("ephemeral") or lab_owner(lab) is not None:
            continue
        with contextlib.suppress(TestbedError):
            Testbed.load(lab).down(fast=True)
            reaped.append(lab)
    return reaped


@dataclass
class Testbed:
    """A lab: `lab` selects netns names (<lab>lab, <lab>h<i>), subnet, cgroup and work dir; two labs
    coexist. lab=None picks a free one (e.g. tb3) marked ephemeral: reclaimed once its owner is gone."""

    __test__ = False

    lab: str | None = "tb"
    nested: bool = False
    light: bool = False
    stop_timeout: float = 10.0
    boot_timeout: float = 90.0
    hosts: list[TestHost] = field(default_factory=list, init=False)
    _k: int = field(default=-1, init=False)
    _procs: dict[str, _Proc] = field(default_factory=dict, init=False)
    _popen: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    _bases: list[str] = field(default_factory=list, init=False)
    _ephemeral: bool = field(default=False, init=False)
    _owner: int = field(default_factory=os.getpid, init=False)
    _owner_start: str = field(default_factory=lambda: _starttime(os.getpid()) or "", init=False)

    def __post_init__(self) -> None:
        if self.nested and self.light:
            raise TestbedError("nested and light exclude each other", "nested needs systemd (nspawn) hosts")
        if self.lab is not None and not LAB_RE.match(self.lab):
            raise TestbedError(
                f"bad lab id {self.lab!r}", "1-8 chars: a lowercase letter, then letters/digits"
            )
        self._allocate()

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down(fast=True)

    # -- identity and persistence -----------------------------------------------------------------
    @property
    def name(self) -> str:
        assert self.lab is not None
        return self.lab

    @property
    def dir(self) -> Path:
        return BASE / self.name

    @property
    def net(self) -> LabNet:
        return LabNet(self.name, self._k)

    @property
    def key_path(self) -> Path:
        return self.dir / "keys" / "id_ed25519"

    @property
    def variant(self) -> str:
        return "light" if self.light else ("nested" if self.nested else "nspawn")

    def _allocate(self) -> None:
        BASE.mkdir(parents=True, exist_ok=True)
        with flock(BASE / ".labs.lock"):
            used: dict[str, int] = {}
            for lab in list_labs():
                st = _load_state(lab)
                if st is not None:
                    used[lab] = int(st["k"])
            if self.lab is None:
                self._ephemeral = True
                free = sorted(set(range(MAX_SUBNETS)) - set(used.values()))
                for k in free:
                    if f"tb{k}" not in used:
                        self.lab, self._k = f"tb{k}", k
                        break
                else:
                    raise TestbedError("no free lab subnet", "run `python -m tests.testbed down --all`")
            elif self.lab in used:
                self._k = used[self.lab]
                st = _load_state(self.lab) or {}
                if st.get("variant", self.variant) != self.variant and any(
                    _alive(_Proc(**p)) for p in st.get("procs", {}).values()
                ):
                    raise TestbedError(
                        f"lab {self.lab} is up as {st.get('variant')}, not {self.variant}",
                        f"python -m tests.testbed down --lab {self.lab}",
                    )
                self._restore(st)
            else:
                free = sorted(set(range(MAX_SUBNETS)) - set(used.values()))
                if not free:
                    raise TestbedError("no free lab subnet", "run `python -m tests.testbed down --all`")
                self._k = free[0]
            self.dir.mkdir(parents=True, exist_ok=True)
            self._save()

    def _restore(self, st: dict[str, Any]) -> None:
        self._bases = list(st.get("cgroup_bases", []))
        self._ephemeral = bool(st.get("ephemeral", False))
        self._owner = int(st.get("owner_pid", os.getpid()))
        self._owner_start = str(st.get("owner_start", ""))
        self._procs = {n: _Proc(**p) for n, p in st.get("procs", {}).items()}
        self.hosts = [
            TestHost(
                **{
                    **h,
                    "root_key": Path(h["root_key"]),
                    "user_password_login": tuple(h["user_password_login"]),
                    "sudo_user": tuple(h["sudo_user"]),
                }
            )
            for h in st.get("hosts", [])
        ]

    def _save(self) -> None:
        st = {
            "lab": self.name,
            "k": self._k,
            "variant": self.variant,
            "ephemeral": self._ephemeral,
            "owner_pid": self._owner,
            "owner_start": self._owner_start,
            "cgroup_bases": self._bases,
            "procs": {n: {"pid": p.pid, "start": p.start} for n, p in self._procs.items()},
            "hosts": [{**h.__dict__, "root_key": str(h.root_key)} for h in self.hosts],
        }
        tmp = self.dir / "lab.json.tmp"
        tmp.write_text(json.dumps(st, indent=1))
        os.replace(tmp, self.dir / "lab.json")

    @classmethod
    def load(cls, lab: str) -> Testbed:
        """The lab as recorded on disk (for `down`/`status` from another process)."""
        st = _load_state(lab)
        if st is None:
            raise TestbedError(f"no lab {lab!r} under {BASE}", "python -m tests.testbed status")
        variant = st.get("variant", "nspawn")
        return cls(lab, nested=variant == "nested", light=variant == "light")

    # -- bringing hosts up -----------------------------------------------------------------------
    def host(self, i: int) -> TestHost:
        for h in self.hosts:
            if h.index == i:
                return h
        raise TestbedError(f"lab {self.name} has no host {i}")

    def _op_lock(self) -> contextlib.AbstractContextManager[None]:
        # Two processes driving the same lab (e.g. two shells on lab "tb") take turns.
        return flock(BASE / f".lab-{self.name}.lock")

    def up(self, n: int) -> list[TestHost]:
        """Hosts 1..n running, each sshd answering; returns them. Creates only what is missing.

        A stopped host among 1..n is created afresh (new disk); start_host() keeps its disk."""
        with self._op_lock():
            return self._up(n)

    def _up(self, n: int) -> list[TestHost]:
        why = require_root_and_tools(light=self.light)
        if why:
            raise TestbedError(f"test bed unavailable: {why}")
        if n < 1:
            raise TestbedError(f"up({n}): need at least one host")
        lower = rootfs.prepare()
        if not self.key_path.is_file():
            priv, pub = _keypair()
            write_private(self.key_path, priv)
            write_private(self.key_path.with_suffix(".pub"), pub + "\n", 0o644)
        if not self.light:
            sysctl.raise_to(INOTIFY, INOTIFY_MIN, self.name)
        if not self._bases:  # fixed at the first up: a later caller may sit in another cgroup
            self._bases = cgroup.lab_bases(self.name)
        self.net.up()
        etc_hosts = "127.0.0.1 localhost\n" + "".join(
            f"{self.net.host_ip(i)} {self.net.host_ns(i)}\n" for i in range(1, n + 1)
        )
        started: list[TestHost] = []
        try:
            todo = [i for i in range(1, n + 1) if not _alive(self._procs.get(self.net.host_ns(i)))]
            hosts = [self._prepare_host(i, etc_hosts) for i in todo]
            self.net.add_hosts(todo)
            for h in hosts:
                self._spawn(h, lower)
                started.append(h)
                self._save()  # record each pid at once: `down` must find it even if we die now
            self._wait_ready(started)
        finally:
            self._save()
            self._write_known_hosts()
        return [self.host(i) for i in range(1, n + 1)]

    def _host_dir(self, name: str) -> Path:
        return self.dir / name

    def _prepare_host(self, i: int, etc_hosts: str) -> TestHost:
        name = self.net.host_ns(i)
        hd = self._host_dir(name)
        if hd.exists():
            self._rmtree_host(hd)
        up = hd / "upper"
        for d, mode in (("root", 0o700), ("root/.ssh", 0o700), ("etc", 0o755), ("etc/ssh", 0o755)):
            (up / d).mkdir(parents=True, exist_ok=True)
            os.chmod(up / d, mode)
        for d in ("work", "merged"):
            (hd / d).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.key_path.with_suffix(".pub"), up / "root/.ssh/authorized_keys")
        os.chmod(up / "root/.ssh/authorized_keys", 0o600)
        (up / "etc/hostname").write_text(name + "\n")
        # Distinct per host, as on real machines (the lower rootfs's would be shared by all of them).
        (up / "etc/machine-id").write_text(os.urandom(16).hex() + "\n")
        (up / "etc/hosts").write_text(etc_hosts)
        priv, pub = _keypair()
        write_private(up / "etc/ssh/ssh_host_ed25519_key", priv)
        write_private(up / "etc/ssh/ssh_host_ed25519_key.pub", pub + " root@" + name + "\n", 0o644)
        if self.nested:
            (hd / "data").mkdir(exist_ok=True)  # /var/lib/containerd on ext4: overlayfs can't host overlays
            units = up / "etc/systemd/system"
            (units / "sysinit.target.wants").mkdir(parents=True, exist_ok=True)
            (units / "tb-cgroup-rw.service").write_text(_CGROUP_RW_UNIT)
            link = units / "sysinit.target.wants/tb-cgroup-rw.service"
            if not link.is_symlink():
                link.symlink_to("../tb-cgroup-rw.service")
        h = TestHost(
            name=name, index=i, ip=self.net.host_ip(i), netns=name, root_key=self.key_path, host_key=pub
        )
        self.hosts = [x for x in self.hosts if x.index != i] + [h]
        self.hosts.sort(key=lambda x: x.index)
        return h

    def _spawn(self, h: TestHost, lower: Path) -> None:
        hd = self._host_dir(h.name)
        dirs = [str(hd / "merged"), str(lower), str(hd / "upper"), str(hd / "work")]
        if self.light:
            argv = [
                "ip",
                "netns",
                "exec",
                h.netns,
                *_LIGHT_UNSHARE.split(),
                "sh",
                "-c",
                _LIGHT_SH,
                "sh",
                *dirs,
            ]
            argv.append(h.name)
        else:
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _NSPAWN_SH, "sh", *dirs]
            argv += _NSPAWN_ARGS.split()
            argv += [
                f"--machine={h.name}",
                f"--hostname={h.name}",
                f"--network-namespace-path=/run/netns/{h.netns}",
            ]
            if self.nested:
                argv += [f"--bind={hd / 'data'}:/var/lib/containerd", *_NESTED_ARGS.split()]
        bases = self._bases
        cgroup.make(bases, h.name)
        with open(hd / "console.log", "ab") as log:
            p = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=(lambda: cgroup.join_self(bases, h.name)) if bases else None,
            )
        start = _starttime(p.pid)
        if start is None:
            p.wait()
            raise TestbedError(
                f"{h.name}: exited at once; {hd / 'console.log'}:\n{_tail(hd / 'console.log')}"
            )
        self._popen[h.name] = p
        self._procs[h.name] = _Proc(p.pid, start)
        (hd / "pid").write_text(f"{p.pid} {start}\n")

    def _wait_ready(self, hosts: list[TestHost]) -> None:
        deadline = time.monotonic() + self.boot_timeout
        pending = list(hosts)
        while pending:
            # Probe in parallel: each probe waits for sshd's banner, which on a loaded machine is slow.
            with ThreadPoolExecutor(min(32, len(pending))) as pool:
                answered = list(pool.map(lambda h: _sshd_answers(h.ip, h.port), pending))
            for h, ok in zip(list(pending), answered, strict=True):
                if ok:
                    pending.remove(h)
                elif not self.is_running(h):
                    log = self._host_dir(h.name) / "console.log"
                    raise TestbedError(
                        f"{h.name} ({h.ip}) died while booting; {log}:\n{_tail(log)}",
                        "see the console log; `python -m tests.testbed down --all` cleans up",
                    )
            if pending and time.monotonic() > deadline:
                names = ", ".join(h.name for h in pending)
                raise TestbedError(
                    f"sshd did not answer within {self.boot_timeout:.0f} s on: {names}",
                    f"see {self.dir}/<host>/console.log",
                )
            if pending:
                time.sleep(0.05)

    def _write_known_hosts(self) -> None:
        (self.dir / "known_hosts").write_text("".join(h.known_hosts_line + "\n" for h in self.hosts))

    # -- processes --------------------------------------------------------------------------------
    def is_running(self, h: TestHost) -> bool:
        p = self._popen.get(h.name)
        if p is not None and p.poll() is not None:
            return False
        return _alive(self._procs.get(h.name))

    def _init_pid(self, h: TestHost) -> int | None:
        """The host's PID 1 as seen from here (nspawn: the container's systemd; light: sshd)."""
        p = self._procs.get(h.name)
        if not _alive(p):
            return None
        assert p is not None
        depth = len(_status(os.getpid()).get("NSpid", "x").split())
        for c in _children(p.pid):
            ns = _status(c).get("NSpid", "").split()
            if len(ns) == depth + 1 and ns[-1] == "1":
                return c
        return None

    def _signal_stop(self, h: TestHost, *, hard: bool) -> None:
        p = self._procs.get(h.name)
        if not _alive(p):
            return
        assert p is not None
        if self.light:
            # unshare --fork ignores SIGTERM; SIGKILL makes --kill-child end the host's PID namespace.
            os.kill(p.pid, signal.SIGKILL)
        elif hard:
            self._kill_init(h)
        else:
            os.kill(p.pid, signal.SIGTERM)  # nspawn: orderly poweroff of the container

    def _kill_init(self, h: TestHost) -> None:
        # Never SIGKILL nspawn itself: the container would run on, orphaned. Killing the container's
        # PID 1 ends its whole PID namespace, and nspawn then exits by itself.
        init = self._init_pid(h)
        if init is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)

    def _reap(self, hosts: list[TestHost], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        killed_init = False
        while True:
            alive = [h for h in hosts if self.is_running(h)]
            if not alive:
                break
            if time.monotonic() > deadline and not killed_init:
                for h in alive:
                    self._kill_init(h)
                killed_init = True
                deadline = time.monotonic() + 10
            elif time.monotonic() > deadline:
                raise TestbedError(
                    "could not stop: " + ", ".join(h.name for h in alive),
                    "see `python -m tests.testbed status`",
                )
            time.sleep(0.05)
        for h in hosts:
            pp = self._popen.pop(h.name, None)
            if pp is not None:
                pp.wait()
            self._procs.pop(h.name, None)
            with contextlib.suppress(FileNotFoundError):
                (self._host_dir(h.name) / "pid").unlink()
            # Stragglers left in the host's own cgroup can only be ours (the host's descendants).
            for _ in range(50):
                left = cgroup.pids(self._bases, h.name)
                if not left:
                    break
                for pid in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)
            shutil.rmtree(f"/run/systemd/nspawn/propagate/{h.name}", ignore_errors=True)

    # -- faults and shaping ----------------------------------------------------------------------
    def stop_host(self, h: TestHost, *, hard: bool = False) -> None:
        """Power the host off: nspawn hosts shut down in order (hard: their PID 1 is killed); light hosts
        are always killed. Its netns and address stay, so connecting is refused, not timed out."""
        self._signal_stop(h, hard=hard)
        self._reap([h], 0 if hard else self.stop_timeout)
        self._save()

    def start_host(self, h: TestHost) -> None:
        """Boot a stopped host again with the same disk (upper dir), keys and address."""
        if self.is_running(h):
            return
        if h.netns not in netns_list():
            self.net.add_host(h.index)
        self._spawn(h, rootfs.prepare())
        self._save()
        self._wait_ready([h])

    def cut_link(self, h: TestHost) -> None:
        """Unplug the host from the bridge: packets vanish (timeouts), nothing is refused."""
        self.net.set_link(h.index, up=False)

    def restore_link(self, h: TestHost) -> None:
        self.net.set_link(h.index, up=True)

    def shape(self, h: TestHost, rate: str | None = "50mbit") -> None:
        """Limit the host's bandwidth in both directions (tc tbf); rate=None removes the limit."""
        self.net.shape_host(h.index, rate)

    def shape_operator(self, rate: str | None) -> None:
        """Limit the operator machine's own link to the lab (both directions); None removes it."""
        self.net.shape_operator(rate)

    def run_on(
        self,
        h: TestHost,
        cmd: str | list[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command as root on the host through its namespaces (works with the link cut).

        It runs with this machine's full root privileges, not the host's seccomp filter and capability
        set: test what a host allows over ssh instead."""
        init = self._init_pid(h)
        if init is None:
            raise TestbedError(f"{h.name} is not running", "start_host() it first")
        argv = cmd if isinstance(cmd, list) else ["sh", "-c", cmd]
        full = [
            "nsenter",
            "-t",
            str(init),
            "-m",
            "-u",
            "-i",
            "-n",
            "-p",
            "-r",
            "-w",
            "--",
            "env",
            "-i",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root",
            "LANG=C.UTF-8",
            *argv,
        ]
        cp = run(full, check=False, input=input, timeout=timeout)
        if check and cp.returncode != 0:
            raise TestbedError(f"{h.name}: `{shlex.join(argv)}` exited {cp.returncode}: {cp.stderr.strip()}")
        return cp

    def rotate_host_key(self, h: TestHost) -> str:
        """Give the host a new host key (as after a reinstall) and restart sshd; returns the new key."""
        priv, pub = _keypair()
        self.run_on(h, "umask 077; cat > /etc/ssh/ssh_host_ed25519_key", input=priv.decode())
        self.run_on(h, "cat > /etc/ssh/ssh_host_ed25519_key.pub", input=f"{pub} root@{h.name}\n")
        if self.light:
            self.run_on(h, "kill -HUP 1")  # sshd re-executes itself and reloads its keys
        else:
            self.run_on(h, "systemctl restart ssh")
        h.host_key = pub
        self._save()
        self._write_known_hosts()
        deadline = time.monotonic() + 10
        while not _sshd_answers(h.ip, h.port):
            if time.monotonic() > deadline:
                raise TestbedError(f"{h.name}: sshd did not come back after the key change")
            time.sleep(0.05)
        return pub

    def put_file(self, h: TestHost, src: Path | str, dst: str, mode: int | None = None) -> None:
        """Copy a file from this machine onto the host (through /proc/<pid>/root: no ssh, no link)."""
        init = self._init_pid(h)
        if init is None:
            raise TestbedError(f"{h.name} is not running", "start_host() it first")
        if not dst.startswith("/"):
            raise TestbedError(f"put_file: destination {dst!r} must be absolute")
        target = Path(f"/proc/{init}/root{dst}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tb-tmp")
        shutil.copyfile(src, tmp)  # then rename: a running binary of the same name stays intact
        os.chmod(tmp, mode if mode is not None else os.stat(src).st_mode & 0o7777)
        os.replace(tmp, target)

    def authorize_key(self, h: TestHost, public_key: str, user: str = "root") -> None:
        """Append a public key line to `user`'s authorized_keys on the host (e.g. a passphrase key)."""
        line = public_key.strip()
        if not line.startswith(("ssh-", "ecdsa-", "sk-")):
            raise TestbedError(f"not an OpenSSH public key line: {line[:30]!r}")
        script = (
            'set -e; home=$(getent passwd "$1" | cut -d: -f6); '
            'install -d -m700 -o "$1" -g "$1" "$home/.ssh"; cat >> "$home/.ssh/authorized_keys"; '
            'chown "$1:$1" "$home/.ssh/authorized_keys"; chmod 600 "$home/.ssh/authorized_keys"'
        )
        self.run_on(h, ["sh", "-c", script, "sh", user], input=line + "\n")

    def small_disk(self, h: TestHost, path: str, size: str = "1M") -> None:
        """Mount a tiny tmpfs at `path` on the host, so writes there fail with ENOSPC (disk-full tests).
        It lives in the host's mount namespace and goes away with the host."""
        script = 'mkdir -p "$1" && mount -t tmpfs -o size="$2" tmpfs "$1"'
        self.run_on(h, ["sh", "-c", script, "sh", path, size])

    def allow_ssh_only_from(self, h: TestHost, sources: list[str] | None) -> None:
        """Firewall the host's port 22 to the given source IPs (e.g. a bastion); None lifts it."""
        pre = ["ip", "netns", "exec", h.netns, "iptables", "-w"]
        run([*pre, "-F", "INPUT"])
        if sources is None:
            return
        run([*pre, "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"])
        for src in sources:
            run([*pre, "-A", "INPUT", "-p", "tcp", "--dport", str(h.port), "-s", src, "-j", "ACCEPT"])
        run([*pre, "-A", "INPUT", "-p", "tcp", "--dport", str(h.port), "-j", "DROP"])

    # -- teardown ---------------------------------------------------------------------------------
    def _rmtree_host(self, hd: Path) -> None:
        hds = str(hd.resolve())
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mp = line.split()[4]
            if mp == hds or mp.startswith(hds + "/"):
                raise TestbedError(
                    f"{mp} is still mounted; refusing to delete {hd}",
                    f"umount it, then python -m tests.testbed down --lab {self.name}",
                )
        shutil.rmtree(hd, ignore_errors=True)

    def down(self, *, fast: bool = False) -> None:
        """See _down; one process at a time per lab."""
        with self._op_lock():
            self._down(fast=fast)

    def _down(self, *, fast: bool = False) -> None:
        """Stop every host, delete the lab's namespaces, cgroups, work dir; restore sysctls. Idempotent.

        Best effort: every step runs even if an earlier one failed; the lab's record is kept (so a
        later `down` can retry) only when something is left, and then TestbedError says what."""
        errors: list[str] = []
        for h in self.hosts:
            if self.is_running(h):
                self._signal_stop(h, hard=fast)
        try:
            self._reap(self.hosts, 0 if fast else self.stop_timeout)
        except TestbedError as e:
            errors.append(e.message)
        killed = self._kill_stragglers()
        if killed:
            print(f"testbed: lab {self.name}: killed leftover processes {killed}", file=sys.stderr)
        self.net.down()
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}", ignore_errors=True)
        left = cgroup.remove(self._bases)
        if left:
            errors.append(f"cgroups still busy: {' '.join(left)}")
        sysctl.release(self.name)
        try:
            for h in self.hosts:
                self._rmtree_host(self._host_dir(h.name))
        except TestbedError as e:
            errors.append(e.message)
        if errors:
            raise TestbedError(
                f"lab {self.name} not fully torn down: " + "; ".join(errors),
                f"python -m tests.testbed down --lab {self.name}",
            )
        with flock(BASE / ".labs.lock"):
            shutil.rmtree(self.dir, ignore_errors=True)
        self.hosts = []
        self._procs = {}

    def _kill_stragglers(self) -> list[int]:
        """Last resort after the hosts stopped: whatever still runs in this lab's cgroups or in its
        hosts' network namespaces was started inside the lab, so it is ours to kill."""
        hosts_re = re.compile(rf"^{re.escape(self.name)}h\d+$")
        killed: list[int] = []
        for _ in range(100):
            pids = cgroup.pids(self._bases)
            for ns in netns_list():
                if hosts_re.match(ns):
                    out = run(["ip", "netns", "pids", ns], check=False).stdout
                    pids.update(int(x) for x in out.split() if x.isdigit())
            pids = {p for p in pids if p != os.getpid() and _starttime(p) is not None}  # zombies: no
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.05)
        return sorted(set(killed))

    def footprint(self) -> tuple[str, int, list[str], list[int]]:
        """(lab, subnet k, cgroup dirs, every pid of the lab now): what `leftovers` checks after down()."""
        pids = {p.pid for p in self._procs.values() if _alive(p)}
        pids |= cgroup.pids(self._bases)
        for h in self.hosts:
            init = self._init_pid(h)
            if init is not None:
                pids.add(init)
        return self.name, self._k, list(self._bases), sorted(pids)

    def status(self) -> dict[str, Any]:
        return {
            "lab": self.name,
            "variant": self.variant,
            "subnet": self.net.subnet,
            "operator_ip": self.net.operator_ip,
            "root_key": str(self.key_path),
            "hosts": [
                {
                    "name": h.name,
                    "ip": h.ip,
                    "running": self.is_running(h),
                    "ssh": f"ssh -i {h.root_key} -o UserKnownHostsFile={self.dir}/known_hosts root@{h.ip}",
                }
                for h in self.hosts
            ],
        }


def leftovers(lab: str, k: int, cgroup_bases: list[str], pids: list[int]) -> list[str]:
    """Everything of lab `lab` still present on the machine (empty after a clean teardown)."""
    net = LabNet(lab, k)
    found: list[str] = []
    hosts_re = re.compile(rf"^{re.escape(lab)}h\d+$")
    found += [f"netns {ns}" for ns in netns_list() if ns == net.bridge_ns or hosts_re.match(ns)]
    labdir = str(BASE / lab)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4]
        if mp.startswith(labdir + "/") or mp.startswith(f"/run/netns/{lab}"):
            found.append(f"mount {mp}")
    found += [f"cgroup {b}" for b in cgroup_bases if Path(b).exists()]
    found += [f"process {p}" for p in pids if Path(f"/proc/{p}").exists() and _starttime(p) is not None]
    if run(["ip", "link", "show", net.main_if], check=False).returncode == 0:
        found.append(f"link {net.main_if}")
    if net.subnet in run(["ip", "route", "show", "type", "unreachable"], check=False).stdout:
        found.append(f"route unreachable {net.subnet}")
    if Path(labdir).exists():
        found.append(f"dir {labdir}")
    return found
