"""Discourse propagation, KG-alias spotting and the spot rules, on hand-made texts with known answers."""

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preprocessing import aliases, discourse, tagme
from preprocessing.tagme import Candidates, Dictionary, Relatedness, TagmeConfig
from storage import layout
from storage.schemas import KG_ALIAS_ENTITIES, KG_ALIASES
from storage.shards import IncompleteDatasetError, Provenance, is_complete, part_paths

# entities: 0 Abraham Lincoln, 1 Lincoln, Nebraska, 2 Illinois, 3 Mercury (planet), 4 Mercury
# (element), 5 Jaguar, 6 Brazil, 7 George H. W. Bush, 8 George W. Bush, 9 Jaguar (band)
TITLES = [
    "Abraham Lincoln",
    "Lincoln, Nebraska",
    "Illinois",
    "Mercury (planet)",
    "Mercury (element)",
    "Jaguar",
    "Brazil",
    "George H. W. Bush",
    "George W. Bush",
    "Jaguar (band)",
]
ENTITY = {t: i for i, t in enumerate(TITLES)}
W = 100
# Nebraska and Illinois share no in-links unless a test says so; the jaguar and Brazil share two
INLINKS = {
    0: [10],
    1: [20],
    2: [30, 31],
    3: [40],
    4: [41],
    5: [50, 51],
    6: [50, 51, 52],
    7: [60],
    8: [61],
    9: [70],
}


def _relatedness(inlinks=INLINKS) -> Relatedness:
    return Relatedness([np.array(inlinks[e], np.int64) for e in range(len(TITLES))], W)


def _dictionary() -> Dictionary:
    def c(lp, pages, common):
        return Candidates(lp, np.array(pages, np.int64), np.array(common, np.float32))

    return Dictionary.from_candidates(
        {
            "lincoln": c(0.4, [1, 0], [0.7, 0.3]),
            "illinois": c(0.8, [2], [1.0]),
            "mercury": c(0.3, [4, 3], [0.8, 0.2]),
            "brazil": c(0.8, [6], [1.0]),
            "jaguar": c(0.5, [5], [1.0]),
        }
    )


def _link(text: str, surface: str, target: str, nth: int = 0) -> dict:
    start = -1
    for _ in range(nth + 1):
        start = text.index(surface, start + 1)
    return {"start": start, "end": start + len(surface), "target": target}


def _annotate(text, links, cfg, relatedness=None, dictionary=None, use_forms=True):
    doc = tagme.nlp()(text)
    tokens = tagme.token_arrays(doc)
    gold = [(ln["start"], ln["end"], ENTITY[ln["target"]]) for ln in links]
    forms = discourse.forms(text, links, ENTITY, cfg) if use_forms else None
    found = tagme.annotate(
        *tokens, gold, dictionary or _dictionary(), relatedness or _relatedness(), cfg, text=text, forms=forms
    )
    return [(text[a.start : a.end], TITLES[a.entity_id], a.source) for a in found]


# two paragraphs; with windows of ~10 tokens, the second votes without the first's gold link
LINCOLN = "Abraham Lincoln was born in a cabin in Kentucky long ago.\n\nLater Lincoln spoke in Illinois."
SMALL_WINDOWS = TagmeConfig(context_tokens=10)


def test_a_surname_takes_the_article_linked_person():
    links = [_link(LINCOLN, "Abraham Lincoln", "Abraham Lincoln")]
    # TAGME alone: no vote tells the senses apart, so commonness picks the town
    alone = _annotate(LINCOLN, links, SMALL_WINDOWS.model_copy(update={"discourse": False}))
    assert ("Lincoln", "Lincoln, Nebraska", "tagme") in alone
    found = _annotate(LINCOLN, links, SMALL_WINDOWS)
    assert ("Lincoln", "Abraham Lincoln", "discourse") in found
    assert ("Illinois", "Illinois", "tagme") in found
    # the short-form switch off: the surname is no form of the article any more
    no_short = _annotate(LINCOLN, links, SMALL_WINDOWS.model_copy(update={"short_forms": False}))
    assert ("Lincoln", "Lincoln, Nebraska", "tagme") in no_short


def test_voting_that_strongly_disagrees_keeps_tagmes_sense():
    # Nebraska now shares in-links with Illinois, voted for in the same window: coherence 0.90 vs 0
    related = {**INLINKS, 1: [30, 31], 2: [30, 31, 32]}
    links = [_link(LINCOLN, "Abraham Lincoln", "Abraham Lincoln")]
    found = _annotate(LINCOLN, links, SMALL_WINDOWS, relatedness=_relatedness(related))
    assert ("Lincoln", "Lincoln, Nebraska", "tagme") in found
    # a veto of 1 never lets voting win
    never = SMALL_WINDOWS.model_copy(update={"discourse_veto": 1.0})
    assert ("Lincoln", "Abraham Lincoln", "discourse") in _annotate(
        LINCOLN, links, never, relatedness=_relatedness(related)
    )


def test_a_title_without_its_parenthetical_and_only_where_capitalized():
    text = (
        "The innermost planet of the solar system is very hot by day.\n\n"
        "Mercury has no moons, but liquid mercury is a metal."
    )
    links = [_link(text, "innermost planet", "Mercury (planet)")]
    found = _annotate(text, links, SMALL_WINDOWS)
    assert ("Mercury", "Mercury (planet)", "discourse") in found
    assert ("mercury", "Mercury (element)", "tagme") in found  # lower case: no short form


def test_the_same_surface_later_takes_the_articles_target():
    text = "The Jaguar played a long concert in a big hall once.\n\nLater Jaguar toured again."
    links = [_link(text, "Jaguar", "Jaguar (band)")]
    alone = _annotate(text, links, SMALL_WINDOWS.model_copy(update={"discourse": False}))
    assert ("Jaguar", "Jaguar", "tagme") in alone  # the dictionary knows only the animal
    found = _annotate(text, links, SMALL_WINDOWS)
    assert ("Jaguar", "Jaguar (band)", "discourse") in found


def test_forms_drop_ambiguous_short_forms_and_common_nouns():
    text = "George H. W. Bush and George W. Bush met. Lincoln won the war. Abraham Lincoln was there."
    links = [
        _link(text, "George H. W. Bush", "George H. W. Bush"),
        _link(text, "George W. Bush", "George W. Bush"),
        _link(text, "Abraham Lincoln", "Abraham Lincoln"),
    ]
    forms = discourse.forms(text, links, ENTITY, TagmeConfig())
    assert "bush" not in forms  # two linked Bushes: the surname names neither
    assert forms["lincoln"] == discourse.Form(ENTITY["Abraham Lincoln"], short=True)
    assert forms["george w. bush"].short is False  # the linked text itself
    assert discourse.short_forms("American Civil War", {"war"}) == ["American Civil War"] * 2
    assert discourse.short_forms("Mercury (planet)") == ["Mercury (planet)", "Mercury"]


# alias rows as link's KG query gives them: (alias, target, entity_id or None, page_id, qid); "El
# Tigre" and "Otro" name entities that no link targets, "X" (one character) no spot
ALIAS_ROWS = [
    ("Panthera onca", "Jaguar", 5, 105, "Q35694"),
    ("jaguar", "Jaguar (band)", 9, 109, "Q1"),
    ("El Tigre", "El Tigre (film)", None, 900, "Q9"),
    ("Jaguar", "Jaguar", 5, 105, "Q35694"),
    ("X", "X (film)", None, 902, "Q11"),
    ("Panthera  onca", "Jaguar (band)", 9, 109, "Q1"),
    ("Otro", "Otro (film)", None, 901, "Q10"),
    ("el tigre", "El Tigre (film)", None, 900, "Q9"),
    ("jaguar", "Jaguar", 5, 105, "Q35694"),
]
# keys and their entities in first-seen order; new entities numbered after the 10 link targets
KEYED = [("panthera onca", [5, 9]), ("jaguar", [9, 5]), ("el tigre", [10]), ("otro", [11])]


PROVENANCE = Provenance("test", (), "test")


def _write_aliases(run_dir, rows=ALIAS_ROWS, cfg=TagmeConfig()) -> dict:
    return aliases.write(run_dir, iter(rows), len(TITLES), cfg, PROVENANCE, "1GB")


@pytest.mark.parametrize("batch", [2, 100_000])
def test_aliases_are_keyed_once_in_first_seen_order(tmp_path, monkeypatch, batch):
    monkeypatch.setattr(aliases, "_BATCH", batch)  # 2: staged, grouped and read back across batches
    manifest = _write_aliases(tmp_path)
    assert aliases.as_pairs(aliases.stored_groups(tmp_path)) == KEYED
    table = pa.concat_tables(pq.read_table(p) for p in part_paths(tmp_path, KG_ALIASES))
    sliced = table.combine_chunks().to_batches()[0].slice(1, 2)  # its lists' offsets start past 0
    assert aliases.as_pairs([aliases.alias_batch(sliced)]) == KEYED[1:3]
    entities = [r for p in part_paths(tmp_path, KG_ALIAS_ENTITIES) for r in pq.read_table(p).to_pylist()]
    assert entities == [  # "X (film)" has no spottable alias: no id
        {"entity_id": 10, "target": "El Tigre (film)", "page_id": 900, "qid": "Q9"},
        {"entity_id": 11, "target": "Otro (film)", "page_id": 901, "qid": "Q10"},
    ]
    assert manifest["rows"] == len(KEYED) and is_complete(tmp_path, KG_ALIASES, PROVENANCE.fingerprint)
    assert manifest["stats"]["kg_aliases_read"] == len(ALIAS_ROWS)
    assert manifest["stats"]["kg_aliases_unspottable"] == 1
    assert not layout.staging_dir(tmp_path, "kg_aliases").exists()


def test_a_failing_build_closes_its_row_stream_and_seals_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(aliases, "_BATCH", 1)  # the stream is left part-read when keying fails
    closed = []

    def rows():  # as link's alias query streams them, holding its DuckDB until closed
        try:
            yield ALIAS_ROWS[0]
            yield (None, "Jaguar", 5, 105, "Q35694")  # no text: keying it fails
            yield ALIAS_ROWS[1]
        finally:
            closed.append(True)

    stream = rows()  # still referenced here, as a caller's traceback keeps it: only close() ends it
    with pytest.raises((AttributeError, TypeError)):
        _write_aliases(tmp_path, stream)
    assert closed and not is_complete(tmp_path, KG_ALIASES)


def test_a_worker_extends_its_dictionary_from_the_keyed_aliases_without_keying_them(tmp_path, monkeypatch):
    cfg = TagmeConfig()
    _write_aliases(tmp_path)

    def no_keying(text):
        raise AssertionError(f"a worker keyed {text!r}: the aliases are keyed once, by link's prepare")

    monkeypatch.setattr(tagme, "anchor_key", no_keying)
    dictionary, relatedness, extra = aliases.load(tmp_path, _dictionary(), _relatedness(), cfg)
    in_memory = aliases.extend(_dictionary(), [aliases.as_batch(KEYED)], cfg)
    assert dictionary.index == in_memory.index
    for name in ("link_prob", "offsets", "entities", "commonness", "from_alias"):
        assert np.array_equal(getattr(dictionary, name), getattr(in_memory, name))
    assert extra == [("El Tigre (film)", 900, "Q9"), ("Otro (film)", 901, "Q10")]
    assert relatedness.matrix.shape[0] == len(TITLES) + 2
    assert dictionary.candidates(dictionary.row("el tigre")).entities.tolist() == [10]


def test_aliases_keyed_for_another_dictionary_are_refused(tmp_path):
    _write_aliases(tmp_path)
    fewer = Relatedness([np.array(INLINKS[e], np.int64) for e in range(9)], W)  # 9 link targets, not 10
    with pytest.raises(IncompleteDatasetError, match="another dictionary.*trelm link"):
        aliases.load(tmp_path, _dictionary(), fewer, TagmeConfig())


def _reference_extension(dictionary: Dictionary, groups, prior: float) -> dict[str, list[tuple]]:
    """What the extension must give, one key at a time: an anchor's own candidates, then the alias
    entities it lacks at `prior`; a key that is no anchor, its entities sharing 1 equally."""
    out = {}
    for key, ids in groups:
        row = dictionary.row(key)
        if row is None:
            out[key] = [(e, 1.0 / len(ids)) for e in ids]
            continue
        own = dictionary.candidates(row)
        known = set(own.entities.tolist())
        out[key] = _pairs_of(own) + [(e, prior) for e in ids if e not in known]
    return out


def _pairs_of(candidates: Candidates) -> list[tuple]:
    return list(zip(candidates.entities.tolist(), candidates.commonness.tolist(), strict=True))


def test_the_extension_matches_a_key_by_key_reference_on_random_batches():
    rng = np.random.default_rng(7)
    cfg = TagmeConfig()
    words = [f"w{i}" for i in range(40)]

    def phrase():
        return " ".join(rng.choice(words, rng.integers(1, 3)))

    def entities(n):
        return rng.choice(n, rng.integers(1, 6), replace=False)

    base = {}
    for _ in range(60):
        ids = entities(30)
        base[phrase()] = Candidates(0.5, ids, np.full(len(ids), 1 / len(ids), np.float32))
    # alias keys: anchors, prefixes of anchors and new phrases, each with distinct entities
    groups = [(k, entities(40).tolist()) for k in dict.fromkeys(phrase() for _ in range(150))]
    batches = [aliases.as_batch(groups[i : i + 7]) for i in range(0, len(groups), 7)]
    extended = aliases.extend(Dictionary.from_candidates(base), batches, cfg)
    want = _reference_extension(Dictionary.from_candidates(base), groups, cfg.kg_alias_prior)
    prefixes = {k.rsplit(" ", 1)[0] for k in base if " " in k} - set(base)
    assert {k in base for k in want} == {True, False} and prefixes & set(want)  # anchors, prefixes, new
    for key, candidates in want.items():
        row = extended.row(key)
        got = extended.candidates(row)
        assert got.entities.tolist() == [e for e, _ in candidates], key
        assert got.commonness.tolist() == pytest.approx([c for _, c in candidates]), key
        own = set(base[key].entities.tolist()) if key in base else set()
        assert [extended.is_alias(row, e) for e, _ in candidates] == [e not in own for e, _ in candidates]
        lp = base[key].link_prob if key in base else cfg.kg_alias_prior
        assert extended.link_prob[row] == pytest.approx(lp), key
    untouched = [k for k in base if k not in want]
    assert untouched
    for key in untouched:
        assert _pairs_of(extended.candidates(extended.row(key))) == _pairs_of(base[key])


def test_kg_aliases_extend_candidates_below_anchors_and_add_spots():
    cfg = TagmeConfig()
    base = _dictionary()
    groups = [("panthera onca", [5]), ("jaguar", [9, 5])]
    extended = aliases.extend(base, [aliases.as_batch(groups)], cfg)
    jaguar = extended.candidates(extended.row("jaguar"))
    assert jaguar.entities.tolist() == [5, 9]  # the anchor's own first; no duplicate
    assert jaguar.commonness.tolist() == pytest.approx([1.0, cfg.kg_alias_prior])
    assert extended.is_alias(extended.row("jaguar"), 9) and not extended.is_alias(extended.row("jaguar"), 5)
    onca = extended.row("panthera onca")
    assert onca >= extended.first_alias_row and extended.link_prob[onca] == pytest.approx(cfg.kg_alias_prior)
    assert extended.index["panthera"] == Dictionary.PREFIX
    assert extended.candidates(extended.row("lincoln")).entities.tolist() == [1, 0]  # untouched


def test_extending_in_place_gives_the_copy_and_spends_the_base():
    cfg = TagmeConfig()
    groups = [("panthera onca", [5]), ("jaguar", [9, 5]), ("lincoln nebraska", [0])]
    copied = aliases.extend(_dictionary(), [aliases.as_batch(groups)], cfg)
    base = _dictionary()
    in_place = aliases.extend(base, [aliases.as_batch(groups)], cfg, take_index=True)
    assert in_place.index == copied.index  # every key, alias rows and new prefixes included
    for name in ("link_prob", "offsets", "entities", "commonness", "from_alias"):
        assert np.array_equal(getattr(in_place, name), getattr(copied, name))
    assert base.index is None  # the spent base cannot be looked up by mistake


def test_entities_without_in_links_extend_the_matrix_without_copying_it():
    plain = _relatedness()
    wider = aliases.with_entities(plain, len(TITLES) + 3)
    assert wider.matrix.shape == (len(TITLES) + 3, plain.matrix.shape[1])
    assert np.shares_memory(wider.matrix.indices, plain.matrix.indices)
    assert np.shares_memory(wider.matrix.data, plain.matrix.data)
    assert wider.matrix[len(TITLES) :].nnz == 0 and wider.sizes[len(TITLES) :].tolist() == [0, 0, 0]
    known = np.arange(len(TITLES))
    assert np.array_equal(wider.pairwise(known), plain.pairwise(known))
    assert not wider.pairwise(np.array([5, len(TITLES)]))[0, 1]  # no in-links: unrelated


def test_an_alias_spot_links_where_capitalized_and_coherent():
    cfg = TagmeConfig(discourse=False)
    dictionary = aliases.extend(_dictionary(), [aliases.as_batch([("panthera onca", [5])])], cfg)
    text = "In Brazil lives Panthera onca, and panthera onca in lower case is no name."
    found = _annotate(text, [], cfg, dictionary=dictionary, use_forms=False)
    assert ("Panthera onca", "Jaguar", "kg-alias") in found
    assert not any(s == "panthera onca" for s, _, _ in found)
    # rho = (lp + coherence) / 2: the alias prior 0.05 and rel(Jaguar, Brazil)
    rel = 1 - (math.log(3) - math.log(2)) / (math.log(W) - math.log(2))
    doc = tagme.nlp()(text)
    annotations = tagme.annotate(*tagme.token_arrays(doc), [], dictionary, _relatedness(), cfg, text=text)
    onca = next(a for a in annotations if a.source == "kg-alias")
    assert onca.rho == pytest.approx((cfg.kg_alias_prior + rel) / 2, abs=1e-6)
    # without the Brazil context the alias has no coherence and is pruned
    alone = _annotate("There lives Panthera onca, they say.", [], cfg, dictionary=dictionary, use_forms=False)
    assert alone == []


def test_name_and_compound_pieces():
    text = "He saw the Black Hawk War, landscape architecture and Outline of Brazil here."
    doc = tagme.nlp()(text)
    tokens, starts, _, breaks = tagme.token_arrays(doc)
    caps = [text[i : i + 1].isupper() for i in starts]

    def spot_of(word):
        i = tokens.index(word)
        return tagme.Spot(i, i + 1, word, 0.1)

    assert tagme.name_piece(spot_of("hawk"), tokens, breaks, caps)
    assert tagme.name_piece(spot_of("brazil"), tokens, breaks, caps)  # `Outline of` starts the name
    assert not tagme.name_piece(spot_of("he"), tokens, breaks, caps)
    # a spot of several words is a name of its own, whatever capitals precede it
    title = "The French Pierre Proudhon wrote."
    doc = tagme.nlp()(title)
    t_tokens, t_starts, _, t_breaks = tagme.token_arrays(doc)
    t_caps = [title[i : i + 1].isupper() for i in t_starts]
    assert not tagme.name_piece(tagme.Spot(2, 4, "pierre proudhon", 0.1), t_tokens, t_breaks, t_caps)
    assert tagme.name_piece(tagme.Spot(3, 4, "proudhon", 0.1), t_tokens, t_breaks, t_caps)
    # the modifier of a compound is a piece; its head keeps its sense
    assert tagme.compound_piece(spot_of("landscape"), tokens, breaks, caps)
    assert not tagme.compound_piece(spot_of("architecture"), tokens, breaks, caps)
    assert not tagme.compound_piece(spot_of("saw"), tokens, breaks, caps)  # `he` and `the`: stop words
