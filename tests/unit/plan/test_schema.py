"""Every plan the planner makes validates against the published JSON Schema (PLAN_SCHEMA).

A tiny validator for the keywords the schema uses keeps this free of new dependencies; it is tested
to reject documents too, so it cannot pass vacuously.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sealer.model.cluster import HostAlias, Taint
from sealer.plan import make_plan, plan_delete
from sealer.plan.schema import PLAN_SCHEMA
from tests.unit.plan.builders import cluster, group

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "array": (list,), "object": (dict,), "boolean": (bool,), "null": (type(None),),
    "integer": (int,), "number": (int, float),
}
_KNOWN = {
    "$schema", "$id", "title", "description", "type", "required", "additionalProperties", "properties",
    "items", "enum", "const", "pattern", "minItems",
}


def validate(doc: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    errors: list[str] = []
    unknown = set(schema) - _KNOWN
    assert not unknown, f"the test validator does not understand {unknown}: extend it"
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(
            isinstance(doc, _TYPES[n]) and not (n in ("integer", "number") and isinstance(doc, bool))
            for n in names
        )
        if not ok:
            return [f"{path}: expected {names}, got {type(doc).__name__}"]
    if "const" in schema and doc != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}")
    if "enum" in schema and doc not in schema["enum"]:
        errors.append(f"{path}: {doc!r} not in {schema['enum']}")
    if "pattern" in schema and isinstance(doc, str) and not re.search(schema["pattern"], doc):
        errors.append(f"{path}: {doc!r} does not match {schema['pattern']}")
    if isinstance(doc, dict):
        for key in schema.get("required", []):
            if key not in doc:
                errors.append(f"{path}: missing {key}")
        props = schema.get("properties", {})
        for key, value in doc.items():
            if key in props:
                errors += validate(value, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected {key}")
    if isinstance(doc, list):
        if len(doc) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(doc):
                errors += validate(item, schema["items"], f"{path}[{i}]")
    return errors


def sample_plans() -> list[dict[str, Any]]:
    base = cluster(["10.0.0.1", "10.0.0.2"], ["10.0.0.3", "10.0.0.4"])
    changed = cluster(
        groups=[
            group(["10.0.0.1", "10.0.0.5"], ("master",)),
            group(
                ["10.0.0.3", "10.0.0.6"], ("node", "gpu"), labels={"a": "b"},
                taints=[Taint("k", "v", "NoSchedule")], env={"X": "1"},
            ),
        ],
    )
    changed = replace(changed, image="new:v2", host_aliases=(HostAlias("10.0.0.9", ("x",)),))
    plans = [make_plan(base, None), make_plan(base, base), make_plan(changed, base), plan_delete(base)]
    # Through real JSON, as another tool would read it.
    return [json.loads(p.to_json()) for p in plans]


@pytest.mark.parametrize("index", range(4))
def test_plans_match_the_schema(index: int) -> None:
    doc = sample_plans()[index]
    assert validate(doc, PLAN_SCHEMA) == []


def test_the_update_sample_exercises_every_update_kind() -> None:
    kinds = {a["kind"] for a in sample_plans()[2]["actions"]}
    assert {"upgrade", "join-master", "join-workers", "remove-master", "remove-workers", "update-labels",
            "update-taints", "update-env", "update-host-aliases", "launch-apps"} <= kinds


def test_the_validator_rejects_broken_plans() -> None:
    doc = sample_plans()[0]
    doc["actions"][0]["kind"] = "reboot-everything"
    doc["actions"][0]["hosts"] = []
    del doc["reason"]
    doc["extra"] = 1
    errors = validate(doc, PLAN_SCHEMA)
    assert any("reboot-everything" in e for e in errors)
    assert any("fewer than 1" in e for e in errors)
    assert any("missing reason" in e for e in errors)
    assert any("unexpected extra" in e for e in errors)


def test_schema_is_valid_json() -> None:
    assert json.loads(json.dumps(PLAN_SCHEMA)) == PLAN_SCHEMA


def test_the_published_schema_file_matches_the_code() -> None:
    published = Path(__file__).parents[3] / "docs" / "plan.schema.json"
    assert json.loads(published.read_text()) == PLAN_SCHEMA, (
        "docs/plan.schema.json is stale: regenerate it from sealer.plan.schema.PLAN_SCHEMA"
    )
