"""Entity linking on a real pages-articles file with half of its links hidden in the text itself.

    python benchmarks/linking.py --gensim-sample                  # the real 2016 enwiki excerpt
    python benchmarks/linking.py --gensim-sample --copies 1 8 24  # and copies 8x and 24x its size
    python benchmarks/linking.py FILE

The honest protocol: before anything is ingested, a seeded `--holdout` share of the article links
in the wikitext is turned into plain text (`[[T|s]]` -> `s`, `[[T]]x` -> `Tx`); that file is
ingested and the dictionary built from it alone, exactly as `trelm link` would on a real dump. The
untouched file is ingested beside it only to know where the hidden links were: a hidden link is a
link of the untouched run missing from the hidden run (same page, same text, same offsets). The
linker sees the hidden run only; the hidden links, at their places in the text, are scored.

A hidden link is answered when a mention overlaps it; the mention with the largest overlap must
name its target. Precision = right / answered, recall = right / hidden links. Mentions the linker
finds outside the hidden links are not scored (nobody says whether they are right).

Reference, in the same run: the oracle-spotting most-common-sense baseline. It is told where
every hidden link is (which no linker is), looks its exact surface up among the visible links of
the whole run (any count, no threshold) and answers the surface's most common target.

Linker rows: the stage's own code (`preprocessing.link`'s local annotator: tokenizer, sentences,
TAGME, discourse, KG aliases), each row in a fresh forked process, so articles/s is one process
linking full articles (tokenizing included, loading excluded) and peak RSS is that process's peak
(dictionary loading included), as a `link` worker. Speed per core is articles per CPU second of
that process (the machine is shared, so wall time varies with the other load; both are shown).
The ablation rows switch one component off.

KG aliases: the excerpt has no QIDs and Wikidata5M cannot be fetched here, so the benchmark stands
in a KG built from the hidden run itself: one entity per article and per visible link target, its
aliases its title, the title without its parenthetical and every redirect to it (Wikidata labels
and aliases are mostly these). Nothing of the hidden links goes into it; unlike Wikidata5M it has
no entity that the run does not name, so it has fewer distractors and fewer aliases.

Last, per size: the in-memory size of the default dictionary per anchor, candidate and in-link
edge (tracemalloc while loading it), and what that makes at enwiki scale (`--footprint-only`
prints just that).

Copies (`--copies K`): the excerpt's pages K times (ids shifted, titles suffixed), each copy
hiding its own seeded half, as a multistream file with its index. A copy's hidden link is often
visible in another copy, so the larger runs measure speed and memory at size and what a larger
dictionary gives, not a harder task.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import re
import resource
import tempfile
import time
import tracemalloc
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
from ingest import shifted, split_pages, write_multistream
from realdata import BENCH, gensim_sample

from preprocessing import discourse, tagme, wikitext
from preprocessing import link as link_stage
from preprocessing.anchors import build_dictionary, load_dictionary
from preprocessing.ingest import IngestConfig, ingest, inputs_for_file
from preprocessing.link import LinkConfig
from preprocessing.tagme import TagmeConfig
from storage.schemas import LINK_TARGETS, PAGES, REDIRECTS
from storage.shards import part_paths

_ID_RE = re.compile(r"<id>(\d+)</id>")

# The ablation: the full linker, then one component switched off per row (`link.tagme` settings).
BEFORE = {
    "min_link_count": 2,
    "name_pieces": False,
    "compound_pieces": False,
    "discourse": False,
    "kg_aliases": False,
}
FULL = "full linker (defaults)"
ABLATION = {
    "TAGME before this change (min_link_count 2, no spot rules)": BEFORE,
    FULL: {},
    "  without discourse": {"discourse": False},
    "  without short forms": {"short_forms": False},
    "  without KG aliases": {"kg_aliases": False},
    "  without name-piece rule": {"name_pieces": False},
    "  without compound-piece rule": {"compound_pieces": False},
    "  with min_link_count 2": {"min_link_count": 2},
    "  with lp per article": {"link_prob_per_article": True},
}
# the full linker's mentions again, pruned harder: what precision costs in recall (no re-linking)
RHOS = (0.2, 0.3, 0.4, 0.5)
AT_SIZE = ("TAGME before this change (min_link_count 2, no spot rules)", FULL)


# ---------------------------------------------------------------- the hidden-link input


def hide_links(page_xml: str, share: float, seed: int) -> str:
    """The page with a seeded `share` of its article links turned into the text they show."""
    page_id = _ID_RE.search(page_xml)[1]
    rng = random.Random(f"{seed}:{page_id}")

    def plain(m: re.Match) -> str:
        raw, label, trail = m.groups()
        kind, _ = wikitext._classify(raw)
        if kind != wikitext._ARTICLE or rng.random() >= share:
            return m.group(0)
        shown = wikitext._shown_target(raw) if label is None else label or wikitext._pipe_trick(raw)
        return shown + trail

    return wikitext._LINK_RE.sub(plain, page_xml)


def make_runs(src: Path, copies: int, share: float, seed: int, tmp: Path) -> tuple[Path, Path]:
    """(hidden run, untouched run) of `src`'s pages repeated `copies` times."""
    head, pages = split_pages(src)
    pages = [shifted(p, c) for c in range(copies) for p in pages]
    runs = []
    for name, xml in (("hidden", [hide_links(p, share, seed) for p in pages]), ("gold", pages)):
        folder = tmp / name
        folder.mkdir()
        dump = write_multistream(
            head, xml, folder / "benchwiki-20260101-pages-articles-multistream1.xml-p1p9.bz2"
        )
        run = tmp / f"run-{name}"
        ingest(IngestConfig(workers=2, pages_per_part=200), inputs_for_file(dump), run, progress=False)
        runs.append(run)
    return runs[0], runs[1]


def load_pages(run_dir: Path) -> dict[int, dict]:
    return {
        row["page_id"]: row
        for path in part_paths(run_dir, PAGES)
        for row in pq.read_table(path, columns=["page_id", "title", "text", "links"]).to_pylist()
    }


def hidden_links(hidden: dict[int, dict], gold: dict[int, dict]) -> tuple[dict[int, list[dict]], int]:
    """Per page, the untouched run's links that the hidden run lacks; and pages left out because
    hiding changed their text (a hidden link inside another link's label, say)."""
    out, changed = {}, 0
    for page_id, page in hidden.items():
        if gold[page_id]["text"] != page["text"]:
            changed += 1
            continue
        seen = Counter((ln["start"], ln["end"], ln["target"]) for ln in page["links"])
        out[page_id] = []
        for ln in gold[page_id]["links"]:
            key = (ln["start"], ln["end"], ln["target"])
            if seen[key]:
                seen[key] -= 1
            else:
                out[page_id].append(ln)
    return out, changed


# ---------------------------------------------------------------- the baseline and the scoring


def visible_senses(pages: dict[int, dict]) -> dict[str, Counter]:
    """Anchor key -> its targets' counts among all visible links."""
    senses: dict[str, Counter] = defaultdict(Counter)
    for page in pages.values():
        for ln in page["links"]:
            senses[tagme.anchor_key(page["text"][ln["start"] : ln["end"]])][ln["target"]] += 1
    return senses


def oracle_baseline(pages: dict[int, dict], hidden: dict[int, list[dict]]) -> dict[int, list[dict]]:
    """Each hidden link's exact surface looked up among all visible links: its most common target."""
    senses = visible_senses(pages)
    found = {}
    for page_id, links in hidden.items():
        text, found[page_id] = pages[page_id]["text"], []
        for ln in links:
            counts = senses.get(tagme.anchor_key(text[ln["start"] : ln["end"]]))
            if counts:  # ties: the first target by title, so the answer does not depend on order
                best = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
                found[page_id].append({"start": ln["start"], "end": ln["end"], "target": best})
    return found


def answer(ln: dict, mentions: list[dict]) -> dict | None:
    """The mention that answers hidden link `ln`: the one with the largest overlap, if any."""
    over = [(min(m["end"], ln["end"]) - max(m["start"], ln["start"]), m) for m in mentions]
    over = [(size, m) for size, m in over if size > 0]
    return max(over, key=lambda o: o[0])[1] if over else None


def score(hidden: dict[int, list[dict]], found: dict[int, list[dict]]) -> dict[str, float]:
    n = answered = correct = 0
    for page_id, links in hidden.items():
        mentions = found.get(page_id, [])
        for ln in links:
            n += 1
            m = answer(ln, mentions)
            if m is not None:
                answered += 1
                correct += m["target"] == ln["target"]
    p = correct / answered if answered else 1.0
    r = correct / n if n else 0.0
    return {"P": p, "R": r, "F1": 2 * p * r / (p + r) if p + r else 0.0, "answered": answered}


def error_class(ln: dict, m: dict | None, text: str, senses: dict[str, Counter]) -> str:
    """What happened to one hidden link, and whether the visible anchors knew its surface (`seen`:
    as an anchor of its target, `other sense`: only of other targets, `unseen`: not an anchor)."""
    counts = senses.get(tagme.anchor_key(text[ln["start"] : ln["end"]]))
    known = "unseen" if not counts else "seen" if ln["target"] in counts else "other sense"
    if m is None:
        return f"missed ({known})"
    if (m["start"], m["end"]) != (ln["start"], ln["end"]):
        return "right, other span" if m["target"] == ln["target"] else "piece or longer span, wrong"
    return "right" if m["target"] == ln["target"] else f"wrong sense ({known})"


def breakdown(pages, hidden, found, senses) -> Counter:
    return Counter(
        error_class(ln, answer(ln, found.get(page_id, [])), pages[page_id]["text"], senses)
        for page_id, links in hidden.items()
        for ln in links
    )


# ---------------------------------------------------------------- linking, one forked process a row


def stand_in_aliases(run_dir: Path, pages: dict[int, dict]) -> list[tuple[str, str]]:
    """(alias, target title) of the stand-in KG: each article and each visible link target by its
    title and its title without parenthetical, and the redirects to them."""
    titles = {p["title"] for p in pages.values()} | {
        ln["target"] for p in pages.values() for ln in p["links"]
    }
    pairs = [(form, t) for t in titles for form in (t, discourse.without_parenthetical(t))]
    for path in part_paths(run_dir, REDIRECTS):
        pairs += [(r["title"], r["target"]) for r in pq.read_table(path).to_pylist() if r["target"] in titles]
    return sorted(set(pairs))


def link_run(args: tuple) -> tuple[dict[int, list[dict]], tuple[float, float], float, Counter]:
    """In a fresh process: load the stage's local annotator, link every page; mentions (target
    titles), (wall, CPU) seconds, peak RSS MiB, and the mention counts by source."""
    cfg, run_dir, pages = args
    titles = [
        t
        for path in part_paths(run_dir, LINK_TARGETS)
        for t in pq.read_table(path, columns=["target"])[0].to_pylist()
    ]
    gold_targets = {ln["target"] for p in pages.values() for ln in p["links"]}
    annotate = link_stage._local_annotator(cfg, run_dir, gold_targets)
    found, stats, start, cpu = {}, Counter(), time.perf_counter(), time.process_time()
    ids = list(pages)
    docs = tagme.nlp().pipe((pages[i]["text"] for i in ids), batch_size=32)
    for page_id, doc in zip(ids, docs, strict=True):
        tokens = tagme.token_arrays(doc)
        tagme.sentence_spans(doc, tokens[1], tokens[2])
        raw = annotate(0, doc.text, tokens, pages[page_id]["links"], stats)
        found[page_id] = [
            {
                "start": r[2],
                "end": r[3],
                "target": r[5] if r[1] is None else titles[r[1]],
                "rho": r[8],
                "link_prob": r[9],
                "source": r[10],
            }
            for r in raw
        ]
    seconds = (time.perf_counter() - start, time.process_time() - cpu)
    sources = Counter(m["source"] for ms in found.values() for m in ms)
    return found, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, sources


def in_fresh_process(fn, args):
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(fn, args).result()


def linker_rows(run, pages, hidden, names, senses, progress) -> list[dict]:
    rows = []
    aliases = stand_in_aliases(run, pages)
    for name in names:
        tagme_cfg = TagmeConfig(**ABLATION[name])
        build_dictionary(tagme_cfg, run, workers=2, memory_limit="2GB", progress=False)
        cfg = LinkConfig(workers=1, tagme=tagme_cfg)
        if tagme_cfg.kg_aliases:
            link_stage.build_kg_aliases(cfg, run, aliases)
        found, seconds, peak, sources = in_fresh_process(link_run, (cfg, run, pages))
        row = {
            "linker": name,
            **score(hidden, found),
            "articles/s (CPU)": len(pages) / seconds[1],
            "articles/s (wall)": len(pages) / seconds[0],
            "peak RSS MiB": peak,
        }
        rows.append({**row, "mentions by source": ", ".join(f"{k} {v}" for k, v in sorted(sources.items()))})
        if progress:
            print(format_row(rows[-1]), flush=True)
        if name == FULL:
            if progress:
                print(format_breakdown(breakdown(pages, hidden, found, senses)), flush=True)
            for rho in RHOS:
                pruned = {k: [m for m in v if m["rho"] >= rho] for k, v in found.items()}
                rows.append({"linker": f"  the same, rho >= {rho}", **score(hidden, pruned)})
                if progress:
                    print(format_row(rows[-1]), flush=True)
    return rows


# ---------------------------------------------------------------- dictionary footprint

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
        for a in (
            dictionary.link_prob,
            dictionary.offsets,
            dictionary.entities,
            dictionary.commonness,
            dictionary.from_alias,
        )
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
    (lp 4 + offset 8) and per candidate (entity 8 + commonness 4 + KG flag 1), the CSR per edge
    (index 4 + data 4) and per target (indptr 8 + size 8)."""
    keys = ENWIKI["anchors"] * f["keys/anchor"]
    total = (
        keys * f["bytes/key"]
        + ENWIKI["anchors"] * 12
        + ENWIKI["candidates"] * 13
        + ENWIKI["edges"] * 8
        + ENWIKI["targets"] * 16
    )
    return total / 2**30


def print_footprint(run: Path) -> None:
    build_dictionary(TagmeConfig(), run, workers=2, memory_limit="2GB", progress=False)
    f = footprint(run)
    print(
        f"\ndictionary in memory (defaults): {f['total MiB']:.1f} MiB for {f['anchors']} anchors "
        f"({f['keys']} dict keys with prefixes, {f['bytes/key']:.0f} B/key), {f['candidates']} "
        f"candidates, {f['targets']} targets, {f['edges']} in-link edges; enwiki estimate "
        f"({', '.join(f'{k} {v:.3g}' for k, v in ENWIKI.items())}): {enwiki_estimate(f):.1f} GiB per worker"
    )


# ---------------------------------------------------------------- report

COLUMNS = [
    "linker",
    "P",
    "R",
    "F1",
    "answered",
    "articles/s (CPU)",
    "articles/s (wall)",
    "peak RSS MiB",
    "mentions by source",
]


def format_breakdown(counts: Counter) -> str:
    return "    hidden links: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def format_row(r: dict) -> str:
    cells = [f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in COLUMNS]
    return "| " + " | ".join(cells) + " |"


def bench(src: Path, copies: int, names, args) -> None:
    BENCH.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BENCH) as tmp:
        run, gold_run = make_runs(src, copies, args.holdout, args.seed, Path(tmp))
        pages = load_pages(run)
        hidden, changed = hidden_links(pages, load_pages(gold_run))
        n_hidden = sum(len(v) for v in hidden.values())
        visible = sum(len(p["links"]) for p in pages.values())
        articles = sum(1 for p in pages.values() if p["text"])
        print(
            f"\n{src.name} x{copies}: {articles} articles, {visible} visible links, {n_hidden} hidden "
            f"(holdout {args.holdout}, seed {args.seed}); {changed} pages left out (text changed)"
        )
        print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS))
        oracle = oracle_baseline(pages, hidden)
        baseline = {"linker": "oracle-spotting most common sense (reference)", **score(hidden, oracle)}
        print(format_row(baseline), flush=True)
        senses = visible_senses(pages)
        print(format_breakdown(breakdown(pages, hidden, oracle, senses)), flush=True)
        if names:
            linker_rows(run, {i: pages[i] for i in hidden}, hidden, names, senses, progress=True)
        print_footprint(run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", type=Path)
    ap.add_argument("--gensim-sample", action="store_true")
    ap.add_argument("--holdout", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--copies", type=int, nargs="*", default=[1], help="sizes: 1 = the file itself")
    ap.add_argument("--full-ablation-at", type=int, default=1, help="the size that gets every ablation row")
    ap.add_argument("--footprint-only", action="store_true", help="no linker rows: the dictionary's memory")
    ap.add_argument(
        "--only-full-at-size", action="store_true", help="at the other sizes, the full linker alone (time)"
    )
    args = ap.parse_args()
    src = gensim_sample() if args.gensim_sample else args.file
    if src is None:
        ap.error("give FILE or --gensim-sample")
    for k in args.copies:
        at_size = [FULL] if args.only_full_at_size else list(AT_SIZE)
        names = list(ABLATION) if k == args.full_ablation_at else at_size
        bench(src, k, [] if args.footprint_only else names, args)


if __name__ == "__main__":
    main()
