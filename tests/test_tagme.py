"""Local TAGME on a toy dictionary whose numbers are worked out by hand in the comments."""

import math

import numpy as np
import pytest

from preprocessing import tagme
from preprocessing.tagme import Candidates, Dictionary, Relatedness, TagmeConfig

# entities: 1 Jaguar (animal), 2 Jaguar Cars, 3 Amazon rainforest, 4 Amazon (company), 5 Brazil;
# 0 and 6-9 nobody links to; the lists are the articles linking to each
INLINKS = {0: [], 1: [10, 11, 12], 2: [20, 21], 3: [10, 11, 13], 4: [21, 22], 5: [11, 13, 14]}
INLINKS.update({e: [] for e in range(6, 10)})
W = 100
LOG_W = math.log(100)  # 4.605170
REL_1_3 = 1 - (math.log(3) - math.log(2)) / (LOG_W - math.log(3))  # |A|=|B|=3, |A&B|=2: 0.884371
REL_1_5 = 1 - (math.log(3) - math.log(1)) / (LOG_W - math.log(3))  # |A&B|=1: 0.686701
REL_2_4 = 1 - (math.log(2) - math.log(1)) / (LOG_W - math.log(2))  # |A|=|B|=2, |A&B|=1: 0.822815


def _relatedness() -> Relatedness:
    return Relatedness([np.array(INLINKS[e], np.int64) for e in sorted(INLINKS)], W)



def test_relatedness_from_flat_sources_at_enwiki_page_ids():
    """The flat build (how a run's link targets load: no array per entity) gives the hand-computed values,
    with the page ids of a real dump (tens of millions) as sources."""
    shift = 70_000_000
    lists = [np.array(INLINKS[e], np.int64) + shift for e in sorted(INLINKS)]
    flat = Relatedness.from_flat(np.concatenate(lists), np.array([len(x) for x in lists]), W)
    assert flat.matrix.shape == (10, 8)  # the 8 distinct linking articles are the columns
    assert flat.pairwise(np.array([1, 3]))[0, 1] == pytest.approx(REL_1_3, abs=1e-6)
    assert flat.pairwise(np.array([1, 5]))[0, 1] == pytest.approx(REL_1_5, abs=1e-6)
    assert flat.pairwise(np.array([2, 4, 6]))[0, 1:].tolist() == pytest.approx([REL_2_4, 0.0], abs=1e-6)
    assert (flat.matrix != _relatedness().matrix).nnz == 0


def test_int32_sources_become_the_matrix_indices_in_place(monkeypatch):
    """int32 page ids (how a run's link targets load) are mapped to columns in place, a chunk at a time,
    into the same matrix as the int64 build; int64 ones are left as they were."""
    monkeypatch.setattr(tagme, "_TAKE_CHUNK", 3)  # several chunks, the last one short
    shift = 70_000_000
    lists = [np.array(INLINKS[e], np.int64) + shift for e in sorted(INLINKS)]
    lengths = np.array([len(x) for x in lists])
    wide = np.concatenate(lists)
    narrow = wide.astype(np.int32)
    taken = Relatedness.from_flat(narrow, lengths, W)
    assert np.shares_memory(taken.matrix.indices, narrow)  # no second array of the in-links
    assert (taken.matrix != _relatedness().matrix).nnz == 0
    assert taken.pairwise(np.array([1, 3]))[0, 1] == pytest.approx(REL_1_3, abs=1e-6)
    Relatedness.from_flat(wide, lengths, W)
    assert wide.min() >= shift  # an int64 input is not written


def test_relatedness_refuses_negative_sources():
    with pytest.raises(ValueError, match="page ids"):
        Relatedness.from_flat(np.array([3, -1]), np.array([2]), W)

def _dictionary() -> Dictionary:
    def c(lp, pages, common):
        return Candidates(lp, np.array(pages, np.int64), np.array(common, np.float32))

    return Dictionary.from_candidates(
        {
            "jaguar": c(0.5, [2, 1], [0.6, 0.4]),
            "amazon": c(0.5, [4, 3], [0.7, 0.3]),
            "brazil": c(0.8, [5], [1.0]),
            "new york": c(0.8, [7], [1.0]),
            "york": c(0.3, [8], [1.0]),
            "york city": c(0.9, [9], [1.0]),
            "rare": c(0.0005, [6], [1.0]),
        }
    )


def test_milne_witten_relatedness():
    rel = _relatedness().pairwise(np.array([1, 3, 5, 2, 4, 0], np.int64))
    assert rel[0, 1] == pytest.approx(REL_1_3, abs=1e-6)
    assert rel[0, 2] == pytest.approx(REL_1_5, abs=1e-6)
    assert rel[3, 4] == pytest.approx(REL_2_4, abs=1e-6)
    assert rel[0, 3] == 0 and rel[0, 0] == pytest.approx(1.0)  # disjoint; itself
    assert (rel[5] == 0).all() and (rel[:, 5] == 0).all()  # a page nobody links to
    assert np.allclose(rel, rel.T)


def test_votes_by_hand():
    cfg = TagmeConfig()
    voters = tagme._voters(["jaguar", "amazon", "brazil"], [], _dictionary(), cfg)
    # weights: Pr(p|a) / |Pg(a)|: jaguar 0.6/2, 0.4/2; amazon 0.7/2, 0.3/2; brazil 1/1
    assert voters.weight == pytest.approx([0.3, 0.2, 0.35, 0.15, 1.0])
    pages, inverse = np.unique(voters.page, return_inverse=True)
    scores = tagme.vote(voters, _relatedness().pairwise(pages), inverse)
    assert scores == pytest.approx(
        [
            0.35 * REL_2_4,  # jaguar -> Jaguar Cars: only Amazon (company) votes for it
            0.15 * REL_1_3 + 1.0 * REL_1_5,  # jaguar -> animal: rainforest and Brazil
            0.3 * REL_2_4,  # amazon -> company
            0.2 * REL_1_3 + 1.0 * REL_1_3,  # amazon -> rainforest (rel(3,5) = rel(1,3): same sizes, 2 shared)
            0.2 * REL_1_5 + 0.15 * REL_1_3,  # brazil -> Brazil
        ],
        abs=1e-6,
    )


def test_context_beats_commonness_and_rho_is_lp_plus_coherence():
    chosen = tagme.disambiguate(
        ["amazon", "brazil", "jaguar"], [], _dictionary(), _relatedness(), TagmeConfig()
    )
    assert {k: p for k, (p, _) in chosen.items()} == {"jaguar": 1, "amazon": 3, "brazil": 5}
    coherence = (REL_1_3 + REL_1_5) / 2  # Jaguar (animal) against the other chosen: 3 and 5
    assert chosen["jaguar"][1] == pytest.approx((0.5 + coherence) / 2, abs=1e-6)


def test_gold_anchors_vote_and_count_for_coherence():
    # alone, "jaguar" takes its most common sense; with Brazil as a gold link it is the animal
    alone = tagme.disambiguate(["jaguar"], [], _dictionary(), _relatedness(), TagmeConfig())
    assert alone["jaguar"] == (2, pytest.approx(0.25))  # no coherence: rho = lp / 2
    with_gold = tagme.disambiguate(["jaguar"], [5], _dictionary(), _relatedness(), TagmeConfig())
    assert with_gold["jaguar"] == (1, pytest.approx((0.5 + REL_1_5) / 2, abs=1e-6))


def test_rho_pruning_and_tau():
    keys = ["amazon", "brazil", "jaguar"]
    rho = (0.5 + (REL_1_3 + REL_1_5) / 2) / 2  # 0.642768
    kept = tagme.disambiguate(keys, [], _dictionary(), _relatedness(), TagmeConfig(rho_threshold=rho - 0.01))
    pruned = tagme.disambiguate(
        keys, [], _dictionary(), _relatedness(), TagmeConfig(rho_threshold=rho + 0.01)
    )
    assert "jaguar" in kept and "jaguar" not in pruned
    # tau above the animal's commonness (0.4): only Jaguar Cars may be chosen, whatever the votes
    tau = tagme.disambiguate(keys, [], _dictionary(), _relatedness(), TagmeConfig(tau=0.5, rho_threshold=0))
    assert tau["jaguar"][0] == 2


def test_epsilon_keeps_more_candidates_then_picks_the_most_common():
    # epsilon 1.0 keeps every candidate in the final pick, so commonness alone decides
    chosen = tagme.disambiguate(
        ["amazon", "brazil", "jaguar"],
        [],
        _dictionary(),
        _relatedness(),
        TagmeConfig(epsilon=1.0, rho_threshold=0),
    )
    assert chosen["jaguar"][0] == 2 and chosen["amazon"][0] == 4


def _spots(text: str, cfg=TagmeConfig()):
    tokens = text.split(" ")
    return [(s.key, s.first, s.stop) for s in tagme.spot(tokens, [False] * len(tokens), _dictionary(), cfg)]


def test_spotting_longest_match_and_overlaps():
    # "new york" (lp .8) contains "york" (lp .3): the inner, weaker spot goes
    assert _spots("in new york now") == [("new york", 1, 3)]
    # "york city" (lp .9) overlaps "new york" (lp .8): the stronger one wins, the other goes whole
    assert _spots("new york city") == [("york city", 1, 3)]
    # lp below the spotting threshold: not a spot; raising the threshold removes weaker ones
    assert _spots("rare jaguar") == [("jaguar", 1, 2)]
    assert _spots("jaguar brazil", TagmeConfig(min_link_prob=0.6)) == [("brazil", 1, 2)]


def test_spots_do_not_cross_line_breaks_and_skip_gold():
    tokens, breaks = ["new", "\n", "york", "jaguar", "brazil"], [False, True, False, False, False]
    assert [s.key for s in tagme.spot(tokens, breaks, _dictionary(), TagmeConfig())] == [
        "york",
        "jaguar",
        "brazil",
    ]
    starts, ends = [0, 3, 4, 9, 16], [3, 4, 8, 15, 22]
    found = tagme.annotate(
        tokens,
        starts,
        ends,
        breaks,
        [(16, 22, 5)],
        _dictionary(),
        _relatedness(),
        TagmeConfig(rho_threshold=0),
    )
    assert [(a.start, a.end, a.entity_id) for a in found] == [
        (4, 8, 8),
        (9, 15, 1),
    ]  # brazil is gold: not spotted


def test_the_plain_word_shortcut_gives_the_tokenizers_keys():
    # the shortcut must not change a key: every Unicode letter as a word of its own and packed 6 to a
    # word (`benchmarks/anchor_key.py --all-letters` puts each in 7 places), ASCII numbers, and the
    # tokenizer's exceptions as they are, lower- and upper-cased ("Dont" is "do nt")
    letters = [chr(c) for c in range(0x110000) if chr(c).isalpha()]
    words = ["".join(letters[i : i + 6]) for i in range(0, len(letters), 6)]
    names = [" ".join(words[i : i + 3]) for i in range(0, len(words), 3)]
    names += [" ".join(letters[i : i + 50]) for i in range(0, len(letters), 50)]
    names += ["Apollo 11", "1990", "007 Legends", "Cannot  Be", " leading", "trailing ", "", "   "]
    rules = list(tagme.nlp().tokenizer.rules)
    names += rules + [r.lower() for r in rules] + [r.upper() for r in rules]
    names += [f"The {r} Band" for r in rules]
    tagme.anchor_key.cache_clear()
    assert [tagme.anchor_key(n) for n in names] == [tagme.tokenizer_key(n) for n in names]
    assert tagme.anchor_key("Dont Look Back") == "do nt look back"
    assert tagme._plain(["Barack", "Obama"]) and not tagme._plain(["Dont", "Look"])


def test_anchor_keys_follow_the_tokenizer():
    assert tagme.anchor_key("New  York") == "new york"
    assert tagme.anchor_key("Paris, Texas") == "paris , texas"
    doc = tagme.nlp()("Paris, Texas.\nIt is small.")
    tokens, starts, ends, breaks = tagme.token_arrays(doc)
    assert tokens[:3] == ["paris", ",", "texas"] and breaks[tokens.index("\n")]
    assert [doc.text[s:e] for s, e in zip(starts[:3], ends[:3], strict=True)] == ["Paris", ",", "Texas"]


def _index_of_every_prefix(keys: list[str]) -> dict[str, int]:
    """What the spotting scan needs: each key's row, and each token prefix that is no key as a prefix."""
    index = {key: row for row, key in enumerate(keys)}
    for key in keys:
        words = key.split(" ")
        for n in range(1, len(words)):
            index.setdefault(" ".join(words[:n]), Dictionary.PREFIX)
    return index


def test_every_token_prefix_of_a_key_is_indexed_when_a_longer_key_comes_first():
    # a key ("new york") met as the prefix of an earlier one stops that key's walk: its own walk indexes "new"
    keys = ["new york city hall", "new york", "los angeles", "san jose state", "a  b"]
    empty = np.zeros(0)
    base = Dictionary(keys, np.ones(len(keys)), np.zeros(len(keys) + 1), empty, empty)
    assert base.index == _index_of_every_prefix(keys)
    new_keys = ["new york city", "san jose state university", "los angeles lakers"]
    n = len(keys) + len(new_keys)
    extended = Dictionary.extended(base, new_keys, np.ones(n), np.zeros(n + 1), empty, empty, empty, True)
    assert extended.index == _index_of_every_prefix(keys + new_keys)
