"""The sealer Kubefile corpus: every real Kubefile gets the outcome expected.json records for Go sealer
(apps, launch list, raw cmds, env, labels), except the deliberate differences listed in
tests/compat/README_kubefiles.md, which are asserted here too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from sealer.errors import KubefileError
from sealer.image.kubefile import (
    LABEL_CNI_PREFIX,
    LABEL_KUBE_VERSION,
    BaseImage,
    Kubefile,
    check_context,
    parse_kubefile,
)
from sealer.image.kubefile_apps import Application
from sealer.image.oci import Platform

CORPUS = Path(__file__).parent / "data" / "sealer"
ENTRIES = [e for e in json.loads((CORPUS / "expected.json").read_text()) if e["kind"] == "kubefile"]

# The official base images carry built-in apps (INDEX.md, "How the expected outcomes were established").
BASE_APPS = {
    "docker.io/sealerio/kubernetes:v1-22-15-sealerio-2": ["calico"],
    "docker.io/sealerio/kubernetes:v1.22.15": ["calico"],
    "docker.io/sealerio/kubernetes:v1.22.15-sealerio-2-official-docker-1": ["calico"],
    "docker.io/sealerio/kubernetes-kyverno:v1-22-15-sealerio-1": ["calico", "kyverno"],
}

# Deliberate differences from Go sealer, per file: field -> the value we produce instead, and why.
# README_kubefiles.md explains each one.
DIFFERENT = {
    "applications-mysql-operator-cmd-json.Kubefile": {
        # JSON-form CMD: one command per element (Go keeps the JSON text as one failing command).
        "raw_cmds": ["kubectl apply -f manifests/bundle.yaml", "kubectl apply -f manifests/cr.yaml"],
    },
    "applications-strimzi-kafka-mixed-cmd.Kubefile": {
        "raw_cmds": [
            "kubectl apply -f manifests/kafka-crd.yaml",
            "kubectl apply -f manifests/storage-class.yaml",
            "kubectl patch storageclass hostpath -p "
            '\'{"metadata": {"annotations":{"storageclass.kubernetes.io/is-default-class":"true"}}}\'',
            "kubectl apply -f manifests/kafka-instance.yaml",
        ],
    },
    "sealos-deploy-cloud-env-cmd-json.Kubefile": {
        "raw_cmds": ["bash scripts/init.sh"],
        # ENV values lose their quotes, as Docker (and this image's own RUN steps) see them.
        "global_env": {
            "cloudDomain": "127.0.0.1.nip.io",
            "cloudPort": "",
            "mongodbUri": "",
            "mongodbVersion": "mongodb-5.0",
            "acmednsHost": "auth.acme-dns.io",
            "acmednsSecret": "",
        },
    },
    # Whitespace around a CMD is trimmed (Go keeps a leading/trailing space; the shell ignores it).
    "applications-loki-fluentbit-cmd-double-space.Kubefile": {
        "raw_cmds": [
            "kubectl create ns fluentbit-loki-stack-system"
            " && kubectl apply -f fluentbit-loki-stack-system.yaml"
        ],
    },
    "applications-kube-prometheus-stack-blank-lines.Kubefile": {
        "raw_cmds": [
            "kubectl create ns kube-prometheus-stack",
            "kubectl create -f crds.yaml",
            "kubectl apply -f kube-prometheus-stack.yaml",
            "kubectl apply -f hooks.yaml",
        ],
    },
}

# Every INVALID file is rejected; the first error must be on this line and say this.
INVALID_REASON = {
    "sealer-readme-app-https-tgz-launch.Kubefile": (2, "app mysql: type not detected"),
    "sealercool-appimage-url-space-typo.Kubefile": (2, "app mysql: type not detected"),
    "sealer-api-kubefile-trailing-comments.Kubefile": (
        1,
        "unexpected words after the FROM image: '# Base Image'",
    ),
    "sealer-design-global-config-ellipsis-line.Kubefile": (2, "unknown instruction '...'"),
    "sealer-design-kubefile-alpha-syntax-sketch.Kubefile": (1, "unexpected words after the FROM image"),
    "sealos-controllers-user-USER.Kubefile": (3, "unknown instruction 'USER'"),
}
# ... and these further problems must be among the errors (Go stops at the first, we list all).
INVALID_ALSO = {
    "sealercool-appimage-url-space-typo.Kubefile": (3, "source 'elasticsearch.tgz' has no scheme"),
    "sealer-design-kubefile-alpha-syntax-sketch.Kubefile": (2, "invalid app name '(specify'"),
}


def _resolve(reference: str, platform: Platform) -> BaseImage:
    apps = BASE_APPS.get(reference, [])
    return BaseImage(reference, tuple(Application(a, "kube", [f"{a}.yaml"]) for a in apps))


def _context(entry: dict[str, Any], tmp_path: Path) -> Path:
    """The included build context plus empty stubs for the files the harness assumed."""
    name = Path(entry["file"]).stem
    ctx = tmp_path / "ctx"
    included = CORPUS / "kubefiles" / "contexts" / name
    if included.is_dir():
        shutil.copytree(included, ctx)
    ctx.mkdir(parents=True, exist_ok=True)
    for stub in entry.get("stubs_assumed", []):
        path = ctx / stub
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return ctx


def _observed(kf: Kubefile) -> dict[str, Any]:
    apps = kf.applications.values()
    return {
        "apps": sorted(f'{a.name}(type="{a.type}")' for a in apps),
        "launch": kf.launch_apps,
        "raw_cmds": kf.raw_cmds,
        "global_env": kf.env,
        "app_cmds": {a.name: a.cmds for a in apps if a.cmds},
        "app_env": {a.name: a.env for a in apps if a.env},
    }


def _parse(entry: dict[str, Any], tmp_path: Path, **kw: Any) -> Kubefile:
    path = CORPUS / entry["file"]
    return parse_kubefile(
        path.read_text(), context=_context(entry, tmp_path), filename=path.name, resolve_base=_resolve, **kw
    )


def _ids(entries: list[dict[str, Any]]) -> list[str]:
    return [Path(e["file"]).name for e in entries]


VALID = [e for e in ENTRIES if e["verdict"] == "VALID"]
INVALID = [e for e in ENTRIES if e["verdict"] == "INVALID"]
FRAGMENT = [e for e in ENTRIES if e["verdict"] == "FRAGMENT"]


def test_corpus_is_complete() -> None:
    assert (len(VALID), len(INVALID), len(FRAGMENT)) == (43, 6, 3)
    assert set(INVALID_REASON) == set(_ids(INVALID))
    assert set(DIFFERENT) <= set(_ids(VALID))


@pytest.mark.parametrize("entry", VALID, ids=_ids(VALID))
def test_valid_kubefile_parses_as_sealer_does(entry: dict[str, Any], tmp_path: Path) -> None:
    kf = _parse(entry, tmp_path)
    observed = _observed(kf)
    expected = {**entry["harness_result"], **DIFFERENT.get(Path(entry["file"]).name, {})}
    for key, want in expected.items():
        assert observed[key] == want, key
    # What the harness did not record is empty in Go's result too.
    for key in ("apps", "launch", "raw_cmds"):
        if key not in expected:
            assert observed[key] == [], key
    # Runtime-selecting labels come through unchanged.
    if "k0s-labels" in entry["file"]:
        assert kf.labels["cluster.alpha.sealer.io/cluster-runtime-type"] == "k0s"
        assert kf.labels["cluster.alpha.sealer.io/container-runtime-version"] == "1.5.12"


@pytest.mark.parametrize("entry", INVALID, ids=_ids(INVALID))
def test_invalid_kubefile_is_rejected_with_a_line(entry: dict[str, Any], tmp_path: Path) -> None:
    name = Path(entry["file"]).name
    with pytest.raises(KubefileError) as info:
        _parse(entry, tmp_path)
    errors = [p for p in info.value.problems if p.severity == "error"]
    line, text = INVALID_REASON[name]
    assert errors[0].line == line and text in errors[0].message, errors[0].render()
    assert all(p.file == name for p in errors)
    if name in INVALID_ALSO:
        also_line, also_text = INVALID_ALSO[name]
        assert any(p.line == also_line and also_text in p.message for p in errors)


@pytest.mark.parametrize("entry", FRAGMENT, ids=_ids(FRAGMENT))
def test_fragment_is_rejected_for_missing_from_but_parses_as_a_fragment(
    entry: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(KubefileError) as info:
        _parse(entry, tmp_path / "whole")
    first = info.value.problems[0]
    assert first.line == 1 and "no FROM" in first.message and "FROM scratch" in (first.hint or "")
    kf = _parse(entry, tmp_path / "fragment", require_from=False)
    observed = _observed(kf)
    for key, want in entry["harness_result"].items():
        assert observed[key] == want, key
    if "kubeversion" in entry["file"]:
        assert kf.labels == {LABEL_KUBE_VERSION: "1.22 - 1.24"}
    if "cni-no-from" in entry["file"]:
        assert kf.labels == {LABEL_CNI_PREFIX + "flannel": "true", LABEL_CNI_PREFIX + "calico": "true"}


def test_multi_arch_fixture_copies_the_platform_tree(tmp_path: Path) -> None:
    entry = next(e for e in VALID if "multi_arch" in e["file"])
    for arch in ("amd64", "arm64"):
        kf = _parse(entry, tmp_path / arch, platform=Platform("linux", arch))
        copy = next(s for s in kf.steps if s.instruction == "COPY")
        assert [s.path for s in copy.sources] == [f"{arch}/bin"]
        assert check_context(kf, tmp_path / arch / "ctx") == []


def test_fixtures_with_full_contexts_pass_the_context_check(tmp_path: Path) -> None:
    # sealer's own e2e fixtures ship every file they COPY, so nothing may be reported missing.
    for entry in VALID:
        if not entry["file"].startswith("kubefiles/sealer-fixture-"):
            continue
        target = tmp_path / Path(entry["file"]).stem
        kf = _parse(entry, target)
        assert check_context(kf, target / "ctx") == [], entry["file"]
