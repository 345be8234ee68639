"""The relation's words of the cloze view of CKA (`ModelConfig.cka_plain_view="cloze"`), as token ids: its
label, or how the corpus words it (`relation_phrases`, mined by `select`; see
`ModelConfig.cka_cloze_relation`)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from storage.schemas import KG_RELATIONS, RELATION_PHRASES
from storage.shards import part_paths
from storage.tokens import in_text_ids


def relation_cloze_ids(run_dir: Path, tokenizer, source: str) -> list[list[int]]:
    """Token ids of every relation's words, indexed by rel_id, as they read inside a sentence. source
    `label`: the KG label; `phrase`: the corpus's most frequent wording, the label where none was mined."""
    words = _by_rel_id(run_dir, KG_RELATIONS, "label")
    if source == "phrase":
        phrases = _by_rel_id(run_dir, RELATION_PHRASES, "phrase", filters=[("rank", "=", 1)])
        phrases += [""] * (len(words) - len(phrases))  # relations past the last one with a phrase
        words = [phrase or label for label, phrase in zip(words, phrases, strict=True)]
    return in_text_ids(tokenizer, words)


def _by_rel_id(run_dir: Path, dataset, column: str, filters=None) -> list[str]:
    """`column` of a dataset's rows (those `filters` keep) as a list indexed by rel_id ("" for an id with no
    row)."""
    paths = part_paths(run_dir, dataset)
    tables = [pq.read_table(p, columns=["rel_id", column], filters=filters) for p in paths]
    rows = sorted((r["rel_id"], r[column]) for t in tables for r in t.to_pylist())
    values = [""] * (rows[-1][0] + 1 if rows else 0)
    for rel_id, value in rows:
        values[rel_id] = value
    return values
