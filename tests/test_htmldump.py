"""Enterprise HTML dumps -> `pages`: the text and exact link spans of Parsoid HTML, QIDs from
`main_entity`, redirects from the article's list, `trelm ingest --dump FILE.json.tar.gz`, and the same
checks as the wikitext path."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
from htmldumps import ALGERIA_LINKS, ALGERIA_TEXT, sample_lines, write_enterprise_dump
from typer.testing import CliRunner

from preprocessing import quality
from preprocessing.dumpfiles import DumpFileError, run_name_for
from preprocessing.htmldump import html_to_text, iter_article_lines
from preprocessing.ingest import IngestConfig, ingest, inputs_for_file, inputs_for_run
from preprocessing.templates import RenderOptions
from preprocessing.wikitext import clean_wikitext
from storage.schemas import PAGES, REDIRECTS
from storage.shards import part_paths, read_manifest

NAME = "enwiki-NS0-20240601-ENTERPRISE-HTML.json.tar.gz"
# The lead of the fixture's Algeria as its wikitext would be: both readers must agree on it.
ALGERIA_WIKITEXT = (
    "'''Algeria''' ({{IPAc-en|æ|l}}; {{lang-ar|الجزائر}}), officially "
    "[[People's Democratic Republic of Algeria|the People's Democratic Republic]], is a "
    "[[sovereign state]] in [[North Africa]]. With an area of {{convert|2381741|km2|sqmi|0}}, it is the "
    "[[List of countries and dependencies by area#Countries|tenth-largest country]] in the world."
    "<ref>{{cite web|title=[[CIA]] World Factbook}}</ref> Its capital is [[Algiers]], near [[Nowhere land]]."
    "{{citation needed|date=May 2024}}"
)


def _html(line: str) -> str:
    return json.loads(line)["article_body"]["html"]


def _rows(run_dir) -> dict[str, dict]:
    rows = []
    for path in part_paths(run_dir, PAGES):
        rows += pq.read_table(path).to_pylist()
    return {r["title"]: r for r in rows}


def test_parsoid_html_becomes_text_and_exact_link_spans() -> None:
    stats: Counter = Counter()
    text, links = html_to_text(_html(sample_lines()[0]), stats)
    assert text == ALGERIA_TEXT
    assert [(text[s:e], t) for s, e, t in links] == ALGERIA_LINKS
    # the pronunciation transclusion went, and the separator after it with it
    assert "/æl/" not in text and stats["punctuation_repaired"] == 1


def test_both_readers_pass_the_same_checks_and_agree() -> None:
    html_text, html_links = html_to_text(_html(sample_lines()[0]))
    wiki_text, wiki_links = clean_wikitext(ALGERIA_WIKITEXT, RenderOptions(convert_output=True))
    for text, links in ((html_text, html_links), (wiki_text, wiki_links)):
        assert quality.link_errors(text, links) == []
        assert quality.broken_punctuation(text) == []
        assert "With an area of 2,381,741 square kilometres (919,595 sq mi), it is" in text
    # the same sentence but for the language's name, which `lang-xx` shows in HTML
    assert wiki_text == html_text.splitlines()[0].replace("Arabic: ", "")
    assert [(wiki_text[s:e], t) for s, e, t in wiki_links] == ALGERIA_LINKS[:6]


def test_ingest_an_enterprise_dump(tmp_path) -> None:
    dump = write_enterprise_dump(tmp_path / NAME, sample_lines())
    run_dir = tmp_path / "run"
    cfg = IngestConfig(workers=1, pages_per_part=2)
    manifest = ingest(cfg, inputs_for_file(dump), run_dir, progress=False)
    rows = _rows(run_dir)
    assert set(rows) == {"Algeria", "Algiers", "Carthage"}
    algeria = rows["Algeria"]
    assert (algeria["page_id"], algeria["rev_id"], algeria["qid"]) == (358, 1358, "Q262")
    assert rows["Carthage"]["qid"] is None  # no main_entity in its line
    assert rows["Algeria"]["text"] == ALGERIA_TEXT
    # a link through a redirect the dump lists under its target resolves to the article and its QID
    [to_algeria] = rows["Algiers"]["links"]
    assert (to_algeria["target"], to_algeria["target_page_id"], to_algeria["target_qid"]) == (
        "Algeria",
        358,
        "Q262",
    )
    to_carthage = next(ln for ln in rows["Algeria"]["links"] if ln["target"] == "Carthage")
    assert (to_carthage["target_page_id"], to_carthage["target_qid"]) == (5, None)
    for row in rows.values():
        spans = [(ln["start"], ln["end"], ln["target"]) for ln in row["links"]]
        assert quality.link_errors(row["text"], spans) == []
        assert quality.broken_punctuation(row["text"]) == []
    stats = manifest["stats"]
    assert (stats["articles"], stats["redirects"], stats["skipped_namespace"]) == (3, 1, 1)
    assert stats["skipped_bad_json:JSONDecodeError"] == 1
    redirects = pq.read_table(part_paths(run_dir, REDIRECTS)[0]).to_pylist()
    assert {"title": "People's Democratic Republic of Algeria", "target": "Algeria"} in redirects


def test_trelm_ingest_takes_the_dump_file(tmp_path) -> None:
    from flows.cli import app

    dump = write_enterprise_dump(tmp_path / NAME, sample_lines(), per_file=3)
    args = ["ingest", "--dump", str(dump), "--data-root", str(tmp_path / "data"), "--workers", "1"]
    result = CliRunner().invoke(app, [*args, "--set", "progress=false"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "data" / "runs" / "enwiki-20240601"
    assert read_manifest(run_dir, PAGES)["rows"] == 3
    assert _rows(run_dir)["Algeria"]["qid"] == "Q262"


def test_a_downloaded_run_folder_with_an_html_dump_uses_it(tmp_path) -> None:
    dump = write_enterprise_dump(tmp_path / NAME, sample_lines())
    assert inputs_for_run(tmp_path).dumps == (dump,)
    assert run_name_for(dump) == "enwiki-20240601"


def test_a_file_that_is_no_dump_is_named_in_the_error(tmp_path) -> None:
    bad = tmp_path / NAME
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DumpFileError, match=f"{NAME}.*ENTERPRISE-HTML"):
        list(iter_article_lines(bad))


def test_bad_html_is_counted_not_fatal(tmp_path) -> None:
    no_base = json.dumps({"name": "X", "identifier": 1, "article_body": {"html": "<p>no base</p>"}})
    dump = write_enterprise_dump(tmp_path / NAME, [no_base, sample_lines()[1]])
    manifest = ingest(IngestConfig(workers=1), inputs_for_file(dump), tmp_path / "run", progress=False)
    assert manifest["rows"] == 1
    assert manifest["stats"]["skipped_bad_html:Exception"] == 1


def test_html_parts_end_at_their_size_cap_too(tmp_path) -> None:
    from preprocessing.ingest import _one_pass_groups

    lines = ["x" * 600_000] * 5  # an article's JSON line is large: 0.6 MB each here
    groups = list(_one_pass_groups(tmp_path / NAME, IngestConfig(pages_per_part=100), iter(lines), max_mb=1))
    assert [len(pages) for _, _, pages, _, _ in groups] == [2, 2, 1]
    assert [key for key, *_ in groups][0] == ["pages", 0, 100, "mb", 1]
