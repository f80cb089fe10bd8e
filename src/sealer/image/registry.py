"""OCI distribution client on httpx: pull and push manifests, indexes and blobs to and from the store.

Policy (auth, TLS, scheme, retries, parallelism) lives in RegistryClient; an httpx transport can be
injected so the protocol logic is testable without a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sealer.errors import ImageError, RegistryError, SealerError
from sealer.image import oci
from sealer.image.auth import Credentials, find_credentials
from sealer.image.oci import Descriptor, Index, Manifest, Platform
from sealer.image.reference import Reference
from sealer.image.store import CORRUPT_HINT, BlobWriter, ImageStore

log = logging.getLogger(__name__)

ACCEPT_MANIFESTS = ", ".join(oci.ALL_MANIFEST_TYPES)
DEFAULT_CHUNK = 64 << 20
STREAM_CHUNK = 1 << 20
RETRIES = 3
CERT_DIRS = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))


@dataclass
class RegistryOptions:
    """How to talk to registries. Plain HTTP and unverified TLS are explicit opt-ins (`insecure`)."""

    insecure: bool = False
    ca_file: Path | None = None
    authfile: Path | None = None
    credentials: Credentials | None = None  # overrides the auth files (e.g. `login` checking new ones)
    max_parallel: int = 4
    chunk_size: int = DEFAULT_CHUNK
    timeout: float = 120.0


@dataclass
class TransferEvent:
    """Progress of one blob: status is start, progress, chunk (committed upload chunk), done,
    exists (skipped) or mounted."""

    digest: str
    total: int
    done: int
    status: str
    kind: str = "blob"


ProgressCallback = Callable[[TransferEvent], None]


@dataclass
class TransferResult:
    name: str
    digest: str
    media_type: str
    platforms: list[str] = field(default_factory=list)
    blobs_transferred: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    bytes_transferred: int = 0


_CHALLENGE_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Parse a WWW-Authenticate header into (scheme, params)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _CHALLENGE_RE.finditer(rest)
    }
    return scheme.lower(), params


def _error_detail(resp: httpx.Response) -> str:
    with contextlib.suppress(Exception):
        doc = resp.json()
        errs = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errs, list) and errs:
            return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errs)
    return resp.reason_phrase or f"HTTP {resp.status_code}"


class _Retryable(RegistryError):
    """A transfer broke in a way worth retrying or resuming (connection reset, timeout, 502/503/504).

    A RegistryError, so that if it ever escapes the retry loops the user still gets a clean message.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, "check the network and the registry, then retry")


class RegistryClient:
    """One client per command; reuses connections and tokens across every request it makes."""

    def __init__(
        self, options: RegistryOptions | None = None, transport: httpx.AsyncBaseTransport | None = None
    ):
        self.options = options or RegistryOptions()
        self._transport = transport
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._schemes: dict[str, str] = {}
        self._auth: dict[tuple[str, str], str] = {}  # (host, scope) -> Authorization header value
        self._basic_hosts: set[str] = set()
        self._sem = asyncio.Semaphore(max(1, self.options.max_parallel))
        self._locks: dict[str, asyncio.Lock] = {}

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()

    # ------------------------------------------------------------ transport policy
    def _ssl_context(self, host: str) -> ssl.SSLContext | bool:
        if self.options.insecure:
            return False
        ctx = ssl.create_default_context()
        if self.options.ca_file:
            try:
                ctx.load_verify_locations(cafile=str(self.options.ca_file))
            except (OSError, ssl.SSLError) as err:
                raise RegistryError(f"cannot load CA certificate {self.options.ca_file}: {err}")
        for d in CERT_DIRS:
            host_dir = d / host
            if host_dir.is_dir():
                for crt in sorted(host_dir.glob("*.crt")):
                    with contextlib.suppress(OSError, ssl.SSLError):
                        ctx.load_verify_locations(cafile=str(crt))
        return ctx

    def _client(self, host: str) -> httpx.AsyncClient:
        # One pooled client for all hosts, plus one per host that has its own CA directory.
        key = host if any((d / host).is_dir() for d in CERT_DIRS) else ""
        if key not in self._clients:
            conns = self.options.max_parallel * 2 + 2
            self._clients[key] = httpx.AsyncClient(
                verify=self._ssl_context(host),
                timeout=httpx.Timeout(self.options.timeout, connect=15.0),
                follow_redirects=True,
                limits=httpx.Limits(max_connections=conns, max_keepalive_connections=conns),
                transport=self._transport,
                trust_env=True,  # HTTP(S)_PROXY / NO_PROXY, as docker and skopeo honour them
            )
        return self._clients[key]

    async def _base(self, host: str) -> str:
        if host in self._schemes:
            return f"{self._schemes[host]}://{host}"
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:
            if host not in self._schemes:
                self._schemes[host] = await self._probe_scheme(host)
        return f"{self._schemes[host]}://{host}"

    async def _probe_scheme(self, host: str) -> str:
        client = self._client(host)
        try:
            await client.get(f"https://{host}/v2/")
            return "https"
        except httpx.ConnectError as err:
            tls_problem = isinstance(err.__cause__, ssl.SSLError) or "SSL" in str(err) or "TLS" in str(err)
            if tls_problem and not self.options.insecure:
                raise RegistryError(
                    f"TLS connection to registry {host} failed: {err}",
                    "pass the registry's CA with --ca-file (or put it in /etc/containers/certs.d/"
                    f"{host}/ca.crt); for a plain-HTTP or self-signed registry use --insecure",
                )
            if self.options.insecure:
                try:
                    await client.get(f"http://{host}/v2/")
                    return "http"
                except httpx.HTTPError as err2:
                    raise self._unreachable(host, err2)
            raise self._unreachable(host, err)
        except httpx.HTTPError as err:
            raise self._unreachable(host, err)

    def _unreachable(self, host: str, err: Exception) -> RegistryError:
        return RegistryError(
            f"cannot reach registry {host}: {err or type(err).__name__}",
            "check the address and that the registry is running; a plain-HTTP registry needs --insecure",
        )

    # ------------------------------------------------------------ auth
    def _creds(self, host: str, repository: str | None) -> Credentials | None:
        if self.options.credentials is not None:
            return self.options.credentials
        domain = "docker.io" if host == "registry-1.docker.io" else host
        return find_credentials(domain, repository, self.options.authfile)

    async def _authenticate(self, host: str, scope: str, resp: httpx.Response, repository: str | None) -> str:
        header = resp.headers.get("www-authenticate", "")
        scheme, params = parse_challenge(header)
        creds = self._creds(host, repository)
        if scheme == "basic":
            if creds is None:
                raise RegistryError(
                    f"registry {host} requires authentication",
                    f"log in first: sealer login {host} -u <user>",
                )
            self._basic_hosts.add(host)
            return creds.basic()
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError(f"registry {host} asked for unsupported authentication {header!r}")
        query: list[tuple[str, str | int | float | bool | None]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        scopes = [s for s in scope.split(" ") if s]
        if params.get("scope"):
            scopes += [s for s in params["scope"].split(" ") if s not in scopes]
        query += [("scope", s) for s in scopes]
        headers = {"Authorization": creds.basic()} if creds else {}
        client = self._client(host)
        try:
            tr = await client.get(params["realm"], params=query, headers=headers)
        except httpx.HTTPError as err:
            raise RegistryError(f"cannot reach the token service of {host} ({params['realm']}): {err}")
        if tr.status_code in (401, 403):
            if creds is None:
                raise RegistryError(
                    f"registry {host} requires authentication",
                    f"log in first: sealer login {host} -u <user>",
                )
            where = creds.source or "the login"
            raise RegistryError(
                f"registry {host} rejected the credentials of {creds.username} (from {where})",
                f"check them with `sealer login {host}`",
            )
        if tr.status_code != 200:
            raise RegistryError(f"token service of {host} answered {tr.status_code}: {_error_detail(tr)}")
        try:
            doc = tr.json()
        except ValueError:
            raise RegistryError(f"token service of {host} returned something that is not JSON")
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token service of {host} returned no token")
        return f"Bearer {token}"

    async def request(
        self,
        method: str,
        host: str,
        url: str,
        *,
        scope: str = "",
        repository: str | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | Callable[[], AsyncIterator[bytes]] | None = None,
        params: dict[str, str] | None = None,
        stream: bool = False,
        ok: tuple[int, ...] = (200,),
        what: str = "",
    ) -> httpx.Response:
        """Send one request with auth (challenge -> token -> retry once); errors become RegistryError."""
        base = await self._base(host)
        full = url if url.startswith(("http://", "https://")) else base + url
        client = self._client(host)
        for attempt in range(2):
            hdrs = dict(headers or {})
            auth = self._auth.get((host, scope))
            if auth is None and host in self._basic_hosts:
                creds = self._creds(host, repository)
                auth = creds.basic() if creds else None
            if auth:
                hdrs["Authorization"] = auth
            body: Any = content() if callable(content) else content
            req = client.build_request(method, full, headers=hdrs, content=body, params=params)
            try:
                resp = await client.send(req, stream=stream)
            except httpx.ConnectError as err:
                raise self._unreachable(host, err)
            except (
                httpx.ReadError,
                httpx.WriteError,
                httpx.RemoteProtocolError,
                httpx.TimeoutException,
            ) as err:
                raise _Retryable(f"{method} {full}: {err or type(err).__name__}") from err
            if resp.status_code == 401 and attempt == 0:
                await resp.aclose()
                await self._refresh_auth(host, scope, resp, repository, sent=auth)
                continue
            if resp.status_code in ok:
                return resp
            if stream:
                await resp.aread()
            await resp.aclose()
            if resp.status_code in (502, 503, 504):
                raise _Retryable(f"{what or method + ' ' + url}: registry {host} answered {resp.status_code}")
            raise self._status_error(resp, host, what or f"{method} {url}")
        raise RegistryError(f"registry {host} kept asking for authentication", f"sealer login {host}")

    async def _refresh_auth(
        self, host: str, scope: str, resp: httpx.Response, repository: str | None, sent: str | None
    ) -> None:
        # Parallel transfers hit the same 401 together: one fetches the token, the others reuse it.
        lock = self._locks.setdefault(f"auth {host} {scope}", asyncio.Lock())
        async with lock:
            if self._auth.get((host, scope)) == sent:
                self._auth[(host, scope)] = await self._authenticate(host, scope, resp, repository)

    def _status_error(self, resp: httpx.Response, host: str, what: str) -> RegistryError | ImageError:
        detail = _error_detail(resp)
        if resp.status_code == 401:
            return RegistryError(
                f"{what}: registry {host} rejected our credentials ({detail})",
                f"check them with `sealer login {host}`",
            )
        if resp.status_code == 403:
            return RegistryError(
                f"{what}: access denied by registry {host} ({detail})",
                "the account lacks permission on this repository",
            )
        if resp.status_code == 404:
            return ImageError(
                f"{what}: not found on registry {host} ({detail})",
                "check the name and tag (`skopeo list-tags docker://...` lists tags)",
            )
        if resp.status_code == 429:
            return RegistryError(f"{what}: registry {host} is rate-limiting us ({detail})", "wait and retry")
        return RegistryError(f"{what}: registry {host} answered HTTP {resp.status_code} ({detail})")

    # ------------------------------------------------------------ manifests
    async def get_manifest(self, ref: Reference, reference: str | None = None) -> tuple[bytes, str, str]:
        """Fetch a manifest or index; returns (bytes, media type, verified digest)."""
        repo, host = ref.path, ref.api_host
        target = reference or ref.reference
        resp = await self._retry(
            lambda: self.request(
                "GET",
                host,
                f"/v2/{repo}/manifests/{target}",
                scope=f"repository:{repo}:pull",
                repository=repo,
                headers={"Accept": ACCEPT_MANIFESTS},
                what=f"manifest {ref.repository}:{target}".replace(":sha", "@sha"),
            )
        )
        data = resp.content
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        expected = target if target.startswith("sha256:") else resp.headers.get("docker-content-digest")
        if expected and expected.startswith("sha256:") and expected != digest:
            raise ImageError(
                f"digest mismatch for manifest {ref.repository}@{expected}: content hashes to {digest}",
                "the registry or a proxy in between served corrupt or tampered data",
            )
        doc = oci.load_json(data, f"manifest of {ref}")
        media = oci.detect_media_type(doc, resp.headers.get("content-type", "").split(";")[0].strip())
        if media not in oci.ALL_MANIFEST_TYPES:
            raise ImageError(
                f"{ref}: unsupported manifest type {media!r}",
                "sealer reads OCI and Docker v2 schema 2 manifests and indexes",
            )
        return data, media, digest

    async def put_manifest(self, ref: Reference, reference: str, data: bytes, media_type: str) -> str:
        repo, host = ref.path, ref.api_host
        resp = await self._retry(
            lambda: self.request(
                "PUT",
                host,
                f"/v2/{repo}/manifests/{reference}",
                scope=f"repository:{repo}:pull,push",
                repository=repo,
                headers={"Content-Type": media_type},
                content=data,
                ok=(200, 201, 202),
                what=f"push manifest {ref.repository}:{reference}",
            )
        )
        return str(resp.headers.get("docker-content-digest", ""))

    async def _retry(self, make: Callable[[], Any]) -> httpx.Response:
        last: Exception | None = None
        for _ in range(RETRIES):
            try:
                resp: httpx.Response = await make()
                return resp
            except _Retryable as err:
                last = err
                await asyncio.sleep(0.2)
        raise RegistryError(
            f"transfer failed after {RETRIES} attempts: {last}", "check the network and retry"
        )

    # ------------------------------------------------------------ pull
    async def pull(
        self,
        ref: Reference,
        store: ImageStore,
        *,
        platforms: list[Platform] | None = None,
        all_platforms: bool = False,
        progress: ProgressCallback | None = None,
    ) -> TransferResult:
        """Pull `ref` into the store; the name appears only after every blob is verified and stored."""
        with store.ingest():
            data, media, digest = await self.get_manifest(ref)
            result = TransferResult(str(ref), digest, media)
            manifests: list[tuple[Descriptor, bytes, Manifest]] = []
            if media in oci.INDEX_TYPES:
                index = Index.parse(data, f"index of {ref}")
                chosen = self._choose(ref, index, platforms, all_platforms)
                for child in chosen:
                    cdata, cmedia, cdigest = await self.get_manifest(ref, child.digest)
                    if cmedia not in oci.MANIFEST_TYPES:
                        raise ImageError(f"{ref}: nested indexes are not supported ({child.digest})")
                    manifests.append((child, cdata, Manifest.parse(cdata, f"manifest {cdigest}")))
                    result.platforms.append(str(child.platform) if child.platform else "unknown")
            else:
                desc = Descriptor(media, digest, len(data))
                man = Manifest.parse(data, f"manifest of {ref}")
                manifests.append((desc, data, man))
                if platforms:
                    # Asked for a platform explicitly: check the config before fetching any layer.
                    await self._fetch_blob(ref, man.config, store, result, progress)
                    cfg = store.read_json(man.config.digest, "image config")
                    have = Platform(
                        str(cfg.get("os", "")),
                        str(cfg.get("architecture", "")),
                        str(cfg.get("variant") or ""),
                    )
                    if not any(p.matches(have) for p in platforms):
                        asked = ", ".join(map(str, platforms))
                        raise ImageError(
                            f"{ref} is a single-platform image for {have}, not {asked}",
                            "pull it without --platform, or pick an image built for that platform",
                        )
            blobs: dict[str, Descriptor] = {}
            for _, _, man in manifests:
                for b in man.blobs():
                    blobs.setdefault(b.digest, b)
            await _all(self._fetch_blob(ref, b, store, result, progress) for b in blobs.values())
            for desc, mdata, _ in manifests:
                store.put_manifest(mdata, desc.media_type)
            top = (
                store.put_manifest(data, media, partial=True)
                if media in oci.INDEX_TYPES
                else Descriptor(media, digest, len(data))
            )
            if not result.platforms:
                cfg = store.read_json(manifests[0][2].config.digest, "image config")
                result.platforms.append(f"{cfg.get('os', '?')}/{cfg.get('architecture', '?')}")
            store.tag(ref, top)
        return result

    def _choose(
        self, ref: Reference, index: Index, platforms: list[Platform] | None, all_platforms: bool
    ) -> list[Descriptor]:
        usable = [m for m in index.manifests if m.media_type in oci.MANIFEST_TYPES or not m.media_type]
        # Attestation manifests (buildkit) carry platform unknown/unknown; they are not images to run.
        usable = [m for m in usable if not (m.platform and m.platform.os == "unknown")]
        if all_platforms:
            if not usable:
                raise ImageError(f"{ref}: the index lists no image manifests")
            return usable
        wants = platforms or [oci.host_platform()]
        chosen: list[Descriptor] = []
        for want in wants:
            hit = next((m for m in usable if m.platform is not None and want.matches(m.platform)), None)
            if hit is None:
                have = ", ".join(str(m.platform) for m in usable if m.platform) or "none"
                raise ImageError(
                    f"{ref} has no image for platform {want} (it has: {have})",
                    "choose one with --platform, or pull them all with --all-platforms",
                )
            if hit not in chosen:
                chosen.append(hit)
        return chosen

    async def _fetch_blob(
        self,
        ref: Reference,
        desc: Descriptor,
        store: ImageStore,
        result: TransferResult,
        progress: ProgressCallback | None,
    ) -> None:
        if store.has_blob(desc.digest, desc.size):
            result.blobs_skipped += 1
            if progress:
                progress(TransferEvent(desc.digest, desc.size, desc.size, "exists"))
            return
        async with self._sem:
            with store.writer(desc.digest, desc.size) as writer:
                if progress:
                    progress(TransferEvent(desc.digest, desc.size, 0, "start"))
                for attempt in range(RETRIES):
                    try:
                        await self._download_into(ref, desc, writer, progress)
                        break
                    except _Retryable as err:
                        if attempt == RETRIES - 1:
                            raise RegistryError(
                                f"download of {desc.digest} from {ref.repository} failed {RETRIES}x: {err}",
                                "check the network and retry; blobs already fetched are kept",
                            )
                        log.info("resuming %s at byte %d after: %s", desc.digest, writer.size, err)
                writer.commit()
            result.blobs_transferred += 1
            result.bytes_transferred += desc.size
            if progress:
                progress(TransferEvent(desc.digest, desc.size, desc.size, "done"))

    async def _download_into(
        self, ref: Reference, desc: Descriptor, writer: BlobWriter, progress: ProgressCallback | None
    ) -> None:
        repo = ref.path
        headers = {"Range": f"bytes={writer.size}-"} if writer.size else {}
        resp = await self.request(
            "GET",
            ref.api_host,
            f"/v2/{repo}/blobs/{desc.digest}",
            scope=f"repository:{repo}:pull",
            repository=repo,
            headers=headers,
            stream=True,
            ok=(200, 206),
            what=f"blob {desc.digest}",
        )
        try:
            if writer.size and resp.status_code == 200:
                raise RegistryError(
                    f"registry {ref.api_host} cannot resume blob downloads (no Range support)",
                    "retry the pull",
                )
            async for chunk in resp.aiter_bytes(STREAM_CHUNK):
                # Hashing and disk writes release the GIL: off the loop, they overlap with the network.
                await asyncio.to_thread(writer.write, chunk)
                if progress:
                    progress(TransferEvent(desc.digest, desc.size, writer.size, "progress"))
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.TimeoutException) as err:
            raise _Retryable(str(err) or type(err).__name__) from err
        finally:
            await resp.aclose()
        if writer.size < desc.size:
            raise _Retryable(f"connection closed after {writer.size} of {desc.size} bytes")

    # ------------------------------------------------------------ push
    async def push(
        self,
        store: ImageStore,
        source: str,
        dest: Reference,
        *,
        platforms: list[Platform] | None = None,
        progress: ProgressCallback | None = None,
    ) -> TransferResult:
        """Push a local image (manifest or whole index) to `dest`; blobs first, then manifests, tag last."""
        details = store.details(store.resolve(source))
        top = details.record.descriptor
        if details.is_index and platforms:
            images = [
                i for i in details.images if i.platform and any(p.matches(i.platform) for p in platforms)
            ]
            if not images:
                raise ImageError(f"{source} has no local image for {', '.join(map(str, platforms))}")
            if len(images) > 1:
                raise ImageError(f"{source}: --platform matches {len(images)} images; name exactly one")
        else:
            images = details.images
            if details.missing_platforms:
                raise ImageError(
                    f"{source} is a multi-platform image but only part of it is in the local store "
                    f"(missing: {', '.join(map(str, details.missing_platforms))})",
                    "pull it with --all-platforms first, or push one platform with --platform",
                )
        result = TransferResult(str(dest), top.digest, top.media_type)
        blobs: dict[str, Descriptor] = {}
        for img in images:
            for b in img.manifest.blobs():
                blobs.setdefault(b.digest, b)
        mount_from = self._mount_sources(store, dest, set(blobs))
        await _all(
            self._push_blob(store, dest, b, mount_from.get(b.digest), result, progress)
            for b in blobs.values()
        )
        reference = dest.tag or dest.digest or "latest"
        for img in images:
            data = store.read_blob(img.descriptor.digest)
            if details.is_index and not platforms:
                await self.put_manifest(dest, img.descriptor.digest, data, img.manifest.media_type)
            result.platforms.append(str(img.platform) if img.platform else "unknown")
        if details.is_index and not platforms:
            data = store.read_blob(top.digest)
            media = top.media_type or oci.detect_media_type(oci.load_json(data, "index"))
        else:
            img = images[0]
            data = store.read_blob(img.descriptor.digest)
            media = img.manifest.media_type
            result.digest, result.media_type = img.descriptor.digest, media
        await self.put_manifest(dest, reference, data, media)
        return result

    def _mount_sources(self, store: ImageStore, dest: Reference, digests: set[str]) -> dict[str, str]:
        """Other repositories on the same registry that we know hold a blob (from local names)."""
        out: dict[str, str] = {}
        for rec in store.records():
            try:
                ref = rec.reference
            except ImageError:
                continue
            if ref.api_host != dest.api_host or ref.path == dest.path:
                continue
            with contextlib.suppress(ImageError):
                for digest in store.reachable(rec.descriptor) & digests:
                    out.setdefault(digest, ref.path)
        return out

    async def _push_blob(
        self,
        store: ImageStore,
        dest: Reference,
        desc: Descriptor,
        mount_from: str | None,
        result: TransferResult,
        progress: ProgressCallback | None,
    ) -> None:
        repo, host = dest.path, dest.api_host
        scope = f"repository:{repo}:pull,push"
        async with self._sem:
            head = await self._retry(
                lambda: self.request(
                    "HEAD",
                    host,
                    f"/v2/{repo}/blobs/{desc.digest}",
                    scope=scope,
                    repository=repo,
                    ok=(200, 404),
                    what=f"check blob {desc.digest}",
                )
            )
            if head.status_code == 200:
                result.blobs_skipped += 1
                if progress:
                    progress(TransferEvent(desc.digest, desc.size, desc.size, "exists"))
                return
            sessions = _UploadSessions(store, host, repo)
            location = await self._resume_session(host, repo, scope, sessions, desc.digest)
            offset = location[1] if location else 0
            loc = location[0] if location else None
            if loc is None:
                params = {"mount": desc.digest, "from": mount_from} if mount_from else None
                mscope = f"{scope} repository:{mount_from}:pull" if mount_from else scope
                resp = await self._retry(
                    lambda: self.request(
                        "POST",
                        host,
                        f"/v2/{repo}/blobs/uploads/",
                        scope=mscope,
                        repository=repo,
                        params=params,
                        ok=(201, 202),
                        what=f"start upload of {desc.digest}",
                    )
                )
                if resp.status_code == 201:
                    result.blobs_mounted += 1
                    if progress:
                        progress(TransferEvent(desc.digest, desc.size, desc.size, "mounted"))
                    return
                loc = self._location(resp, host)
                sessions.save(desc.digest, loc)
            if progress:
                progress(TransferEvent(desc.digest, desc.size, offset, "start"))
            await self._upload(store, host, repo, scope, desc, loc, offset, sessions, progress)
            result.blobs_transferred += 1
            result.bytes_transferred += desc.size - offset
            if progress:
                progress(TransferEvent(desc.digest, desc.size, desc.size, "done"))

    def _location(self, resp: httpx.Response, host: str) -> str:
        loc = resp.headers.get("location")
        if not loc:
            raise RegistryError(f"registry {host} started an upload without a Location header")
        return str(resp.url.join(loc))

    async def _resume_session(
        self, host: str, repo: str, scope: str, sessions: _UploadSessions, digest: str
    ) -> tuple[str, int] | None:
        """An upload an earlier (killed) sealer left: ask the registry how far it got."""
        loc = sessions.load(digest)
        if not loc:
            return None
        try:
            resp = await self.request(
                "GET", host, loc, scope=scope, repository=repo, ok=(204,), what="upload status"
            )
        except (RegistryError, ImageError, _Retryable):
            sessions.drop(digest)
            return None
        offset = _range_end(resp.headers.get("range")) + 1
        log.info("resuming upload of %s at byte %d", digest, offset)
        return self._location(resp, host) if resp.headers.get("location") else loc, offset

    async def _upload(
        self,
        store: ImageStore,
        host: str,
        repo: str,
        scope: str,
        desc: Descriptor,
        loc: str,
        offset: int,
        sessions: _UploadSessions,
        progress: ProgressCallback | None,
    ) -> None:
        path = store.blob_path(desc.digest)
        hasher = hashlib.sha256()
        # Hash what the registry already has so the local blob is verified end to end before commit.
        with path.open("rb") as f:
            remaining = offset
            while remaining > 0:
                data = f.read(min(STREAM_CHUNK, remaining))
                if not data:
                    break
                hasher.update(data)
                remaining -= len(data)
        size = desc.size
        failures = 0
        while offset < size:
            end = min(offset + self.options.chunk_size, size)
            start = offset
            chunk_hash = hasher.copy()

            def body(start: int = start, end: int = end, h: Any = chunk_hash) -> AsyncIterator[bytes]:
                return _file_chunks(path, start, end, h, desc, progress)

            try:
                resp = await self.request(
                    "PATCH",
                    host,
                    loc,
                    scope=scope,
                    repository=repo,
                    content=body,
                    ok=(202, 204),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{start}-{end - 1}",
                        "Content-Length": str(end - start),
                    },
                    what=f"upload {desc.digest}",
                )
            except _Retryable as err:
                failures += 1
                if failures >= RETRIES:
                    raise RegistryError(
                        f"upload of {desc.digest} failed {failures} times: {err}",
                        "retry the push: it resumes where the registry stopped",
                    )
                status = await self._resume_session(host, repo, scope, sessions, desc.digest)
                if status is None:
                    # distribution invalidates a session that kept part of an interrupted chunk
                    # ("upload resumed at wrong offset"): start this blob again.
                    log.info("registry %s cannot resume the upload of %s; restarting it", host, desc.digest)
                    resp = await self._retry(
                        lambda: self.request(
                            "POST",
                            host,
                            f"/v2/{repo}/blobs/uploads/",
                            scope=scope,
                            repository=repo,
                            ok=(202,),
                            what=f"restart upload of {desc.digest}",
                        )
                    )
                    status = (self._location(resp, host), 0)
                    sessions.save(desc.digest, status[0])
                loc, offset = status
                hasher = _rehash(path, offset)
                continue
            hasher = chunk_hash
            loc = self._location(resp, host) if resp.headers.get("location") else loc
            offset = end
            sessions.save(desc.digest, loc)
            if progress:
                # The registry holds [0, offset) and we know its session: a kill from here on resumes.
                progress(TransferEvent(desc.digest, desc.size, offset, "chunk"))
        actual = "sha256:" + hasher.hexdigest()
        if actual != desc.digest:
            sessions.drop(desc.digest)
            path.unlink(missing_ok=True)
            raise ImageError(
                f"corrupt blob in the image store: {path} hashes to {actual}, expected {desc.digest}; "
                "nothing was pushed",
                CORRUPT_HINT,
            )
        put_url = str(httpx.URL(loc).copy_merge_params({"digest": desc.digest}))
        await self._retry(
            lambda: self.request(
                "PUT",
                host,
                put_url,
                scope=scope,
                repository=repo,
                ok=(201, 204),
                content=b"",
                headers={"Content-Type": "application/octet-stream"},
                what=f"commit blob {desc.digest}",
            )
        )
        sessions.drop(desc.digest)

    # ------------------------------------------------------------ misc
    async def check_login(self, host: str) -> None:
        """Prove the credentials work: /v2/ must answer 200 once authenticated."""
        await self._retry(lambda: self.request("GET", host, "/v2/", what=f"log in to {host}"))

    async def list_tags(self, ref: Reference) -> list[str]:
        repo = ref.path
        resp = await self.request(
            "GET",
            ref.api_host,
            f"/v2/{repo}/tags/list",
            scope=f"repository:{repo}:pull",
            repository=repo,
            what=f"list tags of {ref.repository}",
        )
        tags = resp.json().get("tags") or []
        return [str(t) for t in tags]


async def _all(coros: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run transfers together; the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for coro in coros:
                group.create_task(coro)
    except BaseExceptionGroup as eg:
        errors = _leaves(eg)
        first = next((e for e in errors if isinstance(e, SealerError)), errors[0])
        raise first from None


def _leaves(eg: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in eg.exceptions:
        out += _leaves(e) if isinstance(e, BaseExceptionGroup) else [e]
    return out


def _range_end(header: str | None) -> int:
    """`Range: 0-1234` -> 1234; no header means nothing stored (-1)."""
    if not header:
        return -1
    m = re.fullmatch(r"(?:bytes=)?0-(\d+)", header.strip())
    return int(m.group(1)) if m else -1


def _rehash(path: Path, upto: int) -> Any:
    h = hashlib.sha256()
    with path.open("rb") as f:
        remaining = upto
        while remaining > 0:
            data = f.read(min(STREAM_CHUNK, remaining))
            if not data:
                break
            h.update(data)
            remaining -= len(data)
    return h


async def _file_chunks(
    path: Path, start: int, end: int, hasher: Any, desc: Descriptor, progress: ProgressCallback | None
) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        f.seek(start)
        pos = start
        while pos < end:
            data = await asyncio.to_thread(f.read, min(STREAM_CHUNK, end - pos))
            if not data:
                path.unlink(missing_ok=True)
                raise ImageError(
                    f"blob {desc.digest} in the store is shorter than its descriptor says", CORRUPT_HINT
                )
            hasher.update(data)
            pos += len(data)
            yield data
            if progress:
                progress(TransferEvent(desc.digest, desc.size, pos, "progress"))


class _UploadSessions:
    """Upload locations persisted so a killed push resumes where the registry stopped (files 0600)."""

    def __init__(self, store: ImageStore, host: str, repo: str) -> None:
        self.dir = store.root / "uploads"
        self.host, self.repo = host, repo

    def _path(self, digest: str) -> Path:
        key = hashlib.sha256(f"{self.host}/{self.repo}@{digest}".encode()).hexdigest()[:32]
        return self.dir / f"{key}.json"

    def load(self, digest: str) -> str | None:
        try:
            doc = json.loads(self._path(digest).read_text())
        except (OSError, ValueError):
            return None
        loc = doc.get("location") if isinstance(doc, dict) else None
        return loc if isinstance(loc, str) else None

    def save(self, digest: str, location: str) -> None:
        with contextlib.suppress(OSError):
            self.dir.mkdir(mode=0o700, exist_ok=True)
            path = self._path(digest)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w") as f:
                json.dump(
                    {"location": location, "repository": f"{self.host}/{self.repo}", "digest": digest}, f
                )
            tmp.replace(path)

    def drop(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)
