"""Dictionary keys of names: `tagme.anchor_key` against spaCy's tokenizer, its reference, in one run.

    PYTHONPATH=. .venv/bin/python benchmarks/anchor_key.py                # the timing table
    PYTHONPATH=. .venv/bin/python benchmarks/anchor_key.py --all-letters  # the shortcut's full check

Inputs, all names a link stage keys: the bundled Wikidata5M sample's labels and aliases (real ones),
the anchor texts of the real enwiki excerpt (`[[target|text]]` and `[[target]]`), and, when the
capacity plan has generated them, 300k of its full-size KG aliases (letters only: the best case).
Every key is checked to equal the tokenizer's before anything is timed. `--all-letters` checks the
shortcut on every Unicode letter in 7 places (alone, doubled, at either end of a word, inside one,
upper-case context, after a number), on ASCII numbers and on the tokenizer's exceptions in 3 casings,
and prints how many names it checked and how many keys differ (about a minute)."""

from __future__ import annotations

import argparse
import bz2
import random
import re
import time
from pathlib import Path

import pyarrow.parquet as pq
from realdata import BENCH, gensim_sample

from preprocessing import tagme

ROOT = Path(__file__).resolve().parents[1]
ALIAS_ROWS = BENCH / "capacity" / "kg-alias-rows" / "rows.parquet"
ANCHOR = re.compile(r"\[\[([^\[\]|]+)(?:\|([^\[\]]+))?\]\]")


def inputs() -> dict[str, list[str]]:
    lines = (ROOT / "sample" / "wikidata5m" / "wikidata5m_entity.txt").read_text(encoding="utf-8")
    kg = [name for line in lines.splitlines() for name in line.split("\t")[1:]]
    with bz2.open(gensim_sample(), "rt", encoding="utf-8") as f:
        xml = f.read()
    named = {"sample KG labels and aliases": kg}
    named["enwiki excerpt anchor texts"] = [m.group(2) or m.group(1) for m in ANCHOR.finditer(xml)]
    if ALIAS_ROWS.exists():
        first = pq.ParquetFile(ALIAS_ROWS).read_row_group(0, columns=["alias"])
        named["generated full-size KG aliases (300k)"] = first.column("alias").to_pylist()[:300_000]
    return named


def per_name_us(fn, names: list[str]) -> float:
    start = time.perf_counter()
    for name in names:
        fn(name)
    return (time.perf_counter() - start) / len(names) * 1e6


def every_letter_names() -> list[str]:
    letters = [chr(c) for c in range(0x110000) if chr(c).isalpha()]
    places = ["{}", "a{}", "{}a", "a{}a", "{}{}", "A{}B", "1 {}"]
    names = [p.format(c, c) for c in letters for p in places]
    rng = random.Random(0)
    names += [" ".join(rng.choice(letters) for _ in range(rng.randint(1, 4))) for _ in range(50_000)]
    names += [str(rng.randint(0, 10 ** rng.randint(1, 7))) for _ in range(20_000)] + ["007", "Apollo 11"]
    rules = list(tagme.nlp().tokenizer.rules)
    return names + rules + [r.lower() for r in rules] + [r.upper() for r in rules] + ["", "  ", " a  b "]


def check_all_letters() -> None:
    names = every_letter_names()
    wrong = [n for n in names if tagme.anchor_key.__wrapped__(n) != tagme.tokenizer_key(n)]
    print(f"{len(names):,} names checked, {len(wrong)} keys differ from the tokenizer's: {wrong[:10]}")
    raise SystemExit(1 if wrong else 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all-letters", action="store_true", help="the shortcut's full check, no timing")
    if ap.parse_args().all_letters:
        check_all_letters()
    uncached = tagme.anchor_key.__wrapped__  # the lru_cache would time dictionary lookups
    print("| names | count | plain words | tokenizer us | anchor_key us | speed-up |")
    print("|---|---|---|---|---|---|")
    for label, names in inputs().items():
        wrong = [n for n in names if uncached(n) != tagme.tokenizer_key(n)]
        assert not wrong, f"{label}: keys differ from the tokenizer's for {wrong[:5]}"
        plain = sum(tagme._plain(n.split(" ")) for n in names) / len(names)
        ref, new = float("inf"), float("inf")
        for _ in range(2):  # interleaved, the faster of two kept: the machine's load hits both alike
            ref = min(ref, per_name_us(tagme.tokenizer_key, names))
            new = min(new, per_name_us(uncached, names))
        print(f"| {label} | {len(names):,} | {plain:.0%} | {ref:.1f} | {new:.1f} | {ref / new:.1f}x |")


if __name__ == "__main__":
    main()
