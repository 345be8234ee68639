"""The link stage on a hand-made dump: dictionary counts, mentions alignment, KG ids, the web API."""

import gzip
import shutil

import pyarrow.parquet as pq
import pytest
from dumps import page, write_multistream, write_page_props
from tagme_server import serve_tagme

from preprocessing.ingest import IngestConfig, ingest, inputs_for_file
from preprocessing.kg import KGConfig, load_kg
from preprocessing.link import LinkConfig, link
from preprocessing.tagme import TagmeConfig
from preprocessing.tagme_remote import RemoteTagmeConfig
from storage.schemas import ANCHORS, LINK_TARGETS, MENTIONS, PAGES
from storage.shards import dataset_dir, part_paths

PAGES_XML = [
    page(1, "Jaguar", "The jaguar is a cat of the Americas."),
    page(2, "Jaguar Cars", "Jaguar Cars makes cars in England."),
    page(3, "Amazon rainforest", "The [[Jaguar|jaguar]] lives in [[Brazil]]. A jaguar hunts at night."),
    page(4, "Brazil", "The [[Amazon rainforest|Amazon]] is home to the [[jaguar]]."),
    page(5, "Coventry", "[[Jaguar Cars|Jaguar]] builds cars here. [[Jaguar Cars|Jaguar]] is British."),
]
QIDS = {1: "Q35694", 2: "Q30055", 3: "Q177567", 4: "Q155", 5: "Q182567"}
# the KG knows the animal, the rainforest and Brazil, not the car maker nor Coventry
KG = {"Q35694": "jaguar", "Q177567": "Amazon rainforest", "Q155": "Brazil"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    # a quote in the data root: every file list our SQL names is escaped (it broke anchors and link)
    tmp = tmp_path_factory.mktemp("link") / "o'brien's data"
    tmp.mkdir()
    dump, _ = write_multistream(
        tmp / "testwiki-20260301-pages-articles-multistream1.xml-p1p9.bz2", PAGES_XML, 2
    )
    write_page_props(tmp / "testwiki-20260301-page_props.sql.gz", QIDS)
    run = tmp / "run"
    ingest(IngestConfig(workers=1, pages_per_part=2), inputs_for_file(dump), run, progress=False)
    kg = tmp / "kg"
    kg.mkdir()
    _gz(kg / "wikidata5m_entity.txt.gz", "".join(f"{q}\t{label}\n" for q, label in KG.items()))
    _gz(kg / "wikidata5m_relation.txt.gz", "P30\tcontinent\n")
    _gz(kg / "wikidata5m_text.txt.gz", "")
    _gz(kg / "wikidata5m_all_triplet.txt.gz", "Q177567\tP30\tQ155\n")
    load_kg(KGConfig(path=kg), run, progress=False)
    return run


def _gz(path, text):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(text)


def _rows(run, dataset):
    return [r for p in part_paths(run, dataset) for r in pq.read_table(p).to_pylist()]


def test_dictionary_link_probability_and_commonness(run_dir):
    manifest = link(LinkConfig(workers=1), run_dir, progress=False)
    anchors = {r["anchor"]: r for r in _rows(run_dir, ANCHORS)}
    # "jaguar" is linked 4 times (2x the animal, 2x the car maker) and occurs 7 times as text:
    # pages 1, 2 ("Jaguar Cars"), 3 (twice), 4, 5 (twice)
    jaguar = anchors["jaguar"]
    assert (jaguar["link_count"], jaguar["text_count"]) == (4, 7)
    assert jaguar["link_prob"] == pytest.approx(4 / 7)
    assert [(t["target"], t["count"]) for t in jaguar["targets"]] == [("Jaguar", 2), ("Jaguar Cars", 2)]
    # "brazil" and "amazon" are linked once: kept by min_link_count 1, dropped by TAGME's 2
    assert set(anchors) == {"jaguar", "brazil", "amazon"} and manifest["stats"]["mentions_anchor"] == 6
    # per article: linked in pages 3, 4, 5 of the 5 whose text has it
    link(LinkConfig(workers=1, tagme=TagmeConfig(link_prob_per_article=True)), run_dir, progress=False)
    assert {r["anchor"]: r["link_prob"] for r in _rows(run_dir, ANCHORS)}["jaguar"] == pytest.approx(3 / 5)
    link(LinkConfig(workers=1, tagme=TagmeConfig(min_link_count=2)), run_dir, progress=False)
    assert {r["anchor"] for r in _rows(run_dir, ANCHORS)} == {"jaguar"}
    targets = {r["target"]: r for r in _rows(run_dir, LINK_TARGETS)}
    assert targets["Jaguar"]["sources"] == [3, 4] and targets["Jaguar Cars"]["sources"] == [5]
    assert targets["Brazil"]["page_id"] == 4 and [r["entity_id"] for r in targets.values()] == list(range(4))


def test_mentions_are_row_aligned_and_aligned_to_the_kg(run_dir):
    manifest = link(LinkConfig(workers=1), run_dir, progress=False)
    pages, mentions = _rows(run_dir, PAGES), _rows(run_dir, MENTIONS)
    assert [p["page_id"] for p in pages] == [m["page_id"] for m in mentions]
    assert [p.name for p in part_paths(run_dir, PAGES)] == [p.name for p in part_paths(run_dir, MENTIONS)]
    by_page = {m["page_id"]: m for m in mentions}
    text = {p["page_id"]: p["text"] for p in pages}
    for m in (x for row in mentions for x in row["mentions"]):
        assert text_of(text, by_page, m) == m["surface"]
    gold = [x for x in by_page[3]["mentions"] if x["source"] == "anchor"]
    assert [(x["surface"], x["target"], x["qid"], x["kg_id"]) for x in gold] == [
        ("jaguar", "Jaguar", "Q35694", 0),
        ("Brazil", "Brazil", "Q155", 2),
    ]
    found = [x for x in by_page[3]["mentions"] if x["source"] == "tagme"]
    assert [x["surface"] for x in found] == ["jaguar"]  # the unlinked second mention
    assert found[0]["target_page_id"] in (1, 2) and found[0]["qid"] == QIDS[found[0]["target_page_id"]]
    cars = [x for x in by_page[5]["mentions"] if x["source"] == "anchor"]
    assert all(x["qid"] == "Q30055" and x["kg_id"] is None for x in cars)  # a page the KG lacks
    stats = manifest["stats"]
    all_mentions = [x for row in mentions for x in row["mentions"]]
    assert stats["mentions"] == len(all_mentions)
    assert stats["mentions_without_kg"] == sum(x["kg_id"] is None for x in all_mentions) > 0
    first = [s for s in by_page[3]["sentences"]]
    assert [text[3][s["start"] : s["end"]] for s in first] == [
        "The jaguar lives in Brazil.",
        "A jaguar hunts at night.",
    ]


def text_of(text, by_page, mention):
    page_id = next(pid for pid, row in by_page.items() if mention in row["mentions"])
    return text[page_id][mention["start"] : mention["end"]]


def test_remote_linker_aligns_titles_and_records_errors(run_dir, monkeypatch):
    monkeypatch.setenv("TRELM_TEST_TAGME", "tok")
    entities = {"Americas": (1, "Americas", 0.4), "jaguar": (16599, "Jaguar", 0.5)}
    with serve_tagme(entities, token="tok") as api:
        remote = RemoteTagmeConfig(
            api_url=api.url, token_env="TRELM_TEST_TAGME", backoff_s=0.01, retries=1, rate_limit_per_s=1000
        )
        manifest = link(LinkConfig(workers=1, linker="remote", remote=remote), run_dir, progress=False)
        api_mentions = [
            x for r in _rows(run_dir, MENTIONS) for x in r["mentions"] if x["source"] == "tagme-api"
        ]
        # "jaguar" in page 1 resolves to our page 1 by title; "Americas" is no page of this dump
        jaguar = next(x for x in api_mentions if x["surface"] == "jaguar")
        assert (jaguar["target"], jaguar["target_page_id"], jaguar["kg_id"]) == ("Jaguar", 1, 0)
        americas = next(x for x in api_mentions if x["surface"] == "Americas")
        assert americas["target_page_id"] is None and americas["target"] == "Americas"
        assert manifest["stats"]["mentions_tagme_api"] == len(api_mentions)
        # a service that keeps failing: the stage fails (tests/faults), unless the failures are allowed;
        # then every page's error is recorded
        api.fail(503, times=100)
        failed = link(
            LinkConfig(
                workers=1,
                linker="remote",
                remote=remote.model_copy(update={"min_rho": 0.01}),
                max_error_fraction=1,
            ),
            run_dir,
            progress=False,
        )
    assert failed["stats"]["pages_remote_error"] == 5 and "503" in failed["errors"][0]


def test_forked_workers_reopen_the_alignment_tables_this_process_holds(run_dir):
    """A part linked in this process (the remote linker runs parts in threads) leaves the run's DuckDB
    alignment tables cached here; the local linker's forked workers then inherited that connection, and
    a worker's first query on it waited for ever (a DuckDB connection does not survive a fork)."""
    from preprocessing import link as link_module

    cfg = LinkConfig(workers=2)
    stamp = link_module._input_stamp(run_dir)
    link_module._alignment_db(run_dir, cfg.duckdb_memory_limit, stamp).cursor().close()
    # every part linked again, in the forked workers
    shutil.rmtree(dataset_dir(run_dir, MENTIONS).parent, ignore_errors=True)
    assert link(cfg, run_dir, progress=False)["rows"] > 0
