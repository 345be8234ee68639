"""The `pretrain` subflow: one task per configured variant (TRELM, then any `pretrain.compare` ones).

A task (named `pretrain-{variant}`) is cached on its variant's effective config, the manifests of what
it reads (`instances`, `entity_embeddings`, `kg_relations`) and the trainer's code, with its result
persisted under the data root; when the variant's HF export is missing on disk the cache is refreshed
and the trainer resumes from the newest checkpoint (`latest`) instead of starting over, so a run killed
mid-training loses at most `train.save_every` steps. The log says which: "training from step 0",
"resumed from step N", "already trained to step N" (with "(cached)" when nothing ran).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows import report, stages
from flows.config import PipelineConfig
from storage import layout
from storage.code import code_version
from trelm.config import PretrainConfig
from trelm.provenance import pretrain_provenance
from trelm.trainlog import last_losses, plot_losses, progress_line, read_progress, start_line


def _pretrain_key(_context, parameters) -> str:
    run: PretrainConfig = parameters["run"]
    provenance = pretrain_provenance(run, parameters["run_dir"])
    inputs = [str(parameters["run_dir"]), provenance.fingerprint, code_version([Path(__file__)])]
    return stages.stage_key(f"pretrain-{run.checkpoint_name}", run.effective(), inputs)


@task(
    name="pretrain-variant",
    task_run_name="pretrain-{run.checkpoint_name}",
    cache_key_fn=_pretrain_key,
    persist_result=True,
)
def pretrain_task(run: PretrainConfig, run_dir: Path, progress: bool) -> dict:
    """DeepSpeed pre-training of one variant; on a GPU worker when the deployment's pool provides one."""
    from trelm.launch import pretrain

    return pretrain(run, run_dir, progress=progress)


def exported(run_dir: Path, run: PretrainConfig) -> bool:
    return (layout.hf_export(run_dir, run.checkpoint_name) / "config.json").exists()


def _train_variant(config: PipelineConfig, run_dir: Path, run: PretrainConfig) -> dict:
    """One variant's task, with a progress artifact (`pretrain-{variant}-progress`: step, loss parts,
    tokens/s from the trainer's progress file) while it trains, and its start and end in the log."""
    name, max_steps = run.checkpoint_name, run.train.max_steps
    progress_file = layout.train_progress(run_dir, name)
    task_call = pretrain_task.with_options(
        result_storage=stages.results_dir(config), refresh_cache=not exported(run_dir, run)
    )
    future = task_call.submit(run, run_dir, config.progress)
    result = report.result_with_progress(
        future,
        f"pretrain-{name}",
        lambda: read_progress(progress_file).get("step", 0),
        max_steps,
        describe=lambda: f"`{name}`: {progress_line(read_progress(progress_file))}",
    )
    cached = future.state.name == "Cached"  # the export is on disk for this very config: nothing ran
    start = result["steps"] if cached else result["start_step"]
    logger = get_run_logger()
    logger.info(start_line(name, start, max_steps) + (" (cached)" if cached else ""))
    logger.info("%s: %s; export %s", name, progress_line(read_progress(progress_file)), result["hf"])
    return result


@flow(name="pretrain")
def pretrain_flow(config: PipelineConfig) -> dict:
    """Pre-train each variant on `instances`; resumes a killed run from its latest checkpoint. Publishes
    a progress artifact per variant, the summary table and the loss curves."""
    run_dir = stages.run_dir_for(config)
    with stages.locked(config, run_dir):
        variants = config.pretrain.runs()
        results = {run.checkpoint_name: _train_variant(config, run_dir, run) for run in variants}
    rows = [_summary_row(run_dir, name, result) for name, result in results.items()]
    create_table_artifact(
        key="pretrain-summary",
        table=rows,
        description="Pre-training runs: steps, final losses, tokens/s, checkpoint and HF export.",
    )
    folders = {name: layout.checkpoint_dir(run_dir, name) for name in results}
    curves = plot_losses(folders, layout.loss_plot(run_dir))
    report.publish_picture("pretrain-losses", curves, "Pre-training losses by step")
    stats = {
        f"{r['checkpoint']}_{key}": r[key] for r in rows for key in ("steps", "tokens_per_s") if key in r
    }
    return {"checkpoints": results, "stats": stats}


def _summary_row(run_dir: Path, name: str, result: dict) -> dict:
    """The run's last logged loss parts and throughput."""
    last = last_losses(
        layout.checkpoint_dir(run_dir, name), names=("loss", "mlm_loss", "cka_loss", "tokens_per_s")
    )
    return {"checkpoint": name, "steps": result["steps"], **last, "hf_export": result["hf"]}
