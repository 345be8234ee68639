"""Candidate-ranking cloze probe: the gold object's rank among a fact's candidate objects, from plain tokens.

A fact (a row of `facts.jsonl`, see benchmarks/knowledge.py) has a subject, a template with [X] and [Y],
its gold object and candidate objects (the relation's objects in the fact set, each one vocabulary token
as it reads after a space: `storage.tokens.in_text_id`). The sentence is the template with the subject at
[X] and the mask token at [Y]; the masked LM's logits at the mask are read at the candidates' ids.

Rank of the gold object: 1 + (candidates scoring above it) + half of the other candidates tied with it
(the mean rank over tie orders, so a model that scores every candidate alike gets the random MRR, not 1).
P@1: rank == 1 exactly. MRR: mean of 1 / rank. Splits: seen / held-out facts by long-tail / frequent head,
and `shuffled`: every seen fact asked of another subject (`shuffled_subject`, same relation and template)
with the original object as gold, which a model that learned a per-relation prior scores as well as
the fact itself and a model that learned the fact does not.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from storage.tokens import in_text_id

SPLITS = ("seen_long_tail", "seen_frequent", "held_out_long_tail", "held_out_frequent", "shuffled")


def fact_split(fact: dict) -> str:
    return f"{fact['split']}_{'long_tail' if fact['long_tail'] else 'frequent'}"


def rank_of(scores: Sequence[float], gold: int) -> float:
    """1 + candidates above the gold one + half the other candidates tied with it."""
    above = sum(s > scores[gold] for s in scores)
    ties = sum(s == scores[gold] for s in scores) - 1
    return 1.0 + above + ties / 2


def candidate_ranks(model, tokenizer, facts: Sequence[dict], subject_key: str = "subject", batch: int = 64):
    """Rank of each fact's object among its candidates, the subject read from `subject_key`."""
    import torch

    device = next(model.parameters()).device
    ranks: list[float] = []
    ids_of: dict[tuple[str, ...], list[int]] = {}  # a relation's candidates, tokenized once (not per fact)
    for start in range(0, len(facts), batch):
        chunk = facts[start : start + batch]
        sentences = [
            f["template"].replace("[X]", f[subject_key]).replace("[Y]", tokenizer.mask_token) for f in chunk
        ]
        enc = tokenizer(sentences, padding=True, return_tensors="pt").to(device)
        with torch.inference_mode():
            logits = model(**enc).logits
        at_mask = logits[enc["input_ids"] == tokenizer.mask_token_id]  # one mask per sentence
        if len(at_mask) != len(chunk):
            raise ValueError("every probe sentence needs exactly one mask token")
        for fact, row in zip(chunk, at_mask, strict=True):
            labels = tuple(fact["candidates"])
            if labels not in ids_of:
                ids_of[labels] = candidate_ids(tokenizer, labels)
            ids = ids_of[labels]
            scores = row[ids].tolist()
            ranks.append(rank_of(scores, fact["candidates"].index(fact["object"])))
    return ranks


def candidate_ids(tokenizer, labels: Sequence[str]) -> list[int]:
    ids = [in_text_id(tokenizer, label) for label in labels]
    missing = [label for label, i in zip(labels, ids, strict=True) if i is None]
    if missing:
        raise ValueError(f"candidates that are not one vocabulary token: {missing[:5]}")
    return ids


def summarize(facts: Sequence[dict], ranks: Sequence[float], shuffled_ranks: Sequence[float]) -> dict:
    """{SPLIT: {mrr, p_at_1, n}}; `shuffled_ranks` align with the seen facts in order."""
    groups: dict[str, list[float]] = {s: [] for s in SPLITS}
    for fact, rank in zip(facts, ranks, strict=True):
        groups[fact_split(fact)].append(rank)
    groups["shuffled"] = list(shuffled_ranks)
    return {name: metrics(values) for name, values in groups.items()}


def metrics(ranks: Sequence[float]) -> dict:
    n = len(ranks)
    return {
        "mrr": sum(1 / r for r in ranks) / n if n else 0.0,
        "p_at_1": sum(r == 1 for r in ranks) / n if n else 0.0,
        "n": n,
    }


def score_model(model, tokenizer, facts: Sequence[dict]) -> dict:
    """Every split's metrics for one masked LM."""
    model.eval()
    seen = [f for f in facts if f["split"] == "seen"]
    ranks = candidate_ranks(model, tokenizer, facts)
    shuffled = candidate_ranks(model, tokenizer, seen, subject_key="shuffled_subject")
    return summarize(facts, ranks, shuffled)


def score_export(folder: Path, facts: Sequence[dict]) -> dict:
    """Every split's metrics for a Hugging Face export (AutoModelForMaskedLM + its tokenizer)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(str(folder))
    return score_model(model, AutoTokenizer.from_pretrained(str(folder)), facts)


def read_facts(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def rescore(out_dir: Path) -> dict:
    """{"variants": {VARIANT: {"seeds": {N: splits}}}} from `facts.jsonl` and `checkpoints/{VARIANT}-seed{N}`:
    results.json's figures, recomputed from the exports alone."""
    out_dir = Path(out_dir)
    facts = read_facts(out_dir / "facts.jsonl")
    variants: dict[str, dict] = {}
    for folder in sorted((out_dir / "checkpoints").iterdir()):
        variant, _, seed = folder.name.rpartition("-seed")
        seeds = variants.setdefault(variant, {"seeds": {}})["seeds"]
        seeds[seed] = score_export(folder, facts)
    return {"variants": variants}


def largest_difference(results: dict, rescored: dict) -> float:
    """The largest |MRR difference| between two results trees over every variant, seed and split."""
    worst = 0.0
    for variant, body in results["variants"].items():
        for seed, splits in body["seeds"].items():
            other = rescored["variants"][variant]["seeds"][seed]
            worst = max([worst, *(abs(splits[s]["mrr"] - other[s]["mrr"]) for s in SPLITS)])
    return worst
