"""Selection policy edge cases, and the long-tail cut-off, on hand-made corpus facts."""

from collections import Counter

import numpy as np
import pytest

from preprocessing.select import Corpus, SelectConfig, _quantile_cutoff, important_mask, plot_long_tail

# kg_ids 0-5: 0 frequent with knowledge, 1 long-tail with knowledge, 2 long-tail without knowledge,
# 3 frequent without knowledge, 4 long-tail with knowledge, 5 frequent with knowledge
FREQ = np.array([50, 2, 1, 40, 3, 60])
REL = np.array([7, 8, -1, -1, 9, 7], np.int32)


def _corpus() -> Corpus:
    return Corpus(FREQ, 5, REL, np.array([1, 0, -1, -1, 5, 4], np.int32), {})


def _mask(kg_ids, si, **cfg):
    stats = Counter()
    kg_ids, si = np.array(kg_ids, np.int64), np.array(si, np.float32)
    chosen = important_mask(SelectConfig(**cfg), _corpus(), kg_ids, si, stats)
    return chosen.tolist(), stats


def test_no_entities():
    chosen, stats = _mask([], [])
    assert chosen == [] and stats["selected"] == 0


def test_entity_without_kg_knowledge_is_never_important():
    chosen, stats = _mask([2, 3], [9.0, 8.0], si_top_k=0)
    assert chosen == [False, False] and stats["dropped_no_kg_knowledge"] == 2


def test_top_k_by_si_among_eligible():
    chosen, stats = _mask([0, 1, 2, 4], [1.5, 1.2, 9.0, 1.3], si_top_k=2)
    assert chosen == [True, False, False, True]  # 2 has the top SI but no knowledge
    assert (stats["selected"], stats["dropped_low_si"], stats["dropped_no_kg_knowledge"]) == (2, 1, 1)


def test_threshold_and_policies():
    assert _mask([0, 1, 4], [1.05, 1.5, 1.2], si_top_k=0, si_threshold=1.1)[0] == [False, True, True]
    assert _mask([0, 1, 4, 5], [2, 2, 2, 2], si_top_k=0, policy="long_tail")[0] == [False, True, True, False]
    chosen, stats = _mask([0, 1, 4, 5], [2, 2, 2, 2], si_top_k=0, policy="frequent")
    assert chosen == [True, False, False, True] and stats["dropped_by_frequency_policy"] == 2


def test_all_entities_frequent_under_long_tail_policy_selects_nothing():
    chosen, stats = _mask([0, 5], [3.0, 2.0], policy="long_tail")
    assert chosen == [False, False] and stats["dropped_by_frequency_policy"] == 2


def test_quantile_cutoff_ignores_unseen_entities():
    freq = np.array([0, 0, 1, 1, 2, 3, 10, 100])
    assert _quantile_cutoff(freq, 0.5) == 2  # of the six seen: 1, 1, 2, 3, 10, 100
    assert _quantile_cutoff(np.zeros(3, np.int64), 0.8) == 0


def test_long_tail_plot_is_a_png(tmp_path):
    path = plot_long_tail(np.array([0, 1, 2, 5, 40, 300]), 2, tmp_path / "select" / "long_tail.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(path.parent.glob(".*"))


@pytest.mark.parametrize("policy", ["both", "long_tail", "frequent"])
def test_every_policy_is_a_config_value(policy):
    assert SelectConfig(policy=policy).policy == policy
