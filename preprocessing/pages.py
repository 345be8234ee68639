"""One `<page>` element of a MediaWiki export -> an article row, a redirect row, or a counted skip."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field

from preprocessing.titles import normalize_title
from preprocessing.wikitext import clean_wikitext


@dataclass
class PageRows:
    """Rows extracted from a batch of pages, in `pages`/`redirects` column order, plus skip counts."""

    page_id: list[int] = field(default_factory=list)
    rev_id: list[int] = field(default_factory=list)
    title: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    links: list[list[dict]] = field(default_factory=list)
    redirects: list[tuple[str, str]] = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.page_id)


def _field(page: ET.Element, path: str) -> str:
    node = page.find(path)
    if node is None or node.text is None:
        raise ValueError(f"missing <{path}>")
    return node.text


def add_page(rows: PageRows, page_xml: str) -> None:
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
        _add_redirect(rows, title, redirect.get("title"))
        return
    _add_article(rows, page, page_id, title)


def _add_redirect(rows: PageRows, title: str, target_raw: str | None) -> None:
    target = normalize_title(target_raw or "")
    if target is None or target == title:
        rows.stats["skipped_bad_redirect"] += 1
        return
    rows.redirects.append((title, target))
    rows.stats["redirects"] += 1


def _add_article(rows: PageRows, page: ET.Element, page_id: int, title: str) -> None:
    rev_id = page.find("revision/id")
    wikitext = page.findtext("revision/text") or ""
    try:
        text, links = clean_wikitext(wikitext)
    except Exception as exc:  # noqa: BLE001 - one bad page must not stop the shard
        rows.stats[f"skipped_bad_wikitext:{type(exc).__name__}"] += 1
        return
    rows.page_id.append(page_id)
    rows.rev_id.append(int(rev_id.text) if rev_id is not None and rev_id.text else 0)
    rows.title.append(title)
    rows.text.append(text)
    rows.links.append(
        [
            {
                "start": ln.start,
                "end": ln.end,
                "target": ln.target,
                "target_page_id": None,
                "target_qid": None,
            }
            for ln in links
        ]
    )
    rows.stats["articles"] += 1
    rows.stats["links"] += len(links)
