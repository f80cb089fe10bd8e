"""containerd pieces shared by the k0s and kubernetes runtimes: registry mirrors as hosts.toml under a
certs.d directory (containerd's config_path), the CRI drop-in pointing at it, and small host-file helpers.
"""

from __future__ import annotations

import asyncio
import json

from sealer.infra.shell import quote_path
from sealer.model.cluster import Host
from sealer.runtime.base import RegistryEndpoint, RuntimeContext


def toml_str(value: str) -> str:
    """A TOML basic string (JSON escaping is a subset TOML accepts for the characters we emit)."""
    return json.dumps(value)


def mirrored_names(reg: RegistryEndpoint) -> list[str]:
    """Every registry name pulled through the private one: itself, docker.io and the image's sources."""
    return list(dict.fromkeys([reg.address, "docker.io", *reg.mirrored]))


def hosts_toml(name: str, reg: RegistryEndpoint, ca_file: str) -> str:
    """containerd's hosts.toml for `name`: pull and resolve through the private registry, trusting
    the cluster CA. The upstream `server` stays as fallback only when it is the registry itself."""
    server = "https://registry-1.docker.io" if name == "docker.io" else f"https://{name}"
    if name == reg.address:
        server = reg.url
    return (
        f"server = {toml_str(server)}\n\n"
        f"[host.{toml_str(reg.url)}]\n"
        '  capabilities = ["pull", "resolve"]\n'
        f"  ca = {toml_str(ca_file)}\n"
    )


def cri_dropin(certs_dir: str, reg: RegistryEndpoint | None) -> str:
    """A containerd (config version 2) drop-in: CRI reads mirrors from certs_dir; registry credentials
    (when the private registry has them) go to the CRI auth config, which hosts.toml cannot carry."""
    lines = [
        "# written by sealer: the cluster's private registry mirror",
        "version = 2",
        "",
        '[plugins."io.containerd.grpc.v1.cri".registry]',
        f"  config_path = {toml_str(certs_dir)}",
    ]
    if reg is not None and reg.username:
        lines += [
            "",
            f'[plugins."io.containerd.grpc.v1.cri".registry.configs.{toml_str(reg.address)}.auth]',
            f"  username = {toml_str(reg.username)}",
            f"  password = {toml_str(reg.password or '')}",
        ]
    return "\n".join(lines) + "\n"


def registry_files(reg: RegistryEndpoint, certs_dir: str) -> dict[str, str]:
    """path -> content of every hosts.toml and the CA file under certs_dir."""
    ca_file = f"{certs_dir}/{reg.address}/ca.crt"
    files = {ca_file: reg.ca_pem}
    for name in mirrored_names(reg):
        files[f"{certs_dir}/{name}/hosts.toml"] = hosts_toml(name, reg, ca_file)
    return files


def last_line(text: str, limit: int = 200) -> str:
    """The last non-blank line of a command's output (at most `limit` characters), for errors."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][-limit:] if lines else "no output"


async def run_checked(ctx: RuntimeContext, host: Host, cmd: str, timeout: float | None = 120) -> str:
    """Run a command as root on the host; a failure is a HostError naming the host and command."""
    result = await ctx.fleet.run(ctx.target(host), cmd, sudo=True, timeout=timeout)
    result.check()
    return result.stdout


async def reset_hosts(ctx: RuntimeContext, hosts: list[Host], script: str, timeout: float, done: str) -> None:
    """Run a runtime's reset script on every host at once (the shared body of k0s/kubernetes reset)."""

    async def one(host: Host) -> None:
        await run_checked(ctx, host, script, timeout=timeout)
        ctx.say(host.ip, done)

    await asyncio.gather(*(one(h) for h in hosts))


async def put_if_changed(
    ctx: RuntimeContext, host: Host, path: str, content: str, mode: str = "0644"
) -> bool:
    """Write a file through stdin (never on a command line, never logged); True when it changed."""
    new = f"{path}.sealer-new"
    parent = path.rsplit("/", 1)[0] or "/"
    cmd = (
        f"mkdir -p {quote_path(parent)} && umask 077 && cat > {quote_path(new)} && "
        f"chmod {mode} {quote_path(new)} && "
        f"if cmp -s {quote_path(new)} {quote_path(path)}; then rm -f {quote_path(new)}; echo same; "
        f"else mv -f {quote_path(new)} {quote_path(path)}; echo changed; fi"
    )
    result = await ctx.fleet.run(ctx.target(host), cmd, sudo=True, input=content)
    result.check()
    return result.stdout.strip().endswith("changed")
