"""Entity-linking quality and speed of local TAGME on a real pages-articles file, hidden-anchor style.

    python benchmarks/linking.py FILE [--holdout 0.5]
    python benchmarks/linking.py --gensim-sample      # a real 2016 enwiki excerpt shipped in gensim's wheel

The file is ingested and the anchor dictionary built from all its links (as `trelm link` does);
then a seeded `holdout` share of every article's anchors is hidden from the linker: they are
neither gold context nor skipped by the spotter, so the linker must find them again. A hidden
anchor counts as answered when a mention overlaps its span; precision = right target / answered,
recall = right target / hidden anchors. Scored at rho 0 (everything the disambiguation kept) and
rho 0.1/0.2/0.3, beside the most-common-sense baseline on the same spots (commonness alone:
epsilon 1, no pruning). Speed: articles/s of one process doing what a `link` worker does per page
(tokenize, sentences, spot, vote, prune), and the peak RSS of that process; then the in-memory
size of the dictionary per anchor, candidate and in-link edge, and what that makes at enwiki scale.
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
from realdata import BENCH, gensim_sample

from preprocessing import tagme
from preprocessing.anchors import build_dictionary, load_dictionary
from preprocessing.ingest import IngestConfig, ingest, inputs_for_file
from preprocessing.tagme import TagmeConfig
from storage.schemas import LINK_TARGETS, PAGES
from storage.shards import part_paths

RHOS = (0.0, 0.1, 0.2, 0.3)


def load_pages(run_dir: Path) -> list[dict]:
    return [row for path in part_paths(run_dir, PAGES) for row in pq.read_table(path).to_pylist()]


def entity_ids(run_dir: Path) -> tuple[dict[str, int], list[str]]:
    titles = [
        t
        for path in part_paths(run_dir, LINK_TARGETS)
        for t in pq.read_table(path, columns=["target"]).column(0).to_pylist()
    ]
    return {t: i for i, t in enumerate(titles)}, titles


def split_anchors(pages: list[dict], share: float, seed: int = 0) -> list[tuple[list[dict], list[dict]]]:
    """(visible, hidden) links of every page, drawn with a fixed seed."""
    rng = random.Random(seed)
    out = []
    for page in pages:
        draws = [(ln, rng.random() < share) for ln in page["links"]]
        out.append(([ln for ln, hide in draws if not hide], [ln for ln, hide in draws if hide]))
    return out


def link_all(pages, splits, entity_of, titles, model, cfg: TagmeConfig) -> tuple[list[list[dict]], float]:
    """Mentions of every page (target titles) and the seconds it took, one process."""
    dictionary, relatedness = model
    found, start = [], time.perf_counter()
    texts = [p["text"] for p in pages]
    for doc, (visible, _) in zip(tagme.nlp().pipe(texts, batch_size=32), splits, strict=True):
        tokens = tagme.token_arrays(doc)
        tagme.sentence_spans(doc, tokens[1], tokens[2])
        gold = [(ln["start"], ln["end"], entity_of.get(ln["target"])) for ln in visible]
        annotations = tagme.annotate(*tokens, gold, dictionary, relatedness, cfg, Counter())
        found.append(
            [
                {"start": a.start, "end": a.end, "target": titles[a.entity_id], "rho": a.rho}
                for a in annotations
            ]
        )
    return found, time.perf_counter() - start


# enwiki figures for the footprint estimate (assumptions, not measurements: ~7M articles with
# ~25 article links each; anchors linked at least twice; targets with at least one in-link)
ENWIKI = {"anchors": 15e6, "candidates": 25e6, "edges": 180e6, "targets": 9e6}


def footprint(run_dir: Path) -> dict[str, float]:
    """Bytes of the in-memory dictionary per unit, measured with tracemalloc while loading it."""
    tracemalloc.start()
    dictionary, relatedness = load_dictionary(run_dir)
    total = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    arrays = sum(
        a.nbytes
        for a in (dictionary.link_prob, dictionary.offsets, dictionary.entities, dictionary.commonness)
    )
    m = relatedness.matrix
    csr = m.data.nbytes + m.indices.nbytes + m.indptr.nbytes + relatedness.sizes.nbytes
    keys = len(dictionary.index)
    return {
        "anchors": len(dictionary),
        "keys": keys,
        "candidates": len(dictionary.entities),
        "edges": m.nnz,
        "targets": m.shape[0],
        "total MiB": total / 2**20,
        "bytes/key": (total - arrays - csr) / keys,
        "keys/anchor": keys / len(dictionary),
    }


def enwiki_estimate(f: dict[str, float]) -> float:
    """GiB of one worker's dictionary at enwiki scale: the dict per key, the arrays per anchor
    (lp 4 + offset 8) and per candidate (entity 8 + commonness 4), the CSR per edge (index 4 +
    data 4) and per target (indptr 8 + size 8)."""
    keys = ENWIKI["anchors"] * f["keys/anchor"]
    total = (
        keys * f["bytes/key"]
        + ENWIKI["anchors"] * 12
        + ENWIKI["candidates"] * 12
        + ENWIKI["edges"] * 8
        + ENWIKI["targets"] * 16
    )
    return total / 2**30


def score(splits, found: list[list[dict]], min_rho: float) -> dict[str, float]:
    hidden = answered = correct = 0
    for (_, hidden_links), mentions in zip(splits, found, strict=True):
        for ln in hidden_links:
            hidden += 1
            over = [
                m
                for m in mentions
                if m["start"] < ln["end"] and ln["start"] < m["end"] and m["rho"] >= min_rho
            ]
            if over:
                answered += 1
                correct += any(m["target"] == ln["target"] for m in over)
    p = correct / answered if answered else 1.0
    r = correct / hidden if hidden else 0.0
    return {"P": p, "R": r, "F1": 2 * p * r / (p + r) if p + r else 0.0, "answered": answered}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", type=Path)
    ap.add_argument("--gensim-sample", action="store_true")
    ap.add_argument("--holdout", type=float, default=0.5)
    args = ap.parse_args()
    src = gensim_sample() if args.gensim_sample else args.file
    if src is None:
        ap.error("give FILE or --gensim-sample")
    BENCH.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BENCH) as tmp:
        run = Path(tmp) / "run"
        ingest(IngestConfig(workers=2), inputs_for_file(src), run, progress=False)
        build_dictionary(TagmeConfig(), run, workers=2, memory_limit="2GB", progress=False)
        pages = load_pages(run)
        entity_of, titles = entity_ids(run)
        model = load_dictionary(run)
        sizes = footprint(run)
    splits = split_anchors(pages, args.holdout)
    rows = []
    for name, cfg in (
        ("TAGME", TagmeConfig(rho_threshold=0.0)),
        ("most common sense", TagmeConfig(epsilon=1.0, rho_threshold=0.0)),
    ):
        found, seconds = link_all(pages, splits, entity_of, titles, model, cfg)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        for rho in RHOS if name == "TAGME" else (0.0,):
            rows.append(
                {
                    "linker": name,
                    "rho >=": rho,
                    **score(splits, found, rho),
                    "articles/s (1 process)": len(pages) / seconds,
                    "peak RSS MiB": peak,
                }
            )
    hidden = sum(len(h) for _, h in splits)
    print(
        f"{src.name}: {len(pages)} articles, {hidden} hidden anchors (holdout {args.holdout}), "
        f"dictionary of {len(model[0])} anchors"
    )
    cols = ["linker", "rho >=", "P", "R", "F1", "answered", "articles/s (1 process)", "peak RSS MiB"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    print(
        f"\ndictionary in memory: {sizes['total MiB']:.1f} MiB for {sizes['anchors']} anchors "
        f"({sizes['keys']} dict keys with prefixes, {sizes['bytes/key']:.0f} B/key), {sizes['candidates']} "
        f"candidates, {sizes['targets']} targets, {sizes['edges']} in-link edges"
    )
    print(
        f"enwiki estimate ({', '.join(f'{k} {v:.3g}' for k, v in ENWIKI.items())}): "
        f"{enwiki_estimate(sizes):.1f} GiB per worker process"
    )


if __name__ == "__main__":
    main()
