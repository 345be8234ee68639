import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dumps import page, write_multistream, write_page_props, write_plain

from preprocessing.dumpfiles import DumpFileError, index_path_for, iter_page_xml, run_name_for
from preprocessing.ingest import IngestConfig, ingest, inputs_for_file
from storage.schemas import PAGES, REDIRECTS
from storage.shards import MANIFEST, dataset_dir, part_paths, read_manifest

NAME = "testwiki-20260301-pages-articles-multistream1.xml-p1p99.bz2"
PAGES_XML = [
    page(
        1,
        "Paris",
        "'''Paris''' is the capital of [[France]]. It is not in the [[USA]] or [[US]] or [[Nowhere]].",
    ),
    page(2, "France", "'''France''' is a country. Its capital is [[paris|the city of Paris]]."),
    page(3, "United States", "The '''United States''' is a country."),
    page(4, "USA", redirect="United States"),
    page(5, "US", redirect="USA"),  # a double redirect
    page(6, "Talk:Paris", "talk", ns=1),
    # <text> is never closed: the page is not well-formed XML
    b"  <page>\n    <title>Broken</title>\n    <ns>0</ns>\n    <id>7</id>\n"
    b"    <revision><text>x</revision>\n  </page>\n",
    page(8, "Caf\u00e9", "A [[France|French]] word.").encode().replace(b"word", b"w\xffrd"),  # invalid UTF-8
]
QIDS = {1: "Q90", 2: "Q142", 3: "Q30"}


def _cfg(**kw) -> IngestConfig:
    return IngestConfig(**{"workers": 1, "pages_per_part": 2, **kw})


def _rows(run_dir):
    rows = []
    for path in part_paths(run_dir, PAGES):
        rows += pq.read_table(path).to_pylist()
    return {r["title"]: r for r in rows}


def _links(row):
    return [
        (row["text"][ln["start"] : ln["end"]], ln["target"], ln["target_page_id"], ln["target_qid"])
        for ln in row["links"]
    ]


@pytest.fixture
def multistream(tmp_path):
    dump, _ = write_multistream(tmp_path / NAME, PAGES_XML, per_stream=2)
    write_page_props(tmp_path / "testwiki-20260301-page_props.sql.gz", QIDS)
    return dump


def test_multistream_ingest_resolves_links_redirects_and_qids(multistream, tmp_path):
    run_dir = tmp_path / "run"
    manifest = ingest(_cfg(workers=2), inputs_for_file(multistream), run_dir, progress=False)
    rows = _rows(run_dir)
    assert sorted(rows) == ["Café", "France", "Paris", "United States"]
    paris = rows["Paris"]
    assert paris["qid"] == "Q90" and paris["page_id"] == 1 and paris["rev_id"] == 10
    assert _links(paris) == [
        ("France", "France", 2, "Q142"),
        ("USA", "United States", 3, "Q30"),
        ("US", "United States", 3, "Q30"),  # followed through the double redirect
        ("Nowhere", "Nowhere", None, None),
    ]
    assert _links(rows["France"]) == [("the city of Paris", "Paris", 1, "Q90")]
    assert "\ufffd" in rows["Café"]["text"] and rows["Café"]["qid"] is None
    stats = manifest["stats"]
    assert stats["articles"] == 4 and stats["redirects"] == 2 and stats["skipped_namespace"] == 1
    assert stats["skipped_bad_xml:ParseError"] == 1 and stats["streams_with_invalid_utf8"] == 1
    assert stats["links_via_redirect"] == 2 and stats["links_unresolved"] == 1
    redirects = pq.read_table(part_paths(run_dir, REDIRECTS)[0].parent).to_pylist()
    assert sorted((r["title"], r["target"]) for r in redirects) == [("US", "USA"), ("USA", "United States")]
    assert len(manifest["parts"]) == 4 and not (run_dir / "_staging" / "ingest_pages").exists()


@pytest.mark.parametrize("suffix", [".xml", ".xml.bz2"])
def test_one_pass_without_index_gives_the_same_pages(multistream, tmp_path, suffix):
    plain = write_plain(tmp_path / f"testwiki-20260301-pages-articles{suffix}", PAGES_XML)
    assert index_path_for(plain) is None
    ingest(_cfg(), inputs_for_file(plain), tmp_path / "plain", progress=False)
    ingest(_cfg(), inputs_for_file(multistream), tmp_path / "multi", progress=False)
    assert _rows(tmp_path / "plain") == _rows(tmp_path / "multi")


def test_truncated_stream_is_recorded_with_file_and_offset(multistream, tmp_path):
    data = multistream.read_bytes()
    multistream.write_bytes(data[: len(data) - 200])  # cuts into the last page stream
    # allowed explicitly (by default a damaged input fails the stage: tests/faults)
    allowed = _cfg(max_lost_fraction=0.5)
    manifest = ingest(allowed, inputs_for_file(multistream), tmp_path / "run", progress=False)
    stats = manifest["stats"]
    assert stats["streams_dropped_corrupt"] == 1 and stats["pages_dropped_corrupt"] == 2
    assert str(multistream) in manifest["errors"][0] and "byte offset" in manifest["errors"][0]
    assert {"Paris", "France", "United States"} <= set(_rows(tmp_path / "run"))


def test_truncated_file_without_index_keeps_the_pages_before_the_cut(tmp_path):
    # bz2 decodes whole blocks, so what survives a cut is the streams before it: a multistream
    # file read without its index, as `--dump` does when the index is missing
    plain, index = write_multistream(tmp_path / NAME, PAGES_XML * 20, per_stream=4)
    index.unlink()
    plain.write_bytes(plain.read_bytes()[:-300])
    with pytest.raises(DumpFileError, match="truncated or corrupt near byte offset"):
        list(iter_page_xml(plain))
    allowed = _cfg(pages_per_part=10, max_lost_fraction=0.5)
    manifest = ingest(allowed, inputs_for_file(plain), tmp_path / "run", progress=False)
    assert manifest["stats"]["articles"] > 50 and "truncated" in manifest["errors"][0]


def test_rerun_redoes_only_the_missing_part(multistream, tmp_path):
    run_dir = tmp_path / "run"
    ingest(_cfg(), inputs_for_file(multistream), run_dir, progress=False)
    pages_dir = dataset_dir(run_dir, PAGES)
    before = {p.name: p.stat().st_mtime_ns for p in pages_dir.glob("part-*.parquet")}
    # a run killed mid-way: one part gone, a half-written temp file left, no manifest
    (pages_dir / "part-00001.parquet").unlink()
    (pages_dir / ".part-00001.parquet.tmp-4242").write_bytes(b"PAR1 half")
    (pages_dir / MANIFEST).unlink()
    ingest(_cfg(keep_staging=True), inputs_for_file(multistream), run_dir, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in pages_dir.glob("part-*.parquet")}
    assert after.keys() == before.keys()
    assert [n for n in after if after[n] != before[n]] == ["part-00001.parquet"]
    assert read_manifest(run_dir, PAGES)["rows"] == 4


def test_changed_config_rewrites_parts(multistream, tmp_path):
    run_dir = tmp_path / "run"
    ingest(_cfg(pages_per_part=2), inputs_for_file(multistream), run_dir, progress=False)
    manifest = ingest(_cfg(pages_per_part=100), inputs_for_file(multistream), run_dir, progress=False)
    assert len(manifest["parts"]) == 1
    assert sorted(p.name for p in dataset_dir(run_dir, PAGES).glob("part-*")) == ["part-00000.parquet"]


def test_missing_file_and_run_names(tmp_path):
    with pytest.raises(DumpFileError, match="no such file"):
        inputs_for_file(tmp_path / "nope.xml.bz2")
    assert run_name_for(tmp_path / NAME) == "testwiki-20260301"
    assert run_name_for(tmp_path / "my-export.xml") == "my-export"


def test_sigkill_mid_run_then_resume(tmp_path):
    """A real kill: the process group dies while parts are being written; the re-run keeps every
    part that was complete, never reads a temp file, and ends with the same rows as a clean run."""
    body = "'''Word''' is [[France|a link]] in prose. " * 200
    pages = [page(i, f"Page {i}", body) for i in range(1, 1201)]
    dump, _ = write_multistream(tmp_path / NAME, pages, per_stream=10)
    data_root = tmp_path / "data"
    cmd = [
        str(Path(sys.executable).with_name("trelm")),
        "ingest",
        "--dump",
        str(dump),
        "--data-root",
        str(data_root),
        "--workers",
        "1",
        "--set",
        "ingest.pages_per_part=20",
        "--set",
        "progress=false",
    ]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staged_dir = data_root / "runs" / "testwiki-20260301" / "_staging" / "ingest_pages" / "v1"
    deadline = time.monotonic() + 60
    while len(list(staged_dir.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    run_dir = data_root / "runs" / "testwiki-20260301"
    # a part is done when its pages and its redirects are both written (the kill may fall between)
    redirects = dataset_dir(run_dir, REDIRECTS)
    done = [p for p in staged_dir.glob("part-*.parquet") if (redirects / p.name).exists()]
    survivors = {p.name: p.stat().st_mtime_ns for p in done}
    assert 2 <= len(survivors) < 60

    manifest = ingest(
        _cfg(pages_per_part=20, keep_staging=True), inputs_for_file(dump), run_dir, progress=False
    )
    assert manifest["rows"] == 1200
    assert {n: (staged_dir / n).stat().st_mtime_ns for n in survivors} == survivors  # not redone
    assert not list(staged_dir.glob(".*tmp*")) and not list(dataset_dir(run_dir, PAGES).glob(".*tmp*"))
