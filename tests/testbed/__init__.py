"""A test bed of real OpenSSH hosts in Linux namespaces on this machine (see tests/testbed/lab.py);
`python -m tests.testbed` drives it from a shell, tests use the fixtures in tests/testbed/plugin.py."""

from .common import TestbedError
from .lab import Testbed, TestbedFactory, TestHost, list_labs, require_root_and_tools
from .rootfs import prepare as prepare_rootfs

__all__ = [
    "TestHost",
    "Testbed",
    "TestbedError",
    "TestbedFactory",
    "list_labs",
    "prepare_rootfs",
    "require_root_and_tools",
]
