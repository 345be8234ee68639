"""Case 1 of "What happens when things go wrong": damaged dump files lose nothing silently.

Each test damages a copy of the bundled sample's dump (or a tiny hand-written one) and ingests it
in-process with one worker: a truncated or damaged input fails the stage naming the file and the
offset, unless `ingest.max_lost_fraction` allows the loss, which the manifest then counts by reason.
"""

from __future__ import annotations

import bz2
import shutil

import pytest
from dumps import page, write_multistream, write_plain

from flows.config import SAMPLE_DIR
from preprocessing.dumpfiles import DumpFileError, read_index
from preprocessing.ingest import DumpLossError, IngestConfig, ingest, inputs_for_file
from storage.schemas import PAGES
from storage.shards import is_complete

DUMP = "enwiki-20260301-pages-articles-multistream.xml.bz2"
INDEX = "enwiki-20260301-pages-articles-multistream-index.txt.bz2"
CUT = 45_000  # inside the stream at 42504; the 6 streams after it lie past the new end


def _cfg(**kw) -> IngestConfig:
    return IngestConfig(**{"workers": 1, "pages_per_part": 40, **kw})


@pytest.fixture
def sample_dump(tmp_path):
    """A copy of the sample's recombined multistream file and its index."""
    source = SAMPLE_DIR / "mirror" / "enwiki" / "20260301"
    for name in (DUMP, INDEX):
        shutil.copy(source / name, tmp_path / name)
    return tmp_path / DUMP


def _lost_by_index(dump, cut: int) -> tuple[int, int]:
    """(streams, pages) the index places at or after the stream that `cut` falls in."""
    streams = read_index(dump.with_name(INDEX))
    first = max(i for i, (off, _) in enumerate(streams) if off <= cut)
    return len(streams) - first, sum(n for _, n in streams[first:])


def test_truncated_multistream_with_index_fails_then_counts_every_lost_stream(sample_dump, tmp_path):
    sample_dump.write_bytes(sample_dump.read_bytes()[:CUT])
    run_dir = tmp_path / "run"
    with pytest.raises(DumpLossError, match=rf"{DUMP}: the bz2 stream at byte offset \d+") as err:
        ingest(_cfg(), inputs_for_file(sample_dump), run_dir, progress=False)
    assert "fetch the file again" in err.value.fix and not is_complete(run_dir, PAGES)
    manifest = ingest(_cfg(max_lost_fraction=1), inputs_for_file(sample_dump), run_dir, progress=False)
    streams, pages = _lost_by_index(sample_dump, CUT)
    stats = manifest["stats"]
    assert stats["streams_dropped_truncated"] == streams == 7
    assert stats["pages_dropped_truncated"] == pages
    assert stats["articles"] + stats["redirects"] + stats.get("skipped_namespace", 0) + pages == 123
    assert len(manifest["errors"]) == streams and all(DUMP in e for e in manifest["errors"])


def test_truncated_file_without_index_fails_with_the_offset(sample_dump, tmp_path):
    sample_dump.with_name(INDEX).unlink()
    sample_dump.write_bytes(sample_dump.read_bytes()[:CUT])
    with pytest.raises(DumpLossError, match="truncated or corrupt near byte offset"):
        ingest(_cfg(), inputs_for_file(sample_dump), tmp_path / "run", progress=False)


def test_damage_inside_one_stream_without_index_counts_the_bytes_after_it(sample_dump, tmp_path):
    sample_dump.with_name(INDEX).unlink()
    data = bytearray(sample_dump.read_bytes())
    data[20_000:20_050] = b"\0" * 50  # inside the stream at 14153 (of 8 streams of 10 pages before 45k)
    sample_dump.write_bytes(bytes(data))
    with pytest.raises(DumpLossError, match="near byte offset"):
        ingest(_cfg(), inputs_for_file(sample_dump), tmp_path / "run", progress=False)
    allowed = _cfg(max_lost_fraction=1)
    manifest = ingest(allowed, inputs_for_file(sample_dump), tmp_path / "run", progress=False)
    assert manifest["stats"]["bytes_dropped_corrupt"] > 50_000  # everything after the damage
    assert manifest["stats"]["pages_dropped_truncated"] == 1


PAGES_XML = [page(i, f"Page {i}", f"Text of page {i}.") for i in range(1, 6)]


def test_plain_xml_cut_inside_a_page_fails(tmp_path):
    plain = write_plain(tmp_path / "cut.xml", PAGES_XML)
    text = plain.read_text()
    plain.write_text(text[: text.index("Text of page 5")])
    with pytest.raises(DumpLossError, match=r"cut\.xml: the XML ends at byte offset \d+ without </mediaw"):
        ingest(_cfg(), inputs_for_file(plain), tmp_path / "run", progress=False)
    manifest = ingest(_cfg(max_lost_fraction=0.5), inputs_for_file(plain), tmp_path / "run", progress=False)
    assert manifest["stats"]["articles"] == 4 and manifest["stats"]["pages_dropped_truncated"] == 1


@pytest.mark.parametrize("indexed", [False, True])
def test_missing_page_end_loses_one_page_counted_as_one(tmp_path, indexed):
    pages = [*PAGES_XML]
    pages[1] = pages[1].replace("</page>", "")
    if indexed:
        dump, _ = write_multistream(tmp_path / "t-pages-articles-multistream.xml.bz2", pages, per_stream=5)
    else:
        dump = write_plain(tmp_path / "unclosed.xml", pages)
    with pytest.raises(DumpLossError, match="1 pages and 0 bytes lost"):
        ingest(_cfg(), inputs_for_file(dump), tmp_path / "run", progress=False)
    manifest = ingest(_cfg(max_lost_fraction=0.5), inputs_for_file(dump), tmp_path / "run", progress=False)
    assert manifest["stats"]["pages_dropped_unclosed"] == 1 and manifest["stats"]["articles"] == 4


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.xml", b"", "the file is empty"),
        ("notes.xml", b"hello, this is not a dump\n" * 100, "not a MediaWiki XML export"),
        ("garbage.xml.bz2", b"BZh9 not bz2 at all" * 10, "truncated or corrupt near byte offset"),
        ("nopages.xml.bz2", bz2.compress(b"<mediawiki>\n</mediawiki>\n"), "no page in the input"),
    ],
)
def test_empty_or_foreign_input_is_an_error_not_an_empty_dataset(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DumpFileError, match=message):
        ingest(_cfg(), inputs_for_file(tmp_path / name), tmp_path / "run", progress=False)
    assert not is_complete(tmp_path / "run", PAGES)
