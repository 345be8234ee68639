"""`EvaluateConfig`: the `evaluate` section of the pipeline config (light: no torch at import)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

# the task names users type (`--task NAME=PATH`) and the report's row order
PROBE_TASKS = ("lama-google-re", "lama-uhn-google-re", "lama-trex", "lama-uhn-trex")
FINETUNE_TASKS = ("open-entity", "tacred")
GLUE_TASKS = ("mnli", "qqp", "qnli", "sst-2", "cola", "sts-b", "mrpc", "rte")
TASK_NAMES = (*PROBE_TASKS, "kg-probe", *FINETUNE_TASKS, *GLUE_TASKS)


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(3, ge=1, description="Training epochs over the task's train split.")
    lr: float = Field(2e-5, gt=0, description="AdamW peak learning rate (linear warm-up then decay).")
    batch_size: int = Field(16, ge=1, description="Examples per optimisation step.")
    max_len: int = Field(128, ge=8, description="Tokens per example after truncation.")
    warmup: float = Field(0.1, ge=0, lt=1, description="Fraction of the steps spent warming up the lr.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    max_train_examples: int | None = Field(
        None, ge=1, description="Use only the first N training examples (quick runs); null = all."
    )
    max_eval_examples: int | None = Field(
        None, ge=1, description="Score only the first N dev/test examples (quick runs); null = all."
    )


class ProbeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(32, ge=1, description="Cloze sentences per forward pass.")
    max_len: int = Field(128, ge=8, description="Tokens per cloze sentence after truncation.")
    common_vocab: Path | None = Field(
        None,
        description="LAMA's common_vocab_cased.txt (or any one-token-per-line file): only facts whose object"
        " is in it are kept and predictions are restricted to it; null = the model's whole vocabulary.",
    )
    uhn_name_model: str | None = Field(
        "self",
        description="LAMA-UHN person-name filter: which masked LM guesses nationality/language from a name."
        " For the person relations, each word of the subject's name is put in '[X] is a common name in the"
        " following country|language : [MASK] .' and the fact is dropped when the object is in that model's"
        " top 3. `self` = the evaluated model (each checkpoint gets its own filtered set); a folder or id,"
        " e.g. bert-base-cased, reproduces the published filter (one set for all); null = no name filter.",
    )
    kg_templates: Path | None = Field(
        None,
        description="Extra KG-probe templates (JSONL lines {relation: PID, template: '[X] ... [Y] .'}); they"
        " override the shipped ones (LAMA's for the PIDs it has, ours for the sample KG's others).",
    )
    kg_max_facts: int = Field(
        2000, ge=1, description="KG probe: at most this many facts per split (seen/unseen), first by head."
    )


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: dict[str, Path | None] = Field(
        default_factory=lambda: {"kg-probe": None},
        description="Task name -> data path (LAMA's data/ folder, the Open Entity or TACRED json folder, a"
        " GLUE task folder). `kg-probe` needs no path (it reads the run's KG). A missing path is reported as"
        f" 'not run'. Names: {', '.join(TASK_NAMES)}.",
    )
    checkpoints: list[str] = Field(
        default_factory=lambda: ["minilm", "mlm_only", "trelm"],
        description="What to compare: `minilm` (the packaged encoder), a name under the run's checkpoints/"
        " (its hf/ export), a folder, or a Hugging Face id. A name without an export is reported as not run.",
    )
    seeds: list[int] = Field(
        default_factory=lambda: [1, 2, 3],
        description="Fine-tuning seeds for the tasks the paper reports as mean ± std (Open Entity, TACRED);"
        " GLUE uses the first.",
    )
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="Fine-tuning settings.")
    probe: ProbeConfig = Field(default_factory=ProbeConfig, description="Cloze-probe settings.")
    device: str = Field(
        "auto", description="`auto` (cuda when available, else cpu), `cpu`, `cuda`, `cuda:1`..."
    )

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: dict[str, Path | None]) -> dict[str, Path | None]:
        unknown = sorted(set(tasks) - set(TASK_NAMES))
        if unknown:
            raise ValueError(f"unknown evaluation task(s) {unknown}: use {', '.join(TASK_NAMES)}")
        return tasks
