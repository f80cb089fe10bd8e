"""Container-image collection: manifests, imageLists, helm charts (without helm), app dirs, user lists."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealer.errors import InputError
from sealer.image.collect import (
    collect_images,
    decode_line,
    images_in_text,
    images_in_values,
    images_in_yaml,
    planned_tree,
    read_image_list,
    render_image_value,
    tree_of,
)
from sealer.image.kubefile import parse_kubefile


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
    return root


def names(root: Path, **kw: object) -> list[str]:
    return collect_images(tree_of(root), **kw).names()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("    image: nginx:1.25", "nginx:1.25"),
        ('  - image: "quay.io/x/y:v1"', "quay.io/x/y:v1"),
        ("  image: 'k8s.gcr.io/pause:3.2' # the pause image", "k8s.gcr.io/pause:3.2"),
        ('  "image": "busybox",', "busybox"),
        ("    initImage: alpine:3", "alpine:3"),
        ("  # image: commented:1", None),
        ("  #image: commented:1", None),
        ("  imagePullPolicy: Always", None),
        ("  image:", None),
        ("  useCustomImage: true", None),
        ("  image: |", None),
        ("  name: image", None),
    ],
)
def test_decode_line_is_sealers_line_scanner(line: str, want: str | None) -> None:
    got = decode_line(line)
    if got is not None and line.lstrip().startswith("#"):
        got = None  # collect_images skips whole-line comments before decoding
    assert got == want


def test_yaml_multi_doc_lists_flow_and_json(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "manifests/multi.yaml": (
                "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n    image: nginx:1.25\n"
                "  initContainers: [{name: i, image: 'busybox:1.36'}]\n---\n"
                "kind: List\nitems:\n- spec:\n    template:\n      spec:\n        containers:\n"
                "        - image: registry.k8s.io/coredns/coredns:v1.10.1\n---\n"
            ),
            "manifests/sub/app.json": '{"spec": {"image": "ignored-not-yaml-suffix"}}',
            "manifests/sub/app.yml": '{"spec": {"containers": [{"image": "ghcr.io/o/app@sha256:'
            + "a" * 64
            + '"}]}}',
            "manifests/tpl.yaml.tmpl": "image: {{ .Registry }}/x:1\nimage: redis:7\n",
            "manifests/README.md": "image: not-scanned",
        },
    )
    assert names(tmp_path) == [
        "docker.io/library/nginx:1.25",
        "registry.k8s.io/coredns/coredns:v1.10.1",
        "docker.io/library/busybox:1.36",
        "ghcr.io/o/app@sha256:" + "a" * 64,
        "docker.io/library/redis:7",
    ]


def test_yaml_parsing_finds_what_the_line_scanner_misses() -> None:
    text = "spec:\n  containers: [{name: a, image: nginx:1}]\n  other:\n    image:\n      alpine:3\n"
    assert images_in_yaml(text) == ["nginx:1", "alpine:3"]
    assert images_in_yaml("a: [unclosed\n") is None


def test_image_list_files_and_comments(tmp_path: Path) -> None:
    write(tmp_path, {"manifests/imageList": "# core\nnginx\n\n  busybox:1  # pinned\nnginx\n"})
    assert names(tmp_path) == ["docker.io/library/nginx:latest", "docker.io/library/busybox:1"]
    assert read_image_list("a\n#b\n c # d\n") == ["a", "c"]


def test_invalid_candidates_are_skipped_with_a_warning(tmp_path: Path) -> None:
    write(tmp_path, {"manifests/a.yaml": "image: UPPER/Case:1\nimage: nginx\n"})
    result = collect_images(tree_of(tmp_path))
    assert result.names() == ["docker.io/library/nginx:latest"]
    assert len(result.skipped) == 1 and result.skipped[0].file == "manifests/a.yaml:1"


def test_user_image_lists_and_ignored_lists(tmp_path: Path) -> None:
    write(tmp_path, {"manifests/a.yaml": "image: nginx:1\nimage: busybox:1\n"})
    result = collect_images(
        tree_of(tmp_path),
        image_lists=[("extra.txt", "quay.io/a/b:2\nnginx:1\n")],
        ignored_lists=[("skip.txt", "docker.io/library/busybox:1\n")],
    )
    assert result.names() == ["docker.io/library/nginx:1", "quay.io/a/b:2"]
    assert result.ignored == ["docker.io/library/busybox:1"]
    with pytest.raises(InputError) as info:
        collect_images(tree_of(tmp_path), image_lists=[("bad.txt", "ok:1\nNot Valid\n")])
    assert info.value.problems[0].file == "bad.txt"


def test_values_conventions() -> None:
    values = {
        "global": {"imageRegistry": "mirror.local:5000"},
        "image": {"repository": "bitnami/mysql", "tag": "8.0"},
        "metrics": {"image": {"registry": "docker.io", "repository": "prom/exporter", "tag": 1}},
        "sidecarImage": {"name": "envoyproxy/envoy"},
        "plain": {"image": "quay.io/x/y:z"},
        "digest": {"image": {"repository": "a/b", "digest": "sha256:" + "b" * 64}},
        "templated": {"image": "{{ .Values.x }}"},
        "notAnImg": {"repository": "ignored"},
        "useCustomImage": True,
    }
    assert images_in_values(values, "2.0") == [
        "mirror.local:5000/bitnami/mysql:8.0",
        "docker.io/prom/exporter:1",
        "mirror.local:5000/envoyproxy/envoy:2.0",
        "quay.io/x/y:z",
        "mirror.local:5000/a/b@sha256:" + "b" * 64,
    ]


def test_render_image_value() -> None:
    values = {"registry": "brigadecore", "name": "app", "image": {"tag": ""}}
    chart = {"appVersion": "v0.4.1"}
    assert (
        render_image_value(
            "{{ .Values.registry }}/{{ .Values.name }}:{{ default .Chart.AppVersion .Values.image.tag }}",
            values,
            chart,
        )
        == "brigadecore/app:v0.4.1"
    )
    assert render_image_value('{{ .Values.name | default "x" | quote }}:1', values, chart) == "app:1"
    assert render_image_value('{{ .Values.missing | default "d" }}', values, chart) == "d"
    assert render_image_value('{{ include "img" . }}', values, chart) is None
    assert render_image_value("{{ .Release.Name }}/x", values, chart) is None


CHART = {
    "Chart.yaml": 'apiVersion: v2\nname: web\nversion: 0.1.0\nappVersion: "1.25"\n',
    "values.yaml": 'image:\n  repository: nginx\n  tag: ""\nsidecar:\n  image: busybox:1.36\n',
    "templates/deploy.yaml": (
        "spec:\n  containers:\n"
        '  - image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"\n'
        '  - image: {{ include "computed" . }}\n  - image: literal/helper:2\n'
    ),
    "templates/_helpers.tpl": '{{- define "computed" -}}x{{- end -}}\n',
    "charts/redis/Chart.yaml": "name: redis\nversion: 1\nappVersion: 7.2\n",
    "charts/redis/values.yaml": "image:\n  registry: docker.io\n  repository: bitnami/redis\n",
    "charts/redis/templates/s.yaml": "image: x\n",
}


def _tgz(files: dict[str, str], top: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_chart_dir_values_templates_and_subcharts(tmp_path: Path) -> None:
    write(tmp_path, {f"charts/web/{k}": v for k, v in CHART.items()})
    result = collect_images(tree_of(tmp_path))
    assert result.names() == [
        "docker.io/library/nginx:1.25",
        "docker.io/library/busybox:1.36",
        "docker.io/literal/helper:2",
        "docker.io/bitnami/redis:7.2",
        "docker.io/library/x:latest",
    ]
    assert result.images[0].source == "charts/web/values.yaml"


def test_packed_chart(tmp_path: Path) -> None:
    write(tmp_path, {"charts/web-0.1.0.tgz": _tgz(CHART, "web")})
    assert "docker.io/bitnami/redis:7.2" in names(tmp_path)
    assert "docker.io/library/nginx:1.25" in names(tmp_path)


def test_app_dirs_are_tagged_with_the_app(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "application/apps/web/app.yaml": "image: nginx:1\n",
            **{f"application/apps/chart/{k}": v for k, v in CHART.items()},
            "application/apps/shell/run.sh": "docker run image: not-yaml\n",
        },
    )
    result = collect_images(tree_of(tmp_path))
    by_app = {(i.app, i.image) for i in result.images}
    assert ("web", "docker.io/library/nginx:1") in by_app
    assert ("chart", "docker.io/library/nginx:1.25") in by_app
    assert all(i.app != "shell" for i in result.images)


def test_planned_tree_follows_copy_semantics(tmp_path: Path) -> None:
    ctx = write(
        tmp_path,
        {
            "app.yaml": "image: nginx:1\n",
            "imageList": "busybox\n",
            "dir/x.yaml": "image: redis:7\n",
            "renamed.yaml": "image: alpine:3\n",
            "amd64/bin/tool": "",
        },
    )
    text = (
        "FROM scratch\nCOPY imageList manifests\nCOPY app.yaml manifests/\nCOPY dir manifests/d\n"
        "COPY renamed.yaml manifests/new.yaml\nCOPY ${ARCH}/bin bin\nAPP a local://app.yaml\n"
    )
    kf = parse_kubefile(text, context=ctx)
    tree = planned_tree(kf.steps, ctx)
    assert sorted(tree) == [
        "application/apps/a/app.yaml",
        "bin/tool",
        "manifests/app.yaml",
        "manifests/d/x.yaml",
        "manifests/imageList",
        "manifests/new.yaml",
    ]
    assert collect_images(tree).names() == [
        "docker.io/library/busybox:latest",
        "docker.io/library/nginx:1",
        "docker.io/library/redis:7",
        "docker.io/library/alpine:3",
    ]


def test_alias_bombs_and_deep_nesting_cost_nothing(tmp_path: Path) -> None:
    bomb = "a: &a [image: nginx:1]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    assert images_in_yaml(bomb) == ["nginx:1"]
    deep = "x: " + "[" * 5000 + "]" * 5000 + "\n"
    assert images_in_yaml(deep) in (None, [])
    chart = {
        "charts/c/Chart.yaml": "name: c\n",
        "charts/c/values.yaml": bomb,
        "charts/c/templates/x.yaml": "",
    }
    write(tmp_path, {"manifests/bomb.yaml": bomb, **chart})
    assert names(tmp_path) == ["docker.io/library/nginx:1"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("image:{}[]-'\"#&*!|> \n\t.abc/@1$")), max_size=120))
def test_scanners_never_raise(text: str) -> None:
    images_in_text(text)
    images_in_yaml(text)
    render_image_value(text, {"a": {"b": "c"}}, {"appVersion": "1"})
    read_image_list(text)
