"""`trelm link`: pages -> `mentions`, row-aligned with `pages` (same part names, same row order).

Each page's own anchors are gold mentions (`source = "anchor"`: Wikipedia links an entity once per
article); the linker adds what it finds beyond them (`tagme`, the local TAGME of
`preprocessing.tagme`; `discourse`, later mentions of the article's own linked names,
`preprocessing.discourse`; `kg-alias`, a KG alias whose entity won, `preprocessing.aliases`; or
`tagme-api`, the official web service). Every mention is aligned to the
KG: linked page -> QID (from ingest's page_props) -> `kg_id`. A mention whose entity is not in the
KG (or when no KG is loaded) keeps its target title, page id and QID with `kg_id` null, counted.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from preprocessing import aliases, discourse, tagme
from preprocessing.anchors import build_dictionary, dictionary_provenance, load_dictionary
from preprocessing.config import LinkConfig, RemoteTagmeConfig, TagmeConfig
from preprocessing.parallel import close_before_fork, process_pool
from preprocessing.tagme_remote import RemoteTagme, RemoteTagmeAuthError, RemoteTagmeError
from storage.code import module_code_version
from storage.duck import dataset_files, scratch
from storage.errors import RetryableError
from storage.schemas import (
    ANCHORS,
    KG_ALIAS_ENTITIES,
    KG_ALIASES,
    KG_ENTITIES,
    LINK_TARGETS,
    MENTION,
    MENTIONS,
    PAGES,
    REDIRECTS,
)
from storage.shards import (
    IncompleteDatasetError,
    PartInfo,
    Provenance,
    ShardWriter,
    is_complete,
    part_index,
    part_paths,
    read_manifest,
    read_part_info,
    require_intact,
    stable_hash,
)

REMOTE_ERRORS = "pages_remote_error"  # pages the web API gave no answer for, after its retries
_RAW_MENTION = pa.schema(
    [
        ("row", pa.int64()),
        ("entity_id", pa.int32()),
        ("start", pa.int32()),
        ("end", pa.int32()),
        ("surface", pa.string()),
        ("target", pa.string()),
        ("target_page_id", pa.int64()),
        ("qid", pa.string()),
        ("rho", pa.float32()),
        ("link_prob", pa.float32()),
        ("source", pa.string()),
    ]
)


def link_provenance(cfg: LinkConfig, run_dir: Path) -> Provenance:
    """Linker settings, the pages, the dictionary and the KG the mentions were made from."""
    inputs = [("pages", read_manifest(run_dir, PAGES)["fingerprint"])]
    if cfg.linker == "local":
        inputs.append(("anchors", dictionary_provenance(cfg.tagme, run_dir).fingerprint))
    inputs.append(("kg_entities", _kg_fingerprint(run_dir)))  # with the anchors, all kg_aliases is made of
    remote = cfg.remote.model_dump(include={"api_url", "lang", "min_rho", "max_chars"})
    config = {"linker": cfg.linker, "tagme": cfg.tagme.model_dump(), "remote": remote}
    return Provenance(stable_hash(config), tuple(inputs), module_code_version(__name__))


def alias_provenance(cfg: LinkConfig, run_dir: Path, pairs: list[tuple[str, str]] | None = None):
    """What the keyed KG aliases are made from: the dictionary (its entity ids), the pages (titles and
    QIDs), the KG's entities, or instead of them the (alias, target title) `pairs` of a stand-in KG."""
    config = {"tagme": cfg.tagme.model_dump(include={"max_anchor_tokens"})}
    if pairs is not None:
        config["pairs"] = stable_hash(sorted(pairs))
    inputs = (
        ("anchors", dictionary_provenance(cfg.tagme, run_dir).fingerprint),
        ("pages", read_manifest(run_dir, PAGES)["fingerprint"]),
        ("kg_entities", "none" if pairs is not None else _kg_fingerprint(run_dir)),
    )
    return Provenance(stable_hash(config), inputs, module_code_version(__name__))


def _kg_fingerprint(run_dir: Path) -> str:
    return read_manifest(run_dir, KG_ENTITIES)["fingerprint"] if is_complete(run_dir, KG_ENTITIES) else "none"


def build_kg_aliases(cfg: LinkConfig, run_dir: Path, pairs: list[tuple[str, str]] | None = None) -> dict:
    """Key the KG's aliases of the entities that have a page in the run (or the stand-in `pairs`) once
    for every link worker: `kg_aliases` and `kg_alias_entities` (`preprocessing.aliases`), for the
    dictionary `build_dictionary` made with the same settings."""
    provenance = alias_provenance(cfg, run_dir, pairs)
    if all(is_complete(run_dir, d, provenance.fingerprint) for d in (KG_ALIAS_ENTITIES, KG_ALIASES)):
        return read_manifest(run_dir, KG_ALIASES)
    # not is_complete(..., fingerprint): that takes a damaged dataset back, which is build_dictionary's
    targets = read_manifest(run_dir, LINK_TARGETS) if is_complete(run_dir, LINK_TARGETS) else {}
    if targets.get("fingerprint") != dict(provenance.inputs)["anchors"]:
        raise IncompleteDatasetError(
            f"the anchor dictionary in {run_dir} is missing or was built with other settings than "
            "the KG aliases are to be keyed for",
            fix="run `trelm link`: it builds the dictionary, then keys the aliases",
        )
    n_targets = targets["rows"]
    rows = _pair_rows(run_dir, cfg, pairs) if pairs is not None else _kg_alias_rows(run_dir, cfg)
    manifest = aliases.write(run_dir, rows, n_targets, cfg.tagme, provenance, cfg.duckdb_memory_limit)
    tagme.anchor_key.cache_clear()  # else the forked workers inherit 1M cached keys they never look up
    return manifest


def pages_parts(run_dir: Path) -> list[Path]:
    return part_paths(run_dir, PAGES)


def prepare(cfg: LinkConfig, run_dir: Path, progress: bool = True) -> Provenance:
    """Build the dictionary (and key the KG aliases) if the local linker needs them, mark `mentions`
    incomplete; the provenance. Damaged pages or redirects fail here, naming the parts, rather than in
    a worker."""
    for dataset in (PAGES, REDIRECTS):
        require_intact(run_dir, dataset, "ingest")
    if cfg.linker == "local":
        build_dictionary(cfg.tagme, run_dir, cfg.workers, cfg.duckdb_memory_limit, progress)
        if cfg.tagme.kg_aliases:
            build_kg_aliases(cfg, run_dir)
    provenance = link_provenance(cfg, run_dir)
    if not is_complete(run_dir, MENTIONS, provenance.fingerprint):
        ShardWriter(run_dir, MENTIONS, provenance).open()
    return provenance


def link_part(cfg: LinkConfig, run_dir: Path, pages_part: Path, provenance: Provenance) -> PartInfo:
    """Link one pages part into the mentions part of the same name (skipped when already done)."""
    writer = ShardWriter(run_dir, MENTIONS, provenance)
    index = part_index(pages_part)
    source_fp = read_part_info(pages_part).fingerprint
    done = writer.done_part(index, source_fp)
    if done is not None and not done.stats.get(REMOTE_ERRORS):  # a failed page is no result: retry it
        return done
    stats: Counter = Counter()
    pages = pq.read_table(pages_part, columns=["page_id", "text", "links"])
    sentences, raw = _mentions_of(cfg, run_dir, pages, stats)
    table = _aligned(run_dir, pages.column("page_id"), sentences, raw, stats, cfg.duckdb_memory_limit)
    errors = stats.pop("_errors", [])
    return writer.write_part(index, [table], stats=stats, errors=errors, part_fingerprint=source_fp)


def _executor(cfg: LinkConfig):
    """Processes for local TAGME (CPU-bound Python); threads for the web API (waiting on the network,
    one client whose rate limit and token the threads share)."""
    if cfg.linker == "remote":
        return ThreadPoolExecutor(max_workers=cfg.workers)
    return process_pool(cfg.workers, ["preprocessing.link", *tagme.WORKER_IMPORTS])


def link(cfg: LinkConfig, run_dir: Path, progress: bool = True) -> dict:
    """The whole stage in this process and `workers` worker processes; returns the mentions manifest."""
    provenance = prepare(cfg, run_dir, progress)
    if is_complete(run_dir, MENTIONS, provenance.fingerprint):
        return read_manifest(run_dir, MENTIONS)
    parts = pages_parts(run_dir)
    with _executor(cfg) as pool:
        futures = [pool.submit(link_part, cfg, run_dir, p, provenance) for p in parts]
        done = [f.result() for f in tqdm(futures, desc="link", disable=not progress)]
    return finalize(cfg, run_dir, provenance, done)


_shared_pool: list = []  # one pool per process for link_part_in_pool, made on first use
_shared_pool_lock = threading.Lock()


def link_part_in_pool(cfg: LinkConfig, run_dir: Path, pages_part: Path, provenance: Provenance) -> PartInfo:
    """`link_part` in a shared pool of `workers` processes: what a thread-based task runner calls,
    since linking is CPU-bound Python that threads cannot run in parallel."""
    if cfg.linker == "remote":  # I/O-bound: the calling thread is as good as a process
        return link_part(cfg, run_dir, pages_part, provenance)
    with _shared_pool_lock:
        if not _shared_pool:
            _shared_pool.append(_executor(cfg))
    return _shared_pool[0].submit(link_part, cfg, run_dir, pages_part, provenance).result()


def shutdown_pool() -> None:
    with _shared_pool_lock:
        while _shared_pool:
            _shared_pool.pop().shutdown()


class RemoteLinkingError(RetryableError):
    """The remote linker failed on more pages than `link.max_error_fraction` allows."""


def check_errors(cfg: LinkConfig, parts: list[PartInfo]) -> None:
    """Fail (nothing sealed, nothing cached) when too many pages got no answer from the web API."""
    failed, pages = sum(p.stats.get(REMOTE_ERRORS, 0) for p in parts), sum(p.rows for p in parts)
    if failed <= cfg.max_error_fraction * pages:
        return
    first = next((e for p in parts for e in p.errors), "")
    raise RemoteLinkingError(
        f"the TAGME API failed on {failed} of {pages} pages (over link.max_error_fraction="
        f"{cfg.max_error_fraction:g}); first: {first}",
        fix="check the service and run the stage again (failed pages are retried), or accept the "
        "failures with --set link.max_error_fraction=F",
    )


def finalize(cfg: LinkConfig, run_dir: Path, provenance: Provenance, parts: list[PartInfo]) -> dict:
    check_errors(cfg, parts)
    return ShardWriter(run_dir, MENTIONS, provenance).finalize(
        sorted(parts, key=lambda p: p.name), extra={"link_config": cfg.model_dump(mode="json")}
    )


# ---------------------------------------------------------------- linking


def _raw(row, start, end, surface, *, target=None, page_id=None, qid=None, entity_id=None, rho, lp, source):
    """One mention before alignment, in `_RAW_MENTION` column order."""
    return (row, entity_id, start, end, surface, target, page_id, qid, rho, lp, source)


@lru_cache(maxsize=1)
def _local_model(run_dir: Path, fingerprint: str) -> tuple[tagme.Dictionary, tagme.Relatedness]:
    """Loaded once per worker process (the fingerprint key reloads it after a rebuild)."""
    return load_dictionary(run_dir)


def _mentions_of(cfg: LinkConfig, run_dir: Path, pages: pa.Table, stats: Counter):
    """Sentences per page, and the raw mention rows (row = page's row in the part)."""
    texts = pages.column("text").to_pylist()
    all_links = pages.column("links").to_pylist()
    if cfg.linker == "local":
        annotate = _local_annotator(cfg, run_dir, {ln["target"] for links in all_links for ln in links})
    else:
        annotate = _remote_annotator(cfg)
    sentences, raw = [], []
    for row, (doc, links) in enumerate(zip(tagme.nlp().pipe(texts, batch_size=32), all_links, strict=True)):
        tokens = tagme.token_arrays(doc)
        sentences.append([{"start": a, "end": b} for a, b in tagme.sentence_spans(doc, tokens[1], tokens[2])])
        raw += _gold_rows(row, doc.text, links, stats)
        raw += annotate(row, doc.text, tokens, links, stats)
    return sentences, raw


def _gold_rows(row: int, text: str, links: list[dict], stats: Counter) -> list[tuple]:
    stats["mentions_anchor"] += len(links)
    return [
        _raw(
            row,
            ln["start"],
            ln["end"],
            text[ln["start"] : ln["end"]],
            target=ln["target"],
            page_id=ln["target_page_id"],
            qid=ln["target_qid"],
            rho=1.0,
            lp=1.0,
            source="anchor",
        )
        for ln in links
    ]


def _local_annotator(cfg: LinkConfig, run_dir: Path, gold_targets: set[str]):
    """Per page: TAGME, discourse and KG-alias mentions as raw rows."""
    dictionary, relatedness, extra = _model(cfg, run_dir)
    entity_of = _entity_ids(run_dir, cfg, gold_targets)
    n_targets = len(relatedness.sizes) - len(extra)

    def raw_row(row: int, text: str, a: tagme.Annotation) -> tuple:
        common = dict(rho=a.rho, lp=a.link_prob, source=a.source)
        if a.entity_id < n_targets:
            return _raw(row, a.start, a.end, text[a.start : a.end], entity_id=a.entity_id, **common)
        target, page_id, qid = extra[a.entity_id - n_targets]  # a KG entity no link targets
        return _raw(
            row, a.start, a.end, text[a.start : a.end], target=target, page_id=page_id, qid=qid, **common
        )

    def annotate(row: int, text: str, tokens: tuple, links: list[dict], stats: Counter) -> list[tuple]:
        gold = [(ln["start"], ln["end"], entity_of.get(ln["target"])) for ln in links]
        forms = discourse.forms(text, links, entity_of, cfg.tagme) if cfg.tagme.discourse else None
        found = tagme.annotate(
            *tokens, gold, dictionary, relatedness, cfg.tagme, stats, text=text, forms=forms
        )
        for a in found:
            stats[f"mentions_{a.source.replace('-', '_')}"] += 1
        return [raw_row(row, text, a) for a in found]

    return annotate


def _model(cfg: LinkConfig, run_dir: Path):
    """(dictionary, relatedness, extra entities) of the local linker, KG aliases added when on."""
    fingerprint = read_manifest(run_dir, ANCHORS)["fingerprint"]
    if not cfg.tagme.kg_aliases:
        return (*_local_model(run_dir, fingerprint), [])
    return _kg_model(run_dir, fingerprint, _keyed_aliases(run_dir, fingerprint), cfg.model_dump_json())


def _keyed_aliases(run_dir: Path, anchors_fingerprint: str) -> str:
    """The fingerprint of the run's keyed KG aliases, checked to be keyed for its dictionary."""
    fix = "run `trelm link`: its prepare keys the KG aliases for the run's dictionary"
    if not all(is_complete(run_dir, d) for d in (KG_ALIASES, KG_ALIAS_ENTITIES)):
        raise IncompleteDatasetError(f"the keyed KG aliases are not complete in {run_dir}", fix=fix)
    keyed, entities = read_manifest(run_dir, KG_ALIASES), read_manifest(run_dir, KG_ALIAS_ENTITIES)
    made_for = keyed.get("inputs", {}).get("anchors")
    if made_for != anchors_fingerprint or entities["fingerprint"] != keyed["fingerprint"]:
        message = f"the KG aliases in {run_dir} were keyed for another dictionary"
        raise IncompleteDatasetError(message, fix=fix)
    return keyed["fingerprint"]


@lru_cache(maxsize=1)
def _kg_model(run_dir: Path, fingerprint: str, aliases_fingerprint: str, cfg_json: str):
    """Loaded once per worker process (the fingerprints key reload it after a rebuild)."""
    return kg_aliased_model(run_dir, LinkConfig.model_validate_json(cfg_json).tagme)


def kg_aliased_model(run_dir: Path, cfg: TagmeConfig):
    """(dictionary, relatedness, extra entities) with the run's keyed KG aliases. The plain dictionary
    is loaded for this alone and extended in place, so that a worker holds one dictionary, not the
    plain one (`_local_model`'s) beside its extended copy."""
    return aliases.load(run_dir, *load_dictionary(run_dir), cfg)


def _kg_alias_rows(run_dir: Path, cfg: LinkConfig) -> Iterator[tuple]:
    """KG aliases (alias, target, entity_id or None, page_id, qid) of the entities that have a page in
    the run, streamed in batches (Wikidata5M has about 11M: as one list of Python rows they would be a
    few GiB), from alignment tables of its own that are closed once the rows are read."""
    if not is_complete(run_dir, KG_ENTITIES):
        return
    entities = dataset_files(run_dir, KG_ENTITIES)
    with _alignment_tables(run_dir, cfg.duckdb_memory_limit) as conn:
        result = conn.execute(
            f"""SELECT DISTINCT k.alias, p.title, e.entity_id, p.page_id, k.qid
            FROM (SELECT qid, unnest(aliases) AS alias FROM read_parquet({entities})) k
            JOIN titles p USING (qid) LEFT JOIN entity e ON e.target = p.title ORDER BY ALL"""
        )
        while batch := result.fetchmany(100_000):
            yield from batch


def _pair_rows(run_dir: Path, cfg: LinkConfig, pairs: list[tuple[str, str]]) -> list[tuple]:
    """Alias rows of (alias, target title) pairs, aligned like the KG's."""
    alias, target = zip(*pairs, strict=True) if pairs else ((), ())
    with _alignment_tables(run_dir, cfg.duckdb_memory_limit) as conn:
        conn.register(
            "pairs",
            pa.table({"alias": pa.array(alias, pa.string()), "target": pa.array(target, pa.string())}),
        )
        return conn.sql(
            """SELECT a.alias, a.target, e.entity_id, p.page_id, p.qid FROM pairs a
            LEFT JOIN titles p ON p.title = a.target LEFT JOIN entity e ON e.target = a.target ORDER BY ALL"""
        ).fetchall()


def _entity_ids(run_dir: Path, cfg: LinkConfig, targets: set[str]) -> dict[str, int]:
    """Entity ids of the gold link targets of one part (they vote as certain context)."""
    conn = _alignment_db(run_dir, cfg.duckdb_memory_limit, _input_stamp(run_dir)).cursor()
    conn.register("wanted", pa.table({"target": pa.array(sorted(targets), pa.string())}))
    rows = conn.sql("SELECT e.target, e.entity_id FROM entity e JOIN wanted USING (target)").fetchall()
    conn.close()
    return dict(rows)


@lru_cache(maxsize=1)
def _remote_client(cfg_json: str) -> RemoteTagme:
    """One client per process and config: its rate limit is shared by the process's threads."""
    return RemoteTagme(RemoteTagmeConfig.model_validate_json(cfg_json))


def _remote_annotator(cfg: LinkConfig):
    client = _remote_client(cfg.remote.model_dump_json())

    def annotate(row: int, text: str, tokens: tuple, links: list[dict], stats: Counter) -> list[tuple]:
        try:
            found = client.annotate(text)
        except RemoteTagmeAuthError:
            raise  # a bad token fails every page: stop the run
        except RemoteTagmeError as exc:  # recorded, the part goes on
            stats[REMOTE_ERRORS] += 1
            stats.setdefault("_errors", []).append(str(exc))
            return []
        gold = [(ln["start"], ln["end"]) for ln in links]
        kept = [a for a in found if not any(a.start < e and s < a.end for s, e in gold)]
        stats["mentions_tagme_api"] += len(kept)
        return [
            _raw(
                row,
                a.start,
                a.end,
                a.spot,
                target=a.title,
                rho=a.rho,
                lp=_finite(a.link_prob),
                source="tagme-api",
            )
            for a in kept
        ]

    return annotate


def _finite(value: float) -> float:
    return 0.0 if math.isnan(value) else value


# ---------------------------------------------------------------- alignment


_alignment: dict[tuple, object] = {}  # per process: the latest run's alignment tables (one connection)
_alignment_lock = threading.Lock()  # the remote linker's threads share them


def _alignment_db(run_dir: Path, memory_limit: str, _stamp: tuple = ()):
    """Per process: the run's titles, redirects, link targets (entity ids) and KG ids, as DuckDB tables,
    built on first use and kept; `_stamp` (the input fingerprints) makes a rebuilt input reload them."""
    key = (run_dir, memory_limit, _stamp)
    with _alignment_lock:
        if key not in _alignment:
            _close_alignment()
            _alignment[key] = _alignment_tables(run_dir, memory_limit)
        return _alignment[key]


def _close_alignment() -> None:
    for conn in _alignment.values():
        conn.close()
    _alignment.clear()


# a forked link worker would inherit the connection of a part linked here (the remote linker's threads)
close_before_fork(_close_alignment)


def _alignment_tables(run_dir: Path, memory_limit: str):
    conn = scratch(memory_limit)
    conn.execute(
        "CREATE TABLE titles AS SELECT page_id, title, qid "
        f"FROM read_parquet({dataset_files(run_dir, PAGES)})"
    )
    # the web API names pages by title, in its own snapshot: follow our redirects to ours
    conn.execute(
        "CREATE TABLE redirect AS SELECT title, any_value(target) AS target "
        f"FROM read_parquet({dataset_files(run_dir, REDIRECTS)}) GROUP BY title"
    )
    conn.execute("CREATE TABLE entity (entity_id INTEGER, target VARCHAR, page_id BIGINT)")
    if is_complete(run_dir, LINK_TARGETS):
        files = dataset_files(run_dir, LINK_TARGETS)
        conn.execute(f"INSERT INTO entity SELECT entity_id, target, page_id FROM read_parquet({files})")
    conn.execute("CREATE TABLE kg (qid VARCHAR, kg_id INTEGER)")
    if is_complete(run_dir, KG_ENTITIES):
        files = dataset_files(run_dir, KG_ENTITIES)
        conn.execute(f"INSERT INTO kg SELECT qid, min(kg_id) FROM read_parquet({files}) GROUP BY qid")
    return conn


_ALIGN_SQL = """
WITH m AS (
    SELECT raw.* REPLACE (coalesce(raw.target, e.target) AS target,
                          coalesce(raw.target_page_id, e.page_id) AS target_page_id)
    FROM raw LEFT JOIN entity e ON e.entity_id = raw.entity_id),
t AS (  -- a title without a page id (web API) goes through our redirects to our page
    SELECT m.*, coalesce(r.target, m.target) AS by_title FROM m
    LEFT JOIN redirect r ON m.target_page_id IS NULL AND r.title = m.target)
SELECT t.row, t.start, t."end", t.surface, coalesce(p.title, n.title, t.target) AS target,
       coalesce(t.target_page_id, n.page_id) AS target_page_id, coalesce(t.qid, p.qid, n.qid) AS qid,
       k.kg_id, t.rho, t.link_prob, t.source
FROM t LEFT JOIN titles p ON p.page_id = t.target_page_id
LEFT JOIN titles n ON t.target_page_id IS NULL AND n.title = t.by_title
LEFT JOIN kg k ON k.qid = coalesce(t.qid, p.qid, n.qid)
ORDER BY t.row, t.start, t.source"""


def _aligned(
    run_dir: Path, page_ids, sentences, raw: list[tuple], stats: Counter, memory_limit: str
) -> pa.Table:
    """Fill target titles, page ids, QIDs and kg_ids; one row per page, mentions ordered by offset."""
    conn = _alignment_db(run_dir, memory_limit, _input_stamp(run_dir)).cursor()
    columns = list(zip(*raw, strict=True)) if raw else [[] for _ in _RAW_MENTION]
    arrays = [pa.array(c, f.type) for c, f in zip(columns, _RAW_MENTION, strict=True)]
    conn.register("raw", pa.table(arrays, schema=_RAW_MENTION))
    rows = conn.sql(_ALIGN_SQL).to_arrow_table()
    conn.close()
    _count_alignment(rows, stats)
    return _nest(page_ids, sentences, rows)


def _input_stamp(run_dir: Path) -> tuple:
    return tuple(
        read_manifest(run_dir, d)["fingerprint"] if is_complete(run_dir, d) else None
        for d in (PAGES, LINK_TARGETS, KG_ENTITIES)
    )


def _count_alignment(rows: pa.Table, stats: Counter) -> None:
    stats["mentions"] += rows.num_rows
    stats["mentions_without_page"] += rows.column("target_page_id").null_count
    stats["mentions_without_qid"] += rows.column("qid").null_count
    stats["mentions_without_kg"] += rows.column("kg_id").null_count


def _nest(page_ids: pa.ChunkedArray, sentences: list, rows: pa.Table) -> pa.Table:
    """Flat mention rows (sorted by page row) -> one list per page, in page order."""
    page_rows = rows.column("row").to_numpy()
    offsets = np.searchsorted(page_rows, np.arange(len(page_ids) + 1)).astype(np.int32)
    fields = [rows.column(f.name).combine_chunks().cast(f.type) for f in MENTION]
    mentions = pa.ListArray.from_arrays(offsets, pa.StructArray.from_arrays(fields, fields=list(MENTION)))
    sentences_type = MENTIONS.schema.field("sentences").type
    return pa.table(
        {
            "page_id": page_ids.combine_chunks(),
            "sentences": pa.array(sentences, sentences_type),
            "mentions": mentions,
        },
        schema=MENTIONS.schema,
    )
