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
(tokenize, sentences, spot, vote, prune), and the peak PSS of that process.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
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
    splits = split_anchors(pages, args.holdout)
    rows = []
    for name, cfg in (
        ("TAGME", TagmeConfig(rho_threshold=0.0)),
        ("most common sense", TagmeConfig(epsilon=1.0, rho_threshold=0.0)),
    ):
        found, seconds = link_all(pages, splits, entity_of, titles, model, cfg)
        pss = psutil.Process().memory_full_info().pss / 2**20
        for rho in RHOS if name == "TAGME" else (0.0,):
            rows.append(
                {
                    "linker": name,
                    "rho >=": rho,
                    **score(splits, found, rho),
                    "articles/s (1 process)": len(pages) / seconds,
                    "PSS MiB": pss,
                }
            )
    hidden = sum(len(h) for _, h in splits)
    print(
        f"{src.name}: {len(pages)} articles, {hidden} hidden anchors (holdout {args.holdout}), "
        f"dictionary of {len(model[0])} anchors"
    )
    cols = ["linker", "rho >=", "P", "R", "F1", "answered", "articles/s (1 process)", "PSS MiB"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
