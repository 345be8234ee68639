"""Finding a dump's files and cutting pages-articles XML into independent units of work.

A multistream file is a series of bz2 streams of about 100 pages each; its index
(`offset:page_id:title` per page) gives the stream offsets, so any stream decompresses on its own
and parts of the file go to different processes. Without an index the file is read in one pass.
"""

from __future__ import annotations

import bz2
import codecs
import json
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


class DumpFileError(InputError, ValueError):
    """A dump file that cannot be read (missing, truncated, not a pages-articles export); ingest records
    one whose stream breaks off and keeps the pages read before it."""


@dataclass(frozen=True)
class StreamRange:
    """Bytes [start, end) of one file; `end` None means up to the end of the file."""

    path: Path
    start: int
    end: int | None


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
    (it takes the closing `</mediawiki>` stream along)."""
    streams = read_index(index)
    ends: list[int | None] = [off for off, _ in streams[1:]] + [None]
    return [(StreamRange(dump, off, end), n) for (off, n), end in zip(streams, ends, strict=True)]


def read_stream(rng: StreamRange) -> bytes:
    """Decompress one stream range; truncation or corruption names the file and the offset."""
    with open(rng.path, "rb") as f:
        f.seek(rng.start)
        data = f.read() if rng.end is None else f.read(rng.end - rng.start)
    try:
        return bz2.decompress(data)
    except (ValueError, OSError, EOFError) as exc:
        raise DumpFileError(
            f"{rng.path}: the bz2 stream at byte offset {rng.start} is truncated or corrupt ({exc})",
            fix="download the file again (`trelm download` verifies sums)",
        ) from exc


def split_pages(xml: str) -> Iterator[str]:
    """The `<page>...</page>` elements of a decompressed chunk, as strings."""
    pos = 0
    while True:
        start = xml.find("<page>", pos)
        if start < 0:
            return
        end = xml.find("</page>", start)
        if end < 0:
            return
        pos = end + len("</page>")
        yield xml[start:pos]


def iter_page_xml(dump: Path, read_bytes: int = 1 << 20) -> Iterator[str]:
    """Stream a pages-articles file (.xml or .xml.bz2, multistream or not) in one pass, page by page."""
    # an incremental decoder, so a multi-byte character cut by a read boundary is not replaced
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with open(dump, "rb") as raw, bz2.open(raw, "rb") if dump.suffix == ".bz2" else nullcontext(raw) as f:
        carry = ""
        while True:
            try:
                chunk = f.read1(read_bytes)  # read1: a cut loses only the last step, not the whole read
            except (EOFError, OSError, ValueError) as exc:
                raise DumpFileError(
                    f"{dump}: compressed data is truncated or corrupt near byte offset {raw.tell()} ({exc})",
                    fix="fetch the file again",
                ) from exc
            if not chunk:
                return
            carry += decoder.decode(chunk)
            cut = carry.rfind("</page>")
            if cut < 0:
                continue
            cut += len("</page>")
            yield from split_pages(carry[:cut])
            carry = carry[cut:]
