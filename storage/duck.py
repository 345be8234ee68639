"""DuckDB over a run: every complete dataset becomes a view over the parts its manifest lists.

The connection of `trelm sql` and `trelm inspect` is read-only and confined to the data root: once the
views exist, DuckDB's `enable_external_access` is off with the data root as the one allowed
directory, and `lock_configuration` keeps user SQL from turning it back on (no file outside the data
root is read, no extension installed); `run_statement` runs only queries (SELECT, EXPLAIN), so no
COPY, ATTACH, EXPORT or table writes a file inside it either."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import duckdb
from pydantic import StringConstraints

from storage import layout
from storage.errors import InputError
from storage.schemas import CHECKPOINT_DATASETS, DATASETS
from storage.shards import IncompleteDatasetError, part_paths


class QueryError(InputError):
    """DuckDB refused a statement of `trelm sql`."""


# a DuckDB memory limit as its settings take it ("2GB", "512MiB"): checked when the config loads
MemoryLimit = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"(?i)^\d+(\.\d+)?\s*(b|[kmgt]i?b)$")
]
_QUERIES = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)


def sql_str(value: object) -> str:
    """A SQL string literal (quotes doubled): for paths in statements that take no parameters (views)."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_files(paths: list[Path] | Path | str) -> str:
    """The one way our SQL names Parquet files, escaped: a list literal, or one path or glob."""
    if isinstance(paths, (str, Path)):
        return sql_str(paths)
    return "[" + ", ".join(sql_str(p) for p in paths) + "]"


def scratch(memory_limit: str, temp_dir: Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for a stage's own SQL: under `memory_limit`, spilling to `temp_dir` (DuckDB's
    default, beside the process's working directory, without one). No progress bar: DuckDB prints it on
    stdout, beside the stage's own on stderr."""
    config = {"memory_limit": memory_limit}
    if temp_dir is not None:
        config["temp_directory"] = str(temp_dir)
    conn = duckdb.connect(config=config)
    conn.execute("SET enable_progress_bar = false")  # a session setting, not one of connect's
    return conn


def dataset_files(run_dir: Path, dataset) -> str:
    """The parts a complete dataset's manifest lists, for `read_parquet(...)`."""
    return sql_files(part_paths(run_dir, dataset))


def _dataset_parts(run_dir: Path, name: str, dataset) -> list[Path]:
    """A run dataset's parts by its manifest; a per-checkpoint dataset's parts as written so far (each part
    is renamed into place whole, so a training run's log is queryable while it trains)."""
    if name in CHECKPOINT_DATASETS:
        return sorted(layout.checkpoints_root(run_dir).glob(f"*/{dataset.folder}/part-*.parquet"))
    try:
        return part_paths(run_dir, dataset)
    except IncompleteDatasetError:
        return []


def connect(
    run_dir: Path | None, memory_limit: str | None = None
) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB with one view per complete dataset of `run_dir`, confined to the run's data
    root (read-only through `run_statement`); returns (conn, views)."""
    conn = duckdb.connect()
    if memory_limit:
        conn.execute(f"SET memory_limit = {sql_str(memory_limit)}")
    run_dir = Path(run_dir).resolve() if run_dir is not None else None
    views = []
    for name, dataset in DATASETS.items():
        if run_dir is None:
            continue
        paths = _dataset_parts(run_dir, name, dataset)
        if not paths:
            continue
        conn.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({sql_files(paths)})")
        views.append(name)
    _confine(conn, layout.data_root_of(run_dir) if run_dir is not None else None)
    return conn, views


def _confine(conn: duckdb.DuckDBPyConnection, data_root: Path | None) -> None:
    """No file access outside `data_root` (none at all without one), settings locked."""
    allowed = [f"{data_root}/"] if data_root is not None else []
    conn.execute(f"SET allowed_directories = [{', '.join(sql_str(d) for d in allowed)}]")
    conn.execute("SET enable_external_access = false")
    conn.execute("SET lock_configuration = true")


def _is_pivot(statement) -> bool:
    """PIVOT parses as MULTI (DuckDB adds a CREATE TYPE of the pivoted values before the query)."""
    return statement.type == duckdb.StatementType.MULTI and statement.query.lstrip().upper().startswith(
        ("PIVOT", "UNPIVOT")
    )


def run_statement(conn: duckdb.DuckDBPyConnection, sql: str):
    """Run the user's SQL if every statement in it is a query; the last statement's result."""
    statements = conn.extract_statements(sql)
    refused = [s for s in statements if s.type not in _QUERIES and not _is_pivot(s)]
    if refused:
        raise QueryError(
            f"`trelm sql` and `trelm inspect` only query: {refused[0].type.name} is not allowed",
            fix="write a SELECT (or EXPLAIN) statement; the datasets are read-only here",
        )
    result = None
    for statement in statements:
        result = conn.execute(statement)
    return result


def query(run_dir: Path | None, sql: str) -> tuple[list[str], list[tuple]]:
    """Run one statement against the run's views; returns (column names, rows)."""
    conn, views = connect(run_dir)
    try:
        result = run_statement(conn, sql)
        columns = [d[0] for d in result.description] if result.description else []
        return columns, result.fetchall()
    except duckdb.Error as exc:  # the statement is the user's: a typo, or a view of a stage not run yet
        raise QueryError(
            str(exc), fix=f"correct the statement; the run's views: {', '.join(views) or '(none)'}"
        ) from exc
    finally:
        conn.close()
