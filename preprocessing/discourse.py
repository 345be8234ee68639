"""One sense per discourse: the names an article links tell what its later, unlinked mentions mean.

Wikipedia links an entity at its first mention; the later mentions are plain text, and they often
use the same words (`the Amazon`) or a short form of the linked name (`Lincoln` after `Abraham
Lincoln`, `Mercury` after `Mercury (planet)`). The article's own links are better evidence of its
sense than the dictionary's global commonness, so:

- `forms`: every anchor text the article links, with its target (a text linked to two targets in
  one article is ambiguous and left to TAGME); with `short_forms`, also each target's title, the
  title without its parenthetical, and a person-like title's last word (2-4 capitalized words), a
  short form being spotted only where the text capitalizes it, and dropped when it would name two
  linked targets (`Bush` after two Bushes).
- `spots`: the forms found in the text (longest match, line breaks are barriers).
- `without_overlaps`: a discourse spot beats the TAGME spots it overlaps unless one is longer
  (`Lincoln Memorial` stays whole).
- `choose`: a discourse spot takes the article's target, unless TAGME, voting in the same window,
  picked another sense whose coherence with the window is higher by more than `discourse_veto`
  ("unless voting strongly disagrees").
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from preprocessing import tagme


@dataclass(frozen=True)
class Form:
    entity_id: int
    short: bool  # a short form: spotted only where the text capitalizes it


_PARENTHETICAL = re.compile(r"\s*\([^()]*\)$")
_NAME_WORD = re.compile(r"[A-Z][a-z'\-]+|[A-Z]\.")
_LOWER_WORD = re.compile(r"\b[a-z]+\b")


def without_parenthetical(title: str) -> str:
    """`Mercury (planet)` -> `Mercury`."""
    return _PARENTHETICAL.sub("", title)


def short_forms(title: str, common_words: set[str] = frozenset()) -> list[str]:
    """Title, title without parenthetical, and the last word of a person-like name (2-4 capitalized
    words, the last not in `common_words`)."""
    bare = without_parenthetical(title)
    out = [title, bare]
    words = bare.split(" ")
    person_like = 2 <= len(words) <= 4 and all(_NAME_WORD.fullmatch(w) for w in words)
    if person_like and len(words[-1]) >= 3 and words[-1].lower() not in common_words:
        out.append(words[-1])
    return out


def forms(text: str, links: list[dict], entity_of: dict[str, int], cfg: tagme.TagmeConfig) -> dict[str, Form]:
    """Anchor key -> the article's own target for it (see the module doc)."""
    surfaces: dict[str, set[int]] = defaultdict(set)
    shorts: dict[str, set[int]] = defaultdict(set)
    # a word the article also writes in lower case is a common noun there (`war`, `highway`), no surname
    lower_words = set(_LOWER_WORD.findall(text)) if cfg.short_forms else set()
    for ln in links:
        entity_id = entity_of.get(ln["target"])
        if entity_id is None:
            continue
        surfaces[tagme.anchor_key(text[ln["start"] : ln["end"]])].add(entity_id)
        if cfg.short_forms:
            for form in short_forms(ln["target"], lower_words):
                shorts[tagme.anchor_key(form)].add(entity_id)
    out = {k: Form(next(iter(v)), False) for k, v in surfaces.items() if len(v) == 1 and _spottable(k)}
    for key, ids in shorts.items():
        if len(ids) == 1 and key not in surfaces and _spottable(key):
            out[key] = Form(next(iter(ids)), True)
    return out


def _spottable(key: str) -> bool:
    return len(key) > 1 and any(c.isalpha() for c in key) and key.count(" ") < 6


def spots(tokens: list[str], breaks, caps: list[bool] | None, forms: dict[str, Form], dictionary, cfg):
    """The article's forms in its text, longest first (see `_spottable_here` for which)."""
    keys = list(forms)
    lexicon = tagme.Dictionary(
        keys, np.ones(len(keys), np.float32), np.zeros(len(keys) + 1, np.int64), [], []
    )
    probe = cfg.model_copy(update={"min_link_prob": 0.0})
    found = []
    for i in range(len(tokens)):
        s = tagme._longest_at(tokens, breaks, i, lexicon, probe)
        if s is not None and _spottable_here(s, forms[s.key], tokens, breaks, caps, dictionary, cfg):
            found.append(s)
    return tagme._without_overlaps(found)


def _spottable_here(s: tagme.Spot, form: Form, tokens, breaks, caps, dictionary, cfg) -> bool:
    """No form may break the spot rules (`Hermes` of `Hermes Trismegistus`, `quantum` of `quantum
    field`: the article's link of `quantum` says nothing of the compound); a short form must
    be capitalized in the text, and where it is an anchor of the dump that never names the entity,
    the dump's evidence wins (`Smith`)."""
    row = dictionary.row(s.key)
    lp = float(dictionary.link_prob[row]) if row is not None else 0.0  # the dump's, not the lexicon's
    probe = tagme.Spot(s.first, s.stop, s.key, lp)
    if caps is not None:
        # a capitalized form is a name the article uses: only a longer name may hide it (`Lincoln
        # signed` is no compound); a lower-case one obeys the compound rule like any spot
        if caps[s.first] and cfg.name_pieces and tagme.name_piece(probe, tokens, breaks, caps):
            return False
        if not caps[s.first] and not tagme.plausible(
            [probe], tokens, breaks, caps, dictionary, cfg, Counter()
        ):
            return False
    if not form.short:
        return True
    if caps is not None and not caps[s.first]:
        return False
    return (
        row is None
        or row >= dictionary.first_alias_row
        or form.entity_id in dictionary.candidates(row).entities
    )


def without_overlaps(tagme_spots: list[tagme.Spot], spoken: list[tagme.Spot], n_tokens: int):
    """(TAGME spots, discourse spots) with no overlaps: a discourse spot wins unless a TAGME spot it
    overlaps is longer. Each list is free of overlaps already, so per token one spot of each."""
    longest = np.zeros(n_tokens, np.int64)  # per token, the length of the TAGME spot covering it
    for t in tagme_spots:
        longest[t.first : t.stop] = t.stop - t.first
    kept_spoken = [d for d in spoken if longest[d.first : d.stop].max(initial=0) <= d.stop - d.first]
    said = np.zeros(n_tokens, bool)
    for d in kept_spoken:
        said[d.first : d.stop] = True
    return tagme._free(tagme_spots, said), kept_spoken


def choose(
    spoken, forms, chosen, context, starts, ends, dictionary, relatedness, cfg
) -> list[tagme.Annotation]:
    """Annotations of one window's discourse spots; `chosen` is TAGME's pick per key in the window,
    `context` the window's gold entities."""
    own = {s.key: forms[s.key].entity_id for s in spoken}
    theirs = {k: chosen[k][0] for k in own if k in chosen and chosen[k][0] != own[k]}
    coherence = {}
    if theirs:  # only a disagreement needs the vote's view: one relatedness matrix for the window
        others = [*context, *(e for e, _ in chosen.values())]
        coherence = _coherence(relatedness, {*(own[k] for k in theirs), *theirs.values()}, others)
    out = []
    for s in spoken:
        row = dictionary.row(s.key)
        lp = float(dictionary.link_prob[row]) if row is not None else 0.0
        start, end, mine = starts[s.first], ends[s.stop - 1], own[s.key]
        their = theirs.get(s.key)
        if their is not None and coherence[their] - coherence[mine] > cfg.discourse_veto:
            out.append(tagme.Annotation(start, end, their, chosen[s.key][1], lp, "tagme"))
        elif s.key in chosen and their is None:  # TAGME agrees: its mention, its rho
            out.append(tagme.Annotation(start, end, mine, chosen[s.key][1], lp, "tagme"))
        else:  # the article's own link for this name: lp 1, so rho (1 + coherence) / 2
            out.append(
                tagme.Annotation(start, end, mine, (1.0 + coherence.get(mine, 0.0)) / 2, lp, "discourse")
            )
    return out


def _coherence(relatedness: tagme.Relatedness, entities: set[int], others: list[int]) -> dict[int, float]:
    """Mean relatedness of each entity to the others (itself left out), one pairwise matrix."""
    ids = np.unique(np.array([*entities, *others], np.int64))
    rel = relatedness.pairwise(ids)
    others_idx = np.searchsorted(ids, np.array(others, np.int64))
    out = {}
    for e in entities:
        i = int(np.searchsorted(ids, e))
        cols = others_idx[np.array(others, np.int64) != e]
        out[e] = float(rel[i, cols].mean()) if len(cols) else 0.0
    return out
