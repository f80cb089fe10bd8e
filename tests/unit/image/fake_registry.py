"""An in-memory OCI distribution registry as an httpx transport, for protocol tests that inject faults.

The real-registry proof is in tests/integration/image; this double exists to make failures happen on
purpose (dropped connections, corrupt bytes, token services) and to check what the client sends.
It follows the distribution spec's status codes and headers for what it implements.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Broken(httpx.AsyncByteStream):
    """A body that delivers `keep` bytes and then fails like a reset connection."""

    def __init__(self, data: bytes, keep: int) -> None:
        self.data, self.keep = data, keep

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data[: self.keep]
        raise httpx.ReadError("connection reset by peer")


@dataclass
class FakeRegistry:
    host: str = "reg.test"
    users: dict[str, str] = field(default_factory=dict)
    bearer: bool = False  # token auth via a realm on the same host; else basic (if users)
    blobs: dict[str, bytes] = field(default_factory=dict)
    repo_blobs: set[tuple[str, str]] = field(default_factory=set)
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    token_requests: list[httpx.QueryParams] = field(default_factory=list)
    corrupt: set[str] = field(default_factory=set)
    break_download_once: dict[str, int] = field(default_factory=dict)  # digest -> bytes before reset
    break_patch_once: set[int] = field(default_factory=set)  # indexes of PATCH calls that fail mid-way
    wrong_manifest_digest_header: bool = False
    patch_calls: int = 0
    tokens: set[str] = field(default_factory=set)
    denied_repos: set[str] = field(default_factory=set)
    unavailable_once: int = 0  # answer 503 to this many requests first

    # ---------------------------------------------------------------- helpers for tests
    def put(self, repo: str, ref: str, doc: dict[str, object], media: str) -> str:
        data = json.dumps(doc).encode()
        self.manifests[(repo, ref)] = (data, media)
        self.manifests[(repo, sha(data))] = (data, media)
        return sha(data)

    def add_blob(self, repo: str, data: bytes) -> str:
        d = sha(data)
        self.blobs[d] = data
        self.repo_blobs.add((repo, d))
        return d

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # ---------------------------------------------------------------- protocol
    def _authorised(self, request: httpx.Request) -> bool:
        if not self.users:
            return True
        header = request.headers.get("authorization", "")
        if self.bearer:
            return header.startswith("Bearer ") and header[7:] in self.tokens
        if header.startswith("Basic "):
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            return self.users.get(user) == pw
        return False

    def _challenge(self, scope: str) -> httpx.Response:
        if self.bearer:
            value = f'Bearer realm="https://{self.host}/token",service="{self.host}",scope="{scope}"'
        else:
            value = 'Basic realm="fake"'
        return httpx.Response(
            401,
            headers={"WWW-Authenticate": value},
            json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
        )

    def _token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests.append(request.url.params)
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return httpx.Response(401)
        user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
        if self.users.get(user) != pw:
            return httpx.Response(401)
        token = uuid.uuid4().hex
        self.tokens.add(token)
        return httpx.Response(200, json={"token": token})

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append((request.method, path))
        if path == "/token":
            return self._token(request)
        if path == "/v2/":
            return httpx.Response(200) if self._authorised(request) else self._challenge("")
        m = re.fullmatch(r"/v2/(.+)/(manifests|blobs/uploads|blobs)/(.*)", path)
        if not m:
            return httpx.Response(404)
        repo, kind, rest = m.groups()
        if self.unavailable_once > 0:
            self.unavailable_once -= 1
            return httpx.Response(503, json={"errors": [{"code": "UNAVAILABLE", "message": "try later"}]})
        if repo in self.denied_repos:
            return httpx.Response(
                403, json={"errors": [{"code": "DENIED", "message": "requested access denied"}]}
            )
        if not self._authorised(request):
            actions = "pull" if request.method in ("GET", "HEAD") else "pull,push"
            return self._challenge(f"repository:{repo}:{actions}")
        if kind == "manifests":
            return self._manifest(request, repo, rest)
        if kind == "blobs":
            return self._blob(request, repo, rest)
        return await self._upload(request, repo, rest)

    def _manifest(self, request: httpx.Request, repo: str, ref: str) -> httpx.Response:
        if request.method == "PUT":
            data = request.content
            media = request.headers["content-type"]
            self.manifests[(repo, ref)] = (data, media)
            self.manifests[(repo, sha(data))] = (data, media)
            return httpx.Response(201, headers={"Docker-Content-Digest": sha(data)})
        if (repo, ref) not in self.manifests:
            return httpx.Response(
                404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
            )
        data, media = self.manifests[(repo, ref)]
        digest = sha(b"other") if self.wrong_manifest_digest_header else sha(data)
        return httpx.Response(
            200, content=data, headers={"Content-Type": media, "Docker-Content-Digest": digest}
        )

    def _blob(self, request: httpx.Request, repo: str, digest: str) -> httpx.Response:
        if (repo, digest) not in self.repo_blobs:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]})
        data = self.blobs[digest]
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Content-Length": str(len(data))})
        if digest in self.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 1])
        rng = request.headers.get("range")
        status = 200
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            data, status = data[start:], 206
        if digest in self.break_download_once:
            keep = self.break_download_once.pop(digest)
            return httpx.Response(status, stream=_Broken(data, keep))
        return httpx.Response(status, content=data)

    async def _upload(self, request: httpx.Request, repo: str, upload_id: str) -> httpx.Response:
        if request.method == "POST":
            mount, src = request.url.params.get("mount"), request.url.params.get("from")
            if mount and src and (src, mount) in self.repo_blobs:
                self.repo_blobs.add((repo, mount))
                return httpx.Response(201, headers={"Location": f"/v2/{repo}/blobs/{mount}"})
            uid = uuid.uuid4().hex
            self.uploads[uid] = bytearray()
            return httpx.Response(
                202, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=x", "Range": "0-0"}
            )
        buf = self.uploads.get(upload_id)
        if buf is None:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UPLOAD_UNKNOWN", "message": "gone"}]})
        loc = {"Location": f"/v2/{repo}/blobs/uploads/{upload_id}?_state=y"}
        if request.method == "GET":
            return httpx.Response(204, headers={**loc, "Range": f"0-{len(buf) - 1}"})
        if request.method == "PATCH":
            call = self.patch_calls
            self.patch_calls += 1
            start = int(request.headers["content-range"].split("-")[0])
            if start != len(buf):
                return httpx.Response(416)
            body = b"".join([c async for c in request.stream])  # type: ignore[union-attr]
            if call in self.break_patch_once:
                self.break_patch_once.discard(call)
                buf += body[: len(body) // 2]  # the registry kept what arrived before the reset
                raise httpx.WriteError("connection reset by peer")
            buf += body
            return httpx.Response(202, headers={**loc, "Range": f"0-{len(buf) - 1}"})
        if request.method == "PUT":
            body = b"".join([c async for c in request.stream])  # type: ignore[union-attr]
            buf += body
            digest = request.url.params["digest"]
            if sha(bytes(buf)) != digest:
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID", "message": "bad"}]})
            self.blobs[digest] = bytes(buf)
            self.repo_blobs.add((repo, digest))
            del self.uploads[upload_id]
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        return httpx.Response(405)
