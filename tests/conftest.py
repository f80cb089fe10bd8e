"""Shared pytest setup: registers the test bed's fixtures (rootfs, testbed_factory)."""

pytest_plugins = ["tests.testbed.plugin"]
