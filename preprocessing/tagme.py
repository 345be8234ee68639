"""Local TAGME (Ferragina and Scaiella 2010; Hasibi et al. 2016): spot, vote, disambiguate, prune.

The anchor dictionary and the in-link sets come from the run's own `pages` (see
`preprocessing.anchors`); this module holds them in memory and links one text at a time.

- Spotting: at every token, the longest n-gram (at most `max_anchor_tokens` tokens, not crossing a
  line break) whose lower-cased, space-joined tokens are a dictionary anchor with link probability
  >= `min_link_prob`. Overlapping spots are resolved greedily by link probability, then length: a
  spot inside a longer spot with a higher lp is dropped, and so is a container whose inner spot
  has the higher lp. Spots over the page's own (gold) anchors are skipped. Given the text, two
  rules use its capitals (`plausible`): a one-word piece of a longer capitalized name
  (`name_pieces`) or the modifier of a compound (`compound_pieces`) is no spot, since the whole is
  the mention and the piece names something else; and a KG alias that is no anchor must be
  capitalized.
- Voting: vote_b(p_a) = sum over p_b in Pg(b) of rel(p_b, p_a) * Pr(p_b|b) / |Pg(b)|, and
  rel_a(p_a) = sum over b != a of vote_b(p_a), with Milne-Witten relatedness over in-link sets.
  Every occurrence of one anchor text in a page is one voter (repeats would vote for themselves),
  and the page's gold anchors vote too, as certain single-candidate spots. The candidates of an
  anchor are its `max_candidates` most common targets.
- Disambiguation: candidates with commonness < tau are dropped; of the rest, the top epsilon
  fraction by rel_a (at least one) is kept and the most common of them chosen.
- Pruning: rho = (lp(a) + coherence) / 2, coherence = mean relatedness of the chosen entity to the
  other chosen entities (gold ones included); mentions with rho < `rho_threshold` are dropped.
- Windows: TAGME was designed for snippets; all-pairs voting over a whole article costs the square
  of its candidates (a long article has thousands). Voting, choice and coherence therefore run per
  window of about `context_tokens` tokens cut at line breaks (paragraphs), which keeps the cost
  linear in the article's length and the context local.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import sparse

from preprocessing.config import TagmeConfig


@dataclass(frozen=True)
class Candidates:
    link_prob: float
    entities: np.ndarray  # int64 entity ids (`link_targets`), most common first
    commonness: np.ndarray  # float32, same order


@dataclass(frozen=True)
class Spot:
    first: int  # token index
    stop: int  # token index past the last
    key: str
    link_prob: float


@dataclass(frozen=True)
class Annotation:
    start: int  # character offsets into the text
    end: int
    entity_id: int
    rho: float
    link_prob: float
    source: str = "tagme"  # `tagme`, `kg-alias` (a KG alias candidate won), `discourse`


class Relatedness:
    """Milne-Witten relatedness from in-link sets: row e of a sparse matrix holds the sources of entity e."""

    def __init__(self, sources: list[np.ndarray], n_pages: int):
        lengths = np.array([len(s) for s in sources], np.int64)
        flat = np.concatenate(sources).astype(np.int64) if sources else np.zeros(0, np.int64)
        self._build(flat, lengths, n_pages)

    @classmethod
    def from_flat(cls, flat: np.ndarray, lengths: np.ndarray, n_pages: int) -> Relatedness:
        """The same from every entity's sources back to back (`flat`, page ids) and their counts: no array
        per entity, which at enwiki size (9M targets, 180M in-links) cost 3 minutes and 2.4 GiB of
        transient memory beside the matrix, and left a fragmented heap. An int32 `flat` is taken over:
        it becomes the matrix's column indices, mapped in place (a copy is 0.7 GB at enwiki size)."""
        out = cls.__new__(cls)
        flat = flat if flat.dtype == np.int32 else np.asarray(flat, np.int64)
        out._build(flat, np.asarray(lengths, np.int64), n_pages)
        return out

    def _build(self, flat: np.ndarray, lengths: np.ndarray, n_pages: int) -> None:
        if len(flat) and flat.min() < 0:
            raise ValueError("in-link sources are page ids, never negative")
        # the columns are the distinct sources, in order: a presence mask over the page ids numbers them
        # in one pass, without np.unique's sorted copy of every in-link (int32: page ids < 2**31)
        present = np.zeros(int(flat.max()) + 1 if len(flat) else 0, bool)
        present[flat] = True
        column_of = np.cumsum(present, dtype=np.int32) - 1
        indices = _take_in_place(column_of, flat) if flat.dtype == np.int32 else column_of[flat]
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        self.matrix = sparse.csr_matrix(
            (np.ones(len(indices), np.float32), indices, indptr),
            shape=(len(lengths), int(present.sum())),
        )
        self.sizes = lengths.astype(np.float64)
        self.log_w = math.log(max(n_pages, 2))

    def pairwise(self, entities: np.ndarray) -> np.ndarray:
        """rel(p, q) for all pairs of `entities` (float64, symmetric, 1 on the diagonal if linked)."""
        sub = self.matrix[entities]
        common = (sub @ sub.T).toarray().astype(np.float64)
        size = self.sizes[entities]
        big, small = np.maximum.outer(size, size), np.minimum.outer(size, size)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = 1.0 - (np.log(big) - np.log(common)) / (self.log_w - np.log(small))
        return np.where(common > 0, np.clip(value, 0.0, 1.0), 0.0)


_TAKE_CHUNK = 1 << 22  # values mapped at a time by `_take_in_place` (16 MiB of int32)


def _take_in_place(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`table[values]` written over `values`, a chunk at a time (no second array of their size)."""
    for lo in range(0, len(values), _TAKE_CHUNK):
        chunk = values[lo : lo + _TAKE_CHUNK]
        chunk[:] = table[chunk]
    return values


class Dictionary:
    """Anchor text -> link probability and candidates, in flat arrays (a few dozen bytes an anchor
    beyond its key, instead of two small numpy arrays each).

    One dict maps every anchor to its row and every token-prefix of an anchor ("new" of "new york
    city") that is no anchor itself to -1: the spotting scan stops as soon as a key is neither.
    """

    PREFIX = -1

    def __init__(self, keys: list[str], link_prob, offsets, entities, commonness):
        self.link_prob = np.asarray(link_prob, np.float32)
        self.offsets = np.asarray(offsets, np.int64)  # candidates of row i: offsets[i]:offsets[i + 1]
        self.entities = np.asarray(entities, np.int64)
        self.commonness = np.asarray(commonness, np.float32)
        # KG aliases (`preprocessing.aliases`): which candidates come from the KG, and the first row
        # that is a KG alias only (no anchor of the dump)
        self.from_alias = np.zeros(len(self.entities), bool)
        self.first_alias_row = len(self.link_prob)
        self.index: dict[str, int] = {}
        self.add_keys(keys, start=0)

    def add_keys(self, keys: list[str], start: int) -> None:
        """Index `keys` as rows start, start + 1, ... and their token prefixes."""
        for row, key in enumerate(keys, start=start):
            self.index[key] = row
        index = self.index
        for key in keys:  # longest prefix first: one already indexed has its own prefixes indexed too
            while (cut := key.rfind(" ")) >= 0:
                key = key[:cut]
                if key in index:
                    break
                index[key] = self.PREFIX

    @classmethod
    def extended(
        cls,
        base: Dictionary,
        new_keys: list[str],
        link_prob,
        offsets,
        entities,
        commonness,
        from_alias,
        take_index: bool = False,
    ):
        """`base` with rows for `new_keys` after its own, and new candidate arrays for all rows.
        `take_index`: extend base's key index itself instead of a copy (the base is unusable after;
        at enwiki size the copy is a second dict of 24M keys)."""
        out = cls.__new__(cls)
        out.link_prob = np.asarray(link_prob, np.float32)
        out.offsets, out.entities = np.asarray(offsets, np.int64), np.asarray(entities, np.int64)
        out.commonness, out.from_alias = np.asarray(commonness, np.float32), np.asarray(from_alias, bool)
        out.first_alias_row = len(base.link_prob)
        out.index = base.index if take_index else dict(base.index)
        if take_index:
            base.index = None  # a lookup in the spent base fails loudly instead of finding alias rows
        for key in new_keys:  # a key that was only a prefix becomes a row
            out.index.pop(key, None)
        out.add_keys(new_keys, start=len(base.link_prob))
        return out

    def keys(self) -> list[str]:
        """Anchor keys in row order."""
        out = [""] * len(self.link_prob)
        for key, row in self.index.items():
            if row != self.PREFIX:
                out[row] = key
        return out

    def is_alias(self, row: int, entity_id: int) -> bool:
        """Whether `entity_id` is a candidate of `row` only through a KG alias."""
        lo, hi = self.offsets[row], self.offsets[row + 1]
        hits = np.flatnonzero(self.entities[lo:hi] == entity_id)
        return bool(len(hits)) and bool(self.from_alias[lo + hits[0]])

    @classmethod
    def from_candidates(cls, entries: dict[str, Candidates]) -> Dictionary:
        keys = list(entries)
        sizes = [len(entries[k].entities) for k in keys]
        return cls(
            keys,
            [entries[k].link_prob for k in keys],
            np.cumsum([0, *sizes]),
            np.concatenate([entries[k].entities for k in keys]) if keys else [],
            np.concatenate([entries[k].commonness for k in keys]) if keys else [],
        )

    def __len__(self) -> int:
        return len(self.link_prob)

    def row(self, key: str) -> int | None:
        """The anchor's row, None when `key` is no anchor (prefix or not)."""
        row = self.index.get(key)
        return None if row is None or row == self.PREFIX else row

    def candidates(self, row: int) -> Candidates:
        lo, hi = self.offsets[row], self.offsets[row + 1]
        return Candidates(float(self.link_prob[row]), self.entities[lo:hi], self.commonness[lo:hi])


def spot(
    tokens: list[str], breaks: np.ndarray | list[bool], dictionary: Dictionary, cfg: TagmeConfig
) -> list[Spot]:
    """Longest dictionary match at every token (no match crosses a token flagged in `breaks`),
    then overlaps resolved greedily by link probability and length."""
    found = [s for i in range(len(tokens)) if (s := _longest_at(tokens, breaks, i, dictionary, cfg))]
    return _without_overlaps(found)


def _longest_at(tokens, breaks, first: int, dictionary: Dictionary, cfg: TagmeConfig) -> Spot | None:
    if breaks[first]:
        return None
    best = None
    key, stop = tokens[first], first + 1
    index, link_prob = dictionary.index, dictionary.link_prob
    while True:
        row = index.get(key)
        if row is None:  # neither an anchor nor the start of one
            return best
        if row != Dictionary.PREFIX and link_prob[row] >= cfg.min_link_prob:
            best = Spot(first, stop, key, float(link_prob[row]))
        if stop >= len(tokens) or stop - first >= cfg.max_anchor_tokens or breaks[stop]:
            return best
        key = f"{key} {tokens[stop]}"
        stop += 1


def _without_overlaps(spots: list[Spot]) -> list[Spot]:
    taken: set[int] = set()
    kept = []
    for s in sorted(spots, key=lambda s: (-s.link_prob, s.first - s.stop, s.first)):
        span = range(s.first, s.stop)
        if not taken.intersection(span):
            taken.update(span)
            kept.append(s)
    return sorted(kept, key=lambda s: s.first)


@dataclass
class _Voters:
    """All candidates of all voters flattened: voter index, page, prior, vote weight."""

    group: np.ndarray
    page: np.ndarray
    prior: np.ndarray
    weight: np.ndarray


def _voters(keys: list[str], gold: list[int], dictionary: Dictionary, cfg: TagmeConfig) -> _Voters:
    groups, pages, priors = [], [], []
    for g, key in enumerate(keys):
        entry = dictionary.candidates(dictionary.row(key))
        n = min(cfg.max_candidates, len(entry.entities))
        groups.append(np.full(n, g))
        pages.append(entry.entities[:n])
        priors.append(entry.commonness[:n].astype(np.float64))
    for g, page in enumerate(gold, start=len(keys)):
        groups.append(np.array([g]))
        pages.append(np.array([page], np.int64))
        priors.append(np.array([1.0]))
    group = np.concatenate(groups) if groups else np.zeros(0, np.int64)
    sizes = np.bincount(group) if len(group) else np.zeros(0)
    prior = np.concatenate(priors) if priors else np.zeros(0)
    weight = prior / sizes[group] if len(group) else prior
    return _Voters(group, np.concatenate(pages) if pages else np.zeros(0, np.int64), prior, weight)


def vote(voters: _Voters, rel_pages: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """rel_a(p) for every candidate: votes of all other voters (never of the candidate's own voter)."""
    per_page = np.bincount(inverse, weights=voters.weight, minlength=len(rel_pages))
    total = rel_pages @ per_page
    # remove the candidate's own voter: its candidates' weighted relatedness to the candidate
    own = np.zeros(len(voters.group))
    for g in np.unique(voters.group):
        idx = np.flatnonzero(voters.group == g)
        own[idx] = rel_pages[np.ix_(inverse[idx], inverse[idx])] @ voters.weight[idx]
    return total[inverse] - own


def _choose(idx: np.ndarray, scores: np.ndarray, prior: np.ndarray, cfg: TagmeConfig) -> int | None:
    """Index of the chosen candidate of one voter, or None when none passes tau."""
    idx = idx[prior[idx] >= cfg.tau]
    if len(idx) == 0:
        return None
    keep = max(1, math.ceil(cfg.epsilon * len(idx)))
    top = idx[np.lexsort((-prior[idx], -scores[idx]))][:keep]
    return int(top[np.argmax(prior[top])])


def disambiguate(
    keys: list[str], gold: list[int], dictionary: Dictionary, relatedness: Relatedness, cfg: TagmeConfig
) -> dict[str, tuple[int, float]]:
    """anchor key -> (chosen entity id, rho) for the keys that survive tau and rho pruning; `gold`
    are the entity ids of the page's own anchors."""
    if not keys:
        return {}
    voters = _voters(keys, gold, dictionary, cfg)
    pages, inverse = np.unique(voters.page, return_inverse=True)
    rel_pages = relatedness.pairwise(pages)
    scores = vote(voters, rel_pages, inverse)
    chosen = {
        g: _choose(np.flatnonzero(voters.group == g), scores, voters.prior, cfg) for g in range(len(keys))
    }
    picked = {g: c for g, c in chosen.items() if c is not None}
    gold_rows = np.flatnonzero(voters.group >= len(keys))
    entity_rows = np.array([*picked.values(), *gold_rows], np.int64)
    result = {}
    for g, c in picked.items():
        others = entity_rows[entity_rows != c]
        coherence = float(rel_pages[inverse[c], inverse[others]].mean()) if len(others) else 0.0
        rho = (float(dictionary.link_prob[dictionary.row(keys[g])]) + coherence) / 2
        if rho >= cfg.rho_threshold:
            result[keys[g]] = (int(voters.page[c]), rho)
    return result


def annotate(
    tokens: list[str],
    starts: list[int],
    ends: list[int],
    breaks: list[bool],
    gold: list[tuple[int, int, int | None]],
    dictionary: Dictionary,
    relatedness: Relatedness,
    cfg: TagmeConfig,
    stats: Counter | None = None,
    text: str | None = None,
    forms: dict | None = None,
) -> list[Annotation]:
    """TAGME over one tokenized text. `gold` are the page's own anchors (start, end, entity id or None).

    With the `text`, spots are checked against its capitals (name pieces, KG-alias spots); `forms`
    (`preprocessing.discourse.forms`) are the article's own names, spotted and linked by discourse."""
    from preprocessing import discourse  # it builds on this module: imported when first needed

    stats = stats if stats is not None else Counter()
    caps = [text[i : i + 1].isupper() for i in starts] if text is not None else None
    spots, spoken = _all_spots(
        tokens, breaks, gold_tokens(starts, ends, gold), caps, forms, dictionary, cfg, stats
    )
    out = []
    for first, stop in windows(breaks, cfg.context_tokens):
        lo, hi = starts[first] if first < len(starts) else 0, ends[stop - 1] if stop else 0
        in_window = [s for s in spots if first <= s.first < stop]
        said = [s for s in spoken if first <= s.first < stop]
        context = sorted({e for g_start, _, e in gold if e is not None and lo <= g_start < hi})
        keys = {s.key for s in in_window} | {s.key for s in said if dictionary.row(s.key) is not None}
        chosen = disambiguate(sorted(keys), context, dictionary, relatedness, cfg)
        out += _chosen_annotations(in_window, chosen, starts, ends, dictionary, stats)
        out += discourse.choose(
            said, forms or {}, chosen, context, starts, ends, dictionary, relatedness, cfg
        )
    return sorted(out, key=lambda a: a.start)


def _all_spots(
    tokens, breaks, over_gold, caps, forms, dictionary, cfg, stats
) -> tuple[list[Spot], list[Spot]]:
    """(TAGME spots, discourse spots): off the gold anchors, through the case rules, no overlaps."""
    from preprocessing import discourse

    spots = _free(spot(tokens, breaks, dictionary, cfg), over_gold)
    if caps is not None:
        spots = plausible(spots, tokens, breaks, caps, dictionary, cfg, stats)
    spoken = []
    if forms and cfg.discourse:
        spoken = discourse.spots(tokens, breaks, caps, forms, dictionary, cfg)
        spots, spoken = discourse.without_overlaps(spots, _free(spoken, over_gold), len(tokens))
    stats["spots"] += len(spots) + len(spoken)
    return spots, spoken


def _chosen_annotations(spots, chosen, starts, ends, dictionary: Dictionary, stats) -> list[Annotation]:
    out = []
    for s in spots:
        if s.key not in chosen:
            stats["spots_dropped_by_rho"] += 1
            continue
        entity_id, rho = chosen[s.key]
        source = "kg-alias" if dictionary.is_alias(dictionary.row(s.key), entity_id) else "tagme"
        out.append(Annotation(starts[s.first], ends[s.stop - 1], entity_id, rho, s.link_prob, source))
    return out


_CONNECTORS = frozenset({"of", "for", "de", "von", "van", "del", "der", "du", "da", "la"})
_OPENERS = frozenset({".", "!", "?", ":", ";", '"', "(", "“", "'", "-", "–", "—", "*", "|"})


def sentence_initial(tokens: list[str], breaks, i: int) -> bool:
    """Whether token i opens a sentence, line or quote: capitalized there by grammar, not as a name."""
    return i == 0 or breaks[i - 1] or tokens[i - 1] in _OPENERS


def _capital_at(i: int, tokens, breaks, caps) -> bool:
    return 0 <= i < len(tokens) and caps[i] and not breaks[i]


def name_piece(s: Spot, tokens: list[str], breaks, caps: list[bool]) -> bool:
    """A capitalized one-word spot inside a longer run of capitalized words (`Black` of `Black Hawk
    War`, `Statistics` of `Institute for Statistics`), connectors like `of` allowed inside the run.

    A spot of several words is a name the dump links as a whole: the capitals next to it are
    mostly titles and demonyms (`President William McKinley`, `the French Pierre-Joseph Proudhon`)."""
    if not caps[s.first] or s.stop - s.first > 1:
        return False
    right = s.stop + (s.stop < len(tokens) and tokens[s.stop] in _CONNECTORS)
    if right > s.stop and breaks[s.stop]:
        right = s.stop
    joined = s.first > 0 and tokens[s.first - 1] in _CONNECTORS
    left = s.first - 1 - joined
    # a capitalized word before a connector starts a name even at a line start (`Outline of X`)
    left_name = _capital_at(left, tokens, breaks, caps) and (
        (joined and tokens[left] not in _stop_words()) or not sentence_initial(tokens, breaks, left)
    )
    return _capital_at(right, tokens, breaks, caps) or (left_name and not breaks[s.first - 1])


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


def _content_word(i: int, tokens, breaks, caps) -> bool:
    """A lower-case word that is no stop word."""
    return (
        0 <= i < len(tokens)
        and not breaks[i]
        and not caps[i]
        and tokens[i].isalpha()
        and tokens[i] not in _stop_words()
    )


def compound_piece(s: Spot, tokens: list[str], breaks, caps: list[bool]) -> bool:
    """A lower-case spot followed by a content word on its line (`decimal point`, `landscape
    architecture` for `landscape`): English compounds end in their head, so the spot modifies an
    entity it does not name. A spot after a modifier is that head and keeps its sense (`sinful
    idolatry`, `opposing authority`). A capitalized spot is left alone: a name followed by its
    verb is as common as a compound (`Lincoln signed`)."""
    return not caps[s.first] and _content_word(s.stop, tokens, breaks, caps)


def plausible(
    spots: list[Spot], tokens, breaks, caps, dictionary: Dictionary, cfg: TagmeConfig, stats
) -> list[Spot]:
    """Spots that pass the case rules: no name pieces (`name_pieces`); a KG alias that is no anchor
    only where the text capitalizes it, and a one-word one only inside a sentence (aliases hold
    common words: `It`, `Her`, `This` name works)."""
    kept = []
    for s in spots:
        if cfg.name_pieces and name_piece(s, tokens, breaks, caps):
            stats["spots_name_piece"] += 1
        elif (
            cfg.compound_pieces
            and s.link_prob < cfg.compound_min_link_prob
            and compound_piece(s, tokens, breaks, caps)
        ):
            stats["spots_compound_piece"] += 1
        elif _alias_only(dictionary, s.key) and not _alias_spot_ok(s, tokens, breaks, caps):
            stats["spots_alias_lowercase"] += 1
        else:
            kept.append(s)
    return kept


def _alias_only(dictionary: Dictionary, key: str) -> bool:
    row = dictionary.row(key)
    return row is not None and row >= dictionary.first_alias_row


def _alias_spot_ok(s: Spot, tokens, breaks, caps) -> bool:
    if not caps[s.first]:
        return False
    return s.stop - s.first > 1 or not sentence_initial(tokens, breaks, s.first)


def windows(breaks: list[bool], size: int) -> list[tuple[int, int]]:
    """Token ranges of about `size` tokens, cut after a line break (or hard at twice the size)."""
    cuts, first = [], 0
    for i, is_break in enumerate(breaks):
        length = i + 1 - first
        if (is_break and length >= size) or length >= 2 * size:
            cuts.append((first, i + 1))
            first = i + 1
    if first < len(breaks) or not cuts:
        cuts.append((first, len(breaks)))
    return cuts


def gold_tokens(starts: list[int], ends: list[int], gold: list[tuple[int, int, int | None]]) -> np.ndarray:
    """Per token, whether it overlaps one of the page's gold anchors (one pass, then O(1) a spot)."""
    mask = np.zeros(len(starts) + 1, np.int32)
    begin, finish = np.asarray(starts), np.asarray(ends)
    for g_start, g_end, _ in gold:
        lo, hi = np.searchsorted(finish, g_start, "right"), np.searchsorted(begin, g_end, "left")
        if lo < hi:
            mask[lo] += 1
            mask[hi] -= 1
    return np.cumsum(mask[:-1]) > 0


def _free(spots: list[Spot], taken: np.ndarray) -> list[Spot]:
    """The spots that touch no token flagged in `taken`."""
    if not taken.any():
        return spots
    prefix = np.concatenate([[0], np.cumsum(taken)])
    return [s for s in spots if prefix[s.stop] == prefix[s.first]]


# what `nlp` imports: 3 s (thinc brings torch), deferred so that importing this module stays cheap; a
# pool of workers that tokenize names it, so it is imported once before the workers start
WORKER_IMPORTS = ["spacy"]


@lru_cache(maxsize=1)
def nlp():
    """spaCy's blank English tokenizer with the rule-based sentencizer: offline, no model package."""
    import spacy

    pipeline = spacy.blank("en")
    pipeline.add_pipe("sentencizer")
    pipeline.max_length = 50_000_000  # long articles are fine: no parser, memory is linear in tokens
    return pipeline


def token_arrays(doc) -> tuple[list[str], list[int], list[int], list[bool]]:
    """Lower-cased tokens, char starts/ends; whitespace tokens (line breaks) become n-gram barriers."""
    from spacy.attrs import IDX, IS_SPACE, LENGTH

    # one pass in C for the numbers; Token objects are made once, for the strings
    idx, length, space = doc.to_array([IDX, LENGTH, IS_SPACE]).T
    starts = idx.tolist()
    ends = (idx + length).tolist()
    lower = [t.lower_ for t in doc]
    breaks = [bool(sp) or "\n" in tok for sp, tok in zip(space.tolist(), lower, strict=True)]
    return lower, starts, ends, breaks


def sentence_spans(doc, starts: list[int], ends: list[int]) -> list[tuple[int, int]]:
    """(start, end) characters of each sentence, from the sentencizer's flags in one pass.

    `doc.sents` would do: it re-scans the whole document for every sentence it yields."""
    from spacy.attrs import SENT_START

    first = np.flatnonzero(doc.to_array(SENT_START) == 1).tolist()
    if not first or first[0] != 0:
        first = [0, *first]
    bounds = [*first, len(starts)]
    return [(starts[a], ends[b - 1]) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


@lru_cache(maxsize=1_000_000)
def anchor_key(surface: str) -> str:
    """The dictionary key of an anchor text: its tokens lower-cased and joined by single spaces.

    Words of letters alone, or of ASCII digits alone, between spaces are spaCy's tokens as they are,
    unless one is a tokenizer exception ("Dont" is "Do nt"): those skip the tokenizer (most names and
    aliases; every letter of Unicode is checked against the tokenizer in tests/test_tagme.py)."""
    words = surface.split(" ")
    if _plain(words):
        return " ".join(w.lower() for w in words if w)
    return tokenizer_key(surface)


def tokenizer_key(surface: str) -> str:
    """`anchor_key` through spaCy's tokenizer, for every name: the shortcut's reference."""
    return " ".join(t.lower_ for t in nlp().tokenizer(surface) if not t.is_space)


def _plain(words: list[str]) -> bool:
    """Every word letters alone or ASCII digits alone, and none a tokenizer exception."""
    if not all(w.isalpha() or (w.isdecimal() and w.isascii()) for w in words if w):
        return False
    return _special_cases().isdisjoint(words)


@lru_cache(maxsize=1)
def _special_cases() -> frozenset[str]:
    """The strings the tokenizer splits by rule rather than by its punctuation patterns."""
    return frozenset(nlp().tokenizer.rules)
