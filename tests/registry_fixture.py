"""A real distribution registry (Debian docker-registry) on 127.0.0.1 for tests: plain HTTP or TLS+htpasswd.

    from tests.registry_fixture import Registry, start_registry
    reg = start_registry(tmp_path, tls=True, auth=True)
    try: ... reg.host ("127.0.0.1:PORT"), reg.ca_file, reg.username/password, reg.authfile
    finally: reg.stop()

Each registry has its own config, storage dir and free port; never the default :5000 on all interfaces.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import io
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REGISTRY_BIN = "/usr/bin/docker-registry"


def registry_missing_reason() -> str | None:
    """Why registry tests cannot run here, or None."""
    if not (Path(REGISTRY_BIN).exists() or shutil.which("docker-registry")):
        return "docker-registry is not installed (apt-get install docker-registry; scripts/setup does it)"
    return None


def htpasswd_missing_reason() -> str | None:
    if not shutil.which("htpasswd"):
        return "htpasswd is not installed (apt-get install apache2-utils; scripts/setup does it)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tls_files(
    directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for `hosts`; returns (ca.crt, server.crt, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealer test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


class TokenServer:
    """A Docker token service (the `realm` of Bearer auth) issuing ES256 JWTs distribution verifies.

    Grants exactly the scopes asked for to the one user it knows; refuses anyone else with 401.
    Runs in a thread of the test process; `stop()` shuts it down.
    """

    issuer = "sealer-test-issuer"
    service = "sealer-test-registry"

    def __init__(self, workdir: Path, username: str, password: str) -> None:
        import http.server
        import threading

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.username, self.password = username, password
        self.requests: list[dict[str, list[str]]] = []
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealer test token signer")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_file = workdir / "token-signer.crt"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                import urllib.parse

                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query)
                server.requests.append(query)
                header = self.headers.get("Authorization", "")
                user = ""
                if header.startswith("Basic "):
                    u, _, p = base64.b64decode(header[6:]).decode().partition(":")
                    if (u, p) == (server.username, server.password):
                        user = u
                if url.path != "/token" or not user:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"token": server.issue(user, query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self._httpd.server_address[1]}/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def issue(self, user: str, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        def b64url(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        access = []
        for scope in scopes:
            for one in scope.split(" "):
                kind, _, rest = one.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind == "repository" and name:
                    access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": base64.b16encode(os.urandom(8)).decode(),
            "access": access,
        }
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        r, s_ = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s_.to_bytes(32, 'big'))}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@dataclass
class Registry:
    """A running docker-registry started by a test; `stop()` ends exactly the process it started."""

    host: str
    port: int
    root: Path
    storage: Path
    process: subprocess.Popen[bytes]
    tls: bool = False
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    authfile: Path | None = None
    log_file: Path | None = None
    token_server: TokenServer | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def ref(self, name: str) -> str:
        return f"{self.host}/{name}"

    def skopeo_flags(self) -> list[str]:
        """Flags skopeo needs to talk to this registry (for `docker://` source or destination)."""
        flags: list[str] = []
        if self.tls:
            assert self.ca_file is not None
            flags.append(f"--cert-dir={self.ca_file.parent}")
        else:
            flags.append("--tls-verify=false")
        if self.username:
            flags.append(f"--creds={self.username}:{self.password}")
        return flags

    def stop(self) -> None:
        if self.token_server is not None:
            self.token_server.stop()
            self.token_server = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        if self.log_file and self.log_file.exists():
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""


def start_registry(
    workdir: Path,
    *,
    tls: bool = False,
    auth: bool = False,
    username: str = "sealer",
    password: str = "s3cret-Pa55",
    port: int | None = None,
    storage: Path | None = None,
    token_auth: bool = False,
) -> Registry:
    """Start docker-registry on 127.0.0.1:<free port>; wait until /v2/ answers.

    auth=True: htpasswd (distribution requires TLS for it). token_auth=True: Bearer tokens from a
    TokenServer realm (works with or without TLS). Either way `authfile` holds the user's login.
    """
    if reason := registry_missing_reason():
        raise RuntimeError(reason)
    if auth and not tls:
        raise ValueError("distribution only does htpasswd auth over TLS")
    if auth and token_auth:
        raise ValueError("choose htpasswd (auth) or token_auth, not both")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    host = f"127.0.0.1:{port}"
    storage = storage or workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": host, "secret": base64.b64encode(os.urandom(24)).decode()},
    }
    ca_file = None
    if tls:
        ca_src, cert, key = make_tls_files(workdir / "certs")
        # The CA alone in a directory: skopeo's --cert-dir takes every *.crt there and refuses a
        # *.key without its *.cert.
        (workdir / "ca").mkdir(exist_ok=True)
        ca_file = workdir / "ca" / "ca.crt"
        ca_file.write_bytes(ca_src.read_bytes())
        config["http"]["tls"] = {"certificate": str(cert), "key": str(key)}  # type: ignore[index]
    authfile = None
    if auth:
        if reason := htpasswd_missing_reason():
            raise RuntimeError(reason)
        htpasswd = workdir / "htpasswd"
        subprocess.run(
            ["htpasswd", "-Bbc", str(htpasswd), username, password], check=True, capture_output=True
        )
        config["auth"] = {"htpasswd": {"realm": "sealer-test", "path": str(htpasswd)}}
    token_server = None
    if token_auth:
        token_server = TokenServer(workdir, username, password)
        config["auth"] = {
            "token": {
                "realm": token_server.realm,
                "service": TokenServer.service,
                "issuer": TokenServer.issuer,
                "rootcertbundle": str(token_server.cert_file),
            }
        }
    if auth or token_auth:
        authfile = workdir / "auth.json"
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        authfile.write_text(json.dumps({"auths": {host: {"auth": token}}}))
        authfile.chmod(0o600)
    config_file = workdir / "config.yml"
    # JSON is YAML; no dependency on PyYAML in the fixture.
    config_file.write_text(json.dumps(config, indent=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    log_file = workdir / "registry.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    reg = Registry(
        host=host,
        port=port,
        root=workdir,
        storage=storage,
        process=proc,
        tls=tls,
        ca_file=ca_file,
        username=username if auth or token_auth else None,
        password=password if auth or token_auth else None,
        authfile=authfile,
        log_file=log_file,
        token_server=token_server,
    )
    try:
        _wait_ready(reg)
    except BaseException:
        reg.stop()
        raise
    return reg


def _wait_ready(reg: Registry, timeout: float = 20.0) -> None:
    ctx = None
    if reg.tls:
        assert reg.ca_file is not None
        ctx = ssl.create_default_context(cafile=str(reg.ca_file))
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if reg.process.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {reg.process.returncode}:\n{reg.log_tail()}")
        try:
            urllib.request.urlopen(f"{reg.url}/v2/", timeout=2, context=ctx).close()
            return
        except urllib.error.HTTPError as err:
            if err.code == 401:  # up, and asking for credentials
                return
            last = err
        except (OSError, ssl.SSLError) as err:
            last = err
        time.sleep(0.05)
    with contextlib.suppress(Exception):
        reg.stop()
    raise RuntimeError(f"docker-registry on {reg.host} did not become ready: {last}\n{reg.log_tail()}")


def tar_layer(files: dict[str, bytes], mode: int = 0o644) -> bytes:
    """An uncompressed layer tar holding `files` (path -> content), each with `mode`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_test_image(
    store: object,
    name: str,
    layers: list[bytes],
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    os_name: str = "linux",
    arch: str = "amd64",
    created: str = "2026-01-01T00:00:00Z",
    tag: bool = True,
) -> object:
    """Write a small OCI image (config + layer bytes) into an ImageStore; returns its manifest Descriptor.

    Layers are stored as opaque blobs with the OCI tar media type; the store does not look inside.
    """
    import hashlib

    from sealer.image import oci
    from sealer.image.store import ImageStore

    assert isinstance(store, ImageStore)
    layer_descs = [store.put_blob(data, media_type=oci.MEDIA_OCI_LAYER) for data in layers]
    config = {
        "created": created,
        "architecture": arch,
        "os": os_name,
        "config": {"Labels": labels or {}, "Env": ["PATH=/usr/bin"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(d).hexdigest() for d in layers],
        },
    }
    config_desc = store.put_blob(oci.encode_json(config), media_type=oci.MEDIA_OCI_CONFIG)
    manifest = oci.new_manifest(config_desc, layer_descs, annotations)
    desc = store.put_manifest(manifest, oci.MEDIA_OCI_MANIFEST)
    if tag:
        store.tag(name, desc)
    return desc
