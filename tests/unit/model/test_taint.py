"""Taint grammar of spec.hosts[].taints (Go sealer's formatData) and Kubernetes key rules."""

from __future__ import annotations

import pytest

from sealer.model.cluster import Taint
from sealer.model.taint import TaintError, label_value_problem, parse_taint, qualified_name_problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key1=value1:NoSchedule", Taint("key1", "value1", "NoSchedule")),
        ("key1:NoExecute", Taint("key1", "", "NoExecute")),
        ("key1=:PreferNoSchedule", Taint("key1", "", "PreferNoSchedule")),
        ("key1-", Taint("key1", "", None, remove=True)),
        ("key1:NoSchedule-", Taint("key1", "", "NoSchedule", remove=True)),
        ("key1=value1:NoSchedule-", Taint("key1", "value1", "NoSchedule", remove=True)),
        (
            "  node-role.kubernetes.io/master:NoSchedule ",
            Taint("node-role.kubernetes.io/master", "", "NoSchedule"),
        ),
    ],
)
def test_grammar(text: str, expected: Taint) -> None:
    assert parse_taint(text) == expected


@pytest.mark.parametrize(
    "text", ["a=b:NoSchedule", "a:NoExecute", "a-", "a:PreferNoSchedule-", "example.com/a=b-c_d.e:NoSchedule"]
)
def test_str_round_trips(text: str) -> None:
    assert str(parse_taint(text)) == text
    assert parse_taint(str(parse_taint(text))) == parse_taint(text)


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        ("key=value:NoSchedul", "unknown taint effect 'NoSchedul'", "did you mean NoSchedule?"),
        ("key=value:noexecute", "unknown taint effect", "case-sensitive: did you mean NoExecute?"),
        ("key=value:Sometimes", "unknown taint effect", "NoSchedule, PreferNoSchedule, NoExecute"),
        ("key=value", "has no effect", "key=value:NoSchedule"),
        ("key", "has no effect", "key-"),
        ("a:b:NoSchedule", "more than one ':'", None),
        ("a=b=c:NoSchedule", "more than one '='", None),
        ("a=b:", "no effect after ':'", None),
        ("=b:NoSchedule", "empty key", None),
        ("", "empty taint", None),
        ("bad key:NoSchedule", "taint key 'bad key' is invalid", "label-key rules"),
        ("Example.COM/a:NoSchedule", "lower-case DNS subdomain", None),
        ("a=" + "v" * 64 + ":NoSchedule", "at most 63", None),
        ("a=b-:NoSchedule", "taint value 'b-' is invalid", None),
    ],
)
def test_errors(text: str, message: str, hint: str | None) -> None:
    with pytest.raises(TaintError) as info:
        parse_taint(text)
    assert message in info.value.message
    if hint is not None:
        assert info.value.hint is not None and hint in info.value.hint


def test_key_and_value_rules() -> None:
    assert qualified_name_problem("disk") is None
    assert qualified_name_problem("topology.kubernetes.io/zone") is None
    assert qualified_name_problem("/zone") is not None
    assert qualified_name_problem("a/") == "the name part is empty"
    assert qualified_name_problem("x" * 64) is not None
    assert label_value_problem("") is None
    assert label_value_problem("true") is None
    assert label_value_problem("a b") is not None
