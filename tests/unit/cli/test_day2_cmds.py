"""Day-2 commands refuse bad host flags before touching any state, naming the flag."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sealer.cli.main import cli


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEALER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["scale-up", "-m", "10.0.0.300"], "--masters"),
        (["join", "-n", "10.0.0.9-10.0.0.2"], "--nodes"),
        (["delete", "-m", "10.0.0.300"], "-m/-n"),
        (["delete", "-n", "not-an-ip"], "-m/-n"),
    ],
)
def test_bad_address_names_the_flag(home: Path, args: list[str], flag: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert flag in result.output
    assert "Traceback" not in result.output
    assert not home.exists()  # refused before any cluster state was read or made
