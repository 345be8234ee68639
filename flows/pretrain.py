"""The `pretrain` subflow: one task per configured variant (TRELM, then any `pretrain.compare` ones).

A task is cached on its variant's effective config, the manifests of what it reads (`instances`,
`entity_embeddings`, `kg_relations`) and the trainer's code, with its result persisted under the
data root; when the variant's HF export is missing on disk the cache is refreshed and the trainer
resumes from the newest checkpoint (`latest`) instead of starting over, so a run killed mid-training
loses at most `train.save_every` steps.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows import stages
from flows.config import PipelineConfig
from storage.code import code_version, module_code_version
from storage.schemas import INSTANCES, KG_RELATIONS, TRAIN_LOG, entity_embeddings
from storage.shards import read_manifest
from trelm.config import PretrainConfig


def pretrain_inputs(run_dir: Path) -> list[str]:
    """Fingerprints of the datasets training reads (a re-selected corpus is a new training run)."""
    return [read_manifest(run_dir, d)["fingerprint"] for d in (INSTANCES, entity_embeddings(0), KG_RELATIONS)]


def _pretrain_key(_context, parameters) -> str:
    run: PretrainConfig = parameters["run"]
    inputs = [
        str(parameters["run_dir"]),
        pretrain_inputs(parameters["run_dir"]),
        module_code_version("trelm.launch"),  # the trainer and every module of ours it imports
        code_version([Path(__file__)]),
    ]
    return stages.stage_key(f"pretrain-{run.checkpoint_name}", run.effective(), inputs)


@task(name="pretrain-variant", cache_key_fn=_pretrain_key, persist_result=True)
def pretrain_task(run: PretrainConfig, run_dir: Path, progress: bool) -> dict:
    """DeepSpeed pre-training of one variant; on a GPU worker when the deployment's pool provides one."""
    from trelm.launch import pretrain

    return pretrain(run, run_dir, progress=progress)


def exported(run_dir: Path, run: PretrainConfig) -> bool:
    return (Path(run_dir) / "checkpoints" / run.checkpoint_name / "hf" / "config.json").exists()


@flow(name="pretrain")
def pretrain_flow(config: PipelineConfig) -> dict:
    """Pre-train each variant on `instances`; resumes a killed run from its latest checkpoint."""
    run_dir = stages.run_dir_for(config)
    results = {}
    for run in config.pretrain.runs():
        task_call = pretrain_task.with_options(
            result_storage=stages.results_dir(config), refresh_cache=not exported(run_dir, run)
        )
        results[run.checkpoint_name] = task_call(run, run_dir, config.progress)
        get_run_logger().info("pretrained %s: %s", run.checkpoint_name, results[run.checkpoint_name])
    create_table_artifact(
        key="pretrain-summary",
        table=[_summary_row(run_dir, name, result) for name, result in results.items()],
        description="Pre-training runs: steps, final losses, checkpoint and HF export.",
    )
    return {"checkpoints": results, "stats": {name: r["steps"] for name, r in results.items()}}


def _summary_row(run_dir: Path, name: str, result: dict) -> dict:
    """The run's last logged loss parts, read back from its `train_log` parts."""
    import duckdb

    parts = sorted((Path(run_dir) / "checkpoints" / name / TRAIN_LOG.folder).glob("part-*.parquet"))
    last = {}
    if parts:
        with duckdb.connect() as conn:
            last = dict(
                conn.sql(
                    "SELECT name, arg_max(value, step) FROM read_parquet($files) "
                    "WHERE name IN ('loss', 'mlm_loss', 'cka_loss') GROUP BY name",
                    params={"files": [str(p) for p in parts]},
                ).fetchall()
            )
    return {
        "checkpoint": name,
        "steps": result["steps"],
        **{k: round(v, 4) for k, v in last.items()},
        "hf_export": result["hf"],
    }
