"""`trelm ingest` against `wikiextractor --no-templates --json -l`, same file, same process count,
beside the floor both stand on: bz2 decompression alone of that file.

    python benchmarks/ingest.py FILE [--workers 2] [--repeat 1 4] [--rounds 3]
    python benchmarks/ingest.py --gensim-sample        # a real 2016 enwiki excerpt shipped in gensim's wheel

FILE is a real pages-articles `.xml.bz2` (or `.xml`). With `--repeat K`, the benchmark also builds a
K-times larger multistream copy with an index (page ids shifted per copy) so the parallel path
is measured and peak memory can be compared across input sizes (it should stay flat).

The floor rows (`bz2floor.py`) decompress the same file with the same process count and throw the XML
away: its multistream streams split between N processes, each running the stdlib's `bz2.decompress`
(a file without index is one stream: one process), and indexed-bzip2's parallel decoder with N
threads over the whole file. Each runs as a child process, measured like the tools.

Every command runs `--rounds` times, the commands of one input interleaved (floor, wikiextractor,
trelm, floor, ...), and the median round is reported: on a shared machine a burst of load then
hits all of them alike. wikiextractor and indexed-bzip2 are installed into the benchmark's own venv
(`.bench/venv`), never into the project's. Prints a table: seconds, CPU seconds of the process
tree, articles/s, MB/s of uncompressed XML, peak memory (PSS), each row's throughput as a share of
the input's fastest floor, and trelm's speed-up over wikiextractor measured in the same run.
"""

from __future__ import annotations

import argparse
import bz2
import contextlib
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from bz2floor import stream_offsets
from realdata import BENCH, gensim_sample

WX_VENV = BENCH / "venv"
BENCH_PACKAGES = ("wikiextractor==3.1.0", "indexed-bzip2==1.7.0")
FLOOR = Path(__file__).with_name("bz2floor.py")
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


def run_measured(cmd: list[str], cwd: Path | None = None) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak memory (PSS, MiB, sampled at 20 Hz) of the whole process
    tree. CPU is what the kernel counts for the children waited for, which includes their own
    waited-for children (pool workers): a figure the load of the machine changes little."""
    cpu_before = _children_cpu()
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
    return seconds, _children_cpu() - cpu_before, peak / 2**20


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_venv() -> Path:
    """The benchmark's own venv, with wikiextractor and indexed-bzip2 (never the project's)."""
    marker = WX_VENV / f".installed-{'-'.join(BENCH_PACKAGES)}"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", str(WX_VENV)], check=True)
        subprocess.run([str(WX_VENV / "bin" / "pip"), "install", "-q", *BENCH_PACKAGES], check=True)
        marker.touch()
    return WX_VENV


def wikiextractor_bin() -> Path:
    return bench_venv() / "bin" / "wikiextractor"


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


# ---------------------------------------------------------------- the floor: decompression alone


def floor_commands(path: Path, workers: int) -> list[tuple[str, list[str]]]:
    """(row name, command) of each floor, run by the benchmark venv's Python (indexed-bzip2 is there)."""
    python = str(bench_venv() / "bin" / "python")
    one_stream = len(stream_offsets(path)) <= 1
    stdlib = "1 process (one stream)" if one_stream else f"{workers} processes"
    rows = [("stdlib", stdlib), ("indexed-bzip2", f"{workers} threads")]
    return [
        (f"floor: bz2 {name}, {how}", [python, str(FLOOR), name, str(path), "--workers", str(workers)])
        for name, how in rows
    ]


# ---------------------------------------------------------------- the tools


def tool_commands(path: Path, workers: int, per_part: int, tmp: Path) -> list[tuple[str, list[str]]]:
    trelm = [
        str(Path(sys.executable).with_name("trelm")),
        "ingest",
        "--dump",
        str(path),
        "--workers",
        str(workers),
        "--data-root",
        str(tmp / "trelm"),
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
        str(tmp / "wx"),
    ]
    return [("wikiextractor", wx), ("trelm ingest", trelm)]


def bench_file(path: Path, workers: int, per_part: int, label: str, rounds: int) -> list[dict]:
    """Each command `rounds` times, interleaved; the median round's figures (peak memory: the largest)."""
    size, articles, _ = input_facts(path)
    runs: dict[str, list[tuple[float, float, float]]] = {}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(dir=BENCH) as tmp:  # a fresh run folder: nothing to resume
            commands = floor_commands(path, workers) + tool_commands(path, workers, per_part, Path(tmp))
            for tool, cmd in commands:
                runs.setdefault(tool, []).append(run_measured(cmd))
    rows = []
    for tool, measured in runs.items():
        seconds, cpu, _ = sorted(measured)[len(measured) // 2]
        rows.append(
            {
                "input": label,
                "tool": tool,
                "articles": articles,
                "MB": size / 1e6,
                "seconds": seconds,
                "CPU s": cpu,
                "articles/s": articles / seconds,
                "MB/s": size / 1e6 / seconds,
                "peak PSS MiB": max(m[2] for m in measured),
            }
        )
    floor = min(r["seconds"] for r in rows if r["tool"].startswith("floor"))
    for r in rows:
        r["share of floor"] = f"{floor / r['seconds']:.0%}"
    return rows


def print_table(rows: list[dict]) -> None:
    cols = ["input", "tool", "articles", "MB", "seconds", "CPU s", "articles/s", "MB/s", "peak PSS MiB"]
    cols.append("share of floor")
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
    # the enwiki preset's parts hold 20k pages, and a real dump file 40k-2M: every worker gets several.
    # The excerpt has 206 pages, its 24x copy 4944: parts of 200 give each of 2 workers 4 or more, as in
    # a real file. Fewer, larger parts cost about as much (a part's overheads, ~35 ms of CPU in the
    # resolve, are mostly its data) but leave a worker idle at the end.
    ap.add_argument("--pages-per-part", type=int, default=200)
    ap.add_argument(
        "--repeat", type=int, nargs="*", default=[], help="also run on K-times multistream copies"
    )
    ap.add_argument("--rounds", type=int, default=3, help="runs of each command; the median is reported")
    args = ap.parse_args()
    BENCH.mkdir(exist_ok=True)
    src = gensim_sample() if args.gensim_sample else args.file
    if src is None:
        ap.error("give FILE or --gensim-sample")
    print(f"load before: {Path('/proc/loadavg').read_text().split()[:3]}", file=sys.stderr)
    rows = bench_file(src, args.workers, args.pages_per_part, src.name[:40], args.rounds)
    with tempfile.TemporaryDirectory(dir=BENCH) as tmp:
        for k in args.repeat:
            copy = repeated_multistream(src, k, Path(tmp))
            label = f"{k}x multistream+index"
            rows += bench_file(copy, args.workers, args.pages_per_part, label, args.rounds)
    print(f"load after: {Path('/proc/loadavg').read_text().split()[:3]}", file=sys.stderr)
    print_table(rows)


if __name__ == "__main__":
    main()
