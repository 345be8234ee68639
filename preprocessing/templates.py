"""The templates whose output is part of the sentence, and what each renders to in clean text.

The cleaner (`preprocessing.wikitext`) drops every template but the ones in `TEMPLATES`: dropping a
`{{convert}}` leaves "With an area of, Algeria is ...", dropping a `{{lang}}` leaves "Algeria ( ';".
Each entry renders to wikitext (a link in it stays a link, quotes and tags go as elsewhere), from
the call's arguments with nested templates already rendered or dropped. `example` is a real call
from the enwiki excerpt the fidelity benchmark reads, with what it must render to; the tests run
every example, and the benchmark checks each one still occurs in the excerpt.

Pronunciation templates (`PRONUNCIATION`) are dropped like the rest; the punctuation around them
(`({{IPAc-en|..}}; born ...)`) is repaired by the cleaner's finishing pass.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from preprocessing import units


@dataclass(frozen=True)
class RenderOptions:
    """Choices of rendering; part of the ingest config, so a change re-extracts the pages."""

    convert_output: bool = False  # `{{convert|5|km|mi}}`: "5 kilometres (3.1 mi)" instead of "5 kilometres"


@dataclass
class Call:
    """One template call: its positional arguments (1-based as in wikitext) and its named ones."""

    name: str
    positional: list[str] = field(default_factory=list)
    named: dict[str, str] = field(default_factory=dict)

    def arg(self, key: int | str, default: str = "") -> str:
        if isinstance(key, int):
            return self.positional[key - 1] if 0 < key <= len(self.positional) else default
        return self.named.get(key, default)

    def flag(self, key: str) -> bool:
        return self.named.get(key, "").lower() in {"y", "yes", "on", "true", "1"}


Render = Callable[[Call, RenderOptions], str]


@dataclass(frozen=True)
class Template:
    """A table entry: the names it answers to (lower case), its renderer, and a real call it renders."""

    names: tuple[str, ...]
    render: Render
    example: tuple[str, str]


def _content(n: int) -> Render:
    """The n-th positional argument (or `text=`) as it stands."""
    return lambda call, _: call.arg("text") or call.arg(n)


def _last(call: Call, _: RenderOptions) -> str:
    # {{transl|ar|ALA|Allāh}}: the optional scheme comes before the text, so the text is the last one
    return call.positional[-1] if len(call.positional) >= 2 else ""


def _nihongo(call: Call, _: RenderOptions) -> str:
    """`{{nihongo|English|漢字|rōmaji}}` -> "English (漢字, rōmaji)", as the template shows it."""
    parts = [p for p in call.positional[:3] if p.strip()]
    if not parts:
        return ""
    head, rest = parts[0], parts[1:]
    return f"{head} ({', '.join(rest)})" if rest else head


def _words(call: Call, _: RenderOptions) -> str:
    # {{linktext|ἄνθρωπος}} links each word to Wiktionary; the words are the text
    return " ".join(p.strip() for p in call.positional if p.strip())


def _chem(call: Call, _: RenderOptions) -> str:
    # {{chem|CH|3|COOH}}: element symbols and counts alternate; plain text has no subscripts
    return "".join(p.strip() for p in call.positional)


def _flag(call: Call, _: RenderOptions) -> str:
    return call.arg("name") or call.arg(1).strip()


def _nothing(call: Call, _: RenderOptions) -> str:
    return ""


def _as_of(call: Call, _: RenderOptions) -> str:
    """`{{as of|2010|5}}` -> "As of May 2010"; `lc=y` starts it lower case; `alt=` replaces it."""
    if call.arg("alt"):
        return call.arg("alt")
    # the template writes day-first dates unless told `df=US`
    date = _date(call.positional[:3], call.arg("df").upper() != "US")
    lead = "as of" if call.flag("lc") else "As of"
    return f"{lead} {date}" if date else ""


_NUMBER_RE = re.compile(r"\s*(\d{1,4})\s*")


def _date(parts: list[str], day_first: bool) -> str:
    """Year, month, day (any may be missing from the right) as a date reads in English prose."""
    nums = []
    for part in parts:
        m = _NUMBER_RE.fullmatch(part)
        if m is None:
            break
        nums.append(int(m.group(1)))
    if not nums:
        return parts[0].strip() if parts else ""
    year, month, day = (nums + [0, 0])[:3]
    if not 1 <= month <= 12:
        return str(year)
    name = calendar.month_name[month]
    if not day:
        return f"{name} {year}"
    return f"{day} {name} {year}" if day_first else f"{name} {day}, {year}"


def _day_first(call: Call) -> bool:
    return call.flag("df")


def _birth_date(call: Call, _: RenderOptions) -> str:
    """`{{birth date|1809|2|12}}` -> "February 12, 1809"; `df=yes` -> "12 February 1809"."""
    return _date(call.positional[:3], _day_first(call))


def _death_date_and_age(call: Call, _: RenderOptions) -> str:
    """`{{death date and age|1865|4|15|1809|2|12}}` -> "April 15, 1865 (aged 56)"."""
    died = _date(call.positional[:3], _day_first(call))
    age = _age(call.positional[3:6], call.positional[:3])
    return f"{died} (aged {age})" if age is not None else died


def _age(born: list[str], at: list[str]) -> int | None:
    try:
        b = [int(x) for x in born[:3]]
        d = [int(x) for x in at[:3]]
    except ValueError:
        return None
    if len(b) < 3 or len(d) < 3:
        return d[0] - b[0] if b and d else None
    return d[0] - b[0] - ((d[1], d[2]) < (b[1], b[2]))


def _convert(call: Call, options: RenderOptions) -> str:
    return units.render_convert(call.positional, call.named, options.convert_output)


# fmt: off
TEMPLATES: tuple[Template, ...] = (
    Template(("convert", "cvt"), _convert,
             ("{{convert|2381741|km2|sqmi|0}}", "2,381,741 square kilometres")),
    Template(("lang",), _content(2), ("{{lang|fr|anthropologie}}", "anthropologie")),
    Template(("transl", "transliteration"), _last, ("{{transl|ar|ALA|Allāh}}", "Allāh")),
    Template(("nihongo",), _nihongo, ("{{Nihongo|strikes|打ち|uchi}}", "strikes (打ち, uchi)")),
    Template(("nowrap", "nobr", "nobreak"), _content(1), ("{{nowrap|60° E}}", "60° E")),
    Template(("small", "smaller", "big", "large", "larger", "resize", "nobold", "noitalic"), _content(1),
             ('{{small|"March of Azerbaijan"}}', '"March of Azerbaijan"')),
    Template(("quote", "blockquote", "quotation"), _content(1),
             ("{{quote|''Here men from the planet Earth first set foot upon the Moon, July 1969 A.D. We "
              "came in peace for all mankind.''}}", "Here men from the planet Earth first set foot upon "
              "the Moon, July 1969 A.D. We came in peace for all mankind.")),
    Template(("linktext",), _words, ("{{linktext|λόγος}}", "λόγος")),
    Template(("sc", "smallcaps", "small caps"), _content(1), ("{{sc|bc}}", "bc")),
    Template(("'s",), lambda call, _: "'s", ("{{'s}}", "'s")),
    # an entity, not a space: a rendering is stripped, and the entity decodes to a space later
    Template(("nbsp", "spaces"), lambda call, _: "&nbsp;", ("{{nbsp}}", " ")),
    Template(("birth date", "birth date and age", "death date", "start date", "end date",
              "start date and age", "end date and age", "birth-date", "start-date", "end-date", "film date"),
             _birth_date, ("{{Birth date|df=yes|1885|4|3}}", "3 April 1885")),
    Template(("death date and age",), _death_date_and_age,
             ("{{death date and age|1865|4|15|1809|2|12}}", "April 15, 1865 (aged 56)")),
    Template(("as of",), _as_of, ("{{As of|2009}}", "As of 2009")),
    Template(("flag", "flagcountry", "flagu", "flag country"), _flag, ("{{flag|Canada}}", "Canada")),
    Template(("flagicon", "flag icon", "flagdeco"), _nothing, ("{{flagicon|Iran}}", "")),
    Template(("chem",), _chem, ("{{chem|H|3|O|+}}", "H3O+")),
)
# fmt: on
# `{{lang-fr|Paris}}` and the other `lang-xx` templates show the foreign text after the language's name;
# the text is what the sentence needs.
LANG_PREFIX = Template(
    ("lang-",), _content(1), ("{{lang-sq|Republika e Shqipërisë}}", "Republika e Shqipërisë")
)
PRONUNCIATION = frozenset({"ipa", "ipac-en", "ipac-ar", "respell", "pronunciation", "ipa-all", "audio"})
BY_NAME: dict[str, Template] = {name: entry for entry in TEMPLATES for name in entry.names}


def _name_pattern(name: str) -> str:
    return r"[ _]+".join(re.escape(word) for word in name.split())


# A quick filter the cleaner runs at each top-level template (one regex call, no slicing): could this be
# a name of the table? `lookup` decides. MediaWiki ignores the case of a name's first letter only;
# matching any case costs nothing and takes `{{Convert}}`, `{{CONVERT}}` alike.
CANDIDATE_RE = re.compile(
    r"\s*(?:template:\s*)?(?:lang-|"
    + "|".join(_name_pattern(n) for n in sorted(BY_NAME, key=len, reverse=True))
    + r")",
    re.IGNORECASE,
)


def lookup(name: str) -> Template | None:
    """The entry rendering template `name` (already normalized, lower case), or None: it is dropped."""
    entry = BY_NAME.get(name)
    if entry is None and name.startswith("lang-") and len(name) <= 12:
        return LANG_PREFIX
    return entry


def is_pronunciation(name: str) -> bool:
    return name in PRONUNCIATION or name.startswith("ipa-") or name.startswith("ipac-")
