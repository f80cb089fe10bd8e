"""The JSON Schema (draft 2020-12) of `sealer apply --dry-run -o json`: the contract other tools parse.

Bump PLAN_API_VERSION in `plan.actions` on any incompatible change; adding optional fields is compatible.
"""

from __future__ import annotations

from typing import Any

from sealer.plan.actions import ACTION_KINDS, PLAN_API_VERSION

_STRING_OR_NULL: dict[str, Any] = {"type": ["string", "null"]}

ACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "kind", "hosts", "parallel", "dependsOn", "reason", "details"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": "^a[0-9]+$", "description": "unique in the plan: a1, a2, ..."},
        "kind": {"type": "string", "enum": list(ACTION_KINDS)},
        "hosts": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
            "description": "host IPs the action works on",
        },
        "parallel": {"type": "boolean", "description": "the hosts may be worked on at the same time"},
        "dependsOn": {
            "type": "array",
            "items": {"type": "string"},
            "description": "ids of actions that must finish first; always earlier in the list",
        },
        "reason": {"type": "string", "description": "why the action is needed, for people"},
        "details": {
            "type": "object",
            "description": (
                "kind-specific: install {image}; "
                "join-master / join-workers {rejoin: true} for hosts lost from the cluster; "
                "upgrade {from, to}; "
                "update-labels {set: {k: v}, remove: [k]}; "
                "update-taints {add: [taint], remove: [taint-]}; "
                "update-env {set: [key], unset: [key]} (keys only: values may be secret); "
                "update-host-aliases {hostAliases: {ip: [name]}}; "
                "uninstall {deleteState}"
            ),
        },
    },
}

PLAN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://sealer.io/schemas/plan.json",
    "title": "sealer plan",
    "type": "object",
    "required": [
        "apiVersion", "kind", "cluster", "operation", "image", "previousImage", "reason", "notes", "actions",
    ],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"type": "string", "const": PLAN_API_VERSION},
        "kind": {"type": "string", "const": "Plan"},
        "cluster": {"type": "string", "description": "metadata.name of the cluster"},
        "operation": {"type": "string", "enum": ["create", "update", "delete", "none"]},
        "image": _STRING_OR_NULL,
        "previousImage": _STRING_OR_NULL,
        "reason": {"type": "string", "description": "one-line summary; says why when there is nothing to do"},
        "notes": {"type": "array", "items": {"type": "string"}},
        "actions": {"type": "array", "items": ACTION_SCHEMA, "description": "in execution order"},
    },
}
