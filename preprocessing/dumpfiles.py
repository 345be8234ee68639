"""Finding a dump's files and cutting pages-articles XML into independent units of work.

A multistream file is a series of bz2 streams of about 100 pages each; its index
(`offset:page_id:title` per page) gives the stream offsets, so any stream decompresses on its own
and parts of the file go to different processes. Without an index the file is read in one pass.
"""

from __future__ import annotations

import bz2
import codecs
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from storage.errors import InputError

# enwiki-20260301-pages-articles-multistream1.xml-p1p41242.bz2 and its
# enwiki-20260301-pages-articles-multistream-index1.txt-p1p41242.bz2
_MULTISTREAM_RE = re.compile(
    r"^(?P<base>.+-pages-articles-multistream)(?P<n>\d*)\.xml(?P<range>-p\d+p\d+)?\.bz2$"
)
_RUN_NAME_RE = re.compile(r"^(?P<wiki>[a-z0-9_]+wiki[a-z]*)-(?P<date>\d{8}|latest)-")
# enwiki-NS0-20240601-ENTERPRISE-HTML.json.tar.gz (Wikimedia Enterprise HTML dumps)
_ENTERPRISE_NAME_RE = re.compile(r"^(?P<wiki>[a-z0-9_]+wiki[a-z]*)-NS\d+-(?P<date>\d{8})-ENTERPRISE-HTML")
_OPEN, _CLOSE = "<mediawiki", b"</mediawiki>"


class DumpFileError(InputError, ValueError):
    """A dump file that cannot be read (missing, empty, truncated, not a pages-articles export).

    `lost` counts what a damaged file lost, by reason (`pages_dropped_truncated`,
    `bytes_dropped_corrupt`, ...): ingest adds it to the part's stats and fails the stage when the loss
    passes `ingest.max_lost_fraction`."""

    fix = "fetch the file again (`trelm download` verifies the published sums)"

    def __init__(self, message: str, *, fix: str | None = None, lost: dict[str, int] | None = None):
        super().__init__(message, fix=fix)
        self.lost = dict(lost or {})


@dataclass(frozen=True)
class StreamRange:
    """Bytes [start, end) of one file holding `pages` pages (by the index); `end` None means up to the
    end of the file (the last stream, which must close the XML)."""

    path: Path
    start: int
    end: int | None
    pages: int = 0


def run_name_for(dump: Path) -> str:
    """`{wiki}-{date}` when the dump's file name carries them, else the file name without suffixes."""
    m = _RUN_NAME_RE.match(dump.name) or _ENTERPRISE_NAME_RE.match(dump.name)
    if m:
        return f"{m['wiki']}-{m['date']}"
    return dump.name.split(".")[0]


def file_hash(path: Path) -> str:
    """The sha1 the dump publishes for `path` (recorded by `trelm download` in `_download.json`), else
    size and modification time: hashing a 20 GB file on every run would cost minutes."""
    manifest = path.parent / "_download.json"
    if manifest.exists():
        for entry in json.loads(manifest.read_text()).get("files", []):
            if entry.get("name") == path.name and entry.get("sha1"):
                return f"sha1:{entry['sha1']}"
    stat = path.stat()
    return f"size:{stat.st_size},mtime_ns:{stat.st_mtime_ns}"


def index_path_for(dump: Path) -> Path | None:
    """The multistream index beside `dump` under the dumps' naming, if it is there."""
    m = _MULTISTREAM_RE.match(dump.name)
    if not m:
        return None
    candidate = dump.with_name(f"{m['base']}-index{m['n']}.txt{m['range'] or ''}.bz2")
    return candidate if candidate.exists() else None


def multistream_files(run_dir: Path) -> list[Path]:
    """The split multistream files of a downloaded run in page order, else the recombined file."""
    split = [p for p in run_dir.glob("*-pages-articles-multistream*.xml-p*.bz2")]
    if split:
        return sorted(split, key=lambda p: int(_MULTISTREAM_RE.match(p.name)["n"]))
    recombined = sorted(run_dir.glob("*-pages-articles-multistream.xml.bz2"))
    if not recombined:
        raise DumpFileError(
            f"no pages-articles-multistream file in {run_dir}",
            fix="run `trelm download` first, or pass a local file with `trelm ingest --dump FILE`",
        )
    return recombined


def read_index(index: Path) -> list[tuple[int, int]]:
    """(stream offset, pages in the stream) for each stream of a multistream index, in file order."""
    counts: Counter[int] = Counter()
    with bz2.open(index, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            counts[int(line.split(":", 1)[0])] += 1
    return sorted(counts.items())


def stream_ranges(dump: Path, index: Path) -> list[tuple[StreamRange, int]]:
    """Each indexed stream's byte range and page count; the last range runs to the end of the file
    (it takes the closing `</mediawiki>` stream along). An empty index is an error."""
    streams = read_index(index)
    if not streams:
        raise DumpFileError(f"{index}: the multistream index lists no stream")
    ends: list[int | None] = [off for off, _ in streams[1:]] + [None]
    return [(StreamRange(dump, off, end, n), n) for (off, n), end in zip(streams, ends, strict=True)]


def _stream_error(rng: StreamRange, reason: str, what: str) -> DumpFileError:
    """A lost stream: its file, offset and why, with the stream and its pages counted by reason."""
    return DumpFileError(
        f"{rng.path}: the bz2 stream at byte offset {rng.start} {what}",
        lost={f"streams_dropped_{reason}": 1, f"pages_dropped_{reason}": rng.pages},
    )


def read_stream(rng: StreamRange) -> bytes:
    """Decompress one stream range. A range that lies past the end of the file, a short one, one that
    does not decompress, and a last one that does not close the XML each raise with file and offset."""
    with open(rng.path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(rng.start)
        data = f.read() if rng.end is None else f.read(rng.end - rng.start)
    if rng.start >= size:
        raise _stream_error(rng, "truncated", f"lies past the end of the file ({size} bytes): truncated")
    if rng.end is not None and len(data) < rng.end - rng.start:
        raise _stream_error(rng, "truncated", f"is cut by the end of the file ({size} bytes): truncated")
    try:
        xml = bz2.decompress(data)
    except (ValueError, OSError, EOFError) as exc:
        raise _stream_error(rng, "corrupt", f"is truncated or corrupt ({exc})") from exc
    if rng.end is None and _CLOSE not in xml[-4096:]:
        raise _stream_error(rng, "truncated", f"ends the file without {_CLOSE.decode()}: truncated")
    return xml


def split_pages(xml: str, unclosed: list[int] | None = None) -> Iterator[str]:
    """The `<page>...</page>` elements of a decompressed chunk, as strings. A `<page>` whose
    `</page>` is missing (another `<page>` comes first) is left out, its offset put in `unclosed`."""
    pos = 0
    while True:
        start = xml.find("<page>", pos)
        if start < 0:
            return
        end = xml.find("</page>", start)
        if end < 0:
            return
        following = xml.find("<page>", start + 1, end)
        if following >= 0:
            if unclosed is not None:
                unclosed.append(start)
            pos = following
            continue
        pos = end + len("</page>")
        yield xml[start:pos]


def iter_page_xml(
    dump: Path, read_bytes: int = 1 << 20, lost: Counter | None = None, errors: list[str] | None = None
) -> Iterator[str]:
    """Stream a pages-articles file (.xml or .xml.bz2, multistream or not) in one pass, page by page.

    The file must open and close a MediaWiki export: an empty or foreign file, and a cut or damaged one,
    raise DumpFileError naming the offset, with what was lost counted; `lost` counts on the way the
    pages left out for a missing `</page>` (`pages_dropped_unclosed`), `errors` says where."""
    size = dump.stat().st_size
    if size == 0:
        raise DumpFileError(f"{dump}: the file is empty")
    # an incremental decoder, so a multi-byte character cut by a read boundary is not replaced
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    carry, head = "", ""
    with open(dump, "rb") as raw, bz2.open(raw, "rb") if dump.suffix == ".bz2" else nullcontext(raw) as f:
        while chunk := _read_chunk(dump, f, raw, size, read_bytes):
            text = decoder.decode(chunk)
            carry += text
            if len(head) < 1024:
                head = _check_export(dump, (head + text)[:1024], final=False)
            cut = carry.rfind("</page>")
            if cut < 0:
                continue
            cut += len("</page>")
            unclosed: list[int] = []
            yield from split_pages(carry[:cut], unclosed)
            if lost is not None and errors is not None and unclosed:
                lost["pages_dropped_unclosed"] += len(unclosed)
                errors.append(f"{dump}: {len(unclosed)} <page> without </page> before offset {raw.tell()}")
            carry = carry[cut:]
    _check_export(dump, head, final=True)
    _check_closed(dump, carry, size)


def _read_chunk(dump: Path, f, raw, size: int, read_bytes: int) -> bytes:
    try:
        return f.read1(read_bytes)  # read1: a cut loses only the last step, not the whole read
    except (EOFError, OSError, ValueError) as exc:
        near = raw.tell()
        raise DumpFileError(
            f"{dump}: compressed data is truncated or corrupt near byte offset {near} ({exc})",
            lost={"pages_dropped_truncated": 1, "bytes_dropped_corrupt": size - near},
        ) from exc


def _check_export(dump: Path, head: str, final: bool) -> str:
    """`head` (the file's first characters) once it is long enough to hold `<mediawiki`."""
    if (final or len(head) >= 1024) and _OPEN not in head:
        raise DumpFileError(
            f"{dump}: not a MediaWiki XML export (no <mediawiki> element at the start)",
            fix="pass a pages-articles .xml or .xml.bz2 file, or fetch it again",
        )
    return head


def _check_closed(dump: Path, rest: str, size: int) -> None:
    """The text after the last `</page>` must close the export; a page begun there was cut."""
    if _CLOSE.decode() in rest:
        return
    raise DumpFileError(
        f"{dump}: the XML ends at byte offset {size} without </mediawiki>: truncated",
        lost={"pages_dropped_truncated": 1},  # the page cut, or at least one after the last whole page
    )
