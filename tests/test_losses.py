"""CKA sampled softmax (Eq. 2) against an explicit logsumexp, the unigram sampler, MLM loss and Eq. 3."""

from __future__ import annotations

import math

import pytest
import torch

from trelm.losses import (
    UnigramSampler,
    cka_log_probability,
    cka_logits,
    cka_loss,
    mlm_loss,
    sample_negatives,
    total_loss,
)


def _reference_loss(query, positives, negatives, weight, bias, in_batch: bool) -> float:
    """-log softmax of the positive over [positive, negatives != positive, other positives != positive]."""
    losses = []
    for n in range(len(query)):
        y = int(positives[n])

        def score(token: int, n: int = n) -> float:
            return float(query[n] @ weight[token] + bias[token])

        scores = [score(y)] + [score(int(t)) for t in negatives[n] if int(t) != y]
        if in_batch:
            scores += [
                score(int(positives[m])) for m in range(len(query)) if m != n and int(positives[m]) != y
            ]
        log_z = math.log(sum(math.exp(s) for s in scores))
        losses.append(-(scores[0] - log_z))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("in_batch", [True, False])
def test_cka_loss_matches_explicit_logsumexp_without_accidental_hits(in_batch):
    g = torch.Generator().manual_seed(0)
    vocab, hidden, n, k = 12, 5, 6, 4
    weight, bias = torch.randn(vocab, hidden, generator=g), torch.randn(vocab, generator=g)
    query = torch.randn(n, hidden, generator=g)
    positives = torch.tensor([1, 2, 3, 1, 5, 2])  # repeated targets: in-batch accidental hits
    negatives = torch.randint(0, vocab, (n, k), generator=g)
    negatives[0, 0] = negatives[0, 2] = 1  # sampled accidental hits of token 0's target
    negatives[4, 3] = 5
    logits = cka_logits(query, positives, negatives, weight, bias, in_batch)
    expected = _reference_loss(query, positives, negatives, weight, bias, in_batch)
    assert float(cka_loss(logits)) == pytest.approx(expected, rel=1e-5)
    assert logits.shape == (n, 1 + k + (n if in_batch else 0))


def test_cka_groups_keep_in_batch_negatives_inside_each_copy():
    g = torch.Generator().manual_seed(1)
    weight, bias = torch.randn(9, 4, generator=g), torch.randn(9, generator=g)
    query = torch.randn(3, 4, generator=g)
    positives, negatives = torch.tensor([1, 4, 6]), torch.randint(0, 9, (3, 2), generator=g)
    alone = cka_log_probability(cka_logits(query, positives, negatives, weight, bias, True))
    doubled = cka_logits(
        query.repeat(2, 1),
        positives.repeat(2),
        negatives.repeat(2, 1),
        weight,
        bias,
        True,
        groups=torch.tensor([0, 0, 0, 1, 1, 1]),
    )
    assert torch.allclose(cka_log_probability(doubled), alone.repeat(2), atol=1e-6)


def test_cka_loss_without_targets_is_zero_and_differentiable():
    query = torch.zeros(0, 4, requires_grad=True)
    logits = cka_logits(
        query,
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, 3, dtype=torch.long),
        torch.randn(7, 4),
        torch.zeros(7),
        True,
    )
    loss = cka_loss(logits)
    loss.backward()
    assert float(loss.detach()) == 0.0


def test_unigram_sampler_follows_count_power_and_skips_unseen_tokens():
    counts = torch.tensor([0.0, 1.0, 16.0, 81.0])  # ** 0.75 -> 0, 1, 8, 27
    sampler = UnigramSampler(counts, 0.75, torch.Generator().manual_seed(0))
    draws = sample_negatives(sampler, 4000, 25)
    assert draws.shape == (4000, 25)
    share = torch.bincount(draws.flatten(), minlength=4).double() / draws.numel()
    assert share[0] == 0
    assert torch.allclose(share[1:], torch.tensor([1, 8, 27]).double() / 36, atol=0.005)


def test_unigram_sampler_is_deterministic_given_the_generator():
    counts = torch.arange(10.0)
    first = UnigramSampler(counts, 0.75, torch.Generator().manual_seed(3)).sample((5, 4))
    again = UnigramSampler(counts, 0.75, torch.Generator()).sample((5, 4), torch.Generator().manual_seed(3))
    assert torch.equal(first, again)


def test_mlm_loss_averages_over_predicted_tokens_only():
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[4, -100, 0], [-100, -100, 2]])
    expected = (
        -(
            torch.log_softmax(logits[0, 0], -1)[4]
            + torch.log_softmax(logits[0, 2], -1)[0]
            + torch.log_softmax(logits[1, 2], -1)[2]
        )
        / 3
    )
    assert float(mlm_loss(logits, labels)) == pytest.approx(float(expected), rel=1e-6)
    nothing = mlm_loss(logits.requires_grad_(), torch.full((2, 3), -100))
    nothing.backward()
    assert float(nothing.detach()) == 0.0


def test_total_loss_is_eq3():
    assert float(total_loss(torch.tensor(2.0), torch.tensor(4.0), 0.25)) == pytest.approx(0.25 * 2 + 0.75 * 4)
