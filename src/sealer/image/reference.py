"""Docker-style image references: parse, validate and normalise (`nginx` -> docker.io/library/nginx:latest).

Follows the grammar of distribution/reference so names mean the same to sealer, docker and skopeo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sealer.errors import ImageError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
DEFAULT_TAG = "latest"
# docker.io is an alias: the registry API lives elsewhere.
DOCKER_HUB_API_HOST = "registry-1.docker.io"

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_RE = re.compile(_DOMAIN)
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_SHA256_RE = re.compile(r"sha256:[a-f0-9]{64}")
NAME_TOTAL_MAX = 255


@dataclass(frozen=True, order=True)
class Reference:
    """A fully-qualified image reference; `tag` or `digest` (or both) is set after normalisation."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """domain/path, the name without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def api_host(self) -> str:
        """host[:port] to send distribution API requests to."""
        return DOCKER_HUB_API_HOST if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def reference(self) -> str:
        """What goes after /manifests/ in the API: the digest if known, else the tag."""
        if self.digest:
            return self.digest
        return self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_RE.fullmatch(tag):
            raise ImageError(
                f"invalid tag {tag!r}", "a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -"
            )
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def familiar(self) -> str:
        """The short form people type: docker.io/library/nginx:latest -> nginx:latest."""
        text = str(self)
        if self.domain == DEFAULT_DOMAIN:
            text = text[len(DEFAULT_DOMAIN) + 1 :]
            if text.startswith("library/") and "/" not in self.path[len("library/") :]:
                text = text[len("library/") :]
        return text


def _bad(text: str, why: str) -> ImageError:
    return ImageError(
        f"invalid image reference {text!r}: {why}",
        "use [registry[:port]/]repository[:tag][@sha256:digest], e.g. registry.local:5000/sealer/k3s:v1.27",
    )


def split_domain(name: str) -> tuple[str, str]:
    """Split `name` (no tag/digest) into (domain, path) using Docker's rule for the first component."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    return domain, path


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise a reference; raises ImageError naming the input and what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise _bad(str(text), "it is empty")
    raw = text
    text = text.strip()
    if any(c.isspace() for c in text):
        raise _bad(raw, "it contains whitespace")
    if "://" in text:
        raise _bad(raw, "a reference has no scheme (drop http:// or https://)")
    digest: str | None = None
    if "@" in text:
        text, _, digest = text.partition("@")
        if not _DIGEST_RE.fullmatch(digest):
            raise _bad(raw, f"digest {digest!r} is malformed")
        if digest.startswith("sha256:") and not _SHA256_RE.fullmatch(digest):
            raise _bad(raw, "a sha256 digest is 64 lowercase hex characters")
    tag: str | None = None
    # A colon after the last slash is a tag; before it, it's a port.
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > last_slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise _bad(raw, f"tag {tag!r} is invalid (1-128 of [A-Za-z0-9_.-], not starting with . or -)")
    if not text:
        raise _bad(raw, "the repository name is missing")
    domain, path = split_domain(text)
    if not _DOMAIN_RE.fullmatch(domain):
        raise _bad(raw, f"registry host {domain!r} is invalid")
    if not _PATH_RE.fullmatch(path):
        if path != path.lower():
            raise _bad(raw, "repository names must be lowercase")
        raise _bad(raw, f"repository {path!r} is invalid (lowercase letters, digits and . _ - separators)")
    if len(f"{domain}/{path}") > NAME_TOTAL_MAX:
        raise _bad(raw, f"the name is longer than {NAME_TOTAL_MAX} characters")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def is_digest(text: str) -> bool:
    return bool(_SHA256_RE.fullmatch(text))
