"""Kubefile parser: every instruction, the Dockerfile lexing rules it inherits, and every error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sealer.errors import ImageError, KubefileError
from sealer.image.kubefile import (
    LABEL_CNI_PREFIX,
    LABEL_CSI_PREFIX,
    LABEL_KUBE_VERSION,
    BaseImage,
    Kubefile,
    check_context,
    parse_kubefile,
    parse_platform,
)
from sealer.image.kubefile_apps import Application
from sealer.image.kubefile_lex import LexError, process_word, process_words, split_lines
from sealer.image.oci import Platform


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def parse(text: str, ctx: Path, **kw: object) -> Kubefile:
    return parse_kubefile(text, context=ctx, **kw)  # type: ignore[arg-type]


def errors_of(text: str, ctx: Path, **kw: object) -> list[tuple[int | None, str, str | None]]:
    with pytest.raises(KubefileError) as info:
        parse(text, ctx, **kw)
    return [(p.line, p.message, p.hint) for p in info.value.problems if p.severity == "error"]


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        {
            "app.yaml": "image: nginx\n",
            "install.sh": "echo hi\n",
            "yamls/a.yaml": "",
            "yamls/sub/b.yml": "",
            "shells/x.sh": "",
            "shells/y.sh": "",
            "mixed/a.yaml": "",
            "mixed/b.sh": "",
            "chart/Chart.yaml": "name: c\n",
            "chart/values.yaml": "",
            "chart/templates/d.yaml": "",
            "pkg.tgz": "",
            "tmpl/nginx.yaml.tmpl": "",
            "amd64/bin/k": "",
            "arm64/bin/k": "",
        },
    )


# ---------------------------------------------------------------------------- lexing


def test_line_continuation_comments_and_line_numbers(ctx: Path) -> None:
    text = "# header\nFROM scratch\nRUN echo a \\\n  # comment inside\n\n  && echo b\n  # trailing\nCMD ls\n"
    kf = parse(text, ctx)
    run = kf.steps[1]
    assert (run.instruction, run.line, run.end_line) == ("RUN", 3, 6)
    assert run.args == ("echo a   && echo b",)
    assert kf.steps[2].line == 8


def test_escape_directive_backtick(ctx: Path) -> None:
    kf = parse("# escape=`\nFROM scratch\nRUN echo a `\n b\n", ctx)
    assert kf.steps[1].args == ("echo a  b",)


def test_escape_directive_must_be_valid() -> None:
    with pytest.raises(LexError, match="invalid escape"):
        split_lines("# escape=x\nFROM scratch\n")


def test_escape_directive_after_instruction_is_a_comment(ctx: Path) -> None:
    kf = parse("FROM scratch\n# escape=`\nRUN echo a \\\n b\n", ctx)
    assert kf.steps[1].args == ("echo a  b",)


def test_bom_and_crlf(ctx: Path) -> None:
    kf = parse("\ufeffFROM scratch\r\nCMD ls\r\n", ctx)
    assert kf.raw_cmds == ["ls"]


def test_trailing_hash_is_not_a_comment_for_run(ctx: Path) -> None:
    kf = parse("FROM scratch\nRUN echo a # not a comment\n", ctx)
    assert kf.steps[1].args == ("echo a # not a comment",)


def test_deeply_nested_substitution_is_an_error_not_a_crash(ctx: Path) -> None:
    nested = "${A:-" * 3000 + "x" + "}" * 3000
    assert "nested too deeply" in errors_of(f"FROM scratch\nENV B={nested}\n", ctx)[0][1]


def test_word_processing_quotes_and_expansion() -> None:
    env = {"A": "x", "E": ""}
    assert process_word("'$A'\"$A\"${A}", env) == "$Axx"
    assert process_word("${B:-dflt}${A:+alt}${E-unset}${E:-empty}", env) == "dfltaltempty"
    assert process_word("\\$A", env) == "$A"
    assert process_words('a "b c" d\\ e', env) == ["a", "b c", "d e"]
    with pytest.raises(LexError, match="double-quote"):
        process_word('"open', env)
    with pytest.raises(LexError, match="B: needed"):
        process_word("${B:?needed}", env)


# ---------------------------------------------------------------------------- instructions


def test_from_scratch_and_platform(ctx: Path) -> None:
    kf = parse("FROM --platform=linux/arm64 scratch\n", ctx)
    assert kf.base == "scratch"
    assert kf.steps[0].flags == ("--platform=linux/arm64",)


def test_from_base_image_inherits_apps_env_labels_and_launch(ctx: Path) -> None:
    calls: list[tuple[str, Platform]] = []

    def resolve(ref: str, platform: Platform) -> BaseImage:
        calls.append((ref, platform))
        return BaseImage(
            ref,
            (Application("calico", "kube", ["calico.yaml"], inherited_from=ref),),
            env={"PodCIDR": "10.0.0.0/16"},
            labels={"cluster.alpha.sealer.io/cluster-runtime-type": "k3s"},
            launch_apps=("calico",),
        )

    kf = parse(
        "ARG V=1\nFROM reg.local/k3s:${V}\nCOPY app.yaml manifests/\n",
        ctx,
        resolve_base=resolve,
        platform=Platform("linux", "arm64"),
    )
    assert calls == [("reg.local/k3s:1", Platform("linux", "arm64"))]
    assert kf.applications["calico"].inherited_from == "reg.local/k3s:1"
    assert kf.env == {"PodCIDR": "10.0.0.0/16"}
    assert kf.labels["cluster.alpha.sealer.io/cluster-runtime-type"] == "k3s"
    assert kf.launch_apps == ["calico"] and kf.launch_inherited
    assert kf.launch_commands() == ["kubectl apply -f application/apps/calico/calico.yaml"]


def test_own_launch_replaces_base_launch(ctx: Path) -> None:
    base = BaseImage("b:1", (Application("calico", "kube", ["c.yaml"]),), launch_apps=("calico",))
    kf = parse('FROM b:1\nCMDS ["ls"]\n', ctx, resolve_base=lambda r, p: base)
    assert kf.raw_cmds == ["ls"] and kf.launch_apps == [] and not kf.launch_inherited


def test_from_errors(ctx: Path) -> None:
    assert errors_of("FROM\n", ctx)[0][1] == "FROM needs an image"
    errs = errors_of("FROM kubernetes:1.18.0 # Base Image\n", ctx)
    assert errs[0][0] == 1 and "# Base Image" in errs[0][1] and "own line" in (errs[0][2] or "")
    assert "not available in FROM" in errors_of("FROM --pull=always scratch\n", ctx)[0][1]
    assert "multi-stage" in errors_of("FROM scratch\nFROM scratch\n", ctx)[0][1]
    assert "invalid platform" in errors_of("FROM --platform=a/b/c/d scratch\n", ctx)[0][1]


def test_from_as_name_is_accepted(ctx: Path) -> None:
    assert parse("FROM scratch AS base\n", ctx).base == "scratch"


def test_base_resolver_error_is_located(ctx: Path) -> None:
    def resolve(ref: str, platform: Platform) -> BaseImage:
        raise ImageError("corrupt blob", "re-pull it")

    errs = errors_of("FROM x:1\n", ctx, resolve_base=resolve)
    assert errs == [(1, "cannot read base image x:1: corrupt blob", "re-pull it")]


def test_unknown_base_is_a_warning_and_its_apps_are_explained(ctx: Path) -> None:
    errs = errors_of('FROM x:1\nLAUNCH ["calico"]\n', ctx, resolve_base=lambda r, p: None)
    assert errs[0][0] == 2 and "unknown app 'calico'" in errs[0][1]
    assert "could not be read" in (errs[0][2] or "")


def test_missing_from(ctx: Path) -> None:
    errs = errors_of("COPY app.yaml .\n", ctx)
    assert errs == [(1, errs[0][1], errs[0][2])] and "no FROM" in errs[0][1]
    assert parse("COPY app.yaml .\n", ctx, require_from=False).base is None


def test_arg_defaults_build_args_and_scope(ctx: Path) -> None:
    text = "ARG BASE=scratch\nFROM $BASE\nARG V=1.0\nARG BASE\nARG EMPTY\nCOPY ${V}/x ${BASE}/\n"
    kf = parse(text, ctx, build_args={"V": "2.0", "UNUSED": "1"})
    copy = kf.steps[-1]
    assert copy.args == ("2.0/x", "scratch/")
    assert kf.args == {"V": "2.0", "BASE": "scratch", "EMPTY": ""}
    assert any("UNUSED" in w.message for w in kf.warnings)


def test_arg_errors(ctx: Path) -> None:
    assert "ARG needs a name" in errors_of("FROM scratch\nARG\n", ctx)[0][1]
    assert "invalid ARG name" in errors_of("FROM scratch\nARG 1x=2\n", ctx)[0][1]


def test_env_forms_quotes_and_expansion(ctx: Path) -> None:
    # As in Docker, one ENV line expands with the values from before it (C sees no A yet).
    text = 'FROM scratch\nENV A=1 B="two words" C=${A}x\nENV D=${A}y\nENV OLD spaced value\nENV E=""\n'
    kf = parse(text, ctx)
    assert kf.env == {"A": "1", "B": "two words", "C": "x", "D": "1y", "OLD": "spaced value", "E": ""}


def test_env_errors(ctx: Path) -> None:
    assert "has no value" in errors_of("FROM scratch\nENV LONELY\n", ctx)[0][1]
    assert "can't find =" in errors_of("FROM scratch\nENV A=1 B\n", ctx)[0][1]
    assert "double-quote" in errors_of('FROM scratch\nENV A="x\n', ctx)[0][1]


def test_label_and_maintainer(ctx: Path) -> None:
    text = (
        'FROM scratch\nLABEL "cluster.alpha.sealer.io/cluster-runtime-type"="k0s" a=b\nMAINTAINER me <m@x>\n'
    )
    kf = parse(text, ctx)
    assert kf.labels == {"cluster.alpha.sealer.io/cluster-runtime-type": "k0s", "a": "b"}
    assert kf.maintainer == "me <m@x>"


def test_runtime_labels_are_checked(ctx: Path) -> None:
    text = "FROM scratch\nLABEL cluster.alpha.sealer.io/cluster-runtime-type=k3\n"
    errs = errors_of(text, ctx)
    assert (
        errs[0][0] == 2
        and "names no runtime" in errs[0][1]
        and (errs[0][2] or "").startswith("did you mean k3s?")
    )
    ok = "FROM scratch\nLABEL cluster.alpha.sealer.io/container-runtime-type=containerd\n"
    assert parse(ok, ctx).labels["cluster.alpha.sealer.io/container-runtime-type"] == "containerd"


def test_run_shell_and_json(ctx: Path) -> None:
    kf = parse('FROM scratch\nRUN mkdir -p x && touch x/y\nRUN ["sh", "-c", "echo"]\n', ctx)
    assert kf.steps[1].args == ("mkdir -p x && touch x/y",) and not kf.steps[1].json_form
    assert kf.steps[2].args == ("sh", "-c", "echo") and kf.steps[2].json_form
    assert all(s.changes_filesystem for s in kf.steps[1:])
    assert "RUN flags" in errors_of("FROM scratch\nRUN --mount=type=cache x\n", ctx)[0][1]
    assert "RUN needs a command" in errors_of("FROM scratch\nRUN\n", ctx)[0][1]


def test_copy_arch_substitution_and_forms(ctx: Path) -> None:
    text = 'FROM scratch\nCOPY ${ARCH}/bin bin\nCOPY $ARCH/bin bin2\nCOPY ["app.yaml", "install.sh", "x/"]\n'
    amd = parse(text, ctx, platform=Platform("linux", "amd64"))
    arm = parse(text, ctx, platform=Platform("linux", "arm64"))
    assert [s.path for s in amd.steps[1].sources] == ["amd64/bin"]
    assert [s.path for s in arm.steps[1].sources] == ["arm64/bin"]
    assert [s.path for s in arm.steps[2].sources] == ["arm64/bin"]
    assert amd.steps[3].json_form and [s.path for s in amd.steps[3].sources] == ["app.yaml", "install.sh"]
    assert amd.steps[3].dest == "x/"


def test_copy_trailing_comment_is_dropped_with_a_warning(ctx: Path) -> None:
    kf = parse("FROM scratch\nCOPY app.yaml manifests/ # only render templates\n", ctx)
    assert kf.steps[1].dest == "manifests/" and [s.path for s in kf.steps[1].sources] == ["app.yaml"]
    assert any("treated as a comment" in w.message and w.line == 2 for w in kf.warnings)


def test_copy_flags_and_errors(ctx: Path) -> None:
    kf = parse("FROM scratch\nCOPY --chown=0:0 --chmod=0755 install.sh scripts/\n", ctx)
    assert kf.steps[1].flags == ("--chown=0:0", "--chmod=0755")
    assert "--from is not supported" in errors_of("FROM scratch\nCOPY --from=b x y\n", ctx)[0][1]
    assert "unknown flag" in errors_of("FROM scratch\nCOPY --link x y\n", ctx)[0][1]
    assert "at least one source" in errors_of("FROM scratch\nCOPY onlyone\n", ctx)[0][1]
    assert "cannot fetch URLs" in errors_of("FROM scratch\nCOPY https://x/y.yaml .\n", ctx)[0][1]


def test_copy_outside_context_is_an_error_with_its_line(ctx: Path) -> None:
    errs = errors_of("FROM scratch\nRUN true\nCOPY ../secret .\n", ctx)
    assert errs[0][0] == 3 and "outside the build context" in errs[0][1]
    # An absolute source is context-relative, as in Docker.
    kf = parse("FROM scratch\nCOPY /app.yaml .\n", ctx)
    assert kf.steps[1].sources[0].path == "app.yaml"
    assert parse("FROM scratch\nCOPY a/../app.yaml .\n", ctx).steps[1].sources[0].path == "app.yaml"


def test_add_accepts_urls(ctx: Path) -> None:
    kf = parse("FROM scratch\nADD https://example.com/x.tgz app.yaml dest/\n", ctx)
    src = kf.steps[1].sources
    assert src[0].remote and src[0].path == "https://example.com/x.tgz" and src[1].path == "app.yaml"


def test_check_context_reports_missing_sources_and_symlink_escapes(ctx: Path, tmp_path: Path) -> None:
    outside = tmp_path.parent / "outside-secret"
    outside.write_text("x")
    (ctx / "link").symlink_to(outside)
    kf = parse("FROM scratch\nCOPY app.yaml .\nCOPY missing.yaml .\nCOPY link .\nCOPY yamls/*.yaml m/\n", ctx)
    problems = check_context(kf, ctx)
    assert [(p.line, "not found" in p.message, "symlink" in p.message) for p in problems] == [
        (3, True, False),
        (4, False, True),
    ]
    assert "nothing*" not in str(problems)
    kf2 = parse("FROM scratch\nCOPY nothing* .\n", ctx)
    assert [p.line for p in check_context(kf2, ctx)] == [2]


# ---------------------------------------------------------------------------- apps


@pytest.mark.parametrize(
    ("sources", "app_type", "files"),
    [
        ("local://app.yaml", "kube", ["app.yaml"]),
        ("local://yamls", "kube", ["a.yaml", "sub/b.yml"]),
        ("local://shells", "shell", ["x.sh", "y.sh"]),
        ("local://install.sh local://shells", "shell", ["install.sh"]),
        ("local://app.yaml local://yamls/a.yaml", "kube", ["app.yaml", "a.yaml"]),
        ("local://chart", "helm", ["myapp"]),
        # As in Go sealer, a templates/ dir given as its own source does not count as the chart's.
        (
            "local://chart/Chart.yaml local://chart/values.yaml local://chart/templates",
            "kube",
            ["Chart.yaml", "values.yaml", "d.yaml"],
        ),
        ("local://mixed", "", []),
        ("local://install.sh local://app.yaml", "", []),
        ("local://pkg.tgz", "", []),
        ("local://tmpl", "", []),
        ("https://example.com/kube-flannel.yml", "kube", ["kube-flannel.yml"]),
        ("https://example.com/mysql.tgz", "", []),
    ],
)
def test_app_type_detection(ctx: Path, sources: str, app_type: str, files: list[str]) -> None:
    text = f'FROM scratch\nAPP myapp {sources}\nAPPCMDS myapp ["run"]\n'
    app = parse(text, ctx).applications["myapp"]
    assert (app.type, app.files) == (app_type, files)


def test_app_launch_commands(ctx: Path) -> None:
    text = (
        "FROM scratch\nAPP k local://yamls\nAPP s local://shells\nAPP h local://chart\n"
        'APP c local://tmpl\nAPPCMDS c ["kubectl apply -f nginx.yaml", "-n", "x"]\n'
        'LAUNCH ["k", "s", "h", "c"]\n'
    )
    kf = parse(text, ctx)
    assert kf.launch_commands() == [
        "kubectl apply -f application/apps/k/a.yaml && kubectl apply -f application/apps/k/sub/b.yml",
        "bash application/apps/s/x.sh && bash application/apps/s/y.sh",
        "helm install h application/apps/h/",
        "cd application/apps/c/ && kubectl apply -f nginx.yaml -n x",
    ]
    step = kf.steps[1]
    assert step.dest == "application/apps/k/" and step.app == "k" and step.changes_filesystem


def test_app_without_type_needs_appcmds(ctx: Path) -> None:
    errs = errors_of("FROM scratch\nAPP mysql local://pkg.tgz\nLAUNCH mysql\n", ctx)
    assert errs[0][0] == 2 and "type not detected" in errs[0][1]
    assert errs[0][2] == 'add APPCMDS mysql ["<command run inside application/apps/mysql/>"]'


def test_app_errors(ctx: Path) -> None:
    assert "has no scheme" in errors_of("FROM scratch\nAPP es https://charts/ es.tgz\n", ctx)[0][1]
    assert "not found in the build context" in errors_of("FROM scratch\nAPP a local://nope.yaml\n", ctx)[0][1]
    assert "outside the build context" in errors_of("FROM scratch\nAPP a local://../x.yaml\n", ctx)[0][1]
    assert "invalid app name" in errors_of("FROM scratch\nAPP ../evil local://app.yaml\n", ctx)[0][1]
    assert "has no sources" in errors_of("FROM scratch\nAPP lonely\n", ctx)[0][1]
    assert "needs an app name" in errors_of("FROM scratch\nAPP\n", ctx)[0][1]


def test_app_source_symlinked_out_of_the_context_is_refused(
    ctx: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.yaml").write_text("x")
    (ctx / "linked").symlink_to(outside)
    errs = errors_of("FROM scratch\nAPP a local://linked\n", ctx)
    assert errs[0][0] == 2 and "symlink out of the build context" in errs[0][1]


def test_symlink_loops_are_located_errors(ctx: Path) -> None:
    (ctx / "loop").symlink_to(ctx / "loop")
    errs = errors_of("FROM scratch\nAPP a local://loop\n", ctx)
    assert errs[0][0] == 2
    kf = parse("FROM scratch\nCOPY loop x/\n", ctx)
    assert [p.line for p in check_context(kf, ctx)] == [2]


def test_build_arg_values_are_not_in_the_report(ctx: Path) -> None:
    kf = parse("FROM scratch\nARG TOKEN\n", ctx, build_args={"TOKEN": "s3cr3t"})
    assert kf.args == {"TOKEN": "s3cr3t"}
    assert "s3cr3t" not in json.dumps(kf.to_dict())


def test_app_json_form_and_redefinition_warning(ctx: Path) -> None:
    kf = parse('FROM scratch\nAPP ["a", "local://app.yaml"]\nAPP a local://install.sh\n', ctx)
    assert kf.applications["a"].type == "shell"
    assert any("redefined" in w.message and w.line == 3 for w in kf.warnings)


def test_cni_csi_labels(ctx: Path) -> None:
    kf = parse("FROM scratch\nCNI calico local://app.yaml\nCSI openebs local://install.sh\n", ctx)
    assert kf.labels == {LABEL_CNI_PREFIX + "calico": "true", LABEL_CSI_PREFIX + "openebs": "true"}
    assert {s.instruction for s in kf.steps} == {"FROM", "CNI", "CSI"}
    assert kf.applications["calico"].type == "kube"


def test_kubeversion_label(ctx: Path) -> None:
    kf = parse("FROM scratch\nKUBEVERSION 1.22 - 1.24\n", ctx)
    assert kf.labels == {LABEL_KUBE_VERSION: "1.22 - 1.24"}
    assert "needs a version" in errors_of("FROM scratch\nKUBEVERSION\n", ctx)[0][1]


def test_appenv_merges_and_later_wins(ctx: Path) -> None:
    text = 'FROM scratch\nAPP a local://app.yaml\nAPPENV a k1=v1 k2="v 2"\nAPPENV a k1=v3 junk\n'
    kf = parse(text, ctx)
    assert kf.applications["a"].env == {"k1": "v3", "k2": "v 2"}
    assert any("junk" in w.message for w in kf.warnings)
    assert "unknown app 'b'" in errors_of("FROM scratch\nAPPENV b k=v\n", ctx)[0][1]
    assert "needs an app name" in errors_of("FROM scratch\nAPPENV a\n", ctx)[0][1]


def test_appenv_and_appcmds_on_base_app(ctx: Path) -> None:
    base = BaseImage("b:1", (Application("kyverno", "kube", ["k.yaml"], env={"x": "1"}),))
    text = 'FROM b:1\nAPPENV kyverno y=2\nAPPCMDS kyverno ["sh redirect.sh"]\nLAUNCH kyverno\n'
    app = parse(text, ctx, resolve_base=lambda r, p: base).applications["kyverno"]
    assert app.env == {"x": "1", "y": "2"} and app.cmds == ["sh redirect.sh"]


def test_appcmds_errors(ctx: Path) -> None:
    errs = errors_of("FROM scratch\nAPP a local://app.yaml\nAPPCMDS a kubectl apply -f x\n", ctx)
    assert (
        errs[0][0] == 3
        and "JSON array" in errs[0][1]
        and errs[0][2] == 'APPCMDS a ["kubectl apply -f app.yaml"]'
    )
    errs = errors_of('FROM scratch\nAPP nginx local://app.yaml\nAPPCMDS ngnix ["x"]\n', ctx)
    assert "unknown app 'ngnix'" in errs[0][1] and errs[0][2] == "did you mean nginx?"
    assert "needs an app name" in errors_of("FROM scratch\nAPPCMDS\n", ctx)[0][1]


def test_launch_forms(ctx: Path) -> None:
    assert parse("FROM scratch\nAPP a local://app.yaml\nLAUNCH a\n", ctx).launch_apps == ["a"]
    text = 'FROM scratch\nAPP a local://app.yaml\nAPP b local://install.sh\nLAUNCH ["b", "a"]\n'
    assert parse(text, ctx).launch_apps == ["b", "a"]


def test_launch_errors(ctx: Path) -> None:
    pre = "FROM scratch\nAPP a local://app.yaml\n"
    assert errors_of(pre + "LAUNCH a\nRUN true\n", ctx)[0][:2] == (3, "LAUNCH must be the last instruction")
    errs = errors_of(pre + "LAUNCH a\nLAUNCH a\n", ctx)
    assert (4, "LAUNCH given twice (first at line 3)") in [e[:2] for e in errs]
    assert "unknown app 'zz'" in errors_of(pre + "LAUNCH zz\n", ctx)[0][1]
    assert "needs at least one" in errors_of(pre + "LAUNCH\n", ctx)[0][1]
    errs = errors_of(pre + "CMD ls\nLAUNCH a\n", ctx)
    assert errs[0][0] == 4 and "cannot be used together" in errs[0][1]


def test_cmds(ctx: Path) -> None:
    kf = parse('FROM scratch\nCMD one\nCMDS ["kubectl apply -f a.yaml", "kubectl apply -f b.yaml"]\n', ctx)
    assert kf.raw_cmds == ["one", "kubectl apply -f a.yaml", "kubectl apply -f b.yaml"]
    assert kf.launch_commands() == kf.raw_cmds


def test_cmds_errors(ctx: Path) -> None:
    assert errors_of('FROM scratch\nCMDS ["a"]\nRUN x\n', ctx)[0][:2] == (
        2,
        "CMDS must be the last instruction",
    )
    errs = errors_of('FROM scratch\nCMDS ["a"]\nCMDS ["b"]\n', ctx)
    assert (3, "CMDS given twice (first at line 2)") in [e[:2] for e in errs]
    assert "JSON array" in errors_of("FROM scratch\nCMDS kubectl apply -f a\n", ctx)[0][1]


def test_cmd_forms(ctx: Path) -> None:
    text = (
        "FROM scratch\nCMD  kubectl apply -f a.yaml  \nRUN true\n"
        'CMD ["kubectl apply -f b.yaml", "kubectl apply -f c.yaml"]\nCMD [not, json]\n'
    )
    kf = parse(text, ctx)
    assert kf.raw_cmds == [
        "kubectl apply -f a.yaml",
        "kubectl apply -f b.yaml",
        "kubectl apply -f c.yaml",
        "[not, json]",
    ]
    assert any("not a JSON array" in w.message and w.line == 5 for w in kf.warnings)
    assert "CMD needs a command" in errors_of("FROM scratch\nCMD\n", ctx)[0][1]


def test_arg_in_cmd_is_left_for_run_time_with_a_warning(ctx: Path) -> None:
    kf = parse("FROM scratch\nARG Version=4.0.0\nCMD kubectl apply -f mongo-${Version}.yaml\n", ctx)
    assert kf.raw_cmds == ["kubectl apply -f mongo-${Version}.yaml"]
    assert any("$Version" in w.message for w in kf.warnings)


def test_unknown_instruction_did_you_mean_and_docker_only(ctx: Path) -> None:
    errs = errors_of("FROM scratch\nCOPPY a b\nUSER 1000\n...\n", ctx)
    assert errs[0] == (2, "unknown instruction 'COPPY'", "did you mean COPY?")
    assert errs[1][0] == 3 and "container process" in (errs[1][2] or "")
    assert errs[2][:2] == (4, "unknown instruction '...'")


def test_instructions_are_case_insensitive(ctx: Path) -> None:
    kf = parse("from scratch\napp a local://app.yaml\nlaunch a\n", ctx)
    assert kf.launch_apps == ["a"]


def test_all_problems_reported_at_once_in_line_order(ctx: Path) -> None:
    with pytest.raises(KubefileError) as info:
        parse("FROM scratch\nBOGUS\nCOPY ../x .\nLAUNCH nope\n", ctx, filename="my/Kubefile")
    lines = [p.line for p in info.value.problems]
    assert lines == sorted(lines) and lines == [2, 3, 4]
    rendered = info.value.render()
    assert "my/Kubefile:2: error: unknown instruction 'BOGUS'" in rendered


def test_empty_kubefile(ctx: Path) -> None:
    assert "no instructions" in errors_of("# only a comment\n\n", ctx)[0][1]


def test_image_extension_shape(ctx: Path) -> None:
    text = (
        "FROM scratch\nENV g=1\nLABEL l=v\nAPP a local://app.yaml\nAPPENV a k=v\n"
        'APPCMDS a ["kubectl apply -f app.yaml"]\nLAUNCH ["a"]\n'
    )
    ext = parse(text, ctx).image_extension("app-installer", "v0.1")
    assert ext == {
        "buildClient": {"sealerVersion": "v0.1", "buildahVersion": ""},
        "schemaVersion": "v1alpha1",
        "type": "app-installer",
        "applications": [
            {
                "name": "a",
                "type": "kube",
                "files": ["app.yaml"],
                "version": "v1",
                "env": {"k": "v"},
                "cmds": ["kubectl apply -f app.yaml"],
            }
        ],
        "labels": {"l": "v"},
        "env": {"g": "1"},
        "launch": {"app_names": ["a"]},
    }
    # Round trip through the base-image reader: what we write, a derived build reads back.
    base = BaseImage.from_extension("me:1", ext)
    assert [a.name for a in base.applications] == ["a"] and base.launch_apps == ("a",)


def test_to_dict_is_json(ctx: Path) -> None:
    kf = parse("FROM scratch\nAPP a local://app.yaml\nLAUNCH a\n", ctx)
    data = json.loads(json.dumps(kf.to_dict()))
    assert data["launch_commands"] == ["kubectl apply -f application/apps/a/app.yaml"]
    assert data["steps"][1]["layer"] is True


def test_parse_platform() -> None:
    assert parse_platform("arm64") == Platform("linux", "arm64")
    assert parse_platform("linux/x86_64") == Platform("linux", "amd64")
    assert parse_platform("linux/arm/v7") == Platform("linux", "arm", "v7")
    with pytest.raises(ImageError):
        parse_platform("linux/")
