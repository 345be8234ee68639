"""`trelm ingest` against `wikiextractor --no-templates --json -l`, same file, same process count.

    python benchmarks/ingest.py FILE [--workers 2] [--repeat 1 4]
    python benchmarks/ingest.py --gensim-sample        # a real 2016 enwiki excerpt shipped in gensim's wheel

FILE is a real pages-articles `.xml.bz2` (or `.xml`). With `--repeat K`, the benchmark also builds a
K-times larger multistream copy with an index (page ids shifted per copy) so the parallel path
is measured and peak memory can be compared across input sizes (it should stay flat).

wikiextractor is installed into the benchmark's own venv (`.bench/venv`), never into the project's.
Prints a table: seconds, articles/s, MB/s of uncompressed XML, peak memory (PSS) of the process tree,
and trelm's speed-up over wikiextractor measured in the same run.
"""

from __future__ import annotations

import argparse
import bz2
import contextlib
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from realdata import BENCH, gensim_sample

WX_VENV = BENCH / "venv"
_ID_RE = re.compile(r"<id>(\d+)</id>")
_TITLE_RE = re.compile(r"<title>(.*?)</title>")


def _tree_memory(proc: psutil.Process) -> int:
    """Proportional set size of the process and its children: pages shared by forked workers are
    split between them instead of being counted once per process, as a plain RSS sum would."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_full_info().pss
    return total


def run_measured(cmd: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall seconds and peak memory (PSS, MiB) of the whole process tree, sampled at 20 Hz."""
    start = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, _tree_memory(proc))
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return seconds, peak / 2**20


def wikiextractor_bin() -> Path:
    exe = WX_VENV / "bin" / "wikiextractor"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(WX_VENV)], check=True)
        subprocess.run([str(WX_VENV / "bin" / "pip"), "install", "-q", "wikiextractor==3.1.0"], check=True)
    return exe


def input_facts(path: Path) -> tuple[int, int, int]:
    """(uncompressed bytes, namespace-0 non-redirect pages, all pages) of a pages-articles file."""
    opener = bz2.open if path.suffix == ".bz2" else open
    size = articles = pages = 0
    in_page = ns0 = redirect = False
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            size += len(line.encode())
            stripped = line.strip()
            if stripped == "<page>":
                in_page, ns0, redirect = True, False, False
            elif in_page and stripped == "<ns>0</ns>":
                ns0 = True
            elif in_page and stripped.startswith("<redirect"):
                redirect = True
            elif stripped == "</page>":
                articles += ns0 and not redirect
                pages += 1
                in_page = False
    return size, articles, pages


def repeated_multistream(src: Path, k: int, out_dir: Path) -> Path:
    """`src`'s pages K times (ids shifted, titles suffixed) as multistream bz2 + index, 100 pages a stream."""
    head, pages = split_pages(src)
    dump = out_dir / f"benchwiki-20260101-pages-articles-multistream1.xml-p1p{k * 10**7}.bz2"
    return write_multistream(head, [shifted(p, c) for c in range(k) for p in pages], dump)


def split_pages(src: Path) -> tuple[str, list[str]]:
    """The XML before the first page, and every `<page>...</page>` of a pages-articles file."""
    with (bz2.open if src.suffix == ".bz2" else open)(src, "rt", encoding="utf-8") as f:
        xml = f.read()
    first = xml.index("<page>")
    pages = [p + "</page>" for p in xml[first : xml.rindex("</page>")].split("</page>") if "<page>" in p]
    return xml[:first], pages


def write_multistream(head: str, pages: list[str], dump: Path) -> Path:
    """Pages as a multistream bz2 file (100 pages a stream) with its index beside it."""
    index_lines, offset = [], 0
    with open(dump, "wb") as out:
        offset += out.write(bz2.compress(head.encode()))
        for i in range(0, len(pages), 100):
            chunk = pages[i : i + 100]
            index_lines += [f"{offset}:{_ID_RE.search(p)[1]}:{_TITLE_RE.search(p)[1]}" for p in chunk]
            offset += out.write(bz2.compress("".join(chunk).encode()))
        out.write(bz2.compress(b"</mediawiki>\n"))
    index = dump.with_name(dump.name.replace("multistream1.xml", "multistream-index1.txt"))
    index.write_bytes(bz2.compress(("\n".join(index_lines) + "\n").encode()))
    return dump


def shifted(page: str, copy: int) -> str:
    if copy == 0:
        return page
    page = _ID_RE.sub(lambda m: f"<id>{int(m[1]) + copy * 10**7}</id>", page, count=1)
    return _TITLE_RE.sub(lambda m: f"<title>{m[1]} (copy {copy})</title>", page, count=1)


def bench_file(path: Path, workers: int, per_part: int, label: str) -> list[dict]:
    size, articles, _ = input_facts(path)
    rows = []
    with tempfile.TemporaryDirectory(dir=BENCH) as tmp:
        trelm = [
            str(Path(sys.executable).with_name("trelm")),
            "ingest",
            "--dump",
            str(path),
            "--workers",
            str(workers),
            "--data-root",
            tmp,
            "--config",
            "enwiki",
            "--set",
            "progress=false",
            "--set",
            f"ingest.pages_per_part={per_part}",
        ]
        wx = [
            str(wikiextractor_bin()),
            str(path),
            "--no-templates",
            "--json",
            "-l",
            "--processes",
            str(workers),
            "-q",
            "-o",
            str(Path(tmp) / "wx"),
        ]
        for tool, cmd in (("wikiextractor", wx), ("trelm ingest", trelm)):
            seconds, rss = run_measured(cmd)
            rows.append(
                {
                    "input": label,
                    "tool": tool,
                    "seconds": seconds,
                    "articles/s": articles / seconds,
                    "MB/s": size / 1e6 / seconds,
                    "peak PSS MiB": rss,
                    "articles": articles,
                    "MB": size / 1e6,
                }
            )
    return rows


def print_table(rows: list[dict]) -> None:
    cols = ["input", "tool", "articles", "MB", "seconds", "articles/s", "MB/s", "peak PSS MiB"]
    print("| " + " | ".join(cols) + " | speed-up |")
    print("|" + "---|" * (len(cols) + 1))
    for i, r in enumerate(rows):
        speedup = f"{rows[i - 1]['seconds'] / r['seconds']:.2f}x" if r["tool"] == "trelm ingest" else ""
        cells = [f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        print("| " + " | ".join(cells) + f" | {speedup} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", type=Path)
    ap.add_argument("--gensim-sample", action="store_true", help="use gensim's real enwiki excerpt")
    ap.add_argument("--workers", type=int, default=2)
    # the enwiki preset's parts hold 20k pages; the excerpt has 206, so the benchmark's parts are
    # smaller to give every worker several, and the same for every input size (memory follows part size)
    ap.add_argument("--pages-per-part", type=int, default=200)
    ap.add_argument(
        "--repeat", type=int, nargs="*", default=[], help="also run on K-times multistream copies"
    )
    args = ap.parse_args()
    BENCH.mkdir(exist_ok=True)
    src = gensim_sample() if args.gensim_sample else args.file
    if src is None:
        ap.error("give FILE or --gensim-sample")
    rows = bench_file(src, args.workers, args.pages_per_part, src.name[:40])
    with tempfile.TemporaryDirectory(dir=BENCH) as tmp:
        for k in args.repeat:
            copy = repeated_multistream(src, k, Path(tmp))
            rows += bench_file(copy, args.workers, args.pages_per_part, f"{k}x multistream+index")
    print_table(rows)


if __name__ == "__main__":
    main()
