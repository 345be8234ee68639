"""The bundled sample mirror served on loopback: download with a cut and a corruption, ingest, query."""

import json
import shutil
from pathlib import Path

import pytest
from mirror_server import serve_mirror
from typer.testing import CliRunner

from flows.cli import app

SAMPLE_MIRROR = Path(__file__).resolve().parents[1] / "sample" / "mirror"
RUN = "enwiki-20260301"


@pytest.fixture
def mirror_root(tmp_path):
    root = tmp_path / "mirror"
    shutil.copytree(SAMPLE_MIRROR, root)
    return root


def _invoke(*args: str, stdin: str | None = None) -> str:
    result = CliRunner().invoke(app, list(args), input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def _status(root: Path) -> dict:
    return json.loads((root / "enwiki" / "20260301" / "dumpstatus.json").read_text())


def _files_of(status: dict, job: str) -> list[str]:
    return sorted(status["jobs"][job]["files"])


def test_download_resume_reject_ingest_and_query(mirror_root, tmp_path):
    data = tmp_path / "data"
    status = _status(mirror_root)
    articles = [f for f in _files_of(status, "articlesmultistreamdump") if "-index" not in f]
    props = _files_of(status, "pagepropstable")[0]
    with serve_mirror(mirror_root) as mirror:
        mirror.cut(articles[0], after=5000)
        mirror.corrupt(props)
        report = json.loads(_invoke("download", "--mirror", mirror.url, "--data-root", str(data)))
        assert report["date"] == "20260301"  # 20260320 is still in progress
        ranges = [r.range for r in mirror.file_requests(articles[0])]
        assert ranges[0] is None and ranges[1] == "bytes=5000-"  # resumed where the cut left it
        assert len(mirror.file_requests(props)) == 2  # the corrupted transfer was rejected, fetched again
        assert {r.user_agent for r in mirror.requests} == {report_user_agent(mirror)}
    downloaded = data / "dumps" / "enwiki" / "20260301"
    for name in articles + [props]:
        assert (downloaded / name).read_bytes() == (mirror_root / "enwiki" / "20260301" / name).read_bytes()

    summary = json.loads(_invoke("ingest", "--data-root", str(data), "--workers", "2"))
    assert summary["rows"] >= 60 and summary["stats"]["redirects"] >= 10

    rows = json.loads(
        _invoke(
            "sql",
            "--json",
            "--data-root",
            str(data),
            "--run",
            RUN,
            "SELECT title, qid, len(links) AS n FROM pages ORDER BY title",
        )
    )
    by_title = {r["title"]: r for r in rows}
    assert by_title["Paris"]["qid"] == "Q90" and by_title["France"]["qid"] == "Q142"
    assert all(r["n"] > 0 for r in rows)
    links = json.loads(
        _invoke(
            "sql",
            "--json",
            "--data-root",
            str(data),
            "SELECT l.target, l.target_qid, substr(p.text, l.start + 1, l.end - l.start) AS anchor "
            "FROM pages p, unnest(p.links) AS t(l) WHERE p.title = 'Paris'",
        )
    )
    assert {"target": "France", "target_qid": "Q142"} in [
        {k: r[k] for k in ("target", "target_qid")} for r in links
    ]
    assert all(r["anchor"] for r in links)

    linked = json.loads(_invoke("link", "--data-root", str(data), "--workers", "2"))
    assert linked["rows"] == summary["rows"] and linked["stats"]["mentions_tagme"] > 0
    paris_kg = json.loads(
        _invoke(
            "sql",
            "--json",
            "--data-root",
            str(data),
            "SELECT DISTINCT m.kg_id, e.label FROM mentions, unnest(mentions) AS t(m) "
            "JOIN kg_entities e ON e.kg_id = m.kg_id WHERE m.qid = 'Q90'",
        )
    )
    assert [r["label"] for r in paris_kg] == ["Paris"]  # mention -> QID -> the KG's own entity

    selected = json.loads(_invoke("select", "--data-root", str(data)))
    assert selected["stats"]["selected"] > 0 and selected["rows"] == selected["stats"]["sequences"]
    assert (data / "runs" / RUN / "select" / "long_tail.png").read_bytes()[:4] == b"\x89PNG"
    facts = json.loads(
        _invoke(
            "sql",
            "--json",
            "--data-root",
            str(data),
            "SELECT k.label AS entity, r.label AS relation, t.label AS tail, e.tail_ids "
            "FROM instances i, unnest(i.entities) AS x(e) JOIN kg_entities k ON k.kg_id = e.kg_id "
            "JOIN kg_relations r ON r.rel_id = e.rel_id JOIN kg_entities t ON t.kg_id = e.tail_kg_id "
            "WHERE e.important",
        )
    )
    assert len(facts) == selected["stats"]["selected"] and all(f["tail_ids"] for f in facts)
    # resume: one instances part lost with the manifest; the rerun redoes that part alone
    instances_dir = data / "runs" / RUN / "instances" / "v1"
    stamps = {p.name: p.stat().st_mtime_ns for p in instances_dir.glob("part-*.parquet")}
    (instances_dir / "part-00001.parquet").unlink()
    (instances_dir / "_manifest.json").unlink()
    again = json.loads(_invoke("select", "--data-root", str(data)))
    assert again["stats"] == selected["stats"]
    after = {p.name: p.stat().st_mtime_ns for p in instances_dir.glob("part-*.parquet")}
    assert [n for n in after if after[n] != stamps[n]] == ["part-00001.parquet"]
    stats = json.loads(
        _invoke(
            "sql",
            "--json",
            "--data-root",
            str(data),
            "SELECT long_tail, count(*) AS n, sum(selected) AS selected FROM entity_stats GROUP BY 1",
        )
    )
    assert sum(r["selected"] for r in stats) == selected["stats"]["selected"]
    embedded = json.loads(
        _invoke(
            "sql",
            "--json",
            "--data-root",
            str(data),
            "SELECT count(*) AS n, count(DISTINCT len(vector)) AS dims FROM entity_embeddings",
        )
    )
    assert embedded == [{"n": selected["stats"]["entities_in_use"], "dims": 1}]

    table = _invoke("sql", "--data-root", str(data), "SELECT title, qid FROM pages WHERE title = 'Paris'")
    assert "Paris" in table and "Q90" in table and "(1 rows)" in table
    session = _invoke(
        "inspect",
        "--data-root",
        str(data),
        stdin=(".tables\nSELECT count(*) AS n\n  FROM redirects;\n.schema pages\nSELECT nope;\n.quit\n"),
    )
    assert "views pages, redirects" in session and "links" in session  # .schema lists the columns
    assert f"│ {summary['stats']['redirects']} " in session  # the two-line statement ran


def report_user_agent(mirror) -> str:
    from preprocessing.download import DownloadConfig

    return DownloadConfig().user_agent


def test_sql_table_output_and_errors(tmp_path):
    result = CliRunner().invoke(app, ["sql", "--data-root", str(tmp_path), "SELECT 1"])
    assert result.exit_code == 2 and "no run in" in result.output
