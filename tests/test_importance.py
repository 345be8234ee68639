"""SI scoring: the batched result against explicit one-by-one forwards on tiny encoders, inputs, padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_sequences import _bpe_tokenizer

from preprocessing.importance import (
    Rows,
    SIConfig,
    compute_dtype,
    inverse_cosine,
    load_encoder,
    replaced_batches,
    si_scores,
)
from preprocessing.sequences import load_tokenizer

TEXTS = [
    "Albert Einstein was born in Ulm.",
    "Berlin is the capital of Germany and its largest city by population.",
    "Bern.",
    "Nothing to see here.",
]
SPANS = [[(1, 3), (6, 7)], [(1, 2), (6, 7), (2, 5)], [(1, 2)], []]  # token spans, specials included


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and a busy core makes every OpenMP barrier wait
    (measured: 8 ms vs 700 ms for the same test on 2 cores with another process running)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def minilm():
    return load_tokenizer("minilm")


@pytest.fixture(scope="module")
def encoders(minilm):
    """Tiny encoders, built once (the BERT one has MiniLM's 30522-row embedding: about a second)."""
    bpe = _bpe_tokenizer(trim_offsets=True)
    return {"bert": (minilm, _tiny_bert(minilm)), "roberta": (bpe, _tiny_roberta(bpe))}


def _tiny_bert(tokenizer):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.5,  # large weights: attention mixes tokens, so the first token reacts too
    )
    return BertModel(cfg).eval()


def _tiny_roberta(tokenizer):
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    cfg = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=80,  # positions start after the padding index
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.5,  # large weights: attention mixes tokens, so the first token reacts too
        type_vocab_size=1,
    )
    return RobertaModel(cfg).eval()


def _by_hand(ids: list[int], span: tuple[int, int], replacement: str, tokenizer) -> list[int]:
    start, end = span
    if replacement == "drop":
        return ids[:start] + ids[end:]
    token = tokenizer.mask_token_id if replacement == "mask" else tokenizer.unk_token_id
    return ids[:start] + [token] * (end - start) + ids[end:]


def _vector(model, tokenizer, ids: list[int], pooling: str) -> np.ndarray:
    """One unpadded forward, pooled in float64."""
    inputs = {"input_ids": torch.tensor([ids])}
    if "token_type_ids" in tokenizer.model_input_names:
        inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    with torch.inference_mode():
        hidden = model(**inputs).last_hidden_state[0].double().numpy()
    return hidden[0] if pooling == "cls" else hidden.mean(0)


def _expected(model, tokenizer, sequences, spans, replacement, pooling) -> list[np.ndarray]:
    out = []
    for ids, seq_spans in zip(sequences, spans, strict=True):
        h_o = _vector(model, tokenizer, ids, pooling)
        scores = []
        for span in seq_spans:
            h_rep = _vector(model, tokenizer, _by_hand(ids, span, replacement, tokenizer), pooling)
            scores.append(np.linalg.norm(h_o) * np.linalg.norm(h_rep) / (h_o @ h_rep))
        out.append(np.array(scores))
    return out


@pytest.mark.parametrize("replacement", ["mask", "unk", "drop"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_batched_si_equals_one_by_one_forwards(encoders, arch, replacement, pooling):
    tokenizer, model = encoders[arch]
    sequences = [tokenizer(t)["input_ids"] for t in TEXTS]
    cfg = SIConfig(replacement=replacement, pooling=pooling, batch_size=3, device="cpu")
    got = si_scores(model, tokenizer, sequences, SPANS, cfg)
    want = _expected(model, tokenizer, sequences, SPANS, replacement, pooling)
    assert [len(g) for g in got] == [len(s) for s in SPANS]
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=2e-6)
        assert (g >= 1 - 1e-6).all()
    assert not np.allclose(np.concatenate(got), 1)  # the tiny model does react to replacements


def test_replaced_inputs(minilm):
    ids = [[101, 11, 12, 13, 14, 102], [101, 21, 102]]
    spans = [[(1, 3), (4, 5)], [(1, 2)]]
    mask, unk, pad = minilm.mask_token_id, minilm.unk_token_id, minilm.pad_token_id
    expected = {
        "mask": [
            ids[0],
            ids[1],
            [101, mask, mask, 13, 14, 102],
            [101, 11, 12, 13, mask, 102],
            [101, mask, 102],
        ],
        "unk": [ids[0], ids[1], [101, unk, unk, 13, 14, 102], [101, 11, 12, 13, unk, 102], [101, unk, 102]],
        "drop": [ids[0], ids[1], [101, 13, 14, 102], [101, 11, 12, 13, 102], [101, 102]],
    }
    for replacement, rows_expected in expected.items():
        cfg = SIConfig(replacement=replacement, batch_size=2)
        rows = Rows.build(ids, spans, pad, replacement == "drop")
        built = {}
        for picked, batch in replaced_batches(minilm, rows, cfg, torch.device("cpu")):
            assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
            for row, tokens, attention in zip(
                picked, batch["input_ids"], batch["attention_mask"], strict=True
            ):
                n = int(attention.sum())
                assert attention[:n].all() and (tokens[n:] == pad).all()  # right padding only
                built[int(row)] = tokens[:n].tolist()
        # rows: the two originals first, then one per span in order
        assert [built[r] for r in range(len(built))] == rows_expected, replacement


def test_padding_does_not_change_scores(encoders):
    minilm, model = encoders["bert"]
    short = minilm("Bern is in Switzerland.")["input_ids"]
    longer = [minilm(t)["input_ids"] for t in TEXTS[:2]]
    cfg = SIConfig(batch_size=8)
    alone = si_scores(model, minilm, [short], [[(1, 2), (4, 5)]], cfg)[0]
    mixed = si_scores(
        model, minilm, [longer[0], short, longer[1]], [[(1, 3)], [(1, 2), (4, 5)], [(6, 7)]], cfg
    )
    np.testing.assert_allclose(mixed[1], alone, rtol=1e-6)


def test_pooling_changes_the_representation(encoders):
    minilm, model = encoders["bert"]
    sequences = [minilm(t)["input_ids"] for t in TEXTS]
    mean = np.concatenate(si_scores(model, minilm, sequences, SPANS, SIConfig(pooling="mean")))
    cls = np.concatenate(si_scores(model, minilm, sequences, SPANS, SIConfig(pooling="cls")))
    assert not np.allclose(mean, cls)


def test_inverse_cosine_by_hand():
    h_o = torch.tensor([[1.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    h_rep = torch.tensor([[1.0, 1.0], [6.0, 8.0], [-1.0, 0.0]])
    # 1 * sqrt(2) / 1; parallel vectors give 1; an opposite vector is clamped at cosine 1e-6
    np.testing.assert_allclose(inverse_cosine(h_o, h_rep).numpy(), [2**0.5, 1.0, 1e6], rtol=1e-6)


def test_bad_spans_and_empty_input(encoders):
    minilm, model = encoders["bert"]
    with pytest.raises(ValueError, match="inside its sequence"):
        si_scores(model, minilm, [[101, 5, 102]], [[(2, 4)]], SIConfig())
    assert si_scores(model, minilm, [[101, 102]], [[]], SIConfig())[0].shape == (0,)
    assert si_scores(model, minilm, [], [], SIConfig()) == []


def test_bfloat16_autocast_stays_close(encoders):
    minilm, model = encoders["bert"]
    sequences = [minilm(t)["input_ids"] for t in TEXTS]
    full = np.concatenate(si_scores(model, minilm, sequences, SPANS, SIConfig()))
    half = np.concatenate(si_scores(model, minilm, sequences, SPANS, SIConfig(dtype="bfloat16")))
    assert half.dtype == np.float32 and not np.array_equal(full, half)  # autocast really ran
    np.testing.assert_allclose(half - 1, full - 1, rtol=0.1, atol=5e-3)


def test_packaged_encoder():
    tokenizer, model = load_encoder(SIConfig(device="auto"))
    assert compute_dtype(SIConfig(), torch.device("cpu")) == torch.float32
    assert not model.training and model.config.hidden_size == 384
    ids = tokenizer("Albert Einstein developed the theory of relativity in Berlin.")["input_ids"]
    (si,) = si_scores(model, tokenizer, [ids], [[(1, 3), (5, 8), (9, 10)]], SIConfig(batch_size=2))
    assert si.shape == (3,) and (si > 1).all()
