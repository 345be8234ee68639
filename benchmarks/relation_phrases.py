"""Relation-phrase mining (`preprocessing.phrases`) at production shapes: a KG of Wikidata5M's size
(21M triples over 4.6M entities and 822 relations, in memory as DuckDB's join table) against generated
pages in the real `pages`/`mentions` schemas, enwiki-like (about 20 sentences of 20 words a page, 3 linked
mentions a sentence). Reported beside the floor of the same command: one DuckDB scan of the same parts
(unnesting the mentions and reading every text), so the ratio says what the pairing and the join add.

    PYTHONPATH=. .venv/bin/python benchmarks/relation_phrases.py --pages 40000 --parts 4
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preprocessing.phrases import mine_relation_phrases  # noqa: E402
from preprocessing.select import SelectConfig  # noqa: E402
from storage.duck import scratch, sql_str  # noqa: E402
from storage.schemas import MENTIONS, PAGES, RELATION_PHRASES  # noqa: E402
from storage.shards import Provenance, ShardWriter, part_paths  # noqa: E402

ENTITIES, RELATIONS, TRIPLES = 4_600_000, 822, 21_000_000
WORDS = [
    "the",
    "of",
    "and",
    "in",
    "to",
    "was",
    "a",
    "is",
    "for",
    "on",
    "as",
    "by",
    "with",
    "his",
    "he",
    "at",
    "from",
    "that",
    "it",
    "an",
    "were",
    "are",
    "which",
]  # filler: frequent English words
PHRASE = "was born in"  # the planted wording of relation 0


def page(rng: np.random.Generator, page_id: int, planted: list) -> tuple[dict, dict]:
    """One page of 20 sentences, each `w w <m1> w .. <m2> w .. <m3> .`; the first sentence plants a
    (head, 0, tail) triple stated with PHRASE."""
    text, sentences, mentions = [], [], []
    at = 0
    for s in range(20):
        start = at
        ids = rng.integers(0, ENTITIES, 3)
        if s == 0:
            ids[1] = ids[0] + 1  # the planted pair: head ids[0], tail ids[0] + 1
            planted.append((int(ids[0]), 0, int(ids[1])))
        for k, kg_id in enumerate(ids):
            filler = PHRASE if (s == 0 and k == 1) else " ".join(rng.choice(WORDS, 5))
            piece = f"{filler} "
            text.append(piece)
            at += len(piece)
            name = f"E{kg_id}"
            mentions.append({"start": at, "end": at + len(name), "surface": name, "target": name,
                             "target_page_id": None, "qid": f"Q{kg_id}", "kg_id": int(kg_id), "rho": 1.0,
                             "link_prob": 1.0, "source": "anchor"})  # fmt: skip
            text.append(name + " ")
            at += len(name) + 1
        text.append(". ")
        at += 2
        sentences.append({"start": start, "end": at - 1})
    body = "".join(text)
    return (
        {"page_id": page_id, "rev_id": 1, "title": f"P{page_id}", "qid": None, "text": body, "links": []},
        {"page_id": page_id, "sentences": sentences, "mentions": mentions},
    )


def write_corpus(run_dir: Path, pages: int, parts: int, rng) -> list:
    provenance = Provenance("bench", (), "bench")
    writers = [ShardWriter(run_dir, d, provenance).open() for d in (PAGES, MENTIONS)]
    infos, planted = ([], []), []
    for index, chunk in enumerate(np.array_split(np.arange(pages), parts)):
        rows = [page(rng, int(i), planted) for i in chunk]
        for column, (writer, dataset) in enumerate(zip(writers, (PAGES, MENTIONS), strict=True)):
            table = pa.Table.from_pylist([r[column] for r in rows], dataset.schema)
            infos[column].append(writer.write_part(index, [table]))
    for writer, info in zip(writers, infos, strict=True):
        writer.finalize(info)
    return planted


def scan_floor(run_dir: Path) -> float:
    """Seconds of one DuckDB pass over the same parts: every text's length, every mention unnested."""
    conn = scratch("2GB")
    started = time.perf_counter()
    for pages, mentions in zip(part_paths(run_dir, PAGES), part_paths(run_dir, MENTIONS), strict=True):
        conn.sql(f"SELECT sum(length(text)) FROM read_parquet({sql_str(pages)})").fetchall()
        unnested = f"read_parquet({sql_str(mentions)}) x, unnest(x.mentions) t(m)"
        conn.sql(f"SELECT count(*), sum(t.m.kg_id) FROM {unnested}").fetchall()
    conn.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=40_000)
    parser.add_argument("--parts", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        planted = write_corpus(run_dir, args.pages, args.parts, rng)
        noise = np.stack(
            [
                rng.integers(0, ENTITIES, TRIPLES),
                rng.integers(1, RELATIONS, TRIPLES),
                rng.integers(0, ENTITIES, TRIPLES),
            ],
            axis=1,
        )
        kept = np.concatenate([np.array(planted), noise])
        floor = scan_floor(run_dir)
        started = time.perf_counter()
        mine_relation_phrases(SelectConfig(), run_dir, kept, Provenance("bench", (), "bench"))
        seconds = time.perf_counter() - started
        top = pq.read_table(part_paths(run_dir, RELATION_PHRASES)[0]).to_pylist()
    found = [r for r in top if r["rel_id"] == 0 and r["rank"] == 1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{args.pages} pages in {args.parts} parts, {len(kept):,} triples (planted {len(planted):,})")
    print("| step | s | pages/s | / scan floor |")
    print("|---|---|---|---|")
    print(f"| scan floor (DuckDB over the parts) | {floor:.2f} | {args.pages / floor:,.0f} | 1.00 |")
    print(f"| mine_relation_phrases | {seconds:.2f} | {args.pages / seconds:,.0f} | {seconds / floor:.2f} |")
    print(f"peak RSS {peak:.2f} GiB (the benchmark's numpy triples included); relation 0 rank 1: {found}")
    if not found or found[0]["phrase"] != PHRASE or found[0]["count"] != len(planted):
        raise SystemExit(f"expected {PHRASE!r} x {len(planted)} as relation 0's top phrase, got {found}")


if __name__ == "__main__":
    main()
