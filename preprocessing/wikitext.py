"""Wikitext -> plain text for language-model pre-training, with the exact spans of article links.

`clean_wikitext` runs a fixed series of linear passes, each either one compiled regex substitution
(C speed) or a left-to-right token scan whose Python loop runs once per markup token, never per
character; plain text is copied by slicing and joined once per pass:

1. comments and extension tags (`<ref>`, `<math>`, `<gallery>`, ...) go with their content, which
   MediaWiki treats as opaque; `<nowiki>`/`<pre>` content is kept and its markup escaped as
   character references, so no later pass sees it as markup;
2. templates, parser functions and template parameters (`{{...}}`, `{{{...}}}`, any nesting) and
   tables (`{| ... |}`, nested, inside or around templates) go by bracket matching, but for the
   templates whose output is part of the sentence (`preprocessing.templates`): a top-level one of
   those is replaced by its rendering, as wikitext, so later passes treat its links and quotes;
3. headings, rules, list markers, magic words, bold/italic quotes, HTML tags and external links are
   rewritten by regex;
4. internal links become their visible text, wrapped in two private-use sentinel characters when they
   point to an article (namespace 0); images, categories and interlanguage links vanish; links to
   other namespaces and wikis keep their visible text only;
5. character references are decoded (`&nbsp;` to a plain space) and whitespace is normalized; the
   sentinels survive both;
6. the text is split at the start sentinels: each anchor starts where the text before it ends, so no
   offset is tracked through the earlier rewrites.

Simplifications, chosen for a pre-training corpus:

- No template is expanded from its source: the content-bearing ones are rendered by the table of
  `preprocessing.templates` (`{{convert|5|km}}` -> "5 kilometres", `{{lang|fr|Paris}}` -> "Paris"),
  all others disappear, pronunciation included. What that leaves behind is tidied and counted
  (`punctuation_repaired`): empty parentheses, a separator opening or closing a parenthesis, a doubled
  or line-opening separator (`Paris ({{IPA|..}}; born ...)` -> `Paris (born ...)`), a space before
  punctuation, and the line break of a template or table that was alone on its line.
- Bold/italic goes by apostrophe runs (2, 3 or 5 go; 4 leaves one, as in MediaWiki; longer runs are
  split greedily), without MediaWiki's balancing heuristics.
- Every line break ends a paragraph: paragraphs and list items come out one per line.
- `<br>` becomes a space; other HTML tags MediaWiki allows are dropped, their content kept.
- An unpiped link shows its target as typed (`[[foo_bar]]` -> `foo_bar`); an anchor's edge
  whitespace is moved out of its span.

Malformed markup never raises and degrades locally:

- an unclosed `{{` drops the rest of its line (MediaWiki shows it as literal text); an unclosed `{|`
  table drops the rest of the page (MediaWiki closes it at the end of the page);
- an unclosed extension tag (`<ref>` without `</ref>`) drops the tag alone; an unterminated comment
  drops the rest of the page, as in MediaWiki;
- an unclosed or nested `[[` is dropped with its target, its label stays as text; an unclosed
  `[[File:`/`[[Category:` drops the rest of its paragraph; stray `]]` and `}}` are dropped.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import NamedTuple

from preprocessing.templates import CANDIDATE_RE as _CANDIDATE_RE
from preprocessing.templates import Call, RenderOptions, Template, lookup
from preprocessing.titles import LANGUAGE_CODES, decode_entities, link_namespace, normalize_title


class Link(NamedTuple):
    """An article link: `text[start:end]` is its visible anchor, `target` its normalized title."""

    start: int
    end: int
    target: str


# Private-use characters: link anchor start/end, and a zero-width "break" left by `<nowiki/>` (editors
# use it to stop a link trail or a quote run). Any in the input is dropped before parsing.
_START, _END, _BREAK = "\ue000", "\ue001", "\ue002"
_SENTINELS = {ord(c): None for c in (_START, _END, _BREAK)}

# --- 1. comments and extension tags -----------------------------------------------------------

_DROP, _LITERAL, _KEEP = 0, 1, 2
# Tags whose content goes (`table`: HTML tables go like wiki tables), stays literal, or stays as wikitext.
_DROPPED_TAGS = (
    "ref references math chem ce score syntaxhighlight source gallery timeline imagemap hiero graph mapframe "
    "maplink templatedata templatestyles inputbox categorytree charinsert indicator includeonly table rss "
    "dynamicpagelist"
)
_TAG_KIND = {
    **dict.fromkeys(_DROPPED_TAGS.split(), _DROP),
    "nowiki": _LITERAL,
    "pre": _LITERAL,
    **dict.fromkeys(("noinclude", "onlyinclude", "poem", "section"), _KEEP),
}
# A comment or an extension tag. Only the names ignore case: a whole-pattern IGNORECASE is 3x slower.
_ELEMENT_RE = re.compile(
    r"<(?=[!/A-Za-z])(?:!--|(/?)(?i:(" + "|".join(_TAG_KIND) + r"))(?=[\s/>])[^<>]*?(/?)>)"
)
_CLOSE_RE = {name: re.compile(rf"</{name}\s*>", re.I) for name in _TAG_KIND}
# Characters that would read as markup in a later pass. `&`, `#` and `;` stay: MediaWiki decodes character
# references inside nowiki; `#` and `;` are markup only at a line start, escaped there alone.
_LITERAL_ESCAPES = str.maketrans({c: f"&#{ord(c)};" for c in "[]{}<>'|=*:_-"})
_LINE_START_ESCAPES = (("\n#", "\n&#35;"), ("\n;", "\n&#59;"))
# Removing a `<ref>` or a template between a space and punctuation leaves "word ." otherwise.
_TIGHT_PUNCTUATION = frozenset(".,;:!?)")


def _cut(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Replace the sorted, disjoint `spans` (start, end, replacement) of `text`."""
    out = []
    prev = 0
    for start, end, repl in spans:
        out.append(text[prev:start])
        if repl:
            out.append(repl)
        elif text[end : end + 1] in _TIGHT_PUNCTUATION and out[-1][-1:] == " ":
            out[-1] = out[-1].rstrip(" ")
        prev = end
    out.append(text[prev:])
    return "".join(out)


def _tag_span(text: str, m: re.Match, unclosed: set[str]) -> tuple[int, int, str]:
    """The span one extension tag (with its content, per its kind) replaces, and by what."""
    name = m.group(2).lower()
    kind = _TAG_KIND[name]
    if m.group(1) or m.group(3) or kind == _KEEP or name in unclosed:
        # A stray closing tag, a self-closing one, or one whose content stays: only the tag goes.
        return m.start(), m.end(), _BREAK if name == "nowiki" and m.group(3) else ""
    close = _CLOSE_RE[name].search(text, m.end())
    if close is None:
        unclosed.add(name)  # no closing tag after here, so none after any later opening either
        return m.start(), m.end(), ""
    if kind == _DROP:
        return m.start(), close.end(), ""
    return m.start(), close.end(), _escape_literal(text[m.end() : close.start()]) or _BREAK


def _escape_literal(content: str) -> str:
    content = "\n" + content.translate(_LITERAL_ESCAPES)
    for markup, escaped in _LINE_START_ESCAPES:
        if markup in content:
            content = content.replace(markup, escaped)
    return content[1:]


def _strip_elements(text: str) -> str:
    spans = []
    unclosed: set[str] = set()
    pos = 0
    while (m := _ELEMENT_RE.search(text, pos)) is not None:
        if m.group(2) is None:  # a comment; unterminated, it runs to the end as in MediaWiki
            end = text.find("-->", m.end())
            span = (m.start(), len(text) if end < 0 else end + 3, "")
        else:
            span = _tag_span(text, m, unclosed)
        spans.append(span)
        pos = span[1]
    return _cut(text, spans)


# --- 2. templates and tables --------------------------------------------------------------------

# Brace runs, and table delimiters at a line start (the text always starts with "\n"). Every branch
# starts with a literal character, which lets the regex engine skip ahead to candidates: 4x faster.
_STRUCTURE_RE = re.compile(r"\{(\{+)|\}(\}+)|\n[ \t]*:*[ \t]*\{(\|)|\n[ \t]*\|(?=\})")


def _close_braces(open_runs: list[list[int]], spans: list[tuple[int, int]], pos: int, count: int):
    """Match a run of `count` closing braces at `pos` against the open runs, as MediaWiki pairs them.

    Each open run is [start, braces still open, braces it opened with]; a match takes 3 braces (a
    parameter) when both sides have them, else 2 (a template). A run left with one brace is closed,
    the brace going with it. Returns the span of a template this closed at the top level, if any: the
    only ones worth rendering, as a template inside a dropped one goes with it.
    """
    end = pos
    top = None
    while count >= 2 and open_runs:
        run = open_runs[-1]
        n = 3 if count >= 3 and run[1] >= 3 else 2
        run[1] -= n
        count -= n
        end += n
        if run[1] < 2:
            open_runs.pop()
            spans.append((run[0], end))
            if not open_runs and run[2] == 2 and run[1] == 0:
                top = (run[0], end)
    if count >= 2 and not open_runs:
        spans.append((end, end + count))  # stray closing braces are markup debris
    return top


def _unclosed_spans(text: str, open_runs: list[list[int]], tables: list[int]) -> list[tuple[int, int]]:
    """An unclosed `{{` drops the rest of its line, an unclosed table the rest of the page."""
    spans = [(start, len(text)) for start in tables]
    line_end = -1
    for start, *_ in open_runs:
        if start > line_end:  # runs come in order: one search per line keeps this linear
            line_end = text.find("\n", start)
            line_end = len(text) if line_end < 0 else line_end
        spans.append((start, line_end))
    return spans


def _merge(spans: list[tuple[int, int]], rendered: dict[tuple[int, int], str]) -> list[list]:
    """Disjoint [start, end, replacement] spans: a rendered template keeps the spans nested in it for
    itself (it rendered them already); any other overlap is dropped whole."""
    spans.sort()  # no two spans start at one place: templates, tables and stray braces start apart
    merged: list[list] = []
    for span in spans:
        start, end = span
        shown = rendered.get(span, "")
        last = merged[-1] if merged else None
        # adjacent spans merge only when both go: `{{convert|..}}{{rp|..}}` keeps its rendering
        if last and (start < last[1] or (start == last[1] and not last[2] and not shown)):
            if not (last[2] and end <= last[1]):
                last[1:] = [max(last[1], end), ""]
        else:
            merged.append([start, end, shown])
    return merged


def _strip_templates_and_tables(text: str, ctx: _Context) -> str:
    if "{" not in text and "}}" not in text:
        return text
    spans: list[tuple[int, int]] = []
    open_runs: list[list[int]] = []
    tables: list[int] = []
    rendered: dict[tuple[int, int], str] = {}
    for m in _STRUCTURE_RE.finditer(text):
        group = m.lastindex
        if group == 1:
            open_runs.append([m.start(), m.end() - m.start(), m.end() - m.start()])
        elif group == 2:
            top = _close_braces(open_runs, spans, m.start(), m.end() - m.start())
            if top is not None and not tables:  # one in a table goes with the table
                _render_into(rendered, text, top, ctx)
        elif open_runs:
            continue  # table syntax inside a template goes with the template
        elif group == 3:
            tables.append(m.end() - 2)
        elif tables:  # a table's closing `|}`: the regex stops before its '}'
            spans.append((tables.pop(), m.end() + 1))
    spans += _unclosed_spans(text, open_runs, tables)
    merged = _merge(spans, rendered)
    for span in merged:
        if span[2]:
            continue
        before, after = text[span[0] - 1], text[span[1] : span[1] + 1]
        # One dropped alone on its line takes the line break too: an empty line reads as a paragraph break.
        if before == "\n" and after == "\n":
            span[1] += 1
        # "''{{FRO}}''" would leave four apostrophes (one shown, then bold): a break keeps the runs apart.
        elif before == "'" and after == "'":
            span[2] = _BREAK
    return _cut(text, merged)


# --- 2b. rendering the templates that carry content (the table is in `preprocessing.templates`) ----

_ARG_SPLIT_RE = re.compile(r"\{\{|\}\}|\[\[|\]\]|\|")


class _Context(NamedTuple):
    options: RenderOptions
    counts: Counter


@lru_cache(maxsize=4096)
def _template_name(raw: str) -> str:
    name = " ".join(raw.replace("_", " ").split()).lower()
    return name[9:].lstrip() if name.startswith("template:") else name


def _render_into(rendered: dict, text: str, span: tuple[int, int], ctx: _Context) -> None:
    """Render the top-level template at `span` if the table knows it; a failed rendering drops it."""
    start, end = span[0] + 2, span[1] - 2
    if not _CANDIDATE_RE.match(text, start, end):
        return  # most templates (citations, navigation): one regex call and they are known to go
    pipe = text.find("|", start, min(end, start + 80))  # no slice of a whole infobox per template
    head = text[start : end if pipe < 0 else pipe]
    if "{" in head or "[" in head or len(head) > 80:
        return  # a computed name ({{ {{x}} }}) or no name at all: dropped
    entry = lookup(_template_name(head))
    if entry is None:
        return
    body = text[start:end]
    # a call without nested templates renders the same wherever it stands: `{{as of|2010}}`, `{{'s}}`
    shown = _render_flat(entry, body, ctx.options) if "{" not in body else _render(entry, body, ctx)
    if shown is None:
        ctx.counts["templates_unrenderable"] += 1  # malformed arguments: dropped like any other template
    elif shown:
        rendered[span] = shown
        ctx.counts["templates_rendered"] += 1


@lru_cache(maxsize=1 << 14)
def _render_flat(entry: Template, body: str, options: RenderOptions) -> str | None:
    return _render(entry, body, _Context(options, Counter()))


def _render(entry: Template, body: str, ctx: _Context) -> str | None:
    """What the call shows ("" for nothing), or None when its arguments make no sense to its renderer."""
    try:
        return entry.render(_parse_call(entry, body, ctx), ctx.options).strip()
    except (ValueError, IndexError, KeyError, OverflowError):
        return None


def _split_args(body: str) -> list[str]:
    """The call's pieces at the pipes that belong to it, not to a nested template or link."""
    if "{" not in body and "[" not in body:
        return body.split("|")  # the common case: nothing nested, every pipe is the call's
    pieces, depth, prev = [], 0, 0
    for m in _ARG_SPLIT_RE.finditer(body):
        token = m.group()
        if token == "|":
            if depth == 0:
                pieces.append(body[prev : m.start()])
                prev = m.end()
        else:
            depth = depth + 1 if token[0] in "{[" else max(depth - 1, 0)
    pieces.append(body[prev:])
    return pieces


def _parse_call(entry: Template, body: str, ctx: _Context) -> Call:
    call = Call(entry.names[0])
    for piece in _split_args(body)[1:]:
        if "{" in piece:  # nested templates render (or go) before their caller sees them
            piece = _strip_templates_and_tables(f"\n{piece}\n", ctx)
        key, eq, value = piece.partition("=")
        if eq and "[" not in key and "<" not in key:
            call.named[key.strip().lower()] = value.strip()
        else:
            call.positional.append(piece.strip())
    return call


# --- 3. line and inline markup ------------------------------------------------------------------

# Heading lines go whole; rules and list/indent/definition markers leave the rest of their line.
_LINE_MARKUP_RE = re.compile(r"\n(?:=[^\n]*=[ \t]*(?=\n)|-{4,}|[*#:;]+[ \t]*)")
# `[url label]` -> label, `[url]` -> nothing. The lookahead rejects the many `[[` quickly; the label
# stops at '[' too, so an unclosed one on a long line is not rescanned once per '[' (quadratic time).
_EXT_LINK_RE = re.compile(
    r"\[(?=[A-Za-z/])(?i:(?:https?|ftps?|sftp|ssh|svn|git|ircs?|gopher|nntp|telnet|worldwind|mms)://|//"
    r"|(?:mailto|news|urn|tel|sips?|sms|xmpp|geo|bitcoin|magnet|matrix):)[^\[\]\s<>\"]*"
    r"(?:[ \t]+([^\[\]\n]*))?\]"
)
_MAGIC_WORD_RE = re.compile(
    r"__(?:NOTOC|FORCETOC|TOC|NOEDITSECTION|NEWSECTIONLINK|NONEWSECTIONLINK|NOGALLERY|HIDDENCAT"
    r"|EXPECTUNUSEDCATEGORY|NOCONTENTCONVERT|NOCC|NOTITLECONVERT|NOTC|INDEX|NOINDEX|STATICREDIRECT"
    r"|DISAMBIG|NOGLOBAL|EXPECTED_UNCONNECTED_PAGE|EXPECTUNUSEDTEMPLATE|ARCHIVEDTALK|NOTALK)__",
    re.I,
)
_QUOTES_RE = re.compile(r"'''''|'''|''")
# HTML tags MediaWiki allows in wikitext; any other `<name>` is shown as typed, so it stays.
_HTML_TAG_NAMES = (
    "abbr b bdi bdo big blockquote caption center cite code data dd del dfn div dl dt em font h1 h2 h3 h4 "
    "h5 h6 hr i ins kbd li link mark meta ol p q rb rp rt rtc ruby s samp small span strike strong sub sup "
    "td th time tr tt u ul var wbr"
)
_HTML_TAGS = frozenset(_HTML_TAG_NAMES.split())
# The name is checked in Python, not by an alternation in the regex: 45 case-insensitive alternatives
# tried at every '<' cost more than one call per real tag.
_TAG_LIKE_RE = re.compile(r"<(?=/?[A-Za-z])/?([A-Za-z][A-Za-z0-9]*)\b[^<>]*>")


def _replace_tag(m: re.Match) -> str:
    name = m.group(1).lower()
    if name == "br":
        return " "
    return "" if name in _HTML_TAGS else m.group()


def _strip_inline_markup(text: str) -> str:
    text = _LINE_MARKUP_RE.sub("\n", text)
    if "__" in text:
        text = _MAGIC_WORD_RE.sub("", text)
    if "''" in text:
        text = _QUOTES_RE.sub("", text)
    if "<" in text:
        text = _TAG_LIKE_RE.sub(_replace_tag, text)
    return _EXT_LINK_RE.sub(r"\1", text)


# --- 4. internal links --------------------------------------------------------------------------

# A whole link whose label holds no other link: [[target]] or [[target|label]], then its trail.
_LINK_RE = re.compile(r"\[\[([^\[\]{}|\n<>]*)(?:\|([^\[\]\n]*))?\]\]([a-z]*)")
_TARGET_RE = re.compile(r"\[\[([^\[\]{}|\n<>]*)")
_BRACKETS_RE = re.compile(r"\[\[|\]\]")  # for nested links only: finditer is slow on long text
_PIPE_TRICK_RE = re.compile(r"(.+?)(?: ?\([^()]*\))?(?:, .*)?")
_MAX_TITLE = 255
# What a link shows: an article link (a span), visible text only, or nothing at all.
_ARTICLE, _SHOWN, _HIDDEN = 0, 1, 2
_HIDDEN_NAMESPACES = frozenset({"File", "Category"})  # `Image:` normalizes to `File:`


@lru_cache(maxsize=1 << 16)
def _classify_cached(raw: str) -> tuple[int, str | None]:
    target = normalize_title(raw.replace(_BREAK, ""))
    if target is None:
        return _SHOWN, None  # e.g. [[#Section]]: shown, but names no page
    namespace = link_namespace(target)
    if namespace is None:
        return _ARTICLE, target
    if raw.lstrip().startswith(":"):
        return _SHOWN, None  # [[:Category:X]] is an inline link to the category page
    if namespace in _HIDDEN_NAMESPACES or namespace in LANGUAGE_CODES:
        return _HIDDEN, None  # images, categories and interlanguage links are not running text
    return _SHOWN, None


def _classify(raw: str) -> tuple[int, str | None]:
    # Anything that long is no title; keeping it out of the cache keeps the cache small.
    return _classify_cached(raw) if len(raw) <= 4 * _MAX_TITLE else (_SHOWN, None)


def _shown_target(raw: str) -> str:
    if raw[:1] not in " :" and raw[-1:] != " ":
        return raw  # the common case, on every unpiped link
    shown = raw.strip()
    return shown[1:].lstrip() if shown.startswith(":") else shown


def _pipe_trick(raw: str) -> str:
    """`[[Paris, Texas|]]` shows `Paris`, `[[Help:Foo (bar)|]]` shows `Foo`, as MediaWiki's pipe trick."""
    shown = _shown_target(raw)
    if len(shown) > _MAX_TITLE:
        return shown
    if link_namespace(shown) is not None:
        shown = shown.partition(":")[2].lstrip()
    m = _PIPE_TRICK_RE.fullmatch(shown)
    return m.group(1) if m else shown


def _append_anchor(out: list[str], anchor: str) -> bool:
    """Append an anchor wrapped in sentinels, whitespace moved outside; False when it shows nothing."""
    core = anchor.strip()
    if not core:
        out.append(anchor)
        return False
    if len(core) == len(anchor):
        out += (_START, anchor, _END)
    else:
        lead = anchor[: len(anchor) - len(anchor.lstrip())]
        out += (lead, _START, core, _END, anchor[len(lead) + len(core) :])
    return True


def _emit_link(link: re.Match, out: list[str], targets: list[str]) -> int:
    """Append what a whole link shows; return where the scan goes on."""
    raw, label, trail = link.groups()
    kind, target = _classify(raw)
    if kind == _HIDDEN:
        return link.start(3)  # categories and images take no link trail
    shown = _shown_target(raw) if label is None else label or _pipe_trick(raw)
    anchor = shown + trail if trail else shown
    if kind == _SHOWN:
        out.append(anchor)
    elif _append_anchor(out, anchor):
        targets.append(target)
    return link.end()


def _skip_nested(text: str, start: int) -> int:
    """The end of the `[[...]]` opening at `start`, nested links counted, or the end of its paragraph.

    An image caption may span lines (a template in it often does), but not a blank line.
    """
    stop = text.find("\n\n", start)
    stop = len(text) if stop < 0 else stop
    depth = 0
    for m in _BRACKETS_RE.finditer(text, start, stop):
        depth += 1 if text[m.start()] == "[" else -1
        if depth == 0:
            return m.end()
    return stop  # the scan resumes past everything looked at here: linear time


def _broken_link(text: str, start: int) -> int:
    """A `[[` that is no simple link: an image with links in its caption, a nested or an unclosed link."""
    head = _TARGET_RE.match(text, start)
    if _classify(head.group(1))[0] == _HIDDEN:
        return _skip_nested(text, start)
    end = head.end()
    # MediaWiki shows an outer link around another link as text; the label is what reads as prose.
    return end + 1 if text[end : end + 1] == "|" else start + 2


def _render_links(text: str) -> tuple[str, list[str]]:
    """Internal links -> their visible text, article anchors between sentinels; and the targets."""
    out: list[str] = []
    targets: list[str] = []
    pos = 0
    while (i := text.find("[[", pos)) >= 0:
        out.append(_drop_stray_brackets(text[pos:i]))
        link = _LINK_RE.match(text, i)
        pos = _emit_link(link, out, targets) if link is not None else _broken_link(text, i)
    out.append(_drop_stray_brackets(text[pos:]))
    return "".join(out), targets


def _drop_stray_brackets(text: str) -> str:
    # Between links, ']]' is debris of a broken one.
    return text.replace("]]", "") if "]]" in text else text


# --- 5. references and whitespace; 6. offsets ---------------------------------------------------

_SPACE_AFTER_START_RE = re.compile(_START + r"([ \t]+)")
_SPACE_BEFORE_END_RE = re.compile(r"([ \t]+)" + _END)
# What dropped templates leave, and what each becomes: "Paris ({{IPA|..}}, {{IPAc-en|..}})" leaves
# "Paris (, )" (goes), "(; born" -> "(born", "A, , B" -> "A, B", "(X, )" -> "(X)", a line opening
# "; Y" -> "Y". One pass each: every pattern starts with a literal character, so the engine skips to
# candidates (one alternation of them all tries each position, 10x slower).
_REPAIRS = (
    (re.compile(r" \([ ,;]*\)"), ""),
    (re.compile(r"\((?: *[,;])+ *(?=[^\s)])"), "("),
    # a separator run before ")" goes, a doubled one keeps its first; one pattern per separator, as a
    # literal first character is found by a fast search and a character class is tried at each position
    (re.compile(r",(?=[ \t]*[,;)])(?:[ \t]*[,;])*[ \t]*"), None),
    (re.compile(r";(?=[ \t]*[,;)])(?:[ \t]*[,;])*[ \t]*"), None),
    (re.compile(r"\n[ \t]*[,;][ \t]*(?=[^\s,;])"), "\n"),
)
_SPACE_RUNS_RE = re.compile(r"  +")
# "word {{template}}, next" or "word&nbsp;{{template}}." leave a space before the punctuation.
# A short line without a letter or a digit ("." after a citation template alone on its line) is debris;
# a line holding an anchor never is.
_WORDLESS_RE = re.compile(r"[^\w" + _START + "]*")
_SPACE_BEFORE_PUNCTUATION_RE = re.compile(r" ([,.;!?)])(?=[\s" + _END + r"]|\Z)")


def _finish(text: str, counts: Counter) -> str:
    if _BREAK in text:
        text = text.replace(_BREAK, "")
    # A reference decoding to a space at an anchor's edge (`[[X|&nbsp;y]]`) must end up outside it.
    edge_refs = _START + "&" in text or ";" + _END in text
    text = decode_entities(text)
    if "\xa0" in text:
        text = text.replace("\xa0", " ")
    if "\t" in text:
        text = text.replace("\t", " ")
    if edge_refs:
        text = _SPACE_BEFORE_END_RE.sub(_END + r"\1", _SPACE_AFTER_START_RE.sub(r"\1" + _START, text))
    if "(" in text or ",," in text or ";" in text:
        text = _repair_punctuation(text, counts)
    if "  " in text:
        text = _SPACE_RUNS_RE.sub(" ", text)
    text = _SPACE_BEFORE_PUNCTUATION_RE.sub(r"\1", text)
    # One paragraph or list item a line, no blank lines, no spaces at either end of a line. The
    # sentinels are no whitespace, and anchors hold none at their edges, so no anchor loses a character.
    lines = [line.strip() for line in text.split("\n")]
    return "\n".join(line for line in lines if len(line) > 3 or (line and not _WORDLESS_RE.fullmatch(line)))


def _separator_run(m: re.Match) -> str:
    run = m.group()
    if m.string[m.end() : m.end() + 1] == ")":
        return ""
    return run[0] + " " if run[-1] in " \t" else run[0]


def _repair_punctuation(text: str, counts: Counter) -> str:
    """Tidy the punctuation dropped templates leave; each repair is counted, so the stage reports how
    much text it had to mend."""
    repaired = 0
    for pattern, repl in _REPAIRS:
        text, n = pattern.subn(_separator_run if repl is None else repl, text)
        repaired += n
    if repaired:
        counts["punctuation_repaired"] += repaired
    return text


def _extract_links(text: str, targets: list[str]) -> tuple[str, list[Link]]:
    """Remove the sentinels; an anchor starts where the text before its start sentinel ends."""
    if not targets:
        return text, []
    pieces = text.split(_START)
    links = []
    offset = len(pieces[0])
    for piece, target in zip(pieces[1:], targets, strict=True):
        length = piece.find(_END)
        if length:  # an anchor that normalized to nothing is no link
            links.append(Link(offset, offset + length, target))
        offset += len(piece) - 1
    return "".join(pieces).replace(_END, ""), links


def clean_wikitext(
    wikitext: str, options: RenderOptions | None = None, stats: Counter | None = None
) -> tuple[str, list[Link]]:
    """Plain text of a page's wikitext, and its links to articles (offsets into that text).

    `options` chooses how content templates render (`preprocessing.templates`); `stats`, if given,
    receives the counts of rendered templates and of punctuation repairs.
    """
    ctx = _Context(options or _DEFAULT_OPTIONS, Counter() if stats is None else stats)
    text = wikitext.replace("\r\n", "\n") if "\r" in wikitext else wikitext
    if any(c in text for c in (_START, _END, _BREAK)):
        text = text.translate(_SENTINELS)
    # The leading and trailing newlines let line-start and line-end patterns work at the edges.
    text = _strip_templates_and_tables(_strip_elements(f"\n{text}\n"), ctx)
    marked, targets = _render_links(_strip_inline_markup(text))
    return _extract_links(_finish(marked, ctx.counts), targets)


_DEFAULT_OPTIONS = RenderOptions()


# --- for other readers of the same `pages` contract (`preprocessing.htmldump`) -----------------------


def plain_piece(text: str) -> str:
    """Text that is already plain (an HTML text node), made safe to mix with marked text: sentinels
    dropped, `&` escaped (the finishing pass decodes references), line breaks made spaces."""
    if any(c in text for c in (_START, _END, _BREAK)):
        text = text.translate(_SENTINELS)
    return text.replace("&", "&amp;").replace("\n", " ")


def append_anchor(out: list[str], anchor: str) -> bool:
    """Append an article link's anchor, marked as this module marks them; False when it shows nothing."""
    return _append_anchor(out, anchor)


def finish_marked(marked: str, targets: list[str], counts: Counter) -> tuple[str, list[Link]]:
    """Whitespace, punctuation repair and link offsets, as for wikitext, of text marked by `append_anchor`."""
    return _extract_links(_finish(marked, counts), targets)
