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
from storage import layout
from storage.code import code_version
from trelm.config import PretrainConfig
from trelm.provenance import pretrain_provenance


def _pretrain_key(_context, parameters) -> str:
    run: PretrainConfig = parameters["run"]
    provenance = pretrain_provenance(run, parameters["run_dir"])
    inputs = [str(parameters["run_dir"]), provenance.fingerprint, code_version([Path(__file__)])]
    return stages.stage_key(f"pretrain-{run.checkpoint_name}", run.effective(), inputs)


@task(name="pretrain-variant", cache_key_fn=_pretrain_key, persist_result=True)
def pretrain_task(run: PretrainConfig, run_dir: Path, progress: bool) -> dict:
    """DeepSpeed pre-training of one variant; on a GPU worker when the deployment's pool provides one."""
    from trelm.launch import pretrain

    return pretrain(run, run_dir, progress=progress)


def exported(run_dir: Path, run: PretrainConfig) -> bool:
    return (layout.hf_export(run_dir, run.checkpoint_name) / "config.json").exists()


@flow(name="pretrain")
def pretrain_flow(config: PipelineConfig) -> dict:
    """Pre-train each variant on `instances`; resumes a killed run from its latest checkpoint."""
    run_dir = stages.run_dir_for(config)
    with stages.locked(config, run_dir):
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
    """The run's last logged loss parts."""
    from trelm.trainlog import last_losses

    last = last_losses(layout.checkpoint_dir(run_dir, name))
    return {"checkpoint": name, "steps": result["steps"], **last, "hf_export": result["hf"]}
