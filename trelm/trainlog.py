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


# ---------------------------------------------------------------- what a running training shows

PROGRESS_EVERY_S = 2.0  # how often rank 0 rewrites the progress file: often enough for a UI, cheap per step
PROGRESS_FIELDS = ("loss", "mlm_loss", "cka_loss", "tokens_per_s")


def write_progress(path: Path, step: int, max_steps: int, metrics: dict[str, float]) -> None:
    """The last step's loss parts and throughput, for the flow's progress artifact (read while it trains)."""
    import json

    from storage.shards import atomic_write_text

    fields = {k: round(float(metrics[k]), 4) for k in PROGRESS_FIELDS if k in metrics}
    atomic_write_text(path, json.dumps({"step": step, "max_steps": max_steps, **fields}))


def read_progress(path: Path) -> dict:
    """The progress file, or {} before the first step (or while it is being replaced)."""
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def progress_line(progress: dict) -> str:
    """`step 20/40: loss 4.17 (mlm 6.94, cka 1.39), 1,520 tokens/s`."""
    if not progress:
        return "starting (building the model and DeepSpeed's engine)"
    line = f"step {progress['step']}/{progress['max_steps']}"
    if "loss" in progress:
        parts = f"mlm {progress['mlm_loss']:.3f}, cka {progress['cka_loss']:.3f}"
        line += f": loss {progress['loss']:.3f} ({parts})"
    if "tokens_per_s" in progress:
        line += f", {progress['tokens_per_s']:,.0f} tokens/s"
    return line


def start_line(name: str, start_step: int, max_steps: int) -> str:
    """How a variant's training began: the one wording of the terminal and the flow's log."""
    if start_step == 0:
        return f"{name}: training from step 0 to {max_steps}"
    if start_step >= max_steps:
        return f"{name}: already trained to step {start_step}"
    return f"{name}: resumed from step {start_step} (to {max_steps})"


def plot_losses(ckpt_dirs: dict[str, Path], path: Path) -> Path:
    """The loss parts of each variant by step, one panel per part, as a PNG (the UI's and the run's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from storage.shards import atomic_write

    logs = {name: read_train_log(folder) for name, folder in ckpt_dirs.items()}
    parts = ("loss", "mlm_loss", "cka_loss")
    fig, axes = plt.subplots(1, len(parts), figsize=(11, 3.2))
    for ax, part in zip(axes, parts, strict=True):
        for name, logged in logs.items():
            if logged.get(part):
                ax.plot(range(1, len(logged[part]) + 1), logged[part], label=name)
        ax.set_title(part)
        ax.set_xlabel("logged step")
    axes[0].legend()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight"))
    plt.close(fig)
    return path
