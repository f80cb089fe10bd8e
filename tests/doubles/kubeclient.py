"""A tiny stdlib Kubernetes client for the stand-ins (kubelet heartbeats, kubectl): kubeconfig, TLS, JSON."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import yaml


class KubeError(Exception):
    def __init__(self, code: int, body: Any) -> None:
        self.code = code
        self.body = body
        message = body.get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"{message} (HTTP {code})")

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", "")) if isinstance(self.body, dict) else ""


class KubeClient:
    def __init__(
        self,
        server: str,
        ca_pem: bytes,
        *,
        cert_pem: bytes | None = None,
        key_pem: bytes | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        u = urllib.parse.urlsplit(server)
        if u.scheme != "https" or not u.hostname:
            raise ValueError(f"server {server!r} must be an https:// URL")
        self.server = server
        self.host, self.port = u.hostname, u.port or 443
        self.token = token
        self.timeout = timeout
        ctx = ssl.create_default_context(cadata=ca_pem.decode())
        if cert_pem and key_pem:
            # load_cert_chain wants files; keep them private and short-lived.
            with tempfile.TemporaryDirectory() as d:
                cf, kf = Path(d, "c.pem"), Path(d, "k.pem")
                fd = os.open(kf, os.O_WRONLY | os.O_CREAT, 0o600)
                os.write(fd, key_pem)
                os.close(fd)
                cf.write_bytes(cert_pem)
                ctx.load_cert_chain(str(cf), str(kf))
        self.context = ctx

    @classmethod
    def from_kubeconfig(cls, path: Path | str, timeout: float = 10.0) -> KubeClient:
        doc = yaml.safe_load(Path(path).read_text())
        ctx_name = doc.get("current-context")
        context = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == context["user"])

        def data(obj: dict[str, Any], key: str) -> bytes | None:
            if obj.get(f"{key}-data"):
                return base64.b64decode(obj[f"{key}-data"])
            if obj.get(key):
                return Path(obj[key]).read_bytes()
            return None

        ca = data(cluster, "certificate-authority")
        if ca is None:
            raise ValueError(f"{path}: the cluster has no certificate-authority")
        return cls(
            cluster["server"],
            ca,
            cert_pem=data(user, "client-certificate"),
            key_pem=data(user, "client-key"),
            token=user.get("token"),
            timeout=timeout,
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Any:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=self.timeout)
        try:
            conn.connect()
            # http.client writes headers and body separately; avoid Nagle's 40 ms stall between them
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hdrs = {"Accept": "application/json", **(headers or {})}
            data = None
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                hdrs["Content-Type"] = content_type
            if self.token:
                hdrs["Authorization"] = f"Bearer {self.token}"
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        if resp.status >= 400:
            raise KubeError(resp.status, parsed)
        return parsed

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def create(self, path: str, obj: dict[str, Any]) -> Any:
        return self.request("POST", path, obj)

    def patch(self, path: str, patch: Any, kind: str = "strategic") -> Any:
        ctype = {
            "strategic": "application/strategic-merge-patch+json",
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
        }[kind]
        return self.request("PATCH", path, patch, content_type=ctype)

    def put(self, path: str, obj: dict[str, Any]) -> Any:
        return self.request("PUT", path, obj)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
