"""Every Clusterfile of the sealer compatibility corpus through `validate` and `apply --dry-run`:
a file `validate` accepts always gets a plan that matches the published schema; any other file
gets a located error; nothing ever prints a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealer.cli.main import cli
from sealer.plan.schema import PLAN_SCHEMA
from tests.unit.plan.test_schema import validate

CORPUS = Path(__file__).parents[2] / "compat" / "data" / "sealer" / "clusterfiles"
FILES = sorted(CORPUS.glob("*.yaml"))


def test_the_corpus_is_there() -> None:
    assert len(FILES) >= 50


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_corpus_file_plans_or_fails_cleanly(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALER_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    checked = runner.invoke(cli, ["validate", "-f", str(path)], prog_name="sealer", catch_exceptions=False)
    planned = runner.invoke(
        cli, ["apply", "-f", str(path), "--dry-run", "-o", "json"], prog_name="sealer", catch_exceptions=False
    )
    assert "Traceback" not in checked.output + planned.output
    if checked.exit_code == 0:
        assert planned.exit_code == 0, planned.stderr
        plan = json.loads(planned.stdout)
        assert validate(plan, PLAN_SCHEMA) == []
        assert plan["operation"] == "create" and plan["actions"][0]["kind"] == "install"
    else:
        assert planned.exit_code == 1
        assert str(path) in planned.stderr  # the error names the file
