"""Fine-tuning on tiny fixtures in the real formats: it learns a trivially separable task, and the
TACRED / GLUE readers build what the official layouts say."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import save_mlm, write_open_entity  # noqa: E402

from trelm.evaluate import entity_typing, glue, relation_extraction  # noqa: E402
from trelm.evaluate.config import FinetuneConfig  # noqa: E402
from trelm.evaluate.finetune import MULTI_LABEL, build_model, predict, seed_everything, train  # noqa: E402
from trelm.evaluate.models import load_tokenizer  # noqa: E402

PERSONS = ["john", "mary", "anna", "paul"]
PLACES = ["paris", "rome", "london", "berlin"]
WORDS = [*PERSONS, *PLACES, "we", "met", "there", "the", "a", "film", "is", "good", "bad", "not"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return str(save_mlm(tmp_path_factory.mktemp("bert"), "bert", WORDS))


def test_entity_typing_learns_a_separable_fixture(tiny_bert, tmp_path):
    data = write_open_entity(tmp_path / "oe", PERSONS, PLACES, repeat=4)
    train_set = entity_typing.read_split(data / "train.json")
    test_set = entity_typing.read_split(data / "test.json")
    assert train_set[0].text == "we met @ john @ there ." and train_set[0].markers == (7,)
    cfg = FinetuneConfig(epochs=6, lr=1e-2, batch_size=8, warmup=0.0, weight_decay=0.0)
    seed_everything(0)
    model = build_model(tiny_bert, 1, len(entity_typing.LABELS), "cpu")
    tokenizer = load_tokenizer(tiny_bert)
    before = entity_typing.score("test", predict(model, tokenizer, test_set, cfg, "cpu"), test_set)
    losses = train(model, tokenizer, train_set, MULTI_LABEL, cfg, "cpu")
    after = entity_typing.score("test", predict(model, tokenizer, test_set, cfg, "cpu"), test_set)
    assert losses[-1] < 0.5 * losses[0]
    assert after["metrics"]["f1"] > before["metrics"]["f1"]
    assert after["metrics"]["f1"] == pytest.approx(1.0)
    assert after["per_label"]["person"]["f1"] == pytest.approx(1.0)


def test_open_entity_seeds_give_mean_and_std(tiny_bert, tmp_path):
    data = write_open_entity(tmp_path / "oe", PERSONS, PLACES)
    cfg = FinetuneConfig(epochs=1, batch_size=8)
    result = entity_typing.evaluate_open_entity(data, tiny_bert, cfg, [1, 2], "cpu")
    assert result["seeds"] == [1, 2] and result["n"] == 8
    assert set(result["metrics"]) == set(result["std"]) == {"precision", "recall", "f1"}
    assert len(result["per_seed"]) == 2 and len(result["losses"]) == 2


TACRED_ITEM = {
    "id": "x1",
    "relation": "per:city_of_birth",
    "token": ["John", "was", "born", "in", "-LRB-", "old", "-RRB-", "Paris", "City", "."],
    "subj_start": 0,
    "subj_end": 0,
    "obj_start": 7,
    "obj_end": 8,  # inclusive: "Paris City"
    "subj_type": "PERSON",
    "obj_type": "CITY",
}


def test_tacred_typed_markers_with_inclusive_ends():
    text, (subj, obj) = relation_extraction.marked_text(TACRED_ITEM)
    assert text == "@ * person * John @ was born in ( old ) # ^ city ^ Paris City # ."
    assert text[subj] == "@" and text[obj] == "#" and text[obj:].startswith("# ^ city ^ Paris City #")
    labels = relation_extraction.label_list([TACRED_ITEM, {**TACRED_ITEM, "relation": "no_relation"}])
    assert labels == ["no_relation", "per:city_of_birth"]


def test_tacred_fine_tunes_and_scores(tiny_bert, tmp_path):
    items = [TACRED_ITEM, {**TACRED_ITEM, "id": "x2", "relation": "no_relation"}] * 4
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.json").write_text(json.dumps(items))
    result = relation_extraction.evaluate_tacred(tmp_path, tiny_bert, FinetuneConfig(epochs=1), [1], "cpu")
    assert result["n"] == 8 and set(result["metrics"]) == {"precision", "recall", "f1"}
    assert "no_relation" not in result["per_label"]


def _tsv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(r) + "\n" for r in rows))


def test_glue_layouts_cola_without_header_and_mnli_two_dev_sets(tiny_bert, tmp_path):
    cola = [["gj04", "1", "", "the film is good ."], ["gj04", "0", "*", "film the good is ."]] * 3
    for name in ("train.tsv", "dev.tsv"):
        _tsv(tmp_path / "glue" / "CoLA" / name, cola)
    skipped: dict[str, int] = {}
    examples = glue.read_tsv(glue.TASKS["cola"], tmp_path / "glue" / "CoLA" / "dev.tsv", skipped)
    assert [(e.text, e.label) for e in examples[:2]] == [("the film is good .", 1), ("film the good is .", 0)]
    header = ["index", "promptID", "pairID", "genre", "sentence1", "sentence2", "gold_label"]
    rows = [
        ["0", "1", "2", "g", "a film", "a good film", "entailment"],
        ["1", "1", "2", "g", "a", "b", "neutral"],
    ]
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        _tsv(tmp_path / "glue" / "MNLI" / name, [header, *rows, ["2", "short"]])
    result = glue.evaluate_glue("mnli", tmp_path / "glue", tiny_bert, FinetuneConfig(epochs=1), 1, "cpu")
    assert set(result["metrics"]) == {"accuracy_m", "accuracy_mm"}
    assert result["n"] == 4 and result["skipped"] == {"short_row": 3}
    stsb = [
        ["index", "sentence1", "sentence2", "score"],
        ["0", "a film", "a film", "5.0"],
        ["1", "a", "b", "0.4"],
    ]
    for name in ("train.tsv", "dev.tsv"):
        _tsv(tmp_path / "STS-B" / name, stsb)
    result = glue.evaluate_glue("sts-b", tmp_path / "STS-B", tiny_bert, FinetuneConfig(epochs=1), 1, "cpu")
    assert set(result["metrics"]) == {"pearson", "spearman"}
