"""`trelm evaluate`: the --json shape for one checkpoint, "not run" entries, and the run's report
(report.{json,md}, the `eval_results` dataset) when it evaluates the run's own checkpoints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import save_mlm, write_kg_run, write_lama  # noqa: E402

from flows.cli import app  # noqa: E402

WORDS = ["Paris", "Rome", "New", "York", "France", "Italy", "Ada", "Smith"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_mlm(tmp_path_factory.mktemp("ckpt"), "bert", WORDS, {"Paris": 100.0, "Rome": -100.0})


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, ["evaluate", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_json_output_for_one_checkpoint(checkpoint, tmp_path):
    lama = write_lama(tmp_path / "LAMA" / "data")
    out = _invoke(
        "--checkpoint", str(checkpoint),
        "--task", f"lama-trex={lama}",
        "--task", f"open-entity={tmp_path / 'absent'}",
        "--json", "--data-root", str(tmp_path / "no-data"),
    )  # fmt: skip
    tasks = json.loads(out)["tasks"]
    assert list(tasks) == ["lama-trex", "open-entity"]
    trex = tasks["lama-trex"]
    assert trex["status"] == "ok" and trex["n"] == 5
    assert trex["metrics"]["p_at_1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert trex["per_relation"] == pytest.approx({"P19": 2 / 3, "P36": 1 / 2})
    assert tasks["open-entity"] == {"status": f"not run: data not found at {tmp_path / 'absent'}"}


def test_cloze_task_on_an_encoder_without_mlm_head_is_not_run(tmp_path):
    lama = write_lama(tmp_path / "data")
    out = _invoke(
        "--checkpoint", "minilm", "--task", f"lama-trex={lama}", "--json", "--data-root", str(tmp_path)
    )
    assert json.loads(out)["tasks"]["lama-trex"] == {"status": "not run: no MLM head"}


def test_run_checkpoints_report_and_eval_results(checkpoint, tmp_path):
    import shutil

    from storage import duck

    run_dir = write_kg_run(tmp_path / "data" / "runs" / "enwiki-20260301")
    shutil.copytree(checkpoint, run_dir / "checkpoints" / "trelm" / "hf")
    out = _invoke(
        "--data-root", str(tmp_path / "data"),
        "--set", "evaluate.checkpoints=[trelm, mlm_only]",
        "--task", "kg-probe", "--task", "rte=/nowhere",
    )  # fmt: skip
    assert "| kg-probe | p_at_1_seen | 50.0 | not run |" in out
    assert "- trelm / rte: not run: data not found at /nowhere" in out
    report = json.loads((run_dir / "eval" / "report.json").read_text())["checkpoints"]
    assert [r["checkpoint"] for r in report] == ["trelm", "mlm_only"]
    assert report[1]["tasks"]["kg-probe"]["status"].startswith("not run: no export at")
    assert (run_dir / "eval" / "trelm" / "report.md").exists()
    _, rows = duck.query(
        run_dir, "SELECT metric, value FROM eval_results WHERE task = 'kg-probe' ORDER BY metric"
    )
    values = dict(rows)
    assert values["p_at_1_seen"] == pytest.approx(0.5) and values["p_at_1_unseen"] == pytest.approx(1.0)
    assert values["n_seen"] == 2


def test_evaluate_flow_writes_the_report_and_a_table_artifact(checkpoint, tmp_path):
    import shutil

    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    from flows.config import load_config
    from flows.evaluate import evaluate_flow

    run_dir = write_kg_run(tmp_path / "runs" / "enwiki-20260301")
    shutil.copytree(checkpoint, run_dir / "checkpoints" / "trelm" / "hf")
    config = load_config("sample", ["evaluate.checkpoints=[trelm]", "run=enwiki-20260301"])
    config = config.model_copy(update={"data_root": tmp_path})
    with prefect_test_harness(server_startup_timeout=120):
        result = evaluate_flow(config)
        with get_client(sync_client=True) as client:
            artifacts = {a.key: a for a in client.read_artifacts()}
    assert Path(result["report"]) == run_dir / "eval" / "report.md"
    assert result["checkpoints"][0]["tasks"]["kg-probe"]["metrics"]["p_at_1_unseen"] == 1.0
    table = artifacts["eval-report"]
    assert table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert {"task": "kg-probe", "metric": "p_at_1_seen", "trelm": "50.0", "paper": ""} in rows
