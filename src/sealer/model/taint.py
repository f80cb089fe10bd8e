"""Taint strings of `spec.hosts[].taints` and label keys/values, checked as Kubernetes checks them.

Grammar as Go sealer's `formatData`: `k=v:Effect`, `k:Effect`, `k=:Effect`, `k-` (remove every
effect for k), `k:Effect-` / `k=v:Effect-` (remove one). Errors are `TaintError` with a hint.
"""

from __future__ import annotations

import difflib
import re

from sealer.model.cluster import TAINT_EFFECTS, Taint

# Kubernetes "qualified name": optional DNS-subdomain prefix, then a name of at most 63 chars.
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class TaintError(ValueError):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


_GRAMMAR_HINT = (
    "write key=value:Effect, key:Effect, key=:Effect, key- or key:Effect- "
    "(Effect: NoSchedule, PreferNoSchedule or NoExecute)"
)


def qualified_name_problem(key: str) -> str | None:
    """Why `key` is not a valid label/taint key, or None when it is."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _PREFIX.match(prefix)):
        return f"prefix {prefix!r} must be a lower-case DNS subdomain"
    if not name:
        return "the name part is empty"
    if len(name) > 63:
        return f"the name part is {len(name)} characters long (at most 63)"
    if not _NAME.match(name):
        return "the name must be alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63:
        return f"{len(value)} characters long (at most 63)"
    if not _VALUE.match(value):
        return "must be empty or alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
    return None


def _effect(text: str) -> str:
    if text in TAINT_EFFECTS:
        return text
    by_lower = {e.lower(): e for e in TAINT_EFFECTS}
    if text.lower() in by_lower:
        raise TaintError(
            f"unknown taint effect {text!r}",
            f"effects are case-sensitive: did you mean {by_lower[text.lower()]}?",
        )
    close = difflib.get_close_matches(text, TAINT_EFFECTS, n=1, cutoff=0.6)
    hint = (
        f"did you mean {close[0]}?"
        if close
        else "the effect is one of NoSchedule, PreferNoSchedule, NoExecute"
    )
    raise TaintError(f"unknown taint effect {text!r}", hint)


def parse_taint(text: str) -> Taint:
    data = text.strip()
    if not data:
        raise TaintError("empty taint", _GRAMMAR_HINT)
    remove = False
    value = ""
    effect: str | None
    if ":" in data:
        head, _, effect_text = data.partition(":")
        if ":" in effect_text:
            raise TaintError(f"taint {data!r} has more than one ':'", _GRAMMAR_HINT)
        if effect_text.endswith("-"):
            remove, effect_text = True, effect_text[:-1]
        if "=" in head:
            key, _, value = head.partition("=")
            if "=" in value:
                raise TaintError(f"taint {data!r} has more than one '='", _GRAMMAR_HINT)
        else:
            key = head
        if not effect_text:
            raise TaintError(f"taint {data!r} has no effect after ':'", _GRAMMAR_HINT)
        effect = _effect(effect_text)
    elif data.endswith("-") and "=" not in data:
        key, effect, remove = data[:-1], None, True
    elif "=" in data:
        raise TaintError(f"taint {data!r} has no effect", f"add one, e.g. {data}:NoSchedule")
    else:
        raise TaintError(
            f"taint {data!r} has no effect", f"add one (e.g. {data}:NoSchedule) or remove it with {data}-"
        )
    if not key:
        raise TaintError(f"taint {data!r} has an empty key", _GRAMMAR_HINT)
    why = qualified_name_problem(key)
    if why:
        raise TaintError(
            f"taint key {key!r} is invalid: {why}", "taint keys follow Kubernetes label-key rules"
        )
    why = label_value_problem(value)
    if why:
        raise TaintError(
            f"taint value {value!r} is invalid: {why}", "taint values follow Kubernetes label-value rules"
        )
    return Taint(key=key, value=value, effect=effect, remove=remove)
