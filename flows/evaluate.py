"""The `evaluate` subflow: each configured checkpoint evaluated as a task, then the run's report.

Thin: the work is trelm.evaluate.runner (the same calls as `trelm evaluate`). Results are not cached:
a checkpoint folder keeps its name while a resumed pre-training rewrites it.
The comparison table becomes a Prefect table artifact (`eval-report`) and a markdown artifact.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from flows import stages
from flows.config import PipelineConfig
from storage.shards import stable_hash


@task(name="evaluate-checkpoint", cache_policy=NONE)
def evaluate_checkpoint_task(checkpoint: str, config: PipelineConfig, run_dir: Path) -> dict:
    """One checkpoint on every configured task (on the GPU worker when the pool has one)."""
    from trelm.evaluate.runner import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, config.evaluate, run_dir)


@task(name="write-eval-report", cache_policy=NONE)
def write_report_task(config: PipelineConfig, run_dir: Path, results: list[dict]) -> str:
    from trelm.evaluate.report import write_reports

    return str(write_reports(run_dir, results, stable_hash(config.evaluate.model_dump(mode="json"))))


@flow(name="evaluate")
def evaluate_flow(config: PipelineConfig) -> dict:
    """Evaluate the run's checkpoints on the configured tasks; write report.{json,md} and `eval_results`."""
    run_dir = stages.run_dir_for(config)
    with stages.locked(config, run_dir):
        # one after another: each evaluation already uses every core (or the GPU)
        results = [evaluate_checkpoint_task(name, config, run_dir) for name in config.evaluate.checkpoints]
        report = write_report_task(config, run_dir, results)
        from trelm.evaluate.report import comparison_rows, evaluation_stats

        create_table_artifact(
            key="eval-report", table=comparison_rows(results), description=f"Evaluation of {run_dir.name}"
        )
        create_markdown_artifact(key="eval-report-md", markdown=Path(report).read_text())
        get_run_logger().info("evaluation report: %s\n%s", report, Path(report).read_text())
        return {"report": report, "checkpoints": results, "stats": evaluation_stats(results)}
