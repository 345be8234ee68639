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

The aliases are keyed once a run (`write`, called by link's prepare: Wikidata5M's 11M names through
`tagme.anchor_key`, grouped by DuckDB out of core) into `kg_aliases` and `kg_alias_entities`; every
link worker reads them (`load`) and extends its own dictionary, instead of keying and grouping them
itself (at enwiki size that was half of a worker's start, and 4 GiB of its peak).
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy import sparse

from preprocessing import tagme
from storage import layout
from storage.duck import scratch, sql_files
from storage.schemas import KG_ALIAS_ENTITIES, KG_ALIASES
from storage.shards import (
    IncompleteDatasetError,
    Provenance,
    ShardWriter,
    iter_batches,
    part_paths,
    write_batches,
    write_table,
)

_BATCH = 100_000  # alias rows keyed, staged and read back at a time
# keys, their entity ids' offsets (len(keys) + 1) and the ids: one batch of `kg_aliases`
AliasBatch = tuple[list[str], np.ndarray, np.ndarray]
_STAGED = pa.schema([("seq", pa.int64()), ("key", pa.string()), ("entity_id", pa.int32())])
# a key's entities in first-seen order, the keys in first-seen order (the stream's, as a dict of
# ordered sets would give them): a deterministic order for the dictionary rows they become
_GROUPED = """
SELECT key, list(entity_id ORDER BY seq) AS entity_ids
FROM (SELECT key, entity_id, min(seq) AS seq FROM read_parquet({staged}) GROUP BY key, entity_id)
GROUP BY key ORDER BY min(seq)"""


def write(
    run_dir: Path,
    rows: Iterable[tuple],
    n_targets: int,
    cfg: tagme.TagmeConfig,
    provenance: Provenance,
    memory_limit: str,
) -> dict:
    """`kg_aliases` and `kg_alias_entities` from alias rows (alias, target, entity_id or None, page_id,
    qid), read once as a stream; returns kg_aliases' manifest (written last: it marks both complete).
    `n_targets`: the link targets' count, the first id for an entity no link targets."""
    ShardWriter(run_dir, KG_ALIASES, provenance).open()
    staging = layout.staging_dir(run_dir, "kg_aliases")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    new_entities = _NewEntities(n_targets)
    try:
        stats = _stage_keys(rows, new_entities, cfg, staging / "keys.parquet")
    finally:  # a stream of the alias query holds its DuckDB until closed, also when keying fails
        getattr(rows, "close", lambda: None)()
    write_table(run_dir, KG_ALIAS_ENTITIES, provenance, new_entities.table())
    conn = scratch(memory_limit, staging / "duckdb-tmp")
    try:
        grouped = conn.sql(_GROUPED.format(staged=sql_files(staging / "keys.parquet")))
        manifest = write_batches(
            run_dir, KG_ALIASES, provenance, grouped.to_arrow_reader(batch_size=_BATCH), stats
        )
    finally:
        conn.close()
    shutil.rmtree(staging, ignore_errors=True)
    return manifest


class _NewEntities:
    """Ids after the link targets' for the entities that no link targets, in first-seen order."""

    def __init__(self, n_targets: int):
        self.n_targets = n_targets
        self.rows: dict[str, tuple[int, int | None, str | None]] = {}  # target -> (id, page_id, qid)

    def id_of(self, target: str, page_id: int | None, qid: str | None) -> int:
        if target not in self.rows:
            self.rows[target] = (self.n_targets + len(self.rows), page_id, qid)
        return self.rows[target][0]

    def table(self) -> pa.Table:
        ids, page_ids, qids = zip(*self.rows.values(), strict=True) if self.rows else ((), (), ())
        columns = {"entity_id": ids, "target": list(self.rows), "page_id": page_ids, "qid": qids}
        return pa.table(columns, schema=KG_ALIAS_ENTITIES.schema)


def _stage_keys(
    rows: Iterable[tuple], new_entities: _NewEntities, cfg: tagme.TagmeConfig, path: Path
) -> Counter:
    """(seq, key, entity_id) of every alias TAGME could spot, in stream order, into `path`; counts."""
    stats: Counter = Counter()
    seq, stream = 0, iter(rows)
    with pq.ParquetWriter(path, _STAGED) as writer:
        while chunk := list(islice(stream, _BATCH)):
            keys, ids = [], []
            for alias, target, entity_id, page_id, qid in chunk:
                key = tagme.anchor_key(alias)
                if spottable(key, cfg):
                    keys.append(key)
                    ids.append(new_entities.id_of(target, page_id, qid) if entity_id is None else entity_id)
            writer.write_table(
                pa.table([pa.array(range(seq, seq + len(keys)), pa.int64()), keys, ids], schema=_STAGED)
            )
            seq += len(keys)
            stats["kg_aliases_read"] += len(chunk)
            stats["kg_aliases_unspottable"] += len(chunk) - len(keys)
    stats["kg_alias_entities_new"] = len(new_entities.rows)
    return stats


def spottable(key: str, cfg: tagme.TagmeConfig) -> bool:
    """Whether TAGME could spot the key: two characters or more, a letter, at most max_anchor_tokens
    tokens (the rules the dictionary build drops anchors by)."""
    return len(key) > 1 and any(c.isalpha() for c in key) and key.count(" ") < cfg.max_anchor_tokens


def load(
    run_dir: Path, dictionary: tagme.Dictionary, relatedness: tagme.Relatedness, cfg: tagme.TagmeConfig
) -> tuple[tagme.Dictionary, tagme.Relatedness, list[tuple]]:
    """(dictionary, relatedness, new entities' (target, page_id, qid) by id) with the run's KG
    aliases; `dictionary` is consumed (extended in place)."""
    n_targets = len(relatedness.sizes)
    entities = pa.concat_tables(pq.read_table(p) for p in part_paths(run_dir, KG_ALIAS_ENTITIES))
    ids = entities.column("entity_id").to_numpy()
    if not np.array_equal(ids, np.arange(n_targets, n_targets + len(ids))):
        raise IncompleteDatasetError(
            f"kg_aliases in {run_dir} was keyed for another dictionary (its new entities do not follow "
            f"the {n_targets} link targets)",
            fix="run `trelm link` again: its prepare keys the aliases for the current dictionary",
        )
    extended = extend(dictionary, stored_groups(run_dir), cfg, take_index=True)
    new = list(zip(*(entities.column(c).to_pylist() for c in ("target", "page_id", "qid")), strict=True))
    return extended, with_entities(relatedness, n_targets + len(new)), new


def stored_groups(run_dir: Path) -> Iterator[AliasBatch]:
    """`kg_aliases` in batches, streamed."""
    for path in part_paths(run_dir, KG_ALIASES):
        for batch in iter_batches(path, ["key", "entity_ids"], batch_size=_BATCH):
            yield alias_batch(batch)


def alias_batch(batch: pa.RecordBatch) -> AliasBatch:
    """A record batch of `kg_aliases` (maybe a slice of a larger one) as an AliasBatch."""
    lists = batch.column(1)
    offsets = lists.offsets.to_numpy().astype(np.int64)  # a slice's start past 0
    ids = pc.list_flatten(lists).to_numpy().astype(np.int64)
    return batch.column(0).to_pylist(), offsets - offsets[0], ids


def extend(
    dictionary: tagme.Dictionary,
    batches: Iterable[AliasBatch],
    cfg: tagme.TagmeConfig,
    take_index: bool = False,
) -> tagme.Dictionary:
    """The dictionary with the aliases' entities as candidates (see the module doc); `batches` of
    distinct keys, read once; `take_index`: `dictionary` is consumed (`Dictionary.extended`)."""
    n = len(dictionary)
    new_keys, add_rows, add_entities, add_common = _additions(dictionary, batches, cfg)
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


def as_batch(groups: Iterable[tuple[str, Collection[int]]]) -> AliasBatch:
    """(key, entity ids) pairs as one batch."""
    groups = list(groups)
    keys, ids = zip(*groups, strict=True) if groups else ((), ())
    sizes = [len(i) for i in ids]
    flat = np.fromiter((e for i in ids for e in i), np.int64, sum(sizes))
    return list(keys), np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), flat


def as_pairs(batches: Iterable[AliasBatch]) -> list[tuple[str, list[int]]]:
    """Batches as (key, entity ids) pairs (for reading `kg_aliases` by hand)."""
    return [
        (key, entities[offsets[i] : offsets[i + 1]].tolist())
        for keys, offsets, entities in batches
        for i, key in enumerate(keys)
    ]


def _additions(dictionary: tagme.Dictionary, batches: Iterable[AliasBatch], cfg: tagme.TagmeConfig):
    """(new keys, and the rows, entities and commonness of every candidate to add): an alias that is
    an anchor adds the entities its row lacks at `kg_alias_prior`; one that is no anchor becomes a row
    whose entities share it equally."""
    start = len(dictionary)
    new_keys: list[str] = []
    rows_out, entities_out, common_out = [], [], []
    for keys, offsets, entities in batches:
        sizes = np.diff(offsets)
        # a key that is only a token prefix of anchors (PREFIX) becomes a row of its own, as a new one
        prefix = tagme.Dictionary.PREFIX
        rows = np.fromiter((dictionary.index.get(k, prefix) for k in keys), np.int64, len(keys))
        new = rows == prefix
        rows[new] = start + len(new_keys) + np.arange(np.count_nonzero(new))
        new_keys += [k for k, is_new in zip(keys, new.tolist(), strict=True) if is_new]
        prior = np.where(new, 1.0 / np.maximum(sizes, 1), cfg.kg_alias_prior)
        candidate_rows = np.repeat(rows, sizes)
        fresh = ~_is_candidate(dictionary, candidate_rows, entities)
        rows_out.append(candidate_rows[fresh])
        entities_out.append(entities[fresh])
        common_out.append(np.repeat(prior, sizes)[fresh])
    return (
        new_keys,
        np.concatenate([np.zeros(0, np.int64), *rows_out]),
        np.concatenate([np.zeros(0, np.int64), *entities_out]),
        np.concatenate([np.zeros(0, np.float32), *common_out]).astype(np.float32),
    )


def _is_candidate(dictionary: tagme.Dictionary, rows: np.ndarray, entities: np.ndarray) -> np.ndarray:
    """Whether each entity is already a candidate of its row (rows past the dictionary's: no)."""
    old = np.unique(rows[rows < len(dictionary)])
    lo, hi = dictionary.offsets[old], dictionary.offsets[old + 1]
    lengths = hi - lo
    # the candidate slots of the `old` rows, and each as one code: row * 2^31 + entity (ids are int32)
    slots = np.repeat(lo - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    known = np.repeat(old, lengths) << 31 | dictionary.entities[slots]
    return np.isin(rows << 31 | entities, known)


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
