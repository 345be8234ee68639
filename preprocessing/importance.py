"""Semantic importance of entity mentions (paper section 3.1, Eq. 1), batched on a sentence encoder.

SI(e) = ||h_o|| ||h_rep|| / (h_o . h_rep), the inverse cosine between the representation h_o of a
sequence and h_rep of the same sequence with the mention e replaced: 1 when the replacement leaves
the representation unchanged, larger the more the sentence's meaning rests on the mention. The
paper leaves the replacement and the representation open; the choices here:

- Replacement (`replacement`): `mask` (default) turns every token of the mention into the mask
  token. Length and positions stay the same, so the only change the encoder sees is the lost
  entity, and a masked-LM-pretrained encoder reads [MASK] as "some word here", the neutral
  stand-in. `unk` does the same with the unknown token (a rarely seen embedding, so noisier);
  `drop` removes the tokens, which also shifts every later position and changes the syntax, so it
  scores grammar as much as meaning.
- Pooling (`pooling`): `mean` (default) averages the last hidden states over the non-padding tokens
  (special tokens included). The packaged encoder, all-MiniLM-L6-v2, was trained with exactly that
  pooling for sentence similarity, and the cosine in Eq. 1 is the similarity it was trained for;
  the first token of a masked-LM encoder is not a sentence vector without fine-tuning. `cls` takes
  the first token, for encoders trained that way.
- A cosine at or below 0 (the replacement turned the representation away entirely) is clamped to
  1e-6, so SI tops out at 1e6: Eq. 1 read literally would rank an opposite vector below an
  unchanged one.

Batching: every sequence with at least one mention is encoded once as it is (h_o) and once per
mention with that mention replaced (h_rep). The rows (sequence index, span) are sorted by length,
longest first, and cut into batches of `batch_size`; each batch is gathered from one padded token
matrix on the device, the replacement is a mask from comparing an `arange` of positions with the
span bounds, and `drop` compacts the kept tokens with a stable sort. There is no Python work per
mention: the loop is over batches. Since a sequence and its copies have the same length under
`mask`/`unk`, sorting also keeps them in the same or adjacent batches.

Precision: the weights stay float32; on a GPU the forward runs under autocast in bfloat16 (float16
where bf16 is missing), where LayerNorm and softmax stay float32. Pooling, norms and the dot product
are float32: SI - 1 is often about 1e-2, and the ranking needs those digits.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from itertools import chain

import numpy as np

from preprocessing.config import SIConfig
from preprocessing.sequences import load_tokenizer, model_location
from storage.configio import device_name
from storage.tokens import quiet_loading

MIN_COSINE = 1e-6  # SI = 1 / max(cos, MIN_COSINE), see the module doc




def compute_dtype(cfg: SIConfig, device):
    import torch

    if cfg.dtype != "auto":
        return getattr(torch, cfg.dtype)
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_encoder(cfg: SIConfig, tokenizer=None):
    """(tokenizer, model): the encoder named by `cfg.encoder`, float32, in eval mode on its device;
    `tokenizer`: that encoder's, when the caller has loaded it already."""
    from transformers import AutoModel

    tokenizer = tokenizer or load_tokenizer(cfg.encoder)
    # SI pools the last layer itself: no pooler. A checkpoint's MLM head or pooler is then UNEXPECTED in
    # transformers' load report, by design; what matters is that no encoder weight is missing
    with quiet_loading():
        model, info = AutoModel.from_pretrained(
            model_location(cfg.encoder), add_pooling_layer=False, output_loading_info=True
        )
    if info["missing_keys"]:
        missing = ", ".join(sorted(info["missing_keys"])[:5])
        raise RuntimeError(f"{cfg.encoder}: encoder weights missing from the checkpoint: {missing}")
    return tokenizer, model.eval().to(device_name(cfg.device))


@dataclass
class Rows:
    """Every row to encode, as arrays: the originals of the sequences with spans, then one per span.

    An original is a row whose span is empty (start == end == 0): nothing is replaced."""

    tokens: np.ndarray  # (sequences, longest) token ids, right-padded
    lengths: np.ndarray  # (sequences,)
    seq: np.ndarray  # (rows,) the sequence a row copies
    start: np.ndarray  # (rows,) replaced span [start, end) in that sequence
    end: np.ndarray
    out_len: np.ndarray  # (rows,) tokens after replacement
    original: np.ndarray  # (spans,) the row of h_o for each span; span k's own row is n_originals + k
    spans_per_seq: np.ndarray  # (sequences,)

    @classmethod
    def build(cls, sequences: list[list[int]], spans: list[list[tuple[int, int]]], pad_id: int, drop: bool):
        if len(spans) != len(sequences):
            raise ValueError(f"{len(spans)} span lists for {len(sequences)} sequences")
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        counts = np.array([len(s) for s in spans], dtype=np.int64)
        flat = np.fromiter(chain.from_iterable(chain.from_iterable(spans)), np.int64, 2 * counts.sum())
        flat = flat.reshape(-1, 2)
        span_seq = np.repeat(np.arange(len(sequences)), counts)
        if ((flat[:, 0] < 0) | (flat[:, 1] <= flat[:, 0]) | (flat[:, 1] > lengths[span_seq])).any():
            raise ValueError("every span must be a non-empty [start, end) inside its sequence")
        originals = np.flatnonzero(counts)
        original_row = np.full(len(sequences), -1)
        original_row[originals] = np.arange(len(originals))
        seq = np.concatenate([originals, span_seq])
        start = np.concatenate([np.zeros(len(originals), np.int64), flat[:, 0]])
        end = np.concatenate([np.zeros(len(originals), np.int64), flat[:, 1]])
        out_len = lengths[seq] - (end - start) * drop
        tokens = _padded(sequences, lengths, pad_id)
        return cls(tokens, lengths, seq, start, end, out_len, original_row[span_seq], counts)


def _padded(sequences: list[list[int]], lengths: np.ndarray, pad_id: int) -> np.ndarray:
    """One right-padded matrix: a boolean mask assignment fills row by row, in order."""
    tokens = np.full((len(sequences), lengths.max(initial=0)), pad_id, dtype=np.int64)
    tokens[np.arange(tokens.shape[1]) < lengths[:, None]] = np.fromiter(
        chain.from_iterable(sequences), np.int64, lengths.sum()
    )
    return tokens


def replaced_batches(tokenizer, rows: Rows, cfg: SIConfig, device):
    """(row indices, model inputs) per batch, longest rows first: exactly what `si_scores` encodes."""
    import torch

    token_id = {"mask": tokenizer.mask_token_id, "unk": tokenizer.unk_token_id, "drop": None}[cfg.replacement]
    if cfg.replacement != "drop" and token_id is None:
        raise ValueError(f"{cfg.encoder}: the tokenizer has no {cfg.replacement} token")
    order = np.argsort(-rows.out_len, kind="stable")
    tokens, lengths, seq, start, end, order_t = (
        torch.from_numpy(a).to(device)
        for a in (rows.tokens, rows.lengths, rows.seq, rows.start, rows.end, order)
    )
    for b in range(0, len(order), cfg.batch_size):
        idx = order[b : b + cfg.batch_size]
        # shapes come from the numpy copies, so building a batch never waits on the device
        width, out_width = int(rows.lengths[rows.seq[idx]].max()), int(rows.out_len[idx].max())
        picked = order_t[b : b + cfg.batch_size]
        src = seq[picked]
        batch = replace_spans(
            tokens[src, :width],
            lengths[src],
            start[picked],
            end[picked],
            token_id,
            tokenizer.pad_token_id,
            out_width,
        )
        if "token_type_ids" in tokenizer.model_input_names:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        yield picked, batch


def replace_spans(ids, lengths, start, end, token_id: int | None, pad_id: int, out_width: int) -> dict:
    """input_ids and attention_mask of rows `ids` with [start, end) set to `token_id`, or removed if None.

    ids: (rows, width) right-padded; lengths, start, end: (rows,); out_width: the longest result."""
    import torch

    pos = torch.arange(ids.shape[1], device=ids.device)
    inside = (pos >= start[:, None]) & (pos < end[:, None])
    if token_id is not None:
        return {
            "input_ids": ids.masked_fill(inside, token_id),
            "attention_mask": (pos < lengths[:, None]).long(),
        }
    keep = ~inside & (pos < lengths[:, None])
    # a stable sort on "not kept" moves the kept tokens to the front, in their order
    moved = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :out_width]
    attention = keep.gather(1, moved)
    return {
        "input_ids": ids.gather(1, moved).masked_fill(~attention, pad_id),
        "attention_mask": attention.long(),
    }


def pool(hidden, attention_mask, pooling: str):
    """(rows, hidden) float32 sentence vectors from the last hidden states."""
    import torch

    if pooling == "cls":
        return hidden[:, 0].float()
    weights = attention_mask.unsqueeze(-1).to(torch.float32)
    return (hidden.float() * weights).sum(1) / weights.sum(1)


def inverse_cosine(h_o, h_rep):
    """Eq. 1 row by row, float32, with the cosine clamped at MIN_COSINE."""
    cosine = (h_o * h_rep).sum(-1) / (h_o.norm(dim=-1) * h_rep.norm(dim=-1))
    return 1.0 / cosine.clamp_min(MIN_COSINE)


def si_scores(
    model, tokenizer, sequences: list[list[int]], spans: list[list[tuple[int, int]]], cfg: SIConfig
):
    """SI of every span [tok_start, tok_end) of every sequence (input_ids): one float32 array per sequence."""
    import torch

    rows = Rows.build(sequences, spans, tokenizer.pad_token_id, cfg.replacement == "drop")
    if not len(rows.original):
        return [np.zeros(0, np.float32) for _ in sequences]
    device = next(model.parameters()).device
    dtype = compute_dtype(cfg, device)
    pooled = torch.empty((len(rows.seq), model.config.hidden_size), dtype=torch.float32, device=device)
    autocast = (
        torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast:
        for picked, batch in replaced_batches(tokenizer, rows, cfg, device):
            hidden = model(**batch).last_hidden_state
            pooled[picked] = pool(hidden, batch["attention_mask"], cfg.pooling)
        n_originals = len(rows.seq) - len(rows.original)
        si = inverse_cosine(pooled[torch.from_numpy(rows.original).to(device)], pooled[n_originals:])
    return np.split(si.cpu().numpy(), np.cumsum(rows.spans_per_seq)[:-1])
