"""The `train_log` dataset of a checkpoint folder: rows (checkpoint, step, name, value) written by rank 0
as one part per checkpoint (so a run's log is queryable while it trains), TensorBoard beside it, and
the readers the flows and benchmarks use."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from storage.schemas import TRAIN_LOG
from storage.shards import Provenance, ShardWriter, dataset_dir, part_index, read_part_info


def read_train_log(ckpt_dir: Path) -> dict[str, list[float]]:
    """Metric name -> its values in step order, from a checkpoint folder's `train_log` parts (the parts,
    not the manifest, so it also reads a run that is still going)."""
    import duckdb

    files = sorted(str(p) for p in dataset_dir(Path(ckpt_dir), TRAIN_LOG).glob("part-*.parquet"))
    if not files:  # nothing flushed yet
        return {}
    rows = duckdb.sql(
        "SELECT name, list(value ORDER BY step) FROM read_parquet($f) GROUP BY name", params={"f": files}
    ).fetchall()
    return dict(rows)


def last_losses(ckpt_dir: Path, names=("loss", "mlm_loss", "cka_loss")) -> dict[str, float]:
    """The last logged value of each loss part (rounded for a table); none before the first flush."""
    logged = read_train_log(ckpt_dir)
    return {n: round(logged[n][-1], 4) for n in names if logged.get(n)}


class TrainLog:
    """Rows (checkpoint, step, name, value) buffered on rank 0 and flushed as one part per checkpoint.

    A part is written before its checkpoint; parts numbered at or after a resumed checkpoint's count
    belong to steps that will run again, so `resume` deletes them.
    """

    def __init__(self, ckpt_dir: Path, name: str, provenance: Provenance, tensorboard: bool):
        self.writer = ShardWriter(ckpt_dir, TRAIN_LOG, provenance)
        self.name, self.rows = name, []
        self.tb = _tensorboard(ckpt_dir / "tb") if tensorboard else None

    def add(self, step: int, metrics: dict[str, float]) -> None:
        self.rows += [(step, k, float(v)) for k, v in metrics.items()]
        if self.tb is not None:
            for key, value in metrics.items():
                self.tb.add_scalar(key, value, step)

    def flush(self, index: int) -> None:
        if not self.rows:
            return
        steps, names, values = zip(*self.rows, strict=True)
        table = pa.table(
            {"checkpoint": [self.name] * len(steps), "step": steps, "name": names, "value": values},
            schema=TRAIN_LOG.schema,
        )
        self.writer.write_part(index, [table])
        self.rows = []
        if self.tb is not None:
            self.tb.flush()

    def truncate(self, parts: int) -> None:
        for path in self.writer.dir.glob("part-*.parquet"):
            if part_index(path) >= parts:
                path.unlink()

    def finalize(self, stats: dict) -> dict:
        parts = [read_part_info(p) for p in sorted(self.writer.dir.glob("part-*.parquet"))]
        return self.writer.finalize(parts, stats)


def _tensorboard(path: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(path))
