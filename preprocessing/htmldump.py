"""Wikimedia Enterprise HTML dumps -> the same `pages` rows as the wikitext path.

A dump (`enwiki-NS0-20240601-ENTERPRISE-HTML.json.tar.gz`) is a tar of `.ndjson` files, one JSON
article a line: `name`, `identifier` (page id), `version.identifier` (revision), `main_entity.identifier`
(the QID), `redirects` (titles redirecting here) and `article_body.html`, the page as MediaWiki's
Parsoid renders it, every template already expanded. So `{{convert}}` reads "2,381,741 square
kilometres (919,595 sq mi)" with no table of ours.

The HTML is parsed by mwparserfromhtml (made for these dumps: it knows Parsoid's markup of references,
infoboxes, navboxes, hatnotes, media, math and clean-up tags). What the wikitext path drops goes here
too, so both readers give the same kind of text: headings, tables, references, images, navigation,
hatnotes, message boxes, categories, and pronunciation templates (known by the template names Parsoid
records in `data-mw`, with the table of `preprocessing.templates`). Article links become exact spans,
by the same sentinels and the same punctuation repair as the wikitext cleaner.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

from preprocessing import wikitext
from preprocessing.dumpfiles import DumpFileError
from preprocessing.pages import PageRows, add_article, add_redirect
from preprocessing.templates import is_pronunciation
from preprocessing.titles import link_namespace, normalize_title

SUFFIX = "-ENTERPRISE-HTML.json.tar.gz"
# Parsoid's marks: an in-text reference, a reference list, a transclusion (its JSON names the template).
_DROPPED_TYPEOF = ("mw:Extension/ref", "mw:Extension/references", "mw:Extension/math", "mw:File")
_DROPPED_NAME_LIST = "style script link meta table figure h1 h2 h3 h4 h5 h6 audio video img math noscript"
_DROPPED_NAMES = frozenset(_DROPPED_NAME_LIST.split())
_DROPPED_CLASS_LIST = (
    "hatnote navbox reflist mw-references-wrap noprint metadata mw-empty-elt shortdescription sistersitebox "
    "portalbox"
)
_DROPPED_CLASSES = frozenset(_DROPPED_CLASS_LIST.split())
_BLOCKS = frozenset(
    {"p", "li", "dd", "dt", "div", "blockquote", "ul", "ol", "dl", "section", "pre", "center"}
)


def is_enterprise_html(path: Path) -> bool:
    """A Wikimedia Enterprise HTML dump, by its published name (`...-ENTERPRISE-HTML.json.tar.gz`)."""
    return path.name.endswith(SUFFIX)


def iter_article_lines(dump: Path) -> Iterator[str]:
    """The JSON article lines of every `.ndjson` member, read as a stream (the dumps are 100+ GB)."""
    try:
        with tarfile.open(dump, "r|gz") as tar:
            for member in tar:
                stream = tar.extractfile(member) if member.isfile() else None
                if stream is None:
                    continue
                for line in stream:
                    if line.strip():
                        yield line.decode("utf-8", errors="replace")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DumpFileError(
            f"{dump}: not a readable Enterprise HTML dump ({exc})",
            fix="pass a `*-ENTERPRISE-HTML.json.tar.gz` as published, or fetch it again",
        ) from exc


class _Walker:
    """Depth-first over the parsed HTML: text kept, article links wrapped in the cleaner's sentinels."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.targets: list[str] = []
        self.dropped_about: set[str] = set()

    def walk(self, node) -> None:
        for child in node.children:
            name = getattr(child, "name", None)
            if name is None:
                if type(child).__name__ == "NavigableString":  # comments, CDATA and doctypes are no text
                    self.out.append(wikitext.plain_piece(str(child)))
            elif not self._dropped(child):
                self._element(child, name)

    def _element(self, tag, name: str) -> None:
        if name == "br":
            self.out.append(" ")
        elif name == "a" and _is_wikilink(tag):
            self._link(tag)
        elif name in _BLOCKS:
            self.out.append("\n")
            self.walk(tag)
            self.out.append("\n")
        else:
            self.walk(tag)

    def _link(self, tag) -> None:
        target = _article_target(tag)
        if target is None:
            self.walk(tag)  # a link elsewhere (another namespace or wiki): its text only
            return
        inner = _Walker()
        inner.dropped_about = self.dropped_about
        inner.walk(tag)
        anchor = "".join(inner.out).replace("\n", " ")
        if wikitext.append_anchor(self.out, anchor):
            self.targets.append(target)

    def _dropped(self, tag) -> bool:
        about = tag.get("about")
        if about and about in self.dropped_about:
            return True  # a later node of a dropped transclusion
        if _drops(tag):
            if about and "mw:Transclusion" in (tag.get("typeof") or ""):
                self.dropped_about.add(about)
            return True
        return False


def _drops(tag) -> bool:
    from mwparserfromhtml.parse.elements import Category, InlineCleanup, Messagebox, Navigation, Note

    if tag.name in _DROPPED_NAMES or _DROPPED_CLASSES.intersection(tag.get("class") or ()):
        return True
    typeof = tag.get("typeof") or ""
    if any(mark in typeof for mark in _DROPPED_TYPEOF) or (
        "mw:Transclusion" in typeof and _transcludes_pronunciation(tag)
    ):
        return True
    return (
        Navigation.is_navigation(tag)
        or Note.is_note(tag)
        or Messagebox.is_message_box(tag)
        or Category.is_category(tag)
        or InlineCleanup.is_inline_cleanup(tag)
    )


def _transcludes_pronunciation(tag) -> bool:
    """Whether this transclusion is a pronunciation template (`{{IPAc-en|..}}`), by Parsoid's record."""
    try:
        parts = json.loads(tag.get("data-mw") or "{}").get("parts", [])
    except ValueError:
        return False
    for part in parts:
        target = part.get("template", {}).get("target", {}) if isinstance(part, dict) else {}
        name = str(target.get("wt", "")).strip()
        if name and is_pronunciation(" ".join(name.replace("_", " ").split()).lower()):
            return True
    return False


def _is_wikilink(tag) -> bool:
    from mwparserfromhtml.parse.elements import Wikilink

    return Wikilink.is_wikilink(tag)


def _article_target(tag) -> str | None:
    """The normalized title a link points to, when it is an article of this wiki."""
    if "mw:WikiLink/Interwiki" in " ".join(tag.get("rel") or ()):
        return None
    href = tag.get("href") or ""
    if not href.startswith("./"):
        return None
    title = unquote(href[2:].split("?", 1)[0].split("#", 1)[0]).replace("_", " ")
    target = normalize_title(title)
    return target if target is not None and link_namespace(target) is None else None


def html_to_text(html: str, stats: Counter | None = None) -> tuple[str, list[wikitext.Link]]:
    """Plain text of an article's Parsoid HTML and its article links, as `clean_wikitext` gives them."""
    from mwparserfromhtml import Article

    body = Article(html).wikistew.tag
    walker = _Walker()
    walker.walk(body.body or body)
    return wikitext.finish_marked("".join(walker.out), walker.targets, Counter() if stats is None else stats)


def add_html_article(rows: PageRows, line: str) -> None:
    """Parse one dump line and append its article and its redirects; a bad line is counted by reason."""
    try:
        doc = json.loads(line)
        ns = int(doc.get("namespace", {}).get("identifier", 0))
        title = normalize_title(str(doc["name"]))
        page_id = int(doc["identifier"])
        html = doc["article_body"]["html"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        rows.stats[f"skipped_bad_json:{type(exc).__name__}"] += 1
        return
    if ns != 0 or title is None:
        rows.stats["skipped_namespace"] += 1
        return
    try:
        text, links = html_to_text(html, rows.stats)
    except Exception as exc:  # noqa: BLE001 - one bad page must not stop the shard
        rows.stats[f"skipped_bad_html:{type(exc).__name__}"] += 1
        return
    add_article(rows, page_id, _int(doc.get("version", {}).get("identifier")), title, _qid(doc), text, links)
    for redirect in doc.get("redirects") or ():
        if isinstance(redirect, dict):
            add_redirect(rows, normalize_title(str(redirect.get("name", ""))) or "", title)


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _qid(doc: dict) -> str | None:
    qid = (doc.get("main_entity") or {}).get("identifier")
    return qid if isinstance(qid, str) and re.fullmatch(r"Q\d+", qid) else None
