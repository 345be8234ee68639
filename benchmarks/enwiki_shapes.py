"""Generated inputs at English Wikipedia size, in the formats the stages read, for benchmarks/capacity.py.

Two inputs whose memory does not follow the dump's text but the sizes of its link graph and title map:

- `dictionary_staging(out, scale)`: the per-part staging Parquet files that `build_dictionary`'s
  merge reads (`links`, `linked`, `pairs`, `text`, one file per 20,000-page part, the enwiki preset's
  part size), for 15M anchors, 25M (anchor, target) candidates, 180M links and 9M link targets at
  scale 1. Anchor link counts and target in-link degrees are Zipf-like: every candidate is linked at
  least once, the other 155M links fall on candidates with weight 1/rank^0.9, so a few anchors
  (`united states`) carry millions of links and most carry one or two, as in a real dump.
- `resolve_inputs(run_dir, scale, linked_parts)`: staged `pages` parts (titles of 6.9M articles) and
  `redirects` parts (10M redirects, 4% of them double) plus a `page_props.sql.gz` (a QID per
  article), what ingest's resolve phase reads. `linked_parts` of the parts carry the full link
  density (26 links a page, 80% to article titles, 15% to redirects, 5% to pages that do not exist);
  the others have none, so the title map is full size while generation stays minutes.

The counts are the issue's (15M anchors, 180M in-links, 17M titles = 6.9M articles + 10M redirects)
and the README's footprint paragraph's (25M candidates, 9M link targets); they are inputs, not
results. Everything is seeded (seed 0) and vectorized (numpy, Arrow compute), so the strings are
never Python objects. Text is empty: the text's cost is measured on the real excerpt.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache, wraps
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from kg_load import _alias_counts, _phrases, _words

from preprocessing.resolve import STAGED_PAGES
from storage.schemas import ANCHORS, LINK_TARGETS, PAGES, REDIRECTS
from storage.shards import PartInfo, Provenance, ShardWriter, part_paths

ENWIKI = {
    "articles": 6_900_000,
    "redirects": 10_000_000,
    "anchors": 15_000_000,
    "candidates": 25_000_000,
    "links": 180_000_000,
    "targets": 9_000_000,
}
PAGES_PER_PART = 20_000  # the enwiki preset's ingest.pages_per_part
LINKS_PER_PAGE = ENWIKI["links"] / ENWIKI["articles"]  # 26
_PROVENANCE = Provenance("generated", (), "generated")


def counts(scale: float) -> dict[str, int]:
    out = {k: int(v * scale) for k, v in ENWIKI.items()}
    out["parts"] = max(1, round(out["articles"] / PAGES_PER_PART))
    return out


def _vocab(rng: np.random.Generator, n: int = 600_000) -> pa.Array:
    return pa.array([w.lower() for w in _words(rng, n)], pa.string())


@lru_cache(maxsize=8)
def _zipf_cdf(n: int, exponent: float) -> np.ndarray:
    return np.cumsum(1.0 / np.arange(1, n + 1) ** exponent)


def _zipf_picks(rng: np.random.Generator, n: int, size: int, exponent: float = 0.9) -> np.ndarray:
    """`size` indices into 0..n-1 with P(i) ~ 1/(i+1)^exponent (index 0 the most common)."""
    cdf = _zipf_cdf(n, exponent)
    return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1]), n - 1)


def _titles(rng, vocab: pa.Array, prefix: str, ids: np.ndarray) -> pa.Array:
    """Distinct titles of about 20 characters: `Prefix word 123456`."""
    words = vocab.take(pa.array(rng.integers(0, len(vocab), len(ids))))
    return pc.binary_join_element_wise(pa.scalar(prefix), words, pc.cast(pa.array(ids), pa.string()), " ")


def _anchor_strings(rng, vocab: pa.Array, n: int) -> pa.Array:
    """`n` distinct lower-case anchors of 1-4 words (20/40/25/15% of the draws), words drawn Zipf-like,
    so multi-word anchors share prefixes (`new`, `new york`) as real ones do."""
    unique = pa.array([], pa.string())
    while len(unique) < n:
        size = int(1.5 * (n - len(unique))) + 1000
        n_words = rng.choice([1, 2, 3, 4], size, p=[0.2, 0.4, 0.25, 0.15])
        columns = []
        for k in range(4):
            picks = pa.array(_zipf_picks(rng, len(vocab), size, 0.7))
            empty = pa.scalar(None, pa.string())
            columns.append(pc.if_else(pa.array(n_words > k), vocab.take(picks), empty))
        joined = pc.binary_join_element_wise(*columns, " ", null_handling="skip")
        unique = pc.unique(pa.concat_arrays([unique, joined]))
    return unique.slice(0, n)


def _write(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="lz4")


def _generated_once(generate):
    """`generate(folder, ...)` writes its files into `folder` once: the facts it returns are saved in
    `folder/_generated.json`, last, and read from there on later calls (an interrupted one runs again)."""

    @wraps(generate)
    def once(folder: Path, *args) -> dict:
        marker = folder / "_generated.json"
        if marker.exists():
            return json.loads(marker.read_text())
        facts = generate(folder, *args)
        marker.write_text(json.dumps(facts))
        return facts

    return once


# ---------------------------------------------------------------- the anchor dictionary's staging


@_generated_once
def dictionary_staging(out: Path, scale: float) -> dict:
    """Write the staging files of `build_dictionary`'s merge into `out` (once per scale); their sizes."""
    c = counts(scale)
    rng = np.random.default_rng(0)
    vocab = _vocab(rng)
    anchors = _anchor_strings(rng, vocab, c["anchors"])
    targets = _titles(rng, vocab, "Title", np.arange(c["targets"]))
    # candidates: every anchor has one, the rest go to anchors Zipf-like (common anchors are ambiguous)
    extra = _zipf_picks(rng, c["anchors"], c["candidates"] - c["anchors"])
    cand_anchor = np.concatenate([np.arange(c["anchors"]), extra])
    # a candidate's target: every target is one's (a link target has a link), the rest Zipf-like
    # (popular targets are linked from many anchors)
    cand_target = np.concatenate(
        [rng.permutation(c["targets"]), _zipf_picks(rng, c["targets"], len(cand_anchor) - c["targets"])]
    )[rng.permutation(len(cand_anchor))]
    cand_anchor, cand_target = _unique_pairs(cand_anchor, cand_target, c["targets"])
    rows = {"links": 0, "pairs": 0, "text": 0}
    base = np.array_split(rng.permutation(len(cand_anchor)), c["parts"])
    for part in range(c["parts"]):
        n_links = int(PAGES_PER_PART * LINKS_PER_PAGE)
        # every candidate once somewhere, the rest of the part's links Zipf-like over the candidates
        picks = np.concatenate([base[part], _zipf_picks(rng, len(cand_anchor), n_links - len(base[part]))])
        name = f"part-{part:05d}.parquet"
        rows["links"] += _links_files(out, name, picks, cand_anchor, cand_target, anchors, targets)
        rows["pairs"] += _pairs_file(out, name, rng, part, cand_target[picks], targets)
        rows["text"] += _text_file(out, name, rng, cand_anchor[picks], anchors)
    return {**c, "candidates": len(cand_anchor), "staging_rows": rows, "scale": scale}


def _unique_pairs(a: np.ndarray, t: np.ndarray, n_targets: int) -> tuple[np.ndarray, np.ndarray]:
    keys = np.unique(a.astype(np.int64) * n_targets + t)
    return keys // n_targets, keys % n_targets


def _links_files(out, name, picks, cand_anchor, cand_target, anchors, targets) -> int:
    """`links/` (anchor, target, count) and `linked/` (anchor, articles) of one part."""
    pair, count = np.unique(picks, return_counts=True)
    a, t = pa.array(cand_anchor[pair]), pa.array(cand_target[pair])
    _write(
        out / "links" / name, pa.table({"anchor": anchors.take(a), "target": targets.take(t), "count": count})
    )
    # articles linking an anchor: its links in the part, at most one an article (~1 in 2 repeats)
    ids, n = np.unique(cand_anchor[picks], return_counts=True)
    articles = np.maximum(1, np.minimum(n, PAGES_PER_PART) // 2)
    _write(out / "linked" / name, pa.table({"anchor": anchors.take(pa.array(ids)), "articles": articles}))
    return len(pair)


def _pairs_file(out, name, rng, part: int, link_targets: np.ndarray, targets: pa.Array) -> int:
    """`pairs/` (target, its page id, source page) of one part: each link from one of its 20,000 pages,
    a (target, source) pair once; 3% of the targets have no page (red links, other namespaces)."""
    source = rng.integers(0, PAGES_PER_PART, len(link_targets))
    key = np.unique(link_targets.astype(np.int64) * PAGES_PER_PART + source)
    t, s = key // PAGES_PER_PART, key % PAGES_PER_PART + part * PAGES_PER_PART
    page_id = pa.array(t + 1, mask=(t % 33) == 0)
    _write(
        out / "pairs" / name, pa.table({"target": targets.take(pa.array(t)), "page_id": page_id, "source": s})
    )
    return len(key)


def _text_file(out, name, rng, linked_anchors: np.ndarray, anchors: pa.Array) -> int:
    """`text/` (anchor, count, articles) of one part: the part's linked anchors, seen in the text
    1-10 times as often as linked (link probability 0.1-1), and as many anchors again drawn Zipf-like
    that the part's text holds without linking them (`the`, `world war`)."""
    ids, n = np.unique(linked_anchors, return_counts=True)
    unlinked = np.unique(_zipf_picks(rng, len(anchors), len(ids)))
    all_ids = np.concatenate([ids, np.setdiff1d(unlinked, ids)])
    count = np.concatenate([n * rng.integers(1, 11, len(n)), rng.geometric(0.3, len(all_ids) - len(ids))])
    articles = np.maximum(1, np.minimum(count, PAGES_PER_PART) // 2)
    table = pa.table({"anchor": anchors.take(pa.array(all_ids)), "count": count, "articles": articles})
    _write(out / "text" / name, table)
    return len(all_ids)


def fake_pages_manifest(run_dir: Path, articles: int) -> None:
    """A `pages` manifest without parts: the dictionary reads only its row count (relatedness's W)."""
    part = PartInfo("part-00000.parquet", articles, 0, "generated", sha256="generated")
    ShardWriter(run_dir, PAGES, _PROVENANCE).finalize([part])


# ---------------------------------------------------------------- ingest's resolve


@_generated_once
def resolve_inputs(run_dir: Path, scale: float, linked_parts: int) -> dict:
    """Staged pages and redirects parts in `run_dir`, page_props beside it (once); the sizes."""
    c = counts(scale)
    rng = np.random.default_rng(1)
    vocab = _vocab(rng)
    titles = _titles(rng, vocab, "Article", np.arange(c["articles"]))
    redirect_titles = _titles(rng, vocab, "Redirect", np.arange(c["redirects"]))
    page_ids = np.arange(c["articles"], dtype=np.int64) * 3 + 10  # ids with gaps, as in a dump
    # a redirect's target: an article (95%), another redirect (4%: a double redirect), nothing (1%)
    kind = rng.random(c["redirects"])
    redirect_to = pc.if_else(
        pa.array(kind < 0.95),
        titles.take(pa.array(_zipf_picks(rng, c["articles"], c["redirects"]))),
        pc.if_else(
            pa.array(kind < 0.99),
            redirect_titles.take(pa.array(rng.integers(0, c["redirects"], c["redirects"]))),
            pa.scalar("Missing page"),
        ),
    )
    staged, redirect_parts, links = [], [], 0
    bounds = np.linspace(0, c["articles"], c["parts"] + 1).astype(int)
    redirect_bounds = np.linspace(0, c["redirects"], c["parts"] + 1).astype(int)
    for part in range(c["parts"]):
        lo, hi = bounds[part], bounds[part + 1]
        with_links = part < linked_parts
        table, n = _staged_table(rng, titles, redirect_titles, page_ids, lo, hi, with_links)
        links += n
        stats = {
            "articles": int(hi - lo),
            "redirects": int(redirect_bounds[part + 1] - redirect_bounds[part]),
            "linked": int(with_links),  # which parts carry links, for the benchmark's timing
        }
        writer = ShardWriter(run_dir, STAGED_PAGES, _PROVENANCE, compression="lz4")
        staged.append(writer.write_part(part, [table], stats=stats).name)
        r = slice(redirect_bounds[part], redirect_bounds[part + 1])
        red = pa.table({"title": redirect_titles[r], "target": redirect_to[r]})
        redirect_parts.append(ShardWriter(run_dir, REDIRECTS, _PROVENANCE).write_part(part, [red]))
    ShardWriter(run_dir, REDIRECTS, _PROVENANCE).finalize(redirect_parts)  # the link stage reads it
    _page_props(run_dir.parent / "generated-page_props.sql.gz", rng, page_ids)
    return {**c, "titles": c["articles"] + c["redirects"], "linked_parts": linked_parts, "links": links}


def _staged_table(rng, titles, redirect_titles, page_ids, lo: int, hi: int, with_links: bool):
    """One staged pages part: titles, ids, empty text, and (if `with_links`) 26 links a page."""
    n_pages = hi - lo
    per_page = rng.poisson(LINKS_PER_PAGE, n_pages) if with_links else np.zeros(n_pages, np.int64)
    n = int(per_page.sum())
    kind = rng.random(n)
    to_article = titles.take(pa.array(_zipf_picks(rng, len(titles), n)))
    to_redirect = redirect_titles.take(pa.array(rng.integers(0, len(redirect_titles), n)))
    target = pc.if_else(
        pa.array(kind < 0.8),
        to_article,
        pc.if_else(pa.array(kind < 0.95), to_redirect, pa.scalar("Red link")),
    )
    start = rng.integers(0, 10_000, n).astype(np.int32)
    null_i64 = pa.nulls(n, pa.int64())
    link = pa.StructArray.from_arrays(
        [pa.array(start), pa.array(start + 12), target, null_i64, pa.nulls(n, pa.string())],
        fields=list(PAGES.schema.field("links").type.value_type),
    )
    offsets = pa.array(np.concatenate([[0], np.cumsum(per_page)]).astype(np.int32))
    table = pa.table(
        {
            "page_id": pa.array(page_ids[lo:hi]),
            "rev_id": pa.array(page_ids[lo:hi] + 7),
            "title": titles[lo:hi],
            "qid": pa.nulls(n_pages, pa.string()),
            "text": pa.array([""] * n_pages, pa.large_string()),
            "links": pa.ListArray.from_arrays(offsets, link),
        }
    )
    return table.cast(PAGES.schema), n


def _page_props(path: Path, rng, page_ids: np.ndarray) -> None:
    """page_props.sql.gz as MediaWiki dumps it: INSERT lines of 10,000 rows, a QID per article."""
    qids = rng.permutation(len(page_ids)) * 7 + 1
    with gzip.open(path, "wt", compresslevel=1) as f:
        f.write("-- generated page_props\n")
        for i in range(0, len(page_ids), 10_000):
            values = ",".join(
                f"({p},'wikibase_item','Q{q}',NULL)"
                for p, q in zip(page_ids[i : i + 10_000].tolist(), qids[i : i + 10_000].tolist(), strict=True)
            )
            f.write(f"INSERT INTO `page_props` VALUES {values};\n")


# ---------------------------------------------------------------- KG aliases of a link worker


@_generated_once
def kg_alias_rows(out: Path, dict_run: Path, entities: int) -> dict:
    """What `link._kg_alias_rows` yields for a run at enwiki size with Wikidata5M's `entities`, as a
    Parquet file `out/rows.parquet` of (alias, title, entity_id, page_id, qid), written once: kg_load's
    alias counts (mean 2.4 an entity), the first alias one of the dictionary's anchors (a label is
    mostly its page's title, so an anchor), the others phrases of 1-4 words from a pool as large as
    their number (Wikidata's aliases are mostly distinct; kg_load's 1M-phrase pool would make each
    name ~6 entities' and understate the new keys); 9 in 10 entities are link targets (`entity_id`),
    the rest get ids after them in the link stage."""
    rng = np.random.default_rng(2)
    chunks = [pq.read_table(p, columns=["anchor"])["anchor"] for p in part_paths(dict_run, ANCHORS)]
    anchors = pa.chunked_array([c for chunked in chunks for c in chunked.chunks]).combine_chunks()
    targets = sum(pq.ParquetFile(p).metadata.num_rows for p in part_paths(dict_run, LINK_TARGETS))
    counts = _alias_counts(rng, entities)
    pool = pa.array(_phrases(rng, _words(rng, 50_000), int(counts.sum()) - entities, 1, 4))
    entity_of_row = np.repeat(np.arange(entities), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    source = rng.integers(0, len(pool), len(entity_of_row)) + len(anchors)  # an index into anchors + pool
    source[first] = rng.integers(0, len(anchors), entities)
    alias = pa.concat_arrays([anchors, pool]).take(pa.array(source))
    linked = rng.random(entities) < 0.9
    entity_id = pa.array(rng.permutation(targets)[np.arange(entities) % targets], mask=~linked)
    table = pa.table(
        {
            "alias": alias,
            "title": pc.binary_join_element_wise("Entity ", pa.array(entity_of_row).cast(pa.string()), ""),
            "entity_id": entity_id.take(pa.array(entity_of_row)),
            "page_id": pa.array(entity_of_row + 1),
            "qid": pc.binary_join_element_wise("Q", pa.array(7 * entity_of_row + 1).cast(pa.string()), ""),
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "rows.parquet", row_group_size=1_000_000)
    return {"entities": entities, "rows": table.num_rows, "linked": int(linked.sum())}


@_generated_once
def kg_alias_run(out: Path, title_run: Path, rows_file: Path) -> dict:
    """A run for `link._kg_alias_rows`' own query at enwiki size: the title run's pages, redirects and
    link targets (linked, not copied) and a `kg_entities` dataset holding the entities of `rows_file`
    (`kg_alias_rows`) with their aliases in order, the first as the label; their QIDs are the pages'."""
    from storage.duck import scratch, sql_files
    from storage.schemas import KG_ENTITIES
    from storage.shards import write_batches

    out.mkdir(parents=True, exist_ok=True)
    for name in ("pages", "redirects", "link_targets"):
        if not (out / name).exists():
            (out / name).symlink_to((title_run / name).resolve())
    query = f"""
        SELECT (row_number() OVER (ORDER BY qid) - 1)::INTEGER AS kg_id, qid,
               list(alias ORDER BY seq)[1] AS label, list(alias ORDER BY seq) AS aliases,
               NULL::VARCHAR AS description, 0 AS degree
        FROM (SELECT alias, qid, file_row_number AS seq
              FROM read_parquet({sql_files(rows_file)}, file_row_number = true))
        GROUP BY qid ORDER BY qid"""
    with scratch("8GB", out / "duckdb-tmp") as conn:
        reader = conn.sql(query).to_arrow_reader(batch_size=100_000)
        manifest = write_batches(out, KG_ENTITIES, Provenance("generated", (), "enwiki_shapes"), reader)
    return {"kg_entities": manifest["rows"]}


def stream_rows(path: Path, batch_rows: int = 100_000):
    """The rows of a Parquet file as tuples, a batch at a time (as DuckDB's `fetchmany` gives them)."""
    for batch in pq.ParquetFile(path).iter_batches(batch_rows):
        yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)
