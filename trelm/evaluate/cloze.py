"""Cloze probing shared by LAMA and the KG probe: single-token objects, batched [MASK] predictions.

Single-token rule (LAMA's): a fact is probed only when its object is exactly one token of the model's
vocabulary, found by encoding the object the way it appears after a space in a sentence: WordPiece
drops the space (`Paris` -> `paris` in an uncased vocab), byte-level BPE keeps it as `Ġ` (RoBERTa's
object token is " Paris" -> `ĠParis`, not `Paris`). An object that splits into several tokens, or maps
to the unknown token, is counted as skipped (`multi_token_object`), never scored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# LAMA's single-token rule is the shared one: the word as one vocabulary token after a space, or None
from storage.tokens import in_text_id as object_token_id

MASK_SLOT = "[Y]"
SUBJECT_SLOT = "[X]"


@dataclass
class Fact:
    relation: str
    subject: str
    obj: str
    template: str
    extra: dict = field(default_factory=dict)  # task-specific tags (e.g. seen/unseen in the KG probe)

    def sentence(self, mask_token: str) -> str:
        return self.template.replace(SUBJECT_SLOT, self.subject).replace(MASK_SLOT, mask_token)


def read_common_vocab(path, tokenizer) -> set[int]:
    """Token ids of a one-word-per-line file (LAMA's common_vocab), by the same single-token rule."""
    with open(path, encoding="utf-8") as lines:
        words = [line.strip() for line in lines]
    return {i for i in (object_token_id(tokenizer, w) for w in words if w) if i is not None}


def keep_single_token(
    facts: Iterable[Fact], tokenizer, allowed: set[int] | None, skipped: dict[str, int]
) -> list[tuple[Fact, int]]:
    """(fact, object id) for facts whose object is one token (and in `allowed`); counts the rest."""
    kept = []
    for fact in facts:
        token = object_token_id(tokenizer, fact.obj)
        reason = "multi_token_object" if token is None else None
        if reason is None and allowed is not None and token not in allowed:
            reason = "not_in_common_vocab"
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
        else:
            kept.append((fact, token))
    return kept


def predict_masked(
    model,
    tokenizer,
    sentences: Sequence[str],
    *,
    top_k: int = 1,
    allowed: set[int] | None = None,
    batch_size: int = 32,
    max_len: int = 128,
) -> list[list[int]]:
    """Top-k token ids at the (first) mask of each sentence, best first; [] when truncation cut the mask.

    `allowed` restricts the candidates (LAMA's common vocabulary). Batches are padded to their longest.
    """
    import torch

    device = next(model.parameters()).device
    allowed_ids = torch.tensor(sorted(allowed), device=device) if allowed is not None else None
    out: list[list[int]] = []
    for start in range(0, len(sentences), batch_size):
        batch = tokenizer(
            list(sentences[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_len,
            return_tensors="pt",
        ).to(device)
        with torch.inference_mode():
            logits = model(**batch).logits
        out += _top_at_mask(batch["input_ids"], logits, tokenizer.mask_token_id, top_k, allowed_ids)
    return out


def _top_at_mask(input_ids, logits, mask_id: int, top_k: int, allowed_ids) -> list[list[int]]:
    rows = []
    for ids, row_logits in zip(input_ids, logits, strict=True):
        positions = (ids == mask_id).nonzero()
        if len(positions) == 0:
            rows.append([])
            continue
        scores = row_logits[positions[0, 0]]
        if allowed_ids is None:
            rows.append(scores.topk(top_k).indices.tolist())
        else:
            best = scores[allowed_ids].topk(min(top_k, len(allowed_ids))).indices
            rows.append(allowed_ids[best].tolist())
    return rows


def probe_hits(
    model,
    tokenizer,
    kept: Sequence[tuple[Fact, int]],
    allowed: set[int] | None,
    batch_size: int,
    max_len: int,
) -> list[bool]:
    """Hit (top-1 prediction == object token) per kept fact."""
    sentences = [fact.sentence(tokenizer.mask_token) for fact, _ in kept]
    predictions = predict_masked(
        model, tokenizer, sentences, allowed=allowed, batch_size=batch_size, max_len=max_len
    )
    return [bool(top) and top[0] == token for (_, token), top in zip(kept, predictions, strict=True)]
