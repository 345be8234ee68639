"""The README is true: every `bash` block runs, as written, in a folder where `data/demo` is a finished
whole run (the suite's `rehearsal_run`) and `.venv` this environment; a block that cannot run here says
why in its fence (```` ```bash no-test: REASON ````); the example report has the rows of a run's report,
and "What a run shows" lists the artifacts a run publishes, no more, no fewer."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from flows.config import STAGES
from flows.report import artifact_key

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
FENCE = re.compile(r"^```(\S*)[ \t]*(.*?)\n(.*?)^```[ \t]*$", re.M | re.S)
NO_TEST = "no-test:"


def _fences() -> list[tuple[str, str, str]]:
    """(language, the rest of the info string, body) of every fenced block."""
    return [m.groups() for m in FENCE.finditer(README)]


def _runnable() -> list[str]:
    return [body for lang, rest, body in _fences() if lang == "bash" and not rest]


def test_every_bash_block_runs_or_says_why_not():
    marked = [rest for lang, rest, _ in _fences() if lang == "bash" and rest]
    assert all(rest.startswith(NO_TEST) and rest[len(NO_TEST) :].strip() for rest in marked), marked
    bash = [lang for lang, _, _ in _fences() if lang == "bash"]
    assert len(bash) == README.count("\n```bash")  # the pattern found every block, none swallowed


@pytest.fixture(scope="module")
def demo_folder(rehearsal_run, tmp_path_factory) -> Path:
    """A working directory like a checkout after `make demo`: `data/demo` and `.venv`."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "data").mkdir()
    (folder / "data" / "demo").symlink_to(rehearsal_run.run_dir.parents[1])
    (folder / ".venv").symlink_to(Path(sys.prefix))
    return folder


@pytest.mark.parametrize("block", _runnable(), ids=lambda block: block.splitlines()[0][:60])
def test_readme_block(block, demo_folder):
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the venv's `trelm` runs this checkout's code
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=demo_folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{block}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert done.stdout.strip() and "error:" not in done.stderr


def _report_rows(text: str) -> list[tuple[str, str]]:
    """(task, metric) of each row of a comparison table."""
    cells = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| kg-probe")]
    return [(task.strip(), metric.strip()) for task, metric, *_ in cells]


def test_the_example_report_has_the_rows_of_a_runs_report(rehearsal_run):
    (example,) = [body for lang, _, body in _fences() if lang == "text" and "### evaluation of" in body]
    run_report = (rehearsal_run.run_dir / "eval" / "report.md").read_text()
    assert _report_rows(example) == _report_rows(run_report) and len(_report_rows(example)) == 7


def _listed_artifacts(variants: list[str]) -> set[str]:
    """The keys the bullets of "What a run shows" name before their colon, patterns expanded."""
    section = README.split("### What a run shows", 1)[1].split("\n## ", 1)[0]
    heads = [line.split(":", 1)[0] for line in section.splitlines() if line.startswith("- ")]
    keys = {key for head in heads for key in re.findall(r"`([^`]+)`", head)}
    for pattern, values in (("{stage}", STAGES), ("{variant}", variants)):
        keys = {key.replace(pattern, value) for key in keys for value in values}
    return keys


def test_what_a_run_shows_lists_the_artifacts_a_run_publishes(rehearsal_run):
    with sqlite3.connect(rehearsal_run.prefect_home / "prefect.db") as db:
        published = {key for (key,) in db.execute("SELECT DISTINCT key FROM artifact WHERE key IS NOT NULL")}
    variants = sorted(artifact_key(p.name) for p in (rehearsal_run.run_dir / "checkpoints").iterdir())
    assert variants == ["mlm-only", "trelm"]
    assert _listed_artifacts(variants) == published
