"""Speed of `clean_wikitext` alone (no XML, no I/O), beside mwparserfromhell and wikiextractor.

    python benchmarks/wikitext_micro.py [--pages 60] [--repeat 3] [--dump FILE.xml[.bz2]] [--extra-path DIR]

The pages are generated (seeded, so every run times the same text) to look like long featured
articles: an infobox with nested templates, many `<ref>`s holding cite templates, tables, images with
linked captions, lists, headings, and links of every form; 30-60 KB of wikitext each. `--dump` times
the namespace-0 articles of a real pages-articles dump instead (for instance the gensim excerpt that
`benchmarks/ingest.py --gensim-sample` fetches into `.bench/`).

The references are optional and never project dependencies: install them in a scratch place, say
`pip install --target /tmp/wikiref mwparserfromhell wikiextractor==3.1.0`, then pass
`--extra-path /tmp/wikiref`.
mwparserfromhell is timed as `parse(text).strip_code()`; wikiextractor as what `--no-templates` does per
page, `Extractor(...).clean_text(text, expand_templates=False)`, fed the XML-escaped text it reads from
a dump. Neither produces link offsets. Prints MB/s of UTF-8 wikitext on one core, best of `--repeat`.
"""

from __future__ import annotations

import argparse
import bz2
import html
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preprocessing import wikitext  # noqa: E402

_WORD_LIST = (
    "the of and in to a was is for on as by with his that from at it an were which are this be also has had "
    "first one their its new after but who not they have her two she been other when there all during into "
    "city river century government population war world early school national between later under years "
    "several built known second state area region party music history large found northern major led "
    "became most public since trade while around empire period modern ancient local political church royal"
)
WORDS = _WORD_LIST.split()
TITLES = (
    "France", "Paris", "Seine", "Europe", "Roman Empire", "French Revolution", "Napoleon", "Louvre",
    "Eiffel Tower", "Gothic architecture", "Catholic Church", "Middle Ages", "Renaissance", "Art museum",
    "Île-de-France", "Versailles", "Charles de Gaulle", "World War II", "Treaty of Paris (1783)",
    "Latin language", "Celts", "Gaul", "Julius Caesar", "Notre-Dame de Paris", "Métro", "Capital city",
    "European Union", "United Nations", "UNESCO", "Tourism", "Fashion capital", "Gastronomy", "Opera",
    "Sorbonne", "Enlightenment", "Louis XIV", "Bastille", "Champs-Élysées", "Montmartre", "Impressionism",
)  # fmt: skip


class PageWriter:
    """Builds one synthetic featured-article-sized page from seeded random choices."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.parts: list[str] = []
        self.refs = 0

    def words(self, n: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(n))

    def link(self) -> str:
        title = self.rng.choice(TITLES)
        form = self.rng.randrange(6)
        if form == 0:
            return f"[[{title}|{self.words(2)}]]"
        if form == 1:
            return f"[[{title.lower()}]]s" if title[0].isascii() else f"[[{title}]]"
        if form == 2:
            return f"[[{title}#History|{title}]]"
        return f"[[{title}]]"

    def cite(self) -> str:
        self.refs += 1
        if self.refs > 3 and self.rng.random() < 0.3:
            return f'<ref name="r{self.rng.randrange(1, self.refs)}" />'
        kind = self.rng.choice(("web", "book", "journal", "news"))
        return (
            f'<ref name="r{self.refs}">{{{{cite {kind} |last={self.rng.choice(WORDS).title()} '
            f"|first={self.rng.choice(WORDS).title()} |title=''{self.words(5)}'' "
            f"|publisher=[[{self.rng.choice(TITLES)}]] |year={self.rng.randrange(1900, 2024)} "
            f"|url=https://example.org/{self.rng.randrange(10**6)} |access-date=1 May 2023 "
            f"|isbn=978-0-{self.rng.randrange(10**8):08d} |pages={self.rng.randrange(1, 400)}}}}}</ref>"
        )

    def sentence(self) -> str:
        pieces = [self.words(self.rng.randrange(3, 8))]
        for _ in range(self.rng.randrange(1, 4)):
            pieces.append(self.link())
            pieces.append(self.words(self.rng.randrange(2, 7)))
        roll = self.rng.random()
        if roll < 0.15:
            pieces.append(f"{{{{convert|{self.rng.randrange(1, 900)}|km|mi|abbr=on}}}}")
        elif roll < 0.25:
            pieces.append(f"''{self.words(2)}''&nbsp;&ndash; '''{self.words(1)}'''")
        elif roll < 0.3:
            pieces.append("{{citation needed|date=March 2023}}")
        text = " ".join(pieces)
        text = text[0].upper() + text[1:] + "."
        return text + (self.cite() if self.rng.random() < 0.6 else "")

    def paragraph(self) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randrange(3, 8)))

    def infobox(self) -> str:
        return (
            "{{Infobox settlement\n| name = {{nowrap|{{small|{{lang|fr|Ville}}}}}}\n"
            "| image_skyline = {{multiple image|image1=Skyline.jpg|caption1=[[Eiffel Tower]]}}\n"
            "| coordinates = {{coord|48|51|24|N|2|21|08|E|region:FR|display=inline,title}}\n"
            f"| population_total = {{{{formatnum:{self.rng.randrange(10**6, 10**7)}}}}}{self.cite()}\n"
            "| leader_name = [[Anne Hidalgo]] ([[Socialist Party (France)|PS]])\n"
            "| area_km2 = {{convert|105.4|km2|sqmi|abbr=on}}\n"
            "| timezone = [[Central European Time|CET]] ({{UTC+1}})\n"
            "| footnotes = {{efn|The [[Bois de Boulogne]] {{nowrap|and {{small|Vincennes}}}}}}\n}}\n"
        )

    def table(self) -> str:
        rows = "".join(
            f"|-\n| {{{{flagicon|FRA}}}} {self.link()} || {{{{formatnum:{self.rng.randrange(10**5)}}}}} "
            f"|| {self.words(3)}{self.cite()}\n"
            for _ in range(self.rng.randrange(5, 15))
        )
        return f'{{| class="wikitable sortable"\n|+ {self.words(3)}\n! Name !! Value !! Note\n{rows}|}}\n'

    def image(self) -> str:
        return (
            f"[[File:{self.words(2).title()}.jpg|thumb|upright=1.2|{self.words(4)} "
            f"{self.link()} {{{{lang|fr|{self.words(2)}}}}}]]\n"
        )

    def section(self) -> None:
        self.parts.append(f"\n== {self.words(2).title()} ==\n")
        if self.rng.random() < 0.5:
            self.parts.append(self.image())
        for _ in range(self.rng.randrange(2, 5)):
            self.parts.append(self.paragraph() + "\n\n")
        roll = self.rng.random()
        if roll < 0.3:
            self.parts.append(self.table())
        elif roll < 0.6:
            self.parts.append("".join(f"* {self.link()} – {self.words(6)}\n" for _ in range(6)))
        elif roll < 0.7:
            self.parts.append(f"<math>\\sum_{{i=1}}^n x_i^2</math> {self.words(5)}.<!-- note [[x]] -->\n")

    def page(self, size: int) -> str:
        self.parts = ["{{Short description|A city}}\n{{Use dmy dates|date=May 2023}}\n", self.infobox()]
        self.parts.append(f"'''Ville''' ({{{{IPA-fr|vil}}}}; {{{{lang|la|Villa}}}}) {self.paragraph()}\n\n")
        while sum(map(len, self.parts)) < size:
            self.section()
        navbox = " {{!}} ".join(self.link() for _ in range(40))
        self.parts.append(
            f"\n== References ==\n{{{{Reflist|30em}}}}\n\n== External links ==\n"
            f"* [https://example.org Official site]\n{{{{Navbox|name=Ville|list1={navbox}}}}}\n"
            "{{Authority control}}\n"
        )
        self.parts.extend(f"[[Category:{self.words(2).title()}]]\n" for _ in range(8))
        self.parts.extend(f"[[{lang}:Ville]]\n" for lang in ("de", "fr", "es", "it", "ja", "nl", "pl", "ru"))
        return "".join(self.parts)


def synthetic_pages(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [PageWriter(rng).page(rng.randrange(30_000, 60_000)) for _ in range(count)]


def dump_pages(path: Path) -> list[str]:
    """The wikitext of the namespace-0, non-redirect pages of a pages-articles dump."""
    with bz2.open(path) if path.suffix == ".bz2" else path.open("rb") as f:
        raw = f.read().decode()
    pages = []
    for page in re.finditer(r"<page>(.*?)</page>", raw, re.S):
        body = page.group(1)
        text = re.search(r"<text[^>]*>(.*?)</text>", body, re.S)
        if "<ns>0</ns>" in body and "<redirect" not in body and text:
            pages.append(html.unescape(text.group(1)))
    return pages


def best_seconds(fn: Callable[[str], object], pages: list[str], repeat: int, reset=lambda: None) -> float:
    best = float("inf")
    for _ in range(repeat):
        reset()
        start = time.perf_counter()
        for page in pages:
            fn(page)
        best = min(best, time.perf_counter() - start)
    return best


def references() -> dict[str, Callable[[str], object]]:
    """The reference extractors that are importable here, by name."""
    found: dict[str, Callable[[str], object]] = {}
    try:
        import mwparserfromhell
    except ImportError:
        print("mwparserfromhell: not importable (see --extra-path)")
    else:
        found["mwparserfromhell strip_code"] = lambda text: mwparserfromhell.parse(text).strip_code()
    try:
        from wikiextractor.extract import Extractor
    except ImportError:
        print("wikiextractor: not importable (see --extra-path)")
    else:
        found["wikiextractor --no-templates"] = lambda text: Extractor(1, 1, "", "Page", []).clean_text(
            xml_escaped(text), expand_templates=False
        )
    return found


def xml_escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=60, help="synthetic pages to generate")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the best one counts")
    ap.add_argument("--dump", type=Path, help="time the articles of this pages-articles .xml[.bz2] instead")
    ap.add_argument("--extra-path", action="append", default=[], help="where the references are installed")
    args = ap.parse_args()
    sys.path.extend(args.extra_path)
    pages = dump_pages(args.dump) if args.dump else synthetic_pages(args.pages)
    size = sum(len(page.encode()) for page in pages)
    links = sum(len(wikitext.clean_wikitext(page)[1]) for page in pages)
    print(f"{len(pages)} pages, {size / 1e6:.2f} MB of wikitext, {links} article links")

    # Each run starts with an empty link-classification cache, as a fresh ingest worker does.
    reset = wikitext._classify_cached.cache_clear
    timings = {"trelm clean_wikitext": best_seconds(wikitext.clean_wikitext, pages, args.repeat, reset)}
    timings.update({name: best_seconds(fn, pages, args.repeat) for name, fn in references().items()})
    ours = timings["trelm clean_wikitext"]
    print(f"{'extractor':32s} {'MB/s':>8s} {'pages/s':>9s} {'trelm speed-up':>15s}")
    for name, seconds in timings.items():
        print(f"{name:32s} {size / 1e6 / seconds:8.2f} {len(pages) / seconds:9.1f} {seconds / ours:14.1f}x")


if __name__ == "__main__":
    main()
