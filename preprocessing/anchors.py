"""The TAGME anchor dictionary and in-link sets, built from the run's own `pages` links.

Two passes over the pages parts, each in parallel, each part's partial counts staged as Parquet and
merged by DuckDB (out of core, so the full enwiki's ~40M (anchor, target) pairs fit any machine):

1. links: for every link, its anchor key (`tagme.anchor_key`) and target -> link counts and
   commonness; and the (target, source) pairs -> in-link sets. Targets are normalized,
   redirect-resolved titles, so links to pages outside a partial dump (one split file, an
   excerpt) count too; each gets a dense `entity_id`. Anchors that TAGME never
   spots (one character, only digits and punctuation, more than `max_anchor_tokens` tokens, linked
   fewer than `min_link_count` times) are dropped here and counted.
2. text: every n-gram of every article (the same tokens and line barriers as spotting) that is a
   kept anchor is counted -> text_count, and link_prob = link_count / text_count; or, with
   `link_prob_per_article`, articles linking the anchor / articles containing it (the keyphraseness
   of Mihalcea and Csomai 2007): Wikipedia links an entity once an article, so counting every
   occurrence makes lp small for whatever an article names often (`Kentucky`, 22 times in
   `Abraham Lincoln`, which links it once) and rho pruning then drops its mentions everywhere.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from preprocessing import tagme
from preprocessing.parallel import process_pool
from storage import layout
from storage.code import module_code_version
from storage.duck import scratch, sql_files
from storage.schemas import ANCHORS, LINK_TARGETS, PAGES
from storage.shards import (
    Provenance,
    atomic_write,
    is_complete,
    iter_batches,
    part_paths,
    read_manifest,
    stable_hash,
    write_batches,
)

log = logging.getLogger(__name__)

_LINK_COUNTS = pa.schema([("anchor", pa.string()), ("target", pa.string()), ("count", pa.int64())])
_INLINK_PAIRS = pa.schema([("target", pa.string()), ("page_id", pa.int64()), ("source", pa.int64())])
# occurrences, and articles with at least one (for `link_prob_per_article`)
_TEXT_COUNTS = pa.schema([("anchor", pa.string()), ("count", pa.int64()), ("articles", pa.int64())])
_LINKED_ARTICLES = pa.schema([("anchor", pa.string()), ("articles", pa.int64())])


def dictionary_provenance(tagme_cfg: tagme.TagmeConfig, run_dir: Path) -> Provenance:
    pages = read_manifest(run_dir, PAGES)
    config = tagme_cfg.model_dump(include={"min_link_count", "max_anchor_tokens", "link_prob_per_article"})
    code = module_code_version(__name__)
    return Provenance(stable_hash(config), (("pages", pages["fingerprint"]),), code)


def build_dictionary(
    tagme_cfg: tagme.TagmeConfig, run_dir: Path, workers: int, memory_limit: str, progress: bool = True
) -> dict:
    """Write `anchors` and `link_targets` (once per dump); returns the `anchors` manifest."""
    provenance = dictionary_provenance(tagme_cfg, run_dir)
    if all(is_complete(run_dir, d, provenance.fingerprint) for d in (ANCHORS, LINK_TARGETS)):
        return read_manifest(run_dir, ANCHORS)
    staging = layout.staging_dir(run_dir, "anchors")
    staging.mkdir(parents=True, exist_ok=True)
    parts = part_paths(run_dir, PAGES)
    _parallel(_link_counts_part, [(p, staging) for p in parts], workers, "dictionary: links", progress)
    conn = scratch(memory_limit, staging / "duckdb-tmp")
    drops = _merge_link_counts(conn, staging, tagme_cfg)
    keys_path = staging / "keys.parquet"
    conn.execute(f"COPY (SELECT anchor FROM kept) TO {sql_files(keys_path)} (FORMAT parquet)")
    _parallel(
        _text_counts_part, [(p, staging, keys_path) for p in parts], workers, "dictionary: text", progress
    )
    _number_targets(conn, staging)
    manifest = _write_anchors(conn, staging, run_dir, provenance, drops, tagme_cfg.link_prob_per_article)
    _write_link_targets(conn, run_dir, provenance)
    conn.close()
    shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _parallel(fn, jobs: list[tuple], workers: int, desc: str, progress: bool) -> None:
    with process_pool(workers, ["preprocessing.anchors", *tagme.WORKER_IMPORTS]) as pool:
        list(tqdm(pool.map(fn, jobs), total=len(jobs), desc=desc, disable=not progress))


# ---------------------------------------------------------------- pass 1: links


def _link_counts_part(job: tuple[Path, Path]) -> None:
    """Anchor -> target counts and (target, target page, source) triples of one pages part, staged."""
    path, staging = job
    counts: Counter = Counter()
    articles: Counter = Counter()  # anchor -> articles that link it
    pairs: set[tuple[str, int | None, int]] = set()
    for batch in iter_batches(path, ["page_id", "text", "links"]):
        for page_id, text, links in zip(*(batch.column(i).to_pylist() for i in range(3)), strict=True):
            keys = [tagme.anchor_key(text[link["start"] : link["end"]]) for link in links]
            for key, link in zip(keys, links, strict=True):
                counts[(key, link["target"])] += 1
                pairs.add((link["target"], link["target_page_id"], page_id))
            articles.update(set(keys))
    rows = [(a, p, c) for (a, p), c in counts.items()]
    _stage(staging / "links" / path.name, _LINK_COUNTS, rows)
    _stage(staging / "linked" / path.name, _LINKED_ARTICLES, list(articles.items()))
    _stage(staging / "pairs" / path.name, _INLINK_PAIRS, list(pairs))


def _stage(path: Path, schema: pa.Schema, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    table = pa.table([pa.array(c, f.type) for c, f in zip(columns, schema, strict=True)], schema=schema)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="lz4"))


def _merge_link_counts(conn, staging: Path, cfg: tagme.TagmeConfig) -> dict[str, int]:
    """Tables `anchor_links` (anchor, target, count) and `kept` (anchor, link_count); drop counts."""
    conn.execute(
        f"""CREATE TABLE anchor_links AS SELECT anchor, target, sum(count)::BIGINT AS count
        FROM read_parquet({sql_files(staging / "links" / "*.parquet")}) WHERE anchor <> ''
        GROUP BY anchor, target"""
    )
    conn.execute(
        f"""CREATE TABLE totals AS SELECT anchor, sum(count)::BIGINT AS link_count,
          CASE WHEN length(anchor) < 2 THEN 'dropped_anchor_one_char'
               WHEN regexp_full_match(anchor, '[0-9\\s[:punct:]]+') THEN 'dropped_anchor_numeric'
               WHEN len(string_split(anchor, ' ')) > {cfg.max_anchor_tokens} THEN 'dropped_anchor_too_long'
               WHEN sum(count) < {cfg.min_link_count} THEN 'dropped_anchor_rare'
          END AS drop_reason
        FROM anchor_links GROUP BY anchor"""
    )
    conn.execute("CREATE TABLE kept AS SELECT anchor, link_count FROM totals WHERE drop_reason IS NULL")
    rows = conn.execute("SELECT drop_reason, count(*) FROM totals WHERE drop_reason IS NOT NULL GROUP BY 1")
    return dict(rows.fetchall())


# ---------------------------------------------------------------- pass 2: text


@lru_cache(maxsize=1)
def _kept_anchors(keys_path: Path) -> tuple[tagme.Dictionary, int]:
    """The kept anchor keys (loaded once per worker process) as a dictionary without candidates,
    and the longest one's token count."""
    keys = pq.read_table(keys_path, columns=["anchor"]).column(0).to_pylist()
    no_candidates = np.zeros(len(keys) + 1, np.int64)
    anchors = tagme.Dictionary(keys, np.ones(len(keys), np.float32), no_candidates, [], [])
    return anchors, max((k.count(" ") + 1 for k in keys), default=1)


def count_anchor_text(
    tokens: list[str], breaks: list[bool], anchors: tagme.Dictionary, max_tokens: int, counts
):
    """Add every n-gram of one text that is an anchor to `counts` (overlapping n-grams all count)."""
    index = anchors.index
    for first in range(len(tokens)):
        if breaks[first]:
            continue
        key, stop = tokens[first], first + 1
        while True:
            row = index.get(key)
            if row is None:
                break
            if row != tagme.Dictionary.PREFIX:
                counts[key] += 1
            if stop >= len(tokens) or stop - first >= max_tokens or breaks[stop]:
                break
            key = f"{key} {tokens[stop]}"
            stop += 1


def _text_counts_part(job: tuple[Path, Path, Path]) -> None:
    path, staging, keys_path = job
    anchors, max_tokens = _kept_anchors(keys_path)
    counts: Counter = Counter()
    articles: Counter = Counter()  # anchor -> articles whose text has it
    tokenizer = tagme.nlp().tokenizer
    for batch in iter_batches(path, ["text"], batch_size=256):
        for doc in tokenizer.pipe(batch.column(0).to_pylist()):
            tokens, _, _, breaks = tagme.token_arrays(doc)
            in_article: Counter = Counter()
            count_anchor_text(tokens, breaks, anchors, max_tokens, in_article)
            counts.update(in_article)
            articles.update(in_article.keys())
    rows = [(a, c, articles[a]) for a, c in counts.items()]
    _stage(staging / "text" / path.name, _TEXT_COUNTS, rows)


# ---------------------------------------------------------------- outputs


def _number_targets(conn, staging: Path) -> None:
    """Table `entity` (entity_id, target, page_id, sources): every link target, numbered by title."""
    conn.execute(
        f"""CREATE TABLE entity AS
        SELECT (row_number() OVER (ORDER BY target) - 1)::INTEGER AS entity_id, target,
               max(page_id) AS page_id, list(DISTINCT source ORDER BY source) AS sources
        FROM read_parquet({sql_files(staging / "pairs" / "*.parquet")}) GROUP BY target"""
    )


def _write_anchors(
    conn, staging: Path, run_dir: Path, provenance: Provenance, drops: dict, per_article: bool
) -> dict:
    # an anchor's link occurrences are text occurrences too; tokenization quirks (an anchor split
    # differently inside a sentence) can leave text_count below link_count, hence the greatest()
    link_prob = (
        "coalesce(l.n, 0) / greatest(coalesce(t.articles, 0), coalesce(l.n, 0), 1)"
        if per_article
        else "k.link_count / greatest(coalesce(t.n, 0), k.link_count)"
    )
    query = f"""
        WITH text AS (SELECT anchor, sum(count)::BIGINT AS n, sum(articles)::BIGINT AS articles
                      FROM read_parquet({sql_files(staging / "text" / "*.parquet")}) GROUP BY anchor),
             linked AS (SELECT anchor, sum(articles)::BIGINT AS n
                        FROM read_parquet({sql_files(staging / "linked" / "*.parquet")}) GROUP BY anchor),
             targets AS (SELECT a.anchor,
                                list({{'entity_id': e.entity_id, 'target': a.target, 'count': a.count}}
                                     ORDER BY a.count DESC, e.entity_id) AS targets
                         FROM anchor_links a JOIN entity e USING (target)
                         WHERE a.anchor IN (SELECT anchor FROM kept) GROUP BY a.anchor)
        SELECT k.anchor, k.link_count, greatest(coalesce(t.n, 0), k.link_count) AS text_count,
               ({link_prob})::FLOAT AS link_prob, g.targets
        FROM kept k LEFT JOIN text t USING (anchor) LEFT JOIN linked l USING (anchor)
        JOIN targets g USING (anchor) ORDER BY k.anchor"""
    stats = {**drops, "anchors": conn.execute("SELECT count(*) FROM kept").fetchall()[0][0]}
    return _write_query(conn, query, run_dir, ANCHORS, provenance, stats)


def _write_link_targets(conn, run_dir: Path, provenance: Provenance) -> dict:
    stats = dict(
        zip(
            ("targets", "targets_in_dump"),
            conn.execute("SELECT count(*), count(page_id) FROM entity").fetchall()[0],
            strict=True,
        )
    )
    query = "SELECT entity_id, target, page_id, sources FROM entity ORDER BY entity_id"
    return _write_query(conn, query, run_dir, LINK_TARGETS, provenance, stats)


def _write_query(conn, query: str, run_dir: Path, dataset, provenance: Provenance, stats: dict) -> dict:
    reader = conn.sql(query).to_arrow_reader(batch_size=64_000)
    return write_batches(run_dir, dataset, provenance, reader, stats)


def load_dictionary(run_dir: Path) -> tuple[tagme.Dictionary, tagme.Relatedness]:
    """The anchor dictionary and in-link sets of a run, in memory, for linking."""
    keys, link_prob, sizes, entities, counts = [], [], [], [], []
    for path in part_paths(run_dir, ANCHORS):
        table = pq.read_table(path, columns=["anchor", "link_prob", "targets"])
        targets = table.column("targets").combine_chunks()
        keys += table.column("anchor").to_pylist()
        link_prob.append(table.column("link_prob").to_numpy())
        sizes.append(np.diff(targets.offsets.to_numpy()))
        entities.append(targets.flatten().field("entity_id").to_numpy())
        counts.append(targets.flatten().field("count").to_numpy())
    sizes_all = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes_all)])
    counts_all = np.concatenate(counts).astype(np.float64) if counts else np.zeros(0)
    # commonness = count / the anchor's total link count, for each (anchor, target)
    totals = np.repeat(np.add.reduceat(counts_all, offsets[:-1]) if len(counts_all) else [], sizes_all)
    dictionary = tagme.Dictionary(
        keys,
        np.concatenate(link_prob) if link_prob else [],
        offsets,
        np.concatenate(entities) if entities else [],
        counts_all / totals if len(counts_all) else [],
    )
    relatedness = _relatedness(run_dir)
    # Arrow's allocator keeps the freed read buffers for reuse: at enwiki size 1.6 GiB a worker, for ever
    pa.default_memory_pool().release_unused()
    return dictionary, relatedness


def _relatedness(run_dir: Path) -> tagme.Relatedness:
    """The in-link sets joined into one array that the matrix takes over (see `_in_links`); the parts
    are let go before the matrix is built."""
    parts = [_in_links(path) for path in part_paths(run_dir, LINK_TARGETS)]
    flat = np.concatenate([f for f, _ in parts]) if parts else np.zeros(0, np.int32)
    sizes = np.concatenate([n for _, n in parts]) if parts else np.zeros(0, np.int64)
    del parts
    pa.default_memory_pool().release_unused()
    return tagme.Relatedness.from_flat(flat, sizes, read_manifest(run_dir, PAGES)["rows"])


def _in_links(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One part's sources back to back and their counts; the sources as int32 page ids where they fit
    (enwiki's are below 2**31), so that the matrix can take them over as its column indices."""
    lists = pq.read_table(path, columns=["sources"]).column("sources").combine_chunks()
    sources = lists.flatten()
    if len(sources) == 0 or pc.max(sources).as_py() < 2**31:
        sources = sources.cast(pa.int32())
    return sources.to_numpy(), np.diff(lists.offsets.to_numpy())
