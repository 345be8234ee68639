"""LAMA / LAMA-UHN and the KG probe on tiny MLMs whose predictions are fixed by their output bias.

The models favour "Paris" at every mask (bias +100) and never say "Rome" (bias -100), so every
expected P@1 below is counted by hand from the fixture facts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import save_mlm, write_kg_run, write_lama  # noqa: E402

from trelm.evaluate.cloze import object_token_id  # noqa: E402
from trelm.evaluate.kg_probe import SHIPPED_TEMPLATES, evaluate_kg_probe, read_templates  # noqa: E402
from trelm.evaluate.lama import evaluate_lama  # noqa: E402
from trelm.evaluate.models import load_masked_lm  # noqa: E402

WORDS = ["Paris", "Rome", "New", "York", "France", "Italy", "Ada", "Smith", "Bob", "Jones"]
FAVOUR = {"Paris": 100.0, "Rome": -100.0}


@pytest.fixture(scope="module", params=["bert", "roberta"])
def rigged(request, tmp_path_factory):
    folder = save_mlm(tmp_path_factory.mktemp(request.param), request.param, WORDS, FAVOUR)
    return load_masked_lm(str(folder), "cpu")


@pytest.fixture(scope="module")
def lama_dir(tmp_path_factory):
    return write_lama(tmp_path_factory.mktemp("lama") / "data")


def test_single_token_objects_wordpiece_and_bpe(tmp_path):
    bert = save_mlm(tmp_path / "b", "bert", WORDS)
    roberta = save_mlm(tmp_path / "r", "roberta", WORDS)
    _, bert_tok = load_masked_lm(str(bert), "cpu")
    _, roberta_tok = load_masked_lm(str(roberta), "cpu")
    # WordPiece (uncased): the word itself, lower-cased; unknown words and two-word objects are out
    assert object_token_id(bert_tok, "Paris") == bert_tok.convert_tokens_to_ids("paris")
    assert object_token_id(bert_tok, "New York") is None
    assert object_token_id(bert_tok, "Berlin") is None  # not in the vocabulary: [UNK]
    # byte-level BPE: the object after a space is "ĠParis", not the bare "Paris" (which is 5 bytes)
    assert object_token_id(roberta_tok, "Paris") == roberta_tok.convert_tokens_to_ids("ĠParis")
    assert roberta_tok.convert_tokens_to_ids("ĠParis") != roberta_tok.unk_token_id
    assert len(roberta_tok.tokenize("Paris")) == 5
    assert object_token_id(roberta_tok, "New York") is None


def test_trex_p_at_1_per_relation_and_macro_mean(rigged, lama_dir):
    result = evaluate_lama(lama_dir, "trex", *rigged)
    # P19: Ada->Paris hit, Bob->Rome miss, Cy Paris->Paris hit, Di Long->New York skipped (two tokens)
    # P36: France->Paris hit, Italy->Rome miss; P999 has no TREx file
    assert result["per_relation"] == pytest.approx({"P19": 2 / 3, "P36": 1 / 2})
    assert result["metrics"]["p_at_1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert result["n"] == 5
    assert result["skipped"] == {"multi_token_object": 1}


def test_uhn_string_match_then_person_names_with_the_models_own_predictions(rigged, lama_dir):
    plain = evaluate_lama(lama_dir, "trex", *rigged, uhn=True, name_model=None)
    # "Cy Paris" contains its object "Paris": dropped; P19 keeps Ada (hit) and Bob (miss)
    assert plain["per_relation"] == pytest.approx({"P19": 1 / 2, "P36": 1 / 2})
    assert plain["skipped"] == {"uhn_string_match": 1, "multi_token_object": 1}
    named = evaluate_lama(lama_dir, "trex", *rigged, uhn=True, name_model=rigged)
    # the model answers "Paris" to "Ada is a common name in the following country : [MASK] .": Ada's
    # P19 fact is name-guessable and dropped; Bob->Rome stays (Rome is never in its top 3); P36 is not
    # a person relation
    assert named["per_relation"] == pytest.approx({"P19": 0.0, "P36": 1 / 2})
    assert named["metrics"]["p_at_1"] == pytest.approx(0.25)
    assert named["skipped"]["uhn_person_name"] == 1


def test_google_re_judgments_and_uhn(rigged, lama_dir):
    result = evaluate_lama(lama_dir, "google-re", *rigged)
    # place_of_birth: Ada->Paris (2 yes, 1 no) hit; Bob->Rome dropped (2 no > 1 yes);
    # date_of_birth: "1900" not one token; place_of_death: Eve Rome->Rome miss, Al Bo->Paris (tie kept) hit
    assert result["per_relation"] == pytest.approx({"place_of_birth": 1.0, "place_of_death": 0.5})
    assert result["skipped"] == {"negative_judgments": 1, "multi_token_object": 1}
    uhn = evaluate_lama(lama_dir, "google-re", *rigged, uhn=True, name_model=None)
    assert uhn["per_relation"] == pytest.approx({"place_of_birth": 1.0, "place_of_death": 1.0})


def test_common_vocab_keeps_its_objects_and_restricts_predictions(rigged, lama_dir, tmp_path):
    vocab = tmp_path / "common_vocab.txt"
    vocab.write_text("Rome\nItaly\n")
    result = evaluate_lama(lama_dir, "trex", *rigged, common_vocab=vocab)
    # only the Rome facts remain; the candidates are {Rome, Italy} and Rome's bias is -100, so the
    # prediction is Italy (never Paris, the favourite outside the list): every kept fact misses
    assert result["n"] == 2
    assert result["skipped"]["not_in_common_vocab"] == 3
    assert result["per_relation"] == {"P19": 0.0, "P36": 0.0}


def test_kg_probe_splits_seen_and_unseen_facts(rigged, tmp_path):
    run_dir = write_kg_run(tmp_path / "run")
    result = evaluate_kg_probe(run_dir, *rigged)
    metrics = result["metrics"]
    # seen: Ada -P19-> Paris (hit), Italy -P36-> Rome (miss); unseen: France -P36-> Paris (hit; its instance
    # entity is not important, so it was no CKA target)
    assert (metrics["n_seen"], metrics["n_unseen"]) == (2, 1)
    assert metrics["p_at_1_seen"] == pytest.approx(0.5)
    assert metrics["micro_p_at_1_seen"] == pytest.approx(0.5)
    assert metrics["p_at_1_unseen"] == pytest.approx(1.0)
    assert result["per_relation"]["P36"] == {"seen": 0.0, "n_seen": 1, "unseen": 1.0, "n_unseen": 1}
    assert result["skipped"] == {"no_template": 1, "multi_token_object": 1}


def test_kg_templates_cover_the_sample_kg_and_a_user_file_overrides(tmp_path):
    sample = Path(__file__).resolve().parents[1] / "sample" / "wikidata5m" / "wikidata5m_all_triplet.txt"
    pids = {line.split("\t")[1] for line in sample.read_text().splitlines() if line.strip()}
    templates = read_templates()
    assert pids <= set(templates)
    assert all("[X]" in t and "[Y]" in t for t in templates.values())
    lama_pids = {json.loads(line)["relation"] for line in SHIPPED_TEMPLATES[0].read_text().splitlines()}
    assert len(lama_pids) == 41  # LAMA's T-REx relations
    extra = tmp_path / "templates.jsonl"
    extra.write_text(json.dumps({"relation": "P19", "template": "[X] came into the world in [Y] ."}) + "\n")
    assert read_templates(extra)["P19"] == "[X] came into the world in [Y] ."


def test_kg_probe_caps_each_split_in_sql_and_counts_the_rest(rigged, tmp_path):
    """Only max_facts facts a split reach Python (Wikidata5M has 20.6M triples); the first in (head, rel,
    tail) order, as before: seen keeps Ada -P19-> Paris, unseen Ada -P19-> New York (then skipped: two
    tokens); France -P36-> Paris and Italy -P36-> Rome are over the cap."""
    run_dir = write_kg_run(tmp_path / "run")
    result = evaluate_kg_probe(run_dir, *rigged, max_facts=1)
    assert (result["metrics"]["n_seen"], result["metrics"]["n_unseen"]) == (1, 0)
    assert result["skipped"] == {"no_template": 1, "over_max_facts": 2, "multi_token_object": 1}
    from trelm.evaluate.kg_probe import read_kg_facts

    rows, _ = read_kg_facts(run_dir, list(read_templates()), max_facts=1)
    assert [(pid, subject, obj) for pid, subject, obj, _ in rows] == [
        ("P19", "Ada Smith", "Paris"),
        ("P19", "Ada Smith", "New York"),
    ]
