"""Tiny Wikimedia Enterprise HTML dumps, written in the published format: a tar.gz of `.ndjson` files,
one JSON article a line, its Parsoid HTML in `article_body.html` (the markup below copies what Parsoid
emits for each construct: sections, transclusions with `data-mw`, `mw-ref` references, figures,
hatnotes, infoboxes, navboxes, category links, red and redirect links)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

HEAD = (
    '<!DOCTYPE html>\n<html prefix="dc: http://purl.org/dc/terms/ mw: http://mediawiki.org/rdf/"><head>'
    '<meta charset="utf-8"/><meta property="mw:htmlVersion" content="2.8.0"/>'
    '<base href="//en.wikipedia.org/wiki/"/><title>{title}</title></head>'
    '<body class="mw-content-ltr parsoid-body mediawiki mw-parser-output" lang="en" dir="ltr">'
)


def transclusion(about: str, template: str, inner: str, tag: str = "span") -> str:
    data = json.dumps({"parts": [{"template": {"target": {"wt": template, "href": f"./Template:{template}"},
                                               "params": {}, "i": 0}}]})  # fmt: skip
    return f"<{tag} about=\"#{about}\" typeof=\"mw:Transclusion\" data-mw='{data}'>{inner}</{tag}>"


def link(title: str, text: str | None = None, cls: str = "", fragment: str = "") -> str:
    href = "./" + title.replace(" ", "_") + fragment
    extra = f' class="{cls}"' if cls else ""
    return f'<a rel="mw:WikiLink" href="{href}" title="{title}"{extra}>{text or title}</a>'


def ref(n: int) -> str:
    return (
        f'<sup about="#mwt{100 + n}" class="mw-ref reference" id="cite_ref-{n}" rel="dc:references" '
        f'typeof="mw:Extension/ref" data-mw=\'{{"name":"ref"}}\'><a href="./Algeria#cite_note-{n}">'
        f'<span class="mw-reflink-text">[{n}]</span></a></sup>'
    )


ALGERIA_BODY = (
    '<section data-mw-section-id="0" id="mwAQ">'
    + transclusion("mwt1", "Short description", "Country in North Africa", "div").replace(
        "<div ", '<div class="shortdescription nomobile noexcerpt noprint searchaux" style="display:none" ', 1
    )
    + '<div role="note" class="hatnote navigation-not-searchable">For other uses, see '
    + link("Algeria (disambiguation)")
    + ".</div>"
    + '<table class="infobox ib-country vcard"><tbody><tr><th>Capital</th><td>'
    + link("Algiers")
    + "</td></tr></tbody></table>\n"
    + '<p id="mwAg"><b>Algeria</b> ('
    + transclusion(
        "mwt2",
        "IPAc-en",
        '<span class="rt-commentedText nowrap"><span class="IPA nopopups noexcerpt" lang="en-fonipa">'
        "/æl/</span></span>",
    )
    + "; "
    + transclusion("mwt3", "lang-ar", 'Arabic: <span lang="ar">الجزائر</span>')
    + "), officially "
    + link("People's Democratic Republic of Algeria", "the People's Democratic Republic")
    + ", is a "
    + link("Sovereign state", "sovereign state")
    + " in "
    + link("North Africa")
    + ". With an area of "
    + transclusion("mwt4", "convert", "2,381,741 square kilometres (919,595&nbsp;sq&nbsp;mi)")
    + ", it is the "
    + link("List of countries and dependencies by area", "tenth-largest country", "mw-redirect", "#Countries")
    + " in the world."
    + ref(1)
    + " Its capital is "
    + link("Algiers")
    + ', near <a rel="mw:WikiLink" href="./Nowhere_land?action=edit&amp;redlink=1" title="Nowhere land" '
    'class="new">Nowhere land</a>.'
    + '<sup class="noprint Inline-Template Template-Fact"><i>[<a rel="mw:WikiLink" '
    'href="./Wikipedia:Citation_needed" title="Wikipedia:Citation needed">citation needed</a>]</i></sup>'
    + "</p>\n"
    + '<figure class="mw-default-size" typeof="mw:File/Thumb"><a href="./File:Map.png" '
    'class="mw-file-description"><img src="//upload.wikimedia.org/x.png"/></a><figcaption>A map of the '
    + link("Sahara")
    + "</figcaption></figure>"
    + "</section>"
    + '<section data-mw-section-id="1" id="mwBQ"><h2 id="History">History of '
    + link("Numidia")
    + "</h2>\n"
    + "<p>Ancient "
    + link("Numidia", "<i>Numidia</i>")
    + " (see "
    + '<a rel="mw:WikiLink/Interwiki" href="https://fr.wiktionary.org/wiki/numide" title="wikt:fr:numide" '
    'class="extiw">numide</a>) was here, '
    + transclusion("mwt5", "as of", "as of 2015")
    + ".<!-- a comment --></p>\n"
    + "<ul><li>"
    + link("Carthage")
    + " &amp; "
    + link("Rome")
    + "</li><li>"
    + link("Math", "Math")
    + ' <span class="mwe-math-element" typeof="mw:Extension/math">x^2</span> here</li></ul>\n'
    + '<div role="navigation" class="navbox" aria-labelledby="x">'
    + link("Africa")
    + "</div>"
    + '<div class="mw-references-wrap"><ol class="mw-references references" typeof="mw:Extension/references">'
    + '<li about="#cite_note-1" id="cite_note-1" data-mw-footnote-number="1"><span class="mw-reference-text">'
    + link("CIA")
    + " World Factbook</span></li></ol></div>"
    + '<link rel="mw:PageProp/Category" href="./Category:Algeria"/>'
    + "</section></body></html>"
)
ALGERIA_TEXT = (
    "Algeria (Arabic: الجزائر), officially the People's Democratic Republic, is a sovereign state in North "
    "Africa. With an area of 2,381,741 square kilometres (919,595 sq mi), it is the tenth-largest country in "
    "the world. Its capital is Algiers, near Nowhere land.\n"
    "Ancient Numidia (see numide) was here, as of 2015.\n"
    "Carthage & Rome\n"
    "Math here"
)
ALGERIA_LINKS = [
    ("the People's Democratic Republic", "People's Democratic Republic of Algeria"),
    ("sovereign state", "Sovereign state"),
    ("North Africa", "North Africa"),
    ("tenth-largest country", "List of countries and dependencies by area"),
    ("Algiers", "Algiers"),
    ("Nowhere land", "Nowhere land"),
    ("Numidia", "Numidia"),
    ("Carthage", "Carthage"),
    ("Rome", "Rome"),
    ("Math", "Math"),
]


def article(
    name: str, page_id: int, body: str, qid: str | None, redirects: tuple[str, ...] = (), ns: int = 0
) -> dict:
    """One dump line, with the fields the Enterprise schema gives every article."""
    doc = {
        "name": name,
        "identifier": page_id,
        "date_modified": "2024-06-01T00:00:00Z",
        "version": {"identifier": 1000 + page_id, "editor": {"identifier": 1}},
        "url": f"https://en.wikipedia.org/wiki/{name.replace(' ', '_')}",
        "namespace": {"identifier": ns},
        "in_language": {"identifier": "en"},
        "article_body": {"html": HEAD.format(title=name) + body, "wikitext": "(not read)"},
        "redirects": [{"name": r, "url": f"https://en.wikipedia.org/wiki/{r}"} for r in redirects],
        "is_part_of": {"identifier": "enwiki"},
    }
    if qid is not None:
        doc["main_entity"] = {"identifier": qid, "url": f"https://www.wikidata.org/entity/{qid}"}
    return doc


def sample_lines() -> list[str]:
    algiers = (
        '<section data-mw-section-id="0"><p><b>Algiers</b> is the capital of '
        + link("People's Democratic Republic of Algeria", "Algeria")
        + ".</p></section></body></html>"
    )
    lines = [
        article("Algeria", 358, ALGERIA_BODY, "Q262", redirects=("People's Democratic Republic of Algeria",)),
        article("Algiers", 3561, algiers, "Q3561"),
        article("Talk:Algeria", 9, "<p>talk</p>", None, ns=1),
        article("Carthage", 5, '<section data-mw-section-id="0"><p>A city.</p></section>', None),
    ]
    return [json.dumps(doc, ensure_ascii=False) for doc in lines] + ['{"name": "Broken", "identif']


def write_enterprise_dump(path: Path, lines: list[str], per_file: int = 2) -> Path:
    """`lines` as the dump's `.ndjson` members, `per_file` lines each (the real ones hold thousands)."""
    with tarfile.open(path, "w:gz") as tar:
        for i in range(0, len(lines), per_file):
            data = ("\n".join(lines[i : i + per_file]) + "\n").encode()
            info = tarfile.TarInfo(f"enwiki_namespace_0_{i // per_file}.ndjson")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
