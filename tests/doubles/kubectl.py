"""A small `kubectl` stand-in (what `k3s kubectl` runs on hosts without a real kubectl).

Subset (documented in README.md): get (table, -o json|yaml|name|wide, -l, -n, -A), apply -f FILE|DIR|-,
create configmap|namespace, delete, label, version. Talks to the API with the kubeconfig like kubectl does.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

try:
    from . import apiserver as apis
    from .kubeclient import KubeClient, KubeError
except ImportError:
    import apiserver as apis  # type: ignore[no-redef]
    from kubeclient import KubeClient, KubeError  # type: ignore[no-redef]

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class CliError(Exception):
    pass


def resolve(kind_or_name: str) -> apis.Resource:
    k = kind_or_name.lower()
    for r in apis.RESOURCES:
        if k in (r.plural, r.singular, r.kind.lower(), *r.short) or k == f"{r.plural}.{r.group}":
            return r
    raise CliError(f'the server doesn\'t have a resource type "{kind_or_name}"')


def by_kind(api_version: str, kind: str) -> apis.Resource:
    for r in apis.RESOURCES:
        if r.kind == kind and r.group_version == api_version:
            return r
    raise CliError(
        f'resource mapping not found for name: "" namespace: "" from "": no matches for kind "{kind}" '
        f'in version "{api_version}"\nensure CRDs are installed first'
    )


def collection_path(r: apis.Resource, ns: str | None) -> str:
    base = f"/apis/{r.group}/{r.version}" if r.group else "/api/v1"
    return f"{base}/namespaces/{ns}/{r.plural}" if r.namespaced and ns else f"{base}/{r.plural}"


def load_docs(path: str) -> list[dict[str, Any]]:
    if path == "-":
        texts = [sys.stdin.read()]
    else:
        p = Path(path)
        if not p.exists():
            raise CliError(f'the path "{path}" does not exist')
        files = (
            sorted(x for x in p.iterdir() if x.suffix in (".yaml", ".yml", ".json")) if p.is_dir() else [p]
        )
        texts = [f.read_text() for f in files]
    docs: list[dict[str, Any]] = []
    for text in texts:
        try:
            for d in yaml.safe_load_all(text):
                if d is None:
                    continue
                if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
                    raise CliError(
                        f'error validating "{path}": error validating data: apiVersion or kind not set'
                    )
                if d["kind"] == "List":
                    docs.extend(d.get("items") or [])
                else:
                    docs.append(d)
        except yaml.YAMLError as e:
            raise CliError(f"error parsing {path}: {e}")
    return docs


def apply_obj(client: KubeClient, obj: dict[str, Any], default_ns: str = "default") -> str:
    r = by_kind(obj["apiVersion"], obj["kind"])
    meta = obj.setdefault("metadata", {})
    name = meta.get("name")
    if not name:
        raise CliError(
            f"error when retrieving current configuration of {r.kind}: resource name may not be empty"
        )
    ns = (meta.get("namespace") or default_ns) if r.namespaced else None
    if ns:
        meta["namespace"] = ns
    applied = json.dumps({k: v for k, v in obj.items() if k != "status"}, sort_keys=True)
    meta.setdefault("annotations", {})[LAST_APPLIED] = applied
    label = f"{r.singular}/{name}" if not r.group else f"{r.singular}.{r.group}/{name}"
    try:
        current = client.get(f"{collection_path(r, ns)}/{name}")
    except KubeError as e:
        if e.code != 404:
            raise
        client.create(collection_path(r, ns), obj)
        return f"{label} created"
    if (current.get("metadata", {}).get("annotations") or {}).get(LAST_APPLIED) == applied:
        return f"{label} unchanged"
    client.patch(f"{collection_path(r, ns)}/{name}", obj, "strategic")
    return f"{label} configured"


def apply_file(client: KubeClient, path: Path | str, namespace: str = "default") -> list[str]:
    return [apply_obj(client, d, namespace) for d in load_docs(str(path))]


def _print_table(table: dict[str, Any], wide: bool, no_headers: bool, with_ns: list[str] | None) -> None:
    cols = [c["name"].upper() for c in table["columnDefinitions"] if wide or c.get("priority", 0) == 0]
    rows = [[str(x) for x in row["cells"][: len(cols)]] for row in table["rows"]]
    if with_ns is not None:
        cols = ["NAMESPACE", *cols]
        rows = [[ns, *row] for ns, row in zip(with_ns, rows, strict=True)]
    if not rows:
        return
    table_rows = rows if no_headers else [cols, *rows]
    widths = [max(len(r[i]) for r in table_rows) for i in range(len(cols))]
    for r in table_rows:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def main(argv: list[str], default_kubeconfig: str | None = None) -> int:
    try:
        return _main(argv, default_kubeconfig)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KubeError as e:
        reason = e.body.get("reason") if isinstance(e.body, dict) else ""
        print(
            f"Error from server ({reason}): {e.body.get('message') if isinstance(e.body, dict) else e.body}",
            file=sys.stderr,
        )
        return 1
    except OSError as e:
        print(
            f"The connection to the server was refused - did you specify the right host or port? ({e})",
            file=sys.stderr,
        )
        return 1


def _main(argv: list[str], default_kubeconfig: str | None) -> int:
    opts: dict[str, Any] = {
        "namespace": None,
        "output": "",
        "selector": "",
        "all": False,
        "files": [],
        "literals": [],
        "no-headers": False,
        "kubeconfig": None,
    }
    positional: list[str] = []
    takes = {
        "-n": "namespace",
        "--namespace": "namespace",
        "-o": "output",
        "--output": "output",
        "-l": "selector",
        "--selector": "selector",
        "-f": "files",
        "--filename": "files",
        "--from-literal": "literals",
        "--kubeconfig": "kubeconfig",
    }
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, val = a.partition("=")
        if name in takes:
            if not eq:
                if i + 1 >= len(argv):
                    raise CliError(f"flag needs an argument: {name}")
                i += 1
                val = argv[i]
            key = takes[name]
            if isinstance(opts[key], list):
                opts[key].append(val)
            else:
                opts[key] = val
        elif a in ("-A", "--all-namespaces"):
            opts["all"] = True
        elif a == "--no-headers":
            opts["no-headers"] = True
        elif a in ("--ignore-daemonsets", "--delete-emptydir-data", "--force", "--overwrite") or a.startswith(
            (
                "--ignore-daemonsets=",
                "--delete-emptydir-data=",
                "--force=",
                "--overwrite=",
                "--timeout=",
                "--grace-period=",
            )
        ):
            pass  # accepted: nothing runs pods here, so they change nothing
        elif a.startswith("-") and a != "-":
            raise CliError(f"unknown flag: {name}\nSee 'kubectl --help' for usage.")
        else:
            positional.append(a)
        i += 1
    if not positional:
        print(
            "kubectl controls the Kubernetes cluster manager (stand-in subset: get, apply, create, delete, "
            "label, version)"
        )
        return 0
    kubeconfig = (
        opts["kubeconfig"]
        or os.environ.get("KUBECONFIG")
        or default_kubeconfig
        or str(Path.home() / ".kube" / "config")
    )
    verb, args = positional[0], positional[1:]
    if verb == "version" and opts["output"] == "" and not Path(kubeconfig).exists():
        print(f"Client Version: {apis.GIT_VERSION}")
        return 0
    if not Path(kubeconfig).exists():
        raise CliError(f"stat {kubeconfig}: no such file or directory")
    client = KubeClient.from_kubeconfig(kubeconfig)
    ns = opts["namespace"] or "default"
    if verb == "version":
        server = client.get("/version")
        print(
            f"Client Version: {apis.GIT_VERSION}\n"
            "Kustomize Version: v5.0.4-0.20230601165947-6ce0bf390ce3\n"
            f"Server Version: {server['gitVersion']}"
        )
        return 0
    if verb == "apply":
        if not opts["files"]:
            raise CliError("must specify one of -f and -k")
        for f in opts["files"]:
            for line in apply_file(client, f, ns):
                print(line)
        return 0
    if verb == "get":
        if not args:
            raise CliError("You must specify the type of resource to get.")
        kind, _, one = args[0].partition("/")
        r = resolve(kind)
        names = [one] if one else args[1:]
        scope = None if opts["all"] or not r.namespaced else ns
        out = opts["output"]
        query = f"?labelSelector={opts['selector']}" if opts["selector"] else ""
        if names:
            objs = [client.get(f"{collection_path(r, scope)}/{n}") for n in names]
        else:
            objs = client.get(collection_path(r, scope) + query)["items"]
        if out == "json":
            print(
                json.dumps(
                    objs[0]
                    if names and len(names) == 1
                    else {
                        "apiVersion": "v1",
                        "kind": "List",
                        "items": objs,
                        "metadata": {"resourceVersion": ""},
                    },
                    indent=4,
                )
            )
        elif out == "yaml":
            print(
                yaml.safe_dump(
                    objs[0]
                    if names and len(names) == 1
                    else {"apiVersion": "v1", "kind": "List", "items": objs},
                    sort_keys=False,
                ),
                end="",
            )
        elif out.startswith("jsonpath="):
            doc: Any = objs[0] if names and len(names) == 1 else {"items": objs}
            print(jsonpath(doc, out[len("jsonpath=") :]), end="")
        elif out == "name":
            for o in objs:
                print(f"{r.singular}/{o['metadata']['name']}")
        elif out in ("", "wide"):
            if not objs:
                where = f" in {scope} namespace" if scope else ""
                print(f"No resources found{where}.", file=sys.stderr)
                return 0
            table = apis._table(r, objs, 0)
            _print_table(
                table,
                out == "wide",
                opts["no-headers"],
                [o["metadata"].get("namespace", "") for o in objs] if opts["all"] and r.namespaced else None,
            )
        else:
            raise CliError(f'unable to match a printer suitable for the output format "{out}"')
        return 0
    if verb == "create":
        if len(args) < 2:
            raise CliError("Unexpected args: expected `create <kind> NAME`")
        kind, name = args[0], args[1]
        if kind in ("configmap", "cm"):
            data = {}
            for lit in opts["literals"]:
                k, sep, v = lit.partition("=")
                if not sep:
                    raise CliError(f"invalid literal source {lit}, expected key=value")
                data[k] = v
            client.create(
                f"/api/v1/namespaces/{ns}/configmaps",
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": ns},
                    "data": data,
                },
            )
            print(f"configmap/{name} created")
            return 0
        if kind in ("namespace", "ns"):
            client.create(
                "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            )
            print(f"namespace/{name} created")
            return 0
        raise CliError(f"the stand-in kubectl cannot create {kind!r}")
    if verb == "delete":
        if len(args) < 2 and "/" not in (args[0] if args else ""):
            raise CliError("resource(s) were provided, but no name was specified")
        kind, _, one = args[0].partition("/")
        r = resolve(kind)
        for n in [one] if one else args[1:]:
            client.delete(f"{collection_path(r, ns if r.namespaced else None)}/{n}")
            print(f'{r.singular} "{n}" deleted')
        return 0
    if verb == "label":
        if len(args) < 3:
            raise CliError("at least one label update is required")
        r = resolve(args[0])
        name = args[1]
        labels: dict[str, str | None] = {}
        for item in args[2:]:
            if item.endswith("-"):
                labels[item[:-1]] = None
            else:
                k, _, v = item.partition("=")
                labels[k] = v
        client.patch(
            f"{collection_path(r, ns if r.namespaced else None)}/{name}",
            {"metadata": {"labels": labels}},
            "merge",
        )
        print(f"{r.singular}/{name} labeled")
        return 0
    if verb in ("cordon", "uncordon", "drain"):
        if not args:
            raise CliError("resource(s) were provided, but no name was specified")
        for n in args:
            client.patch(f"/api/v1/nodes/{n}", {"spec": {"unschedulable": verb != "uncordon"}}, "merge")
            print(f"node/{n} {'un' if verb == 'uncordon' else ''}cordoned")
            if verb == "drain":
                print(f"node/{n} drained")
        return 0
    if verb == "taint":
        if len(args) < 3 or resolve(args[0]).plural != "nodes":
            raise CliError("at least one taint update is required")
        node = client.get(f"/api/v1/nodes/{args[1]}")
        taints = list((node.get("spec") or {}).get("taints") or [])
        for spec in args[2:]:
            if spec.endswith("-"):
                key = spec[:-1].split(":")[0].split("=")[0]
                if not any(t["key"] == key for t in taints):
                    raise CliError(f'taint "{key}" not found')
                taints = [t for t in taints if t["key"] != key]
                continue
            kv, _, effect = spec.rpartition(":")
            if effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
                raise CliError(f'invalid taint spec: {spec}, unsupported taint effect "{effect}"')
            key, _, value = kv.partition("=")
            taints = [t for t in taints if not (t["key"] == key and t["effect"] == effect)]
            taints.append({"key": key, "effect": effect, **({"value": value} if value else {})})
        client.patch(f"/api/v1/nodes/{args[1]}", {"spec": {"taints": taints}}, "merge")
        print(f"node/{args[1]} {'untainted' if all(a.endswith('-') for a in args[2:]) else 'tainted'}")
        return 0
    raise CliError(f'unknown command "{verb}" for "kubectl"')


def jsonpath(doc: Any, template: str) -> str:
    """kubectl's JSONPath for the common forms: {.a.b}, {.items[*].x}, {.items[0].x}, literal text."""
    out: list[str] = []
    pos = 0
    while pos < len(template):
        start = template.find("{", pos)
        if start < 0:
            out.append(template[pos:])
            break
        out.append(template[pos:start])
        end = template.find("}", start)
        if end < 0:
            raise CliError(f"error parsing jsonpath {template}, unclosed action")
        values: list[Any] = [doc]
        expr = template[start + 1 : end].strip().lstrip(".")
        for part in [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", expr) if p]:  # `\.` escapes a dot
            key, _, index = part.partition("[")
            nxt: list[Any] = []
            for v in values:
                if key:
                    v = v.get(key) if isinstance(v, dict) else None
                if index:
                    idx = index.rstrip("]")
                    if isinstance(v, list):
                        nxt.extend(v if idx == "*" else v[int(idx) : int(idx) + 1])
                elif v is not None:
                    nxt.append(v)
            values = nxt
        out.append(" ".join(json.dumps(v) if isinstance(v, (dict, list)) else str(v) for v in values))
        pos = end + 1
    return "".join(out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
