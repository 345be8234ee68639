"""Collating `instances` rows into padded training tensors: MLM masking, entity spans, CKA targets.

A row is a dict as pyarrow's `to_pylist()` gives it for the `instances` schema (storage/schemas.py):
`input_ids` (special tokens included) and `entities`, each with a token span [tok_start, tok_end) (end
exclusive), kg_id, important, and for important entities with KG knowledge rel_id / tail_ids (the CKA target).

- MLM (Eq. 3's L_MLM): `mlm_probability` of the words are chosen (each word independently, so the share
  holds in expectation), every token of a chosen word is predicted, and its input is [MASK] 80% / a random
  non-special token 10% / unchanged 10% (drawn per token, as BERT does). Word starts come from the
  vocabulary: a WordPiece token not starting with "##", a byte-level BPE token starting with "Ġ"; a token
  right after a non-candidate (special token, injected span) also starts a word, which covers RoBERTa's first
  word without "Ġ".
- Tokens of injected important entities are not MLM candidates: their input is replaced by Eq. 7, so there is
  nothing of the token left to predict from. When neither knowledge nor memory is injected (both ablations
  off), those tokens are ordinary MLM candidates.
- Entities: every entity of every row (important or not) is listed with its memory-bank row (-1 when not in
  the bank); the bank's local/global memory is updated at every listed occurrence, Eq. 7 is applied at the
  tokens of important entities that have a row (`inject_index`).
- CKA: one target per important entity with a relation and a non-empty tail label, its first
  `max_tail_tokens` tail tokens padded to [C, max_tail_tokens] with a mask.

All randomness comes from the given torch.Generator (CPU): a batch is a function of (rows, generator state).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from trelm.config import ModelConfig

IGNORE = -100  # label of tokens that are not predicted (torch cross_entropy's ignore_index)


@dataclass(eq=False)
class TokenInfo:
    """What masking needs to know of a tokenizer."""

    special_ids: tuple[int, ...]
    mask_id: int
    pad_id: int
    vocab_size: int
    is_word_start: np.ndarray  # bool [vocab_size]

    @classmethod
    def from_tokenizer(cls, tok) -> TokenInfo:
        vocab = tok.get_vocab()
        size = max(len(tok), max(vocab.values()) + 1)
        byte_bpe = any(t.startswith("Ġ") for t in vocab)
        starts = np.ones(size, bool)
        for token, idx in vocab.items():
            starts[idx] = token.startswith("Ġ") if byte_bpe else not token.startswith("##")
        special = tuple(sorted(set(tok.all_special_ids)))
        starts[list(special)] = True
        return cls(special, int(tok.mask_token_id), int(tok.pad_token_id), size, starts)

    def random_pool(self) -> torch.Tensor:
        """Token ids a 10% random replacement may take: every non-special id."""
        keep = np.ones(self.vocab_size, bool)
        keep[list(self.special_ids)] = False
        return torch.from_numpy(np.flatnonzero(keep))


class EntityRows:
    """kg_id -> row of the memory bank / entity-embedding table: the rows are the sorted kg_ids given."""

    def __init__(self, kg_ids: np.ndarray):
        self.kg_ids = np.asarray(kg_ids, np.int64)
        if len(self.kg_ids) > 1 and not (np.diff(self.kg_ids) > 0).all():
            raise ValueError("memory-bank kg_ids must be sorted and unique")

    def __len__(self) -> int:
        return len(self.kg_ids)

    def __call__(self, kg_ids) -> np.ndarray:
        kg_ids = np.asarray(kg_ids, np.int64)
        rows = np.searchsorted(self.kg_ids, kg_ids)
        found = rows < len(self.kg_ids)
        found[found] = self.kg_ids[rows[found]] == kg_ids[found]
        return np.where(found, rows, -1)


@dataclass(eq=False)
class Batch:
    input_ids: torch.Tensor  # [B, T] long, after MLM masking
    attention_mask: torch.Tensor  # [B, T] long, 0 at padding
    mlm_labels: torch.Tensor  # [B, T] long, IGNORE where not predicted
    ent_batch: torch.Tensor  # [E] long: the row of the batch holding the entity
    ent_start: torch.Tensor  # [E] long: first token
    ent_end: torch.Tensor  # [E] long: one past the last token
    ent_kg_id: torch.Tensor  # [E] long
    ent_row: torch.Tensor  # [E] long: memory-bank row, -1 when not in the bank
    ent_important: torch.Tensor  # [E] bool
    inject_index: torch.Tensor  # [B, T] long: the entity whose Eq. 7 input replaces the token, -1: none
    cka_entity: torch.Tensor  # [C] long: index into the entity tensors of the head entity
    cka_rel: torch.Tensor  # [C] long
    cka_tail: torch.Tensor  # [C, L] long: tail tokens, pad_id beyond the mask
    cka_tail_mask: torch.Tensor  # [C, L] bool

    def to(self, device) -> Batch:
        return Batch(**{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})

    @property
    def original_ids(self) -> torch.Tensor:
        """The input ids before masking."""
        return torch.where(self.mlm_labels != IGNORE, self.mlm_labels, self.input_ids)

    def plain(self) -> Batch:
        """The same batch with Eq. 7 applied nowhere: every token, head entities' too, is its word piece."""
        return Batch(
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "inject_index"},
            inject_index=torch.full_like(self.inject_index, -1),
        )

    def for_targets(self, n: int) -> Batch:
        """The sequences holding the first `n` CKA targets, with every entity and target of those
        sequences re-indexed: what attribution runs on, since its cost grows with the rows it copies."""
        rows = torch.unique(self.ent_batch[self.cka_entity[:n]])
        if len(rows) == self.input_ids.shape[0]:
            return self
        row_map = self.ent_batch.new_full((self.input_ids.shape[0],), -1)
        row_map[rows] = torch.arange(len(rows), device=rows.device)
        kept = row_map[self.ent_batch] >= 0
        ent_map = torch.full_like(self.ent_batch, -1)
        ent_map[kept] = torch.arange(int(kept.sum()), device=kept.device)
        targets = kept[self.cka_entity]
        inject = self.inject_index[rows]
        return Batch(
            input_ids=self.input_ids[rows],
            attention_mask=self.attention_mask[rows],
            mlm_labels=self.mlm_labels[rows],
            ent_batch=row_map[self.ent_batch[kept]],
            ent_start=self.ent_start[kept],
            ent_end=self.ent_end[kept],
            ent_kg_id=self.ent_kg_id[kept],
            ent_row=self.ent_row[kept],
            ent_important=self.ent_important[kept],
            inject_index=torch.where(inject >= 0, ent_map[inject.clamp(min=0)], -1),
            cka_entity=ent_map[self.cka_entity[targets]],
            cka_rel=self.cka_rel[targets],
            cka_tail=self.cka_tail[targets],
            cka_tail_mask=self.cka_tail_mask[targets],
        )

    def repeat(self, copies: int) -> Batch:
        """The batch `copies` times, copy-major: copy r is rows r*B .. (r+1)*B-1 (entities and targets
        follow, pointing into their own copy)."""
        rows, n_ent = self.input_ids.shape[0], self.ent_batch.shape[0]
        offsets = torch.arange(copies, device=self.input_ids.device)
        index = self.inject_index.unsqueeze(0)
        inject = torch.where(index >= 0, index + (offsets * n_ent).view(-1, 1, 1), -1)
        return Batch(
            input_ids=self.input_ids.repeat(copies, 1),
            attention_mask=self.attention_mask.repeat(copies, 1),
            mlm_labels=self.mlm_labels.repeat(copies, 1),
            ent_batch=(self.ent_batch.unsqueeze(0) + (offsets * rows).view(-1, 1)).reshape(-1),
            ent_start=self.ent_start.repeat(copies),
            ent_end=self.ent_end.repeat(copies),
            ent_kg_id=self.ent_kg_id.repeat(copies),
            ent_row=self.ent_row.repeat(copies),
            ent_important=self.ent_important.repeat(copies),
            inject_index=inject.reshape(copies * rows, -1),
            cka_entity=(self.cka_entity.unsqueeze(0) + (offsets * n_ent).view(-1, 1)).reshape(-1),
            cka_rel=self.cka_rel.repeat(copies),
            cka_tail=self.cka_tail.repeat(copies, 1),
            cka_tail_mask=self.cka_tail_mask.repeat(copies, 1),
        )


RowLookup = Callable[[np.ndarray], np.ndarray] | np.ndarray | None


def make_batch(
    rows: Sequence[dict],
    tok_info: TokenInfo,
    cfg: ModelConfig,
    generator: torch.Generator,
    entity_rows: RowLookup = None,
) -> Batch:
    """Collate instance rows (see the module doc); `entity_rows`: kg_ids -> bank rows (-1 when absent), as a
    callable (e.g. `EntityRows`) or an array indexed by kg_id; None: no entity is in the bank."""
    input_ids, attention_mask = _pad(rows, tok_info.pad_id)
    entities = _entities(rows, entity_rows)
    injecting = cfg.inject_knowledge or cfg.memory_bank
    inject_index = _inject_index(entities, input_ids.shape) if injecting else torch.full_like(input_ids, -1)
    candidates = attention_mask.bool() & ~_is_special(input_ids, tok_info) & (inject_index < 0)
    masked, labels = mlm_mask(input_ids, candidates, tok_info, cfg, generator)
    cka = _cka_targets(entities, cfg.max_tail_tokens, tok_info.pad_id)
    return Batch(masked, attention_mask, labels, *entities[:6], inject_index, *cka)


def _pad(rows: Sequence[dict], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row["input_ids"])] = torch.as_tensor(row["input_ids"], dtype=torch.long)
        mask[b, : len(row["input_ids"])] = 1
    return ids, mask


def _entities(rows: Sequence[dict], entity_rows: RowLookup) -> tuple:
    """(batch, start, end, kg_id, row, important) tensors over all entities, plus the raw entity dicts."""
    listed = [(b, e) for b, row in enumerate(rows) for e in (row.get("entities") or [])]
    kg = np.array([e["kg_id"] for _, e in listed], np.int64)
    bank_rows = _lookup(entity_rows, kg)
    return (
        _long([b for b, _ in listed]),
        _long([e["tok_start"] for _, e in listed]),
        _long([e["tok_end"] for _, e in listed]),
        torch.from_numpy(kg),
        torch.from_numpy(bank_rows),
        torch.tensor([bool(e["important"]) for _, e in listed], dtype=torch.bool),
        [e for _, e in listed],
    )


def _long(values: list[int]) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, np.int64).reshape(-1), dtype=torch.long)


def _lookup(entity_rows: RowLookup, kg: np.ndarray) -> np.ndarray:
    if entity_rows is None:
        return np.full(len(kg), -1, np.int64)
    if callable(entity_rows):
        return np.asarray(entity_rows(kg), np.int64).reshape(-1)
    table = np.asarray(entity_rows, np.int64)
    rows = np.full(len(kg), -1, np.int64)
    inside = (kg >= 0) & (kg < len(table))
    rows[inside] = table[kg[inside]]
    return rows


def _inject_index(entities: tuple, shape: torch.Size) -> torch.Tensor:
    """[B, T]: index of the important entity (with a bank row) covering each token; first listed wins."""
    batch, start, end, _, bank_rows, important, _ = entities
    index = torch.full(shape, -1, dtype=torch.long)
    for i in (important & (bank_rows >= 0)).nonzero().flatten().tolist():
        span = index[batch[i], start[i] : end[i]]
        span[span < 0] = i
    return index


def _is_special(ids: torch.Tensor, tok_info: TokenInfo) -> torch.Tensor:
    return torch.isin(ids, torch.tensor(tok_info.special_ids, dtype=torch.long))


def mlm_mask(
    ids: torch.Tensor,
    candidates: torch.Tensor,
    tok_info: TokenInfo,
    cfg: ModelConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked ids, labels): whole words (or tokens) of `candidates` chosen with mlm_probability; 80/10/10."""
    chosen = _chosen_tokens(ids, candidates, tok_info, cfg, generator)
    labels = torch.where(chosen, ids, IGNORE)
    action = torch.rand(ids.shape, generator=generator)
    pool = tok_info.random_pool()
    random_ids = pool[torch.randint(len(pool), ids.shape, generator=generator)]
    masked = torch.where(chosen & (action < 0.8), tok_info.mask_id, ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, labels


def _chosen_tokens(ids, candidates, tok_info: TokenInfo, cfg: ModelConfig, generator) -> torch.Tensor:
    """Tokens of the chosen words: a word is a run of candidates from a word-start token to the next one."""
    starts = candidates
    if cfg.whole_word_mask:
        previous = torch.nn.functional.pad(candidates[:, :-1], (1, 0), value=False)
        word_start = torch.from_numpy(tok_info.is_word_start)[ids.clamp(0, tok_info.vocab_size - 1)]
        starts = candidates & (word_start | ~previous)
    word_of_token = torch.cumsum(starts.reshape(-1).long(), 0) - 1  # row-major: a word never spans rows
    picked_words = torch.rand(int(starts.sum()), generator=generator) < cfg.mlm_probability
    picked = (
        picked_words[word_of_token.clamp(min=0)] if len(picked_words) else torch.zeros_like(word_of_token)
    )
    return candidates & picked.view(ids.shape).bool()


def _cka_targets(entities: tuple, max_tail: int, pad_id: int) -> tuple[torch.Tensor, ...]:
    listed = entities[6]
    targets = [
        (i, e["rel_id"], e["tail_ids"][:max_tail])
        for i, e in enumerate(listed)
        if e["important"] and e.get("rel_id") is not None and e.get("tail_ids")
    ]
    tail = torch.full((len(targets), max_tail), pad_id, dtype=torch.long)
    mask = torch.zeros((len(targets), max_tail), dtype=torch.bool)
    for c, (_, _, tokens) in enumerate(targets):
        tail[c, : len(tokens)] = torch.as_tensor(tokens, dtype=torch.long)
        mask[c, : len(tokens)] = True
    entity = torch.tensor([i for i, _, _ in targets], dtype=torch.long)
    rel = torch.tensor([r for _, r, _ in targets], dtype=torch.long)
    return entity, rel, tail, mask
