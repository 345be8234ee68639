"""The knowledge benchmark's quick world is the same in every invocation (issue 12): its random backbone
feeds the SI scores, `instances` and the warm start, so an unseeded one made two runs compare different
worlds (their warm starts scored 0.328 and 0.255 seen long-tail MRR on the same facts)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import knowledge  # noqa: E402 - a script beside the benchmarks, not a package


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_the_quick_backbone_depends_on_its_seed_only(tmp_path):
    for name, global_seed in (("a", 1), ("b", 2)):  # two invocations whose global RNGs differ
        torch.manual_seed(global_seed)
        knowledge.random_bert(tmp_path / name, vocab_size=50, hidden=32, layers=1, seed=0)
    knowledge.random_bert(tmp_path / "other", vocab_size=50, hidden=32, layers=1, seed=1)
    first, second, other = (_weights(tmp_path / n) for n in ("a", "b", "other"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(
        first["bert.embeddings.word_embeddings.weight"], other["bert.embeddings.word_embeddings.weight"]
    )


def test_building_the_backbone_leaves_the_callers_rng_alone(tmp_path):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    knowledge.random_bert(tmp_path / "m", vocab_size=50, hidden=32, layers=1, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_the_worlds_pages_link_the_name_and_the_stated_facts_object():
    world = knowledge.world
    persons = world.people(world.WorldConfig(long_tail_people=6, frequent_people=2, seed=3), vocab=set())
    objects = world.object_qids()
    kg_ids = {qid: i for i, qid in enumerate([p["qid"] for p in persons] + list(objects.values()))}
    pages = world.page_texts(persons, seed=3)
    by_qid = {p["qid"]: p for p in persons}
    for page_id, page in enumerate(pages):
        row = world._mention_row(page_id, page, kg_ids)
        name, obj = row["mentions"]
        assert [page["text"][m["start"] : m["end"]] for m in (name, obj)] == [page["name"], obj["surface"]]
        first_sentence = row["sentences"][0]
        assert first_sentence["start"] <= name["start"] < name["end"] <= obj["start"] < first_sentence["end"]
        person = by_qid[name["qid"]]
        stated = {person["facts"][pid] for pid in person["text_facts"]}
        assert obj["surface"] in stated and obj["qid"] == objects[obj["surface"]]
        assert obj["kg_id"] == kg_ids[obj["qid"]]


def _middles(pages: list[dict], pid_of_object: dict[str, str]) -> set[tuple[str, str]]:
    """(relation, the words between the name and the object) of every page's text fact."""
    out = set()
    for page in pages:
        word, start = page["object"]
        out.add((pid_of_object[word], page["text"][len(page["name"]) : start].strip()))
    return out


def test_the_corpus_wording_option_chooses_the_texts_template():
    world = knowledge.world
    persons = world.people(world.WorldConfig(long_tail_people=30, frequent_people=4, seed=5), vocab=set())
    pid_of_object = {w: pid for pid, _, _, objects in world.RELATIONS for w in objects.split()}
    middle = {pid: t.split("[Y]")[0].replace("[X]", "").strip() for pid, _, t, _ in world.RELATIONS}
    other = {pid: t.split("[Y]")[0].replace("[X]", "").strip() for pid, t in world.OTHER_WORDINGS.items()}
    probe_pages = world.page_texts(persons, seed=5, wording="probe")
    # the corpus every run before the option had: each text fact in its relation's probe template
    templates = {pid: t for pid, _, t, _ in world.RELATIONS}
    for page in probe_pages:
        person = next(p for p in persons if p["qid"] == page["qid"])
        obj, _ = page["object"]
        pid = next(pid for pid in person["text_facts"] if person["facts"][pid] == obj)
        first = templates[pid].replace("[X]", person["name"]).replace("[Y]", obj)
        assert page["text"].startswith(first + " ")
    assert _middles(probe_pages, pid_of_object) <= set(middle.items())
    other_pages = world.page_texts(persons, seed=5, wording="other")
    assert _middles(other_pages, pid_of_object) <= set(other.items())
    assert not set(middle.values()) & set(other.values())  # the probe's wording is never in that corpus
    mixed = _middles(world.page_texts(persons, seed=5, wording="mixed"), pid_of_object)
    assert mixed & set(middle.items()) and mixed & set(other.items())
    with pytest.raises(ValueError, match="corpus wording 'odd'"):
        world.page_texts(persons, seed=5, wording="odd")
