"""One `<page>` element of a MediaWiki export -> an article row, a redirect row, or a counted skip."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from preprocessing.templates import RenderOptions
from preprocessing.titles import normalize_title
from preprocessing.wikitext import Link, clean_wikitext
from storage.schemas import LINK, PAGES

# pyarrow imports pandas on a process's first `pa.array()`, to tell pandas objects apart: ~0.2 s of CPU
# per process. Done here, on import, it is done once in the parent and inherited by the forked (or
# forkserver-preloaded) extraction workers, instead of once in each of them and once more in the parent.
pa.array([], pa.int64())


@dataclass
class PageRows:
    """Rows extracted from a batch of pages, in `pages`/`redirects` column order, plus skip counts."""

    page_id: list[int] = field(default_factory=list)
    rev_id: list[int] = field(default_factory=list)
    title: list[str] = field(default_factory=list)
    qid: list[str | None] = field(default_factory=list)  # known here from HTML dumps only
    text: list[str] = field(default_factory=list)
    # links, flat and columnar (one entry per link; link_offsets[i] is where page i's links start):
    # building Arrow arrays from these is much cheaper than from a dict per link
    link_offsets: list[int] = field(default_factory=lambda: [0])
    link_start: list[int] = field(default_factory=list)
    link_end: list[int] = field(default_factory=list)
    link_target: list[str] = field(default_factory=list)
    redirects: list[tuple[str, str]] = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.page_id)

    def take_articles(self) -> pa.Table:
        """The articles gathered so far as a `pages` table (ids and QIDs unresolved); then empty."""
        n_links = len(self.link_target)
        no_ids = pa.nulls(n_links, pa.int64())
        links = pa.StructArray.from_arrays(
            [
                pa.array(self.link_start, pa.int32()),
                pa.array(self.link_end, pa.int32()),
                pa.array(self.link_target, pa.string()),
                no_ids,
                pa.nulls(n_links, pa.string()),
            ],
            fields=list(LINK),
        )
        table = pa.table(
            {
                "page_id": pa.array(self.page_id, pa.int64()),
                "rev_id": pa.array(self.rev_id, pa.int64()),
                "title": pa.array(self.title, pa.string()),
                "qid": pa.array(self.qid, pa.string()),
                "text": pa.array(self.text, pa.large_string()),
                "links": pa.ListArray.from_arrays(pa.array(self.link_offsets, pa.int32()), links),
            },
            schema=PAGES.schema,
        )
        for column in (
            self.page_id,
            self.rev_id,
            self.title,
            self.qid,
            self.text,
            self.link_start,
            self.link_end,
            self.link_target,
        ):
            column.clear()
        self.link_offsets[:] = [0]
        return table


def _field(page: ET.Element, path: str) -> str:
    node = page.find(path)
    if node is None or node.text is None:
        raise ValueError(f"missing <{path}>")
    return node.text


def add_page(rows: PageRows, page_xml: str, options: RenderOptions | None = None) -> None:
    """Parse one page and append it to `rows`; a page that cannot be parsed is counted by reason."""
    try:
        page = ET.fromstring(page_xml)
        ns = int(_field(page, "ns"))
        title = normalize_title(_field(page, "title"))
        page_id = int(_field(page, "id"))
    except (ET.ParseError, ValueError) as exc:
        rows.stats[f"skipped_bad_xml:{type(exc).__name__}"] += 1
        return
    if ns != 0 or title is None:
        rows.stats["skipped_namespace"] += 1
        return
    redirect = page.find("redirect")
    if redirect is not None:
        add_redirect(rows, title, redirect.get("title"))
        return
    _add_article(rows, page, page_id, title, options)


def add_redirect(rows: PageRows, title: str, target_raw: str | None) -> None:
    """Append a redirect row, or count it as bad (no target, or one to itself)."""
    target = normalize_title(target_raw or "")
    if target is None or target == title:
        rows.stats["skipped_bad_redirect"] += 1
        return
    rows.redirects.append((title, target))
    rows.stats["redirects"] += 1


def _add_article(
    rows: PageRows, page: ET.Element, page_id: int, title: str, options: RenderOptions | None
) -> None:
    rev_id = page.find("revision/id")
    wikitext = page.findtext("revision/text") or ""
    try:
        text, links = clean_wikitext(wikitext, options, rows.stats)
    except Exception as exc:  # noqa: BLE001 - one bad page must not stop the shard
        rows.stats[f"skipped_bad_wikitext:{type(exc).__name__}"] += 1
        return
    rev = int(rev_id.text) if rev_id is not None and rev_id.text else 0
    add_article(rows, page_id, rev, title, None, text, links)


def add_article(
    rows: PageRows, page_id: int, rev_id: int, title: str, qid: str | None, text: str, links: list[Link]
) -> None:
    """Append one clean article (any reader's) with its links."""
    rows.page_id.append(page_id)
    rows.rev_id.append(rev_id)
    rows.title.append(title)
    rows.qid.append(qid)
    rows.text.append(text)
    for start, end, target in links:
        rows.link_start.append(start)
        rows.link_end.append(end)
        rows.link_target.append(target)
    rows.link_offsets.append(len(rows.link_target))
    rows.stats["articles"] += 1
    rows.stats["links"] += len(links)
