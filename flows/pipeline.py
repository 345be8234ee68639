"""Prefect flows: the parent flow `trelm` and its stage subflows (`download`, `ingest`).

Thin wrappers: each stage is a task around the shared stage call in `flows.stages`. Caching works
across runs: a task's cache key is its config section plus what it reads (dump date, input
identity, code version) and its result is persisted under the data root; a task whose output is
not complete on disk refreshes its cache entry, so deleting an output re-runs the stage instead
of returning a result that points at nothing. Inside a stage, parts resume one by one (storage.shards).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped

from flows import stages
from flows.config import PipelineConfig, load_config, save_config
from preprocessing import link as link_stage
from preprocessing.download import MANIFEST_NAME, DownloadReport
from preprocessing.select import select_provenance
from storage import layout
from storage.schemas import INSTANCES, KG_ENTITIES, PAGES
from storage.shards import PartInfo, Provenance, code_version, is_complete

_FLOWS_SOURCES = (Path(__file__),)


def _results(cfg: PipelineConfig) -> Path:
    """Persisted task results live with the data they describe (Prefect takes a Path as local storage)."""
    return (cfg.data_root / ".prefect-results").resolve()


def _download_done(cfg: PipelineConfig) -> bool:
    return (layout.dumps_dir(cfg.data_root, cfg.download.wiki, cfg.download.date) / MANIFEST_NAME).exists()


def _download_key(_context, parameters) -> str:
    return stages.stage_key("download", parameters["cfg"].download, code_version(_FLOWS_SOURCES))


def _ingest_key(_context, parameters) -> str:
    cfg: PipelineConfig = parameters["cfg"]
    inputs = stages.ingest_inputs(cfg, parameters.get("dump")).hashes()
    return stages.stage_key(
        "ingest", cfg.ingest, [str(parameters["run_dir"]), inputs, code_version(_FLOWS_SOURCES)]
    )


@task(name="resolve-date", cache_policy=NONE, retries=3, retry_delay_seconds=10)
def resolve_date_task(cfg: PipelineConfig) -> PipelineConfig:
    return stages.resolved(cfg)


@task(
    name="download-files", cache_key_fn=_download_key, persist_result=True, retries=2, retry_delay_seconds=30
)
def download_task(cfg: PipelineConfig) -> DownloadReport:
    return stages.download(cfg)


@task(name="ingest-pages", cache_key_fn=_ingest_key, persist_result=True)
def ingest_task(cfg: PipelineConfig, run_dir: Path, dump: Path | None = None) -> dict:
    return stages.run_ingest(cfg, run_dir, dump)


@flow(name="download")
def download_flow(config: PipelineConfig) -> PipelineConfig:
    """Resolve `latest` to a finished dump run and fetch its files, verified."""
    cfg = resolve_date_task(config)
    # a cached result is only trusted while its output is on disk: otherwise run and re-cache
    report = download_task.with_options(result_storage=_results(cfg), refresh_cache=not _download_done(cfg))(
        cfg
    )
    get_run_logger().info(
        "dump %s/%s: %d files in %s", cfg.download.wiki, report.date, len(report.files), report.directory
    )
    return cfg


@flow(name="ingest")
def ingest_flow(config: PipelineConfig, dump: Path | None = None) -> dict:
    """Extract `pages` and `redirects` shards from the downloaded run (or a local file)."""
    run_dir = stages.run_dir_for(config, dump)
    fresh = not is_complete(run_dir, PAGES)
    manifest = ingest_task.with_options(result_storage=_results(config), refresh_cache=fresh)(
        config, run_dir, dump
    )
    create_markdown_artifact(
        key="ingest-stats",
        markdown=_stats_markdown("ingest", run_dir, manifest),
        description="Rows and per-reason counts of the ingest stage.",
    )
    return manifest


def _kg_key(_context, parameters) -> str:
    cfg: PipelineConfig = parameters["cfg"]
    return stages.stage_key("kg", cfg.kg, [str(parameters["run_dir"]), code_version(_FLOWS_SOURCES)])


@task(name="load-kg", cache_key_fn=_kg_key, persist_result=True)
def kg_task(cfg: PipelineConfig, run_dir: Path) -> dict | None:
    return stages.run_kg(cfg, run_dir)


@task(name="build-dictionary", cache_policy=NONE)
def dictionary_task(cfg: PipelineConfig, run_dir: Path) -> Provenance:
    """The anchor dictionary (skipped inside when complete for the same pages) and the mentions provenance."""
    return link_stage.prepare(cfg.link, run_dir, progress=False)


@task(name="link-part", cache_policy=NONE, retries=1)
def link_part_task(cfg: PipelineConfig, run_dir: Path, part: Path, provenance: Provenance) -> PartInfo:
    """One pages part -> its mentions part; a part already done for the same provenance is kept."""
    if cfg.link.task_runner == "threads":
        return link_stage.link_part_in_pool(cfg.link, run_dir, part, provenance)
    return link_stage.link_part(cfg.link, run_dir, part, provenance)


def _task_runner(cfg: PipelineConfig):
    if cfg.link.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise ImportError("link.task_runner: dask needs `pip install 'trelm-pipeline[dask]'`") from exc
        return DaskTaskRunner(address=cfg.link.dask_address)
    if cfg.link.task_runner == "processes":
        return ProcessPoolTaskRunner(max_workers=cfg.link.workers)
    return ThreadPoolTaskRunner(max_workers=cfg.link.workers)


@flow(name="link")
def link_flow(config: PipelineConfig) -> dict:
    """Load the KG, build the anchor dictionary, link every pages part (mapped tasks), write `mentions`."""
    run_dir = stages.run_dir_for(config)
    save_config(config, run_dir / layout.RUN_CONFIG)
    kg_task.with_options(result_storage=_results(config), refresh_cache=not _kg_done(config, run_dir))(
        config, run_dir
    )
    provenance = dictionary_task(config, run_dir)
    futures = link_part_task.map(
        unmapped(config), unmapped(run_dir), link_stage.pages_parts(run_dir), unmapped(provenance)
    )
    parts = [f.result() for f in futures]
    link_stage.shutdown_pool()
    manifest = link_stage.finalize(config.link, run_dir, provenance, parts)
    create_markdown_artifact(
        key="link-stats",
        markdown=_stats_markdown("link", run_dir, manifest),
        description="Mentions by source and alignment counts of the link stage.",
    )
    return manifest


def _select_key(_context, parameters) -> str:
    cfg: PipelineConfig = parameters["cfg"]
    fingerprint = select_provenance(cfg.select, parameters["run_dir"]).fingerprint
    return stages.stage_key("select", cfg.select, [fingerprint, code_version(_FLOWS_SOURCES)])


@task(name="select-instances", cache_key_fn=_select_key, persist_result=True)
def select_task(cfg: PipelineConfig, run_dir: Path) -> dict:
    """The encoder work of the stage: on a GPU worker when the deployment's pool provides one."""
    return stages.run_select(cfg, run_dir)


@flow(name="select")
def select_flow(config: PipelineConfig) -> dict:
    """Sequences, SI scores, important entities with their KG triples, `instances` and embeddings."""
    run_dir = stages.run_dir_for(config)
    fresh = not is_complete(run_dir, INSTANCES)
    manifest = select_task.with_options(result_storage=_results(config), refresh_cache=fresh)(config, run_dir)
    create_markdown_artifact(
        key="select-stats",
        markdown=_stats_markdown("select", run_dir, manifest),
        description="Selected and dropped entities by reason, SI distribution, long-tail cut-off.",
    )
    return manifest


def _kg_done(cfg: PipelineConfig, run_dir: Path) -> bool:
    return cfg.kg.path is None or is_complete(run_dir, KG_ENTITIES)


@flow(name="trelm", log_prints=True)
def trelm(
    preset: str = "sample", overrides: list[str] | None = None, config: PipelineConfig | None = None
) -> dict:
    """The whole pipeline, stage by stage. Later stages (link, select, pretrain, evaluate) join here.

    `config` wins when given (the CLI passes its resolved config); otherwise the preset (`sample` or
    `enwiki`, or a YAML path) with `key=value` overrides, e.g. `-p preset=enwiki` on a deployment run.
    """
    config = config or load_config(preset, overrides or [])
    resolved = download_flow(config)
    pages = ingest_flow(resolved)
    linked = link_flow.with_options(task_runner=_task_runner(resolved))(resolved)
    selected = select_flow(resolved)
    return {
        "run_dir": str(stages.run_dir_for(resolved)),
        "pages": pages["rows"],
        "stats": pages["stats"],
        "mentions": linked["stats"],
        "instances": selected["stats"],
    }


def _stats_markdown(stage: str, run_dir: Path, manifest: dict) -> str:
    lines = [
        f"### {stage}: `{run_dir}`",
        "",
        f"{manifest['rows']} pages in {len(manifest['parts'])} parts",
        "",
        "| stat | count |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in manifest["stats"].items()]
    return "\n".join(lines)
