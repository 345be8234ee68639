"""Checks that clean `pages` text must pass, whichever reader made it (wikitext or HTML dump).

The tests of both readers and the fidelity benchmark call these, so "the same checks" is one code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# What a dropped template leaves when its punctuation stays: "Algeria ( '; Dzayer)", "Paris (, )",
# "(Ἀχιλλεύς, Akhilleus,)", "X, , Y", a line opening with "; ", "word ,".
BROKEN_PUNCTUATION_RE = re.compile(
    r" \(\s*\)"  # empty parentheses after a word (a lone "()" in prose is written so)
    r"|\(\s*'?\s*[,;:]"  # a separator right after "(" (a stray apostrophe between them)
    r"|[,;]\s*\)"  # a separator right before ")"
    r"|[,;][ \t]*[,;]"  # a doubled separator
    r"|(?:^|\n)[ \t]*[,;]"  # a separator opening a line
    r"| [,;](?=\s)"  # a separator after a space, before another
    r"|(?:^|\s)'(?:\s|[,;)])"  # a lone apostrophe: the half of a quote pair around a dropped template
)


def broken_punctuation(text: str) -> list[str]:
    """Each broken-punctuation spot of `text`, with a little context, in order."""
    return [text[max(0, m.start() - 15) : m.end() + 15] for m in BROKEN_PUNCTUATION_RE.finditer(text)]


def link_errors(text: str, links: Sequence[tuple[int, int, str]]) -> list[str]:
    """Why each bad link span is bad: out of bounds, empty, whitespace at an edge, unsorted, overlapping."""
    errors = []
    prev_end = 0
    for start, end, target in links:
        anchor = text[start:end]
        if not 0 <= start < end <= len(text):
            errors.append(f"{target!r}: span {start}-{end} outside the text ({len(text)} chars)")
        elif anchor != anchor.strip():
            errors.append(f"{target!r}: anchor {anchor!r} has whitespace at an edge")
        elif start < prev_end:
            errors.append(f"{target!r}: span {start}-{end} overlaps or precedes the one before")
        elif not target:
            errors.append(f"span {start}-{end} has no target")
        prev_end = max(prev_end, end)
    return errors
