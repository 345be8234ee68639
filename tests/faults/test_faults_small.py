"""Case 6 of "What happens when things go wrong": the smaller ones, each a clear error naming the input
and the fix, with nothing else lost."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from flows import stages
from flows.cli import app
from flows.config import load_config, save_config
from storage import layout
from storage.errors import ConfigError


def test_a_missing_dump_leaves_no_run_folder(tmp_path):
    result = CliRunner().invoke(
        app, ["ingest", "--dump", str(tmp_path / "nope.xml.bz2"), "--data-root", str(tmp_path)]
    )
    assert result.exit_code == 2 and "nope.xml.bz2: no such file" in result.output
    assert layout.list_runs(tmp_path) == [] and not (tmp_path / "runs").exists()


def test_a_directory_as_dump_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["ingest", "--dump", str(tmp_path), "--data-root", str(tmp_path / "d")])
    assert result.exit_code == 2 and "a directory, not a file" in result.output and "fix:" in result.output


@pytest.mark.parametrize("section", ["ingest", "link", "kg", "select"])
def test_a_bad_duckdb_memory_limit_is_refused_when_the_config_loads(section):
    with pytest.raises(ConfigError, match=f"{section}.duckdb_memory_limit"):
        load_config("sample", [f"{section}.duckdb_memory_limit=banana"])


def test_a_stage_without_a_date_keeps_the_runs_date_in_its_config(tmp_path):
    run_dir = tmp_path / "runs" / "enwiki-20260301"
    save_config(load_config("sample", ["download.date=20260301"]), run_dir / layout.RUN_CONFIG)
    stages.save_run_config(load_config("sample"), run_dir)  # what `trelm link` saved: `date: latest`
    saved = yaml.safe_load((run_dir / layout.RUN_CONFIG).read_text())
    assert saved["download"]["date"] == "20260301"
