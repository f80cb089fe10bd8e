"""Host-to-host fan-out of a file tree: the operator streams one tar to the first host of a
chain (or tree), and every host spools it, extracts its share and forwards it to the next.

Links between hosts are SSH connections made with a per-run ed25519 key whose authorized_keys
entry is restricted (forced append-to-spool command, from= the run's hosts, expiry-time) and
removed at the end; a watchdog on each host removes the run's key, processes and temp files
if the operator stops talking to it. Design and measurements: docs/distribution.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import secrets
import shlex
import tarfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

import asyncssh

from sealer.errors import HostError, SealerError
from sealer.infra import transfer
from sealer.infra.connector import Exec, Outcome, TransferStats, host_error_of
from sealer.infra.errors import TransferError
from sealer.infra.fanout_plan import (
    BLOCK,
    CHUNK_BYTES,
    OPERATOR,
    FileSpec,
    HostNeed,
    Layout,
    Meter,
    Tree,
    header,
    host_need,
    plan_tree,
    reroute,
    slow_hosts,
    split,
    union,
)
from sealer.infra.fleet import Fleet
from sealer.infra.host import Target
from sealer.infra.ssh import SSHConnector

log = logging.getLogger(__name__)

STAGE = ".sealer-fanout"
STAGED_MARK = b"\0::sealer-staged::\0"
KEY_MARK = "sealer-fanout"
READ = 1 << 20


class FanoutError(TransferError):
    """A host could not be reached by the fan-out (after re-routing and retries)."""


# ---------------------------------------------------------------- progress


@dataclass(frozen=True)
class HostProgress:
    """One host's state for a progress display: bytes of the stream it holds, rate, ETA, and
    who feeds it ("operator" or a host name)."""

    host: str
    received: int
    total: int
    rate: float
    eta: float | None
    state: str  # "setup" | "receiving" | "committing" | "done" | "failed" | "rerouted" | "skipped"
    parent: str
    round: int


ProgressCallback = Callable[[HostProgress], None]
Tamper = Callable[[str, bytes], bytes]


@dataclass
class FanoutResult:
    """Per-host outcomes plus what the run cost the operator's own link."""

    outcomes: list[Outcome[TransferStats]]
    operator_bytes: int = 0
    rounds: int = 0
    reroutes: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds spent per phase, all rounds

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


# ---------------------------------------------------------------- local side


def file_specs(tree: transfer.LocalTree, chunk_bytes: int = CHUNK_BYTES) -> list[FileSpec]:
    """The pieces of every file of the tree (chunk digests are computed here, file digests
    come from the tree's manifest)."""
    specs = []
    for e in tree.files:
        if "\n" in e.rel or "\\" in e.rel:
            raise transfer.LocalSourceError(
                f"{e.source}: a file name with a newline or backslash cannot be fanned out",
                "rename it, or copy without --fanout",
            )
        sums: list[str] = []
        if e.size > chunk_bytes:
            with open(e.source, "rb") as f:
                while block := f.read(chunk_bytes):
                    sums.append(hashlib.sha256(block).hexdigest())
        specs.append(split(e.rel, e.size, e.sha256, e.mode, e.mtime, e.source, sums, chunk_bytes))
    return specs


async def stream(layout: Layout, offset: int = 0, tamper: Tamper | None = None) -> AsyncIterator[bytes]:
    """The stream's bytes from `offset` on, exactly as Layout counts them, in chunks of about
    READ bytes: a small file's header, data and padding are not three writes (each an SSH
    packet, a wake-up of every process on the first host, and Python work on the operator,
    which has one core's share at most), so a run of small files flows like a large one."""
    buf = bytearray()
    async for part in _parts(layout, offset, tamper):
        if not buf and len(part) >= READ:
            yield part
            continue
        buf += part
        if len(buf) >= READ:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


async def _parts(layout: Layout, offset: int, tamper: Tamper | None) -> AsyncIterator[bytes]:
    index = layout.first_at(offset)
    for p, start in zip(layout.pieces[index:], layout.starts[index:], strict=True):
        skip = offset - start if offset > start else 0
        head = header(p)
        if skip < len(head):
            yield head[skip:]
            skip = 0
        else:
            skip -= len(head)
        with open(p.source, "rb") as f:
            f.seek(p.offset)
            left = p.size
            pos = 0
            while left > 0:
                data = f.read(min(READ, left))
                if not data:
                    raise transfer.LocalSourceError(f"{p.source}: file shrank while being sent", "send again")
                if tamper is not None:
                    data = tamper(p.name, data)
                left -= len(data)
                if skip >= len(data):
                    skip -= len(data)
                else:
                    yield data[skip:]
                    skip = 0
                pos += len(data)
                await asyncio.sleep(0)
        pad = (-p.size) % BLOCK
        if pad:
            yield b"\0" * pad if skip == 0 else b"\0" * max(pad - skip, 0)
    yield b"\0" * (layout.total - max(offset, layout.end))


# ---------------------------------------------------------------- host scripts


def _q(s: str) -> str:
    return shlex.quote(s)


@dataclass(frozen=True)
class _Paths:
    run: str
    root: str
    login: str

    @property
    def work(self) -> str:  # keys, lists, fifos, pids: small, private, removed at the end
        return f"/tmp/{KEY_MARK}-{self.run}"

    @property
    def stage(self) -> str:  # received pieces, kept for resume until the files are made
        return str(PurePosixPath(self.root) / STAGE)

    @property
    def spool(self) -> str:  # the raw stream, on the destination's filesystem (it can be large)
        return f"{self.stage}/spool-{self.run}"


def probe_script(p: _Paths) -> str:
    return (
        f"( {transfer.manifest_script(p.root)} ); printf '\\0::sealer-staged::\\0'; "
        f"cd {_q(p.stage)} 2>/dev/null && "
        "find t c -type f -print0 2>/dev/null | xargs -0 -r sha256sum -z --; "
        "exit 0"
    )


def parse_probe(out: bytes) -> tuple[dict[str, tuple[str, int]], dict[str, str]]:
    head, _, staged_part = out.partition(STAGED_MARK)
    dest = {name: (rf.sha256, rf.mode) for name, rf in transfer.parse_manifest(head).items() if rf.regular}
    staged: dict[str, str] = {}
    for record in staged_part.split(b"\0"):
        digest, sep, name = record.partition(b"  ")
        if sep and len(digest) == 64:
            staged[os.fsdecode(name)] = digest.decode("ascii", "replace")
    return dest, staged


_CLEAN_KEYS = (
    # drop this run's authorized_keys lines and any whose expiry has passed; `cat >` keeps the
    # file's inode, owner and mode
    'ak="$H/.ssh/authorized_keys"; if [ -f "$ak" ]; then '
    f'awk -v now="$(date +%s)" -v run="$RUN" \'{{ if (match($0, /{KEY_MARK}:[a-z0-9]+:[0-9]+/)) '
    '{ split(substr($0, RSTART, RLENGTH), a, ":"); if (a[2] == run || a[3] < now) next } print }\' '
    '"$ak" > "$ak.sealer-tmp" && cat "$ak.sealer-tmp" > "$ak"; rm -f "$ak.sealer-tmp"; fi; '
)


def _cleanup_body(p: _Paths, home: str, *, watchdog: bool = False) -> str:
    """Kill the run's processes, remove its key lines, work dir and spool. Idempotent."""
    skip = '[ "${f##*/}" = watchdog.pid ] && continue; ' if watchdog else ""
    return (
        f"RUN={_q(p.run)}; H={_q(home)}; W={_q(p.work)}; "
        'if [ -d "$W" ]; then for f in "$W"/*.pid; do [ -f "$f" ] || continue; ' + skip + 'pid=$(cat "$f"); '
        '[ -n "$pid" ] && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; }; '
        "done; fi; " + _CLEAN_KEYS + f'rm -rf -- "$W"; rm -f -- {_q(p.spool)}; '
        f"rmdir -- {_q(p.stage)}/t {_q(p.stage)}/c {_q(p.stage)} 2>/dev/null; true"
    )


def setup_script(p: _Paths, home: str, idle: float) -> str:
    """As root: work dir from the tar on stdin, key line appended, stage and spool made, stale
    pieces (listed in $W/discard) removed, and a watchdog that cleans up when the operator's
    heartbeat stops."""
    watchdog = (
        f'W={_q(p.work)}; while [ -d "$W" ]; do sleep 2; '
        'b=$(stat -c %Y "$W/beat" 2>/dev/null || echo 0); '
        f"if [ $(( $(date +%s) - b )) -gt {int(idle)} ]; then "
        f"{_cleanup_body(p, home, watchdog=True)}; exit 0; fi; done"
    )
    return (
        "set -e; umask 077; "
        f"W={_q(p.work)}; H={_q(home)}; S={_q(p.stage)}; SP={_q(p.spool)}; "
        'rm -rf -- "$W"; mkdir -m 700 -- "$W"; tar -x -f - -C "$W"; touch "$W/beat"; '
        f'chown -R {_q(p.login)} "$W" 2>/dev/null || true; '
        'mkdir -p "$H/.ssh"; [ -f "$H/.ssh/authorized_keys" ] || '
        f'{{ touch "$H/.ssh/authorized_keys"; chown {_q(p.login)} "$H/.ssh" "$H/.ssh/authorized_keys"; }}; '
        f"RUN={_q(p.run)}; "
        + _CLEAN_KEYS
        + 'cat "$W/authkey" >> "$H/.ssh/authorized_keys"; rm -f "$W/authkey"; '
        # the destination's parents get the usual modes (the login user must reach the spool)
        f'(umask 022; mkdir -p -- {_q(p.root)}); mkdir -p -- "$S/t" "$S/c"; '
        f'chmod {"700" if p.login == "root" else "711"} -- "$S"; '
        '(cd "$S" && xargs -0 -r rm -f -- < "$W/discard"); rm -f -- "$S"/spool-*; '
        f': > "$SP"; chmod 600 "$SP"; chown {_q(p.login)} "$SP"; '
        f'setsid bash -c {_q(watchdog)} < /dev/null > /dev/null 2>&1 & echo $! > "$W/watchdog.pid"; '
        "true"
    )


# sha256 of received pieces: OpenSSL's uses the CPU's SHA extensions (measured here: 0.06 s of CPU
# per 100 MB against coreutils sha256sum's 0.3 s, ten hosts sharing two cores), so it is used
# when the host has a working `openssl`; sha256sum otherwise. Its `HEX *name` lines are rewritten
# to sha256sum's `HEX  name`, which the commit step compares against.
HASHER = (
    "if openssl dgst -sha256 -r /dev/null >/dev/null 2>&1; then H='openssl dgst -sha256 -r'; "
    "else H=sha256sum; fi; "
)
_OPENSSL_TO_SHA256SUM = "s/^\\([0-9a-f]\\{64\\}\\) \\*/\\1  /"
# names per hashing process: fewer processes for many small files (a fork+exec each), while
# large pieces, which come first in the stream, are still hashed before the stream ends
HASH_BATCH = 32


def receive_script(p: _Paths) -> str:
    """As root: extract this host's pieces from the spool as it grows (a link may change
    under it), until tar has read the end of the stream (`Layout`: whole records)."""
    body = (
        f'W={_q(p.work)}; S={_q(p.stage)}; SP={_q(p.spool)}; echo $$ > "$W/recv.pid"; '
        'F="$W/rx"; rm -f "$F"; mkfifo "$F"; '
        + HASHER
        + 'tail -s 0.05 -c +1 -f "$SP" > "$F" & T=$!; '
        # tar names each member as it starts it; the one before is then complete and is hashed
        # while the stream still flows, so verification costs no time after the last byte
        + 'tar -x -v --quoting-style=literal -b 20 -f - -C "$S" --no-same-owner -p < "$F" '
        '--null -T "$W/want" | awk \'{ if (NR > 1) { print prev; fflush() } prev = $0 } '
        f'END {{ if (NR) print prev }}\' | (cd "$S" && xargs -r -d "\\n" -n {HASH_BATCH} $H --) '
        f"| sed -e {_q(_OPENSSL_TO_SHA256SUM)} > \"$W/sums\"; "
        "rc=${PIPESTATUS[0]}; "
        'kill $T 2>/dev/null; wait $T 2>/dev/null; rm -f "$F" "$W/recv.pid"; exit $rc'
    )
    return f"setsid -w bash -c {_q(body)}"


def feed_script(p: _Paths) -> str:
    body = f'W={_q(p.work)}; echo $$ > "$W/feed.pid"; exec cat >> {_q(p.spool)}'
    return f"setsid -w bash -c {_q(body)}"


def forward_script(p: _Paths, child: Target, child_id: int, offset: int) -> str:
    """As the login user on the parent: stream spool bytes from `offset` on to the child's
    forced command, which appends them to its spool and ends the session once its spool holds
    the whole stream (so no `head` counts bytes here: one copy less per byte and hop)."""
    port = child.port or 22
    ssh = (
        'ssh -F /dev/null -i "$W/key" -o IdentitiesOnly=yes -o UserKnownHostsFile="$W/known_hosts" '
        "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes "
        "-o ServerAliveInterval=2 -o ServerAliveCountMax=3 -o ConnectTimeout=5 "
        "-o Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com -o LogLevel=ERROR "
        f"-p {port} -l {_q(child.login_user)} {_q(child.address)} sealer-fanout"
    )
    body = (
        f'W={_q(p.work)}; SP={_q(p.spool)}; echo $$ > "$W/fwd{child_id}.pid"; '
        f'while [ "$(stat -c %s "$SP" 2>/dev/null || echo -1)" -lt {offset} ]; do '
        '[ -f "$SP" ] || exit 3; sleep 0.2; done; '
        f'F="$W/fx{child_id}"; rm -f "$F"; mkfifo "$F"; '
        f'tail -s 0.05 -c +{offset + 1} -f "$SP" > "$F" & T=$!; '
        f'{ssh} < "$F"; rc=$?; '
        f'kill $T 2>/dev/null; wait $T 2>/dev/null; rm -f "$F" "$W/fwd{child_id}.pid"; exit $rc'
    )
    return f"setsid -w bash -c {_q(body)}"


def detach_script(p: _Paths) -> str:
    """On a child: stop whatever appends to its spool, wait until it is gone, print the spool
    size (the exact offset the next link resumes from)."""
    return (
        f'W={_q(p.work)}; for f in "$W/app.pid" "$W/feed.pid"; do [ -f "$f" ] || continue; '
        'pid=$(cat "$f"); rm -f "$f"; [ -n "$pid" ] || continue; '
        'kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; '
        'n=0; while kill -0 "$pid" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.05; n=$((n+1)); done; done; '
        f"stat -c %s {_q(p.spool)}"
    )


def stop_forward_script(p: _Paths, child_id: int) -> str:
    return (
        f'f={_q(p.work)}/fwd{child_id}.pid; [ -f "$f" ] && '
        '{ pid=$(cat "$f"); kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; '
        'rm -f "$f"; }; true'
    )


def progress_script(p: _Paths, tick: float) -> str:
    """As the login user, for the whole transfer: every `tick`, and at once for every line the
    operator sends, print the spool's size (-1 while there is none); a line from the operator
    also touches the heartbeat. The operator's lines, not this session being open, keep the
    host's watchdog quiet: a host cut off from the operator still holds its end of the session
    open, but hears nothing. The end of stdin (the operator closed the session, or is gone)
    ends it; its pid file lets a clean-up kill it."""
    body = (
        f'W={_q(p.work)}; SP={_q(p.spool)}; [ -d "$W" ] || exit 0; trap "" PIPE; '
        # a session killed before (the one this reopens) left its pid file: drop it, lest a
        # clean-up kill whatever reuses that pid
        'for f in "$W"/prog*.pid; do [ -f "$f" ] && ! kill -0 "$(cat "$f")" 2>/dev/null && rm -f "$f"; done; '
        'P="$W/prog$$.pid"; echo $$ > "$P"; '
        f"while :; do IFS= read -r -t {tick:g} _; rc=$?; "
        # 0: a line (the heartbeat); above 128: the tick passed; else: end of stdin
        'if [ $rc -eq 0 ]; then touch "$W/beat" 2>/dev/null || break; elif [ $rc -le 128 ]; then break; fi; '
        'echo "$(stat -c %s "$SP" 2>/dev/null || echo -1)" || break; done; rm -f "$P"'
    )
    return f"setsid -w bash -c {_q(body)}"


def append_command(p: _Paths) -> str:
    """The link's receiving end on a child: append exactly the rest of the stream (its length
    is in $W/total, written at set-up) to the spool, then end, which ends the session and so
    the parent's forwarding ssh. dd with fullblock counts bytes exactly across partial reads."""
    spool = _q(p.spool)
    return (
        f"dd of={spool} oflag=append conv=notrunc bs=64K iflag=count_bytes,fullblock status=none "
        f"count=$(( $(cat {_q(p.work)}/total) - $(stat -c %s {spool}) ))"
    )


def authorized_line(p: _Paths, public_key: str, sources: Sequence[str], expires: datetime) -> str:
    """The forced command appends to the spool only; it records its pid so a re-route can stop
    it. `restrict` turns off pty, agent, port and X11 forwarding."""
    cmd = f"echo $$ > {p.work}/app.pid; exec {append_command(p)}"
    cmd = cmd.replace("\\", "\\\\").replace('"', '\\"')
    when = expires.strftime("%Y%m%d%H%M") + "Z"
    froms = ",".join(sources)
    stamp = int(expires.timestamp())
    return (
        f'restrict,from="{froms}",expiry-time="{when}",command="{cmd}" {public_key} '
        f"{KEY_MARK}:{p.run}:{stamp}\n"
    )


def commit_script(p: _Paths, need: HostNeed, tree: transfer.LocalTree) -> str:
    """As root: verify every received piece (sha256), drop bad ones, join chunks of files whose
    chunks are all good and verify the joined file, then move finished files into place, apply
    directory modes and symlinks. Prints `BAD <piece>` / `MISSING <file>` lines."""
    lines = [
        "set -u",
        f"S={_q(p.stage)}; R={_q(p.root)}",
        'cd "$S" || exit 1',
    ]
    if need.want:
        # every piece this host was to receive must have been hashed (while receiving, into
        # $W/sums) to exactly its digest; anything else is deleted and reported for re-sending.
        # Without the receiver's sums (e.g. its watchdog cleaned up), hash everything now.
        lines += [
            f"W={_q(p.work)}",
            'if [ -f "$W/sums" ]; then grep -vxF -f "$W/sums"; '
            "else sha256sum -c - 2>/dev/null | grep -v ': OK$' | sed -e 's/: FAILED.*$//' "
            "| while IFS= read -r n; do printf '%064d  %s\\n' 0 \"$n\"; done; fi <<'SEALER_EOF' "
            '| cut -c67- | while IFS= read -r n; do rm -f -- "$n"; printf \'BAD %s\\n\' "$n"; done',
        ]
        lines.extend(f"{piece.sha256}  {piece.name}" for piece in need.want)
        lines.append("SEALER_EOF")
    joined = []
    for spec in need.files:
        if not spec.chunked:
            lines.append(f"[ -f {_q('t/' + spec.rel)} ] || echo MISSING {_q(spec.rel)}")
            continue
        names = " ".join(_q(piece.name) for piece in spec.pieces)
        dst = _q("t/" + spec.rel)
        parent = _q(str(PurePosixPath("t/" + spec.rel).parent))
        lines.append(
            f"if ls -- {names} >/dev/null 2>&1; then mkdir -p -- {parent} && cat -- {names} > {dst}"
            f" && chmod {spec.mode:o} -- {dst} && touch -m -d @{spec.mtime} -- {dst}; "
            f"else echo MISSING {_q(spec.rel)}; fi"
        )
        joined.append(spec)
    if joined:
        lines.append(
            "(cd t && sha256sum -c - 2>/dev/null) <<'SEALER_EOF' | grep -v ': OK$' "
            "| sed -e 's/: FAILED.*$//' | while IFS= read -r n; do [ -e \"t/$n\" ] && "
            '{ rm -f -- "t/$n"; printf \'BAD %s\\n\' "$n"; }; done'
        )
        lines.extend(f"{spec.sha256}  {spec.rel}" for spec in joined)
        lines.append("SEALER_EOF")
        for spec in joined:
            lines.append(
                f"[ -f {_q('t/' + spec.rel)} ] && rm -f -- " + " ".join(_q(x.name) for x in spec.pieces)
            )
    # move: one mkdir for every directory, then per directory one mv of its files (rename(2)
    # within one filesystem: a destination path holds the old file or the whole new one)
    lines += [
        'mkdir -p -- "$R"',
        '(cd t && find . -mindepth 1 -type d -print0 | (cd "$R" && xargs -0 -r mkdir -p --))',
        "(cd t && find . -type d -print0 | xargs -0 -r sh -c "
        '\'r=$1; shift; for d; do find "$d" -mindepth 1 -maxdepth 1 ! -type d '
        '-exec mv -f -t "$r/$d" -- {} +; done\' sh "$R")',
        "find t -mindepth 1 -depth -type d -empty -delete",
    ]
    dirs = [e for e in tree.entries if e.kind == "dir"]
    links = [e for e in tree.entries if e.kind == "symlink"]
    if dirs:
        lines.append(
            'cd "$R" && mkdir -p -- ' + " ".join(_q(e.rel) for e in dirs if e.rel != ".") + ' . && cd "$S"'
        )
        by_mode: dict[int, list[str]] = {}
        for e in dirs:
            by_mode.setdefault(e.mode, []).append(e.rel)
        for mode, rels in sorted(by_mode.items()):
            # directory modes last, so a read-only directory did not block its own contents
            lines.append(f'(cd "$R" && chmod {mode:o} -- ' + " ".join(_q(r) for r in rels) + ")")
    for e in links:
        lines.append(f'(cd "$R" && ln -sfn -- {_q(e.link)} {_q(e.rel)})')
    lines.append(
        '[ -z "$(find t c -type f -print -quit 2>/dev/null)" ] && '
        f"{{ cd / && rm -rf -- {_q(p.stage)}/t {_q(p.stage)}/c; rmdir -- {_q(p.stage)} 2>/dev/null; }}; true"
    )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- one host


class _Host:
    """One target's SSH connection (from the Fleet's connector, shared) and the run's paths."""

    def __init__(self, ssh: SSHConnector, target: Target, paths: _Paths, index: int) -> None:
        self.ssh = ssh
        self.target = target
        self.paths = paths
        self.index = index
        self.name = target.name
        self.home = "/root"
        self.host_key = ""
        self.ip = target.address

    async def open(self) -> None:
        # The Fleet's connector owns connections and sudo (one connection per host per run);
        # the fan-out's commands go over it with its public low-level `exec`.
        peer = await self.ssh.peer(self.target)
        self.host_key = peer.host_key
        # sshd matches from= against the client's IP (hostnames only with UseDNS), so the
        # address the operator reached, as an IP, is what goes into the key's from= list
        self.ip = peer.address

    async def call(
        self,
        script: str,
        stdin: bytes | AsyncIterator[bytes] = b"",
        *,
        sudo: bool = False,
        timeout: float | None = None,
        shown: str = "fan-out",
        on_stdout: Callable[[bytes], None] | None = None,
    ) -> Exec:
        return await self.ssh.exec(
            self.target, "bash -c " + _q(script), stdin, sudo=sudo, timeout=timeout, shown=shown,
            on_stdout=on_stdout,
        )

    async def check(
        self, script: str, stdin: bytes = b"", *, sudo: bool = False, what: str, timeout: float | None = 120
    ) -> bytes:
        code, out, err = await self.call(script, stdin, sudo=sudo, timeout=timeout, shown=what)
        if code != 0:
            raise transfer.transfer_failure(self.name, what, err or f"exit {code}", self.paths.root)
        return out


class _ProgressStream:
    """One host's progress over one long-lived session (`progress_script`): the host prints its
    spool's size every tick, the operator writes a line every `beat` seconds (the host's
    heartbeat). A new session per tick and host cost the operator a channel open, an exec and a
    close each time (N opens a second at N hosts, on the CPU that also feeds the first link);
    this costs one small packet per host and tick. A session that breaks is opened again after
    a pause, at most `reopens` times per round; meanwhile the host is silent, which the watch
    loop treats as it treats a host that does not answer."""

    def __init__(self, host: _Host, tick: float, reopens: int, beat: float | None = None) -> None:
        self.host = host
        self.tick = tick
        self.beat = max(beat if beat is not None else 5 * tick, tick)
        self.reopens = reopens
        self.size = -1
        self.answers = 0  # lines received over all of this host's sessions
        self.last_answer = time.monotonic()  # silence is counted from here
        self.opened = 0
        self.breaks: list[str] = []  # why each session ended before it was asked to
        self._buf = b""
        self._stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] = asyncio.ensure_future(self._run())

    def silent_for(self, now: float) -> float:
        return now - self.last_answer

    def stop(self) -> None:
        """Ask the session to end (stdin closed: the host's loop ends by itself)."""
        if not self._stop.done():
            self._stop.set_result(None)

    async def _pings(self) -> AsyncIterator[bytes]:
        # Ends at stop(). A line every `beat`, and one as soon as the host has been quiet for two
        # ticks: on a session that ended that write fails, which ends the session's feeder (and
        # so the exec) without waiting for the next beat.
        last = float("-inf")
        while not self._stop.done():
            now = time.monotonic()
            quiet = now - self.last_answer > 2 * self.tick
            if now - last >= self.beat or (quiet and now - last >= self.tick):
                last = now
                yield b"\n"
            await asyncio.wait([self._stop], timeout=self.tick)

    def _feed(self, chunk: bytes) -> None:
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            try:
                size = int(line)
            except ValueError:
                continue  # not an answer (e.g. a login script's output)
            self.size = size
            self.answers += 1
            self.last_answer = time.monotonic()

    async def _run(self) -> None:
        h = self.host
        while not self._stop.done():
            self.opened += 1
            self._buf = b""
            try:
                code, _, err = await h.call(
                    progress_script(h.paths, self.tick), self._pings(), shown="progress", on_stdout=self._feed
                )
                why = (err.strip().splitlines() or [f"exit {code}"])[-1]
            except Exception as exc:  # a lost connection, above all: the next session reconnects
                why = host_error_of(exc, h.name).message
            if self._stop.done():
                return
            self.breaks.append(why)
            if len(self.breaks) > self.reopens:
                log.warning("%s: progress session broke %d times (last: %s); not opened again",
                            h.name, len(self.breaks), why)
                return
            log.info("%s: progress session ended (%s); opening it again", h.name, why)
            await asyncio.wait([self._stop], timeout=min(len(self.breaks), 3) * self.tick)


def _setup_tar(files: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _known_hosts_line(t: Target, key: str) -> str:
    where = t.address if (t.port or 22) == 22 else f"[{t.address}]:{t.port}"
    return f"{where} {key}\n"


# ---------------------------------------------------------------- the run


@dataclass
class _Round:
    hosts: dict[str, _Host]
    needs: dict[str, HostNeed]
    layout: Layout
    tree: Tree
    meters: dict[str, Meter] = field(default_factory=dict)
    recv: dict[str, asyncio.Task[tuple[int, bytes, str]]] = field(default_factory=dict)
    links: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    link_parent: dict[str, str] = field(default_factory=dict)
    progress: dict[str, _ProgressStream] = field(default_factory=dict)
    answers_seen: dict[str, int] = field(default_factory=dict)
    silent_since: dict[str, float] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    slow_since: dict[str, float] = field(default_factory=dict)
    relinking: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    commits: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    recv_seen: set[str] = field(default_factory=set)
    commit: Callable[[str], Awaitable[None]] | None = None
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    failed: dict[str, SealerError] = field(default_factory=dict)
    operator_bytes: int = 0


class Fanout:
    """One fan-out run over a Fleet. Most callers want `fanout_copy`."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        width: int = 1,
        degree: int = 1,
        sudo: bool = False,
        chunk_bytes: int = CHUNK_BYTES,
        rounds: int = 3,
        stall_timeout: float = 20.0,
        host_idle_timeout: float = 120.0,
        tick: float = 1.0,
        progress_reopens: int = 5,
        progress: ProgressCallback | None = None,
        tamper: Tamper | None = None,
        key_lifetime: timedelta = timedelta(hours=2),
    ) -> None:
        self.fleet = fleet
        self.width = width
        self.degree = degree
        self.sudo = sudo
        self.chunk_bytes = chunk_bytes
        self.rounds = rounds
        self.stall_timeout = stall_timeout
        self.host_idle_timeout = host_idle_timeout
        self.tick = tick
        self.progress_reopens = progress_reopens
        self.progress = progress
        self.tamper = tamper
        self.key_lifetime = key_lifetime
        self.run_id = secrets.token_hex(6)
        self.reroutes: list[str] = []
        self.phases: dict[str, float] = {}
        self.cleaned: set[str] = set()

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.monotonic() - start

    # -- helpers -----------------------------------------------------------------------------

    def _emit(self, rnd: _Round | None, host: str, state: str, n: int, parent: str = "") -> None:
        if self.progress is None:
            return
        m = rnd.meters.get(host) if rnd is not None else None
        total = m.total if m is not None else 0
        self.progress(
            HostProgress(
                host,
                m.received if m is not None else 0,
                total,
                m.rate if m is not None else 0.0,
                m.eta if m is not None else None,
                state,
                parent or "operator",
                n,
            )
        )

    # -- public ------------------------------------------------------------------------------

    async def copy(
        self,
        targets: Sequence[Target],
        src: str | os.PathLike[str],
        dst: str,
        known: transfer.LocalTree | None = None,
    ) -> FanoutResult:
        # The manifest hashes every file: off the event loop, and not at all when the caller has it.
        tree: transfer.LocalTree = (
            known if known is not None else await asyncio.to_thread(transfer.local_tree, src, dst)
        )
        specs = file_specs(tree, self.chunk_bytes)
        outcomes: dict[str, Outcome[TransferStats]] = {}
        started = time.monotonic()
        sent: dict[str, tuple[int, int]] = {}  # host -> (files sent, bytes sent)
        skipped: dict[str, int] = {}
        result = FanoutResult([])
        hosts: dict[str, _Host] = {}
        order = [t.name for t in targets]

        # The operator's own machine (sealer often runs on master0) gets a plain local copy,
        # alongside the fan-out to the others.
        local = [t for t in targets if not isinstance(self.fleet.connector_for(t), SSHConnector)]
        remote = [t for t in targets if t not in local]
        local_copy = asyncio.ensure_future(
            self.fleet.each(local, lambda t: self.fleet.put(t, src, dst, sudo=self.sudo))
        )

        async def open_host(i: int, t: Target) -> None:
            conn = self.fleet.connector_for(t)
            if not isinstance(conn, SSHConnector):  # pragma: no cover - split off above
                raise HostError(t.name, "not an SSH host", None)
            h = _Host(conn, t, _Paths(self.run_id, tree.root, t.login_user), i)
            await h.open()
            code, out, _ = await h.call('printf %s "$HOME"', timeout=30, shown="home")
            if code == 0 and out.strip():
                h.home = out.decode().strip()
            hosts[t.name] = h

        index = {id(t): i for i, t in enumerate(targets)}
        with self._phase("connect"):
            opened = await self.fleet.each(remote, lambda t: open_host(index[id(t)], t))
        for o in opened:
            if o.error is not None:
                outcomes[o.host] = Outcome(o.host, error=o.error)
        key = asyncssh.generate_private_key("ssh-ed25519")
        private = key.export_private_key("openssh")
        public = key.export_public_key("openssh").decode().strip()
        try:
            for n in range(1, self.rounds + 1):
                live = [hosts[t.name] for t in targets if t.name in hosts and t.name not in outcomes]
                if not live:
                    break
                result.rounds = n
                finished = await self._round(n, live, specs, tree, private, public, hosts, sent, skipped)
                result.operator_bytes += finished.operator_bytes
                for name in finished.done:
                    files, nbytes = sent.get(name, (0, 0))
                    outcomes[name] = Outcome(
                        name,
                        value=TransferStats(
                            name, files, skipped.get(name, 0), nbytes, time.monotonic() - started
                        ),
                    )
                last = n == self.rounds
                for name, err in finished.failed.items():
                    if last or not _retryable(err):
                        outcomes[name] = Outcome(name, error=err)
                for name in [h.name for h in live]:
                    if name not in outcomes and last:
                        outcomes[name] = Outcome(
                            name,
                            error=FanoutError(
                                name,
                                f"incomplete after {self.rounds} rounds",
                                "run the copy again: it resumes from what arrived",
                            ),
                        )
        finally:
            # hosts whose last round cleaned up already are not visited again
            with self._phase("clean-up"):
                await self._cleanup([h for h in hosts.values() if h.name not in self.cleaned])
        for lo in await local_copy:
            outcomes[lo.host] = lo
        result.phases = self.phases
        result.outcomes = [
            outcomes.get(name) or Outcome(name, error=FanoutError(name, "not reached")) for name in order
        ]
        result.reroutes = self.reroutes
        return result

    # -- one round ---------------------------------------------------------------------------

    async def _round(
        self,
        n: int,
        live: list[_Host],
        specs: list[FileSpec],
        tree: transfer.LocalTree,
        private: bytes,
        public: str,
        all_hosts: dict[str, _Host],
        sent: dict[str, tuple[int, int]],
        skipped: dict[str, int],
    ) -> _Round:
        flist = b"".join(os.fsencode(s.rel) + b"\0" for s in specs)
        needs: dict[str, HostNeed] = {}
        failed: dict[str, SealerError] = {}

        async def probe(h: _Host) -> None:
            out = await h.check(probe_script(h.paths), flist, sudo=self.sudo, what="reading the manifest of")
            dest, staged = parse_probe(out)
            needs[h.name] = host_need(specs, dest, staged)

        with self._phase("probe"):
            probed = await self.fleet.each([h.target for h in live], lambda t: probe(_by(live, t)))
        for h, o in zip(live, probed, strict=True):
            if o.error is not None:
                failed[h.name] = o.error
        members = [h for h in live if h.name in needs]
        for h in members:
            skipped.setdefault(h.name, needs[h.name].skipped)
        receivers = [h for h in members if needs[h.name].want]
        layout = Layout.of(union(needs[h.name] for h in receivers))
        rnd = _Round(
            {h.name: h for h in members},
            needs,
            layout,
            plan_tree([h.name for h in receivers], width=self.width, degree=self.degree),
        )
        rnd.failed.update(failed)
        expires = datetime.now(UTC) + self.key_lifetime
        sources = sorted({h.ip for h in all_hosts.values()} | {h.target.address for h in all_hosts.values()})
        known = "".join(_known_hosts_line(h.target, h.host_key) for h in all_hosts.values() if h.host_key)

        async def setup(h: _Host) -> None:
            need = needs[h.name]
            files = {
                "key": private,
                "known_hosts": known.encode(),
                "authkey": authorized_line(h.paths, public, sources, expires).encode(),
                "total": str(layout.total).encode(),
                "want": b"".join(p.name.encode() + b"\0" for p in need.want),
                "discard": b"".join(name.encode() + b"\0" for name in need.discard),
            }
            self._emit(rnd, h.name, "setup", n)
            await h.check(
                setup_script(h.paths, h.home, self.host_idle_timeout),
                _setup_tar(files),
                sudo=self.sudo,
                what="preparing the fan-out into",
            )

        with self._phase("setup"):
            outs = await self.fleet.each([h.target for h in members], lambda t: setup(_by(members, t)))
        for h, o in zip(members, outs, strict=True):
            if o.error is not None:
                rnd.failed[h.name] = o.error
                if h.name in rnd.tree.parent:
                    reroute(rnd.tree, h.name, {}, drop=True)
        active = [h for h in receivers if h.name not in rnd.failed]
        for h in active:
            rnd.meters[h.name] = Meter(layout.total)
            rnd.recv[h.name] = asyncio.ensure_future(
                h.call(receive_script(h.paths), sudo=self.sudo, shown="receiving")
            )
        for h in active:
            self._start_link(rnd, h.name, 0)
        for h in active:
            # the heartbeat: often enough for the watchdog (host_idle_timeout), no more
            beat = min(5 * self.tick, self.host_idle_timeout / 4)
            rnd.progress[h.name] = _ProgressStream(h, self.tick, self.progress_reopens, beat)
        async def commit(name: str) -> None:
            h = rnd.hosts[name]
            self._emit(rnd, h.name, "committing", n)
            need = needs[h.name]
            # the script is read whole first: `bash -s` would read a long script byte by byte
            out = await h.check(
                'eval "$(cat)"',
                commit_script(h.paths, need, tree).encode(),
                sudo=self.sudo,
                what="placing files into",
                timeout=None,
            )
            text = out.decode(errors="replace")
            bad = [ln for ln in text.splitlines() if ln.startswith(("BAD ", "MISSING "))]
            files, nbytes = sent.get(h.name, (0, 0))
            sent[h.name] = (files + len(need.files), nbytes + need.want_bytes)
            if bad:
                log.warning(
                    "%s: %d piece(s) failed verification or did not arrive: %s",
                    h.name,
                    len(bad),
                    "; ".join(bad[:5]),
                )
                raise FanoutError(
                    h.name,
                    f"{len(bad)} piece(s) failed verification or did not arrive",
                    "they are sent again in the next round",
                )
            rnd.done.add(h.name)
            self._emit(rnd, h.name, "done", n)

        # a host places its files as soon as it has received the stream, while the hosts
        # behind it in the chain are still receiving
        rnd.commit = commit
        try:
            with self._phase("transfer"):
                await self._watch(rnd, n)
        finally:
            for task in [*rnd.links.values(), *rnd.relinking.values(), *rnd.background]:
                task.cancel()
            await self._stop_progress(rnd)
            for name, rtask in rnd.recv.items():
                if not rtask.done():
                    rtask.cancel()
                    rnd.failed.setdefault(name, FanoutError(name, "receiving did not finish"))
        # also on hosts that needed nothing new: they may hold pieces staged by an earlier run,
        # and directories/links are made every time
        for h in members:
            if h.name not in rnd.failed and h.name not in rnd.commits:
                rnd.commits[h.name] = asyncio.ensure_future(commit(h.name))
        with self._phase("verify+place"):
            names = list(rnd.commits)
            placed = await asyncio.gather(*(rnd.commits[x] for x in names), return_exceptions=True)
        for name, res in zip(names, placed, strict=True):
            if isinstance(res, BaseException):
                rnd.failed[name] = host_error_of(res, name)
        with self._phase("clean-up"):
            self.cleaned |= await self._cleanup(members)
        return rnd

    def _start_link(self, rnd: _Round, child: str, offset: int) -> None:
        parent = rnd.tree.parent[child]
        rnd.link_parent[child] = parent
        rnd.links[child] = asyncio.ensure_future(self._link(rnd, parent, child, offset))

    async def _link(self, rnd: _Round, parent: str, child: str, offset: int) -> None:
        c = rnd.hosts[child]
        if parent == OPERATOR:
            feed = stream(rnd.layout, offset, self.tamper)

            async def counted() -> AsyncIterator[bytes]:
                async for chunk in feed:
                    rnd.operator_bytes += len(chunk)
                    yield chunk

            code, _, err = await c.call(feed_script(c.paths), counted(), shown="feeding")
        else:
            p = rnd.hosts[parent]
            code, _, err = await p.call(
                forward_script(p.paths, c.target, c.index, offset),
                shown=f"forwarding to {child}",
            )
        if code != 0:
            raise FanoutError(child, f"link from {parent or 'operator'} ended: {err.strip() or code}", None)

    async def _relink(self, rnd: _Round, child: str) -> None:
        """Start child's link from its (possibly new) parent at exactly the bytes it holds."""
        old = rnd.links.pop(child, None)
        old_parent = rnd.link_parent.get(child, OPERATOR)
        if old is not None:
            old.cancel()
        if old_parent != OPERATOR and old_parent in rnd.hosts and old_parent not in rnd.failed:
            # in the background: an old parent that stopped answering must not hold this up
            p = rnd.hosts[old_parent]
            rnd.background.append(asyncio.ensure_future(
                p.call(stop_forward_script(p.paths, rnd.hosts[child].index), timeout=10)))
        c = rnd.hosts[child]
        code, out, err = await c.call(detach_script(c.paths), timeout=15, shown="re-routing")
        if code != 0:
            raise FanoutError(child, f"cannot re-route it: {err.strip() or f'exit {code}'}", None)
        self._start_link(rnd, child, int(out.strip() or b"0"))

    async def _stop_progress(self, rnd: _Round) -> None:
        """End every progress session before the clean-up: closing stdin ends a host's loop;
        one that does not end soon (a host cut off) is cancelled, which closes the channel."""
        streams = list(rnd.progress.values())
        tasks = [s.task for s in streams]
        try:
            for s in streams:
                s.stop()
            if tasks:
                await asyncio.wait(tasks, timeout=max(self.tick * 2, 2.0))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _answer(self, rnd: _Round, name: str, now: float) -> int | None:
        """The host's size if it answered since the last look; -1 if it has been silent for
        longer than a poll used to wait (its session broke, or the host is unreachable);
        None while an answer is simply not due yet."""
        s = rnd.progress[name]
        if s.answers != rnd.answers_seen.get(name, 0):
            rnd.answers_seen[name] = s.answers
            return s.size
        return -1 if s.silent_for(now) > max(self.tick * 4, 3.0) else None

    async def _watch(self, rnd: _Round, n: int) -> None:
        while True:
            pending = [h for h in rnd.recv if h not in rnd.failed and not rnd.recv[h].done()]
            if not pending:
                break
            # wake at the tick, or as soon as a receiver ends (the last one ends the round)
            await asyncio.wait([rnd.recv[h] for h in pending], timeout=self.tick,
                               return_when=asyncio.FIRST_COMPLETED)
            now = time.monotonic()
            for name in pending:
                size = self._answer(rnd, name, now)
                if size is None:
                    continue
                if size >= 0:
                    rnd.silent_since.pop(name, None)
                    rnd.meters[name].sample(now, size)
                else:
                    rnd.silent_since.setdefault(name, now)
                    rnd.meters[name].sample(now, rnd.meters[name].received)
                self._emit(rnd, name, "receiving", n, rnd.tree.parent.get(name, OPERATOR))
            # a receiver that ended with an error (connection lost, disk full) is a failed host
            for name in list(rnd.recv):
                recv = rnd.recv[name]
                if name in rnd.recv_seen or name in rnd.failed:
                    continue
                if recv.done() and not recv.cancelled():
                    rnd.recv_seen.add(name)
                    exc = recv.exception()
                    if exc is not None:
                        await self._fail(rnd, name, host_error_of(exc, name))
                    else:
                        code, _, err = recv.result()
                        if code == 0:
                            rnd.meters[name].sample(now, rnd.layout.total)
                            self._emit(rnd, name, "received", n, rnd.tree.parent.get(name, OPERATOR))
                            if rnd.commit is not None and name not in rnd.commits:
                                rnd.commits[name] = asyncio.ensure_future(rnd.commit(name))
                        else:
                            await self._fail(
                                rnd,
                                name,
                                transfer.transfer_failure(
                                    name, "receiving into", err or f"exit {code}", rnd.hosts[name].paths.root
                                ),
                            )
            for name in list(rnd.recv):
                if name in rnd.failed or rnd.recv[name].done():
                    continue
                busy = rnd.relinking.get(name)
                if busy is not None and not busy.done():
                    continue
                m = rnd.meters[name]
                parent = rnd.tree.parent.get(name, OPERATOR)
                ahead = parent == OPERATOR or rnd.meters[parent].received > m.received
                unreachable = now - rnd.silent_since.get(name, now)
                if unreachable > self.stall_timeout:
                    stream = rnd.progress[name]
                    why = f" (its progress session: {stream.breaks[-1]})" if stream.breaks else ""
                    await self._fail(
                        rnd,
                        name,
                        FanoutError(
                            name,
                            f"no answer for {stream.silent_for(now):.0f}s during the fan-out{why}",
                            "check the host and its network; the others were routed around it",
                        ),
                    )
                elif name in rnd.silent_since:
                    continue  # not answering: the branch above decides once it lasts
                elif ahead and m.stalled_for(now) > self.stall_timeout:
                    # the host answers but its link carries nothing: restart it, then feed the host
                    # from the operator if that did not help
                    tries = rnd.restarts.get(name, 0) + 1
                    rnd.restarts[name] = tries
                    if tries > 1 and parent != OPERATOR:
                        rnd.tree.parent[name] = OPERATOR
                    self.reroutes.append(
                        f"{name}: link from {parent or 'operator'} stalled, restarted"
                        f" from {rnd.tree.parent[name] or 'operator'}"
                    )
                    m.stalled_since = now
                    self._spawn_relink(rnd, name)
                else:
                    link = rnd.links.get(name)
                    broken = link is not None and link.done() and (link.cancelled() or link.exception())
                    if broken and rnd.link_parent.get(name) not in rnd.failed:
                        # a link ended early (e.g. its ssh gave up): start it again from where it is
                        tries = rnd.restarts.get(name, 0) + 1
                        rnd.restarts[name] = tries
                        if tries > 2:
                            rnd.tree.parent[name] = OPERATOR
                        self._spawn_relink(rnd, name, delay=min(tries, 3))
            flagged = set(slow_hosts(rnd.tree, rnd.meters))
            for name in list(rnd.slow_since):
                if name not in flagged:
                    del rnd.slow_since[name]
            for name in flagged:
                rnd.slow_since.setdefault(name, now)
            # only a host that stays slow is routed around (a moment of CPU contention is not)
            for slow in [h for h, t0 in rnd.slow_since.items() if now - t0 >= self.stall_timeout / 2]:
                del rnd.slow_since[slow]
                moved = reroute(rnd.tree, slow, {h: m.received for h, m in rnd.meters.items()}, drop=False)
                self.reroutes.append(
                    f"{slow}: slow, its subtree now fed by {rnd.tree.parent[slow] or 'operator'}"
                )
                for _, child in moved:
                    self._spawn_relink(rnd, child)

    def _spawn_relink(self, rnd: _Round, child: str, delay: float = 0.0) -> None:
        # The watch loop never waits on a host: it keeps the hosts' heartbeat going while
        # links are re-made.
        running = rnd.relinking.get(child)
        if child in rnd.failed or (running is not None and not running.done()):
            return
        rnd.relinking[child] = asyncio.ensure_future(self._relink_or_fail(rnd, child, delay))

    async def _relink_or_fail(self, rnd: _Round, child: str, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
        if child in rnd.failed:
            return
        try:
            await self._relink(rnd, child)
        except SealerError as err:
            await self._fail(rnd, child, err)

    async def _fail(self, rnd: _Round, name: str, err: SealerError) -> None:
        rnd.failed[name] = err
        task = rnd.recv.get(name)
        if task is not None and not task.done():
            task.cancel()
        link = rnd.links.pop(name, None)
        if link is not None:
            link.cancel()
        stream = rnd.progress.get(name)
        if stream is not None:
            # its heartbeat stops with it, so a host that is only cut off cleans up by itself
            stream.stop()
            stream.task.cancel()
        self._emit(rnd, name, "failed", 0)
        if name not in rnd.tree.parent:
            return
        moved = reroute(rnd.tree, name, {h: m.received for h, m in rnd.meters.items()}, drop=True)
        if moved:
            self.reroutes.append(f"{name}: failed ({err.message}); chain re-formed around it")
        for _, child in moved:
            self._spawn_relink(rnd, child)

    async def _cleanup(self, hosts: list[_Host]) -> set[str]:
        """Clean up on hosts; returns the names where it worked."""
        async def one(h: _Host) -> None:
            code, _, err = await h.call(
                _cleanup_body(h.paths, h.home), sudo=self.sudo, timeout=30, shown="cleaning up"
            )
            if code != 0:
                raise FanoutError(h.name, f"clean-up failed: {err.strip()}", None)

        results = await asyncio.gather(*(one(h) for h in hosts), return_exceptions=True)
        for h, r in zip(hosts, results, strict=True):
            if isinstance(r, BaseException):
                log.warning(
                    "%s: fan-out clean-up failed (%s); its watchdog removes the run's key and "
                    "files within %.0fs of losing the operator",
                    h.name,
                    r,
                    self.host_idle_timeout,
                )
        return {h.name for h, r in zip(hosts, results, strict=True) if not isinstance(r, BaseException)}


def _by(hosts: Sequence[_Host], t: Target) -> _Host:
    for h in hosts:
        if h.target is t:
            return h
    raise KeyError(t.name)


def _retryable(err: SealerError) -> bool:
    return not isinstance(err, HostError) or isinstance(err, FanoutError | TransferError)


async def fanout_copy(
    fleet: Fleet,
    hosts: Sequence[Target],
    src: str | os.PathLike[str],
    dst: str,
    *,
    sudo: bool = False,
    width: int = 1,
    degree: int = 1,
    progress: ProgressCallback | None = None,
    tree: transfer.LocalTree | None = None,
    **options: Any,
) -> FanoutResult:
    """Copy src to dst on every host, host to host (see module doc). One Outcome per host, in
    the hosts' order; a host that fails does not stop the others. `tree`: src's manifest
    (`transfer.local_tree(src, dst)`) when the caller already computed it."""
    run = Fanout(fleet, sudo=sudo, width=width, degree=degree, progress=progress, **options)
    return await run.copy(hosts, src, dst, tree)
