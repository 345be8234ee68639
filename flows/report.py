"""What a run shows in the Prefect UI: a table per stage, progress of long stages, a run summary.

Every stage subflow returns a manifest-like dict (`rows`, `stats`, optionally `parts`); the parent
flow times each stage and calls `publish_stage`, so a new stage gets its table without code of its
own. A stage whose work is one long task wraps it in `with_progress`, which polls a count of
finished units (parts on disk, checkpointed steps) while the task runs.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture, as_completed

from storage.shards import is_loss_stat


def stage_table(stage: str, result: dict, seconds: float, rows_in: int | None) -> list[dict]:
    """Rows of the stage's table artifact: wall time, rows in/out and throughput for a stage that makes
    rows (pretrain and evaluate make checkpoints and scores: their stats say what they did), every stat."""
    rows_out = result.get("rows")
    table = [{"metric": "wall time s", "kind": "flow", "value": round(seconds, 2)}]
    if rows_out is not None:
        table += [{"metric": "rows in", "kind": "flow", "value": rows_in}] if rows_in is not None else []
        table.append({"metric": "rows out", "kind": "flow", "value": rows_out})
        per_second = (rows_in or rows_out) / seconds if seconds > 0 else 0.0
        table.append({"metric": "throughput rows/s", "kind": "flow", "value": round(per_second, 1)})
    for key, value in result.get("stats", {}).items():
        kind = "dropped" if is_loss_stat(key) else "count"
        table.append({"metric": key, "kind": kind, "value": value})
    return table


def publish_stage(stage: str, result: dict, seconds: float, rows_in: int | None) -> None:
    """The stage's table artifact (key `{stage}-stage`: the UI keeps its history across runs)."""
    create_table_artifact(
        stage_table(stage, result, seconds, rows_in),
        key=f"{stage}-stage",
        description=f"`{stage}`: rows in/out, what was dropped and why, throughput, wall time.",
    )


def run_summary(run_dir: Path, data_root: Path, seconds: dict[str, float], results: dict[str, dict]) -> str:
    """Markdown: per stage rows and time, where the outputs are, how to query them."""
    lines = [f"## TRELM run `{run_dir.name}`", "", f"Outputs: `{run_dir}`", "", "| stage | rows | s |"]
    lines.append("|---|---|---|")
    lines += [f"| {name} | {results[name].get('rows', '')} | {seconds[name]:.1f} |" for name in results]
    query = "SELECT count(*) AS pages, sum(len(links)) AS links FROM pages"
    lines += [
        "",
        "Inspect it with DuckDB (every complete dataset of the run is a view):",
        "",
        "```bash",
        f'trelm sql --data-root {data_root} --run {run_dir.name} "{query}"',
        f"trelm inspect --data-root {data_root} --run {run_dir.name}",
        f"duckdb -c \"SELECT count(*) FROM read_parquet('{run_dir}/pages/v1/part-*.parquet')\"",
        "```",
    ]
    return "\n".join(lines)


def publish_picture(key: str, png: Path, title: str) -> None:
    """A PNG of the run folder as a markdown artifact: the image inline (a data: URI, so the UI shows it
    without access to the data root), its path under it."""
    data = base64.b64encode(Path(png).read_bytes()).decode()
    markdown = f"## {title}\n\n![{title}](data:image/png;base64,{data})\n\n`{png}`\n"
    create_markdown_artifact(markdown, key=key, description=title)


def publish_summary(markdown: str) -> None:
    create_markdown_artifact(markdown, key="trelm-run", description="The run: stages, outputs, how to query.")


def _progress_artifact(key: str, description: str):
    return create_progress_artifact(0.0, key=f"{key}-progress", description=description)


def result_with_progress(
    future: PrefectFuture,
    key: str,
    done: Callable[[], float],
    total: float,
    describe: Callable[[], str] | None = None,
    poll_s: float = 2.0,
):
    """Wait for `future`, updating the progress artifact `{key}-progress` with done()/total (and the text
    of describe(), when given) every `poll_s`; the future's result."""
    artifact = _progress_artifact(key, describe() if describe else f"`{key}`: share of its parts done")
    while not future.state.is_final():
        future.wait(timeout=poll_s)
        update_progress_artifact(artifact, _percent(done(), total), describe() if describe else None)
    update_progress_artifact(artifact, 100.0 if future.state.is_completed() else _percent(done(), total))
    return future.result()


def results_with_progress(futures: list[PrefectFuture], stage: str) -> list:
    """The results of mapped tasks (in order), with a progress artifact updated as each one finishes."""
    artifact = _progress_artifact(stage, f"`{stage}`: share of its parts done")
    for finished, _ in enumerate(as_completed(futures), start=1):
        update_progress_artifact(artifact, _percent(finished, len(futures)))
    return [f.result() for f in futures]


def count_files(folder: Path, pattern: str) -> Callable[[], int]:
    """A `done` counter for `result_with_progress`: files matching `pattern` in `folder`."""
    return lambda: sum(1 for _ in folder.glob(pattern))


def _percent(done: float, total: float) -> float:
    return min(100.0, 100.0 * done / total) if total > 0 else 100.0
