"""Command-line parsing with the rules of Go's `flag` package as urfave/cli v1 uses it (k3s, k0s-like).

What the stand-ins must reproduce: `-f`/`--f` are the same, `--f=v` or `--f v`, bool flags take no
separate value, parsing stops at the first non-flag argument, unknown flags fail with
`flag provided but not defined: -name`, and flags may come from environment variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


class UsageError(Exception):
    """A command-line error, with the message Go's flag package prints."""


@dataclass
class Flag:
    name: str
    kind: str = "string"  # string | bool | slice | int
    aliases: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    default: Any = None
    hidden: bool = False
    split: bool = False  # k3s splits some slice flags on commas itself (util.SplitStringSlice)

    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass
class FlagSet:
    flags: list[Flag] = field(default_factory=list)

    def lookup(self) -> dict[str, Flag]:
        return {n: f for f in self.flags for n in f.names()}

    def parse(
        self, args: list[str], environ: dict[str, str] | None = None
    ) -> tuple[dict[str, Any], list[str]]:
        env = os.environ if environ is None else environ
        table = self.lookup()
        values: dict[str, Any] = {}
        seen: set[str] = set()
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                i += 1
                break
            if not arg.startswith("-") or arg == "-":
                break
            body = arg[2:] if arg.startswith("--") else arg[1:]
            if not body or body.startswith("-") or body.startswith("="):
                raise UsageError(f"bad flag syntax: {arg}")
            name, has_value, value = body.partition("=")
            flag = table.get(name)
            if flag is None:
                if name in ("h", "help"):
                    raise UsageError("help requested")
                raise UsageError(f"flag provided but not defined: -{name}")
            if flag.kind == "bool":
                if has_value:
                    lowered = value.lower()
                    if lowered in ("1", "t", "true"):
                        parsed: Any = True
                    elif lowered in ("0", "f", "false"):
                        parsed = False
                    else:
                        raise UsageError(f'invalid boolean value "{value}" for -{name}: parse error')
                else:
                    parsed = True
            else:
                if not has_value:
                    if i + 1 >= len(args):
                        raise UsageError(f"flag needs an argument: -{name}")
                    i += 1
                    value = args[i]
                if flag.kind == "int":
                    try:
                        parsed = int(value)
                    except ValueError:
                        raise UsageError(f'invalid value "{value}" for flag -{name}: parse error')
                else:
                    parsed = value
            if flag.kind == "slice":
                items = [v for v in str(parsed).split(",") if v] if flag.split else [str(parsed)]
                values.setdefault(flag.name, []).extend(items)
            else:
                values[flag.name] = parsed
            seen.add(flag.name)
            i += 1
        for flag in self.flags:
            if flag.name in seen:
                continue
            from_env = next((env[e] for e in flag.env if env.get(e)), None)
            if from_env is not None:
                if flag.kind == "bool":
                    values[flag.name] = from_env.lower() in ("1", "t", "true")
                elif flag.kind == "slice":
                    values[flag.name] = [v for v in from_env.split(",") if v] if flag.split else [from_env]
                elif flag.kind == "int":
                    values[flag.name] = int(from_env)
                else:
                    values[flag.name] = from_env
            else:
                default = flag.default
                if default is None:
                    default = {"bool": False, "slice": [], "int": 0, "string": ""}[flag.kind]
                values[flag.name] = list(default) if isinstance(default, list) else default
        return values, args[i:]


def parse_pflags(flags: list[Flag], args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """spf13/pflag (cobra) rules, as k0s uses them: `--long[=v]`, `-s[v]`, combined bool shorthands,
    flags interspersed with arguments, `unknown flag: --x`, `unknown shorthand flag: 'x' in -xyz`.
    Flag.aliases holds the one-letter shorthand. Kinds: string, bool, int, slice (comma-split),
    array (no split), map (`k=v,k2=v2`)."""
    longs = {f.name: f for f in flags}
    shorts = {a: f for f in flags for a in f.aliases if len(a) == 1}
    values: dict[str, Any] = {}
    positional: list[str] = []

    def put(flag: Flag, raw: str, shown: str) -> None:
        if flag.kind == "bool":
            low = raw.lower()
            if low not in ("1", "t", "true", "0", "f", "false"):
                raise UsageError(
                    f'invalid argument "{raw}" for "{shown}" flag: strconv.ParseBool: parsing '
                    f'"{raw}": invalid syntax'
                )
            values[flag.name] = low in ("1", "t", "true")
        elif flag.kind == "int":
            try:
                values[flag.name] = int(raw)
            except ValueError:
                raise UsageError(
                    f'invalid argument "{raw}" for "{shown}" flag: strconv.ParseInt: parsing '
                    f'"{raw}": invalid syntax'
                )
        elif flag.kind == "slice":
            values.setdefault(flag.name, []).extend(v for v in raw.split(",") if v)
        elif flag.kind == "array":
            values.setdefault(flag.name, []).append(raw)
        elif flag.kind == "map":
            for pair in (p for p in raw.split(",") if p):
                k, sep, v = pair.partition("=")
                if not sep:
                    raise UsageError(
                        f'invalid argument "{raw}" for "{shown}" flag: {pair} must be formatted as key=value'
                    )
                values.setdefault(flag.name, {})[k] = v
        else:
            values[flag.name] = raw

    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            positional.extend(args[i + 1 :])
            break
        if a.startswith("--"):
            name, eq, val = a[2:].partition("=")
            flag = longs.get(name)
            if flag is None:
                raise UsageError(f"unknown flag: --{name}")
            if flag.kind == "bool" and not eq:
                val = "true"
            elif not eq:
                if i + 1 >= len(args):
                    raise UsageError(f"flag needs an argument: --{name}")
                i += 1
                val = args[i]
            put(flag, val, f"--{name}")
        elif a.startswith("-") and a != "-":
            body = a[1:]
            j = 0
            while j < len(body):
                c = body[j]
                flag = shorts.get(c)
                if flag is None:
                    raise UsageError(f"unknown shorthand flag: '{c}' in -{body}")
                if flag.kind == "bool":
                    if body[j + 1 : j + 2] == "=":
                        put(flag, body[j + 2 :], f"-{c}")
                        break
                    put(flag, "true", f"-{c}")
                    j += 1
                    continue
                rest = body[j + 1 :].removeprefix("=")
                if not rest:
                    if i + 1 >= len(args):
                        raise UsageError(f"flag needs an argument: '{c}' in -{body}")
                    i += 1
                    rest = args[i]
                put(flag, rest, f"-{c}")
                break
        else:
            positional.append(a)
        i += 1
    for flag in flags:
        if flag.name not in values:
            default = flag.default
            if default is None:
                default = {"bool": False, "slice": [], "array": [], "int": 0, "string": "", "map": {}}[
                    flag.kind
                ]
            values[flag.name] = type(default)(default) if isinstance(default, (list, dict)) else default
    return values, positional
