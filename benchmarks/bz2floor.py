"""The floor under any reader of a pages-articles dump: bz2 decompression alone, XML thrown away.

    python benchmarks/bz2floor.py stdlib|indexed-bzip2 FILE [--workers N]

`stdlib`: a multistream file's streams (offsets from its index) split between N processes, each
running `bz2.decompress` on its own streams, as ingest's workers do; a file without index is one
stream, which the stdlib decodes in one process only. `indexed-bzip2`: its parallel decoder with N
threads over the whole file (it finds the bz2 block boundaries itself, one stream or many).
Imports nothing but the standard library and indexed-bzip2, so that it runs in the benchmark's own
venv; prints the uncompressed bytes.
"""

from __future__ import annotations

import argparse
import bz2
import re
import threading
from multiprocessing import get_context
from pathlib import Path

_MULTISTREAM_RE = re.compile(r"-multistream(\d*)\.xml")  # its index: -multistream-index{N}.txt
_BLOCK = 1 << 22


def stream_offsets(path: Path) -> list[int]:
    """The stream offsets of a multistream file's index (empty without an index)."""
    index = path.with_name(_MULTISTREAM_RE.sub(r"-multistream-index\1.txt", path.name, count=1))
    if index == path or not index.exists():
        return []
    with bz2.open(index, "rt", encoding="utf-8") as f:
        return sorted({int(line.split(":", 1)[0]) for line in f if line.strip()})


def _decode_streams(job: tuple[str, list[tuple[int, int | None]]]) -> int:
    """Decompress byte ranges of a file, one stream each; the XML is counted, then dropped."""
    path, ranges = job
    out = 0
    with open(path, "rb") as f:
        for start, end in ranges:
            f.seek(start)
            out += len(bz2.decompress(f.read() if end is None else f.read(end - start)))
    return out


def decode_stdlib(path: Path, workers: int) -> int:
    offsets = stream_offsets(path)
    if not offsets:
        with bz2.open(path, "rb") as f:
            return sum(len(block) for block in iter(lambda: f.read(_BLOCK), b""))
    starts = [0, *offsets] if offsets[0] > 0 else offsets  # the header stream (siteinfo) is not indexed
    ranges = list(zip(starts, [*starts[1:], None], strict=True))  # the last runs on through the footer
    # every N-th stream to each process: streams of ~100 pages are alike, so the shares are even
    runs = [ranges[i::workers] for i in range(workers)]
    # fork copies no lock another thread holds only in a single-threaded process (the script's own run;
    # a test worker of pytest-xdist has its I/O thread): else the forkserver's clean process forks
    method = "fork" if threading.active_count() == 1 else "forkserver"
    with get_context(method).Pool(workers) as pool:
        return sum(pool.map(_decode_streams, [(str(path), run) for run in runs]))


def decode_indexed_bzip2(path: Path, workers: int) -> int:
    import indexed_bzip2

    with indexed_bzip2.open(str(path), parallelization=workers) as f:
        return sum(len(block) for block in iter(lambda: f.read(_BLOCK), b""))


DECODERS = {"stdlib": decode_stdlib, "indexed-bzip2": decode_indexed_bzip2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("decoder", choices=DECODERS)
    ap.add_argument("file", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print(DECODERS[args.decoder](args.file, args.workers))


if __name__ == "__main__":
    main()
