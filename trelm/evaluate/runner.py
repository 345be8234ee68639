"""Evaluate checkpoints on the configured tasks and write the run's report.

Each (checkpoint, task) gives an entry `{status, metrics, per_relation | per_label, n, ...}`. Status is
`ok` or `not run: REASON`: the task's data is absent ("data not found at PATH"), the checkpoint has no
MLM head for a cloze task ("no MLM head"), or pre-training has not exported it. Nothing is scored that
could not be run; a data folder that lacks a file the task reads, or a checkpoint that cannot be
loaded (a hub id offline), is `not run` too, with the reason, so one absent input stops nothing else.
"""

from __future__ import annotations

import logging
from pathlib import Path

from storage.configio import device_name
from storage.errors import InputError
from trelm.evaluate.config import PROBE_TASKS, TASK_NAMES, EvaluateConfig

log = logging.getLogger(__name__)
CLOZE_TASKS = (*PROBE_TASKS, "kg-probe")


def not_run(reason: str) -> dict:
    return {"status": f"not run: {reason}"}


def missing_data(name: str, path: Path | None, run_dir: Path | None) -> str | None:
    """The 'not run' reason when the task's data is absent, else None."""
    if name == "kg-probe":
        return None if run_dir is not None else "no run folder with a KG (pass --run / --data-root)"
    if path is None:
        return f"no data path (set evaluate.tasks.{name} or pass --task {name}=PATH)"
    if not Path(path).exists():
        return f"data not found at {path}"
    return None


class _MaskedLM:
    """Loads the checkpoint as a masked LM once, on first use; remembers a missing head."""

    def __init__(self, path: str, device: str):
        self.path, self.device, self._loaded, self.error = path, device, None, None

    def get(self):
        from trelm.evaluate.models import NoMLMHead, load_masked_lm

        if self._loaded is None and self.error is None:
            try:
                self._loaded = load_masked_lm(self.path, self.device)
            except NoMLMHead as exc:
                self.error = exc
        return self._loaded


def _name_model(cfg: EvaluateConfig, evaluated: tuple, device: str):
    """The (model, tokenizer) of the UHN person-name filter, or None when it is off."""
    from trelm.evaluate.models import load_masked_lm, resolve_checkpoint

    name = cfg.probe.uhn_name_model
    if name is None:
        return None
    return evaluated if name == "self" else load_masked_lm(resolve_checkpoint(name), device)


def _run_cloze(name: str, path, lm: tuple, cfg: EvaluateConfig, run_dir, device: str) -> dict:
    from trelm.evaluate.kg_probe import evaluate_kg_probe
    from trelm.evaluate.lama import evaluate_lama

    probe = cfg.probe
    sizes = {"batch_size": probe.batch_size, "max_len": probe.max_len}
    if name == "kg-probe":
        return evaluate_kg_probe(
            run_dir, *lm, templates_file=probe.kg_templates, max_facts=probe.kg_max_facts, **sizes
        )
    uhn = "uhn" in name
    return evaluate_lama(
        Path(path),
        "trex" if name.endswith("trex") else "google-re",
        *lm,
        uhn=uhn,
        name_model=_name_model(cfg, lm, device) if uhn else None,
        common_vocab=probe.common_vocab,
        **sizes,
    )


def _run_finetune(name: str, path, checkpoint: str, cfg: EvaluateConfig, device: str) -> dict:
    from trelm.evaluate.entity_typing import evaluate_open_entity
    from trelm.evaluate.glue import evaluate_glue
    from trelm.evaluate.relation_extraction import evaluate_tacred

    if name == "open-entity":
        return evaluate_open_entity(Path(path), checkpoint, cfg.finetune, cfg.seeds, device)
    if name == "tacred":
        return evaluate_tacred(Path(path), checkpoint, cfg.finetune, cfg.seeds, device)
    return evaluate_glue(name, Path(path), checkpoint, cfg.finetune, cfg.seeds[0], device)


def evaluate_checkpoint(checkpoint: str, cfg: EvaluateConfig, run_dir: Path | None = None) -> dict:
    """{"checkpoint", "path", "tasks": {name: entry}} over `cfg.tasks` (names: models.resolve_checkpoint)."""
    from trelm.evaluate.models import CheckpointMissing, resolve_checkpoint

    names = [name for name in TASK_NAMES if name in cfg.tasks]  # the report's order
    try:
        path = resolve_checkpoint(checkpoint, run_dir)
    except CheckpointMissing as exc:
        return {"checkpoint": checkpoint, "path": None, "tasks": {t: not_run(str(exc)) for t in names}}
    device = device_name(cfg.device)
    lm = _MaskedLM(path, device)
    results = {name: _run_task(name, cfg.tasks[name], path, lm, cfg, run_dir, device) for name in names}
    return {"checkpoint": checkpoint, "path": path, "tasks": results}


def _run_task(name: str, data, path: str, lm: _MaskedLM, cfg: EvaluateConfig, run_dir, device: str) -> dict:
    reason = missing_data(name, data, run_dir)
    if reason:
        return not_run(reason)
    log.info("evaluate %s on %s", path, name)
    try:
        if name not in CLOZE_TASKS:
            return {"status": "ok", **_run_finetune(name, data, path, cfg, device)}
        loaded = lm.get()
        if loaded is None:
            return not_run("no MLM head")
        return {"status": "ok", **_run_cloze(name, data, loaded, cfg, run_dir, device)}
    except OSError as exc:  # a data folder that lacks a file, or a checkpoint that cannot be loaded
        return not_run(str(exc).splitlines()[0])


def parse_tasks(specs: list[str]) -> dict[str, Path | None]:
    """`NAME=PATH` (or a bare `kg-probe`) command-line items -> the tasks mapping."""
    tasks: dict[str, Path | None] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if name not in TASK_NAMES or (not sep and name != "kg-probe"):
            raise InputError(
                f"bad --task {spec!r}", fix=f"write NAME=PATH with NAME one of {', '.join(TASK_NAMES)}"
            )
        tasks[name] = Path(path) if sep else None
    return tasks


def evaluate_run(
    cfg: EvaluateConfig, run_dir: Path | None, checkpoints: list[str] | None = None, write: bool = True
) -> tuple[list[dict], Path | None]:
    """Every checkpoint on every task; with `write` (and a run), the reports and `eval_results`.

    Returns (results, path of the comparison markdown or None).
    """
    from storage.shards import stable_hash
    from trelm.evaluate.report import write_reports

    results = [evaluate_checkpoint(name, cfg, run_dir) for name in checkpoints or cfg.checkpoints]
    if not (write and run_dir is not None):
        return results, None
    return results, write_reports(run_dir, results, stable_hash(cfg.model_dump(mode="json")))
