"""A small, strict Kubernetes API server (the subset our product and the stand-ins use), for tests.

Mirrors kube-apiserver v1.30 behaviour for: TLS with a cluster CA, x509 client-certificate and static
bearer-token authentication (anonymous off, as k3s runs it), a node-restriction-like authorizer,
discovery, CRUD/list/watch/patch of the resources in RESOURCES, status subresources, label and field
selectors, Table output for kubectl, and a node-lifecycle controller (heartbeat -> Ready/Unknown).
State lives in one JSON file, so a restart keeps it. A server may instead run as a *follower* that
forwards every API request to the store-owning server (see `Upstream`): that is the HA model of
these stand-ins. A follower also keeps a replica of the store, streamed from the owner (snapshot,
then every change), and answers reads (get, list, watch) from it while the owner is unreachable, as
an API server whose etcd member still has quorum would; writes then fail with 503 and /readyz fails.

Runs on the test-bed hosts: stdlib + PyYAML + cryptography only. Usable on its own:
    python3 apiserver.py --data-dir D --port P --tls-san 127.0.0.1 [--token-auth-file F]
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime
import http.client
import http.server
import json
import logging
import os
import re
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from . import patch as patchlib
    from . import pki
except ImportError:  # running from a zipapp or as a script: sibling modules are top level
    import patch as patchlib  # type: ignore[no-redef]
    import pki  # type: ignore[no-redef]

log = logging.getLogger("apiserver")

# The full version string /version reports; k3s sets it to its own version (build.py can stamp another).
GIT_VERSION = "v1.30.6+k3s1"
KUBE_VERSION = GIT_VERSION.split("+")[0]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short: tuple[str, ...] = ()
    status: bool = False

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

RESOURCES = [
    Resource("", "v1", "namespaces", "Namespace", False, ("ns",), True),
    Resource("", "v1", "nodes", "Node", False, ("no",), True),
    Resource("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    Resource("", "v1", "secrets", "Secret", True),
    Resource("", "v1", "services", "Service", True, ("svc",), True),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
    Resource("", "v1", "pods", "Pod", True, ("po",), True),
    Resource("", "v1", "endpoints", "Endpoints", True, ("ep",)),
    Resource("", "v1", "events", "Event", True, ("ev",)),
    Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), True),
    Resource("apps", "v1", "deployments", "Deployment", True, ("deploy",), True),
    Resource("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), True),
    Resource("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), True),
    Resource("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), True),
    Resource("batch", "v1", "jobs", "Job", True, (), True),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
    Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    Resource("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, ("sc",)),
    Resource(
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "CertificateSigningRequest",
        False,
        ("csr",),
        True,
    ),
]
GROUPS: dict[str, list[Resource]] = {}
for _r in RESOURCES:
    GROUPS.setdefault(_r.group, []).append(_r)

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> float:
    value = value.replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(value).timestamp()


class ApiError(Exception):
    """Answered to the client as a metav1.Status."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(res: Resource, name: str) -> ApiError:
    what = f"{res.plural}.{res.group}" if res.group else res.plural
    return ApiError(
        404, "NotFound", f'{what} "{name}" not found', {"name": name, "group": res.group, "kind": res.plural}
    )


# ---------------------------------------------------------------------------------------------- store


@dataclass
class Event:
    rv: int
    type: str
    key: str
    obj: dict[str, Any]


class Store:
    """All objects, a global resourceVersion counter, and a bounded event log for watches.

    Persisted to one JSON file on every write (written to a temp file then renamed, mode 0600 since it
    holds Secrets), which is what lets a restarted server keep its cluster.
    """

    EVENT_LOG = 2000

    def __init__(self, path: Path | None, *, defaults: bool = True) -> None:
        self.path = path
        self.lock = threading.Condition()
        self.rv = 1
        self.objects: dict[str, dict[str, Any]] = {}
        self.events: list[Event] = []
        if path is not None and path.exists():
            data = json.loads(path.read_text())
            self.rv = int(data["rv"])
            self.objects = data["objects"]
        if not defaults:  # a follower's replica: everything comes from the owner
            return
        with self.lock:
            for ns in DEFAULT_NAMESPACES:
                key = self.key(_res("namespaces"), None, ns)
                if key not in self.objects:
                    self._put(
                        key,
                        {
                            "apiVersion": "v1",
                            "kind": "Namespace",
                            "metadata": {"name": ns},
                            "spec": {"finalizers": ["kubernetes"]},
                            "status": {"phase": "Active"},
                        },
                        "ADDED",
                    )
            self._save()

    @staticmethod
    def key(res: Resource, ns: str | None, name: str) -> str:
        return f"{res.group}/{res.plural}/{ns or ''}/{name}"

    def _save(self) -> None:
        if self.path is None:
            return
        data = json.dumps({"rv": self.rv, "objects": self.objects}).encode()
        pki.write_private(self.path, data)

    def _put(self, key: str, obj: dict[str, Any], kind: str) -> dict[str, Any]:
        self.rv += 1
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self.rv)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_rfc3339())
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.events.append(Event(self.rv, kind, key, copy.deepcopy(obj)))
        del self.events[: -self.EVENT_LOG]
        self._save()
        self.lock.notify_all()
        return copy.deepcopy(obj)

    def get(self, res: Resource, ns: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.get(self.key(res, ns, name))
            if obj is None:
                raise not_found(res, name)
            return copy.deepcopy(obj)

    def list(self, res: Resource, ns: str | None) -> tuple[list[dict[str, Any]], int]:
        prefix = f"{res.group}/{res.plural}/{ns}/" if ns else f"{res.group}/{res.plural}/"
        with self.lock:
            items = [copy.deepcopy(o) for k, o in sorted(self.objects.items()) if k.startswith(prefix)]
            return items, self.rv

    def create(self, res: Resource, ns: str | None, obj: dict[str, Any]) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        with self.lock:
            if res.namespaced and self.key(_res("namespaces"), None, ns or "") not in self.objects:
                raise ApiError(
                    404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"}
                )
            key = self.key(res, ns, name)
            if key in self.objects:
                what = f"{res.plural}.{res.group}" if res.group else res.plural
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{what} "{name}" already exists',
                    {"name": name, "group": res.group, "kind": res.plural},
                )
            for m in ("resourceVersion", "uid", "creationTimestamp"):
                obj["metadata"].pop(m, None)
            return self._put(key, obj, "ADDED")

    def update(
        self,
        res: Resource,
        ns: str | None,
        name: str,
        mutate: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        check_rv: str | None = None,
    ) -> dict[str, Any]:
        """Read-modify-write under the store lock, so concurrent patches never lose updates."""
        with self.lock:
            key = self.key(res, ns, name)
            current = self.objects.get(key)
            if current is None:
                raise not_found(res, name)
            if check_rv and check_rv != current["metadata"]["resourceVersion"]:
                what = f"{res.plural}.{res.group}" if res.group else res.plural
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {what} "{name}": the object '
                    "has been modified; please apply your changes to the latest version and try again",
                    {"name": name, "group": res.group, "kind": res.plural},
                )
            new = mutate(copy.deepcopy(current))
            meta = new.setdefault("metadata", {})
            for m in ("uid", "creationTimestamp", "name", "namespace"):
                if m in current["metadata"]:
                    meta[m] = current["metadata"][m]
            if new == current:
                return copy.deepcopy(current)  # no-op writes do not bump resourceVersion, as upstream
            return self._put(key, new, "MODIFIED")

    def delete(self, res: Resource, ns: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            key = self.key(res, ns, name)
            current = self.objects.get(key)
            if current is None:
                raise not_found(res, name)
            if res.plural == "namespaces":
                for k in [k for k in self.objects if k.split("/")[2] == name]:
                    self._put(k, self.objects[k], "DELETED")
            return self._put(key, current, "DELETED")

    def events_since(self, rv: int) -> list[Event] | None:
        """Events after `rv`, or None if the log no longer reaches back that far (410 Gone)."""
        if self.events and rv < self.events[0].rv - 1:
            return None
        return [e for e in self.events if e.rv > rv]

    def snapshot(self) -> bytes:
        with self.lock:
            return json.dumps({"rv": self.rv, "objects": self.objects}).encode()

    # -- a follower's replica: written only by the replication stream, with the owner's versions

    def load_replica(self, rv: int, objects: dict[str, dict[str, Any]]) -> None:
        """Take the owner's whole state (first sync, or after a lost stream). What changed since the
        replica last heard becomes events, so a watch served from the replica across the gap sees
        the changes, as one served from a watch cache would."""
        with self.lock:
            changes = [
                Event(
                    int(o["metadata"]["resourceVersion"]), "MODIFIED" if k in self.objects else "ADDED", k, o
                )
                for k, o in objects.items()
                if self.objects.get(k) != o
            ]
            changes += [Event(rv, "DELETED", k, o) for k, o in self.objects.items() if k not in objects]
            self.objects, self.rv = objects, rv
            self.events.extend(sorted(changes, key=lambda e: e.rv))
            del self.events[: -self.EVENT_LOG]
            self.lock.notify_all()

    def apply_replicated(self, rv: int, kind: str, key: str, obj: dict[str, Any]) -> None:
        with self.lock:
            if kind == "DELETED":
                self.objects.pop(key, None)
            else:
                self.objects[key] = obj
            self.rv = rv
            self.events.append(Event(rv, kind, key, obj))
            del self.events[: -self.EVENT_LOG]
            self.lock.notify_all()


def _res(plural: str, group: str = "") -> Resource:
    for r in RESOURCES:
        if r.plural == plural and r.group == group:
            return r
    raise KeyError(plural)


# ------------------------------------------------------------------------------------------ selectors


_SEL_SET = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(sel: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in sel:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_selector(selector):
        term = term.strip()
        m = _SEL_SET.match(term)
        if m:
            k, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                tests.append(lambda labels, k=k, vals=vals: labels.get(k) in vals)
            else:
                tests.append(lambda labels, k=k, vals=vals: labels.get(k) not in vals)
        elif "!=" in term:
            k, v = (s.strip() for s in term.split("!=", 1))
            tests.append(lambda labels, k=k, v=v: labels.get(k) != v)
        elif "=" in term:
            k, v = (s.strip() for s in term.replace("==", "=").split("=", 1))
            tests.append(lambda labels, k=k, v=v: labels.get(k) == v)
        elif term.startswith("!"):
            k = term[1:].strip()
            tests.append(lambda labels, k=k: k not in labels)
        elif re.match(r"^[A-Za-z0-9_./-]+$", term):
            tests.append(lambda labels, k=term: k in labels)
        else:
            raise ApiError(
                400, "BadRequest", f"unable to parse requirement: invalid label selector {selector!r}"
            )
    return lambda labels: all(t(labels) for t in tests)


def field_matcher(selector: str) -> Callable[[dict[str, Any]], bool]:
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for term in _split_selector(selector):
        neg = "!=" in term
        k, v = (s.strip() for s in re.split(r"!=|==|=", term, maxsplit=1))
        path = k.split(".")

        def get(obj: dict[str, Any], path: list[str] = path) -> Any:
            cur: Any = obj
            for p in path:
                cur = cur.get(p) if isinstance(cur, dict) else None
            return "" if cur is None else str(cur)

        if k not in (
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "status.phase",
            "type",
            "spec.unschedulable",
        ):
            raise ApiError(
                400,
                "BadRequest",
                f'"{k}" is not a known field selector: only "metadata.name", "metadata.namespace"',
            )
        tests.append(lambda o, get=get, v=v, neg=neg: (get(o) != v) if neg else (get(o) == v))
    return lambda obj: all(t(obj) for t in tests)


# --------------------------------------------------------------------------------------------- auth


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()


def load_token_file(path: Path) -> dict[str, User]:
    """kube-apiserver --token-auth-file: CSV `token,user,uid[,"group1,group2"]`."""
    tokens: dict[str, User] = {}
    import csv

    with path.open() as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{lineno}: token file lines need token,user,uid")
            groups = tuple(g for g in (row[3].split(",") if len(row) > 3 else []) if g)
            tokens[row[0]] = User(row[1], groups)
    return tokens


def authorize(user: User, verb: str, res: Resource | None, ns: str | None, name: str | None) -> bool:
    """A tiny RBAC: system:masters may do anything; nodes may manage their own Node and Lease
    (what the NodeRestriction admission plugin allows) and read the rest; others only discovery."""
    if "system:masters" in user.groups or "kubeadm:cluster-admins" in user.groups:
        return True  # kubeadm binds kubeadm:cluster-admins (admin.conf's group) to cluster-admin
    if res is None:
        return True  # non-resource URLs (/version, /api, ...) are readable by every authenticated user
    if (
        "system:bootstrappers" in user.groups
        and verb == "get"
        and res.plural == "configmaps"
        and (
            (ns, name)
            in (
                ("kube-system", "kubeadm-config"),
                ("kube-system", "kubelet-config"),
                ("kube-public", "cluster-info"),
                ("kube-system", "kubeadm-standin-etcd"),
            )
        )
    ):
        return True  # kubeadm's RBAC for joining nodes
    if (
        "system:bootstrappers" in user.groups
        and verb == "get"
        and res.plural == "secrets"
        and (ns, name) == ("kube-system", "kubeadm-certs")
    ):
        return True  # kubeadm:kubeadm-certs Role: joining control planes download the shared certificates
    if "system:bootstrappers" in user.groups and verb == "get" and res.plural == "nodes":
        return True  # kubeadm:get-nodes ClusterRole: join checks no Ready Node has its name
    if user.name == "system:anonymous":
        # kubeadm's bootstrap-signer Role: anyone may read the signed cluster-info, nothing else
        return verb == "get" and res.plural == "configmaps" and ns == "kube-public" and name == "cluster-info"
    if (
        res.plural == "certificatesigningrequests"
        and verb in ("create", "get", "list", "watch")
        and ("system:bootstrappers" in user.groups or "system:nodes" in user.groups)
    ):
        return True
    if "system:nodes" in user.groups and user.name.startswith("system:node:"):
        node = user.name[len("system:node:") :]
        if verb in ("get", "list", "watch"):
            return True
        if res.plural == "nodes":
            return verb == "create" or name == node
        if res.plural == "leases" and ns == "kube-node-lease":
            return verb == "create" or name == node
        if res.plural == "events":
            return True
    return False


# ------------------------------------------------------------------------------------- upstream/HA


# The owner streams its store to followers here (stand-in only: etcd replicates over its own peer
# protocol, which has no API-server face). One JSON object a line: SNAPSHOT first, then EVENT per
# change, PING when idle so a follower notices a silent network.
REPLICATION_PATH = "/standin/v1/replication"
REPLICATION_PING = 2.0
REPLICATION_IDLE = 10.0  # a follower drops a stream that said nothing for this long, and reconnects


class OwnerUnreachable(ApiError):
    """The store owner did not answer a forwarded request (etcd would say: request timed out)."""


@dataclass
class Upstream:
    """Where a follower forwards API requests: the store owner, via an identity allowed to impersonate."""

    host: str
    port: int
    context: ssl.SSLContext

    def connection(self, timeout: float | None = 10.0) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=timeout)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # forwarded bodies: no Nagle stall
        return conn


# ------------------------------------------------------------------------------------------- server


ExtHandler = Callable[
    ["Handler", str, str, dict[str, list[str]], bytes], "tuple[int, dict[str, str], bytes] | None"
]


@dataclass
class Config:
    data_dir: Path
    bind: str = "0.0.0.0"
    port: int = 6443
    server_cert: Path = Path()
    server_key: Path = Path()
    client_ca: Path = Path()
    token_auth_file: Path | None = None
    anonymous_auth: bool = False
    node_monitor_grace: float = 40.0
    advertise: str = "127.0.0.1"
    upstream: Upstream | None = None
    ext_handler: ExtHandler | None = None
    tokens: dict[str, User] = field(default_factory=dict)
    # The CA that signs kubelet client CSRs (kube-controller-manager's --cluster-signing-* files).
    signer_cert: Path | None = None
    signer_key: Path | None = None


class APIServer:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.store: Store | None = None if cfg.upstream else Store(cfg.data_dir / "state.json")
        # A follower's copy of the owner's store, served for reads while the owner is unreachable.
        self.replica: Store | None = Store(None, defaults=False) if cfg.upstream else None
        self.replica_synced = threading.Event()
        self._streams: set[threading.Thread] = set()  # owner: replication streams being served
        self._inflight = 0  # requests being answered, watches and streams aside
        self._idle = threading.Condition()
        if cfg.token_auth_file:
            cfg.tokens = load_token_file(cfg.token_auth_file)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cfg.server_cert), str(cfg.server_key))
        ctx.load_verify_locations(cafile=str(cfg.client_ca))
        # Optional: a client without a certificate may still use a bearer token; one with a certificate
        # not signed by the client CA fails the handshake (unlike Go, which answers 401 - both reject).
        ctx.verify_mode = ssl.CERT_OPTIONAL
        self.ssl_context = ctx
        family = socket.AF_INET6 if ":" in cfg.bind else socket.AF_INET

        class _Server(http.server.ThreadingHTTPServer):
            address_family = family
            daemon_threads = True
            allow_reuse_address = True

        self.httpd = _Server((cfg.bind, cfg.port), Handler)
        self.httpd.api = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.started = time.time()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def serve_in_background(self) -> None:
        t = threading.Thread(target=self.httpd.serve_forever, name="apiserver", daemon=True)
        t.start()
        self._threads.append(t)
        if self.store is not None:
            c = threading.Thread(target=self._node_lifecycle, name="node-lifecycle", daemon=True)
            c.start()
            self._threads.append(c)
        if self.replica is not None:
            r = threading.Thread(target=self._follow_owner, name="replication", daemon=True)
            r.start()
            self._threads.append(r)

    def shutdown(self) -> None:
        """Stop as kube-apiserver does on SIGTERM: no new connections (a balancer in front sends
        them elsewhere), the requests already accepted are answered (bounded wait), watches end
        cleanly so their clients re-watch. Exiting with requests half-answered would cut clients off
        with a bare EOF that no balancer can retry."""
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        with self._idle:
            # a bound above the forwarding timeout (15 s), so a follower's stuck forward still answers
            self._idle.wait_for(lambda: self._inflight == 0, timeout=20)
        if self.store is not None:
            with self.store.lock:
                self.store.lock.notify_all()
            # a graceful stop hands followers the last writes before the streams close
            deadline = time.monotonic() + 5
            for t in list(self._streams):
                t.join(timeout=max(0.0, deadline - time.monotonic()))

    def _follow_owner(self) -> None:
        """Keep the replica in step with the owner: a snapshot, then its changes; after a lost
        stream (owner restarted or unreachable) connect again and take a fresh snapshot."""
        up, replica = self.cfg.upstream, self.replica
        assert up is not None and replica is not None
        while not self._stop.is_set():
            conn: http.client.HTTPSConnection | None = None
            try:
                conn = up.connection(timeout=REPLICATION_IDLE)
                conn.request("GET", REPLICATION_PATH)
                resp = conn.getresponse()
                if resp.status != 200:
                    raise OSError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
                for msg in iter_watch_lines(resp):
                    if msg["type"] == "SNAPSHOT":
                        replica.load_replica(int(msg["rv"]), msg["objects"])
                        if not self.replica_synced.is_set():
                            log.info(
                                "replica synced from %s:%s at resourceVersion %s", up.host, up.port, msg["rv"]
                            )
                        self.replica_synced.set()
                    elif msg["type"] == "EVENT":
                        replica.apply_replicated(int(msg["rv"]), msg["kind"], msg["key"], msg["object"])
                    if self._stop.is_set():
                        return
            except (OSError, ValueError, KeyError, http.client.HTTPException) as e:
                log.debug("replication stream from %s:%s: %s", up.host, up.port, e)
            finally:
                if conn is not None:
                    conn.close()
            self._stop.wait(1.0)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # The node lifecycle controller of kube-controller-manager, reduced to what tests observe: a node
    # whose kubelet stops posting status and renewing its Lease for the grace period becomes Unknown
    # ("NotReady" in kubectl) and gets the unreachable taint; Ready flips the taints back.
    def _sign_cluster_info(self) -> None:
        """kube-controller-manager's bootstrapsigner: keep kube-public/cluster-info signed (detached JWS,
        HS256) with every valid bootstrap token that has usage-bootstrap-signing=true."""
        assert self.store is not None
        cms = _res("configmaps")
        try:
            info = self.store.get(cms, "kube-public", "cluster-info")
        except ApiError:
            return
        payload = (info.get("data") or {}).get("kubeconfig")
        if not payload:
            return
        wanted: dict[str, str] = {}
        secrets_, _ = self.store.list(_res("secrets"), "kube-system")
        for sec in secrets_:
            if sec.get("type") != "bootstrap.kubernetes.io/token":
                continue
            d = {k: base64.b64decode(v).decode() for k, v in (sec.get("data") or {}).items()}
            if (
                d.get("usage-bootstrap-signing") != "true"
                or not d.get("token-id")
                or not d.get("token-secret")
            ):
                continue
            if d.get("expiration") and parse_rfc3339(d["expiration"]) < time.time():
                continue
            wanted[f"jws-kubeconfig-{d['token-id']}"] = detached_jws(
                payload, d["token-id"], d["token-secret"]
            )
        current = {k: v for k, v in (info.get("data") or {}).items() if k.startswith("jws-kubeconfig-")}
        if current == wanted:
            return

        def sign(cm: dict[str, Any]) -> dict[str, Any]:
            data = {k: v for k, v in (cm.get("data") or {}).items() if not k.startswith("jws-kubeconfig-")}
            data.update(wanted)
            cm["data"] = data
            return cm

        self.store.update(cms, "kube-public", "cluster-info", sign)

    def _node_lifecycle(self) -> None:
        assert self.store is not None
        period = max(0.2, min(5.0, self.cfg.node_monitor_grace / 4))
        nodes, leases = _res("nodes"), _res("leases", "coordination.k8s.io")
        while not self._stop.wait(period):
            self._sign_cluster_info()
            items, _ = self.store.list(nodes, None)
            for node in items:
                name = node["metadata"]["name"]
                beats = []
                ready = next(
                    (c for c in node.get("status", {}).get("conditions", []) if c.get("type") == "Ready"),
                    None,
                )
                if ready and ready.get("lastHeartbeatTime"):
                    beats.append(parse_rfc3339(ready["lastHeartbeatTime"]))
                try:
                    lease = self.store.get(leases, "kube-node-lease", name)
                    if lease.get("spec", {}).get("renewTime"):
                        beats.append(parse_rfc3339(lease["spec"]["renewTime"]))
                except ApiError:
                    pass
                last = max(beats) if beats else parse_rfc3339(node["metadata"]["creationTimestamp"])
                stale = time.time() - last > self.cfg.node_monitor_grace
                try:
                    self.store.update(nodes, None, name, lambda n, stale=stale: _reconcile_node(n, stale))
                except ApiError:
                    pass


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def detached_jws(payload: str, key_id: str, secret: str) -> str:
    """A compact JWS with detached payload (`header..signature`), as the bootstrap signer writes."""
    import hashlib
    import hmac

    header = _b64url(json.dumps({"alg": "HS256", "kid": key_id}, separators=(",", ":")).encode())
    signing_input = f"{header}.{_b64url(payload.encode())}".encode()
    signature = _b64url(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())
    return f"{header}..{signature}"


def _reconcile_node(node: dict[str, Any], stale: bool) -> dict[str, Any]:
    status = node.setdefault("status", {})
    conditions = status.setdefault("conditions", [])
    ts = now_rfc3339()
    if stale:
        for c in conditions:
            if c.get("status") != "Unknown":
                c.update(
                    status="Unknown",
                    reason="NodeStatusUnknown",
                    message="Kubelet stopped posting node status.",
                    lastTransitionTime=ts,
                )
        if not any(c.get("type") == "Ready" for c in conditions):
            conditions.append(
                {
                    "type": "Ready",
                    "status": "Unknown",
                    "reason": "NodeStatusNeverUpdated",
                    "message": "Kubelet never posted node status.",
                    "lastHeartbeatTime": ts,
                    "lastTransitionTime": ts,
                }
            )
    ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), "Unknown")
    wanted = {
        "True": None,
        "False": "node.kubernetes.io/not-ready",
        "Unknown": "node.kubernetes.io/unreachable",
    }[ready if ready in ("True", "False") else "Unknown"]
    managed = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
    spec = node.setdefault("spec", {})
    taints = [t for t in spec.get("taints", []) if t.get("key") not in managed or t.get("key") == wanted]
    if wanted and not any(t.get("key") == wanted for t in taints):
        taints.append({"key": wanted, "effect": "NoSchedule", "timeAdded": ts})
    if taints:
        spec["taints"] = taints
    else:
        spec.pop("taints", None)
    return node


# ------------------------------------------------------------------------------------------ handler


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-standin"
    _from_replica = False  # this request is answered from the follower's replica

    @property
    def api(self) -> APIServer:
        return self.server.api  # type: ignore[attr-defined,no-any-return]

    def setup(self) -> None:
        # TLS handshake in the connection's own thread, so one slow client cannot stall accept().
        raw: socket.socket = self.request
        raw.settimeout(30)
        # headers and body go out in separate writes: without NODELAY, Nagle + delayed ACK add ~40 ms each
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.request = self.api.ssl_context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log.info("TLS handshake error from %s: %s", self.client_address, e)
            raw.close()
            self.request = None
            self.rfile = self.wfile = None  # type: ignore[assignment]
            return
        self.request.settimeout(None)
        super().setup()

    def handle(self) -> None:
        if self.request is None:
            return
        try:
            super().handle()
        except (ConnectionError, ssl.SSLError, TimeoutError):
            pass

    def finish(self) -> None:
        if self.request is None:
            return
        try:
            super().finish()
        except (ConnectionError, ssl.SSLError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send_bytes(
        self, code: int, body: bytes, ctype: str = "application/json", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, code: int, obj: Any) -> None:
        self.send_bytes(code, json.dumps(obj).encode())

    def send_error_status(self, err: ApiError) -> None:
        self.send_json(err.code, err.status())

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- authentication

    def authenticate(self) -> User | None:
        cert = self.request.getpeercert()
        if cert:
            cn, orgs = "", []
            for rdn in cert.get("subject", ()):
                for k, v in rdn:
                    if k == "commonName":
                        cn = v
                    elif k == "organizationName":
                        orgs.append(v)
            return User(cn, (*orgs, "system:authenticated"))
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[7:].strip()
            user = self.api.cfg.tokens.get(token)
            if user is None:
                m = re.fullmatch(r"([a-z0-9]{6})\.([a-z0-9]{16})", token)
                user = self._bootstrap_user(m.group(1), m.group(2)) if m else None
            if user is None:
                return None
            return User(user.name, (*user.groups, "system:authenticated"))
        if self.api.cfg.anonymous_auth:
            return User("system:anonymous", ("system:unauthenticated",))
        return None

    def _bootstrap_user(self, token_id: str, secret: str) -> User | None:
        """Bootstrap-token authentication: Secret kube-system/bootstrap-token-<id> (kubeadm, k0s joins)."""
        name = f"bootstrap-token-{token_id}"
        obj: dict[str, Any] | None = None
        if self.api.store is not None:
            try:
                obj = self.api.store.get(_res("secrets"), "kube-system", name)
            except ApiError:
                return None
        elif self.api.cfg.upstream is not None:
            try:
                conn = self.api.cfg.upstream.connection(timeout=5)
                conn.request("GET", f"/api/v1/namespaces/kube-system/secrets/{name}")
                resp = conn.getresponse()
                raw = resp.read()
                conn.close()
            except OSError:
                if self.api.replica is None or not self.api.replica_synced.is_set():
                    return None
                try:
                    obj = self.api.replica.get(_res("secrets"), "kube-system", name)
                except ApiError:
                    return None
            else:
                if resp.status != 200:
                    return None
                obj = json.loads(raw)
        if obj is None or obj.get("type") != "bootstrap.kubernetes.io/token":
            return None
        data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        if data.get("token-id") != token_id or data.get("token-secret") != secret:
            return None
        if data.get("usage-bootstrap-authentication") != "true":
            return None
        if data.get("expiration") and parse_rfc3339(data["expiration"]) < time.time():
            return None
        extra = tuple(g for g in data.get("auth-extra-groups", "").split(",") if g)
        return User(f"system:bootstrap:{token_id}", ("system:bootstrappers", *extra))

    def _impersonate(self, user: User) -> User:
        as_user = self.headers.get("Impersonate-User")
        if not as_user:
            return user
        if "system:masters" not in user.groups and "kubeadm:cluster-admins" not in user.groups:
            raise ApiError(
                403,
                "Forbidden",
                f'users "{as_user}" is forbidden: User "{user.name}" cannot '
                'impersonate resource "users" in API group "" at the cluster scope',
            )
        groups = tuple(self.headers.get_all("Impersonate-Group") or ())
        return User(as_user, (*groups, "system:authenticated"))

    # -- dispatch

    def _dispatch(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        # Long-running requests (watches, replication) end by themselves on shutdown; the rest is
        # counted so shutdown can let it finish.
        long_running = query.get("watch", [""])[0] in ("true", "1") or url.path == REPLICATION_PATH
        if long_running:
            self._serve(method, url, query)
            return
        with self.api._idle:
            self.api._inflight += 1
        try:
            self._serve(method, url, query)
        finally:
            with self.api._idle:
                self.api._inflight -= 1
                self.api._idle.notify_all()

    def _serve(self, method: str, url: urllib.parse.SplitResult, query: dict[str, list[str]]) -> None:
        self._from_replica = False  # per request: one connection carries many
        path = url.path.rstrip("/") or "/"
        body = self._body() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
        try:
            if self.api.cfg.ext_handler is not None:
                answer = self.api.cfg.ext_handler(self, method, path, query, body)
                if answer is not None:
                    code, headers, data = answer
                    self.send_bytes(code, data, headers.pop("Content-Type", "application/json"), headers)
                    return
            user = self.authenticate()
            if user is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            user = self._impersonate(user)
            if path in ("/readyz", "/livez", "/healthz"):
                self._health(path)
                return
            if path == "/version":
                self.send_json(200, version_info())
                return
            if path == REPLICATION_PATH and method == "GET" and self.api.store is not None:
                self._replication_stream(user)
                return
            if self.api.cfg.upstream is not None and (path.startswith("/api") or path.startswith("/openapi")):
                try:
                    self._forward(method, user, body)
                except OwnerUnreachable:
                    if method != "GET" or not self.api.replica_synced.is_set():
                        raise
                    self._from_replica = True
                    self._api(method, path, query, body, user)
                return
            self._api(method, path, query, body, user)
        except ApiError as e:
            self.send_error_status(e)
        except (ConnectionError, ssl.SSLError, BrokenPipeError):
            self.close_connection = True
        except Exception as e:  # a bug in the stand-in: say so, as a 500 Status, and keep serving
            log.exception("internal error")
            self.send_error_status(ApiError(500, "InternalError", f"Internal error occurred: {e}"))

    def _health(self, path: str) -> None:
        ok, detail = True, "[+]ping ok\n[+]log ok\n[+]etcd ok\n"
        up = self.api.cfg.upstream
        if up is not None:
            try:
                conn = up.connection(timeout=3)
                conn.request("GET", "/readyz")
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except OSError:
                ok = False
            if not ok:
                detail = "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n"
        if self.api.stopping:
            ok = False
            detail += "[-]shutdown failed: reason withheld\n"
        name = path.strip("/")
        if "verbose" in (self.path or ""):
            text = detail + (f"{name} check passed\n" if ok else f"{name} check failed\n")
        else:
            text = "ok" if ok else f"{detail}{name} check failed\n"
        self.send_bytes(200 if ok else 500, text.encode(), "text/plain; charset=utf-8")

    def _forward(self, method: str, user: User, body: bytes) -> None:
        up = self.api.cfg.upstream
        assert up is not None
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
        headers["Impersonate-User"] = user.name
        try:
            conn = up.connection(timeout=None if "watch" in self.path else 15)
            conn.putrequest(method, self.path, skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            for g in user.groups:
                if g != "system:authenticated":
                    conn.putheader("Impersonate-Group", g)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
        except OSError as e:
            raise OwnerUnreachable(
                503,
                "ServiceUnavailable",
                f"etcdserver: request timed out (datastore {up.host}:{up.port} unreachable: {e})",
            ) from e
        if resp.getheader("Transfer-Encoding", "").lower() == "chunked":
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.getheader("Content-Type", "application/json"))
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                while True:
                    line = resp.readline()
                    if not line:
                        break
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            finally:
                conn.close()
            return
        data = resp.read()
        conn.close()
        self.send_bytes(resp.status, data, resp.getheader("Content-Type", "application/json"))

    def _store(self) -> Store:
        """The store this request reads: the owner's own, or a follower's replica (owner unreachable)."""
        store = self.api.replica if self._from_replica else self.api.store
        assert store is not None
        return store

    def _replication_stream(self, user: User) -> None:
        """Owner side of a follower's replica: the whole store, then every change as it happens."""
        if "system:masters" not in user.groups and "kubeadm:cluster-admins" not in user.groups:
            raise ApiError(403, "Forbidden", f'User "{user.name}" cannot replicate the datastore')
        store = self.api.store
        assert store is not None
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def emit(msg: dict[str, Any] | str) -> None:
            line = (msg if isinstance(msg, str) else json.dumps(msg)).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()

        me = threading.current_thread()
        self.api._streams.add(me)
        try:
            with store.lock:  # serialised under the lock: no write can slip between it and `since`
                first = json.dumps({"type": "SNAPSHOT", "rv": store.rv, "objects": store.objects})
                since = store.rv
            emit(first)
            while True:
                with store.lock:
                    events = store.events_since(since)
                    if events == [] and not self.api.stopping:
                        store.lock.wait(timeout=REPLICATION_PING)
                        events = store.events_since(since)
                if events is None:
                    break  # the follower fell behind the event log: it reconnects for a snapshot
                for e in events:
                    since = e.rv
                    emit({"type": "EVENT", "rv": e.rv, "kind": e.type, "key": e.key, "object": e.obj})
                if self.api.stopping:
                    break
                if not events:
                    emit({"type": "PING", "rv": since})
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            self.close_connection = True
            self.api._streams.discard(me)

    # -- the API proper

    def _api(self, method: str, path: str, query: dict[str, list[str]], body: bytes, user: User) -> None:
        parts = path.strip("/").split("/")
        if path.startswith("/openapi/v3") and method == "GET":
            self._openapi_v3(path)
            return
        if path == "/api" and method == "GET":
            self.send_json(
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {
                            "clientCIDR": "0.0.0.0/0",
                            "serverAddress": f"{self.api.cfg.advertise}:{self.api.port}",
                        }
                    ],
                },
            )
            return
        if path == "/apis" and method == "GET":
            self.send_json(
                200,
                {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group_doc(g) for g in GROUPS if g]},
            )
            return
        if parts[0] == "api" and len(parts) >= 2:
            if parts[1] != "v1":
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            group, version, rest = "", "v1", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 2:
            group = parts[1]
            if group not in GROUPS or not group:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if len(parts) == 2:
                self.send_json(200, {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group)})
                return
            version, rest = parts[2], parts[3:]
            if version != GROUPS[group][0].version:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            if method != "GET":
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            self.send_json(200, _resource_list(group, version))
            return
        ns: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        by_plural = {r.plural: r for r in GROUPS[group]}
        res = by_plural.get(rest[0])
        if res is None or (ns is not None and not res.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if len(rest) > 3 or (sub is not None and sub not in ("status", "finalize", "approval")):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub == "status" and not res.status:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        watch = query.get("watch", [""])[0] in ("true", "1")
        verb = {
            "GET": "watch" if watch else ("get" if name else "list"),
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }[method]
        if not authorize(user, verb, res, ns, name):
            scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
            target = f'{res.plural} "{name}"' if name else res.plural
            raise ApiError(
                403,
                "Forbidden",
                f'{target} is forbidden: User "{user.name}" cannot {verb} resource '
                f'"{res.plural}" in API group "{res.group}" {scope}',
                {"name": name or "", "group": res.group, "kind": res.plural},
            )
        store = self._store()
        if verb == "watch":
            self._watch(res, ns, name, query)
        elif verb == "list":
            self._list(res, ns, query)
        elif verb == "get":
            assert name is not None
            obj = store.get(res, ns, name)
            self._send_obj(200, res, obj)
        elif verb == "create":
            if name is not None:
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            obj = self._decode(body, res)
            self._prepare_create(res, ns, obj)
            if res.plural == "certificatesigningrequests":
                # the API server records who asked, as upstream does; the approver trusts only that
                spec = obj.setdefault("spec", {})
                spec["username"], spec["groups"] = user.name, list(user.groups)
                obj.pop("status", None)
            if _dry_run(query):
                self._send_obj(201, res, obj)
                return
            created = store.create(res, ns, obj)
            if res.plural == "certificatesigningrequests":
                created = self._approve_and_sign(res, created)
            self._send_obj(201, res, created)
        elif verb == "update":
            assert name is not None
            obj = self._decode(body, res)
            meta = obj.setdefault("metadata", {})
            if meta.get("name") != name:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the name of the object "
                    f"({meta.get('name')}) does not match the name on the URL ({name})",
                )
            _normalise(res, obj)

            def replace(cur: dict[str, Any]) -> dict[str, Any]:
                return _merge_subresource(res, cur, obj, sub)

            self._send_obj(
                200, res, store.update(res, ns, name, replace, check_rv=meta.get("resourceVersion") or None)
            )
        elif verb == "patch":
            assert name is not None
            self._patch(res, ns, name, sub, body, query)
        elif verb == "delete":
            assert name is not None
            old = store.delete(res, ns, name)
            self._send_obj(200, res, old)
        else:  # deletecollection
            items, _ = store.list(res, ns)
            match = label_matcher(query.get("labelSelector", [""])[0])
            for o in items:
                if match(o["metadata"].get("labels") or {}):
                    store.delete(res, ns, o["metadata"]["name"])
            self.send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    def _approve_and_sign(self, res: Resource, csr: dict[str, Any]) -> dict[str, Any]:
        """kube-controller-manager's csrapproving + csrsigning for kubelet client certificates: approve
        `nodeclient` (a bootstrapper asking for system:node:<x>) and `selfnodeclient` (a node renewing)."""
        cfg = self.api.cfg
        if cfg.signer_cert is None or cfg.signer_key is None or self.api.store is None:
            return csr
        spec = csr.get("spec", {})
        if spec.get("signerName") != "kubernetes.io/kube-apiserver-client-kubelet":
            return csr
        try:
            pem = base64.b64decode(spec.get("request", ""))
            cn, orgs = pki.csr_subject(pem)
        except ValueError:
            return csr
        groups = spec.get("groups") or []
        allowed = set(spec.get("usages") or []) <= {"digital signature", "key encipherment", "client auth"}
        ok = (
            allowed
            and orgs == ["system:nodes"]
            and cn.startswith("system:node:")
            and ("system:bootstrappers" in groups or spec.get("username") == cn)
        )
        if not ok:
            return csr
        days = max(1, int(spec.get("expirationSeconds") or 365 * 86400) // 86400)
        cert = pki.sign_csr(cfg.signer_cert.read_bytes(), cfg.signer_key.read_bytes(), pem, days)
        now = now_rfc3339()

        def approve(cur: dict[str, Any]) -> dict[str, Any]:
            cur["status"] = {
                "conditions": [
                    {
                        "type": "Approved",
                        "status": "True",
                        "reason": "AutoApproved",
                        "message": "Auto approving kubelet client certificate after SubjectAccessReview.",
                        "lastUpdateTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "certificate": base64.b64encode(cert).decode(),
            }
            return cur

        return self.api.store.update(res, None, csr["metadata"]["name"], approve)

    def _openapi_v3(self, path: str) -> None:
        """Just enough OpenAPI v3 for kubectl: it learns that each kind accepts server-side field
        validation (fieldValidation on PATCH), so it validates on the server instead of downloading the
        full schema. The schemas themselves are not served (kubectl explain will not work)."""
        if path == "/openapi/v3":
            self.send_json(
                200,
                {
                    "paths": {
                        (f"apis/{g}/{GROUPS[g][0].version}" if g else "api/v1"): {
                            "serverRelativeURL": f"/openapi/v3/{_gv_path(g)}?hash={KUBE_VERSION}"
                        }
                        for g in GROUPS
                    }
                },
            )
            return
        gv = path[len("/openapi/v3/") :]
        group, version = ("", "v1") if gv == "api/v1" else tuple(gv.split("/")[1:3])  # type: ignore[misc]
        if group not in GROUPS or GROUPS[group][0].version != version:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        param = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        paths: dict[str, Any] = {}
        prefix = f"/apis/{group}/{version}" if group else "/api/v1"
        for r in GROUPS[group]:
            gvk = {"group": r.group, "version": r.version, "kind": r.kind}
            item = (
                f"{prefix}/namespaces/{{namespace}}/{r.plural}/{{name}}"
                if r.namespaced
                else f"{prefix}/{r.plural}/{{name}}"
            )
            coll = item.rsplit("/", 1)[0]
            for p, verbs in ((item, ("get", "put", "patch", "delete")), (coll, ("get", "post"))):
                paths[p] = {
                    v: {
                        "operationId": f"{v}{r.kind}",
                        "parameters": [param],
                        "x-kubernetes-action": {
                            "post": "post",
                            "put": "put",
                            "patch": "patch",
                            "delete": "delete",
                            "get": "get",
                        }[v],
                        "x-kubernetes-group-version-kind": gvk,
                        "responses": {"200": {"description": "OK"}},
                    }
                    for v in verbs
                }
        self.send_json(
            200,
            {
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": KUBE_VERSION},
                "paths": paths,
                "components": {"schemas": {}},
            },
        )

    def _decode(self, body: bytes, res: Resource) -> dict[str, Any]:
        ctype = self.headers.get("Content-Type", "application/json")
        try:
            if "yaml" in ctype:
                import yaml

                obj = yaml.safe_load(body)
            else:
                obj = json.loads(body or b"null")
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"the body of the request was in an unknown format: {e}")
        except Exception as e:  # yaml errors
            raise ApiError(400, "BadRequest", f"the body of the request was in an unknown format: {e}")
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if kind is not None and kind != res.kind:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({api_version}) does not match the "
                f"expected API version ({res.group_version})"
                if api_version != res.group_version
                else f"kind {kind} does not match the expected kind {res.kind}",
            )
        if api_version is not None and api_version != res.group_version:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({api_version}) does not match the "
                f"expected API version ({res.group_version})",
            )
        obj["kind"], obj["apiVersion"] = res.kind, res.group_version
        return obj

    def _prepare_create(self, res: Resource, ns: str | None, obj: dict[str, Any]) -> None:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise ApiError(
                422,
                "Invalid",
                f'{res.kind} "" is invalid: metadata.name: Required value: name or generateName is required',
                {"kind": res.kind},
            )
        pattern = _DNS1123_LABEL if res.plural == "namespaces" else _DNS1123_SUBDOMAIN
        if not pattern.match(name) or len(name) > 253:
            raise ApiError(
                422,
                "Invalid",
                f'{res.kind} "{name}" is invalid: metadata.name: Invalid value: '
                f'"{name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
                "characters, '-' or '.', and must start and end with an alphanumeric character",
                {"name": name, "kind": res.kind},
            )
        if res.namespaced:
            if meta.get("namespace") and ns and meta["namespace"] != ns:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = ns or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        _validate_labels(res, meta)
        _normalise(res, obj)
        if res.plural == "namespaces":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}

    def _patch(
        self,
        res: Resource,
        ns: str | None,
        name: str,
        sub: str | None,
        body: bytes,
        query: dict[str, list[str]],
    ) -> None:
        store = self.api.store
        assert store is not None
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            if ctype == "application/apply-patch+yaml":
                import yaml

                doc = yaml.safe_load(body)
            else:
                doc = json.loads(body)
        except Exception as e:
            raise ApiError(400, "BadRequest", f"error decoding patch: {e}")

        if ctype == "application/apply-patch+yaml":
            # Server-side apply, simplified: create if absent, else a strategic merge of the applied
            # configuration (no managedFields ownership tracking).
            if not query.get("fieldManager"):
                raise ApiError(
                    422,
                    "Invalid",
                    'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required '
                    "value: is required for apply patch",
                )
            try:
                store.get(res, ns, name)
            except ApiError as e:
                if e.code != 404:
                    raise
                obj = copy.deepcopy(doc)
                obj.setdefault("metadata", {})["name"] = name
                self._decode(json.dumps(obj).encode(), res)
                self._prepare_create(res, ns, obj)
                self._send_obj(201, res, store.create(res, ns, obj))
                return
            fn = patchlib.strategic_merge_patch
        elif ctype == "application/merge-patch+json":
            fn = patchlib.merge_patch
        elif ctype == "application/strategic-merge-patch+json":
            fn = patchlib.strategic_merge_patch
        elif ctype == "application/json-patch+json":
            fn = patchlib.json_patch
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - "
                "accepted media types include: application/json-patch+json, application/merge-patch+json,"
                " application/apply-patch+yaml, application/strategic-merge-patch+json",
            )

        def mutate(cur: dict[str, Any]) -> dict[str, Any]:
            try:
                new = fn(cur, doc)
            except patchlib.PatchError as e:
                raise ApiError(422, "Invalid", str(e))
            if not isinstance(new, dict):
                raise ApiError(422, "Invalid", "patch did not produce an object")
            new["kind"], new["apiVersion"] = res.kind, res.group_version
            _validate_labels(res, new.setdefault("metadata", {}))
            _normalise(res, new)
            return _merge_subresource(res, cur, new, sub)

        if _dry_run(query):
            self._send_obj(200, res, mutate(store.get(res, ns, name)))
            return
        self._send_obj(200, res, store.update(res, ns, name, mutate))

    def _filtered(
        self, res: Resource, ns: str | None, query: dict[str, list[str]]
    ) -> tuple[list[dict[str, Any]], int, Callable[[dict[str, Any]], bool]]:
        store = self._store()
        lm = label_matcher(query.get("labelSelector", [""])[0])
        fm = (
            field_matcher(query.get("fieldSelector", [""])[0])
            if query.get("fieldSelector", [""])[0]
            else (lambda o: True)
        )

        def match(o: dict[str, Any]) -> bool:
            return lm(o.get("metadata", {}).get("labels") or {}) and fm(o)

        items, rv = store.list(res, ns)
        return [o for o in items if match(o)], rv, match

    def _list(self, res: Resource, ns: str | None, query: dict[str, list[str]]) -> None:
        items, rv, _ = self._filtered(res, ns, query)
        if _wants_table(self.headers.get("Accept", "")):
            self.send_json(200, _table(res, items, rv))
            return
        self.send_json(
            200,
            {
                "kind": f"{res.kind}List",
                "apiVersion": res.group_version,
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            },
        )

    def _send_obj(self, code: int, res: Resource, obj: dict[str, Any]) -> None:
        if res.plural == "secrets" and obj.get("stringData"):
            obj.pop("stringData")
        if _wants_table(self.headers.get("Accept", "")):
            self.send_json(code, _table(res, [obj], int(obj["metadata"].get("resourceVersion") or 0)))
            return
        self.send_json(code, obj)

    def _watch(self, res: Resource, ns: str | None, name: str | None, query: dict[str, list[str]]) -> None:
        store = self._store()
        if name:
            query = dict(query)
            query["fieldSelector"] = [f"metadata.name={name}"]
        timeout = float(query.get("timeoutSeconds", ["1800"])[0])
        deadline = time.time() + timeout
        prefix = f"{res.group}/{res.plural}/{ns}/" if ns else f"{res.group}/{res.plural}/"
        rv_param = query.get("resourceVersion", [""])[0]
        items, rv, match = self._filtered(res, ns, query)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def emit(kind: str, obj: dict[str, Any]) -> None:
            line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()

        try:
            if rv_param in ("", "0"):
                for o in items:
                    emit("ADDED", o)
                since = rv
            else:
                since = int(rv_param)
            while not self.api.stopping and time.time() < deadline:
                with store.lock:
                    events = store.events_since(since)
                    if events is not None and not events:
                        store.lock.wait(timeout=min(1.0, max(0.0, deadline - time.time())))
                        events = store.events_since(since)
                if events is None:
                    emit(
                        "ERROR",
                        ApiError(410, "Expired", f"too old resource version: {since} ({store.rv})").status(),
                    )
                    break
                for e in events:
                    since = e.rv
                    if e.key.startswith(prefix) and match(e.obj):
                        emit(e.type, e.obj)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (ConnectionError, ssl.SSLError, OSError):
            self.close_connection = True


def _gv_path(group: str) -> str:
    return f"apis/{group}/{GROUPS[group][0].version}" if group else "api/v1"


def _dry_run(query: dict[str, list[str]]) -> bool:
    return "All" in query.get("dryRun", [])


def _validate_labels(res: Resource, meta: dict[str, Any]) -> None:
    for field_name in ("labels", "annotations"):
        values = meta.get(field_name)
        if values is None:
            continue
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise ApiError(400, "BadRequest", f"metadata.{field_name} must be a map of string to string")
    for k, v in (meta.get("labels") or {}).items():
        if not re.match(
            r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$", k
        ) or (v and not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$", v)):
            raise ApiError(
                422,
                "Invalid",
                f'{res.kind} "{meta.get("name", "")}" is invalid: metadata.labels: '
                f'Invalid value: "{v}": a valid label must be an empty string or consist of '
                "alphanumeric characters, '-', '_' or '.'",
                {"kind": res.kind},
            )


def _normalise(res: Resource, obj: dict[str, Any]) -> None:
    if res.plural == "secrets":
        data = obj.get("data") or {}
        for k, v in data.items():
            try:
                base64.b64decode(v, validate=True)
            except (ValueError, TypeError):
                raise ApiError(400, "BadRequest", f"illegal base64 data in secret key {k!r}")
        for k, v in (obj.pop("stringData", None) or {}).items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        if data:
            obj["data"] = data
        obj.setdefault("type", "Opaque")
    if res.plural == "nodes":
        taints = (obj.get("spec") or {}).get("taints") or []
        for t in taints:
            if t.get("effect") not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
                raise ApiError(
                    422,
                    "Invalid",
                    f'Node "{obj["metadata"].get("name")}" is invalid: spec.taints'
                    f'.effect: Unsupported value: "{t.get("effect")}": supported values: "NoExecute", '
                    '"NoSchedule", "PreferNoSchedule"',
                    {"kind": "Node"},
                )


def _merge_subresource(
    res: Resource, cur: dict[str, Any], new: dict[str, Any], sub: str | None
) -> dict[str, Any]:
    """Writes to the main resource keep the stored status; writes to /status keep everything else."""
    if not res.status:
        return new
    if sub == "status":
        out = copy.deepcopy(cur)
        out["status"] = new.get("status", {})
        return out
    if "status" in cur:
        new["status"] = cur["status"]
    else:
        new.pop("status", None)
    return new


def version_info() -> dict[str, str]:
    major, minor = GIT_VERSION[1:].split("+")[0].split(".")[:2]
    return {
        "major": major,
        "minor": minor,
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-10-25T00:00:00Z",
        "goVersion": "go1.22.8",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def _group_doc(group: str) -> dict[str, Any]:
    gv = f"{group}/{GROUPS[group][0].version}"
    return {
        "name": group,
        "versions": [{"groupVersion": gv, "version": GROUPS[group][0].version}],
        "preferredVersion": {"groupVersion": gv, "version": GROUPS[group][0].version},
    }


def _resource_list(group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for r in GROUPS[group]:
        resources.append(
            {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": VERBS,
                **({"shortNames": list(r.short)} if r.short else {}),
            }
        )
        if r.status:
            resources.append(
                {
                    "name": f"{r.plural}/status",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def _wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _age(obj: dict[str, Any]) -> str:
    try:
        secs = int(time.time() - parse_rfc3339(obj["metadata"]["creationTimestamp"]))
    except (KeyError, ValueError):
        return "<unknown>"
    if secs < 120:
        return f"{secs}s"
    if secs < 7200:
        return f"{secs // 60}m"
    return f"{secs // 3600}h"


def node_status_word(node: dict[str, Any]) -> str:
    ready = next((c for c in node.get("status", {}).get("conditions", []) if c.get("type") == "Ready"), None)
    word = "Ready" if ready and ready.get("status") == "True" else "NotReady"
    if node.get("spec", {}).get("unschedulable"):
        word += ",SchedulingDisabled"
    return word


def node_roles(node: dict[str, Any]) -> str:
    roles = sorted(
        k.split("/", 1)[1]
        for k, v in (node["metadata"].get("labels") or {}).items()
        if k.startswith("node-role.kubernetes.io/")
    )
    return ",".join(roles) or "<none>"


def _table(res: Resource, items: list[dict[str, Any]], rv: int) -> dict[str, Any]:
    """The meta.k8s.io/v1 Table kubectl asks for, with the columns kubectl prints for these kinds."""
    cols: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [("Name", lambda o: o["metadata"]["name"])]
    if res.plural == "nodes":
        cols += [
            ("Status", node_status_word),
            ("Roles", node_roles),
            ("Age", _age),
            ("Version", lambda o: o.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")),
        ]
    elif res.plural == "configmaps":
        cols += [("Data", lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})), ("Age", _age)]
    elif res.plural == "secrets":
        cols += [
            ("Type", lambda o: o.get("type", "")),
            ("Data", lambda o: len(o.get("data") or {})),
            ("Age", _age),
        ]
    elif res.plural == "namespaces":
        cols += [("Status", lambda o: o.get("status", {}).get("phase", "")), ("Age", _age)]
    else:
        cols += [("Age", _age)]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(rv)},
        "columnDefinitions": [
            {
                "name": n,
                "type": "string",
                "format": "name" if n == "Name" else "",
                "description": n,
                "priority": 0,
            }
            for n, _ in cols
        ],
        "rows": [
            {
                "cells": [f(o) for _, f in cols],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                },
            }
            for o in items
        ],
    }


# ----------------------------------------------------------------------------------------- helpers


def iter_watch_lines(resp: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    while True:
        line = resp.readline()
        if not line:
            return
        yield json.loads(line)


def init_pki(data_dir: Path, sans: list[str]) -> dict[str, Path]:
    """Create (once) the CAs and serving cert a standalone server uses; returns the file paths."""
    tls = data_dir / "tls"
    paths = {
        n: tls / n
        for n in (
            "server-ca.crt",
            "server-ca.key",
            "client-ca.crt",
            "client-ca.key",
            "serving.crt",
            "serving.key",
            "client-admin.crt",
            "client-admin.key",
        )
    }
    if not paths["server-ca.crt"].exists():
        for ca in ("server-ca", "client-ca"):
            c, k = pki.make_ca(f"k3s-{ca}")
            pki.write_private(paths[f"{ca}.crt"], c, 0o644)
            pki.write_private(paths[f"{ca}.key"], k)
        c, k = pki.issue(
            paths["client-ca.crt"].read_bytes(),
            paths["client-ca.key"].read_bytes(),
            "system:admin",
            organizations=["system:masters"],
            client=True,
        )
        pki.write_private(paths["client-admin.crt"], c, 0o644)
        pki.write_private(paths["client-admin.key"], k)
    c, k = pki.issue(
        paths["server-ca.crt"].read_bytes(),
        paths["server-ca.key"].read_bytes(),
        "kube-apiserver",
        sans=["kubernetes", "kubernetes.default", "localhost", "127.0.0.1", *sans],
        server=True,
    )
    pki.write_private(paths["serving.crt"], c, 0o644)
    pki.write_private(paths["serving.key"], k)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="apiserver", description=__doc__)
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--bind-address", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6443)
    p.add_argument("--tls-san", action="append", default=[])
    p.add_argument("--token-auth-file", type=Path)
    p.add_argument("--anonymous-auth", action="store_true")
    p.add_argument("--node-monitor-grace-period", type=float, default=40.0)
    p.add_argument("--port-file", type=Path, help="write the bound port here once listening (for --port 0)")
    p.add_argument(
        "--upstream",
        metavar="HOST:PORT",
        help="run as a follower of the store owner there (DATA_DIR/tls must hold the owner's CAs and "
        "admin client certificate, which the follower forwards and replicates with)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    paths = init_pki(args.data_dir, args.tls_san)
    upstream = None
    if args.upstream:
        host, _, port = args.upstream.rpartition(":")
        ctx = ssl.create_default_context(cafile=str(paths["server-ca.crt"]))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(paths["client-admin.crt"]), str(paths["client-admin.key"]))
        upstream = Upstream(host, int(port), ctx)
    server = APIServer(
        Config(
            data_dir=args.data_dir,
            bind=args.bind_address,
            port=args.port,
            server_cert=paths["serving.crt"],
            server_key=paths["serving.key"],
            client_ca=paths["client-ca.crt"],
            token_auth_file=args.token_auth_file,
            anonymous_auth=args.anonymous_auth,
            node_monitor_grace=args.node_monitor_grace_period,
            advertise=(args.tls_san or ["127.0.0.1"])[0],
            signer_cert=paths["client-ca.crt"],
            signer_key=paths["client-ca.key"],
            upstream=upstream,
        )
    )
    server.serve_in_background()
    url = f"https://{args.bind_address}:{server.port}"
    (args.data_dir / "admin.kubeconfig").write_text(
        pki.kubeconfig(
            url,
            paths["server-ca.crt"].read_bytes(),
            cert_pem_bytes=paths["client-admin.crt"].read_bytes(),
            key_pem_bytes=paths["client-admin.key"].read_bytes(),
        )
    )
    os.chmod(args.data_dir / "admin.kubeconfig", 0o600)
    if args.port_file:
        args.port_file.write_text(str(server.port))
    log.info("serving on %s", url)
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0


# Flags kubeadm v1.31 writes into the kube-apiserver static Pod manifest, plus a few common ones: accepted;
# those marked in KUBE_APISERVER_USED change behaviour. The last four are stand-in flags the kubelet
# stand-in adds from the etcd and kube-controller-manager manifests (the stand-in has no separate etcd/kcm).
KUBE_APISERVER_FLAGS = (
    "advertise-address",
    "allow-privileged",
    "authorization-mode",
    "client-ca-file",
    "enable-admission-plugins",
    "enable-bootstrap-token-auth",
    "etcd-cafile",
    "etcd-certfile",
    "etcd-keyfile",
    "etcd-servers",
    "kubelet-client-certificate",
    "kubelet-client-key",
    "kubelet-preferred-address-types",
    "proxy-client-cert-file",
    "proxy-client-key-file",
    "requestheader-allowed-names",
    "requestheader-client-ca-file",
    "requestheader-extra-headers-prefix",
    "requestheader-group-headers",
    "requestheader-username-headers",
    "secure-port",
    "service-account-issuer",
    "service-account-key-file",
    "service-account-signing-key-file",
    "service-cluster-ip-range",
    "tls-cert-file",
    "tls-private-key-file",
    "bind-address",
    "token-auth-file",
    "anonymous-auth",
    "v",
    "feature-gates",
    "audit-log-path",
    "standin-data-dir",
    "standin-signing-cert-file",
    "standin-signing-key-file",
    "standin-node-monitor-grace-period",
    "standin-upstream",
    "standin-version",
)


def kube_apiserver_main(argv: list[str]) -> int:
    """`kube-apiserver` with its real flag names (what a kubelet stand-in runs for the static Pod)."""
    try:
        from .cliflags import Flag, UsageError, parse_pflags
    except ImportError:
        from cliflags import Flag, UsageError, parse_pflags  # type: ignore[no-redef]
    try:
        opts, _ = parse_pflags([Flag(f) for f in KUBE_APISERVER_FLAGS], argv)
    except UsageError as e:
        sys.stderr.write(f"Error: {e}\n")
        return 1
    for required in ("tls-cert-file", "tls-private-key-file", "client-ca-file", "standin-data-dir"):
        if not opts[required]:
            sys.stderr.write(f"Error: --{required} is required\n")
            return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    global GIT_VERSION, KUBE_VERSION
    if opts["standin-version"]:  # the release of the static Pod's image, as the real binary would report
        GIT_VERSION = KUBE_VERSION = opts["standin-version"]
    upstream = None
    if opts["standin-upstream"]:
        host, _, port = opts["standin-upstream"].rpartition(":")
        ctx = ssl.create_default_context(cafile=opts["client-ca-file"])
        ctx.check_hostname = False
        ctx.load_cert_chain(opts["kubelet-client-certificate"], opts["kubelet-client-key"])
        upstream = Upstream(host, int(port), ctx)
    grace = opts["standin-node-monitor-grace-period"] or "40s"
    cfg = Config(
        data_dir=Path(opts["standin-data-dir"]),
        bind=opts["bind-address"] or "0.0.0.0",
        port=int(opts["secure-port"] or 6443),
        server_cert=Path(opts["tls-cert-file"]),
        server_key=Path(opts["tls-private-key-file"]),
        client_ca=Path(opts["client-ca-file"]),
        token_auth_file=Path(opts["token-auth-file"]) if opts["token-auth-file"] else None,
        anonymous_auth=opts["anonymous-auth"] != "false",
        node_monitor_grace=float(grace[:-1]) if grace.endswith("s") else float(grace),
        advertise=opts["advertise-address"] or "127.0.0.1",
        upstream=upstream,
        signer_cert=Path(opts["standin-signing-cert-file"]) if opts["standin-signing-cert-file"] else None,
        signer_key=Path(opts["standin-signing-key-file"]) if opts["standin-signing-key-file"] else None,
    )
    Path(opts["standin-data-dir"]).mkdir(parents=True, exist_ok=True)
    server = APIServer(cfg)
    server.serve_in_background()
    log.info("kube-apiserver serving on :%s", server.port)
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
