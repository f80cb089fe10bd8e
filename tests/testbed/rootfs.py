"""The shared, read-only lower rootfs of every test host: Debian bookworm minbase, debootstrapped once
into a cache directory keyed by a hash of the recipe and reused while the recipe is unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .common import BASE, TestbedError, flock, run

SUITE = "bookworm"
VARIANT = "minbase"

# The reference list (shared/reference/testbed/rootfs.sh) plus what the stand-ins for k3s/kubeadm need
# on the hosts (they are Python programs) and sudo for the password-sudo user. python3-cffi-backend is
# listed because debootstrap does not resolve python3-cryptography's virtual cffi dependency.
PACKAGES: tuple[str, ...] = (
    "openssh-server",
    "openssh-sftp-server",
    "iproute2",
    "iputils-ping",
    "procps",
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3-minimal",
    "python3",
    "python3-yaml",
    "python3-cryptography",
    "python3-cffi-backend",
    "openssl",
    "sudo",
    "iptables",
    "conntrack",
    "socat",
    "kmod",
    "ca-certificates",
    "curl",
    "less",
    "netbase",
    "ethtool",
    "ebtables",
    "ipset",
    "util-linux",
    "mount",
)

#: A user that logs in with a password (no key), and a user whose sudo asks for its password.
PASSWORD_USER = ("tbuser", "tbuser-pass")
SUDO_USER = ("tbsudo", "tbsudo-pass")

# Runs inside the new rootfs (chroot) after debootstrap. Part of the cache key: edit it and the cache
# is rebuilt. Host keys are removed because each host gets its own in its upper dir; /etc/hostname is
# reset because debootstrap copies the build machine's, and systemd would prefer it over --hostname.
POST_STEPS = f"""set -e
rm -rf /var/cache/apt/archives/*.deb /var/lib/apt/lists/* /usr/share/doc /usr/share/man /usr/share/locale/*
rm -f /etc/ssh/ssh_host_*
echo tb-node > /etc/hostname
id {PASSWORD_USER[0]} >/dev/null 2>&1 || useradd -m -s /bin/bash {PASSWORD_USER[0]}
id {SUDO_USER[0]} >/dev/null 2>&1 || useradd -m -s /bin/bash -G sudo {SUDO_USER[0]}
printf '%s:%s\\n%s:%s\\n' {PASSWORD_USER[0]} {PASSWORD_USER[1]} {SUDO_USER[0]} {SUDO_USER[1]} | chpasswd
mkdir -p /etc/ssh/sshd_config.d
printf 'PasswordAuthentication yes\\nKbdInteractiveAuthentication no\\nPermitRootLogin prohibit-password\\n' \\
  > /etc/ssh/sshd_config.d/10-testbed.conf
"""  # noqa: E501

RECIPE_VERSION = 1
STAMP = ".testbed-recipe.json"


def recipe() -> dict[str, object]:
    return {
        "version": RECIPE_VERSION,
        "suite": SUITE,
        "variant": VARIANT,
        "packages": sorted(PACKAGES),
        "post_steps": POST_STEPS,
    }


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:16]


def cache_root() -> Path:
    return BASE / "rootfs"


def cached_path() -> Path:
    return cache_root() / f"{SUITE}-{recipe_hash()}"


def is_ready(path: Path | None = None) -> bool:
    p = path or cached_path()
    return (p / STAMP).is_file()


def find_mirror() -> str:
    """The Debian mirror apt already uses on this machine (CI reaches the same one)."""
    env = os.environ.get("SEALER_TESTBED_MIRROR")
    if env:
        return env
    srcdir = Path("/etc/apt/sources.list.d")
    for f in sorted(srcdir.glob("*.sources")) if srcdir.is_dir() else []:
        for line in f.read_text().splitlines():
            if line.startswith("URIs:") and "debian" in line and "security" not in line:
                return line.split()[1]
    lst = Path("/etc/apt/sources.list")
    if lst.is_file():
        for line in lst.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1]
    raise TestbedError("no Debian mirror found in /etc/apt/sources.list(.d)", "set SEALER_TESTBED_MIRROR=URL")


def _post_steps(root: Path) -> None:
    run(["chroot", str(root), "/bin/sh", "-c", POST_STEPS], timeout=300)


def _finish(tmp: Path, dest: Path) -> None:
    _post_steps(tmp)
    (tmp / STAMP).write_text(json.dumps(recipe(), indent=1, sort_keys=True) + "\n")
    os.rename(tmp, dest)  # atomic: a reader sees no rootfs or a complete one


def _missing_packages(root: Path) -> list[str]:
    status = root / "var/lib/dpkg/status"
    if not status.is_file():
        return list(PACKAGES)
    installed: set[str] = set()
    name = ""
    for line in status.read_text(errors="replace").splitlines():
        if line.startswith("Package: "):
            name = line.split(" ", 1)[1]
        elif line.startswith("Status: ") and line.endswith("install ok installed"):
            installed.add(name)
    return [p for p in PACKAGES if p not in installed]


def prepare(*, log: Path | None = None, quiet: bool = False) -> Path:
    """Return the cached rootfs, building it first if needed (safe if several processes race here)."""
    dest = cached_path()
    if is_ready(dest):
        return dest
    # Overridable so the cache's locking can be tested without 80 s of downloading.
    debootstrap = os.environ.get("SEALER_TESTBED_DEBOOTSTRAP", "debootstrap")
    if shutil.which(debootstrap) is None:
        raise TestbedError("debootstrap is not installed", "run scripts/setup (apt-get install debootstrap)")
    root = cache_root()
    with flock(root / ".lock"):
        if is_ready(dest):  # another process built it while we waited for the lock
            return dest
        for stale in root.glob(".build-*"):  # a crashed build; we hold the lock so nobody owns it
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".build-{recipe_hash()}-{os.getpid()}"
        logf = log or root / "build.log"
        t0 = time.monotonic()
        if not quiet:
            print(f"testbed: debootstrap {SUITE} into {dest} (about 80 s; log {logf})", flush=True)
        with open(logf, "w") as out:
            rc = subprocess.run(
                [
                    debootstrap,
                    f"--variant={VARIANT}",
                    "--include=" + ",".join(PACKAGES),
                    SUITE,
                    str(tmp),
                    find_mirror(),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=1800,
            ).returncode
        if rc != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join(logf.read_text(errors="replace").splitlines()[-15:])
            raise TestbedError(
                f"debootstrap failed (exit {rc}); last lines of {logf}:\n{tail}",
                "check that the Debian mirror is reachable (SEALER_TESTBED_MIRROR)",
            )
        _finish(tmp, dest)
        if not quiet:
            print(f"testbed: rootfs ready in {time.monotonic() - t0:.1f} s", flush=True)
    return dest


def adopt(src: Path) -> Path:
    """Take over a rootfs debootstrapped elsewhere with this recipe's packages (saves the 80 s build)."""
    dest = cached_path()
    if is_ready(dest):
        return dest
    if (src / "debootstrap").exists():
        raise TestbedError(f"{src}: debootstrap has not finished there", "wait for it, or run prepare")
    missing = _missing_packages(src)
    if missing:
        raise TestbedError(
            f"{src}: not built with this recipe; missing packages: {' '.join(missing)}",
            "run `python -m tests.testbed prepare` to build from scratch",
        )
    root = cache_root()
    with flock(root / ".lock"):
        if is_ready(dest):
            return dest
        tmp = root / f".build-{recipe_hash()}-{os.getpid()}"
        os.rename(src, tmp)
        _finish(tmp, dest)
    return dest


def prune() -> list[Path]:
    """Remove cached rootfs trees of older recipes (never the current one)."""
    removed: list[Path] = []
    keep = cached_path()
    root = cache_root()
    if not root.is_dir():
        return removed
    with flock(root / ".lock"):
        for p in root.iterdir():
            if p.is_dir() and p != keep and (p / STAMP).is_file():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed
