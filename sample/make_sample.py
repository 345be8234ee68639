"""The bundled offline sample: a tiny Wikipedia dump mirror and a Wikidata5M-format KG, in the real formats.

`generate_sample(out_dir)` reads the hand-written sources under `sample/src/` and writes

    {out_dir}/mirror/enwiki/20260301/    a finished dump run laid out as on dumps.wikimedia.org:
        enwiki-20260301-pages-articles-multistream1.xml-p1p2000.bz2       split multistream files,
        enwiki-20260301-pages-articles-multistream-index1.txt-p1p2000.bz2 each a complete XML document,
        enwiki-20260301-pages-articles-multistream2.xml-p2001p4134.bz2    with their indexes
        enwiki-20260301-pages-articles-multistream-index2.txt-p2001p4134.bz2
        enwiki-20260301-pages-articles-multistream.xml.bz2                the recombined file + index
        enwiki-20260301-pages-articles-multistream-index.txt.bz2
        enwiki-20260301-redirect.sql.gz, enwiki-20260301-page_props.sql.gz   mysqldump tables
        enwiki-20260301-site_stats.sql.gz, enwiki-20260301-siteinfo-namespaces.json.gz
        dumpstatus.json, enwiki-20260301-md5sums.txt, enwiki-20260301-sha1sums.txt
    {out_dir}/mirror/enwiki/20260320/dumpstatus.json   a newer run whose jobs are still in progress
    {out_dir}/wikidata5m/wikidata5m_{entity,relation,text,all_triplet}.txt
    {out_dir}/wikidata5m/wikidata5m_transductive_{train,valid,test}.txt

byte for byte the same on every run (sorted iteration, fixed timestamps, gzip mtime 0, bz2 level 9).

Sources (`sample/src/`): `entities.tsv` (QID, enwiki title, Wikidata label, page id, in KG, aliases,
description), `relations.tsv`, `triples.tsv`, `redirects.tsv`, `pages.tsv` (non-article pages, their text
under `pages/`), and `articles/<Title>.wiki`. The QIDs, PIDs and relation labels are the real Wikidata
ones. The page ids are NOT the real enwiki page ids: they are synthetic (plausible, unique) ints, and the
revision ids, timestamps and contributors are synthetic too, derived from a hash of page id and title.

Things a consumer of the sample should know:
- `A. Einstein` is a double redirect (-> `Einstein` -> `Albert Einstein`), kept on purpose;
- `Nobel Prize ceremony` redirects to a section (`rd_fragment` = `Award ceremonies`);
- `Template:Infobox nation` is a redirect outside namespace 0;
- the articles `Pythagorean theorem` (Q11518) and `Christ's College, Cambridge` (Q714717) have a QID in
  `page_props` that is not in the KG;
- `Module:Convert` has content model Scribunto, not wikitext.

Run `python sample/make_sample.py [OUT_DIR]` (default: this folder, `sample/`). A development tool beside
the sample it makes, not part of the installed packages; it imports nothing of ours.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import re
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

WIKI = "enwiki"
RUN_DATE = "20260301"
PENDING_RUN_DATE = "20260320"
PAGES_PER_STREAM = 10  # real dumps put 100 pages in a stream; 10 gives the sample several streams
SPLIT_AT = 2000  # last page id of the first split file (real runs split at fixed page-id boundaries)

DEFAULT_OUT_DIR = Path(__file__).resolve().parent
SRC_DIR = DEFAULT_OUT_DIR / "src"

EXPORT_NS = "http://www.mediawiki.org/xml/export-0.11/"
NAMESPACES: tuple[tuple[int, str], ...] = (
    (-2, "Media"), (-1, "Special"), (0, ""), (1, "Talk"), (2, "User"), (3, "User talk"), (4, "Wikipedia"),
    (5, "Wikipedia talk"), (6, "File"), (7, "File talk"), (8, "MediaWiki"), (9, "MediaWiki talk"),
    (10, "Template"), (11, "Template talk"), (12, "Help"), (13, "Help talk"), (14, "Category"),
    (15, "Category talk"), (100, "Portal"), (101, "Portal talk"), (118, "Draft"), (119, "Draft talk"),
    (126, "MOS"), (127, "MOS talk"), (710, "TimedText"), (711, "TimedText talk"), (828, "Module"),
    (829, "Module talk"), (1728, "Event"), (1729, "Event talk"),
)  # fmt: skip

# Synthetic editors: made-up user names, and addresses from the documentation ranges (RFC 5737, 3849).
_USERS = (
    ("Alpenglow", 31847562), ("Bibliophile1812", 22871034), ("Cartographer Jo", 40211987),
    ("GeoEditor42", 18493320), ("HistoryBuff1900", 9902311), ("InfoboxTidyBot", 45012873),
    ("Mathsnerd", 12553901), ("QuantumLeapt", 38765400), ("Riverine", 27761118), ("Sourcerer", 35120045),
)  # fmt: skip
_IPS = ("192.0.2.17", "198.51.100.203", "203.0.113.54", "2001:db8:85a3::8a2e:370:7334")
_COMMENTS = (
    "", "/* History */ copyedit", "Fixed typo", "Updated population estimate",
    "Added [[Category:Capitals in Europe]]", "Rescuing 1 sources and tagging 0 as dead.) #IABot (v2.0.9.5",
    "Reverted edits by [[Special:Contributions/203.0.113.54|203.0.113.54]] ([[User talk:203.0.113.54|talk]])",
    "/* Geography */ ref & wording", "Short description: <40 characters",
)  # fmt: skip
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_LAST_EDIT = datetime(2026, 2, 27, 23, 59, 59, tzinfo=UTC)

_SHORTDESC_RE = re.compile(r"\{\{\s*[Ss]hort description\s*\|([^|}]*)")
_DEFAULTSORT_RE = re.compile(r"\{\{DEFAULTSORT:([^}]*)\}\}")
_IMAGE_RE = re.compile(
    r"^\|\s*(?:image|image_skyline|image_flag)\s*=\s*([^\n|{}]+?\.(?:jpe?g|png|svg|JPG))\s*$", re.M
)
_DOUBLE_UNDERSCORE = (
    ("__NOTOC__", "notoc"),
    ("__HIDDENCAT__", "hiddencat"),
    ("__EXPECTUNUSEDCATEGORY__", "expectunusedcategory"),
)


@dataclass(frozen=True)
class Entity:
    qid: str
    title: str
    label: str
    page_id: int | None
    in_kg: bool
    aliases: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class Page:
    page_id: int
    ns: int
    title: str
    text: str
    redirect: str | None = None  # target title without fragment, as in <redirect title="..." />
    redirect_ns: int = 0
    redirect_title: str | None = None  # rd_title (namespace prefix stripped)
    redirect_fragment: str = ""
    model: str = "wikitext"
    qid: str | None = None


# ----------------------------------------------------------------------------------------------- sources


def _tsv_rows(path: Path) -> Iterable[list[str]]:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            yield line.split("\t")


def read_entities(src: Path = SRC_DIR) -> list[Entity]:
    out = []
    for qid, title, label, page_id, in_kg, aliases, desc in _tsv_rows(src / "entities.tsv"):
        out.append(Entity(qid, title, label, int(page_id) if page_id else None, in_kg == "1",
                          tuple(a for a in aliases.split("|") if a), desc))  # fmt: skip
    return out


def read_relations(src: Path = SRC_DIR) -> list[tuple[str, str, tuple[str, ...]]]:
    return [
        (pid, label, tuple(a for a in aliases.split("|") if a))
        for pid, label, aliases in _tsv_rows(src / "relations.tsv")
    ]


def read_triples(src: Path = SRC_DIR) -> list[tuple[str, str, str]]:
    return [(row[0], row[1], row[2]) for row in _tsv_rows(src / "triples.tsv")]


def _namespace_of(title: str) -> tuple[int, str]:
    prefix, sep, rest = title.partition(":")
    if sep:
        for key, name in NAMESPACES:
            if name and name == prefix:
                return key, rest
    return 0, title


def _redirect_text(target: str, rcats: list[str], i: int) -> str:
    keyword = "#redirect" if i % 7 == 3 else "#REDIRECT"
    if not rcats:
        return f"{keyword} [[{target}]]"
    if i % 5 == 2:  # an older style: the rcat templates on their own line, no shell
        return f"{keyword} [[{target}]]\n" + "".join("{{" + r + "}}" for r in rcats)
    shell = "".join("{{" + r + "}}\n" for r in rcats)
    return f"{keyword} [[{target}]]\n\n{{{{Redirect category shell|\n{shell}}}}}"


def read_pages(src: Path = SRC_DIR) -> list[Page]:
    """Every page of the dump (articles, redirects, other namespaces), in page-id order."""
    pages: list[Page] = []
    for ent in read_entities(src):
        if ent.page_id is None:
            continue
        text = (src / "articles" / f"{ent.title}.wiki").read_text(encoding="utf-8").rstrip()
        pages.append(Page(ent.page_id, 0, ent.title, text, qid=ent.qid))
    for i, (page_id, ns, title, target, rcats) in enumerate(_tsv_rows(src / "redirects.tsv")):
        target_title, _, fragment = target.partition("#")
        target_ns, target_rest = _namespace_of(target_title)
        text = _redirect_text(target, [r for r in rcats.split("|") if r], i)
        pages.append(Page(int(page_id), int(ns), title, text, redirect=target_title, redirect_ns=target_ns,
                          redirect_title=target_rest, redirect_fragment=fragment))  # fmt: skip
    for page_id, ns, title, file, model in _tsv_rows(src / "pages.tsv"):
        text = (src / "pages" / file).read_text(encoding="utf-8").rstrip()
        pages.append(Page(int(page_id), int(ns), title, text, model=model))
    pages.sort(key=lambda p: p.page_id)
    ids = [p.page_id for p in pages]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate page ids in sample/src")
    return pages


# ------------------------------------------------------------------------------------------- XML export


def _escape_text(s: str) -> str:
    # MediaWiki's Xml::element: htmlspecialchars(ENT_NOQUOTES) for element content
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attr(s: str) -> str:
    # ... and htmlspecialchars(ENT_QUOTES) for attribute values
    return _escape_text(s).replace('"', "&quot;").replace("'", "&#039;")


def sha1_base36(text: str) -> str:
    """The revision sha1 of the XML dumps: SHA-1 of the UTF-8 text in base 36, 31 digits."""
    n = int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out.rjust(31, "0")


@dataclass(frozen=True)
class Revision:
    rev_id: int
    parent_id: int | None
    timestamp: str
    user: tuple[str, int] | None
    ip: str | None
    minor: bool
    comment: str


def revision_of(page: Page) -> Revision:
    """Deterministic synthetic revision metadata for a page."""
    h = hashlib.sha256(f"{page.page_id}|{page.title}".encode()).digest()
    rev_id = 1_270_000_000 + page.page_id * 9_973 + h[0]
    parent_id = None if h[1] < 26 else rev_id - 1 - int.from_bytes(h[2:5], "big") % 2_000_000
    span = int((_LAST_EDIT - _EPOCH).total_seconds())
    when = _EPOCH + timedelta(seconds=int.from_bytes(h[5:9], "big") % span)
    anonymous = h[9] < 24
    return Revision(
        rev_id=rev_id,
        parent_id=parent_id,
        timestamp=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        user=None if anonymous else _USERS[h[10] % len(_USERS)],
        ip=_IPS[h[10] % len(_IPS)] if anonymous else None,
        minor=h[11] < 64,
        comment=_COMMENTS[h[12] % len(_COMMENTS)],
    )


def page_xml(page: Page) -> str:
    """One `<page>` element, indented and ordered as in the real pages-articles dumps."""
    rev = revision_of(page)
    fmt = "text/x-wiki" if page.model == "wikitext" else "text/plain"
    sha1 = sha1_base36(page.text)
    lines = ["  <page>", f"    <title>{_escape_text(page.title)}</title>", f"    <ns>{page.ns}</ns>",
             f"    <id>{page.page_id}</id>"]  # fmt: skip
    if page.redirect is not None:
        lines.append(f'    <redirect title="{_escape_attr(page.redirect)}" />')
    lines += ["    <revision>", f"      <id>{rev.rev_id}</id>"]
    if rev.parent_id is not None:
        lines.append(f"      <parentid>{rev.parent_id}</parentid>")
    lines += [f"      <timestamp>{rev.timestamp}</timestamp>", "      <contributor>"]
    if rev.user is not None:
        lines += [
            f"        <username>{_escape_text(rev.user[0])}</username>",
            f"        <id>{rev.user[1]}</id>",
        ]
    else:
        lines.append(f"        <ip>{rev.ip}</ip>")
    lines.append("      </contributor>")
    if rev.minor:
        lines.append("      <minor />")
    if rev.comment:
        lines.append(f"      <comment>{_escape_text(rev.comment)}</comment>")
    lines += [
        f"      <origin>{rev.rev_id}</origin>",
        f"      <model>{page.model}</model>",
        f"      <format>{fmt}</format>",
        f'      <text bytes="{len(page.text.encode("utf-8"))}" sha1="{sha1}" xml:space="preserve">'
        f"{_escape_text(page.text)}</text>",
        f"      <sha1>{sha1}</sha1>",
        "    </revision>",
        "  </page>",
    ]
    return "\n".join(lines) + "\n"


def xml_header() -> str:
    ns_lines = "".join(
        f'      <namespace key="{key}" case="first-letter" />\n'
        if not name
        else f'      <namespace key="{key}" case="first-letter">{name}</namespace>\n'
        for key, name in NAMESPACES
    )
    return (
        f'<mediawiki xmlns="{EXPORT_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:schemaLocation="{EXPORT_NS} http://www.mediawiki.org/xml/export-0.11.xsd" version="0.11" '
        'xml:lang="en">\n'
        "  <siteinfo>\n"
        "    <sitename>Wikipedia</sitename>\n"
        f"    <dbname>{WIKI}</dbname>\n"
        "    <base>https://en.wikipedia.org/wiki/Main_Page</base>\n"
        "    <generator>MediaWiki 1.46.0-wmf.17</generator>\n"
        "    <case>first-letter</case>\n"
        "    <namespaces>\n"
        f"{ns_lines}"
        "    </namespaces>\n"
        "  </siteinfo>\n"
    )


XML_FOOTER = "</mediawiki>\n"


def _bz2(data: str) -> bytes:
    return bz2.compress(data.encode("utf-8"), 9)


def build_multistream(streams: list[tuple[bytes, list[Page]]]) -> tuple[bytes, bytes]:
    """A multistream file (header stream, the given page streams, footer stream) and its bz2 index."""
    out = io.BytesIO()
    out.write(_bz2(xml_header()))
    index_lines = []
    for blob, pages in streams:
        offset = out.tell()
        index_lines += [f"{offset}:{p.page_id}:{p.title}\n" for p in pages]
        out.write(blob)
    out.write(_bz2(XML_FOOTER))
    return out.getvalue(), _bz2("".join(index_lines))


def page_streams(pages: list[Page]) -> list[tuple[bytes, list[Page]]]:
    chunks = [pages[i : i + PAGES_PER_STREAM] for i in range(0, len(pages), PAGES_PER_STREAM)]
    return [(_bz2("".join(page_xml(p) for p in chunk)), chunk) for chunk in chunks]


# ----------------------------------------------------------------------------------------- SQL tables

_SQL_HEADER = """-- MySQL dump 10.19  Distrib 10.3.39-MariaDB, for debian-linux-gnu (x86_64)
--
-- Host: db1206.eqiad.wmnet    Database: {wiki}
-- ------------------------------------------------------
-- Server version	10.6.20-MariaDB-log

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS */;
/*!40101 SET @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION */;
/*!40101 SET NAMES utf8mb4 */;
/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;
/*!40103 SET TIME_ZONE='+00:00' */;
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;

--
-- Table structure for table `{table}`
--

DROP TABLE IF EXISTS `{table}`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8 */;
{create}
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `{table}`
--

/*!40000 ALTER TABLE `{table}` DISABLE KEYS */;
"""

_SQL_FOOTER = """/*!40000 ALTER TABLE `{table}` ENABLE KEYS */;
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;

/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;
/*!40101 SET CHARACTER_SET_RESULTS=@OLD_CHARACTER_SET_RESULTS */;
/*!40101 SET COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION */;
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;

-- Dump completed on {completed}
"""

REDIRECT_CREATE = """CREATE TABLE `redirect` (
  `rd_from` int(8) unsigned NOT NULL DEFAULT 0,
  `rd_namespace` int(11) NOT NULL DEFAULT 0,
  `rd_title` varbinary(255) NOT NULL DEFAULT '',
  `rd_interwiki` varbinary(32) DEFAULT NULL,
  `rd_fragment` varbinary(255) DEFAULT NULL,
  PRIMARY KEY (`rd_from`),
  KEY `rd_ns_title` (`rd_namespace`,`rd_title`,`rd_from`)
) ENGINE=InnoDB DEFAULT CHARSET=binary;"""

PAGE_PROPS_CREATE = """CREATE TABLE `page_props` (
  `pp_page` int(10) unsigned NOT NULL,
  `pp_propname` varbinary(60) NOT NULL,
  `pp_value` blob NOT NULL,
  `pp_sortkey` double DEFAULT NULL,
  PRIMARY KEY (`pp_page`,`pp_propname`),
  UNIQUE KEY `pp_propname_page` (`pp_propname`,`pp_page`),
  UNIQUE KEY `pp_propname_sortkey_page` (`pp_propname`,`pp_sortkey`,`pp_page`)
) ENGINE=InnoDB DEFAULT CHARSET=binary;"""

SITE_STATS_CREATE = """CREATE TABLE `site_stats` (
  `ss_row_id` int(10) unsigned NOT NULL,
  `ss_total_edits` bigint(20) unsigned DEFAULT NULL,
  `ss_good_articles` bigint(20) unsigned DEFAULT NULL,
  `ss_total_pages` bigint(20) unsigned DEFAULT NULL,
  `ss_users` bigint(20) unsigned DEFAULT NULL,
  `ss_active_users` bigint(20) unsigned DEFAULT NULL,
  `ss_images` bigint(20) unsigned DEFAULT NULL,
  PRIMARY KEY (`ss_row_id`)
) ENGINE=InnoDB DEFAULT CHARSET=binary;"""

_ROWS_PER_INSERT = 8  # real dumps put about 1 MB in each INSERT; a few rows here gives several lines


def sql_value(v: str | int | float | None) -> str:
    """A value as mysqldump writes it (strings with MySQL's backslash escapes)."""
    if v is None:
        return "NULL"
    if isinstance(v, int | float):
        return repr(v) if isinstance(v, float) and not v.is_integer() else str(int(v))
    escaped = (
        v.replace("\\", "\\\\").replace("\0", "\\0").replace("\n", "\\n").replace("\r", "\\r")
        .replace("\x1a", "\\Z").replace("'", "\\'").replace('"', '\\"')
    )  # fmt: skip
    return f"'{escaped}'"


def sql_dump(table: str, create: str, rows: list[tuple], completed: str) -> str:
    parts = [_SQL_HEADER.format(wiki=WIKI, table=table, create=create)]
    for i in range(0, len(rows), _ROWS_PER_INSERT):
        values = ",".join(
            "(" + ",".join(sql_value(v) for v in row) + ")" for row in rows[i : i + _ROWS_PER_INSERT]
        )
        parts.append(f"INSERT INTO `{table}` VALUES {values};\n")
    parts.append(_SQL_FOOTER.format(table=table, completed=completed))
    return "".join(parts)


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
        f.write(data)
    return buf.getvalue()


def redirect_rows(pages: list[Page]) -> list[tuple]:
    return [(p.page_id, p.redirect_ns, (p.redirect_title or "").replace(" ", "_"), "", p.redirect_fragment)
            for p in pages if p.redirect is not None]  # fmt: skip


def page_props_rows(pages: list[Page], claims: dict[str, int]) -> list[tuple]:
    """wikibase_item plus the other properties a reader must skip, in primary-key order."""
    rows: list[tuple] = []
    for p in pages:
        if p.redirect is not None:
            continue
        props: dict[str, tuple[str, float | None]] = {}
        if p.qid:
            props["wikibase_item"] = (p.qid, None)
            if claims.get(p.qid):
                props["wb-claims"] = (str(claims[p.qid]), float(claims[p.qid]))
        if m := _SHORTDESC_RE.search(p.text):
            props["wikibase-shortdesc"] = (m.group(1).strip(), None)
        if m := _DEFAULTSORT_RE.search(p.text):
            props["defaultsort"] = (m.group(1).strip(), None)
        if p.ns == 0 and (m := _IMAGE_RE.search(p.text)):
            props["page_image_free"] = (m.group(1).strip().replace(" ", "_"), None)
        for word, name in _DOUBLE_UNDERSCORE:
            if word in p.text:
                props[name] = ("", None)
        rows += [
            (p.page_id, name, value, key)
            for name, (value, key) in sorted(props.items(), key=lambda kv: kv[0].encode())
        ]
    return rows


# ------------------------------------------------------------------------------------------- Wikidata5M


def wikidata5m_files(entities: list[Entity], relations, triples) -> dict[str, str]:
    kg = [e for e in entities if e.in_kg]
    kg_ids = {e.qid for e in kg}
    pids = {pid for pid, _, _ in relations}
    for h, r, t in triples:
        if h not in kg_ids or t not in kg_ids or r not in pids:
            raise ValueError(f"triple {h} {r} {t} names an id missing from entities.tsv/relations.tsv")

    def names(*parts: Iterable[str]) -> list[str]:
        seen: list[str] = []
        for part in parts:
            for name in part:
                if name and name not in seen:
                    seen.append(name)
        return seen

    entity_lines = ["\t".join([e.qid, *names([e.label, e.title], e.aliases)]) for e in kg]
    text_lines = [f"{e.qid}\t{e.description}" for e in kg]
    relation_lines = ["\t".join([pid, *names([label], aliases)]) for pid, label, aliases in relations]
    train, valid, test = transductive_split(triples)

    def lines(rows: Iterable[str]) -> str:
        return "".join(f"{row}\n" for row in rows)

    return {
        "wikidata5m_entity.txt": lines(entity_lines),
        "wikidata5m_relation.txt": lines(relation_lines),
        "wikidata5m_text.txt": lines(text_lines),
        "wikidata5m_all_triplet.txt": lines("\t".join(t) for t in triples),
        "wikidata5m_transductive_train.txt": lines("\t".join(t) for t in train),
        "wikidata5m_transductive_valid.txt": lines("\t".join(t) for t in valid),
        "wikidata5m_transductive_test.txt": lines("\t".join(t) for t in test),
    }


def transductive_split(triples: list[tuple[str, str, str]]):
    """About 90/5/5 by a hash of each triple; every entity and relation of valid/test also occurs in train."""
    buckets: list[list[tuple[str, str, str]]] = [[], [], []]
    for t in triples:
        b = int(hashlib.sha1("\t".join(t).encode()).hexdigest(), 16) % 20
        buckets[1 if b == 0 else 2 if b == 1 else 0].append(t)
    train, held = buckets[0], buckets[1] + buckets[2]
    seen = {x for h, r, t in train for x in (h, r, t)}
    moved = {t for t in held if not {t[0], t[1], t[2]} <= seen}
    while moved:  # moving a triple into train can only add entities to `seen`
        train += [t for t in held if t in moved]
        held = [t for t in held if t not in moved]
        seen = {x for h, r, t in train for x in (h, r, t)}
        moved = {t for t in held if not {t[0], t[1], t[2]} <= seen}
    order = {t: i for i, t in enumerate(triples)}
    train.sort(key=order.__getitem__)
    held_set = set(held)
    return train, [t for t in buckets[1] if t in held_set], [t for t in buckets[2] if t in held_set]


# ------------------------------------------------------------------------------------------ the mirror


def _file_entry(name: str, blob: bytes, date: str) -> dict:
    return {"size": len(blob), "url": f"/{WIKI}/{date}/{name}", "md5": hashlib.md5(blob).hexdigest(),
            "sha1": hashlib.sha1(blob).hexdigest()}  # fmt: skip


def _namespaces_json() -> str:
    return json.dumps(
        {
            "batchcomplete": "",
            "query": {
                "namespaces": {
                    str(key): {
                        "id": key,
                        "case": "first-letter",
                        "name": name,
                        "subpages": key % 2 == 1 or key in (2, 4, 10, 828),
                        "canonical": name,
                        "content": key == 0,
                        "nonincludable": False,
                    }
                    for key, name in NAMESPACES
                }
            },
        },
        sort_keys=True,
        ensure_ascii=False,
    )


def mirror_files(pages: list[Page], claims: dict[str, int]) -> tuple[dict[str, bytes], dict]:
    """The files of the finished run and its dumpstatus jobs."""
    prefix = f"{WIKI}-{RUN_DATE}"
    part1 = [p for p in pages if p.page_id <= SPLIT_AT]
    part2 = [p for p in pages if p.page_id > SPLIT_AT]
    streams1, streams2 = page_streams(part1), page_streams(part2)
    last = pages[-1].page_id
    files: dict[str, bytes] = {}
    split_names = []
    for n, (streams, lo, hi) in enumerate(((streams1, 1, SPLIT_AT), (streams2, SPLIT_AT + 1, last)), start=1):
        data, index = build_multistream(streams)
        xml_name = f"{prefix}-pages-articles-multistream{n}.xml-p{lo}p{hi}.bz2"
        index_name = f"{prefix}-pages-articles-multistream-index{n}.txt-p{lo}p{hi}.bz2"
        files[xml_name], files[index_name] = data, index
        split_names += [xml_name, index_name]
    data, index = build_multistream(streams1 + streams2)
    recombined = [
        f"{prefix}-pages-articles-multistream.xml.bz2",
        f"{prefix}-pages-articles-multistream-index.txt.bz2",
    ]
    files[recombined[0]], files[recombined[1]] = data, index

    completed = "2026-03-01  2:14:33"
    files[f"{prefix}-redirect.sql.gz"] = _gzip(
        sql_dump("redirect", REDIRECT_CREATE, redirect_rows(pages), completed).encode("utf-8")
    )
    files[f"{prefix}-page_props.sql.gz"] = _gzip(
        sql_dump("page_props", PAGE_PROPS_CREATE, page_props_rows(pages, claims), completed).encode("utf-8")
    )
    articles = sum(1 for p in pages if p.ns == 0 and p.redirect is None)
    stats = [(1, 1_304_113_877, articles, len(pages), 49_812_455, 118_305, 0)]
    files[f"{prefix}-site_stats.sql.gz"] = _gzip(
        sql_dump("site_stats", SITE_STATS_CREATE, stats, completed).encode()
    )
    files[f"{prefix}-siteinfo-namespaces.json.gz"] = _gzip(_namespaces_json().encode("utf-8"))

    def job(names: list[str], updated: str) -> dict:
        return {"status": "done", "updated": updated,
                "files": {n: _file_entry(n, files[n], RUN_DATE) for n in sorted(names)}}  # fmt: skip

    jobs = {
        "namespaces": job([f"{prefix}-siteinfo-namespaces.json.gz"], "2026-03-01 08:01:12"),
        "sitestatstable": job([f"{prefix}-site_stats.sql.gz"], "2026-03-01 08:02:40"),
        "redirecttable": job([f"{prefix}-redirect.sql.gz"], "2026-03-01 08:31:55"),
        "pagepropstable": job([f"{prefix}-page_props.sql.gz"], "2026-03-01 09:12:07"),
        "articlesmultistreamdump": job(split_names, "2026-03-02 17:41:09"),
        "articlesmultistreamdumprecombine": job(recombined, "2026-03-02 19:03:48"),
        "metahistory7zdump": {"status": "waiting", "updated": "2026-03-01 08:00:03", "files": {}},
    }
    return files, jobs


def pending_dumpstatus(done_jobs: dict) -> dict:
    """The newer run: the jobs the sample needs are still in progress (files carry only their size)."""
    jobs = {}
    for name in (
        "articlesmultistreamdump",
        "articlesmultistreamdumprecombine",
        "redirecttable",
        "pagepropstable",
    ):
        files = {
            f.replace(RUN_DATE, PENDING_RUN_DATE): {"size": meta["size"] // 2}
            for f, meta in done_jobs[name]["files"].items()
        }
        jobs[name] = {"status": "in-progress", "updated": "2026-03-20 11:27:40", "files": files}
    jobs["namespaces"] = {"status": "waiting", "updated": "2026-03-20 08:00:02", "files": {}}
    return {"jobs": jobs, "version": "0.8"}


def _sums(files: dict[str, bytes], algo: str) -> bytes:
    return "".join(f"{hashlib.new(algo, files[n]).hexdigest()}  {n}\n" for n in sorted(files)).encode()


# ------------------------------------------------------------------------------------------ entry point


def claim_counts(triples: list[tuple[str, str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for h, _, _ in triples:
        counts[h] = counts.get(h, 0) + 1
    return counts


def build_outputs(src: Path = SRC_DIR) -> dict[str, bytes]:
    """Every output file, keyed by its path relative to the output folder."""
    entities, relations, triples = read_entities(src), read_relations(src), read_triples(src)
    pages = read_pages(src)
    files, jobs = mirror_files(pages, claim_counts(triples))
    run = f"mirror/{WIKI}/{RUN_DATE}"
    out = {f"{run}/{name}": blob for name, blob in files.items()}
    out[f"{run}/dumpstatus.json"] = json.dumps({"jobs": jobs, "version": "0.8"}, sort_keys=True).encode()
    out[f"{run}/{WIKI}-{RUN_DATE}-md5sums.txt"] = _sums(files, "md5")
    out[f"{run}/{WIKI}-{RUN_DATE}-sha1sums.txt"] = _sums(files, "sha1")
    pending = json.dumps(pending_dumpstatus(jobs), sort_keys=True).encode()
    out[f"mirror/{WIKI}/{PENDING_RUN_DATE}/dumpstatus.json"] = pending
    for name, text in wikidata5m_files(entities, relations, triples).items():
        out[f"wikidata5m/{name}"] = text.encode("utf-8")
    return out


def generate_sample(out_dir: Path, src: Path = SRC_DIR) -> None:
    """Write the sample mirror and KG under `out_dir`, replacing `out_dir/mirror` and `out_dir/wikidata5m`."""
    out_dir = Path(out_dir)
    outputs = build_outputs(src)
    for sub in ("mirror", "wikidata5m"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    for rel, blob in sorted(outputs.items()):
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0]) if args else DEFAULT_OUT_DIR
    generate_sample(out_dir)
    print(f"sample written to {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
