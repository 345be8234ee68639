"""Speed and peak memory of `load_kg` on a synthetic Wikidata5M-sized graph in the real file formats.

    python benchmarks/kg_load.py               # full scale: 4,594,485 entities, 822 relations, 20.6M triples
    python benchmarks/kg_load.py --scale 0.1   # a tenth of that, for a quick run
    python benchmarks/kg_load.py --out DIR     # generate into (or reuse) DIR
    python benchmarks/kg_load.py --verify      # also check the output order against a Python pass
    python benchmarks/kg_load.py --description-words 40 160   # abstract-length descriptions

The graph is generated once, deterministically (seed 0), into `.bench/kg-full/` (`.bench/kg-scale{S}/`
for other scales, `-desc{MIN}-{MAX}` added for other description lengths) and reused while its
`_generated.json` matches the request. Entities get 1-10 aliases (a few hundred get 30-300),
descriptions of about 60 characters (the real text file holds Wikipedia abstracts, far longer:
`--description-words` measures that) and a power-law degree (a handful of hubs, a long tail of
entities seen once or never); a few triples name an entity or a relation missing from the alias
files, as the real graph does. `load_kg` then runs in a child process whose peak RSS (process tree,
sampled at 20 Hz) is compared with the 6 GiB target.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench"
TARGET_GIB = 6.0
_CHUNK = 500_000  # lines formatted per write: bounds the generator's memory


def _words(rng: np.random.Generator, n: int) -> list[str]:
    """Pronounceable pseudo-words of 1-4 syllables: strings of natural lengths, no dictionary needed."""
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["an", "er", "is", "on", "ul"]
    counts = rng.integers(1, 5, n)
    picks = rng.integers(0, len(syllables), int(counts.sum())).tolist()
    out, pos = [], 0
    for c in counts.tolist():
        out.append("".join(syllables[i] for i in picks[pos : pos + c]).capitalize())
        pos += c
    return out


def _phrases(rng: np.random.Generator, words: list[str], n: int, lo: int, hi: int) -> list[str]:
    """`n` phrases of `lo`..`hi` words, drawn from `words`."""
    counts = rng.integers(lo, hi + 1, n).tolist()
    picks = rng.integers(0, len(words), sum(counts)).tolist()
    out, pos = [], 0
    for c in counts:
        out.append(" ".join(words[i] for i in picks[pos : pos + c]))
        pos += c
    return out


def _alias_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    """1-10 aliases (geometric, mean about 2.4); one entity in 10,000 has 30-300 (countries, people)."""
    counts = np.minimum(rng.geometric(0.42, n), 10)
    long = rng.random(n) < 1e-4
    counts[long] = rng.integers(30, 301, int(long.sum()))
    return counts


def _write_lines(path: Path, lines) -> None:
    with open(path, "w", encoding="utf-8", buffering=1 << 22) as f:
        for chunk in lines:
            f.write("\n".join(chunk))
            f.write("\n")


def _alias_lines(rng, ids: list[str], words: list[str]):
    """`ID\\talias1\\talias2...` lines in chunks; aliases come from a pool of 1M phrases."""
    pool = _phrases(rng, words, min(1_000_000, 4 * len(ids)), 1, 4)
    counts = _alias_counts(rng, len(ids))
    picks = rng.integers(0, len(pool), int(counts.sum())).tolist()
    bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
    for start in range(0, len(ids), _CHUNK):
        end = min(start + _CHUNK, len(ids))
        yield [
            "\t".join([ids[i], *(pool[j] for j in picks[bounds[i] : bounds[i + 1]])])
            for i in range(start, end)
        ]


def _text_lines(rng, qids: list[str], words: list[str], lengths: tuple[int, int]):
    """`QID\\tdescription` for 95% of the entities, in an order of their own (the file is joined by QID)."""
    pool = _phrases(rng, words, 200_000, *lengths)
    order = rng.permutation(len(qids))[: int(len(qids) * 0.95)]
    picks = rng.integers(0, len(pool), len(order)).tolist()
    for start in range(0, len(order), _CHUNK):
        yield [f"{qids[i]}\t{pool[picks[k]]}" for k, i in enumerate(order[start : start + _CHUNK], start)]


def _power_law(rng: np.random.Generator, n: int, size: int, exponent: float) -> np.ndarray:
    """Indices 0..n-1 with P(rank r) ~ 1/(r+1)^exponent, ranks shuffled over the ids."""
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    cdf = np.cumsum(weights)
    ranks = np.searchsorted(cdf, rng.random(size) * cdf[-1])
    return rng.permutation(n)[np.minimum(ranks, n - 1)]


def _triple_lines(rng, qids: list[str], pids: list[str], n: int):
    """`Qh\\tPr\\tQt` lines; about one in 20,000 names an entity or relation the alias files lack."""
    for start in range(0, n, _CHUNK):
        size = min(_CHUNK, n - start)
        heads = _power_law(rng, len(qids), size, 0.8).tolist()
        tails = _power_law(rng, len(qids), size, 1.0).tolist()
        rels = _power_law(rng, len(pids), size, 1.2).tolist()
        chunk = [f"{qids[h]}\t{pids[r]}\t{qids[t]}" for h, r, t in zip(heads, rels, tails, strict=True)]
        for k in rng.integers(0, size, max(1, size // 20_000)).tolist():
            chunk[k] = chunk[k].replace("\tP", "\tP9999", 1) if k % 3 == 0 else f"Q0\t{pids[0]}\tQ1"
        yield chunk


def _ids(rng: np.random.Generator, prefix: str, n: int) -> list[str]:
    """Distinct ids (`Q`/`P` + number) in a shuffled order, numbers spread like Wikidata's."""
    numbers = np.arange(1, n + 1) * 17 + rng.integers(0, 17, n)
    return [f"{prefix}{x}" for x in rng.permutation(numbers).tolist()]


def generate(
    out: Path, entities: int, relations: int, triples: int, description_words: tuple[int, int] = (6, 11)
) -> None:
    """Write the four files into `out`, unless a generation with the same parameters is there."""
    params = {
        "entities": entities,
        "relations": relations,
        "triples": triples,
        "description_words": list(description_words),
        "seed": 0,
    }
    marker = out / "_generated.json"
    if marker.exists() and json.loads(marker.read_text()) == params:
        return
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    words = _words(rng, 50_000)
    qids, pids = _ids(rng, "Q", entities), _ids(rng, "P", relations)
    _write_lines(out / "wikidata5m_entity.txt", _alias_lines(rng, qids, words))
    _write_lines(out / "wikidata5m_relation.txt", _alias_lines(rng, pids, words))
    _write_lines(out / "wikidata5m_text.txt", _text_lines(rng, qids, words, description_words))
    _write_lines(out / "wikidata5m_all_triplet.txt", _triple_lines(rng, qids, pids, triples))
    marker.write_text(json.dumps(params))
    os.sync()  # else the kernel writes the new files back during the measured load (3-4x slower)
    print(f"generated {out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)


_CHILD = """
import json, sys, time
from pathlib import Path
from preprocessing.kg import KGConfig, load_kg
start = time.perf_counter()
manifests = load_kg(KGConfig(path=Path(sys.argv[1])), Path(sys.argv[2]), progress=False)
print(json.dumps({"seconds": time.perf_counter() - start,
                  "rows": {k: m["rows"] for k, m in manifests.items()},
                  "stats": manifests["kg_triples"]["stats"]}))
"""


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def measure(kg_dir: Path, run_dir: Path) -> dict:
    """Run `load_kg` in a child process; its result plus the peak RSS of its process tree."""
    cmd = [sys.executable, "-c", _CHILD, str(kg_dir), str(run_dir)]
    proc = psutil.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc))
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"load_kg failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    return {**json.loads(out), "peak_gib": peak / 2**30}


def _column(run_dir: Path, dataset: str, column: str) -> pa.ChunkedArray:
    return pq.read_table(run_dir / dataset / "v1", columns=[column])[column]


def verify(kg_dir: Path, run_dir: Path) -> None:
    """Compare the output with a plain Python pass over the files: entities in file order, kept triples
    in file order. This checks DuckDB's order preservation at full scale, and times the streaming
    Python alternative on the triples (split and dict lookups per line)."""
    qids = _column(run_dir, "kg_entities", "qid").to_pylist()
    with open(kg_dir / "wikidata5m_entity.txt", encoding="utf-8") as f:
        if qids != [line.split("\t", 1)[0] for line in f]:  # the generated files have no bad lines
            raise SystemExit("kg_entities are not in entity-file order")
    started = time.perf_counter()
    kg_id = {q: i for i, q in enumerate(qids)}
    rel_id = {p: i for i, p in enumerate(_column(run_dir, "kg_relations", "pid").to_pylist())}
    expected = array("i")
    with open(kg_dir / "wikidata5m_all_triplet.txt", encoding="utf-8") as f:
        for line in f:
            h, r, t = line.rstrip("\n").split("\t")
            ids = (kg_id.get(h), rel_id.get(r), kg_id.get(t))
            if None not in ids:
                expected.extend(ids)
    seconds = time.perf_counter() - started
    rss = psutil.Process().memory_info().rss / 2**30
    got = np.stack([_column(run_dir, "kg_triples", c).to_numpy() for c in ("head", "rel", "tail")], axis=1)
    if not np.array_equal(got, np.frombuffer(expected, dtype=np.int32).reshape(-1, 3)):
        raise SystemExit("kg_triples differ from the triple file's kept lines in file order")
    print(f"\norder check passed: {len(qids):,} entities and {len(got):,} triples in file order")
    print(f"a streaming Python pass over the triples (split, 3 lookups): {seconds:.1f} s, RSS {rss:.1f} GiB")


def print_table(result: dict) -> None:
    rows = result["rows"]
    total = sum(rows.values())
    ok = "yes" if result["peak_gib"] < TARGET_GIB else "NO"
    print("| entities | relations | triples kept | seconds | rows/s | peak RSS GiB | target | met |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {rows['kg_entities']:,} | {rows['kg_relations']:,} | {rows['kg_triples']:,} "
        f"| {result['seconds']:.1f} | {total / result['seconds']:,.0f} | {result['peak_gib']:.2f} "
        f"| < {TARGET_GIB:g} | {ok} |"
    )
    drops = {k: v for k, v in result["stats"].items() if "dropped" in k}
    print(f"\ntriple drops: {drops}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=4_594_485)
    ap.add_argument("--relations", type=int, default=822)
    ap.add_argument("--triples", type=int, default=20_614_279)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies --entities and --triples")
    # the default gives ~60-character descriptions; the real wikidata5m_text.txt holds Wikipedia
    # abstracts of up to 512 tokens: `--description-words 40 160` (a 2.7 GB file) is closer to that
    ap.add_argument("--description-words", type=int, nargs=2, default=(6, 11), metavar=("MIN", "MAX"))
    ap.add_argument("--out", type=Path, help="folder of the generated graph")
    ap.add_argument("--verify", action="store_true", help="check output order against a Python pass")
    args = ap.parse_args()
    entities, triples = int(args.entities * args.scale), int(args.triples * args.scale)
    words = tuple(args.description_words)
    name = "kg-full" if args.scale == 1 else f"kg-scale{args.scale:g}"
    out = args.out or BENCH / (name if words == (6, 11) else f"{name}-desc{words[0]}-{words[1]}")
    generate(out, entities, args.relations, triples, words)
    with tempfile.TemporaryDirectory(dir=BENCH) as run_dir:
        print_table(measure(out, Path(run_dir)))
        if args.verify:
            verify(out, Path(run_dir))


if __name__ == "__main__":
    main()
