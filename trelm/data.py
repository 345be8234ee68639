"""Training data: the `instances` shards streamed in a seeded order, split across ranks, resumable.

Order of an epoch (seed, epoch) -> a permutation of the parts, then of the rows inside each part:
a shuffle that needs one part in memory at a time (parts are bounded by the select stage) instead
of the whole corpus. The stream is cut into global micro-batches of `micro_batch_size x world`
sequences; rank r takes the r-th slice of each, and the last incomplete global batch of an epoch
is dropped so every rank makes the same number of steps (a rank that ran out would hang the
others in the gradient all-reduce).

The data position saved in a checkpoint is (epoch, sequences of the epoch's stream consumed), in
sequences rather than global batches so that a run resumes on another number of ranks (a lost node):
the stream is the same whatever the world, only its cut into global batches changes. Resuming
recomputes the epoch's order and seeks by the manifest's row counts: parts before the position are
never read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq

from storage.errors import ConfigError
from storage.schemas import INSTANCES, KG_RELATIONS, entity_embeddings
from storage.shards import dataset_dir, part_paths, read_manifest

COLUMNS = ["input_ids", "entities"]


@dataclass(frozen=True)
class DataPosition:
    epoch: int = 0
    sequences: int = 0  # sequences of this epoch's stream already consumed (by all ranks together)


class InstanceStream:
    """Micro-batches of instance rows (dicts) for one rank, from a data position on."""

    def __init__(self, run_dir: Path, micro_batch_size: int, rank: int, world: int, seed: int):
        manifest = read_manifest(run_dir, INSTANCES)
        self.parts = part_paths(run_dir, INSTANCES)
        self.rows = np.array([p["rows"] for p in manifest["parts"]], dtype=np.int64)
        self.micro, self.rank, self.world, self.seed = micro_batch_size, rank, world, seed
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"{dataset_dir(run_dir, INSTANCES)} has {int(self.rows.sum())} sequences, fewer than one "
                f"global batch ({self.global_batch} = micro_batch_size x ranks)",
                fix="lower train.micro_batch_size or train.ranks",
            )

    @property
    def global_batch(self) -> int:
        return self.micro * self.world

    @property
    def batches_per_epoch(self) -> int:
        return int(self.rows.sum()) // self.global_batch

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Part order and each part's row order for an epoch: a pure function of (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        part_order = rng.permutation(len(self.parts))
        return part_order, [rng.permutation(int(self.rows[i])) for i in part_order]

    def batches(self, position: DataPosition) -> Iterator[tuple[DataPosition, list[dict]]]:
        """(position after the batch, this rank's rows) for the rest of the epoch at `position`; the
        rows left over at the end, fewer than one global batch, are dropped."""
        part_order, row_orders = self.epoch_order(position.epoch)
        skip = position.sequences
        offsets = np.concatenate([[0], np.cumsum(self.rows[part_order])])
        first = int(np.searchsorted(offsets, skip, side="right")) - 1
        pending: list[dict] = []
        consumed = skip
        for k in range(max(first, 0), len(part_order)):
            rows = self._read(part_order[k], row_orders[k])
            start = skip - int(offsets[k]) if k == first else 0
            pending.extend(rows[start:])
            while len(pending) >= self.global_batch:
                batch, pending = pending[: self.global_batch], pending[self.global_batch :]
                consumed += self.global_batch
                yield (
                    DataPosition(position.epoch, consumed),
                    batch[self.rank * self.micro : (self.rank + 1) * self.micro],
                )

    def _read(self, part_index: int, row_order: np.ndarray) -> list[dict]:
        table = pq.read_table(self.parts[part_index], columns=COLUMNS)
        return table.take(row_order).to_pylist()


def unigram_counts(run_dir: Path, vocab_size: int) -> np.ndarray:
    """Token counts over all training sequences (the unigram distribution of CKA's sampler Q)."""
    files = [str(p) for p in part_paths(run_dir, INSTANCES)]
    with duckdb.connect() as conn:
        rows = conn.sql(
            "SELECT id, count(*) FROM (SELECT unnest(input_ids) AS id FROM read_parquet($files)) GROUP BY id",
            params={"files": files},
        ).fetchall()
    counts = np.zeros(vocab_size, dtype=np.int64)
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    counts[ids[ids < vocab_size]] = [r[1] for r in rows if r[0] < vocab_size]
    return counts


def corpus_entities(run_dir: Path) -> np.ndarray:
    """Sorted kg_ids of every entity in a training sequence: the rows of the memory bank."""
    files = [str(p) for p in part_paths(run_dir, INSTANCES)]
    with duckdb.connect() as conn:
        rows = conn.sql(
            "SELECT DISTINCT e.kg_id FROM (SELECT unnest(entities) AS e FROM read_parquet($files)) "
            "ORDER BY 1",
            params={"files": files},
        ).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


def entity_vectors(run_dir: Path, kg_ids: np.ndarray) -> np.ndarray:
    """KG embeddings aligned with `kg_ids` (bank rows); an entity without one keeps zeros."""
    dim = int(read_manifest(run_dir, entity_embeddings(0))["dim"])
    vectors = np.zeros((len(kg_ids), dim), dtype=np.float32)
    for path in part_paths(run_dir, entity_embeddings(0)):
        table = pq.read_table(path)
        ids = table.column("kg_id").to_numpy()
        pos = np.searchsorted(kg_ids, ids)
        hit = (pos < len(kg_ids)) & (kg_ids[np.minimum(pos, len(kg_ids) - 1)] == ids)
        flat = table.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False)
        vectors[pos[hit]] = flat.reshape(len(ids), dim)[hit]
    return vectors


def relation_count(run_dir: Path) -> int:
    return int(read_manifest(run_dir, KG_RELATIONS)["rows"])
