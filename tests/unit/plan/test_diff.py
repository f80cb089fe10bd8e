"""Field-level Clusterfile diff: paths in the file's terms, secrets hidden, lists summarised."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sealer.model.cluster import SSH, Clusterfile, ConfigDoc
from sealer.plan.diff import FieldChange, diff_clusterfiles, diff_values
from tests.unit.plan.builders import cluster, group


def test_paths_use_the_file_vocabulary_and_quote_odd_keys() -> None:
    old = Clusterfile(cluster=cluster(groups=[group(["10.0.0.1"], ("master",), labels={"a.io/x": "1"})]))
    new = Clusterfile(cluster=cluster(groups=[group(["10.0.0.1"], ("master",), labels={"a.io/x": "2"})]))
    (change,) = diff_clusterfiles(old, new)
    assert change.path == 'Cluster.spec.hosts[0].labels["a.io/x"]'
    assert change.text() == '~ Cluster.spec.hosts[0].labels["a.io/x"]: 1 -> 2'


def test_env_is_diffed_per_variable() -> None:
    old = Clusterfile(cluster=cluster(env={"A": "1", "B": "2"}))
    new = Clusterfile(cluster=cluster(env={"A": "1", "B": "3", "C": "4"}))
    assert [c.text() for c in diff_clusterfiles(old, new)] == [
        "~ Cluster.spec.env.B: 2 -> 3", "+ Cluster.spec.env.C: 4",
    ]


def test_secrets_are_compared_but_never_shown() -> None:
    base = cluster()
    old = Clusterfile(cluster=replace(base, ssh=SSH(password="old-secret", pk_password="k1")))
    new = Clusterfile(cluster=replace(base, ssh=SSH(password="new-secret")))
    changes = diff_clusterfiles(old, new)
    texts = [c.text() for c in changes]
    assert texts == ["~ Cluster.spec.ssh.passwd: ***** -> *****", "- Cluster.spec.ssh.pkPasswd: *****"]
    assert "secret" not in repr([c.to_dict() for c in changes])


def test_config_data_is_summarised_not_printed() -> None:
    c = cluster()
    old = Clusterfile(cluster=c, configs=(ConfigDoc("db", "values.yaml", "rootPassword: a\nx: 1\n"),))
    new = Clusterfile(cluster=c, configs=(ConfigDoc("db", "values.yaml", "rootPassword: b\nx: 1\n"),))
    (change,) = diff_clusterfiles(old, new)
    assert change.path == "Config/db.spec.data"
    assert change.to_dict() == {"path": "Config/db.spec.data", "change": "changed", "old": "<2 line(s)>",
                                "new": "<2 line(s)>"}


def test_scalar_lists_show_what_came_and_went() -> None:
    change = FieldChange("x.ips", "changed", old=["a", "b", "c"], new=["b", "c", "d", "e"])
    assert change.text() == "~ x.ips: -[a] +[d, e]"
    reordered = FieldChange("x.ips", "changed", old=["a", "b"], new=["b", "a"])
    assert reordered.text() == "~ x.ips: reordered to [b, a]"


def test_lists_of_mappings_are_diffed_per_index() -> None:
    changes = diff_values({"h": [{"ip": "1"}, {"ip": "2"}]}, {"h": [{"ip": "1"}, {"ip": "3"}, {"ip": "4"}]})
    assert [c.text() for c in changes] == ["~ h[1].ip: 2 -> 3", "+ h[2]: {ip: 4}"]


def test_identical_files_have_no_changes() -> None:
    cf = Clusterfile(cluster=cluster(["10.0.0.1"], ["10.0.0.2"], env={"A": "1"}))
    assert diff_clusterfiles(cf, cf) == []


_KEYS = st.sampled_from(["a", "b", "passwd", "data", "x.y/z"])
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["v", "", "w x"]))
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=3)),
    max_leaves=12,
)


def _with_secrets(value: Any, seed: list[int]) -> Any:
    """Every value under a `passwd` key becomes a distinct secret string."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "passwd":
                seed[0] += 1
                out[k] = f"s3cr3t-{seed[0]}"
            else:
                out[k] = _with_secrets(v, seed)
        return out
    if isinstance(value, list):
        return [_with_secrets(v, seed) for v in value]
    return value


@settings(max_examples=300, deadline=None)
@given(
    old=st.dictionaries(_KEYS, _VALUES, max_size=4), new=st.dictionaries(_KEYS, _VALUES, max_size=4),
    same_secrets=st.booleans(),
)
def test_diff_is_empty_exactly_when_equal_and_never_leaks_a_secret(
    old: dict[str, Any], new: dict[str, Any], same_secrets: bool
) -> None:
    old = _with_secrets(old, [0])
    new = _with_secrets(new, [0 if same_secrets else 100])
    changes = diff_values(old, new)
    assert (changes == []) == (old == new)
    shown = " ".join(c.text() for c in changes) + repr([c.to_dict() for c in changes])
    assert "s3cr3t" not in shown
