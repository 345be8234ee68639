"""Where things live under a data root (see DESIGN.md, "Data layout")."""

from __future__ import annotations

from pathlib import Path

from storage.errors import InputError

RUN_CONFIG = "config.yaml"
DOWNLOAD_MANIFEST = "_download.json"  # written last in a dump folder: the download is complete
STAGING = "_staging"  # a stage's intermediate files inside the run folder, never read by a later stage
HF_EXPORT = "hf"  # a checkpoint's Hugging Face `save_pretrained` folder


def dumps_root(data_root: Path) -> Path:
    return Path(data_root) / "dumps"


class RunNotFoundError(InputError, FileNotFoundError):
    """No run folder of that name, or none at all, under the data root."""


def dumps_dir(data_root: Path, wiki: str, date: str) -> Path:
    return dumps_root(data_root) / wiki / date


def downloaded_dates(data_root: Path, wiki: str) -> list[str]:
    """Dates of the complete downloads of `wiki`, oldest first."""
    return sorted(p.parent.name for p in (dumps_root(data_root) / wiki).glob(f"*/{DOWNLOAD_MANIFEST}"))


def staging_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / STAGING / stage


def stage_dir(run_dir: Path, stage: str) -> Path:
    """A stage's files besides its datasets (select's plot and summary)."""
    return Path(run_dir) / stage


def checkpoints_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_dir(run_dir: Path, name: str) -> Path:
    """One pre-training variant's folder: DeepSpeed tags, train log, memory bank, `hf/` export."""
    return checkpoints_root(run_dir) / name


def train_progress(run_dir: Path, name: str) -> Path:
    """The variant's last step, loss parts and tokens/s, rewritten while it trains (for the UI)."""
    return checkpoint_dir(run_dir, name) / "progress.json"


def loss_plot(run_dir: Path) -> Path:
    """The loss curves of every variant of the run, drawn by the pretrain flow."""
    return stage_dir(run_dir, "pretrain") / "losses.png"


def hf_export(run_dir: Path, name: str) -> Path:
    return checkpoint_dir(run_dir, name) / HF_EXPORT


def eval_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "eval"


def inspect_history(data_root: Path) -> Path:
    """`trelm inspect`'s line history: per data root, like the queries it recalls."""
    return Path(data_root) / ".trelm_history"


def runs_root(data_root: Path) -> Path:
    return Path(data_root) / "runs"


def data_root_of(run_dir: Path) -> Path:
    """The data root a run folder lies in (`{data_root}/runs/{name}`)."""
    return Path(run_dir).parents[1]


def run_dir(data_root: Path, name: str) -> Path:
    return runs_root(data_root) / name


def list_runs(data_root: Path) -> list[str]:
    """Run names, newest first (by when their resolved config was last written)."""
    root = runs_root(data_root)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if (p / RUN_CONFIG).exists()]
    return [p.name for p in sorted(runs, key=lambda p: (p / RUN_CONFIG).stat().st_mtime, reverse=True)]


def resolve_run(data_root: Path, name: str | None) -> Path:
    """The named run, or the newest one; a clear error when there is none."""
    if name:
        path = run_dir(data_root, name)
        if not path.is_dir():
            raise RunNotFoundError(
                f"no run {name!r} in {runs_root(data_root)}",
                fix=f"pass --run one of {list_runs(data_root)}, or leave it out for the newest",
            )
        return path
    runs = list_runs(data_root)
    if not runs:
        raise RunNotFoundError(
            f"no run in {runs_root(data_root)}",
            fix="run `trelm run` (or `trelm download` then `trelm ingest`), or point --data-root / "
            "TRELM_DATA_ROOT at an existing data root",
        )
    return run_dir(data_root, runs[0])
