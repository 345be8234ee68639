"""TRELM model side: batches (whole-word MLM masking, 80/10/10, entities, CKA targets), Eq. 7 inputs, Eq. 4-6
memory updates through the model, Eq. 8, CKA probabilities for the router, the minilm backbone's tied fresh
head and the Hugging Face export. Tiny BERT / RoBERTa (2 layers, hidden 32) with vocabularies written here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trelm.batch import IGNORE, EntityRows, TokenInfo, make_batch
from trelm.config import ModelConfig
from trelm.memory import window_means
from trelm.model import TrelmModel, load_backbone

WORDPIECE = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "the",
    "cat",
    "sat",
    "on",
    "mat",
    "paris",
    "is",
    "capital",
    "of",
    "france",
    "play",
    "##ing",
    "##s",
    "un",
    "##believ",
    "##able",
    ",",
    ".",
    "a",
    "dog",
]
BPE_PIECES = ["the", "Ġcat", "Ġsat", "Ġon", "Ġthe", "Ġmat", "Ġplay", "ing", "Ġparis"]
KGE_DIM = 6


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    folder = tmp_path_factory.mktemp("bert")
    (folder / "vocab.txt").write_text("\n".join(WORDPIECE) + "\n")
    tok = BertTokenizerFast(str(folder / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(WORDPIECE),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return BertForMaskedLM(config).eval(), tok


@pytest.fixture(scope="module")
def roberta(tmp_path_factory):
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast

    folder = tmp_path_factory.mktemp("roberta")
    vocab, merges = _bpe_vocab(BPE_PIECES)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = RobertaTokenizerFast(str(folder / "vocab.json"), str(folder / "merges.txt"))
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,
        pad_token_id=1,
    )
    return RobertaForMaskedLM(config).eval(), tok


def _bpe_vocab(pieces: list[str]) -> tuple[dict[str, int], list[str]]:
    """Byte-level BPE vocabulary whose merges build each piece left to right (and nothing longer)."""
    tokens = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    merges: list[str] = []
    for piece in pieces:
        tokens += [c for c in piece if c not in tokens]
        for i in range(1, len(piece)):
            merge = f"{piece[:i]} {piece[i]}"
            if merge not in merges:
                merges.append(merge)
                tokens.append(piece[: i + 1]) if piece[: i + 1] not in tokens else None
    return {t: i for i, t in enumerate(tokens)}, merges


def _ids(tok, words: str) -> list[int]:
    return tok(words)["input_ids"]


def _entity(start, end, kg_id, important=False, rel_id=None, tail_ids=None) -> dict:
    return {
        "tok_start": start,
        "tok_end": end,
        "kg_id": kg_id,
        "si": 1.0,
        "freq": 1,
        "important": important,
        "rel_id": rel_id,
        "tail_kg_id": None,
        "tail_ids": tail_ids,
    }


def _rows(tok) -> list[dict]:
    """[CLS] the cat sat on the mat [SEP] / [CLS] paris is capital of france . [SEP] [PAD]..."""
    v = tok.get_vocab()
    first = {
        "input_ids": _ids(tok, "the cat sat on the mat"),
        "entities": [_entity(2, 3, 20, True, 1, [v["mat"], v["dog"]]), _entity(6, 7, 30)],
    }
    second = {
        "input_ids": _ids(tok, "paris is capital of france ."),
        "entities": [
            _entity(1, 2, 10, True, 0, [v["france"]]),
            _entity(5, 6, 40, True, 2, [v["a"]]),
            _entity(1, 2, 10),
        ],
    }
    return [first, second]


def _model(mlm, tok, **overrides) -> tuple[TrelmModel, ModelConfig]:
    cfg = ModelConfig(backbone="unused", window_k=1, cka_negatives=5, max_tail_tokens=3, **overrides)
    vectors = torch.randn(3, KGE_DIM, generator=torch.Generator().manual_seed(5))
    model = TrelmModel(
        cfg, mlm, TokenInfo.from_tokenizer(tok), np.array([10, 20, 30]), vectors, n_relations=3
    )
    return model.eval(), cfg


def _batch(model: TrelmModel, cfg: ModelConfig, tok, seed: int = 0):
    return make_batch(_rows(tok), model.tok_info, cfg, torch.Generator().manual_seed(seed), model.entity_rows)


# ------------------------------------------------------------------ batches and masking


def test_token_info_word_starts_for_wordpiece_and_byte_bpe(bert, roberta):
    info = TokenInfo.from_tokenizer(bert[1])
    assert info.is_word_start[WORDPIECE.index("play")] and not info.is_word_start[WORDPIECE.index("##ing")]
    assert info.mask_id == WORDPIECE.index("[MASK]") and info.pad_id == 0
    vocab = roberta[1].get_vocab()
    assert roberta[1].tokenize("the cat playing") == ["the", "Ġcat", "Ġplay", "ing"]
    bpe = TokenInfo.from_tokenizer(roberta[1])
    assert bpe.is_word_start[vocab["Ġplay"]] and not bpe.is_word_start[vocab["ing"]]
    assert bpe.mask_id == vocab["<mask>"] and bpe.pad_id == vocab["<pad>"]


def _words_of(tok, ids: list[int]) -> list[int]:
    info = TokenInfo.from_tokenizer(tok)
    return list(np.cumsum([info.is_word_start[i] for i in ids]) - 1)


@pytest.mark.parametrize("which", ["bert", "roberta"])
def test_whole_word_masking_masks_whole_words_with_80_10_10(which, bert, roberta):
    tok = {"bert": bert, "roberta": roberta}[which][1]
    text = "the cat unbelievable playing plays paris" if which == "bert" else "the cat playing on the mat"
    ids = _ids(tok, text)
    words = np.array(_words_of(tok, ids[1:-1]))
    assert len(set(words.tolist())) < len(words)  # some word has several pieces
    cfg = ModelConfig()
    batch = make_batch(
        [{"input_ids": ids, "entities": []}] * 3000,
        TokenInfo.from_tokenizer(tok),
        cfg,
        torch.Generator().manual_seed(0),
    )
    chosen = (batch.mlm_labels != IGNORE)[:, 1:-1].numpy()
    assert not (batch.mlm_labels[:, [0, -1]] != IGNORE).any()  # special tokens never predicted
    for word in set(words.tolist()):  # every token of a word is chosen together
        columns = chosen[:, words == word]
        assert (columns.all(1) == columns.any(1)).all()
    word_share = np.mean([chosen[:, words == w][:, 0].mean() for w in set(words.tolist())])
    assert word_share == pytest.approx(0.15, abs=0.01)
    original = torch.tensor(ids).expand(3000, -1)[batch.mlm_labels != IGNORE]
    given = batch.input_ids[batch.mlm_labels != IGNORE]
    masked = (given == tok.mask_token_id).float().mean()
    unchanged = (given == original).float().mean()
    assert masked == pytest.approx(0.8, abs=0.02)
    assert unchanged == pytest.approx(0.1 + 0.1 / len(TokenInfo.from_tokenizer(tok).random_pool()), abs=0.015)
    assert torch.equal(batch.mlm_labels[batch.mlm_labels != IGNORE], original)


def test_batch_entities_targets_and_determinism(bert):
    mlm, tok = bert
    model, cfg = _model(mlm, tok)
    batch = _batch(model, cfg, tok)
    assert batch.input_ids.shape == (2, 8) and batch.attention_mask[0].tolist() == [1] * 8
    assert batch.attention_mask[1].tolist() == [1] * 8  # both rows 8 tokens
    assert batch.ent_row.tolist() == [1, 2, 0, -1, 0]  # kg 40 is not in the bank
    assert batch.ent_important.tolist() == [True, False, True, True, False]
    inject = batch.inject_index
    assert inject[0].tolist() == [-1, -1, 0, -1, -1, -1, -1, -1]
    assert inject[1].tolist() == [-1, 2, -1, -1, -1, -1, -1, -1]  # kg 40 has no row: not injected
    assert not (batch.mlm_labels[inject >= 0] != IGNORE).any()  # injected tokens are not MLM candidates
    v = tok.get_vocab()
    assert batch.cka_entity.tolist() == [0, 2, 3] and batch.cka_rel.tolist() == [1, 0, 2]
    assert batch.cka_tail.tolist() == [[v["mat"], v["dog"], 0], [v["france"], 0, 0], [v["a"], 0, 0]]
    assert batch.cka_tail_mask.sum(1).tolist() == [2, 1, 1]
    again = _batch(model, cfg, tok)
    assert torch.equal(again.input_ids, batch.input_ids) and torch.equal(again.mlm_labels, batch.mlm_labels)
    array_lookup = make_batch(
        _rows(tok),
        model.tok_info,
        cfg,
        torch.Generator().manual_seed(0),
        np.array([-1] * 10 + [0] + [-1] * 9 + [1] + [-1] * 9 + [2]),
    )
    assert torch.equal(array_lookup.ent_row, batch.ent_row)


def test_without_injection_entity_tokens_are_mlm_candidates(bert):
    mlm, tok = bert
    cfg = ModelConfig(inject_knowledge=False, memory_bank=False, mlm_probability=0.5)
    rows = _rows(tok) * 200
    batch = make_batch(
        rows,
        TokenInfo.from_tokenizer(tok),
        cfg,
        torch.Generator().manual_seed(1),
        EntityRows(np.array([10, 20, 30])),
    )
    assert (batch.inject_index < 0).all()
    assert (batch.mlm_labels[0::2, 2] != IGNORE).any()


def test_entity_rows_lookup():
    rows = EntityRows(np.array([2, 5, 11]))
    assert rows([11, 2, 3, 12]).tolist() == [2, 0, -1, -1]
    with pytest.raises(ValueError):
        EntityRows(np.array([3, 1]))


# ------------------------------------------------------------------ Eq. 7 and Eq. 8


def _captured_inputs(model: TrelmModel, batch, lam: float) -> torch.Tensor:
    captured = {}

    def hook(module, args, kwargs):
        captured["embeds"] = kwargs["inputs_embeds"].detach().clone()

    handle = model.mlm.base_model.embeddings.register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        model(batch, lam)
    handle.remove()
    return captured["embeds"]


def test_eq7_mixes_knowledge_and_memory_at_entity_tokens_only(bert):
    mlm, tok = bert
    model, cfg = _model(mlm, tok)
    local, global_ = torch.randn(3, 32), torch.randn(3, 32)
    model.memory.load_state_dict(
        {
            "kg_ids": torch.tensor([10, 20, 30]),
            "local": local,
            "global": global_,
            "count": torch.ones(3, dtype=torch.long),
            "initialized": torch.ones(3, dtype=torch.bool),
        }
    )
    batch = _batch(model, cfg, tok)
    lam = 0.3
    embeds = _captured_inputs(model, batch, lam)
    with torch.no_grad():
        words = mlm.get_input_embeddings()(batch.input_ids)
        h_e = model.knowledge_proj(model.entity_vectors)  # [row, H]
    for b, t, row in [(0, 2, 1), (1, 1, 0)]:
        expected = (1 - lam) * h_e[row] + lam / 2 * (local[row] + global_[row])
        assert torch.allclose(embeds[b, t], expected, atol=1e-6)
    others = batch.inject_index < 0
    assert torch.equal(embeds[others], words[others])


def test_eq7_ablations(bert):
    mlm, tok = bert
    model, cfg = _model(mlm, tok, memory_bank=False)
    batch = _batch(model, cfg, tok)
    with torch.no_grad():
        h_e = model.knowledge_proj(model.entity_vectors)
        words = mlm.get_input_embeddings()(batch.input_ids)
    embeds = _captured_inputs(model, batch, 0.5)  # lambda is 0 without the bank: I_p = h_e
    assert torch.allclose(embeds[0, 2], h_e[1]) and torch.equal(embeds[0, 3], words[0, 3])
    model, cfg = _model(mlm, tok, inject_knowledge=False)
    model.memory.load_state_dict(
        {
            "kg_ids": torch.tensor([10, 20, 30]),
            "local": torch.ones(3, 32),
            "global": torch.zeros(3, 32),
            "count": torch.ones(3, dtype=torch.long),
            "initialized": torch.ones(3, dtype=torch.bool),
        }
    )
    embeds = _captured_inputs(model, batch, 0.5)  # h_e replaced by E_p
    assert torch.allclose(embeds[0, 2], 0.5 * words[0, 2] + 0.25 * torch.ones(32))


def test_lambda_decays_by_beta_per_epoch():
    cfg = ModelConfig(lambda_init=0.5, beta=2.0)
    assert [cfg.lambda_at(q) for q in range(3)] == [0.5, 0.25, 0.125]
    assert ModelConfig(memory_bank=False).lambda_at(0) == 0.0


@pytest.mark.parametrize("which", ["bert", "roberta"])
def test_inputs_embeds_path_matches_the_backbone_on_input_ids(which, bert, roberta):
    mlm, tok = {"bert": bert, "roberta": roberta}[which]
    model, cfg = _model(mlm, tok, inject_knowledge=False, memory_bank=False)
    rows = [
        {"input_ids": _ids(tok, "the cat sat on the mat"), "entities": []},
        {"input_ids": _ids(tok, "the cat"), "entities": []},
    ]  # padded: positions must still line up
    batch = make_batch(rows, model.tok_info, cfg, torch.Generator().manual_seed(0), None)
    with torch.no_grad():
        ours = model(batch, 0.0).last_hidden
        reference = mlm.base_model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask
        ).last_hidden_state
    real = batch.attention_mask.bool()
    assert torch.allclose(ours[real], reference[real], atol=1e-5)


# ------------------------------------------------------------------ memory updates through the model


def test_update_memory_from_the_forward_pass(bert):
    mlm, tok = bert
    model, cfg = _model(mlm, tok)
    batch = _batch(model, cfg, tok)
    out = model(batch, 0.5)
    model.update_memory(batch, out)
    hidden = out.last_hidden.detach()
    with torch.no_grad():
        words = mlm.get_input_embeddings()(batch.original_ids)
    gamma = cfg.gamma
    cat = (1 - gamma) * words[0, 2] + gamma * hidden[0, 1:4].mean(0)  # window k=1 around [2, 3)
    mat = (1 - gamma) * words[0, 6] + gamma * hidden[0, 5:8].mean(0)
    paris_window = window_means(
        hidden, batch.attention_mask, torch.tensor([1]), torch.tensor([1]), torch.tensor([2]), 1
    )[0]
    paris = (1 - gamma) ** 2 * words[1, 1] + gamma * (1 - gamma) * paris_window + gamma * paris_window
    memory = model.memory
    for row, expected in [(1, cat), (2, mat), (0, paris)]:
        assert torch.allclose(memory.local[row], expected, atol=1e-5)
    assert torch.allclose(memory.global_[1], hidden[0, 0]) and torch.allclose(memory.global_[0], hidden[1, 0])
    assert memory.count.tolist() == [1, 1, 1]  # paris twice in one sequence: one context


# ------------------------------------------------------------------ CKA for the loss and the router


def test_cka_probability_repeats_the_batch_and_matches_the_loss(bert):
    mlm, tok = bert
    model, cfg = _model(mlm, tok)
    batch = _batch(model, cfg, tok)
    negatives = model.sample_negatives(batch, torch.Generator().manual_seed(0))
    assert negatives.shape == (4, 5)
    with torch.no_grad():
        out = model(batch, 0.5, negatives)
    probability = model.cka_probability(batch, 0.5, negatives, repeat=3)
    assert probability.shape == (3, 4)
    assert torch.allclose(probability[0], probability[2], atol=1e-6)
    assert float(-probability[0].detach().log().mean()) == pytest.approx(float(out.cka_loss), rel=1e-5)
    assert float(out.loss) == pytest.approx(0.5 * float(out.mlm_loss) + 0.5 * float(out.cka_loss), rel=1e-6)
    probability.sum().backward()  # the router differentiates through it
    assert model.cka_dense.weight.grad is not None


def test_without_cka_the_loss_is_mlm(bert):
    mlm, tok = bert
    model, cfg = _model(mlm, tok, cka=False)
    with torch.no_grad():
        out = model(_batch(model, cfg, tok), 0.5)
    assert float(out.loss) == float(out.mlm_loss) and float(out.cka_loss) == 0.0
    assert not any(name.startswith("cka") for name in model.new_parameter_names())


def test_head_span_mask_and_ffn_modules(bert):
    mlm, tok = bert
    model, cfg = _model(mlm, tok)
    mask = model.head_span_mask(_batch(model, cfg, tok))
    assert mask.nonzero().tolist() == [[0, 2], [1, 1], [1, 5]]
    assert len(model.ffn_intermediate_modules()) == 2
    assert all(hasattr(m, "dense") and m.dense.out_features == 64 for m in model.ffn_intermediate_modules())
    assert all(m.dense.in_features == 64 for m in model.ffn_output_modules())


# ------------------------------------------------------------------ backbones and export


def test_minilm_backbone_has_a_fresh_head_tied_to_the_word_embeddings():
    mlm, tok = load_backbone(ModelConfig())
    assert mlm.get_output_embeddings().weight is mlm.get_input_embeddings().weight
    model = TrelmModel(ModelConfig(), mlm, TokenInfo.from_tokenizer(tok), np.array([1]), torch.zeros(1, 4), 2)
    new = set(model.new_parameter_names())
    assert "mlm.cls.predictions.transform.dense.weight" in new and "knowledge_proj.weight" in new
    assert not any(name.startswith("mlm.bert.") for name in new)


@pytest.mark.parametrize("which", ["bert", "roberta"])
def test_hf_export_loads_with_auto_model_and_gives_the_same_logits(which, bert, roberta, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    mlm, tok = {"bert": bert, "roberta": roberta}[which]
    model, _ = _model(mlm, tok)
    model.export_hf(tmp_path, tok)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([_ids(AutoTokenizer.from_pretrained(tmp_path), "the cat sat on the mat")])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, mlm(input_ids=ids).logits, atol=1e-5)


def test_a_batch_without_entities_trains_and_leaves_the_bank_alone(bert):
    mlm, tok = bert
    model, cfg = _model(mlm, tok)
    rows = [{"input_ids": _ids(tok, "the cat sat on the mat"), "entities": None}]
    batch = make_batch(rows, model.tok_info, cfg, torch.Generator().manual_seed(0), model.entity_rows)
    out = model(batch, 0.5)
    out.loss.backward()
    model.update_memory(batch, out)
    assert float(out.cka_loss.detach()) == 0.0 and not model.memory.initialized.any()


def test_attribution_batch_keeps_the_sequences_of_the_first_targets(bert):
    """The second sequence alone gives its targets the probabilities they have in the whole batch."""
    mlm, tok = bert
    model, cfg = _model(mlm, tok, in_batch_negatives=False)  # in-batch negatives depend on the batch
    batch = _batch(model, cfg, tok)
    full_negatives = model.sample_negatives(batch, torch.Generator().manual_seed(0))
    assert model.attribution_batch(batch, 3) is batch  # targets 0-2 span both sequences
    first = model.attribution_batch(batch, 1)
    assert first.input_ids.shape[0] == 1 and len(first.cka_entity) == 1
    batch.cka_entity, batch.cka_rel = batch.cka_entity.flip(0), batch.cka_rel.flip(0)
    batch.cka_tail, batch.cka_tail_mask = batch.cka_tail.flip(0), batch.cka_tail_mask.flip(0)
    second = model.attribution_batch(batch, 1)  # now the first target is in the second sequence
    assert torch.equal(second.input_ids[0], batch.input_ids[1]) and len(second.cka_entity) == 2
    assert int(second.ent_batch.max()) == 0 and int((second.inject_index >= 0).sum()) > 0
    with torch.no_grad():
        whole = model.cka_probability(batch, 0.5, full_negatives.roll(-2, 0), 1)[0]
        alone = model.cka_probability(second, 0.5, full_negatives.roll(-2, 0)[:2], 1)[0]
    assert torch.allclose(alone, whole[:2], atol=1e-6)
