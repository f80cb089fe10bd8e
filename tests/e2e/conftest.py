"""Fixtures of the end-to-end tests: the k3s ClusterImages, built once per session (tests/e2e/images.py)."""

from __future__ import annotations

import pytest

from tests.e2e.images import BuiltImages, build_prerequisites, build_standin_images


@pytest.fixture(scope="session")
def k3s_images(tmp_path_factory: pytest.TempPathFactory) -> BuiltImages:
    if reason := build_prerequisites():
        pytest.skip(f"k3s image build: {reason}")
    return build_standin_images(tmp_path_factory.mktemp("k3s-image"))
