"""Property tests: whatever text a Kubefile holds, the parser returns a result or raises KubefileError."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealer.errors import KubefileError, SealerError
from sealer.image.build import BuildOptions, plan_build
from sealer.image.kubefile import INSTRUCTIONS, BaseImage, Kubefile, parse_kubefile
from sealer.image.kubefile_apps import Application
from sealer.image.kubefile_lex import LexError, process_word, process_words
from sealer.image.oci import Platform

TOKENS = [
    *INSTRUCTIONS,
    *(i.lower() for i in INSTRUCTIONS),
    "USER", "scratch", "base:1", "a", "app", "app.yaml", "dir", "local://app.yaml", "local://dir",
    "local://../x", "https://h/x.yml", "http://h/c.tgz", "local://", "--platform=linux/arm64",
    "--chown=0:0", "--from=x", "AS", "k=v", 'k="v w"', "k=", "=v", "${ARCH}", "$ARCH", "${X:-d}",
    "${X:?e}", "${", "$", '"', "'", "[", "]", '["a", "b"]', '["a", 1]', "[]", "{}", "#", "# c",
    "\\", "`", "..", "/", ".", "*", "\t", " ", "\\\n", "\n", "\r\n", "\ufeff", "# escape=`\n",
]  # fmt: skip

kubefile_text = st.lists(st.sampled_from(TOKENS) | st.text(max_size=6), max_size=40).map(" ".join)
line_text = st.lists(
    st.lists(st.sampled_from(TOKENS), min_size=1, max_size=6).map(" ".join), max_size=12
).map("\n".join)


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ctx")
    (root / "app.yaml").write_text("image: nginx\n")
    (root / "dir").mkdir()
    (root / "dir" / "x.sh").write_text("")
    return root


def _resolve(reference: str, platform: Platform) -> BaseImage | None:
    if reference == "base:1":
        return BaseImage(reference, (Application("app", "kube", ["a.yaml"]),), launch_apps=("app",))
    return None


def _check(text: str, context: Path) -> None:
    try:
        result = parse_kubefile(text, context=context, resolve_base=_resolve, build_args={"X": "1"})
    except KubefileError as err:
        assert err.problems, "a KubefileError must carry at least one problem"
        assert all(p.file == "Kubefile" for p in err.problems)
        err.render()
        return
    assert isinstance(result, Kubefile)
    result.to_dict()
    result.launch_commands()
    result.image_extension()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=kubefile_text)
def test_random_token_soup_never_raises_anything_else(context: Path, text: str) -> None:
    _check(text, context)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=line_text)
def test_random_instruction_lines_never_raise_anything_else(context: Path, text: str) -> None:
    _check("FROM base:1\n" + text, context)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_arbitrary_unicode_never_raises_anything_else(context: Path, text: str) -> None:
    _check(text, context)


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab $:{}-+?\"'\\` \t=")), max_size=30))
def test_word_expansion_raises_only_lex_errors(text: str) -> None:
    for escape in ("\\", "`"):
        try:
            process_word(text, {"a": "1", "b": ""}, escape)
            process_words(text, {"a": "1"}, escape)
            process_words(text, None, escape)
        except LexError:
            pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=line_text)
def test_build_planning_raises_only_sealer_errors(context: Path, text: str) -> None:
    (context / "Kubefile").write_text("FROM scratch\n" + text)
    try:
        plan = plan_build(BuildOptions(context=context, platforms=[Platform("linux", "arm64")]), _resolve)
    except SealerError as err:
        err.render()
        return
    plan.to_dict()
