"""Metric functions of every task, as their official scorers define them (pure Python, no torch).

- P@1 per relation, then the unweighted (macro) mean over relations (LAMA).
- Open Entity: a label is predicted where its logit > 0; micro P = correct/predicted, R = correct/gold.
- TACRED (the official `score()`): `no_relation` is never counted; a non-NA guess is "guessed", a non-NA
  gold is "gold", a hit needs guess == gold; P = 1 when nothing is guessed, R = 0 when there is no gold.
- GLUE: accuracy, F1 of the positive class, Matthews correlation, Pearson / Spearman (scipy, sklearn,
  as the GLUE scorers compute them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

NO_RELATION = "no_relation"


def prf(correct: int, predicted: int, gold: int, empty_precision: float = 0.0) -> dict[str, float]:
    """Micro precision, recall and F1 from counts; `empty_precision` is P when nothing was predicted."""
    precision = correct / predicted if predicted else empty_precision
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def macro_p_at_1(hits: Mapping[str, Sequence[bool]]) -> dict[str, float]:
    """{relation: [hit per fact]} -> per-relation P@1 and `p_at_1`, their unweighted mean.

    A relation with no fact left (all filtered) has no P@1 and does not enter the mean.
    """
    per_relation = {rel: sum(h) / len(h) for rel, h in hits.items() if h}
    mean = sum(per_relation.values()) / len(per_relation) if per_relation else 0.0
    return {"p_at_1": mean, "per_relation": per_relation}


def open_entity_counts(
    logits: Sequence[Sequence[float]], gold: Sequence[Sequence[int]]
) -> tuple[int, int, int]:
    """(correct, predicted, gold) over all (example, label) pairs; a label is predicted where logit > 0."""
    correct = predicted = gold_n = 0
    for row, labels in zip(logits, gold, strict=True):
        guessed = {i for i, value in enumerate(row) if value > 0}
        truth = set(labels)
        correct += len(guessed & truth)
        predicted += len(guessed)
        gold_n += len(truth)
    return correct, predicted, gold_n


def open_entity_score(logits: Sequence[Sequence[float]], gold: Sequence[Sequence[int]]) -> dict[str, float]:
    correct, predicted, gold_n = open_entity_counts(logits, gold)
    return prf(correct, predicted, gold_n)


def tacred_counts(gold: Sequence[str], guess: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per relation: correct, guessed, gold counts, ignoring `no_relation` as the official scorer does."""
    counts: dict[str, dict[str, int]] = {}
    for truth, pred in zip(gold, guess, strict=True):
        if pred != NO_RELATION:
            counts.setdefault(pred, {"correct": 0, "guessed": 0, "gold": 0})["guessed"] += 1
        if truth != NO_RELATION:
            counts.setdefault(truth, {"correct": 0, "guessed": 0, "gold": 0})["gold"] += 1
            if pred == truth:
                counts[truth]["correct"] += 1
    return counts


def tacred_score(gold: Sequence[str], guess: Sequence[str]) -> dict:
    """Micro P/R/F1 (P = 1 when nothing is guessed, as in the official scorer) and per-label counts."""
    counts = tacred_counts(gold, guess)
    total = {key: sum(c[key] for c in counts.values()) for key in ("correct", "guessed", "gold")}
    metrics = prf(total["correct"], total["guessed"], total["gold"], empty_precision=1.0)
    per_label = {
        rel: prf(c["correct"], c["guessed"], c["gold"], empty_precision=1.0) | c
        for rel, c in sorted(counts.items())
    }
    return {"metrics": metrics, "per_label": per_label}


def accuracy(gold: Sequence, pred: Sequence) -> float:
    return sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold) if gold else 0.0


def binary_f1(gold: Sequence[int], pred: Sequence[int]) -> float:
    """F1 of class 1 (MRPC: paraphrase, QQP: duplicate)."""
    tp = sum(g == 1 and p == 1 for g, p in zip(gold, pred, strict=True))
    return prf(tp, sum(p == 1 for p in pred), sum(g == 1 for g in gold))["f1"]


def matthews(gold: Sequence[int], pred: Sequence[int]) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(gold, pred))


def pearson_spearman(gold: Sequence[float], pred: Sequence[float]) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    if len(set(pred)) < 2 or len(set(gold)) < 2:  # correlation of a constant is undefined: report 0
        return {"pearson": 0.0, "spearman": 0.0}
    return {"pearson": float(pearsonr(gold, pred)[0]), "spearman": float(spearmanr(gold, pred)[0])}
