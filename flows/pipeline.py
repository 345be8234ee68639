"""Prefect flows: the parent flow `trelm` and its stage subflows (download, ingest, link, select here;
pretrain and evaluate in flows/pretrain.py and flows/evaluate.py).

Thin wrappers: each stage is a task around the shared stage call in `flows.stages`. Caching works
across runs: a task's cache key is its config section plus what it reads (dump date, its inputs'
manifest fingerprints, code version) and its result is persisted under the data root; a task whose
output is not complete on disk refreshes its cache entry, so deleting an output re-runs the stage
instead of returning a result that points at nothing. Inside a stage, parts resume one by one
(storage.shards), so a killed worker's re-run redoes only unfinished parts. On any task runner but
`threads`, ingest, link and select map their parts on it (`OrchestrationConfig.maps_parts`), each
task declaring what its stage needs on a cluster (`ops.task_resources`); on `threads` ingest and select
keep the process pool and the single task the CLI runs.

The parent flow resolves the dump date, takes the run folder's lock and ends at once ("nothing
new") when the folder's completion record says this dump was processed with the same config
(`flows.ops`); otherwise it runs the stages of `_stage_flows` up to `orchestration.run_until`,
publishes a table artifact per stage and a run summary (`flows.report`), and writes the record last.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.states import Completed, State
from prefect.utilities.annotations import unmapped

from flows import ops, report, stages
from flows.config import STAGES, PipelineConfig, load_config
from flows.evaluate import evaluate_flow
from flows.pretrain import pretrain_flow
from preprocessing import ingest as ingest_stage
from preprocessing import link as link_stage
from preprocessing import select as select_stage
from preprocessing.download import DownloadReport
from preprocessing.ingest import ingest_provenance
from preprocessing.select import select_provenance
from storage import layout
from storage.code import code_version, module_code_version
from storage.schemas import INSTANCES, KG_ENTITIES, MENTIONS, PAGES
from storage.shards import PartInfo, Provenance, dataset_dir, is_complete, is_intact, read_manifest

_GLUE = (Path(__file__), Path(stages.__file__))  # the flow code around the stage calls
DATA_ROOT_ENV = "TRELM_DATA_ROOT"


def _key(stage: str, section: object, run_dir: Path | None, fingerprint: str) -> str:
    """A task's cache key: the stage's provenance (config, inputs, the code it runs, found from its
    imports) and the flow code calling it, so that an edit redoes exactly the stages that run it."""
    return stages.stage_key(stage, section, [str(run_dir), fingerprint, code_version(_GLUE)])


# ----------------------------------------------------------------------------- download


def _download_done(cfg: PipelineConfig) -> bool:
    return cfg.download.date in layout.downloaded_dates(cfg.data_root, cfg.download.wiki)


def _download_key(_context, parameters) -> str:
    return _key("download", parameters["cfg"].download, None, module_code_version("preprocessing.download"))


@task(
    name="resolve-date",
    cache_policy=NONE,
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=ops.retry_transient,
)
def resolve_date_task(cfg: PipelineConfig) -> PipelineConfig:
    return stages.resolved(cfg)


@task(
    name="download-files",
    cache_key_fn=_download_key,
    persist_result=True,
    retries=2,
    retry_delay_seconds=30,
    retry_condition_fn=ops.retry_transient,
)
def download_task(cfg: PipelineConfig) -> DownloadReport:
    return stages.download(cfg)


@flow(name="download")
def download_flow(config: PipelineConfig) -> dict:
    """Resolve `latest` to a finished dump run and fetch its files, verified."""
    cfg = resolve_date_task(config)
    # a cached result is only trusted while its output is on disk: otherwise run and re-cache
    task_call = download_task.with_options(
        result_storage=stages.results_dir(cfg), refresh_cache=not _download_done(cfg)
    )
    fetched = task_call(cfg)
    get_run_logger().info(
        "dump %s/%s: %d files in %s", cfg.download.wiki, fetched.date, len(fetched.files), fetched.directory
    )
    return stages.download_summary(fetched)


# ----------------------------------------------------------------------------- ingest


def _ingest_key(_context, parameters) -> str:
    cfg: PipelineConfig = parameters["cfg"]
    provenance = ingest_provenance(cfg.ingest, stages.ingest_inputs(cfg, parameters.get("dump")))
    return _key("ingest", cfg.ingest, parameters["run_dir"], provenance.fingerprint)


@task(name="ingest-pages", cache_key_fn=_ingest_key, persist_result=True)
def ingest_task(cfg: PipelineConfig, run_dir: Path, dump: Path | None = None) -> dict:
    return stages.run_ingest(cfg, run_dir, dump)


# not cached: a staged part is deleted once ingest has sealed `pages`, so a cached result could name a
# file that is gone; a part done for the same fingerprint is kept on disk before it is submitted
@task(name="extract-part", cache_policy=NONE, retries=1, retry_condition_fn=ops.retry_transient)
def extract_part_task(job: ingest_stage.ExtractJob) -> PartInfo:
    """One group of streams (or of pages read in one pass) -> its staged pages and redirects parts."""
    return ingest_stage.extract_part(job)


@flow(name="ingest")
def ingest_flow(config: PipelineConfig, dump: Path | None = None) -> dict:
    """Extract `pages` and `redirects` shards from the downloaded run (or a local file): on a cluster
    runner the flow plans the parts, maps their extraction on the runner, then resolves links itself."""
    run_dir = stages.run_dir_for(config, dump)
    with stages.locked(config, run_dir):
        if config.orchestration.maps_parts():
            with ops.task_resources(config.orchestration, "ingest"):
                return stages.run_ingest(config, run_dir, dump, submit=extract_part_task.submit)
        fresh = not is_intact(run_dir, PAGES)  # a damaged output is not a result to cache
        task = ingest_task.with_options(result_storage=stages.results_dir(config), refresh_cache=fresh)
        return task(config, run_dir, dump)


# ----------------------------------------------------------------------------- link


def _kg_key(_context, parameters) -> str:
    cfg: PipelineConfig = parameters["cfg"]
    return _key("kg", cfg.kg, parameters["run_dir"], module_code_version("preprocessing.kg"))


def _dictionary_key(_context, parameters) -> str:
    cfg: PipelineConfig = parameters["cfg"]
    run_dir = parameters["run_dir"]
    return _key("link-prepare", cfg.link, run_dir, link_stage.link_provenance(cfg.link, run_dir).fingerprint)


def _part_key(stage: str, part_of) -> object:
    """The cache key function of a per-part task: the part and the stage's provenance, which holds the
    stage's config, its inputs' fingerprints and the code."""

    def key(_context, parameters) -> str:
        provenance: Provenance = parameters["provenance"]
        part = part_of(parameters)
        return _key(f"{stage}-part-{part}", None, parameters["run_dir"], provenance.fingerprint)

    return key


_link_part_key = _part_key("link", lambda parameters: parameters["part"].name)


@task(name="load-kg", cache_key_fn=_kg_key, persist_result=True)
def kg_task(cfg: PipelineConfig, run_dir: Path) -> dict | None:
    return stages.run_kg(cfg, run_dir)


@task(name="build-dictionary", cache_key_fn=_dictionary_key, persist_result=True)
def dictionary_task(cfg: PipelineConfig, run_dir: Path) -> Provenance:
    """The anchor dictionary (skipped inside when complete for the same pages) and the mentions provenance."""
    return link_stage.prepare(cfg.link, run_dir, progress=False)


@task(
    name="link-part",
    cache_key_fn=_link_part_key,
    persist_result=True,
    retries=1,
    retry_condition_fn=ops.retry_transient,
)
def link_part_task(cfg: PipelineConfig, run_dir: Path, part: Path, provenance: Provenance) -> PartInfo:
    """One pages part -> its mentions part; a part already done for the same provenance is kept."""
    if cfg.orchestration.task_runner == "threads":
        return link_stage.link_part_in_pool(cfg.link, run_dir, part, provenance)
    return link_stage.link_part(cfg.link, run_dir, part, provenance)


def _kg_done(cfg: PipelineConfig, run_dir: Path) -> bool:
    return cfg.kg.path is None or is_intact(run_dir, KG_ENTITIES)


@flow(name="link")
def link_flow(config: PipelineConfig) -> dict:
    """Load the KG, build the anchor dictionary, link every pages part (mapped tasks), write `mentions`."""
    run_dir = stages.run_dir_for(config)
    with stages.locked(config, run_dir):
        stages.save_run_config(config, run_dir)
        results = stages.results_dir(config)
        fresh = not is_intact(run_dir, MENTIONS)
        kg_task.with_options(result_storage=results, refresh_cache=not _kg_done(config, run_dir))(
            config, run_dir
        )
        provenance = dictionary_task.with_options(result_storage=results, refresh_cache=fresh)(
            config, run_dir
        )
        parts = link_stage.pages_parts(run_dir)
        with ops.task_resources(config.orchestration, "link"):
            futures = link_part_task.with_options(result_storage=results, refresh_cache=fresh).map(
                unmapped(config), unmapped(run_dir), parts, unmapped(provenance)
            )
        done = report.results_with_progress(futures, "link")
        link_stage.shutdown_pool()
        if is_complete(run_dir, MENTIONS, provenance.fingerprint):  # every part came from before: keep it
            return read_manifest(run_dir, MENTIONS)
        return link_stage.finalize(config.link, run_dir, provenance, done)


# ----------------------------------------------------------------------------- select


def _select_key(_context, parameters) -> str:
    cfg: PipelineConfig = parameters["cfg"]
    fingerprint = select_provenance(cfg.select, parameters["run_dir"]).fingerprint
    return _key("select", cfg.select, parameters["run_dir"], fingerprint)


@task(name="select-instances", cache_key_fn=_select_key, persist_result=True)
def select_task(cfg: PipelineConfig, run_dir: Path) -> dict:
    """The encoder work of the stage: on a GPU worker when the deployment's pool provides one."""
    return stages.run_select(cfg, run_dir)


_select_part_key = _part_key("select", lambda parameters: parameters["index"])


@task(
    name="select-part",
    cache_key_fn=_select_part_key,
    persist_result=True,
    retries=1,
    retry_condition_fn=ops.retry_transient,
)
def select_part_task(cfg: PipelineConfig, run_dir: Path, index: int, provenance: Provenance) -> PartInfo:
    """One pages part -> its instances part, on a worker that builds the corpus and the encoder once."""
    return select_stage.select_part_here(cfg.select, run_dir, index, provenance)


@flow(name="select")
def select_flow(config: PipelineConfig) -> dict:
    """Sequences, SI scores, important entities with their KG triples, `instances` and embeddings."""
    run_dir = stages.run_dir_for(config)
    with stages.locked(config, run_dir):
        if config.orchestration.maps_parts():
            manifest = _select_mapped(config, run_dir)
        else:
            manifest = _select_here(config, run_dir)
    plot = manifest["select"]["long_tail_plot"]
    report.publish_picture("select-long-tail", Path(plot), "Entity frequencies and the long-tail cut-off")
    return manifest


def _select_here(config: PipelineConfig, run_dir: Path) -> dict:
    """The stage in one task (on a GPU worker when the deployment's pool provides one)."""
    fresh = not is_intact(run_dir, INSTANCES)
    future = select_task.with_options(result_storage=stages.results_dir(config), refresh_cache=fresh).submit(
        config, run_dir
    )
    # one instances part per pages part: their count on disk is the stage's progress
    written = report.count_files(dataset_dir(run_dir, INSTANCES), "part-*.parquet")
    return report.result_with_progress(future, "select", written, select_stage.n_parts(run_dir))


def _select_mapped(config: PipelineConfig, run_dir: Path) -> dict:
    """Prepare here, map the parts on the task runner (each declaring its GPUs), finalize here."""
    stages.save_run_config(config, run_dir)
    fresh = not is_intact(run_dir, INSTANCES)
    provenance = select_stage.prepare(config.select, run_dir)
    task = select_part_task.with_options(result_storage=stages.results_dir(config), refresh_cache=fresh)
    with ops.task_resources(config.orchestration, "select"):
        futures = task.map(
            unmapped(config), unmapped(run_dir), range(select_stage.n_parts(run_dir)), unmapped(provenance)
        )
    done = report.results_with_progress(futures, "select")
    if is_complete(run_dir, INSTANCES, provenance.fingerprint):  # every part came from before: keep it
        select_stage.write_relation_phrases(config.select, run_dir)  # unless `trelm verify` took it back
        return read_manifest(run_dir, INSTANCES)
    return select_stage.finalize(config.select, run_dir, provenance, done)


# ----------------------------------------------------------------------------- the whole pipeline


def _stage_flows(cfg: PipelineConfig) -> tuple:
    """The stages in order: (name, subflow taking the config and returning a manifest-like dict)."""
    return (
        ("download", download_flow),
        ("ingest", ingest_flow.with_options(task_runner=ops.make_task_runner(cfg.orchestration))),
        ("link", link_flow.with_options(task_runner=ops.make_task_runner(cfg.orchestration))),
        ("select", select_flow.with_options(task_runner=ops.make_task_runner(cfg.orchestration))),
        ("pretrain", pretrain_flow),
        ("evaluate", evaluate_flow),
    )


def flow_config(preset: str, overrides: list[str]) -> PipelineConfig:
    """The preset with overrides; the data root defaults to $TRELM_DATA_ROOT on the worker, if set."""
    from_env = [f"data_root={os.environ[DATA_ROOT_ENV]}"] if os.environ.get(DATA_ROOT_ENV) else []
    return load_config(preset, [*from_env, *overrides])


def _run_stages(cfg: PipelineConfig) -> tuple[dict[str, dict], dict[str, float]]:
    """Every stage up to `run_until`, each timed and published as a table artifact."""
    results: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    rows_in = None
    for name, stage_flow in _stage_flows(cfg):
        if not cfg.orchestration.runs(name):
            break
        started = time.monotonic()
        results[name] = stage_flow(cfg)
        seconds[name] = time.monotonic() - started
        report.publish_stage(name, results[name], seconds[name], results[name].get("rows_in", rows_in))
        report.announce(report.stage_line(name, results[name], seconds[name]))
        rows_in = results[name].get("rows")
    return results, seconds


def _nothing_new(run_dir: Path, record: dict) -> State:
    message = (
        f"nothing new: {record['wiki']} dump {record['date']} was already processed with this config "
        f"(completed {record['completed']}); results in {run_dir}"
    )
    get_run_logger().info(message)
    report.publish_summary(f"## Nothing new\n\n{message}\n")
    return Completed(name="NothingNew", message=message, data={"run_dir": str(run_dir), "nothing_new": True})


def _hand_over(cfg: PipelineConfig) -> None:
    """Start the next deployment on the whole config (its earlier stages are cached); do not wait."""
    from prefect.deployments import run_deployment

    rest = cfg.orchestration.model_copy(update={"run_until": STAGES[-1], "then_deployment": None})
    parameters = {"config": cfg.model_copy(update={"orchestration": rest}).model_dump(mode="json")}
    started = run_deployment(cfg.orchestration.then_deployment, parameters=parameters, timeout=0)
    get_run_logger().info("handed over to %s: flow run %s", cfg.orchestration.then_deployment, started.id)


@flow(name="trelm", log_prints=True)
def trelm(
    preset: str = "sample", overrides: list[str] | None = None, config: PipelineConfig | None = None
) -> dict:
    """The whole pipeline, stage by stage, on the newest finished dump (or the pinned date).

    `config` wins when given (the CLI passes its resolved config); otherwise the preset (`sample` or
    `enwiki`, or a YAML path) with `key=value` overrides, e.g. `-p preset=enwiki` on a deployment run.
    A dump already processed with the same config ends the run at once in the `NothingNew` state.
    """
    cfg = resolve_date_task(config or flow_config(preset, overrides or []))
    run_dir = stages.run_dir_for(cfg)
    with stages.locked(cfg, run_dir):
        record = None if cfg.orchestration.force else ops.completed_run(run_dir, cfg)
        if record is not None:
            return _nothing_new(run_dir, record)
        ops.clear_completion(run_dir)
        results, seconds = _run_stages(cfg)
        ops.write_completion(run_dir, cfg, results)
    report.publish_summary(report.run_summary(run_dir, cfg.data_root, seconds, results))
    if cfg.orchestration.then_deployment:
        _hand_over(cfg)
    return {
        "run_dir": str(run_dir),
        "date": cfg.download.date,
        "stages": {name: {"rows": r.get("rows"), "stats": r.get("stats", {})} for name, r in results.items()},
    }
