"""Dockerfile-style lexing for Kubefiles: logical lines, parser directives and shell-word expansion.

Mirrors the Dockerfile parser sealer forked (moby buildkit's `parser` and `shell` packages) closely
enough that a Kubefile splits into the same instructions and words; the Kubefile parser builds on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

_CONTINUATION_CACHE: dict[str, re.Pattern[str]] = {}
_ESCAPE_DIRECTIVE = re.compile(r"^#[ \t]*escape[ \t]*=[ \t]*(?P<ch>.).*$")
_OTHER_DIRECTIVE = re.compile(r"^#[ \t]*(syntax|platform|check)[ \t]*=.*$")
_NAME_START = re.compile(r"[A-Za-z_]")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_]")


class LexError(Exception):
    """A lexing problem at a known 1-based line of the Kubefile (turned into a Problem by the parser)."""

    def __init__(self, message: str, line: int | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.hint = hint


@dataclass(frozen=True)
class LogicalLine:
    """One instruction after joining continuation lines; `start`/`end` are 1-based physical lines."""

    text: str
    start: int
    end: int


def _continuation(escape: str) -> re.Pattern[str]:
    pattern = _CONTINUATION_CACHE.get(escape)
    if pattern is None:
        pattern = re.compile(re.escape(escape) + r"[ \t]*$")
        _CONTINUATION_CACHE[escape] = pattern
    return pattern


def split_lines(text: str) -> tuple[list[LogicalLine], str]:
    """Split Kubefile text into logical lines; returns them and the escape character in force.

    Rules as Docker's: a UTF-8 BOM is dropped, `# escape=` may appear only before anything else,
    lines whose first non-blank character is `#` are comments (trailing `#` is NOT a comment),
    a line ending in the escape character continues on the next one, and comment or blank lines
    inside a continuation are skipped.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    physical = text.splitlines()
    escape = "\\"
    directives_done = False
    escape_seen = False
    out: list[LogicalLine] = []
    i = 0
    while i < len(physical):
        raw = physical[i]
        lineno = i + 1
        i += 1
        stripped = raw.lstrip()
        if not directives_done:
            match = _ESCAPE_DIRECTIVE.match(stripped.lower()) if stripped.startswith("#") else None
            if match:
                if escape_seen:
                    raise LexError("only one `# escape=` directive is allowed", lineno)
                # The directive's character is case-sensitive, so read it from the original text.
                ch = _ESCAPE_DIRECTIVE.match(stripped)
                value = ch.group("ch") if ch else match.group("ch")
                if value not in ("\\", "`"):
                    raise LexError(
                        f"invalid escape character {value!r}",
                        lineno,
                        "the escape directive accepts only \\ (default) or ` (backtick)",
                    )
                escape = value
                escape_seen = True
                continue
            if stripped.startswith("#") and _OTHER_DIRECTIVE.match(stripped.lower()):
                continue
            directives_done = True
        if stripped.startswith("#") or stripped == "":
            continue
        cont = _continuation(escape)
        line = stripped
        end = lineno
        if cont.search(line):
            line = cont.sub("", line)
            while i < len(physical):
                nxt = physical[i]
                end = i + 1
                i += 1
                nstripped = nxt.lstrip()
                if nstripped == "" or nstripped.startswith("#"):
                    continue
                if cont.search(nxt):
                    line += cont.sub("", nxt)
                    continue
                line += nxt
                break
        if line.strip() == "":
            continue
        out.append(LogicalLine(line, lineno, end))
    return out, escape


def split_command(line: str) -> tuple[str, list[str], str]:
    """Split a logical line into (instruction word as written, leading --flags, rest of the line)."""
    parts = re.split(r"[\t\v\f\r ]+", line.strip(), maxsplit=1)
    word = parts[0]
    rest = parts[1] if len(parts) == 2 else ""
    flags: list[str] = []
    while rest.startswith("--") and not rest.startswith("-- ") and rest != "--":
        flag_parts = re.split(r"[\t\v\f\r ]+", rest, maxsplit=1)
        flags.append(flag_parts[0])
        rest = flag_parts[1] if len(flag_parts) == 2 else ""
    return word, flags, rest.strip()


def split_whitespace(rest: str) -> list[str]:
    """Whitespace-separated words with no quote processing (Go sealer's list form for APP/LAUNCH)."""
    return [w for w in re.split(r"[\t\v\f\r \n]+", rest) if w]


class _Lexer:
    """Expands `$VAR`, `${VAR}`, `${VAR:-w}`, `${VAR:+w}`, `${VAR?msg}` and removes quotes."""

    def __init__(self, text: str, env: Mapping[str, str] | None, escape: str) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def words(self, split: bool) -> list[str]:
        words: list[str] = []
        word = ""
        in_word = False
        while self.pos < len(self.text):
            ch = self.peek()
            if split and ch in " \t\r\n\v\f":
                self.pos += 1
                if in_word:
                    words.append(word)
                    word = ""
                    in_word = False
                continue
            in_word = True
            if ch == "'":
                self.pos += 1
                word += self._single_quoted()
            elif ch == '"':
                self.pos += 1
                word += self._double_quoted()
            elif ch == self.escape:
                self.pos += 1
                if self.pos < len(self.text):
                    word += self.take()
            elif ch == "$" and self.env is not None:
                self.pos += 1
                word += self._dollar()
            else:
                word += self.take()
        if in_word:
            words.append(word)
        return words

    def _single_quoted(self) -> str:
        end = self.text.find("'", self.pos)
        if end < 0:
            raise LexError("unexpected end of statement while looking for matching single-quote")
        value = self.text[self.pos : end]
        self.pos = end + 1
        return value

    def _double_quoted(self) -> str:
        value = ""
        while True:
            if self.pos >= len(self.text):
                raise LexError("unexpected end of statement while looking for matching double-quote")
            ch = self.take()
            if ch == '"':
                return value
            if ch == self.escape and self.peek() in ('"', "$", self.escape):
                value += self.take()
            elif ch == "$" and self.env is not None:
                value += self._dollar()
            else:
                value += ch

    def _lookup(self, name: str) -> str | None:
        assert self.env is not None
        return self.env.get(name)

    def _dollar(self) -> str:
        ch = self.peek()
        if ch == "{":
            self.pos += 1
            return self._braced()
        if ch and _NAME_START.match(ch):
            start = self.pos
            while self.peek() and _NAME_CHAR.match(self.peek()):
                self.pos += 1
            return self._lookup(self.text[start : self.pos]) or ""
        if ch and ch.isdigit():
            self.pos += 1
            return ""
        return "$"

    def _braced(self) -> str:
        start = self.pos
        while self.peek() and _NAME_CHAR.match(self.peek()):
            self.pos += 1
        name = self.text[start : self.pos]
        if not name:
            raise LexError("bad substitution: `${` must be followed by a variable name")
        ch = self.take()
        if ch == "}":
            return self._lookup(name) or ""
        colon = False
        if ch == ":":
            colon = True
            ch = self.take()
        if ch not in ("-", "+", "?"):
            raise LexError(f"unsupported modifier {ch!r} in substitution of ${{{name}}}")
        word = self._until_brace()
        value = self._lookup(name)
        is_set = value is not None and (value != "" or not colon)
        if ch == "-":
            return value if is_set and value is not None else word
        if ch == "+":
            return word if is_set else ""
        if not is_set:
            raise LexError(f"{name}: {word or 'is not set'}")
        return value or ""

    def _until_brace(self) -> str:
        # The word inside ${VAR:-word} may itself contain quotes and expansions.
        depth = 0
        start = self.pos
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == self.escape:
                self.pos += 2
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                if depth == 0:
                    inner = self.text[start : self.pos]
                    self.pos += 1
                    return "".join(_Lexer(inner, self.env, self.escape).words(split=False))
                depth -= 1
            self.pos += 1
        raise LexError("missing '}' in variable substitution")


def process_word(text: str, env: Mapping[str, str] | None, escape: str = "\\") -> str:
    """One word with quotes removed and, when env is given, variables expanded (Docker's ProcessWord)."""
    try:
        return "".join(_Lexer(text, env, escape).words(split=False))
    except RecursionError:
        raise LexError("variable substitutions are nested too deeply") from None


def process_words(text: str, env: Mapping[str, str] | None, escape: str = "\\") -> list[str]:
    """Split on unquoted whitespace, removing quotes and expanding variables (Docker's ProcessWords)."""
    try:
        return _Lexer(text, env, escape).words(split=True)
    except RecursionError:
        raise LexError("variable substitutions are nested too deeply") from None


def raw_words(text: str, escape: str = "\\") -> Iterator[tuple[str, int]]:
    """Words with their quotes kept, and the offset each starts at (Docker's parseWords)."""
    pos = 0
    n = len(text)
    while pos < n:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            return
        start = pos
        quote = ""
        while pos < n:
            ch = text[pos]
            if quote:
                if ch == escape and quote == '"' and pos + 1 < n:
                    pos += 2
                    continue
                if ch == quote:
                    quote = ""
            elif ch.isspace():
                break
            elif ch in ("'", '"'):
                quote = ch
            elif ch == escape and pos + 1 < n:
                pos += 2
                continue
            pos += 1
        yield text[start:pos], start
