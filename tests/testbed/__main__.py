"""Shell entry point of the test bed: `python -m tests.testbed prepare | up N | down | status`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import rootfs
from .client import ssh_argv
from .common import TestbedError
from .lab import Testbed, TestHost, lab_owner, list_labs, require_root_and_tools


def _down_all(fast: bool, force: bool) -> int:
    rc = 0
    for lab in list_labs():
        owner = lab_owner(lab)
        if owner is not None and not force:
            # On a shared machine another engineer's pytest may be using it; it tears its labs down.
            print(f"testbed: lab {lab} skipped: in use by live process {owner} (--force to take it down)")
            continue
        try:
            t0 = time.monotonic()
            Testbed.load(lab).down(fast=fast)
            print(f"testbed: lab {lab} down in {time.monotonic() - t0:.1f} s")
        except TestbedError as e:
            print(f"testbed: lab {lab}: {e}", file=sys.stderr)
            rc = 1
    return rc


def _find_host(lab: str | None, ref: str) -> tuple[Testbed, TestHost]:
    """A host by name or IP in any lab, or by index in `lab` (default tb)."""
    for name in [lab] if lab else list_labs():
        tb = Testbed.load(name)
        for h in tb.hosts:
            if ref in (h.name, h.ip) or (ref == str(h.index) and (lab or "tb") == name):
                return tb, h
    where = f"lab {lab}" if lab else "any lab"
    raise TestbedError(f"no host {ref!r} in {where}", "python -m tests.testbed status")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.testbed", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="build (or adopt) the cached Debian rootfs")
    p.add_argument(
        "--adopt", type=Path, metavar="DIR", help="take over a rootfs debootstrapped with this recipe"
    )
    p.add_argument("--prune", action="store_true", help="delete cached rootfs trees of older recipes")
    p = sub.add_parser("up", help="start hosts 1..N of a lab (adds what is missing)")
    p.add_argument("n", type=int)
    p.add_argument("--lab", default="tb")
    p.add_argument("--nested", action="store_true", help="hosts can run containerd/runc themselves")
    p.add_argument("--light", action="store_true", help="no systemd: sshd as PID 1 (for 30+ hosts)")
    p = sub.add_parser("down", help="stop a lab and remove everything it made")
    p.add_argument("--lab", default="tb")
    p.add_argument("--all", action="store_true", help="every lab recorded under the work dir")
    p.add_argument("--force", action="store_true", help="with --all: also labs whose owner process lives")
    p.add_argument("--fast", action="store_true", help="kill hosts' PID 1 instead of an orderly poweroff")
    p = sub.add_parser("ssh", help="ssh into a host as root (host key pinned), optionally run CMD")
    p.add_argument("--lab", help="needed only to name a host by index")
    p.add_argument("host", help="host name (tbh2), IP, or index (2, with --lab; default lab tb)")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("fault", help="stop|kill|start a host, cut|restore its link, shape it (RATE or off)")
    p.add_argument("action", choices=["stop", "kill", "start", "cut", "restore", "shape"])
    p.add_argument("host", help="host name (tbh2), IP, or index (2, with --lab; default lab tb)")
    p.add_argument("rate", nargs="?", default="off", help="for shape: e.g. 50mbit, or off")
    p.add_argument("--lab", help="needed only to name a host by index")
    p = sub.add_parser("status", help="labs, hosts and how to reach them")
    p.add_argument("--lab")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    args = ap.parse_args(argv)

    try:
        if args.cmd == "prepare":
            if args.adopt:
                print(f"testbed: rootfs {rootfs.adopt(args.adopt)}")
            print(f"testbed: rootfs {rootfs.prepare()}")
            if args.prune:
                for old in rootfs.prune():
                    print(f"testbed: removed {old}")
            return 0
        if args.cmd in ("up", "down") and (why := require_root_and_tools(light=getattr(args, "light", True))):
            raise TestbedError(f"test bed unavailable: {why}")
        if args.cmd == "up":
            tb = Testbed(args.lab, nested=args.nested, light=args.light)
            t0 = time.monotonic()
            hosts = tb.up(args.n)
            print(
                f"testbed: {len(hosts)} {tb.variant} hosts up in {time.monotonic() - t0:.1f} s "
                f"(lab {tb.name}, {tb.net.subnet})"
            )
            for h in hosts:
                print(
                    f"  {h.name:8} {h.ip:15} ssh -i {h.root_key} -o UserKnownHostsFile={tb.dir}/known_hosts "
                    f"root@{h.ip}"
                )
            return 0
        if args.cmd == "down":
            if args.all:
                return _down_all(args.fast, args.force)
            if args.lab not in list_labs():
                print(f"testbed: lab {args.lab} is not up")
                return 0
            t0 = time.monotonic()
            Testbed.load(args.lab).down(fast=args.fast)
            print(f"testbed: lab {args.lab} down in {time.monotonic() - t0:.1f} s")
            return 0
        if args.cmd in ("ssh", "fault"):
            tb, h = _find_host(args.lab, args.host)
            if args.cmd == "ssh":
                argv = [*ssh_argv(h, tb.dir / "known_hosts"), *args.command]
                argv[argv.index("BatchMode=yes")] = "BatchMode=no"  # allow a tty session
                os.execvp(argv[0], argv)
            if args.action in ("stop", "kill"):
                tb.stop_host(h, hard=args.action == "kill")
            elif args.action == "start":
                tb.start_host(h)
            elif args.action in ("cut", "restore"):
                tb.net.set_link(h.index, up=args.action == "restore")
            else:
                tb.shape(h, None if args.rate == "off" else args.rate)
            print(f"testbed: {args.action} {h.name}: done")
            return 0
        labs = [args.lab] if args.lab else list_labs()
        states = [Testbed.load(lab).status() for lab in labs]
        if args.output == "json":
            print(
                json.dumps(
                    {"rootfs": str(rootfs.cached_path()), "rootfs_ready": rootfs.is_ready(), "labs": states},
                    indent=1,
                )
            )
            return 0
        print(f"rootfs: {rootfs.cached_path()} ({'ready' if rootfs.is_ready() else 'not built'})")
        if not states:
            print("no labs")
        for st in states:
            print(f"lab {st['lab']}: {st['variant']}, {st['subnet']}, operator {st['operator_ip']}")
            for h in st["hosts"]:
                print(f"  {h['name']:8} {h['ip']:15} {'running' if h['running'] else 'stopped':8} {h['ssh']}")
        return 0
    except TestbedError as e:
        print(f"testbed: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `... | head`: not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except KeyboardInterrupt:
        print("testbed: interrupted; `python -m tests.testbed status` shows what is up", file=sys.stderr)
        sys.exit(130)
