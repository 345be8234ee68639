"""The bundled offline sample (`sample/`): reproducible, internally consistent, in the real dump formats."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

# the generator lives beside the sample, outside the installed packages
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sample"))
import make_sample as sd  # noqa: E402

SAMPLE = sd.DEFAULT_OUT_DIR
SRC = sd.SRC_DIR
RUN = SAMPLE / "mirror" / sd.WIKI / sd.RUN_DATE
PENDING = SAMPLE / "mirror" / sd.WIKI / sd.PENDING_RUN_DATE
NS = "{http://www.mediawiki.org/xml/export-0.11/}"
PREFIX = f"{sd.WIKI}-{sd.RUN_DATE}"
REVISION_ORDER = (
    *("id", "parentid", "timestamp", "contributor", "minor", "comment"),
    *("origin", "model", "format", "text", "sha1"),
)
NEEDED_JOBS = (
    "articlesmultistreamdump",
    "articlesmultistreamdumprecombine",
    "redirecttable",
    "pagepropstable",
)
_SQL_ESCAPES = {"n": "\n", "0": "\0", "r": "\r", "Z": "\x1a"}

_SQL_VALUE = r"'(?:[^'\\]|\\.)*'|NULL|-?\d+(?:\.\d+)?"
_SQL_TUPLE = re.compile(rf"\(((?:{_SQL_VALUE})(?:,(?:{_SQL_VALUE}))*)\)")


def _sql_rows(path: Path, table: str) -> list[tuple]:
    rows = []
    prefix = f"INSERT INTO `{table}` VALUES "
    for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines():
        if not line.startswith(prefix):
            continue
        assert line.endswith(");")
        for tup in _SQL_TUPLE.finditer(line[len(prefix) :]):
            row = []
            for tok in re.findall(_SQL_VALUE, tup.group(1)):
                if tok == "NULL":
                    row.append(None)
                elif tok.startswith("'"):
                    row.append(re.sub(r"\\(.)", lambda m: _SQL_ESCAPES.get(m[1], m[1]), tok[1:-1]))
                else:
                    row.append(float(tok) if "." in tok else int(tok))
            rows.append(tuple(row))
    return rows


def _tsv(path: Path) -> list[list[str]]:
    return [
        line.split("\t")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]


def _checked_in() -> dict[str, bytes]:
    return {
        p.relative_to(SAMPLE).as_posix(): p.read_bytes()
        for sub in ("mirror", "wikidata5m")
        for p in sorted((SAMPLE / sub).rglob("*"))
        if p.is_file()
    }


def _multistream_pairs() -> list[tuple[Path, Path]]:
    pairs = []
    for xml in sorted(RUN.glob("*-pages-articles-multistream*.bz2")):
        if "-index" in xml.name:
            continue
        index = xml.with_name(
            xml.name.replace("-multistream", "-multistream-index", 1).replace(".xml", ".txt", 1)
        )
        pairs.append((xml, index))
    return pairs


@pytest.fixture(scope="module")
def pages() -> list[ET.Element]:
    """The <page> elements of the recombined dump."""
    root = ET.fromstring(bz2.decompress((RUN / f"{PREFIX}-pages-articles-multistream.xml.bz2").read_bytes()))
    return root.findall(f"{NS}page")


def test_regenerating_reproduces_the_checked_in_files(tmp_path):
    sd.generate_sample(tmp_path)
    regenerated = {
        p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()
    }
    checked_in = _checked_in()
    assert sorted(regenerated) == sorted(checked_in)
    for rel, blob in regenerated.items():
        assert blob == checked_in[rel], f"{rel} differs: run `python sample/make_sample.py` and commit"
    assert sum(len(b) for b in checked_in.values()) < 1_000_000


def test_dumpstatus_and_sums_match_the_files():
    status = json.loads((RUN / "dumpstatus.json").read_text())
    assert status["version"] == "0.8"
    jobs = status["jobs"]
    listed = {}
    for name in NEEDED_JOBS:
        assert jobs[name]["status"] == "done"
    for job in jobs.values():
        if job["status"] != "done":
            assert job["files"] == {}
            continue
        for fname, meta in job["files"].items():
            blob = (RUN / fname).read_bytes()
            assert meta == {
                "size": len(blob),
                "url": f"/{sd.WIKI}/{sd.RUN_DATE}/{fname}",
                "md5": hashlib.md5(blob).hexdigest(),
                "sha1": hashlib.sha1(blob).hexdigest(),
            }
            listed[fname] = blob
    assert len(jobs["articlesmultistreamdump"]["files"]) == 4
    for algo in ("md5", "sha1"):
        lines = (RUN / f"{PREFIX}-{algo}sums.txt").read_text().splitlines()
        sums = dict(reversed(line.split("  ", 1)) for line in lines)
        assert sums == {f: hashlib.new(algo, b).hexdigest() for f, b in listed.items()}
    on_disk = {p.name for p in RUN.iterdir()}
    assert on_disk == set(listed) | {"dumpstatus.json", f"{PREFIX}-md5sums.txt", f"{PREFIX}-sha1sums.txt"}


def test_the_newer_run_is_not_finished():
    assert [p.name for p in PENDING.iterdir()] == ["dumpstatus.json"]
    jobs = json.loads((PENDING / "dumpstatus.json").read_text())["jobs"]
    for name in NEEDED_JOBS:
        assert jobs[name]["status"] == "in-progress"
        assert jobs[name]["files"]
        for fname, meta in jobs[name]["files"].items():
            assert sd.PENDING_RUN_DATE in fname
            assert set(meta) == {"size"}


def test_split_file_names_follow_the_dumps():
    jobs_files = json.loads((RUN / "dumpstatus.json").read_text())["jobs"]["articlesmultistreamdump"]["files"]
    names = sorted(jobs_files)
    assert names == [
        f"{PREFIX}-pages-articles-multistream-index1.txt-p1p{sd.SPLIT_AT}.bz2",
        f"{PREFIX}-pages-articles-multistream-index2.txt-p{sd.SPLIT_AT + 1}p4134.bz2",
        f"{PREFIX}-pages-articles-multistream1.xml-p1p{sd.SPLIT_AT}.bz2",
        f"{PREFIX}-pages-articles-multistream2.xml-p{sd.SPLIT_AT + 1}p4134.bz2",
    ]
    assert all(jobs_files[n]["size"] > 0 for n in names)


@pytest.mark.parametrize("pair", _multistream_pairs(), ids=lambda p: p[0].name)
def test_every_index_offset_starts_a_stream_of_its_pages(pair):
    xml_path, index_path = pair
    data = xml_path.read_bytes()
    entries = [line.split(":", 2) for line in bz2.decompress(index_path.read_bytes()).decode().splitlines()]
    by_offset: dict[int, list[tuple[int, str]]] = {}
    for off, page_id, title in entries:
        by_offset.setdefault(int(off), []).append((int(page_id), title))
    offsets = sorted(by_offset)
    assert len(offsets) > 2
    # the siteinfo header is a stream of its own, not in the index
    d = bz2.BZ2Decompressor()
    header = d.decompress(data).decode()
    assert d.eof and header.startswith("<mediawiki ") and header.endswith("</siteinfo>\n")
    assert len(data) - len(d.unused_data) == offsets[0]
    pos = offsets[0]
    for off in offsets:
        assert off == pos
        d = bz2.BZ2Decompressor()
        chunk = d.decompress(data[off:]).decode()
        assert d.eof
        pos = len(data) - len(d.unused_data)
        got = [
            (int(p.findtext("id")), p.findtext("title"))
            for p in ET.fromstring(f"<x>{chunk}</x>").iter("page")
        ]
        assert got == by_offset[off]
        assert 0 < len(got) <= sd.PAGES_PER_STREAM
    assert bz2.decompress(data[pos:]) == b"</mediawiki>\n"
    ids = [int(e[1]) for e in entries]
    assert ids == sorted(ids)


def test_split_files_together_equal_the_recombined_file():
    split, recombined = [], None
    for xml_path, _ in _multistream_pairs():
        root = ET.fromstring(bz2.decompress(xml_path.read_bytes()))  # each file is a complete document
        assert root.find(f"{NS}siteinfo/{NS}namespaces") is not None
        ids = [int(p.findtext(f"{NS}id")) for p in root.findall(f"{NS}page")]
        if m := re.search(r"-p(\d+)p(\d+)\.bz2$", xml_path.name):
            lo, hi = int(m[1]), int(m[2])
            assert ids and all(lo <= i <= hi for i in ids)
            assert hi == sd.SPLIT_AT or ids[-1] == hi  # the last split file ends at the last page id
            split += ids
        else:
            recombined = ids
    assert split == recombined


def test_pages_are_well_formed(pages):
    ids = [int(p.findtext(f"{NS}id")) for p in pages]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for page in pages:
        assert [c.tag.removeprefix(NS) for c in page][:3] == ["title", "ns", "id"]
        rev = page.find(f"{NS}revision")
        order = [c.tag.removeprefix(NS) for c in rev]
        assert order == [t for t in REVISION_ORDER if t in order]
        assert {"id", "timestamp", "contributor", "model", "format", "text", "sha1"} <= set(order)
        text_el = rev.find(f"{NS}text")
        text = text_el.text or ""
        assert int(text_el.get("bytes")) == len(text.encode("utf-8"))
        assert rev.findtext(f"{NS}sha1") == text_el.get("sha1") == sd.sha1_base36(text)
        assert text_el.get("{http://www.w3.org/XML/1998/namespace}space") == "preserve"
        redirect = page.find(f"{NS}redirect")
        if redirect is not None:
            assert re.match(r"#redirect ?\[\[", text, re.I)
            assert text.split("[[", 1)[1].split("]]", 1)[0].split("#")[0] == redirect.get("title")


def test_namespaces_and_counts(pages):
    kinds = {"article": 0, "redirect": 0, "other": 0}
    for p in pages:
        ns = int(p.findtext(f"{NS}ns"))
        kind = "redirect" if p.find(f"{NS}redirect") is not None else "article" if ns == 0 else "other"
        kinds[kind] += 1
    assert 70 <= kinds["article"] <= 100
    assert 15 <= kinds["redirect"] <= 30
    assert kinds["other"] >= 3
    assert {int(p.findtext(f"{NS}ns")) for p in pages} >= {0, 4, 10, 14}


def test_page_props_qids_are_sample_entities(pages):
    rows = _sql_rows(RUN / f"{PREFIX}-page_props.sql.gz", "page_props")
    assert rows == sorted(rows, key=lambda r: (r[0], r[1].encode()))
    entities = {row[0]: row for row in _tsv(SRC / "entities.tsv")}
    items = {r[0]: r[2] for r in rows if r[1] == "wikibase_item"}
    articles = {int(p.findtext(f"{NS}id")): p.findtext(f"{NS}title") for p in pages
                if p.findtext(f"{NS}ns") == "0" and p.find(f"{NS}redirect") is None}  # fmt: skip
    assert set(items) == set(articles)
    for page_id, qid in items.items():
        assert qid in entities
        assert entities[qid][1] == articles[page_id] and int(entities[qid][3]) == page_id
    assert {r[1] for r in rows} > {"wikibase_item", "wikibase-shortdesc", "page_image_free", "defaultsort"}
    kg = {
        line.split("\t", 1)[0]
        for line in (SAMPLE / "wikidata5m/wikidata5m_entity.txt").read_text().splitlines()
    }
    assert {qid for qid in items.values() if qid not in kg} == {"Q11518", "Q714717"}


def test_redirect_table_matches_the_redirect_pages(pages):
    raw = gzip.decompress((RUN / f"{PREFIX}-redirect.sql.gz").read_bytes()).decode()
    assert "CREATE TABLE `redirect`" in raw and "'Christ\\'s_College,_Cambridge'" in raw
    rows = _sql_rows(RUN / f"{PREFIX}-redirect.sql.gz", "redirect")
    by_id = {int(p.findtext(f"{NS}id")): p for p in pages}
    redirects = {i for i, p in by_id.items() if p.find(f"{NS}redirect") is not None}
    assert {r[0] for r in rows} == redirects
    titles = {(int(p.findtext(f"{NS}ns")), p.findtext(f"{NS}title")) for p in pages}
    names = dict(sd.NAMESPACES)
    for rd_from, rd_ns, rd_title, rd_interwiki, _fragment in rows:
        assert rd_interwiki == ""
        target = (f"{names[rd_ns]}:" if rd_ns else "") + rd_title.replace("_", " ")
        assert (rd_ns, target) in titles
        assert by_id[rd_from].find(f"{NS}redirect").get("title") == target
    assert ("Award ceremonies" in {r[4] for r in rows}) and 10 in {r[1] for r in rows}


def test_kg_files_are_consistent():
    kg = SAMPLE / "wikidata5m"
    entity_lines = [line.split("\t") for line in (kg / "wikidata5m_entity.txt").read_text().splitlines()]
    entities = {parts[0] for parts in entity_lines}
    assert all(len(parts) >= 2 and parts[0].startswith("Q") for parts in entity_lines)
    relations = {line.split("\t")[0] for line in (kg / "wikidata5m_relation.txt").read_text().splitlines()}
    texts = {line.split("\t")[0] for line in (kg / "wikidata5m_text.txt").read_text().splitlines()}
    assert texts == entities

    def triples(name: str) -> list[tuple[str, ...]]:
        return [tuple(line.split("\t")) for line in (kg / f"wikidata5m_{name}.txt").read_text().splitlines()]

    everything = triples("all_triplet")
    assert 300 <= len(everything) <= 800 and len(set(everything)) == len(everything)
    for h, r, t in everything:
        assert h in entities and t in entities and r in relations
    assert {x for h, _, t in everything for x in (h, t)} == entities
    train, valid, test = (triples(f"transductive_{s}") for s in ("train", "valid", "test"))
    assert sorted(train + valid + test) == sorted(everything) and valid and test
    assert len(train) >= 0.85 * len(everything)
    seen = {x for tr in train for x in tr}
    assert all(set(tr) <= seen for tr in valid + test)
    kg_only = {row[0] for row in _tsv(SRC / "entities.tsv") if row[4] == "1" and not row[3]}
    assert {"Q38104", "Q169470", "Q46"} <= kg_only <= entities


_LINK_NAMESPACES = {
    *("file", "image", "category", "template", "wikipedia", "help", "portal", "module", "draft", "wp"),
    *("special", "user", "talk", "mediawiki", "wikt", "commons", "d"),
}


def _link_targets(text: str):
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<(nowiki|math)>.*?</\1>", "", text, flags=re.S)
    for m in re.finditer(r"\[\[([^\[\]|]*)", text):
        target = m.group(1).strip()
        if target.startswith(":"):
            continue
        prefix, sep, _ = target.partition(":")
        if sep and (
            prefix.strip().lower() in _LINK_NAMESPACES
            or re.fullmatch(r"[a-z]{2,3}(-[a-z]+)?", prefix.strip())
        ):
            continue  # another namespace, or an interlanguage link
        target = re.sub(r"[ _]+", " ", target.split("#", 1)[0]).strip()
        if target:
            yield target[0].upper() + target[1:]


def test_every_link_target_is_known(pages):
    known = {row[1] for row in _tsv(SRC / "entities.tsv")}
    known |= {line for line in (SRC / "nonsample_titles.txt").read_text(encoding="utf-8").splitlines()
              if line and not line.startswith("#")}  # fmt: skip
    in_dump = {p.findtext(f"{NS}title") for p in pages if p.findtext(f"{NS}ns") == "0"}
    missing = {}
    for p in pages:
        for target in _link_targets(p.find(f"{NS}revision/{NS}text").text or ""):
            if target not in in_dump and target not in known:
                missing.setdefault(target, p.findtext(f"{NS}title"))
    assert not missing


def test_articles_use_the_real_wikitext_constructs():
    texts = [p.read_text(encoding="utf-8") for p in sorted((SRC / "articles").glob("*.wiki"))]
    constructs = {
        "short description": r"\{\{Short description\|",
        "infobox": r"\{\{Infobox",
        "cite web ref": r"<ref[^>]*>\{\{cite web",
        "named ref reuse": r'<ref name="[^"]+" />',
        "file with nested link": r"\[\[File:[^\]]*\[\[",
        "wikitable": r'\{\| class="wikitable',
        "comment": r"<!--",
        "entity": r"&(?:nbsp|ndash);",
        "math": r"<math>",
        "bold": r"'''",
        "italic": r"(?<!')''[^']",
        "heading": r"^==[^=]",
        "list item": r"^\* ",
        "category": r"\[\[Category:",
        "interwiki": r"\[\[(?:de|fr|it):",
        "piped": r"\[\[[^\]|]+\|[^\]]+\]\]",
        "trailing letters": r"\]\][a-z]",
        "fragment": r"\[\[[^\]|]+#",
        "lower-case link": r"\[\[[a-z]",
        "underscore": r"\[\[[^\]|:]*_",
        "convert": r"\{\{convert\|",
        "lang": r"\{\{lang\|",
        "notoc": r"__NOTOC__",
    }
    for name, pattern in constructs.items():
        using = sum(1 for t in texts if re.search(pattern, t, re.M))
        assert using >= 3, f"{name}: {using} articles"
    assert any(re.search(r"\{\{\{!\}\} class=\"wikitable\"", t) for t in texts)  # a table inside a template
    for t in texts:
        assert t.startswith("{{Short description|")
