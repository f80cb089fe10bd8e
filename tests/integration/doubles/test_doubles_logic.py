"""The stand-ins' pure logic, without servers: PATCH semantics (RFC 7386/6902, strategic merge keys),
Go-flag and pflag parsing, label selectors, kubectl JSONPath, join-token formats."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.doubles import apiserver, kubectl, patch
from tests.doubles.cliflags import Flag, FlagSet, UsageError, parse_pflags
from tests.doubles.k3s import Fatal, Token

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)
objects = st.dictionaries(st.text(max_size=3), json_values, max_size=4)


@given(objects, objects)
def test_merge_patch_rfc7386_properties(target: dict[str, object], p: dict[str, object]) -> None:
    out = patch.merge_patch(target, p)
    for k, v in p.items():
        if v is None:
            assert k not in out
        elif not isinstance(v, dict):
            assert out[k] == v
    for k, v in target.items():
        if k not in p:
            assert out[k] == v
    assert patch.merge_patch(out, p) == out  # idempotent


def test_strategic_merge_by_key_and_directives() -> None:
    node = {
        "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure"}]},
        "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
    }
    out = patch.strategic_merge_patch(
        node,
        {
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "PIDPressure"}]},
            "spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
        },
    )
    assert [c["type"] for c in out["status"]["conditions"]] == ["Ready", "DiskPressure", "PIDPressure"]
    assert out["status"]["conditions"][0]["status"] == "True"
    assert out["spec"]["taints"] == [{"key": "b", "effect": "NoExecute"}]  # no patch strategy: replaced
    out = patch.strategic_merge_patch(
        out, {"status": {"conditions": [{"type": "DiskPressure", "$patch": "delete"}]}}
    )
    assert [c["type"] for c in out["status"]["conditions"]] == ["Ready", "PIDPressure"]
    with pytest.raises(patch.PatchError):
        patch.strategic_merge_patch(out, {"status": {"conditions": [{"status": "x"}]}})


def test_json_patch_operations() -> None:
    doc = {"a": [1, 2], "b": {"c": 1}}
    out = patch.json_patch(
        doc,
        [
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "replace", "path": "/b/c", "value": 2},
            {"op": "move", "from": "/b", "path": "/d"},
            {"op": "test", "path": "/d/c", "value": 2},
        ],
    )
    assert out == {"a": [1, 2, 3], "d": {"c": 2}} and doc == {"a": [1, 2], "b": {"c": 1}}
    for bad in (
        [{"op": "remove", "path": "/nope"}],
        [{"op": "test", "path": "/a/0", "value": 9}],
        [{"op": "frobnicate", "path": "/a"}],
        {"op": "add"},
        [{"op": "add", "path": "a", "value": 1}],
    ):
        with pytest.raises(patch.PatchError):
            patch.json_patch(doc, bad)


def test_go_flag_parsing() -> None:
    fs = FlagSet(
        [
            Flag("token", aliases=("t",), env=("K3S_TOKEN",)),
            Flag("cluster-init", "bool"),
            Flag("tls-san", "slice", split=True),
            Flag("node-label", "slice"),
            Flag("port", "int"),
        ]
    )
    v, rest = fs.parse(
        [
            "-t=x",
            "--cluster-init",
            "--tls-san",
            "a,b",
            "--node-label",
            "k=v,w",
            "--port=1",
            "pos",
            "--ignored",
        ],
        {},
    )
    assert (v["token"], v["cluster-init"], v["tls-san"], v["node-label"], v["port"]) == (
        "x",
        True,
        ["a", "b"],
        ["k=v,w"],
        1,
    )
    assert rest == ["pos", "--ignored"]  # Go's flag package stops at the first non-flag
    assert fs.parse([], {"K3S_TOKEN": "from-env"})[0]["token"] == "from-env"
    for args, msg in (
        (["--nope"], "flag provided but not defined: -nope"),
        (["--token"], "flag needs an argument"),
        (["--cluster-init=maybe"], 'invalid boolean value "maybe"'),
        (["---x"], "bad flag syntax"),
    ):
        with pytest.raises(UsageError, match=msg):
            fs.parse(args, {})


def test_pflag_parsing() -> None:
    flags = [
        Flag("config", aliases=("c",)),
        Flag("debug", "bool", aliases=("d",)),
        Flag("verbose", "bool", aliases=("v",)),
        Flag("labels", "map"),
        Flag("taints", "slice"),
    ]
    v, pos = parse_pflags(
        flags, ["worker", "-dv", "-cfile", "--labels", "a=1,b=2", "tok", "--taints=x:NoSchedule"]
    )
    assert (v["debug"], v["verbose"], v["config"], v["labels"], v["taints"]) == (
        True,
        True,
        "file",
        {"a": "1", "b": "2"},
        ["x:NoSchedule"],
    )
    assert pos == ["worker", "tok"]  # interspersed arguments
    for args, msg in (
        (["-x"], "unknown shorthand flag: 'x' in -x"),
        (["--x"], "unknown flag: --x"),
        (["-c"], "flag needs an argument: 'c' in -c"),
        (["--labels", "nokey"], "must be formatted as"),
    ):
        with pytest.raises(UsageError, match=msg):
            parse_pflags(flags, args)


@pytest.mark.parametrize(
    ("selector", "labels", "match"),
    [
        ("a=1", {"a": "1"}, True),
        ("a==1", {"a": "2"}, False),
        ("a!=1", {}, True),
        ("a", {"a": ""}, True),
        ("!a", {"a": "x"}, False),
        ("a in (1, 2),b", {"a": "2", "b": "z"}, True),
        ("a notin (1,2)", {"a": "1"}, False),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], match: bool) -> None:
    assert apiserver.label_matcher(selector)(labels) is match


def test_jsonpath_subset() -> None:
    doc = {"items": [{"metadata": {"name": "a", "labels": {"x.io/y": "1"}}}, {"metadata": {"name": "b"}}]}
    assert kubectl.jsonpath(doc, "{.items[*].metadata.name}") == "a b"
    assert kubectl.jsonpath(doc, "name={.items[0].metadata.name};") == "name=a;"
    assert kubectl.jsonpath(doc, "{.items[0].metadata.labels.x\\.io/y}") == "1"


def test_k3s_token_formats() -> None:
    t = Token("K10" + "a" * 64 + "::server:secret")
    assert (t.ca_hash, t.user, t.password) == ("a" * 64, "server", "secret")
    bare = Token("justapassword")
    assert (bare.ca_hash, bare.user, bare.password) == ("", "", "justapassword")
    for bad, msg in (
        ("", "must not be empty"),
        ("K10abc::server:x", "CA hash length"),
        ("K10" + "a" * 64 + "::x", "invalid token format"),
    ):
        with pytest.raises(Fatal, match=msg):
            Token(bad)
