"""Config documents: target paths stay inside the rootfs, overwrite and deep merge into each `---`
section of the image's file, and the value | toJson | toBase64 processors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from sealer.apply.configs import deep_merge, render, target_path
from sealer.errors import InputError, NotImplementedYet
from sealer.model.cluster import ConfigDoc


def test_paths_relative_to_rootfs_or_app() -> None:
    assert target_path(ConfigDoc("a", "etc/x.yaml", "")) == "etc/x.yaml"
    assert (
        target_path(ConfigDoc("a", "values.yaml", "", app_name="web")) == "application/apps/web/values.yaml"
    )
    for bad in ("/etc/passwd", "../../etc/passwd", "etc/../../x", "."):
        with pytest.raises(InputError) as err:
            target_path(ConfigDoc("evil", bad, ""))
        assert "leaves the rootfs" in err.value.render() and "Config evil" in err.value.render()


def test_overwrite_and_merge(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/app.yaml").write_text(
        "kind: A\nspec:\n  replicas: 1\n  image: x\n---\nkind: B\nspec:\n  replicas: 2\n"
    )
    over = render(ConfigDoc("o", "etc/app.yaml", "new: file\n"), tmp_path)
    assert (over.path, over.content) == ("etc/app.yaml", "new: file\n")
    merged = render(ConfigDoc("m", "etc/app.yaml", "spec:\n  replicas: 3\n", strategy="merge"), tmp_path)
    docs = list(yaml.safe_load_all(merged.content))
    assert docs == [
        {"kind": "A", "spec": {"replicas": 3, "image": "x"}},
        {"kind": "B", "spec": {"replicas": 3}},
    ]
    fresh = render(ConfigDoc("f", "etc/none.yaml", "a: 1\n", strategy="merge"), tmp_path)
    assert fresh.content == "a: 1\n"  # nothing to merge into: the data itself
    assert "a: 1" not in repr(fresh)  # content may be a secret


def test_merge_needs_yaml(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text("a: [1\n")
    with pytest.raises(InputError, match="Clusterfile"):
        render(ConfigDoc("m", "f.yaml", "b: 2\n", strategy="merge"), tmp_path)


def test_processors(tmp_path: Path) -> None:
    as_json = render(ConfigDoc("j", "c.json", "a: 1\nb: [x]\n", process=("toJson",)), tmp_path)
    assert json.loads(as_json.content) == {"a": 1, "b": ["x"]}
    b64 = render(ConfigDoc("b", "c.txt", "secret", process=("toBase64",)), tmp_path)
    assert base64.b64decode(b64.content) == b"secret"
    per_value = render(
        ConfigDoc("v", "c.yaml", "user: admin\npass: pw\n", process=("value", "toBase64")), tmp_path
    )
    assert yaml.safe_load(per_value.content) == {"user": "YWRtaW4=", "pass": "cHc="}
    with pytest.raises(NotImplementedYet, match="toSecret"):
        render(ConfigDoc("s", "s.yaml", "a: b\n", process=("value", "toSecret")), tmp_path)


def test_deep_merge() -> None:
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": 9}, "d": [2], "e": 3}) == {
        "a": {"b": 9, "c": 2},
        "d": [2],
        "e": 3,
    }
