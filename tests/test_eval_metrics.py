"""Scorers against counts worked out by hand."""

from __future__ import annotations

import math

import pytest

from trelm.evaluate import metrics
from trelm.evaluate.aggregate import mean_std


def test_macro_p_at_1_is_the_unweighted_mean_over_relations():
    hits = {"P19": [True, False, False, False], "P36": [True], "P1": []}
    result = metrics.macro_p_at_1(hits)
    assert result["per_relation"] == {"P19": 0.25, "P36": 1.0}  # a relation with no fact has no P@1
    assert result["p_at_1"] == pytest.approx(0.625)  # not the micro 2/5


def test_open_entity_logit_above_zero_micro_counts():
    # labels 0..2; example 1 predicts {0, 2} (gold {0}); example 2 predicts {} (gold {1});
    # example 3 predicts {1, 2} (gold {1, 2}); a logit of exactly 0 is not a prediction
    logits = [[0.3, -1.0, 2.0], [0.0, -0.1, -5.0], [-1.0, 0.01, 4.0]]
    gold = [[0], [1], [1, 2]]
    assert metrics.open_entity_counts(logits, gold) == (3, 4, 4)
    score = metrics.open_entity_score(logits, gold)
    assert score == pytest.approx({"precision": 0.75, "recall": 0.75, "f1": 0.75})


def test_tacred_scorer_ignores_no_relation():
    gold = ["per:title", "per:title", "no_relation", "org:founded", "no_relation", "org:founded"]
    guess = ["per:title", "no_relation", "per:title", "org:founded", "no_relation", "per:title"]
    result = metrics.tacred_score(gold, guess)
    # guessed (non-NA guesses) = 4, gold (non-NA gold) = 4, correct = 2
    assert result["metrics"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    title = result["per_label"]["per:title"]
    assert (title["correct"], title["guessed"], title["gold"]) == (1, 3, 2)
    assert title["precision"] == pytest.approx(1 / 3)


def test_tacred_precision_is_one_when_nothing_is_guessed():
    result = metrics.tacred_score(["per:title", "no_relation"], ["no_relation", "no_relation"])
    assert result["metrics"] == {"precision": 1.0, "recall": 0.0, "f1": 0.0}


def test_glue_metric_functions():
    gold, pred = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    assert metrics.accuracy(gold, pred) == pytest.approx(0.6)
    assert metrics.binary_f1(gold, pred) == pytest.approx(2 / 3)  # P = 2/3, R = 2/3
    # Matthews: tp=2 tn=1 fp=1 fn=1 -> (2*1 - 1*1) / sqrt(3*3*2*2)
    assert metrics.matthews(gold, pred) == pytest.approx(1 / 6)
    corr = metrics.pearson_spearman([1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 16.0])
    assert corr["spearman"] == pytest.approx(1.0)
    assert corr["pearson"] == pytest.approx(0.98438, abs=1e-4)
    assert metrics.pearson_spearman([1.0, 2.0], [3.0, 3.0]) == {"pearson": 0.0, "spearman": 0.0}


def test_mean_and_sample_std_over_seeds():
    means, stds = mean_std([{"f1": 0.7}, {"f1": 0.8}, {"f1": 0.9}])
    assert means["f1"] == pytest.approx(0.8)
    assert stds["f1"] == pytest.approx(0.1)
    assert math.isclose(mean_std([{"f1": 0.5}])[1]["f1"], 0.0)
