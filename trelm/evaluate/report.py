"""The run's evaluation report: one table comparing checkpoints, the paper's figures beside ours.

Written to `{run_dir}/eval/{checkpoint}/report.{json,md}` (one per checkpoint) and
`{run_dir}/eval/report.{json,md}` (the comparison), and as the `eval_results` dataset (one row per
checkpoint, task, split, metric; `{metric}_std` rows for seeded tasks) so `trelm sql` sees it. Each
evaluation of the run replaces the dataset with its own results (the checkpoints it compared). Figures
are in % (P@1, P/R/F1, accuracy, correlations x 100) with mean ± std where several seeds ran.
"""

from __future__ import annotations

import json
from pathlib import Path

from storage import layout
from storage.code import module_code_version
from storage.schemas import EVAL_RESULTS
from storage.shards import Provenance, atomic_write_text, write_table
from trelm.evaluate.paper import PAPER, paper_figures

# split recorded in eval_results: what the task's figure was computed on
SPLITS = {"kg-probe": "kg", "open-entity": "test", "tacred": "test"}
COUNT_METRICS = ("n_seen", "n_unseen")


def task_split(task: str) -> str:
    return SPLITS.get(task, "test" if task.startswith("lama") else "dev")


def cell(entry: dict, metric: str) -> str:
    if entry.get("status") != "ok":
        return "not run"
    value = entry["metrics"].get(metric)
    if value is None:
        return "-"
    if metric in COUNT_METRICS:
        return str(int(value))
    std = entry.get("std", {}).get(metric)
    return f"{100 * value:.1f}" + (
        f" ± {100 * std:.1f}" if std is not None and len(entry["seeds"]) > 1 else ""
    )


def table_rows(results: list[dict]) -> list[tuple[str, str]]:
    """(task, metric) rows in task order: the metrics any checkpoint produced, else the paper's."""
    rows: list[tuple[str, str]] = []
    for task in dict.fromkeys(t for r in results for t in r["tasks"]):
        produced = [r["tasks"][task]["metrics"] for r in results if r["tasks"][task].get("status") == "ok"]
        names = dict.fromkeys(m for metrics in produced for m in metrics) or PAPER.get(task, {"-": {}})
        rows += [(task, metric) for metric in names]
    return rows


def markdown(results: list[dict], title: str) -> str:
    """The comparison table, then the reason of every `not run` cell."""
    names = [r["checkpoint"] for r in results]
    lines = [f"### {title}", "", "| task | metric | " + " | ".join(names) + " | paper |"]
    lines.append("|---|---|" + "---|" * (len(names) + 1))
    for task, metric in table_rows(results):
        cells = [cell(r["tasks"][task], metric) for r in results]
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + f" | {paper_figures(task, metric)} |")
    notes = [
        f"- {r['checkpoint']} / {task}: {entry['status']}"
        for r in results
        for task, entry in r["tasks"].items()
        if entry.get("status") != "ok"
    ]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def result_rows(results: list[dict]) -> list[dict]:
    """eval_results rows: every metric of every run task (and its std over seeds)."""
    rows = []
    for result in results:
        for task, entry in result["tasks"].items():
            if entry.get("status") != "ok":
                continue
            values = {**entry["metrics"], **{f"{k}_std": v for k, v in entry.get("std", {}).items()}}
            rows += [
                {"checkpoint": result["checkpoint"], "task": task, "split": task_split(task), "metric": k,
                 "value": float(v)}
                for k, v in values.items()
            ]  # fmt: skip
    return rows


def evaluation_stats(results: list[dict]) -> dict[str, int]:
    """What the stage table shows: checkpoints evaluated, (checkpoint, task) pairs scored and not run."""
    entries = [entry for result in results for entry in result["tasks"].values()]
    scored = sum(entry["status"] == "ok" for entry in entries)
    return {"checkpoints": len(results), "tasks_scored": scored, "tasks_not_run": len(entries) - scored}


def comparison_rows(results: list[dict]) -> list[dict]:
    """Rows of the comparison (task, metric, one column per checkpoint, the paper's figures)."""
    return [
        {"task": task_name, "metric": metric}
        | {r["checkpoint"]: cell(r["tasks"][task_name], metric) for r in results}
        | {"paper": paper_figures(task_name, metric)}
        for task_name, metric in table_rows(results)
    ]


def write_eval_results(run_dir: Path, results: list[dict], config_hash: str) -> dict:
    """The `eval_results` dataset (one part) through ShardWriter: manifest last, DuckDB sees it."""
    import pyarrow as pa

    inputs = tuple((r["checkpoint"], str(r["path"])) for r in results)
    provenance = Provenance(config_hash, inputs, module_code_version("trelm.evaluate.runner", __name__))
    table = pa.Table.from_pylist(result_rows(results), schema=EVAL_RESULTS.schema)
    return write_table(run_dir, EVAL_RESULTS, provenance, table)


def write_reports(run_dir: Path, results: list[dict], config_hash: str) -> Path:
    """Per-checkpoint and comparison reports plus `eval_results`; returns the comparison markdown's path."""
    eval_dir = layout.eval_dir(run_dir)
    for result in results:
        folder = eval_dir / result["checkpoint"].strip("/").replace("/", "_")  # a path or hub id as a name
        atomic_write_text(folder / "report.json", json.dumps(result, indent=2, default=str))
        title = f"{result['checkpoint']} ({result['path']})"
        atomic_write_text(folder / "report.md", markdown([result], title))
    atomic_write_text(eval_dir / "report.json", json.dumps({"checkpoints": results}, indent=2, default=str))
    atomic_write_text(eval_dir / "report.md", markdown(results, f"evaluation of {Path(run_dir).name}"))
    write_eval_results(run_dir, results, config_hash)
    return eval_dir / "report.md"
