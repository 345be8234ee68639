"""Fine-tuning an encoder checkpoint on a classification task (entity typing, relation extraction, GLUE).

The model is the checkpoint's encoder (AutoModel: an MLM head, if any, is not used) with dropout and a
linear layer over the concatenated hidden states at the example's marker positions: the mention's
opening marker (entity typing), the subject's and the object's opening markers (relation extraction),
or the first token (GLUE, `markers=()`). Markers are plain punctuation that every vocabulary has
(`@`, `#`), so no embedding is added. AdamW with linear warm-up and decay; one seed fixes the head's
initialisation, dropout and the shuffling order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from trelm.evaluate.config import FinetuneConfig

MULTI_LABEL, SINGLE_LABEL, REGRESSION = "multi_label", "single_label", "regression"


@dataclass
class Example:
    text: str
    text_pair: str | None = None
    markers: tuple[int, ...] = ()  # char offsets in `text` of the tokens that represent the example
    label: object = None  # list[int] (multi-label), int (single label) or float (regression)


class MarkerClassifier(nn.Module):
    def __init__(self, encoder, num_markers: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size * max(num_markers, 1), num_labels)

    def forward(self, batch: dict, positions: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(**batch).last_hidden_state  # (batch, seq, hidden)
        rows = torch.arange(hidden.size(0), device=hidden.device).unsqueeze(1)
        picked = hidden[rows, positions]  # (batch, markers, hidden)
        return self.head(self.dropout(picked.flatten(1)))


def encode(tokenizer, examples: Sequence[Example], max_len: int, device: str) -> tuple[dict, torch.Tensor]:
    """Padded token batch and, per example, the token index of each marker (0 when truncated away)."""
    pairs = [e.text_pair for e in examples] if examples[0].text_pair is not None else None
    enc = tokenizer(
        [e.text for e in examples],
        pairs,
        truncation=True,
        max_length=max_len,
        padding=True,
        return_tensors="pt",
    )
    positions = [[_token_at(enc, i, char) for char in e.markers] or [0] for i, e in enumerate(examples)]
    return {k: v.to(device) for k, v in enc.items()}, torch.tensor(positions, device=device)


def _token_at(enc, index: int, char: int) -> int:
    token = enc.char_to_token(index, char, sequence_index=0)
    return 0 if token is None else token


def _loss(kind: str, logits: torch.Tensor, labels: Sequence, device: str) -> torch.Tensor:
    if kind == MULTI_LABEL:
        target = torch.zeros_like(logits)
        for row, gold in enumerate(labels):
            target[row, list(gold)] = 1.0
        return nn.functional.binary_cross_entropy_with_logits(logits, target)
    if kind == REGRESSION:
        return nn.functional.mse_loss(
            logits.squeeze(-1), torch.tensor(labels, device=device, dtype=torch.float)
        )
    return nn.functional.cross_entropy(logits, torch.tensor(labels, device=device))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def build_model(checkpoint: str, num_markers: int, num_labels: int, device: str) -> MarkerClassifier:
    from transformers import AutoModel

    from trelm.evaluate.models import quiet_loading

    with quiet_loading():  # an MLM checkpoint's head is left out on purpose
        encoder = AutoModel.from_pretrained(checkpoint, add_pooling_layer=False)
    return MarkerClassifier(encoder, num_markers, num_labels).to(device)


def _batches(examples: Sequence[Example], size: int, shuffle: bool) -> list[list[Example]]:
    order = list(range(len(examples)))
    if shuffle:
        random.shuffle(order)
    return [[examples[i] for i in order[s : s + size]] for s in range(0, len(order), size)]


def train(
    model: MarkerClassifier,
    tokenizer,
    examples: Sequence[Example],
    kind: str,
    cfg: FinetuneConfig,
    device: str,
) -> list[float]:
    """Fine-tune in place; returns the mean training loss of each epoch."""
    from transformers import get_linear_schedule_with_warmup

    steps = cfg.epochs * -(-len(examples) // cfg.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup * steps), steps)
    epoch_losses = []
    model.train()
    for _ in range(cfg.epochs):
        losses = []
        for batch in _batches(examples, cfg.batch_size, shuffle=True):
            inputs, positions = encode(tokenizer, batch, cfg.max_len, device)
            loss = _loss(kind, model(inputs, positions), [e.label for e in batch], device)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        epoch_losses.append(sum(losses) / len(losses))
    return epoch_losses


def predict(
    model: MarkerClassifier, tokenizer, examples: Sequence[Example], cfg: FinetuneConfig, device: str
):
    """Logits per example (list of lists), in order."""
    model.eval()
    out: list[list[float]] = []
    with torch.inference_mode():
        for batch in _batches(examples, cfg.batch_size * 2, shuffle=False):
            inputs, positions = encode(tokenizer, batch, cfg.max_len, device)
            out += model(inputs, positions).float().cpu().tolist()
    return out


def finetune_seeds(
    checkpoint: str,
    train_set: Sequence[Example],
    eval_sets: dict[str, Sequence[Example]],
    *,
    kind: str,
    num_labels: int,
    score,
    cfg: FinetuneConfig,
    seeds: Sequence[int],
    device: str,
) -> list[dict]:
    """One fine-tuning per seed; `score(split, logits, examples) -> {metrics, per_label?}` per eval split.

    Returns per seed: {seed, losses, splits: {split: score}}.
    """
    from trelm.evaluate.models import load_tokenizer

    tokenizer = load_tokenizer(checkpoint)
    num_markers = len(train_set[0].markers)
    runs = []
    for seed in seeds:
        seed_everything(seed)
        model = build_model(checkpoint, num_markers, num_labels, device)
        losses = train(model, tokenizer, train_set, kind, cfg, device)
        splits = {
            name: score(name, predict(model, tokenizer, examples, cfg, device), examples)
            for name, examples in eval_sets.items()
        }
        runs.append({"seed": seed, "losses": losses, "splits": splits})
        del model
    return runs
