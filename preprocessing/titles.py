"""MediaWiki title rules: normalize a link target or page title, and tell its namespace or interwiki prefix.

The rules follow MediaWiki's `Title::newFromText` for an English-language wiki with
`$wgCapitalLinks` on (case="first-letter"):

- character references (`&amp;`, `&#91;`, `&nbsp;`) are decoded, then `%XX` escapes (the parser
  percent-decodes link targets before it builds the title);
- `_` and every run of whitespace become one space; direction marks (LRM, RLM, ...) are dropped;
- a `#fragment` is dropped, then surrounding spaces and one leading `:` (the "main namespace" colon);
- the first letter is upper-cased; a known namespace prefix gets its canonical spelling and its
  rest is upper-cased too (`category:foo` -> `Category:Foo`, `Image:x` -> `File:X`);
- interwiki and language prefixes are lower-cased and the rest is left alone (another wiki's rules).

A title that ends up empty, holds a character MediaWiki forbids in titles (`[]{}|<>`, controls),
or is longer than 255 bytes of UTF-8 is rejected as `None`.
"""

from __future__ import annotations

import re
from html.entities import html5
from urllib.parse import unquote

# enwiki's namespaces (canonical names and the aliases enwiki configures), keyed by lower case.
_NAMESPACE_NAMES = (
    "Media", "Special", "Talk", "User", "User talk", "Wikipedia", "Wikipedia talk", "File", "File talk",
    "MediaWiki", "MediaWiki talk", "Template", "Template talk", "Help", "Help talk", "Category",
    "Category talk", "Portal", "Portal talk", "Draft", "Draft talk", "TimedText", "TimedText talk",
    "Module", "Module talk", "Gadget", "Gadget talk", "Gadget definition", "Gadget definition talk",
    "Event", "Event talk", "Image", "Image talk", "Project", "Project talk", "WP", "WT",
)  # fmt: skip
_ALIASES = {
    "Image": "File", "Image talk": "File talk", "Project": "Wikipedia", "Project talk": "Wikipedia talk",
    "WP": "Wikipedia", "WT": "Wikipedia talk",
}  # fmt: skip
NAMESPACES: dict[str, str] = {name.lower(): name for name in _NAMESPACE_NAMES}

# Language editions of Wikipedia: `[[de:Paris]]` is an interlanguage link (shown in the sidebar,
# not in the text).
_LANGUAGE_CODES_TEXT = """
    aa ab ace ady af ak als alt am ami an ang anp ar arc ary arz as ast atj av avk awa ay az azb ba
    ban bar bat-smg bbc bcl bdr be be-tarask be-x-old bew bg bh bi bjn blk bm bn bo bpy br bs btm bug
    bxr ca cbk-zam cdo ce ceb ch cho chr chy ckb co cr crh cs csb cu cv cy da dag de dga din diq dsb
    dtp dty dv dz ee el eml en eo es et eu ext fa fat ff fi fiu-vro fj fo fon fr frp frr fur fy ga gag
    gan gcr gd gl glk gn gom gor got gpe gu guc gur guw gv ha hak haw he hi hif ho hr hsb ht hu hy hyw
    hz ia iba id ie ig igl ii ik ilo inh io is it iu ja jam jbo jv ka kaa kab kbd kbp kcg kg kge ki kj
    kk kl km kn knc ko koi kr krc ks ksh ku kus kv kw ky la lad lb lbe lez lfn lg li lij lld lmo ln lo
    lrc lt ltg lv lzh mad mai map-bms mdf mg mh mhr mi min mk ml mn mni mnw mo mos mr mrj ms mt mus mwl
    my myv mzn na nah nan nap nb nds nds-nl ne new ng nia nl nn no nov nqo nr nrm nso nv ny oc olo om or
    os pa pag pam pap pcd pcm pdc pfl pi pih pl pms pnb pnt ps pt pwn qu rm rmy rn ro roa-rup roa-tara
    rsk ru rue rup rw sa sah sat sc scn sco sd se sg sgs sh shi shn si simple sk skr sl sm smn sn so sq
    sr srn ss st stq su sv sw syl szl szy ta tay tcy tdd te tet tg th ti tk tl tly tn to tpi tr trv ts
    tt tum tw ty tyv udm ug uk ur uz ve vec vep vi vls vo vro wa war wo wuu xal xh xmf yi yo yue za zea
    zgh zh zh-classical zh-min-nan zh-yue zu"""
LANGUAGE_CODES = frozenset(_LANGUAGE_CODES_TEXT.split())
# Interwiki prefixes of Wikimedia's shared interwiki map (sister projects and a few common others):
# `[[wikt:word|word]]` shows its text inline but points off-wiki.
_INTERWIKI_TEXT = """
    w wikipedia wikt wiktionary q wikiquote s wikisource b wikibooks n wikinews v wikiversity voy
    wikivoyage d wikidata c commons m meta metawiki metawikimedia mw mediawikiwiki species wikispecies
    f wikifunctions wmf foundation wikimedia wikimania wmania outreach incubator phab phabricator
    toollabs toolforge wikitech gerrit mediazilla bugzilla rev doi arxiv google"""
INTERWIKI_PREFIXES = frozenset(_INTERWIKI_TEXT.split())

# MediaWiki's title whitespace class ($wgLegalTitleChars aside), plus '_' which titles store for ' '.
_SPACES_RE = re.compile(r"[ _\t\n\r\xa0\u1680\u180e\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
_DIRECTION_MARKS_RE = re.compile(r"[\u200e\u200f\u202a-\u202e]")
_ILLEGAL_RE = re.compile(r"[\[\]{}|<>\x00-\x1f\x7f\ufffd]")
_ENTITY_RE = re.compile(r"&(?:#([0-9]{1,7})|#[xX]([0-9a-fA-F]{1,6})|([A-Za-z][A-Za-z0-9]{1,31}));")
# Named references with their ';' (MediaWiki requires it), '&nbsp;' as a plain space: the corpus feeds
# tokenizers that treat U+00A0 inconsistently.
_NAMED = {name[:-1]: value for name, value in html5.items() if name.endswith(";")}
_NAMED["nbsp"] = " "
# Private-use sentinels that wikitext.py reserves for itself must not be conjured up by a reference.
_RESERVED = range(0xE000, 0xE003)


def _decode_reference(m: re.Match) -> str:
    num, hexa, name = m.groups()
    if name is not None:
        return _NAMED.get(name, m.group())
    code = int(num) if num is not None else int(hexa, 16)
    if code in _RESERVED:
        return ""
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return m.group()  # MediaWiki leaves an invalid reference as literal text
    return " " if code == 0xA0 else chr(code)


def decode_entities(text: str) -> str:
    """Decode HTML character references the way MediaWiki does: only with the closing ';'."""
    return _ENTITY_RE.sub(_decode_reference, text) if "&" in text else text


def _upper_first(text: str) -> str:
    first = text[0]
    upper = first.upper()
    # 'ß'.upper() is 'SS': MediaWiki keeps such letters as they are, and so do we.
    return upper + text[1:] if upper != first and len(upper) == 1 else text


def _prefix_key(prefix: str) -> str:
    return _SPACES_RE.sub(" ", prefix).strip().lower()


def normalize_title(raw: str) -> str | None:
    """The canonical form of a page title or link target, or None when it names no page."""
    title = decode_entities(raw)
    if "%" in title:
        title = unquote(title)
    # Most titles need no whitespace work: unusual spaces and direction marks are not printable.
    if "_" in title or "  " in title or not title.isprintable():
        title = _DIRECTION_MARKS_RE.sub("", _SPACES_RE.sub(" ", title))
    title = title.partition("#")[0].strip()
    if title.startswith(":"):
        title = title[1:].lstrip()
    if not title or _ILLEGAL_RE.search(title) or (len(title) > 63 and len(title.encode()) > 255):
        return None
    prefix, colon, rest = title.partition(":")
    if colon:
        key = _prefix_key(prefix)
        if key in NAMESPACES:
            rest = rest.lstrip()
            name = NAMESPACES[key]
            return f"{_ALIASES.get(name, name)}:{_upper_first(rest)}" if rest else None
        if key in INTERWIKI_PREFIXES or key in LANGUAGE_CODES:
            return f"{key}:{rest.lstrip()}"
    return _upper_first(title)


def link_namespace(title: str) -> str | None:
    """The namespace ('Category', 'File', 'Image', ...) or interwiki prefix ('de', 'wikt') of a title.

    None for an article (namespace 0). Namespaces come back in their canonical case, as written
    (`image:x` -> 'Image'); interwiki and language prefixes in lower case. A leading ':' is ignored.
    """
    prefix, colon, _ = title.lstrip().removeprefix(":").partition(":")
    if not colon:
        return None
    key = _prefix_key(prefix)
    if key in NAMESPACES:
        return NAMESPACES[key]
    return key if key in INTERWIKI_PREFIXES or key in LANGUAGE_CODES else None
