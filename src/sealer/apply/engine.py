"""The engine behind `sealer run` and `sealer apply` for a new cluster: facts and pre-flight, the
cluster lock, the rootfs on every host, /etc/hosts, hooks, the private registry, the runtime, node
readiness, labels and taints, the image's apps and the saved state. Every step is journaled per host,
so a re-run after a failure resumes at the first unfinished step and never redoes a finished one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sealer.apply import facts as factsmod
from sealer.apply.configs import RenderedConfig
from sealer.apply.configs import render as render_config
from sealer.apply.progress import Progress
from sealer.apply.rootfs import Payload, UnpackedImage, disk_need, fans_out, unpack
from sealer.apply.rootfs import payloads as plan_payloads
from sealer.errors import HostError, NotImplementedYet, RuntimeErrorSealer, SealerError
from sealer.image import oci
from sealer.image.kubefile_apps import Application as KubefileApp
from sealer.image.metadata import SealerImageInfo
from sealer.image.reference import parse_reference
from sealer.image.registry import RegistryOptions
from sealer.image.service import ensure_image, image_info
from sealer.image.store import ImageStore
from sealer.image.store import sealer_home as image_home
from sealer.image.store import tree_bytes as _tree_bytes
from sealer.infra import transfer
from sealer.infra.connector import TransferStats
from sealer.infra.fleet import Fleet
from sealer.infra.host import Target, target_from_host
from sealer.infra.local import LocalConnector
from sealer.infra.shell import quote_path
from sealer.infra.ssh import SSHConnector
from sealer.kube.client import Kube, NodeStatus
from sealer.model.cluster import Cluster, Clusterfile, Host, PluginDoc
from sealer.model.clusterfile import dump_clusterfile, parse_plugins
from sealer.plan import Plan, effective_labels, make_plan
from sealer.runtime import pki
from sealer.runtime.base import (
    API_ENDPOINT_NAME,
    ClusterRuntime,
    RegistryEndpoint,
    RuntimeContext,
    choose_runtime,
    registers_node,
)
from sealer.runtime.hooks import run_phase
from sealer.runtime.registry import htpasswd_line, install_registry, write_file
from sealer.state import ClusterState, Journal, StepKey, digest_of
from sealer.state.files import atomic_write, ensure_private_dir

IMAGE_MARKER = ".sealer-image"
READY_TIMEOUT = 600.0
# Test hook (documented in tests/e2e/README.md): before the step named `<step>@<host ip>` the engine
# creates the file $SEALER_TEST_PAUSE_FILE and waits until it is removed, so a test can stop or cut a
# host at a chosen point. Unset in normal use.
PAUSE_ENV = "SEALER_TEST_PAUSE_BEFORE"
PAUSE_FILE_ENV = "SEALER_TEST_PAUSE_FILE"


class PreflightError(SealerError):
    """One or more hosts cannot take the cluster; the message lists every finding."""


class ClusterExistsError(SealerError):
    """`sealer run` of a cluster that is already installed; `same` when the request matches what
    was installed (the CLI then reports success: there is nothing to do)."""

    def __init__(self, message: str, hint: str | None = None, *, same: bool = False) -> None:
        super().__init__(message, hint)
        self.same = same


@dataclass
class RunOptions:
    cmds: list[str] | None = None  # --cmds: replaces the image's launch commands
    apps: list[str] | None = None  # --apps: launch these apps of the image instead
    ready_timeout: float = READY_TIMEOUT
    pull_policy: str = "missing"
    registry_options: RegistryOptions = field(default_factory=RegistryOptions)
    store_root: Path | None = None
    command: str = "sealer run"
    # How the rootfs and registry data reach the hosts (rootfs.DISTRIBUTORS): "ssh" every host from
    # this machine; "fanout" host to host (infra/fanout.py); "auto" host to host when enough hosts
    # need a payload (rootfs.fans_out). The journaled per-host step stays the authority either way:
    # it compares by content and only sends what the fan-out did not deliver.
    distributor: str = "auto"


@dataclass
class NodeSummary:
    name: str
    ip: str
    roles: list[str]
    ready: bool
    version: str


@dataclass
class RunSummary:
    cluster: str
    image: str
    runtime: str
    versions: dict[str, str]
    api_endpoint: str
    kubeconfig: str
    nodes: list[NodeSummary]
    seconds: float
    steps_run: int
    steps_skipped: int
    resumed: bool
    apps: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "image": self.image,
            "runtime": self.runtime,
            "versions": self.versions,
            "apiEndpoint": self.api_endpoint,
            "kubeconfig": self.kubeconfig,
            "nodes": [n.__dict__ for n in self.nodes],
            "seconds": round(self.seconds, 1),
            "stepsRun": self.steps_run,
            "stepsSkipped": self.steps_skipped,
            "resumed": self.resumed,
            "apps": self.apps,
        }


# journal ------------------------------------------------------------------------------------------
class Steps:
    """Runs journaled steps: skips those the resumed operation finished, records start/done/failed."""

    def __init__(self, journal: Journal, op: str, finished: frozenset[StepKey], progress: Progress) -> None:
        self.journal = journal
        self.op = op
        self.finished = finished
        self.progress = progress
        self.run_count = 0
        self.skip_count = 0

    async def step(
        self, action: str, step: str, host: str, inputs: Any, work: Callable[[], Awaitable[str | None]]
    ) -> None:
        digest = digest_of(inputs)
        if StepKey(action, step, host, digest) in self.finished:
            self.skip_count += 1
            self.progress.host(host, "skipped", "done before")
            return
        await _test_pause(step, host)
        self.journal.step(self.op, action, step, "start", host=host, digest=digest)
        try:
            note = await work()
        except BaseException as err:
            message = err.message if isinstance(err, SealerError) else f"{type(err).__name__}: {err}"
            self.journal.step(self.op, action, step, "failed", host=host, digest=digest, error=message[:500])
            self.progress.host(host, "failed", "failed")
            if isinstance(err, Exception) and not isinstance(err, SealerError):
                # An API or OS error sealer did not foresee still gets the step and host named.
                raise RuntimeErrorSealer(
                    f"step {step} on {host} failed: {message}",
                    "run the same command again to retry from this step; per-host logs are in "
                    "$SEALER_HOME/<cluster>/logs/run/",
                ) from err
            raise
        self.journal.step(self.op, action, step, "done", host=host, digest=digest)
        self.run_count += 1
        self.progress.host(host, "ok", note or "ok")


async def _test_pause(step: str, host: str) -> None:
    wanted = os.environ.get(PAUSE_ENV)
    flag = os.environ.get(PAUSE_FILE_ENV)
    if not wanted or not flag or wanted != f"{step}@{host}":
        return
    Path(flag).write_text(f"{step}@{host}\n")
    while Path(flag).exists():
        await asyncio.sleep(0.2)


async def _all_hosts(hosts: Sequence[Host], work: Callable[[Host], Awaitable[None]]) -> None:
    """Run work on every host at once; when some fail, raise one error naming each of them (the
    others finished their part, so a re-run only redoes the failed hosts)."""
    results = await asyncio.gather(*(work(h) for h in hosts), return_exceptions=True)
    failures = [(h, r) for h, r in zip(hosts, results, strict=True) if isinstance(r, BaseException)]
    for _, err in failures:
        if not isinstance(err, Exception):
            raise err  # KeyboardInterrupt, cancellation
    if len(failures) == 1:
        raise failures[0][1]
    if failures:
        lines = [f"{h.ip}: {err.message if isinstance(err, SealerError) else err}" for h, err in failures]
        raise HostError(
            ", ".join(h.ip for h, _ in failures),
            f"{len(failures)} hosts failed:\n  " + "\n  ".join(lines),
            "fix those hosts and run the same command again: finished steps are not redone",
        )


# the engine ---------------------------------------------------------------------------------------
class Engine:
    def __init__(
        self, clusterfile: Clusterfile, state: ClusterState, options: RunOptions, progress: Progress
    ) -> None:
        self.clusterfile = clusterfile
        self.cluster: Cluster = clusterfile.cluster
        self.state = state
        self.options = options
        self.progress = progress
        self.hosts: list[Host] = list(self.cluster.hosts)
        self.targets: dict[str, Target] = {h.ip: target_from_host(h) for h in self.hosts}
        m0 = self.cluster.master0
        assert m0 is not None
        self.master0: Host = m0
        self.facts: dict[str, factsmod.HostFacts] = {}
        self.unpacked: dict[str, UnpackedImage] = {}  # arch -> unpacked rootfs
        self.info: SealerImageInfo | None = None
        self._trees: dict[tuple[str, str], asyncio.Future[transfer.LocalTree]] = {}
        self.configs: dict[str, list[RenderedConfig]] = {}  # arch -> Config documents, rendered

    # image -----------------------------------------------------------------------------------------
    async def _image(self, arches: Sequence[str]) -> None:
        image = self.cluster.image
        assert image is not None
        store = ImageStore(self.options.store_root)
        platforms = [oci.Platform("linux", a) for a in sorted(set(arches))]
        await ensure_image(
            store, image, self.options.registry_options, platforms=platforms, policy=self.options.pull_policy
        )
        cache = image_home() / "cache" / "rootfs"
        for platform in platforms:
            selected = store.select(image, platform)
            self.unpacked[platform.architecture] = await asyncio.to_thread(unpack, store, selected, cache)
        self.info = image_info(store, image, platforms[0])

    def _unpacked_for(self, host: Host) -> UnpackedImage:
        return self.unpacked[self.facts[host.ip].platform_arch]

    # facts and pre-flight ---------------------------------------------------------------------------
    async def _gather(self, fleet: Fleet) -> None:
        self.progress.phase("connect + facts")
        gathered = await factsmod.gather(
            fleet, [self.targets[h.ip] for h in self.hosts], self.cluster.data_root
        )
        unreachable: list[str] = []
        for host in self.hosts:
            got = gathered[host.ip]
            if isinstance(got, SealerError):
                # infra's messages usually start with the host already; do not name it twice
                named = got.message if got.message.startswith(host.ip) else f"{host.ip}: {got.message}"
                unreachable.append(named + (f" ({got.hint})" if got.hint else ""))
                self.progress.host(host.ip, "failed", "unreachable")
            else:
                self.facts[host.ip] = got
                self.progress.host(host.ip, "ok", f"{got.arch} {got.os}")
        if unreachable:
            self.progress.end_phase(failed=True)
            raise PreflightError(
                f"cannot reach {len(unreachable)} host(s):\n  " + "\n  ".join(unreachable),
                "check the addresses, SSH credentials (-p/--pk) and that sshd runs; nothing was changed",
            )
        self.progress.end_phase()

    def _preflight(self) -> None:
        self.progress.phase("pre-flight")
        local = self.cluster.registry.local
        registry_port = local.port if local is not None and self.cluster.registry.external is None else None
        need, what, spooled = self.disk_needs(self.hosts)
        findings = factsmod.preflight(
            self.facts,
            cluster=self.cluster.name,
            masters=[h.ip for h in self.cluster.masters],
            master0=self.master0.ip,
            registry_port=registry_port,
            arches=sorted(self.unpacked),
            need_bytes=need,
            need_what=what,
            spooled=spooled,
        )
        errors = [f for f in findings if f.severity == "error"]
        for host in self.hosts:
            mine = [f for f in findings if f.host == host.ip]
            if any(f.severity == "error" for f in mine):
                self.progress.host(
                    host.ip, "failed", "; ".join(f.message for f in mine if f.severity == "error")
                )
            elif mine:
                self.progress.host(host.ip, "warning", "; ".join(f.message for f in mine))
            else:
                self.progress.host(host.ip, "ok", "ok")
        self.progress.end_phase(failed=bool(errors))
        for f in findings:
            if f.severity == "warning":
                self.progress.warn(f"{f.host}: {f.message} ({f.hint})")
        if errors:
            lines = [f"{f.host}: {f.message}" + (f" — {f.hint}" if f.hint else "") for f in errors]
            bad = sorted({f.host for f in errors})
            raise PreflightError(
                f"pre-flight refused {len(bad)} host(s) ({', '.join(bad)}):\n  " + "\n  ".join(lines),
                "fix the hosts named above and run the same command again; nothing was changed",
            )

    # registry material ---------------------------------------------------------------------------
    def _pki(self) -> tuple[pki.KeyPair, pki.KeyPair]:
        """The cluster CA and the registry's certificate, made once and kept in the state dir
        (pki/, 0600) so re-runs and later scale-ups hand out the same trust."""
        pki_dir = ensure_private_dir(self.state.dir / "pki")
        ca_crt, ca_key = pki_dir / "ca.crt", pki_dir / "ca.key"
        if ca_crt.exists() and ca_key.exists():
            ca = pki.KeyPair(ca_crt.read_text(), ca_key.read_text())
        else:
            ca = pki.new_ca(self.cluster.name)
            atomic_write(ca_key, ca.key_pem)
            atomic_write(ca_crt, ca.cert_pem)
        local = self.cluster.registry.local
        assert local is not None
        dns = [local.domain, *local.cert_dns_names]
        ips = [self.master0.ip, *local.cert_ips]
        reg_crt, reg_key = pki_dir / "registry.crt", pki_dir / "registry.key"
        if reg_crt.exists() and reg_key.exists():
            have_dns, have_ips = pki.cert_names(reg_crt.read_text())
            if set(dns) <= have_dns and set(ips) <= have_ips:
                return ca, pki.KeyPair(reg_crt.read_text(), reg_key.read_text())
        cert = pki.issue_server_cert(ca, local.domain, dns, ips)
        atomic_write(reg_key, cert.key_pem)
        atomic_write(reg_crt, cert.cert_pem)
        return ca, cert

    def _mirrored_registries(self) -> list[str]:
        assert self.info is not None
        domains: list[str] = []
        for item in self.info.container_images:
            try:
                domain = parse_reference(item.image).domain
            except SealerError:
                continue
            if domain and domain not in domains:
                domains.append(domain)
        return domains

    # distribution --------------------------------------------------------------------------------
    def registry_hosts(self, hosts: Sequence[Host]) -> list[str]:
        """Hosts among `hosts` that keep the image's registry data: master0, where the private
        registry runs (runtime/registry.py installs it there only)."""
        return [h.ip for h in hosts if h.ip == self.master0.ip]

    def payloads(self, hosts: Sequence[Host]) -> list[Payload]:
        """What `hosts` need: their platform's rootfs, and the registry data where it is served."""
        rootfs_of = {h.ip: (self.facts[h.ip].platform_arch, self._unpacked_for(h)) for h in hosts}
        return plan_payloads(rootfs_of, self.registry_hosts(hosts), self.cluster.rootfs)

    def disk_needs(self, hosts: Sequence[Host]) -> tuple[dict[str, int], dict[str, str], set[str]]:
        """Per host: bytes its dataRoot needs free for what the chosen distributor sends it, what
        they are for, and whether it receives anything host to host (then it needs a spool)."""
        sizes: dict[str, dict[str, int]] = {}
        fanned: dict[str, dict[str, bool]] = {}
        for p in self.payloads(hosts):
            size = _tree_bytes(p.src)
            for ip in p.hosts:
                sizes.setdefault(ip, {})[p.kind] = size
                fanned.setdefault(ip, {})[p.kind] = fans_out(self.options.distributor, p)
        need = {ip: disk_need(sizes[ip], fanned[ip]) for ip in sizes}
        what = {
            ip: "the rootfs and registry data" if "registry" in kinds else "the rootfs"
            for ip, kinds in sizes.items()
        }
        spooled = {ip for ip, kinds in fanned.items() if any(kinds.values())}
        return need, what, spooled

    def _marker_want(self, host: Host) -> str:
        is_m0 = host.ip == self.master0.ip
        return f"{self._unpacked_for(host).image_id}{' +registry' if is_m0 else ''}"

    async def distribute(
        self,
        fleet: Fleet,
        steps: Steps,
        action: str,
        hosts: Sequence[Host],
        per_host: Callable[[Host], Awaitable[None]],
    ) -> None:
        """Bring the image's data to `hosts`: first whatever the distributor sends host to host
        (best effort, never fails the run), then every host's own journaled step (`per_host`, which
        runs `_distribute`): it compares by content, so it sends only what the fan-out did not
        deliver, and it is what a re-run trusts."""
        if self.options.distributor != "ssh":
            await self._prefill(fleet, steps, action, hosts)
        await _all_hosts(hosts, per_host)

    async def _prefill(self, fleet: Fleet, steps: Steps, action: str, hosts: Sequence[Host]) -> None:
        # Hosts that already hold this image (a re-run, a resumed apply) are left out, so a fan-out
        # never waits on a host that needs nothing.
        targets = [self.targets[h.ip] for h in hosts]
        path = quote_path(f"{self.cluster.rootfs}/{IMAGE_MARKER}")

        async def marker(t: Target) -> str:
            have = await fleet.run(t, f"cat {path} 2>/dev/null", sudo=True)
            return have.stdout.strip() if have.ok else ""

        marks = await fleet.each(targets, marker)
        pending = {h.ip: h for h, m in zip(hosts, marks, strict=True) if m.value != self._marker_want(h)}
        plan = self.payloads(list(pending.values()))
        fanned = [p for p in plan if fans_out(self.options.distributor, p)]
        if not fanned:
            return

        async def fanouts() -> None:
            for p in fanned:
                image_id = self._unpacked_for(pending[p.hosts[0]]).image_id
                inputs = {"image": image_id, "kind": p.kind, "dst": p.dst, "hosts": list(p.hosts)}
                # Journaled so the journal tells how the data travelled; a re-run with hosts still
                # missing it has other inputs and fans out again to just those.
                await steps.step(
                    action, f"fanout:{p.kind}", "fan-out", inputs, partial(self._fanout, fleet, p)
                )

        # What only one host needs (the registry data on master0) goes in one direct stream at the
        # same time, instead of after the fan-outs: the operator's link and master0's then carry
        # both at once, and the fan-outs' set-up and clean-up no longer leave them idle.
        direct = [p for p in plan if p not in fanned]
        await asyncio.gather(fanouts(), *(self._presend(fleet, p) for p in direct))

    async def _presend(self, fleet: Fleet, payload: Payload) -> None:
        """A payload straight to its hosts ahead of their journaled steps (which then find it equal
        and send nothing). Best effort like the fan-out: a failure is left to those steps."""
        for ip in payload.hosts:
            try:
                stats = await self._put(fleet, self.targets[ip], payload.src, payload.dst)
            except Exception as err:  # the host's own rootfs step copies it again and reports
                message = err.message if isinstance(err, SealerError) else f"{type(err).__name__}: {err}"
                self.progress.warn(
                    f"{ip}: early copy of the {payload.label} failed ({_unprefixed(ip, message)}); retrying"
                )
                continue
            self.progress.note(
                f"{payload.label} sent directly to {ip} alongside the fan-out ({stats.files_sent} file(s))"
            )

    async def _fanout(self, fleet: Fleet, payload: Payload) -> str:
        """One payload host to host. Whatever goes wrong is reported and left to the hosts' own
        steps, which copy directly: a fan-out is an optimisation, never a new way to fail."""
        from sealer.infra.fanout import fanout_copy
        from sealer.infra.fanout_render import FanoutView, live_view

        n = len(payload.hosts)
        targets = [self.targets[ip] for ip in payload.hosts]
        self.progress.note(f"{payload.label}: sending host to host (fan-out) to {n} host(s)")
        console = self.progress.console
        try:
            tree = await self._tree(payload.src, payload.dst)
            if self.progress.quiet:
                result = await fanout_copy(fleet, targets, payload.src, payload.dst, sudo=True, tree=tree)
            elif console.is_terminal:
                # per-host bytes, rate, who feeds whom and an ETA, redrawn live
                with live_view(console) as live:
                    result = await fanout_copy(
                        fleet, targets, payload.src, payload.dst, sudo=True, progress=live, tree=tree
                    )
            else:
                # logs and CI: the same table once, when it is over
                view = FanoutView()
                result = await fanout_copy(
                    fleet, targets, payload.src, payload.dst, sudo=True, progress=view, tree=tree
                )
                console.print(view)
        except Exception as err:  # any failure at all falls back to the direct copy
            message = err.message if isinstance(err, SealerError) else f"{type(err).__name__}: {err}"
            self.progress.warn(
                f"fan-out of the {payload.label} failed ({message}); every host gets it directly"
            )
            return f"{payload.label}: fan-out failed, direct copy"
        done = [o.host for o in result.outcomes if o.ok]
        self.progress.note(f"{payload.label} sent host to host (fan-out) to {len(done)}/{n} host(s)")
        for outcome in result.outcomes:
            if not outcome.ok:
                why = _unprefixed(outcome.host, outcome.error.message) if outcome.error else "failed"
                self.progress.warn(
                    f"{outcome.host}: fan-out of the {payload.label} failed ({why}); copying directly"
                )
        return f"{payload.label} to {len(done)}/{n} host(s) host to host"

    # per-host work -------------------------------------------------------------------------------
    async def _distribute(self, fleet: Fleet, host: Host) -> str:
        unpacked = self._unpacked_for(host)
        target = self.targets[host.ip]
        rootfs = self.cluster.rootfs
        marker = f"{rootfs}/{IMAGE_MARKER}"
        want = self._marker_want(host)
        have = await fleet.run(target, f"cat {quote_path(marker)} 2>/dev/null", sudo=True)
        if have.ok and have.stdout.strip() == want:
            return "same image already there"
        stats = await self._put(fleet, target, unpacked.rootfs, rootfs)
        sent, skipped = stats.files_sent, stats.files_skipped
        if host.ip in self.registry_hosts([host]):
            reg = await self._put(fleet, target, unpacked.registry, f"{rootfs}/registry")
            sent, skipped = sent + reg.files_sent, skipped + reg.files_skipped
        mark = (
            f"mkdir -p /etc/sealer && printf '%s\\n' {shlex.quote(self.cluster.name)} > {factsmod.MARKER} && "
            f"printf '%s\\n' {shlex.quote(want)} > {quote_path(marker)}"
        )
        (await fleet.run(target, mark, sudo=True)).check()
        return f"{sent} sent, {skipped} equal"

    async def _tree(self, src: Path, dst: str) -> transfer.LocalTree:
        """src's manifest (a sha256 per file), computed once per run for the fan-out and every
        host's own copy, off the event loop."""
        key = (str(src), dst)
        task = self._trees.get(key)
        if task is None:
            task = self._trees[key] = asyncio.ensure_future(asyncio.to_thread(transfer.local_tree, src, dst))
        return await task

    async def _put(self, fleet: Fleet, target: Target, src: Path, dst: str) -> TransferStats:
        """Copy a tree to one host; its manifest (a sha256 per file) is computed once for all hosts,
        off the event loop, instead of once per host."""
        tree = await self._tree(src, dst)
        conn = fleet.connector_for(target)
        if isinstance(conn, SSHConnector | LocalConnector):
            return await conn.put(target, src, dst, sudo=True, tree=tree)
        return await fleet.put(target, src, dst, sudo=True)

    async def _config_step(self, fleet: Fleet, steps: Steps, action: str, host: Host) -> None:
        rendered = self.configs.get(self.facts[host.ip].platform_arch, [])
        digest = [(c.path, hashlib.sha256(c.content.encode()).hexdigest()) for c in rendered]

        async def work() -> str:
            for config in rendered:
                # 0600: Config data is often credentials (helm values, app settings).
                await write_file(
                    fleet,
                    self.targets[host.ip],
                    f"{self.cluster.rootfs}/{config.path}",
                    config.content,
                    "0600",
                )
            return f"{len(rendered)} file(s)"

        await steps.step(action, "configs", host.ip, digest, work)

    def _hosts_block(self) -> str:
        lines = [f"# BEGIN sealer cluster {self.cluster.name}"]
        local = self.cluster.registry.local
        if local is not None and self.cluster.registry.external is None:
            lines.append(f"{self.master0.ip} {local.domain}")
        lines.append(f"{self.master0.ip} {API_ENDPOINT_NAME}")
        for alias in self.cluster.host_aliases:
            lines.append(f"{alias.ip} {' '.join(alias.hostnames)}")
        lines.append(f"# END sealer cluster {self.cluster.name}")
        return "\n".join(lines) + "\n"

    async def _etc_hosts(self, fleet: Fleet, host: Host) -> str:
        begin = f"# BEGIN sealer cluster {self.cluster.name}"
        end = f"# END sealer cluster {self.cluster.name}"
        # Replace our block in place (keeps the rest of the file and its inode: /etc/hosts may be a
        # bind mount in containers, so no rename).
        script = (
            "new=$(cat); "
            f"old=$(awk -v b={shlex.quote(begin)} -v e={shlex.quote(end)} "
            "'$0==b{skip=1;next} $0==e{skip=0;next} !skip' /etc/hosts); "
            'printf "%s\\n%s\\n" "$old" "$new" > /etc/hosts'
        )
        (await fleet.run(self.targets[host.ip], script, sudo=True, input=self._hosts_block())).check()
        return "aliases set"

    # apps ----------------------------------------------------------------------------------------
    def _launch_commands(self) -> tuple[list[str], list[str]]:
        """(commands, app names) to run on master0: --cmds, else --apps / spec.appNames, else
        spec.cmd, else the image's LAUNCH / CMDS."""
        ext = self.info.extension if self.info else None
        apps = {a.name: a for a in (ext.applications if ext else [])}
        if self.options.cmds is not None:
            return list(self.options.cmds), []
        names: list[str] | None = None
        if self.options.apps is not None:
            names = list(self.options.apps)
        elif self.cluster.app_names is not None:
            names = [n for n in self.cluster.app_names if n]
        if names is None and self.cluster.cmd:
            return list(self.cluster.cmd), []
        if names is None and ext is not None:
            if ext.launch.app_names:
                names = list(ext.launch.app_names)
            else:
                return list(ext.launch.cmds), []
        cmds: list[str] = []
        for name in names or []:
            app = apps.get(name)
            if app is None:
                raise SealerError(
                    f"image {self.cluster.image} has no app {name!r}",
                    f"apps in the image: {', '.join(apps) or 'none'} (see `sealer inspect`)",
                )
            # The same launch command Go sealer derives (kubectl apply / helm install / bash).
            launch = KubefileApp.from_extension(app.to_json(), self.cluster.image).launch_cmd()
            if not launch:
                raise SealerError(
                    f"app {name!r} of image {self.cluster.image} has no launch command "
                    f"(type {app.type or '?'})",
                    "give the app CMDS in the Kubefile, or launch it with --cmds",
                )
            cmds.append(launch)
        return cmds, list(names or [])

    async def _launch(self, fleet: Fleet, cmds: list[str]) -> str:
        target = self.targets[self.master0.ip]
        for cmd in cmds:
            line = f"cd {quote_path(self.cluster.rootfs)} && {cmd}"
            result = await fleet.run(target, line, sudo=True, env=dict(self.master0.env), timeout=600)
            if not result.ok:
                tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
                raise HostError(
                    self.master0.ip,
                    f"app command `{cmd}` exited {result.exit_code}: {'; '.join(tail)}",
                    "fix the image's launch command (or pass --cmds) and run the same command again",
                )
        return f"{len(cmds)} command(s)"

    def _plugins(self) -> list[PluginDoc]:
        plugins: list[PluginDoc] = []
        seen: set[Path] = set()
        for unpacked in self.unpacked.values():
            pdir = unpacked.rootfs / "plugins"
            if not pdir.is_dir() or pdir in seen:
                continue
            seen.add(pdir)
            for path in sorted(pdir.iterdir()):
                if path.suffix not in (".yaml", ".yml"):
                    continue
                found, problems = parse_plugins(
                    path.read_bytes(), f"{self.cluster.image}:plugins/{path.name}"
                )
                errors = [p for p in problems if p.severity == "error"]
                if errors:
                    raise SealerError(
                        f"image plugin file plugins/{path.name}: {errors[0].render()}",
                        "fix the plugin file in the image and rebuild it",
                    )
                plugins.extend(found)
            break  # Go sealer loads plugins from one platform's rootfs only
        return plugins + list(self.clusterfile.plugins)

    # the run -------------------------------------------------------------------------------------
    async def run(self) -> RunSummary:
        started = time.monotonic()
        image = self.cluster.image
        if not image:
            raise SealerError(f"cluster {self.cluster.name}: no image to run", "give IMAGE or spec.image")
        plan = make_plan(self.cluster, None)
        logdir = self.state.logs_dir / "run"
        ensure_private_dir(self.state.logs_dir)
        async with Fleet(
            known_hosts=self.state.known_hosts_path, logdir=logdir, cluster=self.cluster.name
        ) as fleet:
            await self._gather(fleet)
            self.progress.phase("image")
            await self._image([f.platform_arch for f in self.facts.values()])
            assert self.info is not None
            self.progress.host(self.cluster.name, "ok", f"{image} ({', '.join(sorted(self.unpacked))})")
            self.progress.end_phase()
            runtime = choose_runtime(
                self.info.labels, next(iter(self.unpacked.values())).read_metadata(), image
            )
            # Config documents are rendered before any host is touched, so a bad one changes nothing.
            self.configs = {
                arch: [render_config(c, unpacked.rootfs) for c in self.clusterfile.configs]
                for arch, unpacked in self.unpacked.items()
            }
            self._preflight()
            journal = self.state.journal()
            try:
                previous = journal.resumable(plan.digest())
                if previous is not None:
                    op = previous.op
                    finished = journal.finished_steps(op)
                    self.progress.note(
                        f"resuming operation {op}: {len(finished)} finished step(s) are not redone"
                    )
                else:
                    op = journal.begin("run", plan.digest())
                    finished = frozenset()
                steps = Steps(journal, op, finished, self.progress)
                try:
                    summary = await self._execute(fleet, plan, steps, runtime)
                except BaseException as err:
                    phase = self.progress.current or "run"
                    self.progress.end_phase(failed=True)
                    journal.end(op, "failed", err.message if isinstance(err, SealerError) else repr(err))
                    if isinstance(err, Exception) and not isinstance(err, SealerError):
                        raise RuntimeErrorSealer(
                            f"{phase} failed: {type(err).__name__}: {err}",
                            "run the same command again; finished steps are not redone",
                        ) from err
                    raise
                journal.end(op, "done")
            finally:
                journal.close()
        summary.seconds = time.monotonic() - started
        summary.steps_run, summary.steps_skipped = steps.run_count, steps.skip_count
        summary.resumed = previous is not None
        return summary

    async def _execute(self, fleet: Fleet, plan: Plan, steps: Steps, runtime: ClusterRuntime) -> RunSummary:
        cluster = self.cluster
        action_of: dict[str, str] = {}
        for action in plan.actions:
            if action.kind in ("install", "join-master", "join-workers"):
                for ip in action.hosts:
                    action_of[ip] = action.id
        final = plan.actions[-1].id
        image_id = {h.ip: self._unpacked_for(h).image_id for h in self.hosts}

        def act(host: Host) -> str:
            return action_of[host.ip]

        # 1. rootfs + /etc/hosts, every host at once
        self.progress.phase("distribute rootfs")

        async def distribute(h: Host) -> None:
            await steps.step(
                act(h),
                "rootfs",
                h.ip,
                {"image": image_id[h.ip], "root": cluster.rootfs, "master0": h.ip == self.master0.ip},
                lambda: self._distribute(fleet, h),
            )

        try:
            await self.distribute(fleet, steps, act(self.master0), self.hosts, distribute)
        finally:
            self.progress.end_phase()
        self.progress.phase("/etc/hosts")
        try:
            await _all_hosts(
                self.hosts,
                lambda h: steps.step(
                    act(h), "etc-hosts", h.ip, self._hosts_block(), lambda: self._etc_hosts(fleet, h)
                ),
            )
        finally:
            self.progress.end_phase()
        if self.clusterfile.configs:
            self.progress.phase("Config files")
            try:
                await _all_hosts(self.hosts, lambda h: self._config_step(fleet, steps, act(h), h))
            finally:
                self.progress.end_phase()

        # 2. the private registry on master0
        registry: RegistryEndpoint | None = None
        local = cluster.registry.local
        if local is not None and cluster.registry.external is None:
            ca, cert = self._pki()
            htpasswd = htpasswd_line(local.username, local.password or "") if local.username else None
            self.progress.phase("private registry")
            fingerprint = hashlib.sha256(cert.cert_pem.encode()).hexdigest()
            try:
                await steps.step(
                    act(self.master0),
                    "registry",
                    self.master0.ip,
                    {
                        "image": image_id[self.master0.ip],
                        "cert": fingerprint,
                        "port": local.port,
                        "auth": hashlib.sha256((htpasswd or "").encode()).hexdigest(),
                    },
                    lambda: self._registry(fleet, local.port, cert, htpasswd),
                )
            finally:
                self.progress.end_phase()
            registry = RegistryEndpoint(
                local.domain,
                local.port,
                ca.cert_pem,
                tuple(self._mirrored_registries()),
                local.username,
                local.password,
            )
        elif cluster.registry.external is not None:
            self.progress.warn(
                "an external registry is configured: hosts pull from it directly (no mirror set up)"
            )

        ctx = RuntimeContext(
            fleet=fleet,
            cluster=cluster,
            targets=self.targets,
            node_names={ip: f.node_name for ip, f in self.facts.items()},
            registry=registry,
            say=lambda host, msg: None,
            kubeadm_documents=tuple(self.clusterfile.kubeadm_documents),
        )
        plugins = self._plugins()
        masters, workers = list(cluster.masters), list(cluster.workers)

        async def hook(phase: str, hosts: Sequence[Host], action: str, host_key: str) -> None:
            relevant = [p for p in plugins if phase in p.actions]
            if not relevant:
                return
            await steps.step(
                action,
                f"hook:{phase}",
                host_key,
                [p.name for p in relevant],
                lambda: _count(
                    run_phase(fleet, phase, relevant, hosts, self.master0, self.targets, cluster.rootfs)
                ),
            )

        # 3. the runtime: master0 first, then masters one at a time, then workers in parallel
        self.progress.phase("pre-install hooks")
        try:
            await hook("pre-install", masters, act(self.master0), self.master0.ip)
            await hook("pre-init-host", self.hosts, act(self.master0), "all")
        finally:
            self.progress.end_phase()
        self.progress.phase(f"{runtime.name} master0")
        try:
            await steps.step(
                act(self.master0),
                "runtime",
                self.master0.ip,
                {"image": image_id[self.master0.ip], "runtime": runtime.name, "trust": _trust(ctx.registry)},
                lambda: _note(runtime.install(ctx, [self.master0], []), "control plane up"),
            )
        finally:
            self.progress.end_phase()
        for master in masters[1:]:
            self.progress.phase(f"{runtime.name} join master")
            try:
                await self._join_master(steps, act(master), master, image_id[master.ip], runtime, ctx)
            finally:
                self.progress.end_phase()
        if workers:
            self.progress.phase(f"{runtime.name} join workers")
            try:
                await _all_hosts(
                    workers,
                    lambda w: steps.step(
                        act(w),
                        "runtime",
                        w.ip,
                        {"image": image_id[w.ip], "runtime": runtime.name, "trust": _trust(ctx.registry)},
                        lambda: _note(runtime.join(ctx, [], [w]), "joined"),
                    ),
                )
            finally:
                self.progress.end_phase()
        self.progress.phase("post-init hooks")
        try:
            await hook("post-init-host", self.hosts, final, "all")
        finally:
            self.progress.end_phase()

        # 4. kubeconfig, readiness, labels and taints, post-install hooks, apps, state
        self.progress.phase("kubeconfig")
        kubeconfig: list[str] = []

        async def fetch() -> str:
            text = await runtime.kubeconfig(ctx)
            self.state.write_admin_conf(text)
            kubeconfig.append(text)
            return str(self.state.admin_conf_path)

        try:
            # A read, not a change: fetched on every run (the client below needs it), not journaled.
            self.progress.host(self.master0.ip, "ok", await fetch())
        finally:
            self.progress.end_phase()
        # plain k0s controllers are not Nodes: readiness, labels and taints are for Nodes only
        node_hosts = [h for h in self.hosts if registers_node(runtime, ctx, h)]
        expected = {self.facts[h.ip].node_name: h.ip for h in node_hosts}
        async with Kube(kubeconfig[0]) as kube:
            self.progress.phase("nodes Ready")
            statuses: list[NodeStatus] = []
            try:
                statuses = await kube.wait_ready(expected, self.options.ready_timeout)
                for s in statuses:
                    self.progress.host(expected[s.name], "ok", f"{s.name} Ready")
            finally:
                self.progress.end_phase(failed=not statuses)
            self.progress.phase("labels + taints")
            try:

                async def label(h: Host) -> None:
                    name = self.facts[h.ip].node_name
                    labels = effective_labels(h)
                    taints = list(h.taints)

                    async def work() -> str:
                        await kube.set_labels(name, labels)
                        await kube.set_taints(name, taints)
                        return f"{len(labels)} label(s), {len(taints)} taint(s)"

                    await steps.step(
                        final,
                        "labels-taints",
                        h.ip,
                        {"labels": labels, "taints": [str(t) for t in taints]},
                        work,
                    )

                await _all_hosts(node_hosts, label)
            finally:
                self.progress.end_phase()
            self.progress.phase("post-install hooks")
            try:
                await hook("post-install", masters, final, self.master0.ip)
            finally:
                self.progress.end_phase()
            cmds, app_names = self._launch_commands()
            self.progress.phase("apps")
            try:
                if cmds:
                    await steps.step(final, "apps", self.master0.ip, cmds, lambda: self._launch(fleet, cmds))
                else:
                    self.progress.host(self.master0.ip, "skipped", "nothing to launch")
            finally:
                self.progress.end_phase()
            self.progress.phase("state")
            try:
                local_text = dump_clusterfile(self.clusterfile)
                cluster_text = dump_clusterfile(in_cluster_copy(self.clusterfile), redact=True)

                async def save() -> str:
                    await kube.save_state(cluster_text, kubeconfig[0])
                    self.state.write_clusterfile(local_text)
                    self.state.update_meta(
                        runtime_type=runtime.name,
                        image=cluster.image,
                        image_ids=sorted(set(image_id.values())),
                    )
                    return "saved locally and in the cluster"

                await steps.step(final, "state", self.master0.ip, local_text, save)
            finally:
                self.progress.end_phase()
            nodes = await kube.nodes()
        by_name = {n.name: n for n in nodes}
        summary_nodes = []
        for h in self.hosts:
            name = self.facts[h.ip].node_name
            status = by_name.get(name)
            summary_nodes.append(
                NodeSummary(
                    name,
                    h.ip,
                    list(h.roles),
                    bool(status and status.ready),
                    status.kubelet_version if status else "",
                )
            )
        return RunSummary(
            cluster=cluster.name,
            image=cluster.image or "",
            runtime=runtime.name,
            versions=dict(runtime.versions()),
            api_endpoint=f"https://{self.master0.ip}:6443",
            kubeconfig=str(self.state.admin_conf_path),
            nodes=summary_nodes,
            seconds=0.0,
            steps_run=0,
            steps_skipped=0,
            resumed=False,
            apps=app_names or cmds,
        )

    async def _join_master(
        self,
        steps: Steps,
        action: str,
        master: Host,
        image_id: str,
        runtime: ClusterRuntime,
        ctx: RuntimeContext,
    ) -> None:
        await steps.step(
            action,
            "runtime",
            master.ip,
            {"image": image_id, "runtime": runtime.name, "trust": _trust(ctx.registry)},
            lambda: _note(runtime.join(ctx, [master], []), "joined"),
        )

    async def _registry(self, fleet: Fleet, port: int, cert: pki.KeyPair, htpasswd: str | None) -> str:
        await install_registry(
            fleet,
            self.targets[self.master0.ip],
            self.cluster.rootfs,
            port,
            cert.cert_pem,
            cert.key_pem,
            htpasswd,
        )
        return f"serving on :{port}"


def in_cluster_copy(clusterfile: Clusterfile) -> Clusterfile:
    """What is kept in the cluster's ConfigMap: a ConfigMap is readable by many, so passwords are
    redacted (by dump_clusterfile) and Config data, often credentials, is replaced by its digest.
    The full file stays only in the operator's 0600 state directory."""
    configs = tuple(
        dataclasses.replace(c, data=f"<kept on the operator machine: {digest_of(c.data)}>")
        for c in clusterfile.configs
    )
    return dataclasses.replace(clusterfile, configs=configs)


def _unprefixed(host: str, message: str) -> str:
    """infra's messages usually start with the host already; do not name it twice."""
    return message.removeprefix(f"{host}: ")


def _trust(registry: RegistryEndpoint | None) -> str:
    """Part of a runtime step's inputs: a host set up to trust another registry CA is redone."""
    return hashlib.sha256(registry.ca_pem.encode()).hexdigest() if registry else ""


async def _note(work: Awaitable[None], note: str) -> str:
    await work
    return note


async def _count(work: Awaitable[int]) -> str:
    return f"{await work} hook run(s)"


# entry points -------------------------------------------------------------------------------------
def cluster_exists(state: ClusterState) -> bool:
    """True when this cluster was installed to the end (a last-applied Clusterfile is kept)."""
    return state.read_clusterfile() is not None


async def run_cluster(
    clusterfile: Clusterfile,
    *,
    options: RunOptions | None = None,
    progress: Progress | None = None,
    state: ClusterState | None = None,
) -> RunSummary:
    """Install a new cluster (`sealer run`): refuses one that already exists (nothing is changed);
    resumes an unfinished install of the same Clusterfile."""
    options = options or RunOptions()
    progress = progress or Progress()
    state = state or ClusterState(clusterfile.cluster.name)
    _refuse_existing(clusterfile, state)
    with state.lock(options.command):
        return await create_cluster(clusterfile, state, options=options, progress=progress)


async def create_cluster(
    clusterfile: Clusterfile,
    state: ClusterState,
    *,
    options: RunOptions | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Install the cluster a Clusterfile describes, for a caller that already holds `state.lock(...)`
    (`sealer apply` takes the lock before planning). Refuses a cluster that exists; resumes an
    unfinished install of the same Clusterfile from its journal."""
    state.clean_temps()
    _refuse_existing(clusterfile, state)
    return await Engine(clusterfile, state, options or RunOptions(), progress or Progress()).run()


def _refuse_existing(clusterfile: Clusterfile, state: ClusterState) -> None:
    stored = state.read_clusterfile()
    if stored is None:
        return
    same = stored == dump_clusterfile(clusterfile)
    name = clusterfile.cluster.name
    if same:
        raise ClusterExistsError(
            f"cluster {name} already exists as requested ({state.clusterfile_path}); nothing was changed",
            same=True,
        )
    raise ClusterExistsError(
        f"cluster {name} already exists ({state.clusterfile_path}) and differs from this request; "
        "nothing was changed",
        "change it with `sealer apply -f Clusterfile` (see `sealer diff -f Clusterfile`), or run the new "
        "cluster under another name (--cluster)",
    )


async def apply(
    clusterfile: Clusterfile,
    *,
    options: RunOptions | None = None,
    progress: Progress | None = None,
    state: ClusterState | None = None,
) -> RunSummary | None:
    """`sealer apply` when the engine can do it: a cluster with no last-applied state is created
    exactly as `sealer run` would. Changes to an existing cluster (scale, upgrade, updates) are
    issue 9; they raise NotImplementedYet without touching anything."""
    state = state or ClusterState(clusterfile.cluster.name)
    if cluster_exists(state):
        raise NotImplementedYet(
            f"changing the existing cluster {clusterfile.cluster.name} is not implemented yet",
            "run `sealer apply --dry-run` to see the plan; scale/upgrade arrive with issue 9",
        )
    return await run_cluster(clusterfile, options=options, progress=progress, state=state)


def command_line() -> str:
    return "sealer " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def summary_lines(summary: RunSummary) -> list[str]:
    """The end-of-run summary for people."""
    versions = ", ".join(f"{k} {v}" for k, v in summary.versions.items()) or summary.runtime
    lines = [
        f"cluster {summary.cluster} is up: {len(summary.nodes)} node(s), {versions}, image {summary.image}",
    ]
    width = max((len(n.name) for n in summary.nodes), default=4)
    for n in summary.nodes:
        lines.append(
            f"  {n.name:<{width}}  {n.ip:<15}  {','.join(n.roles):<12}  "
            f"{'Ready' if n.ready else 'NotReady':<8}  {n.version}"
        )
    lines.append(f"API endpoint: {summary.api_endpoint}")
    lines.append(f"kubeconfig:   {summary.kubeconfig}  (export KUBECONFIG={summary.kubeconfig})")
    if summary.apps:
        lines.append(f"apps:         {', '.join(summary.apps)}")
    resumed = f", resumed: {summary.steps_skipped} finished step(s) not redone" if summary.resumed else ""
    lines.append(f"took {summary.seconds:.1f}s ({summary.steps_run} step(s) run{resumed})")
    return lines
