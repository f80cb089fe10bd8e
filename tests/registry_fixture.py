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
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
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

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def ref(self, name: str) -> str:
        return f"{self.host}/{name}"

    def skopeo_flags(self) -> list[str]:
        """Flags skopeo needs to talk to this registry (for `docker://` source or destination)."""
        flags: list[str] = []
        if not self.tls:
            return ["--tls-verify=false"]
        assert self.ca_file is not None
        flags.append(f"--cert-dir={self.ca_file.parent}")
        if self.username:
            flags.append(f"--creds={self.username}:{self.password}")
        return flags

    def stop(self) -> None:
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
) -> Registry:
    """Start docker-registry on 127.0.0.1:<free port>; wait until /v2/ answers. auth requires tls."""
    if reason := registry_missing_reason():
        raise RuntimeError(reason)
    if auth and not tls:
        raise ValueError("distribution only does htpasswd auth over TLS")
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
        username=username if auth else None,
        password=password if auth else None,
        authfile=authfile,
        log_file=log_file,
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
