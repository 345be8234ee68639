"""Issue 12's model side: the plain-token view of CKA (the `trelm_plain_cka` extension), the CKA decoder's
candidate scores (the diagnostic), and re-scoring exported models from facts.jsonl."""

from __future__ import annotations

import json

import torch

from tests.test_trelm_model import _batch, _model, bert  # noqa: F401  (bert: a fixture)
from trelm.config import PretrainConfig
from trelm.evaluate.candidates import largest_difference, rescore, score_export


def _head_token_grad(model, cfg, tok) -> torch.Tensor:
    """|d CKA / d word embedding| summed over the tokens Eq. 7 replaces (the injected heads' own tokens)."""
    batch = _batch(model, cfg, tok)
    model.zero_grad()
    model(batch, lam=0.0).cka_loss.backward()
    grad = model.mlm.get_input_embeddings().weight.grad
    heads = batch.original_ids[batch.inject_index >= 0].unique()
    assert len(heads) and not torch.isin(batch.input_ids[batch.inject_index < 0], heads).any()
    return grad[heads].abs().sum()


def test_plain_view_cka_reaches_the_head_entitys_own_tokens(bert):  # noqa: F811
    mlm, tok = bert
    # the output decoder is tied to the input embeddings: untie it, so the gradient measured is the input's
    mlm.config.tie_word_embeddings = False
    decoder = mlm.cls.predictions.decoder
    decoder.weight = torch.nn.Parameter(decoder.weight.detach().clone())
    paper, cfg = _model(mlm, tok, memory_bank=False)
    assert _head_token_grad(paper, cfg, tok) == 0  # Eq. 7 replaced those tokens by h_e
    for view in ("span", "cloze"):
        extension, cfg = _model(mlm, tok, memory_bank=False, cka_plain_view=view)
        extension.set_relation_tokens(RELATION_TOKENS(tok))
        assert _head_token_grad(extension, cfg, tok) > 0


def test_plain_view_changes_only_the_cka_loss(bert):  # noqa: F811
    mlm, tok = bert
    torch.manual_seed(0)
    paper, cfg = _model(mlm, tok)
    batch = _batch(paper, cfg, tok)
    negatives = paper.sample_negatives(batch, torch.Generator().manual_seed(1))
    a = paper(batch, 0.3, negatives)
    paper.set_relation_tokens(RELATION_TOKENS(tok))
    for view in ("span", "cloze"):
        paper.cfg = paper.cfg.model_copy(update={"cka_plain_view": view})
        b = paper(batch, 0.3, negatives)
        assert torch.equal(a.mlm_loss, b.mlm_loss) and not torch.equal(a.cka_loss, b.cka_loss)


def RELATION_TOKENS(tok) -> list[list[int]]:  # noqa: N802
    """Labels of the three relations of test_trelm_model's rows, as token ids."""
    v = tok.get_vocab()
    return [[v["capital"], v["of"]], [v["on"]], [v["is"], v["a"]]]


def test_cloze_inputs_are_head_tokens_relation_tokens_and_masks(bert):  # noqa: F811
    mlm, tok = bert
    model, cfg = _model(mlm, tok, memory_bank=False, cka_plain_view="cloze")
    model.set_relation_tokens(RELATION_TOKENS(tok))
    batch = _batch(model, cfg, tok)
    ids, labels = model._cloze_inputs(batch)
    v = tok.get_vocab()
    # the first target of the rows: "cat" (kg 20), relation 1 ("on"), tail "mat dog"
    row = [t for t in ids[0].tolist() if t != v["[PAD]"]]
    assert row == [v["[CLS]"], v["cat"], v["on"], v["[MASK]"], v["[MASK]"], v["[SEP]"]]
    assert labels[0][labels[0] != -100].tolist() == [v["mat"], v["dog"]]
    assert (labels != -100).sum() == batch.cka_tail_mask.sum()  # every tail token predicted once


def test_candidate_scores_match_the_cka_logits_of_the_first_tail_token(bert):  # noqa: F811
    mlm, tok = bert
    model, cfg = _model(mlm, tok, memory_bank=False)
    batch = _batch(model, cfg, tok)
    candidates = torch.tensor(sorted({int(t) for t in batch.cka_tail[:, 0]}))
    scores = model.cka_candidate_scores(batch, 0.0, candidates)
    with torch.no_grad():
        query = model._cka_queries(batch, model._encode(batch, 0.0))
    first = batch.cka_tail_mask.cumsum(1)[batch.cka_tail_mask] == 1  # the queries of tail position 0
    out = model.mlm.get_output_embeddings()
    expected = query[first] @ out.weight[candidates].T + out.bias[candidates]
    assert torch.allclose(scores, expected, atol=1e-5)
    assert not torch.allclose(scores, model.cka_candidate_scores(batch.plain(), 0.0, candidates))


def test_the_extension_is_a_variant_with_its_own_switch():
    eff = PretrainConfig(variant="trelm_plain_cka").effective()
    assert eff.model.cka_plain_view == "cloze" and eff.routing.enabled and eff.model.inject_knowledge
    assert PretrainConfig(variant="trelm").effective().model.cka_plain_view == "off"
    span = PretrainConfig(variant="trelm_plain_cka", model={"cka_plain_view": "span"}).effective()
    assert span.model.cka_plain_view == "span"


def test_rescoring_the_exports_reproduces_the_results(bert, tmp_path):  # noqa: F811
    mlm, tok = bert
    facts = [
        {"subject": s, "relation": "P1", "template": "[X] is capital of [Y] .", "object": o, "split": sp,
         "long_tail": lt, "candidates": ["france", "paris", "cat"], "shuffled_subject": "the dog"}
        for s, o, sp, lt in [("the cat", "france", "seen", True), ("a dog", "paris", "held_out", False),
                             ("the mat", "cat", "seen", False), ("paris", "france", "held_out", True)]
    ]  # fmt: skip
    (tmp_path / "facts.jsonl").write_text("".join(json.dumps(f) + "\n" for f in facts))
    results = {"variants": {}}
    for seed in (0, 1):
        torch.manual_seed(seed)
        for p in mlm.parameters():
            p.data.normal_(0, 0.5)
        folder = tmp_path / "checkpoints" / f"mlm_only-seed{seed}"
        mlm.save_pretrained(folder)
        tok.save_pretrained(folder)
        seeds = results["variants"].setdefault("mlm_only", {"seeds": {}})["seeds"]
        seeds[str(seed)] = score_export(folder, facts)
    again = rescore(tmp_path)
    assert largest_difference(results, again) < 1e-6
    assert again["variants"]["mlm_only"]["seeds"]["0"] != again["variants"]["mlm_only"]["seeds"]["1"]
    results["variants"]["mlm_only"]["seeds"]["0"]["shuffled"]["mrr"] += 0.05  # a tampered figure is caught
    assert largest_difference(results, again) > 0.02


def _cloze_model(mlm, tok):
    model, cfg = _model(mlm, tok, memory_bank=False, cka_plain_view="cloze")
    model.set_relation_tokens(RELATION_TOKENS(tok))
    return model, _batch(model, cfg, tok)


def test_the_cloze_attribution_target_is_what_the_cloze_view_trains(bert):  # noqa: F811
    model, batch = _cloze_model(*bert)
    probability = model.cloze_probability(batch, repeat=2)
    assert probability.shape == (2, int(batch.cka_tail_mask.sum())) and torch.equal(*probability)
    negatives = model.sample_negatives(batch, torch.Generator().manual_seed(1))
    # the cloze loss is the mean -log P over the tail tokens: routing attributes the probability it raises
    torch.testing.assert_close(-probability[0].log().mean(), model._plain_view_loss(batch, negatives))
    ids, _ = model._cloze_inputs(batch)
    v = bert[1].get_vocab()
    scaled = ids[model.cloze_prompt_mask(batch)].tolist()  # head, relation and mask tokens, nothing else
    assert v["[CLS]"] not in scaled and v["[SEP]"] not in scaled and v["[PAD]"] not in scaled
    assert scaled.count(v["[MASK]"]) == int(batch.cka_tail_mask.sum())


def test_routing_on_the_cloze_answer_scores_every_layer(bert):  # noqa: F811
    from trelm.config import RoutingConfig
    from trelm.routing import Router

    model, batch = _cloze_model(*bert)

    def scores(**cfg):
        return Router(model, RoutingConfig(steps=8, **cfg), seed=0).attribute(batch, 0.0)

    cka, cloze, first_order = (
        scores(),
        scores(attribution_target="cloze"),
        scores(attribution_target="cloze", mode="first_order"),
    )
    top = 7  # about the default top 10% of the 64 neurons
    for layer in range(len(cka)):
        # the last layer too: the masks, where the cloze P is read, are among the scaled positions
        assert cloze[layer].abs().max() > 0 and not torch.allclose(cloze[layer], cka[layer])
        ig_top, fo_top = (set(s.topk(top).indices.tolist()) for s in (cloze[layer], first_order[layer]))
        assert len(ig_top & fo_top) >= top // 2  # first order: a loose approximation of IG's ranking
