"""Per-host logs: private, appended per run, rotated once past their size bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealer.infra import hostlog
from sealer.infra.hostlog import HostLogs


def _run(logdir: Path, text: str) -> None:
    logs = HostLogs(logdir)
    log = logs.for_host("10.0.0.2:22")
    log.begin("true", sudo=True, env_names=["TOKEN"])
    log.write(text)
    log.end(0, 0.1)
    logs.close()


def test_logs_are_private_and_appended_per_run(tmp_path: Path) -> None:
    logdir = tmp_path / "a" / "logs" / "run"
    _run(logdir, "first\n")
    _run(logdir, "second\n")
    path = logdir / "10.0.0.2_22.log"
    text = path.read_text()
    assert text.index("first") < text.index("second")
    assert "(sudo) env: TOKEN" in text
    assert path.stat().st_mode & 0o777 == 0o600
    for d in (logdir, logdir.parent, logdir.parent.parent):
        assert d.stat().st_mode & 0o777 == 0o700


def test_a_log_past_its_bound_is_rotated_once_when_a_run_opens_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hostlog, "ROTATE_BYTES", 1000)
    path = tmp_path / "10.0.0.2_22.log"
    _run(tmp_path, "a" * 2000 + "\n")
    _run(tmp_path, "b" * 10 + "\n")  # opened past the bound: the old log moves to .1
    assert "a" * 2000 in (tmp_path / "10.0.0.2_22.log.1").read_text()
    assert "b" * 10 in path.read_text() and "a" * 2000 not in path.read_text()
    _run(tmp_path, "c" * 2000 + "\n")  # below the bound when opened: appended, no rotation
    _run(tmp_path, "d\n")  # past it now: .1 is replaced, never a .2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["10.0.0.2_22.log", "10.0.0.2_22.log.1"]
    assert "c" * 2000 in (tmp_path / "10.0.0.2_22.log.1").read_text()
    assert "a" * 2000 not in (tmp_path / "10.0.0.2_22.log.1").read_text()
    assert "d\n" in path.read_text()
