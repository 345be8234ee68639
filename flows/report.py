"""What a run shows in the Prefect UI and on `trelm run`'s terminal: a table and a one-line result per
stage, progress of long stages, pictures, a run summary and the epilogue.

Every stage subflow returns a manifest-like dict (`rows`, `stats`, optionally `parts`); the parent
flow times each stage and calls `publish_stage` and `announce`, so a new stage gets its table and its
line without code of its own. A stage whose work is one long task wraps it in `result_with_progress`,
which polls a count of finished units (parts on disk, trained steps) while the task runs.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture, as_completed

from storage import layout
from storage.shards import is_loss_stat


def stage_table(stage: str, result: dict, seconds: float, rows_in: int | None) -> list[dict]:
    """Rows of the stage's table artifact: wall time, rows in/out and throughput for a stage that makes
    rows (pretrain and evaluate make checkpoints and scores: their stats say what they did), every stat."""
    rows_out = result.get("rows")
    wall = {"metric": "wall time s", "kind": "flow", "value": round(seconds, 2)}
    if rows_out is None:
        table = [wall]
    else:
        per_second = (rows_in or rows_out) / seconds if seconds > 0 else 0.0
        table = [{"metric": "rows in", "kind": "flow", "value": rows_in}] if rows_in is not None else []
        table += [{"metric": "rows out", "kind": "flow", "value": rows_out}, wall]
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


def next_commands(run_dir: Path, data_root: Path) -> list[str]:
    """What to run next on a finished run: query it, browse it, read its evaluation."""
    where = f"--data-root {data_root} --run {run_dir.name}"
    return [
        f'trelm sql {where} "SELECT count(*) AS pages, sum(len(links)) AS links FROM pages"',
        f"trelm inspect {where}",
        f"cat {layout.eval_dir(run_dir) / 'report.md'}",
    ]


def run_summary(run_dir: Path, data_root: Path, seconds: dict[str, float], results: dict[str, dict]) -> str:
    """Markdown: per stage rows and time, where the outputs are, how to query them."""
    lines = [f"## TRELM run `{run_dir.name}`", "", f"Outputs: `{run_dir}`", "", "| stage | rows | s |"]
    lines.append("|---|---|---|")
    lines += [f"| {name} | {results[name].get('rows', '')} | {seconds[name]:.1f} |" for name in results]
    lines += ["", "Inspect it with DuckDB (every complete dataset of the run is a view):", "", "```bash"]
    lines += [*next_commands(run_dir, data_root), "```"]
    return "\n".join(lines)


# the stats that make a stage's one line on the terminal; a stage not named here shows all of its stats
HEADLINES = {
    "download": ("files_fetched", "bytes"),
    "ingest": ("articles", "links", "redirects"),
    "link": ("mentions", "mentions_tagme", "mentions_without_kg"),
    "select": ("sequences", "selected", "entities_in_use"),
}
SUMMARY = {"trelm_summary": True}  # marks the log records `trelm run` prints on the terminal


def stage_line(stage: str, result: dict, seconds: float) -> str:
    """`link        29.4 s  mentions 1,822, mentions_tagme 515, mentions_without_kg 1,079`: the stats by
    the names the stage table and the completion record use."""
    stats = result.get("stats", {})
    keys = HEADLINES.get(stage, tuple(stats))
    facts = ", ".join(f"{key} {_number(stats[key])}" for key in keys if key in stats)
    return f"{stage:<9}{seconds:7.1f} s  {facts}"


def _number(value: float) -> str:
    """Counts with thousands separators; rates whole from 100 up, else to 3 significant digits."""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{value:,}"


def announce(line: str) -> None:
    """A line for the run's log in the UI that `trelm run` also prints on its quiet terminal."""
    get_run_logger().info(line, extra=SUMMARY)


# what the sample's scores mean, said where a new user first sees them
SAMPLE_SCALE = (
    "Scores: a KG-probe P@1 at or near 0.0 is expected at this scale: 40 steps on the sample's ~170 "
    "sequences do not teach the backbone's fresh MLM head any fact (minilm has no MLM head: not run). The "
    "sample shows the plumbing (falling losses in train_log, seen and unseen facts counted); the enwiki "
    "preset is where the scores mean something."
)


def run_epilogue(result: dict, data_root: Path, preset: str) -> str:
    """What `trelm run` ends with: where the outputs are and how big, what the scores mean, what next."""
    run_dir = Path(result["run_dir"])
    total, checkpoints = disk_use(run_dir)
    done = "nothing new: already processed with this config" if result.get("nothing_new") else "done"
    lines = [f"{done}: {run_dir} ({total / 1e9:.2f} GB, {checkpoints / 1e9:.2f} GB of it checkpoints)"]
    report = layout.eval_dir(run_dir) / "report.md"
    if report.exists():
        lines.append(f"evaluation: {report}")
        lines += [SAMPLE_SCALE] if preset == "sample" else []
    lines += ["next:", *(f"  {command}" for command in next_commands(run_dir, data_root))]
    lines.append("  make serve   # the same pipeline as Prefect deployments, with the UI")
    return "\n".join(lines)


def disk_use(run_dir: Path) -> tuple[int, int]:
    """Bytes of the run folder and of its checkpoints (nearly all of it at sample scale)."""

    def size(folder: Path) -> int:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    return size(run_dir), size(layout.checkpoints_root(run_dir))


def publish_picture(key: str, png: Path, title: str) -> None:
    """A PNG of the run folder as a markdown artifact: the image inline (a data: URI, so the UI shows it
    without access to the data root), its path under it."""
    data = base64.b64encode(Path(png).read_bytes()).decode()
    markdown = f"## {title}\n\n![{title}](data:image/png;base64,{data})\n\n`{png}`\n"
    create_markdown_artifact(markdown, key=key, description=title)


def publish_summary(markdown: str) -> None:
    create_markdown_artifact(markdown, key="trelm-run", description="The run: stages, outputs, how to query.")


def artifact_key(name: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for a name: `mlm_only` -> `mlm-only`."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower())


def _progress_artifact(key: str, description: str):
    return create_progress_artifact(0.0, key=artifact_key(f"{key}-progress"), description=description)


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
