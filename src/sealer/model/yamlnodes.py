"""Safe YAML reading with positions: compose (never construct) untrusted text, then walk nodes.

Composition is linear in the input size; aliases are only followed while walking, against a
visit budget, so an alias bomb is refused instead of expanded. Every read reports a `Problem`
located at the node's line and column.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from sealer.errors import Problem

# A Clusterfile of 5,000 hosts is well under a megabyte; anything past this is not a Clusterfile.
MAX_BYTES = 8 * 1024 * 1024
# Node visits while walking (aliases count each time they are followed).
MAX_VISITS = 1_000_000

# libyaml composes about 3x faster (a 5,000-host file) and caps nesting depth itself; both keep marks.
SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SAFE_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

_BOOL_WORDS = {"yes", "no", "on", "off", "true", "false", "y", "n"}
STR_TAG = "tag:yaml.org,2002:str"
NULL_TAG = "tag:yaml.org,2002:null"
MERGE_TAG = "tag:yaml.org,2002:merge"


class BudgetExceeded(Exception):
    """Walking would expand more nodes than MAX_VISITS (an alias bomb or a huge file)."""


# Values under these path words may be secrets: say what type they are, never what they are.
_SENSITIVE = ("passw", "ssh", "bastion", "pk", "token", "secret", "registry", "username", "key")


def _sensitive(path: str) -> bool:
    lowered = path.lower()
    return any(word in lowered for word in _SENSITIVE)


def describe(node: yaml.Node, path: str = "") -> str:
    """What a node is, for messages; scalar values are shown unless `path` may hold a secret."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag.rsplit(":", 1)[-1]
    if tag == "null":
        return "nothing (null)"
    if _sensitive(path):
        return "a string" if tag == "str" else f"a {tag}"
    if tag == "str":
        return f"the string {node.value!r}"
    return f"the {tag} {node.value}"


@dataclass
class Reader:
    """Walks composed nodes of one file, collecting problems instead of raising."""

    source: str
    problems: list[Problem] = field(default_factory=list)
    text: str = ""  # the decoded source, to see what the composer hides (anchors on scalars)
    visits: int = 0
    _seen: set[Problem] = field(default_factory=set)
    _open: set[int] = field(default_factory=set)  # nodes being walked by `plain`, to detect cycles
    _constructor: yaml.constructor.SafeConstructor = field(default_factory=yaml.constructor.SafeConstructor)

    # -- reporting -------------------------------------------------------------------------
    def report(
        self,
        node: yaml.Node | None,
        path: str,
        message: str,
        hint: str | None = None,
        severity: str = "error",
    ) -> None:
        line = column = None
        if node is not None and node.start_mark is not None:
            line, column = node.start_mark.line + 1, node.start_mark.column + 1
        problem = Problem(
            _printable(message),
            file=self.source,
            line=line,
            column=column,
            path=_printable(path) or None,
            hint=_printable(hint) if hint is not None else None,
            severity=severity,
        )
        # Documents kept verbatim are walked twice (to keep and to check); report each thing once.
        if problem not in self._seen:
            self._seen.add(problem)
            self.problems.append(problem)

    def warn(self, node: yaml.Node | None, path: str, message: str, hint: str | None = None) -> None:
        self.report(node, path, message, hint, severity="warning")

    def tick(self, n: int = 1) -> None:
        self.visits += n
        if self.visits > MAX_VISITS:
            raise BudgetExceeded

    # -- typed reads -----------------------------------------------------------------------
    def mapping(
        self,
        node: yaml.Node | None,
        path: str,
        known: Sequence[str] | None = None,
        *,
        ignored: Mapping[str, str | None] | None = None,
    ) -> dict[str, yaml.Node] | None:
        """Keys (as written) to value nodes. Unknown keys: did-you-mean error when close to a known
        one, else a warning (Go sealer ignores them). `ignored` keys are accepted; a message, if
        given, is reported as a warning."""
        if node is None or is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.report(node, path, f"expected a mapping, got {describe(node, path)}")
            return None
        result: dict[str, yaml.Node] = {}
        key_nodes: dict[str, yaml.Node] = {}
        for key_node, value_node in self._pairs(node, path):
            if not isinstance(key_node, yaml.ScalarNode):
                self.report(
                    key_node,
                    path,
                    f"a key must be a plain word, got {describe(key_node)}",
                    "quote the key; an unrendered Go template ({{ ... }}) must be rendered or quoted first",
                )
                continue
            key = key_node.value
            sub = f"{path}.{key}" if path else key
            if key in key_nodes:
                first = key_nodes[key].start_mark
                self.report(
                    key_node,
                    sub,
                    f"duplicate key {key!r}",
                    f"it is already set at line {first.line + 1}; remove one" if first else "remove one",
                )
                continue
            key_nodes[key] = key_node
            if key.startswith("//"):
                self.report(key_node, sub, "'//' does not start a comment in YAML", "use '#' for comments")
                continue
            if known is not None and key not in known:
                if ignored is not None and key in ignored:
                    note = ignored[key]
                    if note:
                        self.warn(key_node, sub, note)
                    continue
                guess = did_you_mean(key, known)
                if guess:
                    self.report(key_node, sub, f"unknown field {key!r}", f"did you mean {guess!r}?")
                else:
                    expected = ", ".join(known)
                    self.warn(key_node, sub, f"unknown field {key!r} is ignored", f"fields here: {expected}")
                continue
            result[key] = value_node
        return result

    def _pairs(self, node: yaml.MappingNode, path: str) -> Iterator[tuple[yaml.Node, yaml.Node]]:
        """Pairs with YAML merge keys (`<<: *anchor`) applied; explicit keys come first and win."""
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            self.tick()
            if key_node.tag == MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in sources:
                    self.tick()
                    if isinstance(src, yaml.MappingNode):
                        merged.extend(self._pairs(src, path))
                    else:
                        self.report(src, path, f"'<<' merges a mapping, got {describe(src)}")
                continue
            yield key_node, value_node
        explicit = {k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
        seen: set[str] = set()
        for key_node, value_node in merged:
            if isinstance(key_node, yaml.ScalarNode) and (
                key_node.value in explicit or key_node.value in seen
            ):
                continue
            if isinstance(key_node, yaml.ScalarNode):
                seen.add(key_node.value)
            yield key_node, value_node

    def string(
        self, node: yaml.Node | None, path: str, *, required: bool = False, parent: yaml.Node | None = None
    ) -> str | None:
        """Any scalar as the text written (Go sealer converts `port: 22`, `passwd: 123` to strings)."""
        if node is not None and self._anchored(node):
            # `passwd: &Secret1` is an anchor named Secret1 on an empty value, not a password.
            if is_null(node):
                self.report(
                    node,
                    path,
                    "the value is only a YAML anchor ('&...'), so it is empty",
                    "quote a value that starts with '&', e.g. \"&value\"",
                )
                return None
            self.warn(
                node,
                path,
                "the value starts with a YAML anchor ('&...'), which is not part of the value",
                "quote the whole value if the '&' belongs to it",
            )
        if isinstance(node, yaml.ScalarNode) and node.tag.startswith("!"):
            # `passwd: !Secret` is a YAML tag named Secret on an empty value, not a password.
            if node.value == "":
                self.report(
                    node,
                    path,
                    "the value is only a YAML tag ('!...'), so it is empty",
                    "quote a value that starts with '!', e.g. \"!value\"",
                )
                return None
            self.warn(
                node,
                path,
                "the value starts with a YAML tag ('!...'), which is not part of the value",
                "quote the whole value if the '!' belongs to it",
            )
        if node is not None and is_null(node) and _sensitive(path) and self._comment_follows(node):
            self.warn(
                node,
                path,
                "the value is empty: ' #' starts a YAML comment",
                "quote a value that contains ' #', e.g. \"pass #word\"",
            )
        if node is None or is_null(node):
            if required:
                self.report(node or parent, path, "is required" if node is None else "must not be empty")
            return None
        if not isinstance(node, yaml.ScalarNode):
            self.report(node, path, f"expected a string, got {describe(node, path)}")
            return None
        self.tick()
        if required and node.value.strip() == "":
            self.report(node, path, "must not be empty")
            return None
        return str(node.value)

    def _anchored(self, node: yaml.Node) -> bool:
        mark = node.start_mark
        if not self.text or mark is None or not isinstance(node, yaml.ScalarNode):
            return False
        return 0 <= mark.index < len(self.text) and self.text[mark.index] == "&"

    def _comment_follows(self, node: yaml.Node) -> bool:
        mark = node.start_mark
        if not self.text or mark is None:
            return False
        line_end = self.text.find("\n", mark.index)
        rest = self.text[mark.index : line_end if line_end >= 0 else len(self.text)]
        return rest.lstrip(" ").startswith("#")

    def integer(self, node: yaml.Node | None, path: str, *, low: int, high: int) -> int | None:
        """An integer; a quoted number is accepted (ports are strings in Go sealer's ssh block)."""
        if node is None or is_null(node):
            return None
        if not isinstance(node, yaml.ScalarNode):
            self.report(node, path, f"expected a number, got {describe(node, path)}")
            return None
        self.tick()
        text = node.value.strip()
        if not text.isdigit() or not text.isascii():
            self.report(node, path, f"expected a number from {low} to {high}, got {describe(node, path)}")
            return None
        value = int(text)
        if not low <= value <= high:
            self.report(node, path, f"{value} is out of range", f"use a number from {low} to {high}")
            return None
        return value

    def boolean(self, node: yaml.Node | None, path: str) -> bool | None:
        if node is None or is_null(node):
            return None
        if isinstance(node, yaml.ScalarNode) and node.value.lower() in _BOOL_WORDS:
            self.tick()
            return node.value.lower() in {"yes", "on", "true", "y"}
        self.report(node, path, f"expected true or false, got {describe(node, path)}")
        return None

    def items(
        self, node: yaml.Node | None, path: str, *, what: str = "a list"
    ) -> list[tuple[str, yaml.Node]]:
        """(path, node) of every element of a list; a lone scalar is reported with a hint."""
        if node is None or is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            hint = None
            if isinstance(node, yaml.ScalarNode):
                hint = (
                    "write it as a list: [value]"
                    if _sensitive(path)
                    else f"write it as a list: [{node.value}]"
                )
            elif isinstance(node, yaml.MappingNode):
                hint = "start each entry with '- '"
            self.report(node, path, f"expected {what}, got {describe(node, path)}", hint)
            return []
        result = []
        for i, item in enumerate(node.value):
            self.tick()
            result.append((f"{path}[{i}]", item))
        return result

    def strings(self, node: yaml.Node | None, path: str) -> list[tuple[str, str, yaml.Node]]:
        """(path, text, node) of every string in a list; non-scalars reported."""
        result = []
        for sub, item in self.items(node, path, what="a list of strings"):
            text = self.string(item, sub)
            if text is not None:
                result.append((sub, text, item))
        return result

    # -- verbatim documents ----------------------------------------------------------------
    def plain(self, node: yaml.Node, path: str) -> Any:
        """Plain Python data for documents kept verbatim; keys are kept as written (strings)."""
        self.tick()
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if id(node) in self._open:
            self.report(
                node,
                path,
                "a YAML alias refers to a node that contains it (a cycle)",
                "write the value out instead of using an alias",
            )
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.plain(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
            mapping = self.mapping(node, path)
            if mapping is None:
                return {}
            return {k: self.plain(v, f"{path}.{k}" if path else k) for k, v in mapping.items()}
        finally:
            self._open.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag.rsplit(":", 1)[-1]
        if tag in {"null", "bool", "int", "float"}:
            try:
                return self._constructor.construct_object(node)
            except (yaml.YAMLError, ValueError, OverflowError):
                return node.value
        return str(node.value)


def _printable(text: str) -> str:
    """Lone surrogates (from YAML "\\ud800" escapes) cannot be printed or written as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG


def did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    if close:
        return close[0]
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.75)
    return lowered[close[0]] if close else None


def yaml_error_problem(exc: yaml.YAMLError, source: str, text: str) -> Problem:
    """A located Problem for a YAML syntax error, with a hint for the mistakes people make."""
    line = column = None
    message = str(exc)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            line, column = mark.line + 1, mark.column + 1
        # Undefined-alias messages quote the alias name, which may be a password that began with '*'.
        parts = [re.sub(r"alias '.*'", "alias", p) for p in (exc.context, exc.problem) if p]
        message = "YAML: " + ", ".join(parts) if parts else "YAML syntax error"
    elif isinstance(exc, yaml.reader.ReaderError):
        before = text[: exc.position]
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        message = (
            f"YAML: unacceptable character #x{exc.character:04x}"
            if isinstance(exc.character, int)
            else "YAML: unreadable text"
        )
    hint = _yaml_hint(message, text, line)
    return Problem(message, file=source, line=line, column=column, hint=hint)


def _yaml_hint(message: str, text: str, line: int | None) -> str:
    lines = text.splitlines()
    src = lines[line - 1] if line is not None and 0 < line <= len(lines) else ""
    stripped = src.strip()
    if "nesting depth" in message:
        return "the YAML is nested too deeply to be a Clusterfile; check for runaway brackets or indentation"
    if "unacceptable character" in message or "control characters" in message:
        return "this is not a text file; a Clusterfile is UTF-8 YAML"
    if "'\\t'" in message or "\t" in src[: len(src) - len(src.lstrip())]:
        return "YAML indents with spaces, not tabs"
    if stripped.startswith("//") or (
        line and any(ln.strip().startswith("//") for ln in lines[max(0, line - 3) : line])
    ):
        return "'//' does not start a comment in YAML; use '#'"
    if "{{" in src:
        return "this looks like an unrendered Go template ({{ ... }}); render it or quote the value"
    if "alias" in message or "alphabetic or numeric character" in message:
        return (
            "a value starting with '*' or '&' is an alias/anchor in YAML; quote it (e.g. passwd: \"*****\")"
        )
    if "mapping values are not allowed" in message:
        return "a value containing ': ' must be quoted; otherwise check the indentation of this line"
    if "expected <block end>" in message or "did not find expected" in message:
        return "check the indentation and that every '- ' list item lines up"
    return "check the YAML syntax at this position"
