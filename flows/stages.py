"""The stage calls that the CLI and the Prefect flows share: config in, library call, run folder out.

The stage libraries other than ingest's are imported by the call that needs them: a stage command then
loads its own stage only (`trelm ingest` paid 0.4 s of serial start-up for link's, select's, the KG's and
the download's imports, before its workers started).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from flows import ops
from flows.config import PipelineConfig, load_config, save_config
from preprocessing import dumpfiles
from preprocessing.ingest import IngestInputs, ingest, inputs_for_file, inputs_for_run, pages_read
from storage import layout
from storage.shards import stable_hash

if TYPE_CHECKING:
    from preprocessing.download import DownloadReport

_FILE_STATUSES = ("fetched", "resumed", "skipped")


def resolved(cfg: PipelineConfig) -> PipelineConfig:
    """The config with `download.date: latest` replaced by the run date it means today."""
    if cfg.download.date != "latest":
        return cfg
    from preprocessing.download import resolve_date

    date = resolve_date(cfg.download)
    return cfg.model_copy(update={"download": cfg.download.model_copy(update={"date": date})})


def run_dir_for(cfg: PipelineConfig, dump: Path | None = None) -> Path:
    """The one rule for a config's run folder: `run` if named, else the local dump's run, else the dump
    date's; an unresolved `date: latest` (a stage flow started on its own) means the newest run."""
    if cfg.run is None and dump is None and cfg.download.date == "latest":
        return layout.resolve_run(cfg.data_root, None)
    name = cfg.run or (dumpfiles.run_name_for(dump) if dump else f"{cfg.download.wiki}-{cfg.download.date}")
    return layout.run_dir(cfg.data_root, name)


def locked(cfg: PipelineConfig, run_dir: Path):
    """The run folder's lock, for whatever writes it (every stage command and flow, `trelm verify`):
    one writer at a time; a second waits `orchestration.lock_timeout_s`, then fails naming the holder."""
    return ops.run_lock(run_dir, cfg.orchestration.lock_timeout_s, ops.lock_holder(_flow_run_id()))


def _flow_run_id() -> str | None:
    """The flow run this process is in, if any. A process that has not imported Prefect is in none, and
    the CLI's stage commands need no Prefect: importing it to ask costs `trelm ingest` 1.5 s of CPU."""
    if "prefect" not in sys.modules:
        return None
    from prefect.runtime import flow_run

    return flow_run.get_id()


def save_run_config(cfg: PipelineConfig, run_dir: Path) -> None:
    """The resolved config beside the outputs. A stage command given no date (`date: latest`, the
    newest run) keeps the download section the run folder has, so that the run stays resumable."""
    path = run_dir / layout.RUN_CONFIG
    if cfg.download.date == "latest" and path.exists():
        cfg = cfg.model_copy(update={"download": load_config(str(path)).download})
    save_config(cfg, path)


def download(cfg: PipelineConfig) -> DownloadReport:
    """Fetch the (resolved) dump run into `{data_root}/dumps/{wiki}/{date}`."""
    from preprocessing.download import download_run

    return download_run(cfg.download, layout.dumps_root(cfg.data_root), progress=cfg.progress)


def download_summary(report: DownloadReport) -> dict:
    """The download as a manifest-like dict (rows: files), like every other stage returns."""
    stats = {f"files_{status}": sum(f.status == status for f in report.files) for status in _FILE_STATUSES}
    stats["bytes"] = sum(f.bytes for f in report.files)
    stats["bytes_transferred"] = report.bytes_transferred
    directory = str(report.directory)
    return {"rows": len(report.files), "date": report.date, "directory": directory, "stats": stats}


def ingest_inputs(cfg: PipelineConfig, dump: Path | None) -> IngestInputs:
    if dump is not None:
        return inputs_for_file(Path(dump))
    return inputs_for_run(layout.dumps_dir(cfg.data_root, cfg.download.wiki, cfg.download.date))


def run_ingest(cfg: PipelineConfig, run_dir: Path, dump: Path | None = None, submit=None) -> dict:
    """Ingest into `run_dir`, saving the resolved config beside the outputs first (once the input is
    known to exist: a missing one leaves no run folder behind). `submit`: a task runner's submission of
    one extract job (the flow's, on a cluster); None: ingest's own process pool."""
    inputs = ingest_inputs(cfg, dump)
    save_run_config(cfg, run_dir)
    in_flight = 2 * (cfg.orchestration.workers or os.cpu_count() or 1)
    manifest = ingest(cfg.ingest, inputs, run_dir, cfg.progress, submit, in_flight)
    return {**manifest, "rows_in": pages_read(manifest)}


def results_dir(cfg: PipelineConfig) -> Path:
    """Persisted task results live with the data they describe (Prefect takes a Path as local storage)."""
    return (cfg.data_root / ".prefect-results").resolve()


def stage_key(stage: str, section: object, inputs: object) -> str:
    """Cache key of a stage call: its config section and what it reads."""
    dump = section.model_dump(mode="json") if hasattr(section, "model_dump") else section
    return f"{stage}-{stable_hash([dump, inputs])}"


def run_kg(cfg: PipelineConfig, run_dir: Path) -> dict | None:
    """Load the KG named by `kg.path` into the run (None when no KG is configured)."""
    if cfg.kg.path is None:
        return None
    from preprocessing.kg import load_kg

    return load_kg(cfg.kg, run_dir, progress=cfg.progress)


def run_link(cfg: PipelineConfig, run_dir: Path) -> dict:
    """KG (if configured), anchor dictionary, then every pages part -> mentions."""
    save_run_config(cfg, run_dir)
    run_kg(cfg, run_dir)
    from preprocessing.link import link

    return link(cfg.link, run_dir, progress=cfg.progress)


def run_select(cfg: PipelineConfig, run_dir: Path) -> dict:
    """Important entities by SI, their KG knowledge, and the `instances` shards."""
    save_run_config(cfg, run_dir)
    from preprocessing.select import select

    return select(cfg.select, run_dir, progress=cfg.progress)
