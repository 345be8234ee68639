"""What the `enwiki` preset meets and the sample does not: byte-level BPE (RoBERTa), Wikidata5M's hub tails
and id magnitudes, a model on another device than its sampler. Each test failed on the code before its fix."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from production_fixtures import FILLER_QID_BASE, HUB_TAILS

from preprocessing.kg import KGConfig, load_kg
from preprocessing.select import SEQUENCES_PER_PAGE, _tail_tokens, best_triples, sequence_id
from preprocessing.sequences import load_tokenizer, page_sequences
from storage.schemas import KG_ENTITIES, KG_TRIPLES
from storage.shards import part_paths
from storage.tokens import in_text_id, in_text_ids


@pytest.fixture(scope="module")
def hub_run(hub_kg_small, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("hub-run")
    load_kg(KGConfig(path=hub_kg_small, duckdb_memory_limit="1GB"), run_dir, progress=False)
    return run_dir


def _rows(run_dir: Path, dataset, sql: str) -> list[tuple]:
    files = [str(p) for p in part_paths(run_dir, dataset)]
    return duckdb.sql(sql.replace("FILES", "read_parquet($files)"), params={"files": files}).fetchall()


# ---------------------------------------------------------------- bug 1: hub tails in `select`


def test_best_triple_takes_the_highest_degree_tail_of_hub_tails(hub_run):
    degree = dict(_rows(hub_run, KG_ENTITIES, "SELECT kg_id, degree FROM FILES"))
    assert max(degree.values()) >= 3_000  # INT32 `degree * 1000000` overflowed from 2,148 on
    tails = defaultdict(list)
    for head, rel, tail in _rows(hub_run, KG_TRIPLES, "SELECT head, rel, tail FROM FILES"):
        tails[head].append((-degree[tail], rel, tail))
    with duckdb.connect() as conn:
        best = best_triples(conn, hub_run)
    chosen = {
        int(h): (int(r), int(t)) for h, r, t in zip(best["head"], best["rel"], best["tail"], strict=True)
    }
    assert chosen == {head: min(options)[1:] for head, options in tails.items()}
    hubs = {t for _, t in chosen.values() if degree[t] >= 3_000}
    assert len(hubs) == len(HUB_TAILS)


def test_kg_ids_and_qids_at_wikidata5m_magnitude(hub_kg_full, tmp_path):
    load_kg(KGConfig(path=hub_kg_full, duckdb_memory_limit="2GB"), tmp_path, progress=False)
    rows = _rows(tmp_path, KG_ENTITIES, "SELECT max(kg_id), count(*), max(degree) FROM FILES")
    assert rows == [(4_594_484, 4_594_485, 10_000 + 30)]  # Q30 closes 30 sample triples besides the hub's
    (paris,) = _rows(tmp_path, KG_ENTITIES, "SELECT kg_id FROM FILES WHERE qid = 'Q90'")
    assert paris[0] > 4_500_000
    assert _rows(tmp_path, KG_ENTITIES, "SELECT qid FROM FILES WHERE kg_id = 0") == [(f"Q{FILLER_QID_BASE}",)]


# ---------------------------------------------------------------- bug 2: labels as they read in text


def _in_sentence_tokens(tokenizer, label: str) -> list[int]:
    """The tokens `page_sequences` gives a mention of `label` in the middle of a sentence."""
    text = f"It was near {label} that year."
    start = text.index(label)
    (seq,) = page_sequences(tokenizer, 1, text, [(0, len(text))], [(start, start + len(label))], 64)
    (m,) = seq.mentions
    return seq.input_ids[m.tok_start : m.tok_end]


def test_cka_targets_are_tail_labels_as_tokenized_inside_text(hub_run, tiny_roberta):
    tokenizer = load_tokenizer(str(tiny_roberta))
    labels = dict(
        _rows(hub_run, KG_ENTITIES, "SELECT kg_id, label FROM FILES WHERE qid NOT LIKE 'Q1________'")
    )
    with duckdb.connect() as conn:
        targets = _tail_tokens(conn, hub_run, np.array(sorted(labels)), tokenizer, max_tokens=64)
    assert len(targets) == len(labels) > 200
    for kg_id, ids in targets.items():
        assert ids == _in_sentence_tokens(tokenizer, labels[kg_id]), labels[kg_id]
    paris = next(k for k, v in labels.items() if v == "Paris")
    assert tokenizer.convert_ids_to_tokens(targets[paris]) == ["ĠParis"]  # not `Paris`, a text's first word


@pytest.mark.parametrize("family", ["wordpiece", "byte-bpe"])
def test_one_rule_for_every_tokenizer_family(family, tiny_roberta):
    tokenizer = load_tokenizer("minilm" if family == "wordpiece" else str(tiny_roberta))
    words = ["Paris", "United States", "Albert Einstein", "São Paulo", "(Brazil)", " Berlin "]
    assert in_text_ids(tokenizer, words) == [_in_sentence_tokens(tokenizer, w.strip()) for w in words]
    assert in_text_id(tokenizer, "United States") is None  # two tokens: not a single-token object


def test_tokenizers_without_offsets_are_refused_by_name():
    class SentencePieceTokenizer:  # a slow tokenizer: no character offsets to find a label's tokens by
        is_fast = False

    with pytest.raises(ValueError, match="SentencePieceTokenizer is not a fast tokenizer"):
        in_text_ids(SentencePieceTokenizer(), ["Paris"])


# ---------------------------------------------------------------- bug 3: generators where they draw


def test_router_generator_lives_on_the_samplers_device_not_the_models():
    """On a GPU the model moves and the unigram probabilities stay in host memory. `meta` stands in for
    the accelerator (torch refuses a generator there, as multinomial refuses a cuda one for CPU probs)."""
    from transformers import BertConfig, BertForMaskedLM

    from trelm.batch import TokenInfo
    from trelm.config import ModelConfig, RoutingConfig
    from trelm.model import TrelmModel
    from trelm.routing import Router

    tokenizer = load_tokenizer("minilm")
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    model = TrelmModel(
        ModelConfig(backbone="unused"),
        BertForMaskedLM(config),
        TokenInfo.from_tokenizer(tokenizer),
        np.array([3, 7]),
        torch.zeros(2, 4),
        n_relations=2,
    ).to("meta")
    router = Router(model, RoutingConfig(), seed=3)
    generator = router._sampling_generator()
    assert generator.device == model.sampler.probs.device == torch.device("cpu")
    draws = model.sampler.sample((4, 5), generator)
    assert (
        draws.shape == (4, 5) and not torch.isin(draws, torch.tensor(sorted(tokenizer.all_special_ids))).any()
    )


# ---------------------------------------------------------------- the rest of the classes


def test_sequence_ids_stay_unique_past_1024_sequences_a_page():
    ids = [sequence_id(page, i) for page in (7, 8) for i in range(1100)]
    assert len(set(ids)) == len(ids)  # `page_id * 1024 + i` gave page 7's 1025th the id of page 8's first
    assert sequence_id(80_000_000, SEQUENCES_PER_PAGE - 1) < np.iinfo(np.int64).max
    with pytest.raises(ValueError, match="sequences per page"):
        sequence_id(1, SEQUENCES_PER_PAGE)
