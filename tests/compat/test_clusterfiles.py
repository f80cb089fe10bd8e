"""The sealer Clusterfile corpus: every real file gets the outcome expected.json records for Go sealer,
except the deliberate differences listed in tests/compat/README.md (asserted here too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sealer.errors import ClusterfileError, Problem
from sealer.model.clusterfile import dump_clusterfile, load_clusterfile, parse_clusterfile, parse_plugins

CORPUS = Path(__file__).parent / "data" / "sealer"
ENTRIES = [e for e in json.loads((CORPUS / "expected.json").read_text()) if e["kind"] == "clusterfile"]

# Where we deliberately differ from Go sealer (tests/compat/README.md says why).
ACCEPTED_DESPITE_INVALID = {
    # env as a mapping: sealer's own design doc writes it so; we read it and warn.
    "sealer-design-v2-env-is-mapping.yaml": "env is a mapping",
}
REJECTED_DESPITE_VALID = {
    # A HOSTNAME plugin: Go decodes it, then fails at install ("hook type: HOSTNAME is not registered").
    "sealer-decodertest-multidoc.yaml": "type 'HOSTNAME' is not supported",
}

# For every INVALID file, a piece of the error we must give: the reason, not just "rejected".
INVALID_REASON = {
    "sealercool-v2-env-hosts-is-mapping.yaml": "spec.hosts: hosts must be a list",
    "sealercool-kubeadm-tmpl-unrendered.yaml": "a key must be a plain word",
    "sealercool-config-process-data-is-mapping.yaml": "Config data must be a string",
    "sealer-design-cluster-plus-infra.yaml": "spec.hosts: no hosts",
    "sealer-design-plugin-label-with-cluster.yaml": "type 'LABEL' is not supported",
    "sealer-design-plugin-taint-ip-ranges.yaml": "type 'TAINT' is not supported",
    "sealer-fixture-utils-Clusterfile.yaml": "a second kind: Cluster document",
    "sealer-fixture-utils-v1Clusterfile.yaml": "mapping values are not allowed",
    "sealer-utilstest-hosts-no-image.yaml": "spec.image: no image",
    "sealer-v0.8.7-fixture-plugin-test_clusterfile.yaml": "type 'LABEL' is not supported",
    "sealer-v0.5.0-plugin-shell-on-ip-range.yaml": "type (none) is not supported",
    "sealercool-v086-kubeadm-docs-without-apiversion.yaml": "spec.hosts: no hosts",
    "sealercool-v086-cmd-args-host-without-roles.yaml": "has no role",
    "applications-nvidia-plugin-Clusterfile-alias-passwd.yaml": "alias",
    "applications-openebs-example-v1-untyped-plugin.yaml": "v1 Clusterfile",
    "sealos-docs-gen-apply-multidoc.yaml": "carries a port",
    "sealos-e2e-containerd-svc-taints.yaml": "carries a port",
    "sealos-config-test_clusterfile.yaml": "expected one image reference, got a list",
    "sealos-clusterfile-helm-template.yaml": "YAML",
}


def _name(entry: dict[str, Any]) -> str:
    return str(entry["file"]).rsplit("/", 1)[-1]


def _parse(entry: dict[str, Any]) -> tuple[Any, list[Problem]]:
    path = CORPUS / entry["file"]
    return parse_clusterfile(path.read_bytes(), path.name)


def _errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def _check_decoded(cf: Any, expected: dict[str, Any]) -> None:
    cluster = cf.cluster
    assert [h.ip for h in cluster.masters] == expected.get("masters", [])
    assert [h.ip for h in cluster.hosts if "node" in h.roles] == expected.get("nodes", [])
    assert cluster.image == expected["image"]
    if "configs" in expected:
        assert len(cf.configs) == expected["configs"]
    if expected.get("has_app"):
        assert any(d.get("kind") == "Application" for d in cf.other_documents)
    if "plugins" in expected:
        got = [f"{p.name}:{p.type}:{'|'.join(p.actions)}" for p in cf.plugins]
        assert got == expected["plugins"]
    if "kubeadm_pod_subnet" in expected:
        subnets = [
            d.get("networking", {}).get("podSubnet")
            for d in cf.kubeadm_documents
            if d.get("kind") == "ClusterConfiguration"
        ]
        assert expected["kubeadm_pod_subnet"] in subnets


def _env_of_file(entry: dict[str, Any]) -> dict[str, str]:
    """The cluster env as the file writes it (list form), to check decoding independently."""
    for doc in yaml.safe_load_all((CORPUS / entry["file"]).read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "Cluster":
            env = doc.get("spec", {}).get("env") or []
            if isinstance(env, list):
                return {str(e).split("=", 1)[0]: str(e).split("=", 1)[1] for e in env if "=" in str(e)}
    return {}


def test_corpus_is_complete() -> None:
    verdicts = [e["verdict"] for e in ENTRIES]
    assert len(ENTRIES) == 59
    assert {v: verdicts.count(v) for v in set(verdicts)} == {
        "VALID": 21,
        "INVALID": 20,
        "LEGACY": 10,
        "FRAGMENT": 8,
    }
    # Every INVALID file has its expected reason listed (or is a deliberate difference).
    invalid = {_name(e) for e in ENTRIES if e["verdict"] == "INVALID"}
    assert invalid == set(INVALID_REASON) | set(ACCEPTED_DESPITE_INVALID)


@pytest.mark.parametrize("entry", ENTRIES, ids=_name)
def test_corpus_file(entry: dict[str, Any]) -> None:
    name, verdict = _name(entry), entry["verdict"]
    cf, problems = _parse(entry)
    for p in problems:
        assert "internal error" not in p.message, p.render()
        assert p.file == name
    errors = _errors(problems)
    assert (cf is None) == bool(errors)
    rendered = "\n".join(p.render() for p in problems)

    if verdict == "VALID" and name in REJECTED_DESPITE_VALID:
        assert cf is None
        assert all(REJECTED_DESPITE_VALID[name] in p.message for p in errors), rendered
        # Without the offending plugin document, the rest decodes as Go sealer decodes it.
        text = (CORPUS / entry["file"]).read_text()
        kept = [d for d in text.split("\n---\n") if "type: HOSTNAME" not in d]
        cf2, problems2 = parse_clusterfile("\n---\n".join(kept), name)
        assert cf2 is not None, "\n".join(p.render() for p in problems2)
        expected = dict(entry["harness_result"])
        expected["plugins"] = [p for p in expected["plugins"] if ":HOSTNAME:" not in p]
        _check_decoded(cf2, expected)
        user_env = _env_of_file(entry)
        assert {k: cf2.cluster.env[k] for k in user_env} == user_env
        return
    if verdict == "VALID":
        assert cf is not None, rendered
        _check_decoded(cf, entry["harness_result"])
        # Go sealer's derived keys are appended (TestDecodeClusterFile pins them for the default registry).
        assert cf.cluster.env["RegistryURL"] == cf.cluster.registry.url
        user_env = _env_of_file(entry)
        assert {k: cf.cluster.env[k] for k in user_env} == user_env
        # What we write back reads back the same.
        again, _ = parse_clusterfile(dump_clusterfile(cf), "dump")
        assert again is not None and again.cluster == cf.cluster
        return
    if verdict == "INVALID" and name in ACCEPTED_DESPITE_INVALID:
        assert cf is not None, rendered
        assert any(ACCEPTED_DESPITE_INVALID[name] in p.message and p.severity == "warning" for p in problems)
        return
    if verdict == "INVALID":
        assert cf is None
        reasons = [p for p in errors if INVALID_REASON[name] in p.render()]
        assert reasons, rendered
        assert all(p.hint for p in reasons), rendered
        with pytest.raises(ClusterfileError) as info:
            load_clusterfile(CORPUS / entry["file"])
        assert [p.message for p in info.value.problems] == [p.message for p in problems]
        return
    if verdict == "LEGACY":
        v1_notes = [p for p in problems if "v1 Clusterfile" in p.message]
        assert v1_notes, rendered
        if cf is not None:
            # Converted as Go's ConvertV1ClusterToV2Cluster: masters.ipList -> master, nodes.ipList -> node.
            assert any(p.severity == "warning" and "deprecated" in p.message for p in v1_notes)
            spec = next(
                d
                for d in yaml.safe_load_all((CORPUS / entry["file"]).read_text())
                if d and d.get("kind") == "Cluster"
            )["spec"]
            assert [h.ip for h in cf.cluster.masters] == spec["masters"]["ipList"]
            assert [h.ip for h in cf.cluster.workers] == spec["nodes"]["ipList"]
            assert cf.cluster.image == entry["harness_result"]["image"]
        else:
            assert any(p.hint and "spec.hosts" in p.hint for p in v1_notes), rendered
        return
    assert verdict == "FRAGMENT"
    assert cf is None
    no_cluster = [p for p in errors if p.message == "no kind: Cluster document"]
    assert no_cluster and no_cluster[0].hint and "kind: Cluster" in no_cluster[0].hint, rendered
    # Plugin-only fragments are what an image's plugins/ directory holds: read them as such.
    expected_plugins = entry["harness_result"].get("plugins")
    if expected_plugins and not entry["harness_result"].get("configs"):
        plugins, plugin_problems = parse_plugins((CORPUS / entry["file"]).read_bytes(), name)
        assert not [p for p in plugin_problems if p.severity == "error"]
        assert [f"{p.name}:{p.type}:{'|'.join(p.actions)}" for p in plugins] == expected_plugins


def test_every_problem_is_located_or_global() -> None:
    """Errors inside a document carry a line; only whole-file problems may lack one."""
    for entry in ENTRIES:
        _, problems = _parse(entry)
        for p in _errors(problems):
            if p.line is None:
                assert p.message in {"no kind: Cluster document"} or p.path is not None, p.render()
