"""Fixtures of the end-to-end tests: the ClusterImages, each built once per session and shared by
every module (tests copy the SEALER_HOME they get): the k3s images of tests/e2e/images.py and the
build.sh-built runtime images of tests/e2e/runtime_images.py."""

from __future__ import annotations

import pytest

from tests.e2e.images import BuiltImages, build_prerequisites, build_standin_images
from tests.e2e.runtime_images import (
    RuntimeImage,
    build_k0s_image,
    build_k3s_image,
    build_kubernetes_image,
)


@pytest.fixture(scope="session")
def k3s_images(tmp_path_factory: pytest.TempPathFactory) -> BuiltImages:
    if reason := build_prerequisites():
        pytest.skip(f"k3s image build: {reason}")
    return build_standin_images(tmp_path_factory.mktemp("k3s-image"))


@pytest.fixture(scope="session")
def k0s_image(tmp_path_factory: pytest.TempPathFactory) -> RuntimeImage:
    """The k0s ClusterImage (stand-in k0s, Debian's containerd beside it) with an app."""
    return build_k0s_image(tmp_path_factory)


@pytest.fixture(scope="session")
def kubernetes_image(tmp_path_factory: pytest.TempPathFactory) -> RuntimeImage:
    """The kubernetes ClusterImage (stand-in kubeadm/kubelet/kubectl, Debian's containerd and runc)
    with an app."""
    return build_kubernetes_image(tmp_path_factory)


@pytest.fixture(scope="session")
def k3s_image(tmp_path_factory: pytest.TempPathFactory) -> RuntimeImage:
    """The k3s ClusterImage built by images/k3s/build.sh (stand-in k3s, Debian's containerd) with an app."""
    return build_k3s_image(tmp_path_factory)
