"""DuckDB over a run: every complete dataset becomes a view over the parts its manifest lists."""

from __future__ import annotations

from pathlib import Path

import duckdb

from storage.errors import InputError
from storage.schemas import CHECKPOINT_DATASETS, DATASETS
from storage.shards import IncompleteDatasetError, part_paths


class QueryError(InputError):
    """DuckDB refused a statement of `trelm sql`."""


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _dataset_parts(run_dir: Path, name: str, dataset) -> list[Path]:
    """A run dataset's parts by its manifest; a per-checkpoint dataset's parts as written so far (each part
    is renamed into place whole, so a training run's log is queryable while it trains)."""
    if name in CHECKPOINT_DATASETS:
        return sorted(Path(run_dir).glob(f"checkpoints/*/{dataset.folder}/part-*.parquet"))
    try:
        return part_paths(run_dir, dataset)
    except IncompleteDatasetError:
        return []


def connect(
    run_dir: Path | None, memory_limit: str | None = None
) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB with one view per complete dataset of `run_dir`; returns (conn, views)."""
    conn = duckdb.connect()
    if memory_limit:
        conn.execute(f"SET memory_limit = {_sql_str(memory_limit)}")
    views = []
    for name, dataset in DATASETS.items():
        if run_dir is None:
            continue
        paths = _dataset_parts(run_dir, name, dataset)
        if not paths:
            continue
        files = ", ".join(_sql_str(str(p)) for p in paths)
        conn.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{files}])")
        views.append(name)
    return conn, views


def query(run_dir: Path | None, sql: str) -> tuple[list[str], list[tuple]]:
    """Run one statement against the run's views; returns (column names, rows)."""
    conn, views = connect(run_dir)
    try:
        result = conn.execute(sql)
        columns = [d[0] for d in result.description] if result.description else []
        return columns, result.fetchall()
    except duckdb.Error as exc:  # the statement is the user's: a typo, or a view of a stage not run yet
        raise QueryError(
            str(exc), fix=f"correct the statement; the run's views: {', '.join(views) or '(none)'}"
        ) from exc
    finally:
        conn.close()
