"""Open Entity (ERNIE/KEPLER json layout): fine-tuned entity typing with the mention marked.

Files `train.json`, `dev.json`, `test.json`: a JSON list of `{sent, start, end, labels, ents}` with
character offsets of the mention. The mention is wrapped in `@ ... @` and represented by the opening
marker's hidden state; 9 independent sigmoid outputs, a label predicted where its logit > 0, scored on
`test.json` (`dev.json` when there is no test file) with micro P/R/F1.
"""

from __future__ import annotations

import json
from pathlib import Path

from trelm.evaluate.metrics import open_entity_counts, prf

LABELS = ("entity", "location", "time", "organization", "object", "event", "place", "person", "group")


def read_split(path: Path):
    """Examples with the mention marked: text `... @ mention @ ...`, marker at the first `@`."""
    from trelm.evaluate.finetune import Example

    examples = []
    for item in json.loads(Path(path).read_text(encoding="utf-8")):
        sent, start, end = item["sent"], item["start"], item["end"]
        text = f"{sent[:start]}@ {sent[start:end]} @{sent[end:]}"
        labels = [LABELS.index(label) for label in item["labels"] if label in LABELS]
        examples.append(Example(text, markers=(start,), label=labels))
    return examples


def eval_file(data_dir: Path) -> Path:
    test = Path(data_dir) / "test.json"
    return test if test.exists() else Path(data_dir) / "dev.json"


def score(_split: str, logits: list[list[float]], examples) -> dict:
    gold = [e.label for e in examples]
    correct, predicted, gold_n = open_entity_counts(logits, gold)
    per_label = {}
    for index, name in enumerate(LABELS):
        counts = open_entity_counts(
            [[row[index]] for row in logits], [[0] if index in g else [] for g in gold]
        )
        per_label[name] = prf(*counts)
    return {"metrics": prf(correct, predicted, gold_n), "per_label": per_label, "n": len(examples)}


def evaluate_open_entity(data_dir: Path, checkpoint: str, cfg, seeds, device: str) -> dict:
    from trelm.evaluate.aggregate import seeds_result
    from trelm.evaluate.finetune import MULTI_LABEL, finetune_seeds

    train_set = read_split(Path(data_dir) / "train.json")[: cfg.max_train_examples]
    test_set = read_split(eval_file(data_dir))[: cfg.max_eval_examples]
    runs = finetune_seeds(
        checkpoint,
        train_set,
        {"test": test_set},
        kind=MULTI_LABEL,
        num_labels=len(LABELS),
        score=score,
        cfg=cfg,
        seeds=seeds,
        device=device,
    )
    return seeds_result(runs, "test")
