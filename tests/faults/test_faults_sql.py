"""Case 3 of "What happens when things go wrong": `trelm sql` and `trelm inspect` only read, and only
inside the data root."""

from __future__ import annotations

import pytest
from dumps import page, write_multistream
from typer.testing import CliRunner

from flows.cli import app
from preprocessing.ingest import IngestConfig, ingest, inputs_for_file
from storage.schemas import PAGES
from storage.shards import damaged_parts, dataset_dir


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sql") / "data root with a ' quote"
    dump = write_multistream(
        root.parent / "t-pages-articles-multistream.xml.bz2", [page(i, f"P{i}", "x") for i in range(1, 5)], 2
    )[0]
    run_dir = root / "runs" / "t"
    ingest(IngestConfig(workers=1, pages_per_part=2), inputs_for_file(dump), run_dir, progress=False)
    (run_dir / "config.yaml").write_text("{}\n")
    (root.parent / "outside.txt").write_text("not yours\n")
    return root


def _sql(data_root, statement: str):
    return CliRunner().invoke(app, ["sql", "--json", statement, "--data-root", str(data_root)])


def _quoted(path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def test_queries_still_work(data_root):
    result = _sql(data_root, "SELECT count(*) AS n FROM pages")
    assert result.exit_code == 0 and '"n": 4' in result.output
    # PIVOT parses as MULTI (DuckDB creates an enum first): still a query, as `make demo` runs one
    pivot = _sql(data_root, "PIVOT (SELECT 'n' AS k, count(*) AS v FROM pages) ON k USING first(v)")
    assert pivot.exit_code == 0 and '"n": 4' in pivot.output, pivot.output


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("COPY (SELECT * FROM pages LIMIT 1) TO {part} (FORMAT parquet)", "COPY is not allowed"),
        ("COPY (SELECT 1) TO {outside_new}", "COPY is not allowed"),
        ("ATTACH {inside_db}", "ATTACH is not allowed"),
        ("SELECT * FROM read_text({outside})", "Permission Error"),
        ("SELECT 1; SET enable_external_access = true", "SET is not allowed"),
        ("INSTALL httpfs", "is not allowed"),
    ],
)
def test_nothing_is_written_and_nothing_outside_is_read(data_root, statement, message):
    part = dataset_dir(data_root / "runs" / "t", PAGES) / "part-00000.parquet"
    paths = {
        "part": part,
        "outside_new": data_root.parent / "new.csv",
        "inside_db": data_root / "x.db",
        "outside": data_root.parent / "outside.txt",
    }
    result = _sql(data_root, statement.format(**{k: _quoted(v) for k, v in paths.items()}))
    assert result.exit_code == 2 and message in result.output, result.output
    assert damaged_parts(data_root / "runs" / "t", PAGES, full=True) == []
    assert not paths["outside_new"].exists() and not paths["inside_db"].exists()


def test_inspect_refuses_writes_too(data_root):
    outside = data_root.parent / "inspect.csv"
    result = CliRunner().invoke(
        app,
        ["inspect", "--data-root", str(data_root)],
        input=f"COPY (SELECT 1) TO {_quoted(outside)};\nSELECT count(*) FROM redirects;\n",
    )
    assert "COPY is not allowed" in result.output and not outside.exists()
