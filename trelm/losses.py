"""TRELM's losses (paper section 3.1, Eq. 2-3) as pure functions of tensors.

- MLM: token cross-entropy over the predicted positions (labels -100 elsewhere); a batch with nothing to
  predict gives a zero that still carries the graph.
- CKA, token level (Eq. 2): for the query h_d^i of the i-th tail token and its ground truth y,
  L = -log exp(f(h, y)) / (exp(f(h, y)) + sum_{y'} exp(f(h, y'))) with f(h, y) = h . W[y] + b[y] (the
  model passes its tied output embedding and bias). The negatives y' are K draws from the unigram
  distribution Q(y) ~ count(y)^power (with replacement), plus, with `in_batch`, the ground truths of the
  batch's other tail tokens. A negative equal to y ("accidental hit") is dropped (its score set to -inf), as
  sampled softmax does; the paper's Q(y_i) is not otherwise specified.
- Eq. 3: total = theta * L_MLM + (1 - theta) * L_CKA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trelm.batch import IGNORE


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labels != -100; logits [..., V], labels [...]."""
    logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    if not bool((labels != IGNORE).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE)


class UnigramSampler:
    """Q(y) proportional to counts[y] ** power (ids with count 0 are never drawn)."""

    def __init__(self, counts: torch.Tensor, power: float, generator: torch.Generator):
        weights = counts.double().clamp(min=0) ** power
        weights[counts <= 0] = 0.0
        if not bool((weights > 0).any()):
            raise ValueError("unigram counts are all zero")
        self.probs = (weights / weights.sum()).float()
        self.generator = generator

    def new_generator(self, seed: int) -> torch.Generator:
        """A seeded generator on the device of the probabilities, where `torch.multinomial` needs it
        (the probabilities stay in host memory when the model moves to a GPU)."""
        return torch.Generator(device=self.probs.device).manual_seed(seed)

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws of the given shape (CPU), from `generator` or else the sampler's own."""
        n = int(torch.Size(shape).numel())
        if n == 0:
            return torch.zeros(shape, dtype=torch.long)
        draws = torch.multinomial(self.probs, n, replacement=True, generator=generator or self.generator)
        return draws.view(shape)


def sample_negatives(
    sampler: UnigramSampler, n_tokens: int, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[n_tokens, k] negatives y' ~ Q for each tail token (CPU; move them to the model's device)."""
    return sampler.sample((n_tokens, k), generator)


def cka_logits(
    query: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    out_weight: torch.Tensor,
    out_bias: torch.Tensor | None,
    in_batch: bool,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """[N, 1 + K (+ N)] scores f(h, .) of the positive (column 0) and the negatives, -inf at accidental hits
    (and at a token's own column among the in-batch negatives). `groups` [N]: in-batch negatives come only
    from tokens of the same group (copies of one batch stay independent)."""

    def score(ids: torch.Tensor) -> torch.Tensor:
        bias = out_bias[ids] if out_bias is not None else 0.0
        return torch.einsum("nh,n...h->n...", query, out_weight[ids]) + bias

    positive = score(positives).unsqueeze(1)
    sampled = score(negatives).masked_fill(negatives == positives.unsqueeze(1), float("-inf"))
    columns = [positive, sampled]
    if in_batch:
        others = query @ out_weight[positives].T
        others = others + (out_bias[positives] if out_bias is not None else 0.0)
        hit = positives.unsqueeze(1) == positives.unsqueeze(0)  # also the diagonal: a token's own target
        if groups is not None:
            hit = hit | (groups.unsqueeze(1) != groups.unsqueeze(0))
        columns.append(others.masked_fill(hit, float("-inf")))
    return torch.cat(columns, 1)


def cka_log_probability(logits: torch.Tensor) -> torch.Tensor:
    """[N]: log of the sampled-softmax probability of the positive (column 0)."""
    return logits[:, 0] - torch.logsumexp(logits, 1)


def cka_loss(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 2 averaged over the tail tokens (zero with the graph when there are none)."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return -cka_log_probability(logits.float()).mean()


def total_loss(mlm: torch.Tensor, cka: torch.Tensor, theta: float) -> torch.Tensor:
    """Eq. 3."""
    return theta * mlm + (1 - theta) * cka
