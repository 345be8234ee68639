"""GLUE dev sets from the standard folder layout (`glue_data/{MNLI,QQP,...}/train.tsv, dev*.tsv`).

The paper's eight tasks, fine-tuned on train.tsv and scored on the dev file(s); the sentence (pair) is
represented by its first token. Metrics: accuracy (MNLI m/mm, QNLI, RTE, SST-2), F1 and accuracy
(MRPC, QQP), Matthews correlation (CoLA), Pearson/Spearman (STS-B, a regression head). TSVs are read
without quote handling (GLUE's files contain bare quotes); a line with too few columns is skipped and
counted. A task's PATH may be its own folder or the GLUE root that holds it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from trelm.evaluate import metrics


@dataclass(frozen=True)
class GlueTask:
    folder: str
    columns: tuple  # (text, text_pair or None, label): header names, or indices for header-less files
    labels: tuple | None  # None: regression
    dev_files: dict  # split name -> file
    header: bool = True


TASKS = {
    "mnli": GlueTask(
        "MNLI",
        ("sentence1", "sentence2", "gold_label"),
        ("contradiction", "entailment", "neutral"),
        {"m": "dev_matched.tsv", "mm": "dev_mismatched.tsv"},
    ),
    "qqp": GlueTask("QQP", ("question1", "question2", "is_duplicate"), ("0", "1"), {"dev": "dev.tsv"}),
    "qnli": GlueTask(
        "QNLI", ("question", "sentence", "label"), ("entailment", "not_entailment"), {"dev": "dev.tsv"}
    ),
    "sst-2": GlueTask("SST-2", ("sentence", None, "label"), ("0", "1"), {"dev": "dev.tsv"}),
    "cola": GlueTask("CoLA", (3, None, 1), ("0", "1"), {"dev": "dev.tsv"}, header=False),
    "sts-b": GlueTask("STS-B", ("sentence1", "sentence2", "score"), None, {"dev": "dev.tsv"}),
    "mrpc": GlueTask("MRPC", ("#1 String", "#2 String", "Quality"), ("0", "1"), {"dev": "dev.tsv"}),
    "rte": GlueTask(
        "RTE", ("sentence1", "sentence2", "label"), ("entailment", "not_entailment"), {"dev": "dev.tsv"}
    ),
}


def task_dir(name: str, path: Path) -> Path:
    nested = Path(path) / TASKS[name].folder
    return nested if nested.is_dir() else Path(path)


def read_tsv(task: GlueTask, path: Path, skipped: dict[str, int]):
    """Examples of one TSV file; labels as class indices (float scores for STS-B)."""
    from trelm.evaluate.finetune import Example

    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    columns = task.columns
    if task.header:
        header, rows = rows[0], rows[1:]
        columns = tuple(None if c is None else header.index(c) for c in columns)
    text, pair, label = columns
    examples = []
    for row in rows:
        if len(row) <= max(c for c in columns if c is not None):
            skipped["short_row"] = skipped.get("short_row", 0) + 1
            continue
        gold = float(row[label]) if task.labels is None else task.labels.index(row[label])
        examples.append(Example(row[text], None if pair is None else row[pair], label=gold))
    return examples


def glue_metrics(name: str, gold: list, pred: list) -> dict[str, float]:
    if name == "sts-b":
        return metrics.pearson_spearman(gold, pred)
    scores = {"accuracy": metrics.accuracy(gold, pred)}
    if name in ("mrpc", "qqp"):
        scores["f1"] = metrics.binary_f1(gold, pred)
    if name == "cola":
        scores = {"mcc": metrics.matthews(gold, pred)}
    return scores


def scorer(name: str):
    def score(_split: str, logits: list[list[float]], examples) -> dict:
        if TASKS[name].labels is None:
            pred = [row[0] for row in logits]
        else:
            pred = [max(range(len(row)), key=row.__getitem__) for row in logits]
        return {"metrics": glue_metrics(name, [e.label for e in examples], pred), "n": len(examples)}

    return score


def evaluate_glue(name: str, path: Path, checkpoint: str, cfg, seed: int, device: str) -> dict:
    """One seed; MNLI's two dev sets come out as `accuracy_m` and `accuracy_mm`."""
    from trelm.evaluate.finetune import REGRESSION, SINGLE_LABEL, finetune_seeds

    task, folder, skipped = TASKS[name], task_dir(name, path), {}
    train_set = read_tsv(task, folder / "train.tsv", skipped)[: cfg.max_train_examples]
    dev_sets = {
        split: read_tsv(task, folder / file, skipped)[: cfg.max_eval_examples]
        for split, file in task.dev_files.items()
    }
    kind, num_labels = (REGRESSION, 1) if task.labels is None else (SINGLE_LABEL, len(task.labels))
    (run,) = finetune_seeds(
        checkpoint,
        train_set,
        dev_sets,
        kind=kind,
        num_labels=num_labels,
        score=scorer(name),
        cfg=cfg,
        seeds=[seed],
        device=device,
    )
    splits = run["splits"]
    if len(splits) == 1:
        (only,) = splits.values()
        result_metrics, n = only["metrics"], only["n"]
    else:
        result_metrics = {f"{k}_{split}": v for split, s in splits.items() for k, v in s["metrics"].items()}
        n = sum(s["n"] for s in splits.values())
    return {"metrics": result_metrics, "n": n, "seeds": [seed], "losses": [run["losses"]], "skipped": skipped}
