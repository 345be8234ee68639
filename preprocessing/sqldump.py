"""Streaming reader of MediaWiki's mysqldump tables (`page_props.sql.gz`, `redirect.sql.gz`).

Each `INSERT INTO \\`table\\` VALUES (...),(...);` line holds thousands of rows; one line is read at a
time, so memory stays at one line (about 1 MB) whatever the table size.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

_VALUE = r"'(?:[^'\\]|\\.)*'|NULL|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_TUPLE_RE = re.compile(rf"\((?:{_VALUE})(?:,(?:{_VALUE}))*\)", re.DOTALL)
_VALUE_RE = re.compile(_VALUE, re.DOTALL)
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES = {"0": "\0", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a", "b": "\b"}


def _unescape(quoted: str) -> str:
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), quoted[1:-1])


def _parse_value(token: str) -> str | int | float | None:
    if token[0] == "'":
        return _unescape(token)
    if token == "NULL":
        return None
    return float(token) if "." in token or "e" in token.lower() else int(token)


def iter_rows(path: Path, table: str) -> Iterator[tuple]:
    """Yield the rows of `table` from a `.sql` or `.sql.gz` dump as tuples of str/int/float/None."""
    prefix = f"INSERT INTO `{table}` VALUES ".encode()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        for raw in f:
            if not raw.startswith(prefix):
                continue
            line = raw[len(prefix) :].decode("utf-8", errors="replace")
            for tup in _TUPLE_RE.finditer(line):
                yield tuple(_parse_value(v.group(0)) for v in _VALUE_RE.finditer(tup.group(0)))


def iter_wikibase_items(path: Path) -> Iterator[tuple[int, str]]:
    """(page_id, QID) from `page_props`: the rows whose pp_propname is `wikibase_item`."""
    for row in iter_rows(path, "page_props"):
        if len(row) >= 3 and row[1] == "wikibase_item" and isinstance(row[2], str):
            yield int(row[0]), row[2]
