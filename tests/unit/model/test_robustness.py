"""No input makes the Clusterfile reader fail with anything but located problems / ClusterfileError:
garbage, YAML bombs, deep nesting, huge files, bad encodings, and random mutations of real files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealer.errors import ClusterfileError, Problem
from sealer.model import clusterfile
from sealer.model.clusterfile import load_clusterfile, parse_clusterfile
from sealer.model.yamlnodes import MAX_BYTES

ROOT = Path(__file__).resolve().parents[3]
SEEDS = [
    ROOT / "examples" / "Clusterfile",
    *sorted((ROOT / "tests/compat/data/sealer/clusterfiles").glob("*.yaml")),
]


def check_contract(data: str | bytes) -> list[Problem]:
    cf, problems = parse_clusterfile(data, "fuzz")
    assert all(isinstance(p, Problem) for p in problems)
    for p in problems:
        assert "internal error" not in p.message, p.render()
        assert p.severity in ("error", "warning")
        p.render().encode("utf-8")  # every problem can be printed
    if cf is None:
        assert any(p.severity == "error" for p in problems)
    else:
        assert not any(p.severity == "error" for p in problems)
    return problems


def _laughs(levels: int, width: int = 9) -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kind", ["Cluster", "Application", "ClusterConfiguration", "Gadget"])
def test_billion_laughs_is_refused_not_expanded(kind: str) -> None:
    # 9**12 (282 billion) strings if expanded.
    text = _laughs(12) + f"kind: {kind}\nspec:\n  image: *l11\n  env: *l11\n  cmds: *l11\n  data: *l11\n"
    problems = check_contract(text)
    assert any(p.severity == "error" for p in problems)
    if kind in ("Application", "ClusterConfiguration", "Gadget"):  # kept verbatim: walked, so budgeted
        assert any("too many nodes" in p.message for p in problems)


def test_bomb_inside_a_valid_cluster_value() -> None:
    text = (ROOT / "examples" / "Clusterfile").read_text() + "---\n" + _laughs(12) + "kind: Application\n"
    problems = check_contract(text)
    assert any("alias/anchor bomb" in p.message for p in problems)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 5000 + "]" * 5000, "nest"),
        ("".join("  " * i + f"k{i}:\n" for i in range(2000)), "nest"),
        ("kind: Application\nspec: " + "[" * 900 + "]" * 900 + "\n", "nested too deeply"),
        ("kind: Application\nspec: &s\n  x: *s\n", "a cycle"),
        ("", "the Clusterfile is empty"),
        ("  \n\n", "the Clusterfile is empty"),
        ("# only a comment\n", "no kind: Cluster document"),
        ("hello", "not a mapping"),
        ("kind: Cluster\x00\n", "unacceptable character"),
        ('kind: "\\ud800"\n', "Unicode"),
        ("!!python/object/apply:os.system [echo pwned]\n", "not a mapping"),
        ("? [a, b]\n: c\nkind: Cluster\n", "a key must be a plain word"),
    ],
)
def test_hostile_texts(text: str, message: str) -> None:
    problems = check_contract(text)
    assert any(message in p.message or message in (p.hint or "") for p in problems), [
        p.render() for p in problems
    ]


def test_python_tags_are_never_constructed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"kind: Application\nspec: !!python/object/apply:os.system ['touch {marker}']\n"
    check_contract(text)
    assert not marker.exists()


def test_bad_utf8_is_located() -> None:
    problems = check_contract(b"kind: Cluster\nspec:\n  image: \xff\n")
    assert problems[0].message.startswith("the file is not valid UTF-8") and (
        problems[0].line,
        problems[0].column,
    ) == (
        3,
        10,
    )


def test_binary_garbage() -> None:
    problems = check_contract(bytes(range(256)) * 4)
    assert "not valid UTF-8" in problems[0].message and problems[0].hint


def test_huge_input_is_refused_before_parsing(tmp_path: Path) -> None:
    big = "a" * (MAX_BYTES + 1)
    assert "at most" in check_contract(big)[0].message
    assert "at most" in check_contract(big.encode())[0].message
    path = tmp_path / "Clusterfile"
    path.write_text(big)
    with pytest.raises(ClusterfileError, match="1 problem"):
        load_clusterfile(path)


def test_utf8_bom_is_accepted() -> None:
    text = "\ufeff" + (ROOT / "examples" / "Clusterfile").read_text()
    cf, _ = parse_clusterfile(text.encode("utf-8"), "bom")
    assert cf is not None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    check_contract(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=2000))
def test_random_text(text: str) -> None:
    check_contract(text)


yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
yaml_trees = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=30,
)
CLUSTER_KEYS = ["ips", "roles", "ssh", "env", "labels", "taints", "image", "hosts", "port", "registry"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.dictionaries(
        st.sampled_from(
            [
                "image",
                "env",
                "cmd",
                "appNames",
                "ssh",
                "hosts",
                "containerRuntime",
                "hostAliases",
                "registry",
                "dataRoot",
            ]
        ),
        st.one_of(
            yaml_trees,
            st.lists(st.dictionaries(st.sampled_from(CLUSTER_KEYS), yaml_trees, max_size=6), max_size=4),
        ),
        max_size=8,
    )
)
def test_random_cluster_specs(spec: dict[str, object]) -> None:
    """Structured garbage in the right places: every field with every type of value."""
    check_contract(
        yaml.safe_dump(
            {"apiVersion": "sealer.io/v2", "kind": "Cluster", "metadata": {"name": "x"}, "spec": spec}
        )
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=1), st.sampled_from(["del", "ins", "dup"]), st.text(max_size=4)
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_real_files(seed: Path, edits: list[tuple[float, str, str]]) -> None:
    """Real Clusterfiles with characters deleted, inserted or lines duplicated."""
    text = seed.read_text()
    for where, op, chunk in edits:
        i = int(where * len(text))
        if op == "del":
            text = text[:i] + text[i + len(chunk) + 1 :]
        elif op == "ins":
            text = text[:i] + chunk + text[i:]
        else:
            start = text.rfind("\n", 0, i) + 1
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            text = text[:end] + "\n" + text[start:end] + text[end:]
    check_contract(text)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_load_raises_only_clusterfile_error(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("cf") / "Clusterfile"
    path.write_bytes(data)
    try:
        load_clusterfile(path)
    except ClusterfileError as exc:
        assert exc.problems and exc.render()


@pytest.mark.parametrize(
    "text",
    [
        "[" * 3000 + "]" * 3000,
        _laughs(12) + "kind: Application\nspec: *l11\n",
        "kind: Cluster\nspec:\n  ssh:\n    passwd: *****\n",
        "kind: Cluster\x00\n",
    ],
)
def test_pure_python_yaml_fallback_keeps_the_contract(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Without libyaml, PyYAML's own composer is used; it must be just as safe."""
    monkeypatch.setattr(clusterfile, "SAFE_LOADER", yaml.SafeLoader)
    assert any(p.severity == "error" for p in check_contract(text))
    example = (ROOT / "examples" / "Clusterfile").read_text()
    assert parse_clusterfile(example, "x")[0] is not None


def test_a_bug_is_reported_as_a_problem_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(clusterfile, "_parse_documents", broken)
    cf, problems = parse_clusterfile("kind: Cluster\n", "x")
    assert (
        cf is None and "internal error" in problems[0].message and "please report" in (problems[0].hint or "")
    )
    plugins, problems = clusterfile.parse_plugins("kind: Plugin\n", "p")
    assert plugins == () and "internal error" in problems[0].message
    path = tmp_path / "Clusterfile"
    path.write_text("kind: Cluster\n")
    with pytest.raises(ClusterfileError):
        load_clusterfile(path)


def test_utf16_and_crlf_files() -> None:
    example = (ROOT / "examples" / "Clusterfile").read_text()
    problems = check_contract(example.encode("utf-16"))
    assert "UTF-16" in (problems[0].hint or "")
    cf, problems = parse_clusterfile(example.replace("\n", "\r\n").encode(), "crlf")
    assert cf is not None and problems == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(
        ["Config", "Plugin", "Application", "ClusterConfiguration", "InitConfiguration", "Other"]
    ),
    spec=st.dictionaries(
        st.sampled_from(
            [
                "path",
                "data",
                "strategy",
                "process",
                "appName",
                "type",
                "action",
                "scope",
                "on",
                "cmds",
                "configs",
                "launchApps",
                "networking",
            ]
        ),
        st.one_of(
            yaml_trees,
            st.lists(
                st.dictionaries(
                    st.sampled_from(["name", "env", "files", "launch", "path", "data"]), yaml_trees
                ),
                max_size=3,
            ),
        ),
        max_size=6,
    ),
)
def test_random_other_documents(kind: str, spec: dict[str, object]) -> None:
    """Every other kind, with every field given every type of value, next to a valid Cluster."""
    other = {"apiVersion": "x/v1", "kind": kind, "metadata": {"name": "n"}, "spec": spec, "networking": spec}
    text = (ROOT / "examples" / "Clusterfile").read_text() + "---\n" + yaml.safe_dump(other)
    check_contract(text)
    plugins, problems = clusterfile.parse_plugins(yaml.safe_dump(other), "p")
    assert not any("internal error" in p.message for p in problems)
    assert plugins == () or not any(p.severity == "error" for p in problems)
