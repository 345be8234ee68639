"""KG aliases as spots and candidates: names of entities that the dump's anchors rarely use.

Wikidata5M lists every entity's label and aliases; a dump's anchors know an entity only by the
texts that link it, and an entity linked once (or never) has few. `extend` adds each alias to the
anchor dictionary, ranked below anchor evidence:

- an alias that is an anchor gets the entity as one more candidate (after the anchor's own) with
  commonness `kg_alias_prior`: it wins only where voting puts it in the top epsilon alone;
- an alias that is no anchor becomes a spot with link probability `kg_alias_prior` (anchors win
  overlaps over it, and rho pruning asks for coherence with the context), its candidates sharing
  commonness equally. Such spots must be capitalized in the text (`tagme.plausible`).

Entities that no link of the dump targets get ids after the link targets' and no in-links.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping

import numpy as np
from scipy import sparse

from preprocessing import tagme


def alias_groups(rows: Iterable[tuple[str, int]], cfg: tagme.TagmeConfig) -> dict[str, dict[int, None]]:
    """Anchor key -> entity ids (a dict as an ordered set: first-seen order; turning 11M of them into
    lists was 12% of a worker's build), for the aliases TAGME could spot (`rows` is read once: a
    stream of Wikidata5M's 11M aliases need not be held)."""
    groups: dict[str, dict[int, None]] = defaultdict(dict)
    for alias, entity_id in rows:
        key = tagme.anchor_key(alias)
        if len(key) > 1 and any(c.isalpha() for c in key) and key.count(" ") < cfg.max_anchor_tokens:
            groups[key][entity_id] = None
    groups.default_factory = None  # from here a missing key raises KeyError instead of adding a set
    return groups


def extend(
    dictionary: tagme.Dictionary,
    groups: Mapping[str, Collection[int]],
    cfg: tagme.TagmeConfig,
    take_index: bool = False,
) -> tagme.Dictionary:
    """The dictionary with the aliases' entities as candidates (see the module doc); `take_index`:
    `dictionary` is consumed (`Dictionary.extended`)."""
    n = len(dictionary)
    new_keys, add_rows, add_entities, add_common = _additions(dictionary, groups, cfg)
    all_rows = np.concatenate([np.repeat(np.arange(n), np.diff(dictionary.offsets)), add_rows])
    order = np.argsort(all_rows, kind="stable")  # a row's anchor candidates stay first
    offsets = np.concatenate([[0], np.cumsum(np.bincount(all_rows, minlength=n + len(new_keys)))])
    from_alias = np.concatenate([np.zeros(len(dictionary.entities), bool), np.ones(len(add_entities), bool)])
    link_prob = np.concatenate([dictionary.link_prob, np.full(len(new_keys), cfg.kg_alias_prior, np.float32)])
    return tagme.Dictionary.extended(
        dictionary,
        new_keys,
        link_prob,
        offsets,
        np.concatenate([dictionary.entities, add_entities])[order],
        np.concatenate([dictionary.commonness, add_common])[order],
        from_alias[order],
        take_index,
    )


def _additions(dictionary: tagme.Dictionary, groups: Mapping[str, Collection[int]], cfg: tagme.TagmeConfig):
    """(new keys, and the rows, entities and commonness of every candidate to add)."""
    n = len(dictionary)
    new_keys: list[str] = []
    rows, entities, common = [], [], []
    for key, ids in groups.items():
        row = dictionary.row(key)
        if row is None:  # no anchor: the alias's entities share it equally
            row, prior, known = n + len(new_keys), 1.0 / len(ids), set()
            new_keys.append(key)
        else:
            prior, known = cfg.kg_alias_prior, set(dictionary.candidates(row).entities.tolist())
        fresh = [e for e in ids if e not in known]
        rows += [row] * len(fresh)
        entities += fresh
        common += [prior] * len(fresh)
    return (
        new_keys,
        np.array(rows, np.int64),
        np.array(entities, np.int64),
        np.array(common, np.float32),
    )


def with_entities(relatedness: tagme.Relatedness, n_entities: int) -> tagme.Relatedness:
    """`relatedness` with empty in-link rows up to `n_entities` (entities no link targets). The new
    matrix shares the in-links' arrays (only the row pointers grow): at enwiki size a copy is 1.3 GiB."""
    matrix = relatedness.matrix
    extra = n_entities - matrix.shape[0]
    if extra <= 0:
        return relatedness
    out = object.__new__(tagme.Relatedness)
    indptr = np.concatenate([matrix.indptr, np.full(extra, matrix.indptr[-1], matrix.indptr.dtype)])
    out.matrix = sparse.csr_matrix((matrix.data, matrix.indices, indptr), shape=(n_entities, matrix.shape[1]))
    out.sizes = np.concatenate([relatedness.sizes, np.zeros(extra)])
    out.log_w = relatedness.log_w
    return out
