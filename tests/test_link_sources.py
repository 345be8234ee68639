"""The link stage's new sources on a hand-made dump: `discourse` and `kg-alias` mentions, aligned."""

import gzip
import json
import shutil

import pyarrow.parquet as pq
import pytest
from dumps import page, write_multistream, write_page_props

from preprocessing import aliases
from preprocessing import link as link_module
from preprocessing.ingest import IngestConfig, ingest, inputs_for_file
from preprocessing.kg import KGConfig, load_kg
from preprocessing.link import LinkConfig, link, link_provenance
from preprocessing.tagme import TagmeConfig
from storage.schemas import ANCHORS, KG_ALIAS_ENTITIES, KG_ALIASES, LINK_TARGETS, MENTIONS, PAGES
from storage.shards import MANIFEST, IncompleteDatasetError, is_complete, part_paths, read_manifest

# "Amazon" links the company three times, the rainforest once (on page 3, which later says "the
# Amazon" again, in a paragraph of its own); the KG knows the jaguar as "Panthera onca" too
RAINFOREST = (
    "The [[Amazon rainforest|Amazon]] covers much of [[Brazil]] and more. The [[Jaguar|jaguar]] lives "
    "there, and so does Panthera onca.\n\nLater the Amazon flooded again."
)
PAGES_XML = [
    page(1, "Jaguar", "The jaguar is a big cat."),
    page(2, "Brazil", "Brazil is a country."),
    page(3, "Amazon rainforest", RAINFOREST),
    page(4, "Amazon (company)", "Amazon sells books."),
    page(
        5,
        "Seattle",
        "[[Amazon (company)|Amazon]] is here. [[Amazon (company)|Amazon]] is big, "
        "and so is [[Amazon (company)|Amazon]].",
    ),
]
QIDS = {1: "Q35694", 2: "Q155", 3: "Q177567", 4: "Q3884", 5: "Q5083"}
KG_LINES = "Q35694\tjaguar\tPanthera onca\nQ155\tBrazil\nQ177567\tAmazon rainforest\nQ3884\tAmazon\n"
# windows of ~10 tokens: the later "Amazon" is voted on without the page's own links
CFG = TagmeConfig(context_tokens=10)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sources")
    dump, _ = write_multistream(
        tmp / "testwiki-20260301-pages-articles-multistream1.xml-p1p9.bz2", PAGES_XML, 5
    )
    write_page_props(tmp / "testwiki-20260301-page_props.sql.gz", QIDS)
    run = tmp / "run"
    ingest(IngestConfig(workers=1), inputs_for_file(dump), run, progress=False)
    load_kg(KGConfig(path=_write_kg(tmp / "kg", KG_LINES)), run, progress=False)
    return run


def _write_kg(folder, entity_lines: str):
    folder.mkdir()
    for name, text in (
        ("entity", entity_lines),
        ("relation", "P30\tcontinent\n"),
        ("text", ""),
        ("all_triplet", "Q177567\tP30\tQ155\n"),
    ):
        with gzip.open(folder / f"wikidata5m_{name}.txt.gz", "wt", encoding="utf-8") as f:
            f.write(text)
    return folder


def _found(run_dir, tagme_cfg: TagmeConfig) -> tuple[list[dict], dict]:
    manifest = link(LinkConfig(workers=1, tagme=tagme_cfg), run_dir, progress=False)
    rows = [r for p in part_paths(run_dir, MENTIONS) for r in pq.read_table(p).to_pylist()]
    page3 = next(r for r in rows if r["page_id"] == 3)
    return [m for m in page3["mentions"] if m["source"] != "anchor"], manifest["stats"]


def test_the_later_mention_takes_the_articles_sense(run_dir):
    text = next(
        r["text"]
        for p in part_paths(run_dir, PAGES)
        for r in pq.read_table(p).to_pylist()
        if r["page_id"] == 3
    )
    later = text.rindex("Amazon")
    found, stats = _found(run_dir, CFG)
    amazon = next(m for m in found if m["start"] == later)
    assert (amazon["target"], amazon["source"], amazon["qid"]) == (
        "Amazon rainforest",
        "discourse",
        "Q177567",
    )
    assert stats["mentions_discourse"] >= 1
    # without discourse, commonness (3 links to 1) names the company
    alone, _ = _found(run_dir, CFG.model_copy(update={"discourse": False}))
    assert next(m for m in alone if m["start"] == later)["target"] == "Amazon (company)"


def test_a_kg_alias_is_spotted_and_aligned(run_dir):
    found, stats = _found(run_dir, CFG)
    onca = next(m for m in found if m["surface"] == "Panthera onca")
    assert (onca["target"], onca["source"], onca["qid"], onca["target_page_id"]) == (
        "Jaguar",
        "kg-alias",
        "Q35694",
        1,
    )
    assert onca["kg_id"] == 0 and stats["mentions_kg_alias"] == 1
    off, _ = _found(run_dir, CFG.model_copy(update={"kg_aliases": False}))
    assert not any(m["surface"] == "Panthera onca" for m in off)


def test_the_kg_aliases_are_keyed_once_a_run_for_the_runs_dictionary(run_dir):
    _found(run_dir, CFG)
    cfg = LinkConfig(workers=1, tagme=CFG)
    keyed = read_manifest(run_dir, KG_ALIASES)
    assert keyed["fingerprint"] == link_module.alias_provenance(cfg, run_dir).fingerprint
    assert keyed["inputs"]["anchors"] == read_manifest(run_dir, ANCHORS)["fingerprint"]
    # the key names the link target's entity id (the dictionary's)
    assert _keyed(run_dir)["panthera onca"] == [_entity_id(run_dir, "Jaguar")]
    # settings the run's dictionary was not built with: no keys for a dictionary that is not there
    short = LinkConfig(workers=1, tagme=CFG.model_copy(update={"max_anchor_tokens": 1}))
    with pytest.raises(IncompleteDatasetError, match="other settings.*trelm link"):
        link_module.build_kg_aliases(short, run_dir)
    assert is_complete(run_dir, KG_ALIASES, keyed["fingerprint"])


def test_a_new_kg_rekeys_the_aliases_and_makes_the_mentions_stale(run_dir, tmp_path):
    _found(run_dir, CFG)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    cfg = LinkConfig(workers=1, tagme=CFG)
    keyed, mentions = read_manifest(run, KG_ALIASES)["fingerprint"], link_provenance(cfg, run).fingerprint
    kg = _write_kg(tmp_path / "kg", KG_LINES + "Q5083\tSeattle\tEmerald City\n")
    load_kg(KGConfig(path=kg), run, progress=False)
    assert link_provenance(cfg, run).fingerprint != mentions
    link_module.build_kg_aliases(cfg, run)
    assert read_manifest(run, KG_ALIASES)["fingerprint"] != keyed
    # no link targets Seattle: its id follows the link targets', its page and QID beside it
    n_targets = read_manifest(run, LINK_TARGETS)["rows"]
    assert _keyed(run)["emerald city"] == [n_targets]
    new = [r for p in part_paths(run, KG_ALIAS_ENTITIES) for r in pq.read_table(p).to_pylist()]
    assert {"entity_id": n_targets, "target": "Seattle", "page_id": 5, "qid": "Q5083"} in new


def test_a_worker_refuses_aliases_missing_or_keyed_for_another_dictionary(run_dir, tmp_path):
    _found(run_dir, CFG)
    cfg = LinkConfig(workers=1, tagme=CFG)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    manifest = run / KG_ALIASES.folder / MANIFEST
    other = json.loads(manifest.read_text())
    other["inputs"]["anchors"] = "another dictionary"
    manifest.write_text(json.dumps(other))
    with pytest.raises(IncompleteDatasetError, match="another dictionary.*trelm link"):
        link_module._local_annotator(cfg, run, set())
    manifest.unlink()
    with pytest.raises(IncompleteDatasetError, match="not complete.*trelm link"):
        link_module._local_annotator(cfg, run, set())


def _entity_id(run_dir, target: str) -> int:
    rows = [r for p in part_paths(run_dir, LINK_TARGETS) for r in pq.read_table(p).to_pylist()]
    return next(r["entity_id"] for r in rows if r["target"] == target)


def _keyed(run_dir) -> dict[str, list[int]]:
    return dict(aliases.as_pairs(aliases.stored_groups(run_dir)))
