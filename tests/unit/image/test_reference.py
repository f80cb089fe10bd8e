"""Reference parsing follows distribution/reference: the same names mean the same image as in docker."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealer.errors import ImageError
from sealer.image.reference import parse_reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("library/nginx", "docker.io/library/nginx:latest"),
        ("sealerio/kubernetes:v1.22.15", "docker.io/sealerio/kubernetes:v1.22.15"),
        ("index.docker.io/library/nginx", "docker.io/library/nginx:latest"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app:v1", "localhost:5000/app:v1"),
        ("127.0.0.1:5000/a/b/c:v1", "127.0.0.1:5000/a/b/c:v1"),
        ("registry.local/sealer/k3s", "registry.local/sealer/k3s:latest"),
        (f"nginx@{D}", f"docker.io/library/nginx@{D}"),
        (f"r.io:443/x:v1@{D}", f"r.io:443/x:v1@{D}"),
        ("Registry/app", "Registry/app:latest"),  # uppercase first component is a host
        ("a_b__c-d/e.f", "docker.io/a_b__c-d/e.f:latest"),
        ("[::1]:5000/app:v1", "[::1]:5000/app:v1"),
    ],
)
def test_normalises_like_docker(text: str, expected: str) -> None:
    assert str(parse_reference(text)) == expected


def test_parts_and_api_host() -> None:
    ref = parse_reference("nginx:1.25")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("docker.io", "library/nginx", "1.25", None)
    assert ref.api_host == "registry-1.docker.io"
    assert ref.familiar() == "nginx:1.25"
    local = parse_reference("127.0.0.1:5000/sealer/k3s:v1")
    assert local.api_host == "127.0.0.1:5000"
    assert local.reference == "v1"
    assert parse_reference(f"x@{D}").reference == D


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("Nginx", "lowercase"),
        ("nginx:", "tag"),
        ("nginx:-bad", "tag"),
        ("nginx@sha256:abc", "sha256"),
        ("nginx@md5", "digest"),
        ("http://registry/x", "scheme"),
        ("a b", "whitespace"),
        ("reg.io/", "invalid"),
        ("reg.io//x", "invalid"),
        ("x/" + "a" * 300, "longer"),
        ("bad_-/x..y", "invalid"),
        ("a_b.c/x", "registry host"),  # a dot makes the first component a host, and _ is no host
    ],
)
def test_junk_is_a_clear_image_error(text: str, why: str) -> None:
    with pytest.raises(ImageError) as info:
        parse_reference(text)
    assert why in info.value.message
    assert info.value.hint and "registry" in info.value.hint


# No dots: a dotted first component would be read as a registry host, as docker does.
component = st.from_regex(r"[a-z0-9]{1,8}(?:(?:_|__|-+)[a-z0-9]{1,8}){0,2}", fullmatch=True)
tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
host = st.sampled_from(["", "localhost:5000/", "reg.example.com/", "10.0.0.1:443/", "docker.io/"])


@given(host, st.lists(component, min_size=1, max_size=3), st.one_of(st.none(), tag))
def test_normal_form_is_a_fixed_point(h: str, parts: list[str], t: str | None) -> None:
    text = h + "/".join(parts) + (f":{t}" if t else "")
    ref = parse_reference(text)
    assert parse_reference(str(ref)) == ref
    assert parse_reference(ref.familiar()) == ref
    assert ref.tag == (t or "latest")
