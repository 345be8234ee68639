"""TACRED (json layout): fine-tuned relation extraction with typed entity markers.

Items `{id, relation, token, subj_start, subj_end, obj_start, obj_end, subj_type, obj_type}` with
inclusive token ends. PTB bracket tokens are restored (-LRB- -> "("). Markers follow Zhou & Chen's typed
punctuation markers: `@ * person * Bill Gates @ ... # ^ organization ^ Microsoft #`; the example is
represented by the hidden states at the opening `@` and `#`. Labels: `no_relation` first, then every
other label of train and test sorted (TACRED's 42). Scored on `test.json` (`dev.json` when there is no
test file) with the official scorer's micro P/R/F1 (metrics.tacred_score).
"""

from __future__ import annotations

import json
from pathlib import Path

from trelm.evaluate.metrics import NO_RELATION, tacred_score

PTB_BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def marked_text(item: dict) -> tuple[str, tuple[int, int]]:
    """The sentence with typed markers and the char offsets of the subject's `@` and the object's `#`."""
    pieces: list[str] = []
    subj_type = item["subj_type"].lower().replace("_", " ")
    obj_type = item["obj_type"].lower().replace("_", " ")
    opening = {item["subj_start"]: f"@ * {subj_type} *", item["obj_start"]: f"# ^ {obj_type} ^"}
    closing = {item["subj_end"]: "@", item["obj_end"]: "#"}
    offsets = {}
    length = 0
    for index, token in enumerate(item["token"]):
        words = []
        if index in opening:
            offsets[opening[index][0]] = length
            words.append(opening[index])
        words.append(PTB_BRACKETS.get(token, token))
        if index in closing:
            words.append(closing[index])
        piece = " ".join(words)
        pieces.append(piece)
        length += len(piece) + 1
    return " ".join(pieces), (offsets["@"], offsets["#"])


def read_items(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def label_list(*splits: list[dict]) -> list[str]:
    others = sorted({item["relation"] for split in splits for item in split} - {NO_RELATION})
    return [NO_RELATION, *others]


def to_examples(items: list[dict], labels: list[str]):
    from trelm.evaluate.finetune import Example

    index = {name: i for i, name in enumerate(labels)}
    examples = []
    for item in items:
        text, markers = marked_text(item)
        examples.append(Example(text, markers=markers, label=index[item["relation"]]))
    return examples


def scorer(labels: list[str]):
    def score(_split: str, logits: list[list[float]], examples) -> dict:
        guess = [labels[max(range(len(row)), key=row.__getitem__)] for row in logits]
        result = tacred_score([labels[e.label] for e in examples], guess)
        return {**result, "n": len(examples)}

    return score


def evaluate_tacred(data_dir: Path, checkpoint: str, cfg, seeds, device: str) -> dict:
    from trelm.evaluate.aggregate import seeds_result
    from trelm.evaluate.finetune import SINGLE_LABEL, finetune_seeds

    test_path = Path(data_dir) / "test.json"
    train_items = read_items(Path(data_dir) / "train.json")[: cfg.max_train_examples]
    test_items = read_items(test_path if test_path.exists() else Path(data_dir) / "dev.json")
    test_items = test_items[: cfg.max_eval_examples]
    labels = label_list(train_items, test_items)
    runs = finetune_seeds(
        checkpoint,
        to_examples(train_items, labels),
        {"test": to_examples(test_items, labels)},
        kind=SINGLE_LABEL,
        num_labels=len(labels),
        score=scorer(labels),
        cfg=cfg,
        seeds=seeds,
        device=device,
    )
    return seeds_result(runs, "test")
