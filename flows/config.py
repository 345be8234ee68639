"""The pipeline's one config tree: presets, a YAML file on top, then `--set key=value` overrides.

It is also the `trelm` flow's parameter schema, so the Prefect UI renders it as a form. Each stage
owns its section's model (preprocessing and trelm may not import each other); this module composes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from preprocessing.config import DownloadConfig, IngestConfig, KGConfig, LinkConfig, SelectConfig
from storage.configio import deep_merge, write_yaml
from storage.errors import ConfigError
from storage.tokens import same_tokenizer
from trelm.config import PretrainConfig
from trelm.evaluate.config import EvaluateConfig

PRESETS_DIR = Path(__file__).with_name("presets")
# the bundled sample lives beside the packages in a source checkout; TRELM_SAMPLE_DIR points elsewhere
SAMPLE_DIR = Path(os.environ.get("TRELM_SAMPLE_DIR", Path(__file__).resolve().parents[1] / "sample"))


STAGES = ("download", "ingest", "link", "select", "pretrain", "evaluate")

Stage = Literal["download", "ingest", "link", "select", "pretrain", "evaluate"]

RunnerKind = Literal["threads", "processes", "dask-local", "dask-address", "ray-address"]


class TaskResources(BaseModel):
    """What each per-part task of one stage needs on a cluster. Dask reads it as worker resources
    (`dask worker --resources "GPU=1,MEMORY=64e9"`: a task waits for a worker that declares them), Ray as
    `num_gpus` and `memory`; the local runners (`dask-local` included) ignore it. None: nothing declared,
    any worker runs it."""

    model_config = ConfigDict(extra="forbid")

    gpus: float | None = Field(
        None, gt=0, description="GPUs each task needs (Dask: the worker resource `GPU`; Ray: `num_gpus`)."
    )
    memory_gb: float | None = Field(
        None,
        gt=0,
        description="Memory each task needs, in GB (Dask: the worker resource `MEMORY`, in bytes; Ray: "
        "`memory`).",
    )


class StageResources(BaseModel):
    """Per stage: what each of its mapped per-part tasks declares to a Dask or Ray cluster."""

    model_config = ConfigDict(extra="forbid")

    ingest: TaskResources = Field(
        default_factory=TaskResources, description="Each extract part (one group of streams)."
    )
    link: TaskResources = Field(
        default_factory=TaskResources,
        description="Each link part: `memory_gb` for the anchor dictionary each worker loads.",
    )
    select: TaskResources = Field(
        default_factory=TaskResources,
        description="Each select part: `gpus` for the SI encoder, so that N GPUs score N parts at once.",
    )


class OrchestrationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_until: Stage = Field(
        "evaluate", description="The last stage the `trelm` flow runs; later stages are left out."
    )
    task_runner: RunnerKind = Field(
        "threads",
        description="Where the per-part tasks of ingest, link and select run: `threads` (each stage's "
        "own worker processes, as the CLI runs them), `processes`, `dask-local` (a local Dask cluster), "
        "`dask-address` or `ray-address` (an existing cluster at `address`).",
    )
    address: str | None = Field(
        None,
        description="Dask scheduler (tcp://host:8786) or Ray (ray://host:10001) address, for the "
        "`*-address` task runners.",
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="Threads, processes or local Dask workers; default: the CPU count. On a cluster, "
        "ingest keeps twice this many parts in flight (a part read in one pass holds its pages).",
    )
    resources: StageResources = Field(
        default_factory=StageResources,
        description="What each per-part task declares on Dask or Ray (select's GPUs, link's memory); "
        "default: nothing, so a cluster whose workers declare no resources runs every task.",
    )
    lock_timeout_s: float = Field(
        60.0,
        ge=-1,
        description="How long a run waits for another run holding the same run folder: 0 fails at once, "
        "-1 waits for ever.",
    )
    then_deployment: str | None = Field(
        None,
        description="A deployment (`trelm/gpu-stages-k8s`) started with this config, every stage included, "
        "once the run has finished the stages up to `run_until`: how a CPU job hands the GPU stages on.",
    )
    force: bool = Field(
        False,
        description="Run the stages even when this dump was already processed with the same config "
        "(each stage still takes its cached result).",
    )

    def maps_parts(self) -> bool:
        """Whether ingest and select map their parts on the task runner: every runner but `threads`, where
        each stage keeps its own local process pool, as the CLI runs it (link maps its parts always)."""
        return self.task_runner != "threads"

    def runs(self, stage: str) -> bool:
        """Whether `stage` is at or before `run_until`."""
        return STAGES.index(stage) <= STAGES.index(self.run_until)


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: str = Field("sample", description="The preset this config started from (`sample` or `enwiki`).")
    data_root: Path = Field(
        Path("data"), description="Root of dumps/ and runs/ (CLI --data-root, env TRELM_DATA_ROOT)."
    )
    run: str | None = Field(
        None, description="Run folder name under runs/; default `{wiki}-{date}` of the dump."
    )
    progress: bool = Field(True, description="Show progress bars on a terminal.")
    download: DownloadConfig = Field(default_factory=DownloadConfig, description="`download` stage.")
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="`ingest` stage.")
    kg: KGConfig = Field(
        default_factory=KGConfig, description="The Wikidata5M knowledge graph (loaded by `link`)."
    )
    link: LinkConfig = Field(default_factory=LinkConfig, description="`link` stage: entity linking.")
    select: SelectConfig = Field(
        default_factory=SelectConfig, description="`select` stage: important entities and training instances."
    )
    pretrain: PretrainConfig = Field(
        default_factory=PretrainConfig, description="`pretrain` stage: TRELM with DeepSpeed (KMB, CKA, DKR)."
    )
    evaluate: EvaluateConfig = Field(
        default_factory=EvaluateConfig,
        description="`evaluate` stage: LAMA, KG probe, Open Entity, TACRED, GLUE over the run's checkpoints.",
    )
    orchestration: OrchestrationConfig = Field(
        default_factory=OrchestrationConfig,
        description="How the `trelm` flow runs: last stage, task runner, run-folder lock, re-runs.",
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_settings(cls, data: object) -> object:
        link = data.get("link") if isinstance(data, dict) else None
        moved = sorted({"task_runner", "dask_address"} & set(link or {}))
        if moved:
            raise ValueError(
                f"link.{moved[0]} moved to the `orchestration` section: set orchestration.task_runner "
                "(threads | processes | dask-local | dask-address | ray-address) and orchestration.address"
            )
        return data

    @model_validator(mode="after")
    def _one_tokenizer(self) -> PipelineConfig:
        """`instances` hold token ids: the SI encoder that writes them and the backbone that trains on
        them must share a tokenizer (a mismatch would train on other words' ids without an error)."""
        encoder, backbone = self.select.si.encoder, self.pretrain.model.backbone
        same_tokenizer(("select.si.encoder", encoder), ("pretrain.model.backbone", backbone))
        return self


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(os.path.expandvars(path.read_text())) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"cannot read config {path}: {exc}", fix="pass a readable YAML file to --config"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"config {path} is not a YAML mapping", fix="write it as sections (download:, ingest:, ...)"
        )
    return data


def _preset(name: str) -> dict:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(
            f"unknown preset {name!r}", fix=f"use one of {preset_names()} or a path to a .yaml file"
        )
    return {"preset": name, **_read_yaml(path)}


def _apply_override(data: dict, override: str) -> None:
    """`ingest.workers=4`: the value is parsed as YAML, so numbers, booleans and lists keep their type."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(
            f"bad override {override!r}", fix="write it as section.key=value, e.g. ingest.workers=4"
        )
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(
                f"bad override {override!r}: {part!r} is not a section", fix="set a key inside a section"
            )
    value = yaml.safe_load(raw)
    # scalars stay strings for pydantic to coerce by the field's type: `download.date=20260301` is a
    # date string, not the int YAML would make of it; lists, mappings and null keep YAML's reading
    node[leaf] = raw.strip() if isinstance(value, (bool, int, float)) else value


def load_config(
    name_or_file: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> PipelineConfig:
    """Preset (default `sample`) <- YAML file (which may name its own `preset:`) <- overrides."""
    os.environ.setdefault("TRELM_SAMPLE_DIR", str(SAMPLE_DIR))
    source = name_or_file or "sample"
    if source.endswith((".yaml", ".yml")):
        top = _read_yaml(Path(source))
        data = deep_merge(_preset(top.get("preset", "sample")), top)
    else:
        data = _preset(source)
    for override in overrides:
        _apply_override(data, override)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid config ({source}, overrides {list(overrides)}):\n{exc}",
            fix="correct the settings named above, in the YAML file or with --set section.key=value",
        ) from exc


def save_config(cfg: PipelineConfig, path: Path) -> None:
    """The resolved config, next to the outputs it produced."""
    write_yaml(path, cfg.model_dump(mode="json"))
