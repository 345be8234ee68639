"""The benchmark's decompression floor decodes every byte of the file, split between processes."""

from __future__ import annotations

import bz2
import sys
from pathlib import Path

from dumps import page, write_multistream, write_plain

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bz2floor  # noqa: E402 - a script beside the benchmarks, not a package


def test_stdlib_floor_splits_the_streams_between_processes_and_loses_none(tmp_path):
    pages = [page(i, f"Page {i}", "text " * (i * 50)) for i in range(1, 24)]
    dump, index = write_multistream(tmp_path / "xwiki-20260101-pages-articles-multistream.xml.bz2", pages, 5)
    assert len(bz2floor.stream_offsets(dump)) == 5  # 23 pages in streams of 5; the header has no page
    whole = len(bz2.decompress(dump.read_bytes()))
    assert bz2floor.decode_stdlib(dump, 3) == whole
    index.unlink()  # one pass without an index: every stream still decoded, in one process
    assert bz2floor.stream_offsets(dump) == [] and bz2floor.decode_stdlib(dump, 3) == whole


def test_stdlib_floor_of_one_stream(tmp_path):
    dump = write_plain(tmp_path / "xwiki-20260101-pages-articles.xml.bz2", [page(1, "A", "a b c")])
    assert bz2floor.decode_stdlib(dump, 2) == len(bz2.decompress(dump.read_bytes()))
