"""Stand-ins for `etcdctl` and `etcdutl` of etcd v3.5.15, the release kubeadm v1.31 runs: `etcdctl
snapshot save|status`, `endpoint health`, `member list|remove`, `version`; `etcdutl snapshot
restore|status`, `version`.

The kubeadm stand-in runs no etcd process (tests/doubles/README.md, "HA model"): the first control
plane's "etcd" is the store file of its API server, `<etcd --data-dir>/state.json`. So etcdctl finds
the member serving an endpoint in the local etcd static Pod manifest (present in the kubelet's
manifest directory = running), makes the TLS checks etcd and Go's client would make with the
manifest's certificates (server cert against --cacert and the endpoint's address, the client cert
against etcd's --trusted-ca-file when --client-cert-auth is on), and reads that store. Snapshots have
etcd's shape where it matters: the payload padded to 512 bytes plus a trailing sha256 that `etcdutl
snapshot restore` checks, files 0600 written through `<path>.part`, restore refusing a non-empty
--data-dir. The payload is the stand-in store (JSON), not a bbolt database.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import sys
import time
import urllib.parse
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

try:
    from .cliflags import Flag, UsageError, parse_pflags
    from .kubeclient import KubeClient, KubeError
except ImportError:  # zipapp / script
    from cliflags import Flag, UsageError, parse_pflags  # type: ignore[no-redef]
    from kubeclient import KubeClient, KubeError  # type: ignore[no-redef]

VERSION = "3.5.15"
API_VERSION = "3.5"
SHA_SIZE = 32
MANIFEST = "/etc/kubernetes/manifests/etcd.yaml"
STORE = "state.json"

# cobrautl exit codes
EXIT_ERROR, EXIT_INTERRUPTED, EXIT_BAD_ARGS = 1, 5, 128


class Failed(Exception):
    """cobrautl.ExitWithError: `Error: <message>` on stderr and the exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def sysroot(path: str) -> Path:
    # The same test-only knob as the kubeadm/kubelet stand-ins (several "hosts" on one machine).
    return Path(os.environ.get("K8S_STANDIN_ROOT", "") + path)


def zlog(level: str, caller: str, msg: str, **fields: Any) -> None:
    """zap's production encoder, as etcdctl/etcdutl log to stderr."""
    ts = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    entry = {"level": level, "ts": ts, "caller": caller, "msg": msg, **fields}
    sys.stderr.write(json.dumps(entry) + "\n")


def human_size(n: int) -> str:
    """go-humanize Bytes (SI units), as etcd prints snapshot sizes."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


# ------------------------------------------------------------------------------------ snapshots


def encode_snapshot(store: bytes) -> bytes:
    """What `snapshot save` writes: the payload padded to a 512-byte multiple (bbolt pages are, so
    etcd's hasChecksum is `size % 512 == 32`) and its sha256 appended."""
    padded = store + b" " * (-len(store) % 512)  # JSON ignores trailing whitespace
    return padded + hashlib.sha256(padded).digest()


def has_checksum(size: int) -> bool:
    return size % 512 == SHA_SIZE


def snapshot_payload(data: bytes, skip_hash_check: bool = False) -> bytes:
    """The payload of a snapshot file, checked as etcdutl's copyAndVerifyDB checks it."""
    hashed = has_checksum(len(data))
    body = data[:-SHA_SIZE] if hashed else data
    if not hashed and not skip_hash_check:
        raise Failed("snapshot missing hash but --skip-hash-check=false")
    if hashed and not skip_hash_check:
        want, got = data[-SHA_SIZE:], hashlib.sha256(body).digest()
        if want != got:
            raise Failed(f"expected sha256 {list(want)}, got {list(got)}".replace(",", ""))
    return body


def parse_store(payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
        int(doc["rv"])
        dict(doc["objects"])
        return dict(doc)
    except (ValueError, KeyError, TypeError):
        raise Failed("invalid database")


def status_of(data: bytes) -> dict[str, Any]:
    body = data[:-SHA_SIZE] if has_checksum(len(data)) else data
    store = parse_store(body)
    return {
        "hash": zlib.crc32(body),
        "revision": int(store["rv"]),
        "totalKey": len(store["objects"]),
        "totalSize": len(body),
        "version": "",
    }


def print_status(st: dict[str, Any], write_out: str) -> None:
    if write_out == "json":
        print(json.dumps({k: st[k] for k in ("hash", "revision", "totalKey", "totalSize")}))
        return
    row = [f"{st['hash']:x}", str(st["revision"]), str(st["totalKey"]), human_size(st["totalSize"])]
    if write_out == "table":
        print_table(["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"], [row])
        return
    print(", ".join(row))


def print_table(heads: list[str], rows: list[list[str]]) -> None:
    """olekukonko/tablewriter as etcdctl's table printer sets it up: upper-case headers centred (an odd
    space goes to the right), cells right-aligned, one space of padding, `+---+` rules."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) + 2 for i, h in enumerate(heads)]
    line = "+" + "+".join("-" * w for w in widths) + "+"

    def centred(text: str, width: int) -> str:
        left = (width - len(text)) // 2
        return " " * left + text + " " * (width - len(text) - left)

    print(line)
    print("|" + "|".join(centred(h.upper(), w) for h, w in zip(heads, widths, strict=True)) + "|")
    print(line)
    for row in rows:
        print("|" + "|".join(" " + v.rjust(w - 2) + " " for v, w in zip(row, widths, strict=True)) + "|")
    print(line)


# ----------------------------------------------------------------------------- the local member


class Member:
    """The etcd member this host's static Pod manifest describes."""

    def __init__(self, manifest: Path) -> None:
        doc = yaml.safe_load(manifest.read_text()) or {}
        containers = (doc.get("spec") or {}).get("containers") or [{}]
        command = list(containers[0].get("command") or [])
        self.flags: dict[str, str] = {}
        for arg in command[1:]:
            if arg.startswith("--"):
                k, _, v = arg[2:].partition("=")
                self.flags[k] = v
        self.annotations = dict((doc.get("metadata") or {}).get("annotations") or {})

    @property
    def listen(self) -> list[str]:
        return [u for u in self.flags.get("listen-client-urls", "").split(",") if u]

    @property
    def data_dir(self) -> Path:
        return Path(self.flags.get("data-dir") or "/var/lib/etcd")

    @property
    def tls(self) -> bool:
        return bool(self.flags.get("cert-file"))

    @property
    def joined(self) -> bool:
        return self.flags.get("initial-cluster-state") == "existing" and bool(
            self.annotations.get("standin.sealer.io/datastore")
        )


def _load_certs(path: str) -> list[x509.Certificate]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise Failed(f"open {path}: {(e.strerror or str(e)).lower()}")
    try:
        return x509.load_pem_x509_certificates(data)  # type: ignore[attr-defined,no-any-return]
    except AttributeError:  # cryptography < 39 reads one certificate
        return [x509.load_pem_x509_certificate(data)]
    except ValueError:
        raise Failed(f"failed to append certificates from {path}")


def _signed_by(cert: x509.Certificate, cas: list[x509.Certificate]) -> bool:
    for ca in cas:
        if ca.subject != cert.issuer:
            continue
        key = ca.public_key()
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                assert cert.signature_hash_algorithm is not None
                key.verify(
                    cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
                )
            elif isinstance(key, rsa.RSAPublicKey):
                assert cert.signature_hash_algorithm is not None
                key.verify(
                    cert.signature,
                    cert.tbs_certificate_bytes,
                    padding.PKCS1v15(),
                    cert.signature_hash_algorithm,
                )
            else:
                continue
        except InvalidSignature:
            continue
        return True
    return False


def _covers(cert: x509.Certificate, host: str) -> tuple[bool, list[str]]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False, []
    ips = [str(i) for i in sans.get_values_for_type(x509.IPAddress)]
    dns = [str(d) for d in sans.get_values_for_type(x509.DNSName)]
    try:
        ipaddress.ip_address(host)
        return host in ips, ips
    except ValueError:
        return host.lower() in (d.lower() for d in dns), dns


class Client:
    """clientv3 with etcdctl's global flags: resolves each endpoint to the local member, or fails the
    way the gRPC dial would."""

    def __init__(self, opts: dict[str, Any]) -> None:
        self.opts = opts
        self.endpoints = [e for e in str(opts["endpoints"]).split(",") if e]
        cert, key = opts["cert"], opts["key"]
        if bool(cert) != bool(key):
            raise Failed(f"KeyFile and CertFile must both be present[key: {key}, cert: {cert}]")
        self.client_cert: x509.Certificate | None = None
        if cert:
            self.client_cert = _load_certs(cert)[0]
            try:
                private = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
            except OSError as e:
                raise Failed(f"open {key}: {(e.strerror or str(e)).lower()}")
            except ValueError:
                raise Failed("tls: failed to find any PEM data in key input")
            pub = serialization.PublicFormat.SubjectPublicKeyInfo
            der = serialization.Encoding.DER
            if private.public_key().public_bytes(der, pub) != self.client_cert.public_key().public_bytes(
                der, pub
            ):
                raise Failed("tls: private key does not match public key")
        self.cas = _load_certs(opts["cacert"]) if opts["cacert"] else []

    @staticmethod
    def _url(endpoint: str) -> urllib.parse.ParseResult:
        return urllib.parse.urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")

    def dial(self, endpoint: str) -> Member:
        """The member behind `endpoint`, or Failed with what the dial reports (after the dial timeout,
        as clientv3.New blocks until then)."""
        url = self._url(endpoint)
        manifest = sysroot(MANIFEST)
        member = Member(manifest) if manifest.exists() else None
        served = {(self._url(u).hostname, self._url(u).port) for u in (member.listen if member else [])}
        if member is None or (url.hostname, url.port or 2379) not in served:
            self._fail(
                endpoint,
                f"transport: Error while dialing: dial tcp {url.netloc}: connect: connection refused",
            )
        assert member is not None
        if url.scheme == "http" and member.tls:
            self._fail(endpoint, "error reading server preface: EOF")
        if url.scheme == "https":
            if not member.tls:
                self._fail(
                    endpoint,
                    "transport: authentication handshake failed: tls: first record does not look like a "
                    "TLS handshake",
                )
            server = _load_certs(member.flags["cert-file"])[0]
            if not self.opts["insecure-skip-tls-verify"]:
                if not self.cas or not _signed_by(server, self.cas):
                    self._fail(
                        endpoint,
                        "transport: authentication handshake failed: tls: failed to verify certificate: "
                        "x509: certificate signed by unknown authority",
                    )
                ok, names = _covers(server, url.hostname or "")
                if not ok:
                    self._fail(
                        endpoint,
                        f"transport: authentication handshake failed: tls: failed to verify certificate: "
                        f"x509: certificate is valid for {', '.join(names)}, not {url.hostname}",
                    )
            if member.flags.get("client-cert-auth") == "true":
                trusted = _load_certs(member.flags.get("trusted-ca-file", ""))
                if self.client_cert is None:
                    self._fail(endpoint, "remote error: tls: certificate required")
                assert self.client_cert is not None
                if not _signed_by(self.client_cert, trusted):
                    self._fail(endpoint, "remote error: tls: bad certificate")
        return member

    def _fail(self, endpoint: str, why: str) -> None:
        # clientv3 keeps retrying until the dial timeout; a short wait keeps the behaviour visible
        # without slowing tests the way the full default (2s per attempt) would.
        time.sleep(min(_seconds(self.opts["dial-timeout"]), 1.0))
        zlog(
            "warn",
            "v3@v3.5.15/retry_interceptor.go:62",
            "retrying of unary invoker failed",
            target=f"etcd-endpoints://0xc000{os.getpid() % 10000:04d}/{self._url(endpoint).netloc}",
            attempt=0,
            error=f"rpc error: code = DeadlineExceeded desc = latest balancer error: last connection error: "
            f'connection error: desc = "{why}"',
        )
        raise Failed("context deadline exceeded")


def _seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * units[suffix]
            except ValueError:
                break
    raise UsageError(f'invalid argument "{text}" for "--dial-timeout" flag: time: invalid duration "{text}"')


def read_store(member: Member) -> bytes:
    if member.joined:
        # the stand-in's own limit, not etcd's: a joined control plane's member holds no data here
        raise Failed(
            "rpc error: code = Unavailable desc = stand-in etcd: this control plane's member forwards to "
            f"{member.annotations['standin.sealer.io/datastore']} (tests/doubles/README.md, HA model); "
            "take the snapshot on the first control plane"
        )
    # kubeadm writes the manifest with its paths (already under K8S_STANDIN_ROOT in tests)
    path = member.data_dir / STORE
    try:
        return path.read_bytes()
    except OSError:
        raise Failed("rpc error: code = Unavailable desc = etcdserver: no leader")


# --------------------------------------------------------------------------------------- etcdctl


def global_flags() -> list[Flag]:
    return [
        Flag("endpoints", env=(), default="127.0.0.1:2379"),
        Flag("cacert"),
        Flag("cert"),
        Flag("key"),
        Flag("user"),
        Flag("password"),
        Flag("dial-timeout", default="2s"),
        Flag("command-timeout", default="5s"),
        Flag("keepalive-time", default="2s"),
        Flag("keepalive-timeout", default="6s"),
        Flag("insecure-skip-tls-verify", "bool"),
        Flag("insecure-transport", "bool", default=True),
        Flag("insecure-discovery", "bool", default=True),
        Flag("discovery-srv", aliases=("d",)),
        Flag("discovery-srv-name"),
        Flag("write-out", aliases=("w",), default="simple"),
        Flag("hex", "bool"),
        Flag("debug", "bool"),
        Flag("help", "bool", aliases=("h",)),
    ]


ENV_FLAGS = ("endpoints", "cacert", "cert", "key", "dial-timeout", "command-timeout", "write-out", "user")


def parse(flags: list[Flag], args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """pflag parsing; ETCDCTL_<FLAG> environment variables fill flags not given (and ETCDCTL_API
    must be 3 if set: v2 is gone from etcdctl 3.4+)."""
    api = os.environ.get("ETCDCTL_API")
    if api and api != "3":
        raise Failed(f'unsupported API version "{api}"')
    opts, pos = parse_pflags(flags, args)
    given = {a[2:].partition("=")[0] for a in args if a.startswith("--")}
    for name in ENV_FLAGS:
        env = os.environ.get("ETCDCTL_" + name.upper().replace("-", "_"))
        if env and name in opts and name not in given:
            opts[name] = env
    if opts.get("write-out", "simple") not in ("simple", "json", "table", "fields", "protobuf"):
        raise Failed(f"unknown output format: {opts['write-out']}", EXIT_BAD_ARGS)
    return opts, pos


def snapshot_save(opts: dict[str, Any], pos: list[str]) -> int:
    if len(pos) != 1:
        raise Failed("snapshot save expects one argument", EXIT_BAD_ARGS)
    client = Client(opts)
    if len(client.endpoints) != 1:
        raise Failed(
            f"snapshot must be requested to one selected node, not multiple [{' '.join(client.endpoints)}]",
            EXIT_INTERRUPTED,
        )
    path = Path(pos[0])
    part = path.with_name(path.name + ".part")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise Failed(f"could not open {part} ({(e.strerror or str(e)).lower()})", EXIT_INTERRUPTED)
    zlog("info", "snapshot/v3_snapshot.go:65", "created temporary db file", path=str(part))
    start = time.monotonic()
    try:
        try:
            member = client.dial(client.endpoints[0])
            zlog("info", "v3@v3.5.15/maintenance.go:212", "opened snapshot stream; downloading")
            zlog("info", "snapshot/v3_snapshot.go:73", "fetching snapshot", endpoint=client.endpoints[0])
            data = encode_snapshot(read_store(member))
        except Failed as e:
            os.close(fd)
            fd = -1
            part.unlink(missing_ok=True)  # as etcd's Save removes the partial file on error
            raise Failed(str(e), EXIT_INTERRUPTED)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        if fd >= 0:
            os.close(fd)
    zlog("info", "v3@v3.5.15/maintenance.go:220", "completed snapshot read; closing")
    took = time.monotonic() - start
    zlog(
        "info",
        "snapshot/v3_snapshot.go:88",
        "fetched snapshot",
        endpoint=client.endpoints[0],
        size=human_size(len(data)),
        took=f"{took:.6f}s",
    )
    os.replace(part, path)
    zlog("info", "snapshot/v3_snapshot.go:97", "saved", path=str(path))
    print(f"Snapshot saved at {path}")
    return 0


def snapshot_status(opts: dict[str, Any], pos: list[str]) -> int:
    if len(pos) != 1:
        raise Failed("snapshot status requires exactly one argument", EXIT_BAD_ARGS)
    path = Path(pos[0])
    try:
        data = path.read_bytes()
    except OSError as e:
        raise Failed(f"stat {path}: {(e.strerror or str(e)).lower()}")
    print_status(status_of(data), opts["write-out"])
    return 0


def endpoint_health(opts: dict[str, Any]) -> int:
    client = Client(opts)
    bad = False
    for ep in client.endpoints:
        start = time.monotonic()
        try:
            member = client.dial(ep)
            read_store(member) if not member.joined else None
        except Failed as e:
            sys.stderr.write(f"{ep} is unhealthy: failed to commit proposal: {e}\n")
            bad = True
            continue
        print(
            f"{ep} is healthy: successfully committed proposal: "
            f"took = {(time.monotonic() - start) * 1000:.6f}ms"
        )
    if bad:
        raise Failed("unhealthy cluster")
    return 0


# ----------------------------------------------------------------------------------- membership
# The stand-in's stacked etcd has no raft: its membership is the record kubeadm init/join/reset keep,
# the ConfigMap kube-system/kubeadm-standin-etcd ("name=https://ip:2380,..." under `members`) in the
# first control plane's store. etcdctl reaches it through the local API server with the host's
# admin.conf (as kubeadm reset's remove-etcd-member phase does): in this model the API server IS the
# etcd member, so an answering API is an answering member.

MEMBERS_CM = "kubeadm-standin-etcd"  # the same record as kubeadm.ETCD_MEMBERS_CM
MEMBERS_PATH = f"/api/v1/namespaces/kube-system/configmaps/{MEMBERS_CM}"
ADMIN_CONF = "/etc/kubernetes/admin.conf"
CLUSTER_TOKEN = "etcd-cluster"  # etcd's --initial-cluster-token default; kubeadm sets none
# a healthy cluster that elected its first leader and never lost it
RAFT_TERM = 2


def member_id(name: str, peer_urls: list[str], token: str = CLUSTER_TOKEN) -> int:
    """etcd's computeMemberID: the first 8 bytes (big endian) of sha1(sorted peer URLs + cluster
    token + salt). etcd salts a member added at runtime with the time it was added; the stand-in
    salts with the member's name instead, so an ID is stable from one call to the next, and the
    local tests' control planes (all on 127.0.0.1) still get distinct IDs."""
    digest = hashlib.sha1(("".join(sorted(peer_urls)) + token + name).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def cluster_id(founder: int) -> int:
    """etcd's RaftCluster.genID over the founding member (the cluster's ID never changes after)."""
    return int.from_bytes(hashlib.sha1(founder.to_bytes(8, "big")).digest()[:8], "big")


def client_url(peer_url: str) -> str:
    """kubeadm's members advertise https://<ip>:2379 beside their peer URL https://<ip>:2380."""
    url = urllib.parse.urlsplit(peer_url)
    host = f"[{url.hostname}]" if url.hostname and ":" in url.hostname else str(url.hostname)
    return f"{url.scheme}://{host}:2379"


def parse_members(record: str) -> list[dict[str, Any]]:
    """`name=peerURL,...` -> etcd's Member messages, in the record's order (join order)."""
    out = []
    for entry in (e for e in record.split(",") if e):
        name, sep, url = entry.partition("=")
        if not sep or "://" not in url:
            raise Failed(f"stand-in etcd: malformed member {entry!r} in kube-system/{MEMBERS_CM}")
        out.append(
            {"ID": member_id(name, [url]), "name": name, "peerURLs": [url], "clientURLs": [client_url(url)]}
        )
    return out


class Membership:
    """The membership record behind the member an endpoint reached."""

    def __init__(self, member: Member) -> None:
        self.member = member
        conf = sysroot(ADMIN_CONF)
        try:
            self.api = KubeClient.from_kubeconfig(conf, timeout=10.0)
        except (OSError, ValueError, KeyError, StopIteration, TypeError, yaml.YAMLError) as e:
            raise Failed(
                "rpc error: code = Unavailable desc = stand-in etcd: the membership record is read through "
                f"{conf} (tests/doubles/README.md, etcdctl), which cannot be used: {e}"
            )

    def _unavailable(self, e: Exception) -> Failed:
        return Failed(
            f"rpc error: code = Unavailable desc = stand-in etcd: the membership record "
            f"kube-system/{MEMBERS_CM} cannot be reached through the local API server: {e}"
        )

    def read(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(the ConfigMap, its members)"""
        try:
            cm = self.api.get(MEMBERS_PATH)
        except (KubeError, OSError) as e:
            raise self._unavailable(e)
        return cm, parse_members(str((cm.get("data") or {}).get("members") or ""))

    def header(self, cm: dict[str, Any]) -> dict[str, int]:
        """ResponseHeader: the cluster's ID (from the founding member's peer URL, the datastore
        owner's address: fixed for the cluster's life), the answering member's ID, the raft term."""
        host = str((cm.get("data") or {}).get("datastore") or "").rsplit(":", 1)[0]
        own_urls = [u for u in self.member.flags.get("initial-advertise-peer-urls", "").split(",") if u]
        return {
            "cluster_id": cluster_id(member_id("", [f"https://{host}:2380"])),
            "member_id": member_id(self.member.flags.get("name", "default"), own_urls),
            "raft_term": RAFT_TERM,
        }

    def remove(self, wanted: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Take the member out of the record (read-modify-write with the resourceVersion, retried on
        a conflict); etcdserver: member not found when it is not there."""
        for _ in range(5):
            cm, members = self.read()
            kept = [m for m in members if m["ID"] != wanted]
            if len(kept) == len(members):
                raise Failed("etcdserver: member not found")
            cm.setdefault("data", {})["members"] = ",".join(f"{m['name']}={m['peerURLs'][0]}" for m in kept)
            try:
                self.api.put(MEMBERS_PATH, cm)
            except KubeError as e:
                if e.code == 409:
                    continue
                raise self._unavailable(e)
            except OSError as e:
                raise self._unavailable(e)
            return cm, kept
        raise Failed("etcdserver: request timed out")


def _output(opts: dict[str, Any], supported: tuple[str, ...]) -> str:
    fmt = str(opts["write-out"])
    if fmt not in supported:
        # etcdctl prints these (fields, protobuf); the stand-in does not model their encodings
        raise Failed(f"stand-in etcdctl: -w {fmt} is not implemented here (tests/doubles/README.md)")
    if opts.get("hex") and fmt == "json":
        raise Failed("stand-in etcdctl: --hex is not implemented here (tests/doubles/README.md)")
    return fmt


def _connect(opts: dict[str, Any]) -> Membership:
    """The first endpoint that answers, as clientv3 balances over --endpoints."""
    client = Client(opts)
    last: Failed | None = None
    for ep in client.endpoints:
        try:
            return Membership(client.dial(ep))
        except Failed as e:
            last = e
    assert last is not None
    raise last


def member_list(opts: dict[str, Any], pos: list[str]) -> int:
    if pos:
        raise UsageError(f'unknown command "{pos[0]}" for "etcdctl member list"')
    fmt = _output(opts, ("simple", "json", "table"))
    ms = _connect(opts)
    cm, members = ms.read()
    if fmt == "json":
        # Go's encoding/json of MemberListResponse: IDs as decimal uint64, empty fields left out
        resp = {"header": ms.header(cm), "members": members}
        print(json.dumps(resp, separators=(",", ":")))
        return 0
    rows = [
        [f"{m['ID']:x}", "started", m["name"], ",".join(m["peerURLs"]), ",".join(m["clientURLs"]), "false"]
        for m in members
    ]
    if fmt == "table":
        print_table(["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"], rows)
        return 0
    for row in rows:
        print(", ".join(row))
    return 0


def member_remove(opts: dict[str, Any], pos: list[str]) -> int:
    if len(pos) != 1:
        raise Failed("member ID is not provided", EXIT_BAD_ARGS)
    text = pos[0]
    # strconv.ParseUint(s, 16, 64): hex digits only (no 0x prefix), at most 64 bits
    if not text or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise Failed(
            f'bad member ID arg (strconv.ParseUint: parsing "{text}": invalid syntax), expecting ID in Hex',
            EXIT_BAD_ARGS,
        )
    wanted = int(text, 16)
    if wanted >= 1 << 64:
        raise Failed(
            f'bad member ID arg (strconv.ParseUint: parsing "{text}": value out of range), '
            "expecting ID in Hex",
            EXIT_BAD_ARGS,
        )
    fmt = _output(opts, ("simple", "json"))
    ms = _connect(opts)
    cm, kept = ms.remove(wanted)
    header = ms.header(cm)
    if fmt == "json":
        print(json.dumps({"header": header, "members": kept}, separators=(",", ":")))
        return 0
    print(f"Member {wanted:16x} removed from cluster {header['cluster_id']:16x}")
    return 0


USAGE = """NAME:
\tetcdctl - A simple command line client for etcd3.

USAGE:
\tetcdctl [flags]

VERSION:
\t3.5.15

API VERSION:
\t3.5

COMMANDS:
\tendpoint health\tChecks the healthiness of endpoints specified in `--endpoints` flag
\tmember list\t\tLists all members in the cluster
\tmember remove\t\tRemoves a member from the cluster
\tsnapshot save\tStores an etcd node backend snapshot to a given file
\tsnapshot status\t[deprecated] Gets backend snapshot status of a given file
\tversion\t\tPrints the version of etcdctl
"""


def _entry(command: Callable[[list[str]], int], argv: list[str] | None) -> int:
    """Both tools print errors as `Error: ...` and exit with the error's code (usage: 1)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return command(args)
    except Failed as e:
        sys.stderr.write(f"Error: {e}\n")
        return e.code
    except UsageError as e:
        sys.stderr.write(f"Error: {e}\n")
        return EXIT_BAD_ARGS


def main(argv: list[str] | None = None) -> int:
    return _entry(_etcdctl, argv)


def _etcdctl(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    opts, pos = parse([*global_flags(), Flag("cluster", "bool")], args)
    cmd, rest = pos[:2], pos[2:]
    if cmd[:1] == ["version"]:
        print(f"etcdctl version: {VERSION}\nAPI version: {API_VERSION}")
        return 0
    if cmd == ["snapshot", "save"]:
        return snapshot_save(opts, rest)
    if cmd == ["snapshot", "status"]:
        sys.stderr.write("Deprecated: Use `etcdutl snapshot status` instead.\n\n")
        return snapshot_status(opts, rest)
    if cmd == ["endpoint", "health"]:
        return endpoint_health(opts)
    if cmd == ["member", "list"]:
        return member_list(opts, rest)
    if cmd == ["member", "remove"]:
        return member_remove(opts, rest)
    raise UsageError(f'unknown command "{" ".join(cmd)}" for "etcdctl"')


# --------------------------------------------------------------------------------------- etcdutl


def restore_flags() -> list[Flag]:
    return [
        Flag("data-dir"),
        Flag("wal-dir"),
        Flag("initial-cluster", default="default=http://localhost:2380"),
        Flag("initial-cluster-token", default="etcd-cluster"),
        Flag("initial-advertise-peer-urls", default="http://localhost:2380"),
        Flag("name", default="default"),
        Flag("skip-hash-check", "bool"),
        Flag("write-out", aliases=("w",), default="simple"),
        Flag("help", "bool", aliases=("h",)),
    ]


def verify_bootstrap(name: str, initial_cluster: str, peer_urls: list[str]) -> None:
    """config.ServerConfig.VerifyBootstrap as far as a restore needs it."""
    members: dict[str, list[str]] = {}
    for pair in (p for p in initial_cluster.split(",") if p):
        k, sep, v = pair.partition("=")
        if not sep or "://" not in v:
            raise Failed(f'URL address does not have the form "host:port": {v}')
        members.setdefault(k, []).append(v)
    if name not in members:
        raise Failed(f'couldn\'t find local name "{name}" in the initial cluster configuration')
    if sorted(members[name]) != sorted(peer_urls):
        raise Failed(
            f"--initial-cluster has {name}={','.join(members[name])} but missing from "
            f"--initial-advertise-peer-urls={','.join(peer_urls)} "
            f'("{",".join(peer_urls)}"(resolved from {",".join(peer_urls)}) != '
            f'"{",".join(members[name])}"(resolved from {",".join(members[name])}))'
        )


def snapshot_restore(opts: dict[str, Any], pos: list[str]) -> int:
    if len(pos) != 1:
        raise Failed("snapshot restore requires exactly one argument", EXIT_BAD_ARGS)
    if not opts["data-dir"]:
        raise Failed('required flag(s) "data-dir" not set', EXIT_BAD_ARGS)
    peer_urls = [u for u in opts["initial-advertise-peer-urls"].split(",") if u]
    verify_bootstrap(opts["name"], opts["initial-cluster"], peer_urls)
    data_dir = Path(opts["data-dir"])
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise Failed(f'data-dir "{data_dir}" not empty or could not be read')
    wal_dir = Path(opts["wal-dir"]) if opts["wal-dir"] else data_dir / "member" / "wal"
    if opts["wal-dir"] and wal_dir.exists():
        raise Failed(f'wal-dir "{wal_dir}" exists')
    snap_dir = data_dir / "member" / "snap"
    src = Path(pos[0])
    try:
        data = src.read_bytes()
    except OSError as e:
        raise Failed(f"open {src}: {(e.strerror or str(e)).lower()}")
    zlog(
        "info",
        "snapshot/v3_snapshot.go:260",
        "restoring snapshot",
        path=str(src),
        **{"wal-dir": str(wal_dir), "data-dir": str(data_dir), "snap-dir": str(snap_dir)},
    )
    payload = snapshot_payload(data, opts["skip-hash-check"])
    parse_store(payload)
    for d in (snap_dir, wal_dir):
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    _write(snap_dir / "db", payload)
    members = [p.partition("=") for p in opts["initial-cluster"].split(",") if p]
    _write(
        wal_dir / "0000000000000000-0000000000000000.wal",
        json.dumps(
            {
                "name": opts["name"],
                "cluster-token": opts["initial-cluster-token"],
                "members": [{"name": k, "peerURL": v} for k, _, v in members],
            }
        ).encode(),
    )
    # the stand-in API server's datastore file (what a real etcd would load from member/snap/db)
    _write(data_dir / STORE, payload)
    zlog(
        "info",
        "snapshot/v3_snapshot.go:287",
        "restored snapshot",
        path=str(src),
        **{"wal-dir": str(wal_dir), "data-dir": str(data_dir), "snap-dir": str(snap_dir)},
    )
    return 0


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def etcdutl_main(argv: list[str] | None = None) -> int:
    return _entry(_etcdutl, argv)


def _etcdutl(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(
            "etcdutl - An administrative command line tool for etcd3.\n\n"
            "Commands: snapshot restore|status, version"
        )
        return 0
    opts, pos = parse_pflags(restore_flags(), args)
    cmd, rest = pos[:2], pos[2:]
    if cmd[:1] == ["version"]:
        print(f"etcdutl version: {VERSION}\nAPI version: {API_VERSION}")
        return 0
    if cmd == ["snapshot", "restore"]:
        return snapshot_restore(opts, rest)
    if cmd == ["snapshot", "status"]:
        return snapshot_status(opts, rest)
    if cmd == ["snapshot", "save"]:
        sys.stderr.write('Command "save" is deprecated, Use `etcdctl snapshot save` to download snapshot\n')
        raise Failed("In order to download snapshot use: `etcdctl snapshot save ...`", EXIT_BAD_ARGS)
    raise UsageError(f'unknown command "{" ".join(cmd)}" for "etcdutl"')


if __name__ == "__main__":
    sys.exit(main())
