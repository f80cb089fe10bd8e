"""The cluster's private registry on master0: the image's own registry binary (distribution) serving
the image's registry/ directory over TLS, as a systemd unit, so every host pulls offline through it.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

from sealer.errors import RuntimeErrorSealer
from sealer.infra.fleet import Fleet
from sealer.infra.host import Target
from sealer.infra.shell import quote_path

REGISTRY_DIR = "/etc/sealer/registry"
REGISTRY_UNIT = "sealer-registry.service"
REGISTRY_BIN = "/usr/local/bin/sealer-registry"
# Names the registry binary may have in an image's bin/: Debian's package, distribution's release.
REGISTRY_BINARIES = ("docker-registry", "registry")


def config_yaml(storage: str, port: int, htpasswd: bool) -> str:
    """distribution's config (JSON is YAML). Deletes stay off: the storage is the image's content."""
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": storage},
            "maintenance": {"uploadpurging": {"enabled": False}, "readonly": {"enabled": False}},
        },
        "http": {
            "addr": f":{port}",
            "tls": {"certificate": f"{REGISTRY_DIR}/registry.crt", "key": f"{REGISTRY_DIR}/registry.key"},
        },
    }
    if htpasswd:
        config["auth"] = {"htpasswd": {"realm": "sealer", "path": f"{REGISTRY_DIR}/htpasswd"}}
    return json.dumps(config, indent=2) + "\n"


def unit_file() -> str:
    return f"""[Unit]
Description=sealer private registry (the ClusterImage's container images)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart={REGISTRY_BIN} serve {REGISTRY_DIR}/config.yml
Restart=always
RestartSec=2
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def htpasswd_line(username: str, password: str) -> str:
    """A bcrypt htpasswd line (the only hash distribution accepts), made by Apache's `htpasswd`
    reading the password on stdin, so it never appears on a command line."""
    tool = shutil.which("htpasswd")
    if tool is None:
        raise RuntimeErrorSealer(
            "the Clusterfile sets a registry username/password, but `htpasswd` is not installed here",
            "install it on this machine (Debian: apt-get install apache2-utils), or drop the "
            "registry credentials",
        )
    done = subprocess.run(
        [tool, "-niB", username], input=password + "\n", capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeErrorSealer(f"htpasswd failed: {done.stderr.strip()}", "check the registry username")
    return done.stdout.strip() + "\n"


async def write_file(fleet: Fleet, host: Target, path: str, content: str, mode: str = "0644") -> None:
    """Write `content` to `path` on the host through stdin (secrets never reach a command line or
    a log), creating the parent directory; replaced atomically."""
    parent = path.rsplit("/", 1)[0] or "/"
    tmp = f"{path}.sealer-tmp"
    cmd = (
        f"mkdir -p {quote_path(parent)} && umask 077 && cat > {quote_path(tmp)} && "
        f"chmod {mode} {quote_path(tmp)} && mv -f {quote_path(tmp)} {quote_path(path)}"
    )
    (await fleet.run(host, cmd, sudo=True, input=content)).check()


async def install_registry(
    fleet: Fleet,
    master0: Target,
    rootfs: str,
    port: int,
    cert_pem: str,
    key_pem: str,
    htpasswd: str | None,
) -> None:
    """Install and (re)start the registry unit on master0; wait until it answers over TLS."""
    bins = " ".join(quote_path(f"{rootfs}/bin/{b}") for b in REGISTRY_BINARIES)
    find = (
        f'for b in {bins}; do if [ -x "$b" ]; then install -m 0755 "$b" {REGISTRY_BIN}; exit 0; fi; done; '
        f"echo 'no registry binary in {rootfs}/bin ({', '.join(REGISTRY_BINARIES)})' >&2; exit 3"
    )
    result = await fleet.run(master0, find, sudo=True)
    if result.exit_code == 3:
        raise RuntimeErrorSealer(
            f"{master0.name}: the ClusterImage has no registry binary in bin/ "
            f"(looked for {', '.join(REGISTRY_BINARIES)})",
            "rebuild the image with the registry binary in bin/ (images/k3s/build.sh does this)",
        )
    result.check()
    await write_file(fleet, master0, f"{REGISTRY_DIR}/registry.crt", cert_pem)
    await write_file(fleet, master0, f"{REGISTRY_DIR}/registry.key", key_pem, "0600")
    if htpasswd is not None:
        await write_file(fleet, master0, f"{REGISTRY_DIR}/htpasswd", htpasswd, "0600")
    else:
        (await fleet.run(master0, f"rm -f {REGISTRY_DIR}/htpasswd", sudo=True)).check()
    await write_file(
        fleet,
        master0,
        f"{REGISTRY_DIR}/config.yml",
        config_yaml(f"{rootfs}/registry", port, htpasswd is not None),
    )
    await write_file(fleet, master0, f"/etc/systemd/system/{REGISTRY_UNIT}", unit_file())
    (await fleet.run(master0, f"mkdir -p {quote_path(rootfs)}/registry", sudo=True)).check()
    (
        await fleet.run(
            master0,
            f"systemctl daemon-reload && systemctl enable {REGISTRY_UNIT} >/dev/null 2>&1; "
            f"systemctl restart {REGISTRY_UNIT}",
            sudo=True,
            timeout=60,
        )
    ).check()
    # Ready when the port answers a TLS handshake; curl is not on every host, so use bash's /dev/tcp
    # for the port and let the units' own status tell a crash.
    wait = (
        f"for i in $(seq 1 60); do "
        f"if (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; then exit 0; fi; "
        f"if systemctl is-failed --quiet {REGISTRY_UNIT}; then break; fi; sleep 0.5; done; "
        f"journalctl -u {REGISTRY_UNIT} -n 20 --no-pager 2>/dev/null >&2; exit 1"
    )
    result = await fleet.run(master0, f"bash -c {shlex.quote(wait)}", sudo=True, timeout=60)
    if not result.ok:
        raise RuntimeErrorSealer(
            f"{master0.name}: the private registry did not start on port {port}: "
            f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no output'}",
            f"see `journalctl -u {REGISTRY_UNIT}` on {master0.name}; is port {port} free?",
        )


async def remove_registry(fleet: Fleet, host: Target) -> None:
    cmd = (
        f"systemctl disable --now {REGISTRY_UNIT} >/dev/null 2>&1; "
        f"rm -f /etc/systemd/system/{REGISTRY_UNIT} {REGISTRY_BIN}; rm -rf {REGISTRY_DIR}; "
        "systemctl daemon-reload 2>/dev/null; true"
    )
    (await fleet.run(host, cmd, sudo=True, timeout=60)).check()
