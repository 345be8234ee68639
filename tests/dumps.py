"""Tiny pages-articles dumps in the real formats, written by hand for ingest tests."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

HEADER = (
    '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="en">\n'
    "  <siteinfo>\n    <sitename>Wikipedia</sitename>\n    <dbname>testwiki</dbname>\n"
    '    <case>first-letter</case>\n    <namespaces>\n      <namespace key="0" case="first-letter" />\n'
    '      <namespace key="1" case="first-letter">Talk</namespace>\n    </namespaces>\n  </siteinfo>\n'
)
FOOTER = "</mediawiki>\n"


def page(page_id: int, title: str, text: str = "", ns: int = 0, redirect: str | None = None) -> str:
    redirect_tag = f"    <redirect title={quoteattr(redirect)} />\n" if redirect else ""
    return (
        f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{page_id}</id>\n"
        f"{redirect_tag}    <revision>\n      <id>{page_id * 10}</id>\n      <model>wikitext</model>\n"
        f'      <format>text/x-wiki</format>\n      <text bytes="{len(text.encode())}" xml:space="preserve">'
        f"{escape(text)}</text>\n    </revision>\n  </page>\n"
    )


def write_plain(path: Path, pages: list[str | bytes]) -> Path:
    """One XML document (.xml) or one bz2 stream (.xml.bz2), no index."""
    blob = (
        HEADER.encode() + b"".join(p if isinstance(p, bytes) else p.encode() for p in pages) + FOOTER.encode()
    )
    path.write_bytes(bz2.compress(blob) if path.suffix == ".bz2" else blob)
    return path


def write_multistream(path: Path, pages: list[str | bytes], per_stream: int) -> tuple[Path, Path]:
    """Multistream bz2 (header stream, `per_stream` pages a stream, footer stream) and its index."""
    index_lines, offset = [], 0
    with open(path, "wb") as out:
        offset += out.write(bz2.compress(HEADER.encode()))
        for i in range(0, len(pages), per_stream):
            chunk = [p if isinstance(p, bytes) else p.encode() for p in pages[i : i + per_stream]]
            for raw in chunk:
                text = raw.decode("utf-8", errors="replace")
                page_id = text.split("<id>", 1)[1].split("</id>", 1)[0]
                title = text.split("<title>", 1)[1].split("</title>", 1)[0]
                index_lines.append(f"{offset}:{page_id}:{title}")
            offset += out.write(bz2.compress(b"".join(chunk)))
        out.write(bz2.compress(FOOTER.encode()))
    index = path.with_name(
        path.name.replace("-multistream", "-multistream-index", 1).replace(".xml", ".txt", 1)
    )
    index.write_bytes(bz2.compress(("\n".join(index_lines) + "\n").encode()))
    return path, index


def write_page_props(path: Path, items: dict[int, str]) -> Path:
    rows = ",".join(f"({pid},'wikibase_item','{qid}',NULL)" for pid, qid in items.items())
    text = f"-- MySQL dump\nINSERT INTO `page_props` VALUES {rows},(1,'page_image_free','X.jpg',NULL);\n"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return path
