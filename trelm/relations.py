"""Relation labels as token ids, for the cloze view of CKA (`ModelConfig.cka_plain_view="cloze"`)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from storage.schemas import KG_RELATIONS
from storage.shards import part_paths
from storage.tokens import in_text_ids


def relation_label_ids(run_dir: Path, tokenizer) -> list[list[int]]:
    """Token ids of every relation's label, indexed by rel_id, as the label reads inside a sentence."""
    tables = [pq.read_table(p, columns=["rel_id", "label"]) for p in part_paths(run_dir, KG_RELATIONS)]
    rows = sorted((r["rel_id"], r["label"]) for t in tables for r in t.to_pylist())
    labels = [""] * (rows[-1][0] + 1 if rows else 0)
    for rel_id, label in rows:
        labels[rel_id] = label
    return in_text_ids(tokenizer, labels)
