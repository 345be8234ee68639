"""Phase 2 of ingest: resolve staged link targets through redirects to page ids and QIDs.

The title map (every article title, every redirect) lives in DuckDB tables, which spill to disk
past `duckdb_memory_limit`; each part is then joined against it on its own, so memory per step is
one part plus DuckDB's bounded hash tables, whatever the size of the dump.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from preprocessing.sqldump import iter_wikibase_items
from storage import layout
from storage.duck import sql_files
from storage.schemas import LINK, PAGES, REDIRECTS, DatasetSchema
from storage.shards import PartInfo, Provenance, ShardWriter, dataset_dir, part_index, stable_hash

_PROPS_BATCH = 100_000
STAGED_PAGES = DatasetSchema(
    f"{layout.STAGING}/ingest_pages", PAGES.version, PAGES.schema, "pages before link resolution"
)


def _load_qids(conn, page_props: Path | None) -> None:
    """page_id -> QID from page_props, streamed into DuckDB in batches."""
    conn.execute("CREATE TABLE qids (page_id BIGINT, qid VARCHAR)")
    if page_props is None:
        return
    rows = iter_wikibase_items(page_props)
    while batch := list(islice(rows, _PROPS_BATCH)):
        chunk = pa.table({"page_id": [r[0] for r in batch], "qid": [r[1] for r in batch]})
        conn.register("qid_chunk", chunk)
        conn.execute("INSERT INTO qids SELECT * FROM qid_chunk")
        conn.unregister("qid_chunk")


def build_title_map(conn, staged: list[Path], redirects: list[Path], page_props):
    """Tables `article(title, page_id, qid)` and `alias(title, target)` (redirects followed two hops)."""
    _load_qids(conn, page_props)
    conn.execute(
        f"""CREATE TABLE article AS
        SELECT s.title, min(s.page_id) AS page_id, any_value(coalesce(q.qid, s.qid)) AS qid
        FROM read_parquet({sql_files(staged)}) s LEFT JOIN qids q USING (page_id)
        GROUP BY s.title"""
    )
    conn.execute(
        f"CREATE TABLE redirect AS SELECT title, any_value(target) AS target "
        f"FROM read_parquet({sql_files(redirects)}) GROUP BY title"
    )
    # a double redirect (A -> B -> C) is followed to C; longer chains are rare and left at the 2nd hop
    conn.execute(
        """CREATE TABLE alias AS
        SELECT r.title, coalesce(r2.target, r.target) AS target
        FROM redirect r LEFT JOIN redirect r2 ON r2.title = r.target"""
    )


def _resolved_links(conn, links: pa.ChunkedArray, stats: Counter) -> pa.Array:
    """The part's `links` column with targets redirect-resolved and page ids and QIDs filled in."""
    links = links.combine_chunks()
    flat = pc.list_flatten(links)
    conn.register(
        "lk", pa.table({"i": pa.array(range(len(flat)), pa.int64()), "target": flat.field("target")})
    )
    res = conn.sql(
        """SELECT coalesce(a.target, lk.target) AS target, ar.page_id, ar.qid, a.target IS NOT NULL AS via
        FROM lk LEFT JOIN alias a ON a.title = lk.target
        LEFT JOIN article ar ON ar.title = coalesce(a.target, lk.target)
        ORDER BY lk.i"""
    ).to_arrow_table()
    conn.unregister("lk")
    stats["links_resolved"] += len(res) - res["page_id"].null_count
    stats["links_unresolved"] += res["page_id"].null_count
    stats["links_via_redirect"] += pc.sum(res["via"]).as_py() or 0
    columns = [flat.field("start"), flat.field("end"), res["target"], res["page_id"], res["qid"]]
    structs = pa.StructArray.from_arrays(
        [_as_array(c, f.type) for c, f in zip(columns, LINK, strict=True)], fields=list(LINK)
    )
    return pa.ListArray.from_arrays(links.offsets, structs)


def _as_array(column: pa.Array | pa.ChunkedArray, type_: pa.DataType) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.cast(type_)


def _page_qids(conn, page_ids: pa.ChunkedArray) -> pa.ChunkedArray:
    conn.register("pg", pa.table({"i": pa.array(range(len(page_ids)), pa.int64()), "page_id": page_ids}))
    res = conn.sql(
        "SELECT any_value(q.qid) AS qid FROM pg LEFT JOIN qids q USING (page_id) GROUP BY pg.i ORDER BY pg.i"
    ).to_arrow_table()
    conn.unregister("pg")
    return res["qid"]


def _resolve_part(conn, staged_path: Path) -> tuple[pa.Table, Counter]:
    stats: Counter = Counter()
    # not pq.read_table: it imports pyarrow.dataset on its first call (~0.15 s of CPU) for one file
    with pq.ParquetFile(staged_path) as f:
        table = f.read()
    links = _resolved_links(conn, table["links"], stats)
    # page_props decides; an HTML dump's rows carry their QID already (`main_entity`)
    qids = pc.coalesce(_page_qids(conn, table["page_id"]).cast(pa.string()), table["qid"].cast(pa.string()))
    stats["pages_with_qid"] += len(qids) - qids.null_count
    table = table.set_column(table.schema.get_field_index("links"), PAGES.schema.field("links"), links)
    table = table.set_column(table.schema.get_field_index("qid"), PAGES.schema.field("qid"), qids)
    return table, stats


def resolve_links(
    cfg, inputs, run_dir: Path, provenance: Provenance, staged: list[PartInfo], progress: bool
) -> dict:
    """Write the final `pages` parts from the staged ones; returns the `pages` manifest."""
    # every final part depends on the whole title map, so on every staged part and on page_props
    map_hash = stable_hash([[p.name, p.fingerprint] for p in staged])
    writer = ShardWriter(run_dir, PAGES, provenance)
    todo = [p for p in staged if writer.done_part(part_index(p.name), map_hash) is None]
    if todo:
        conn = duckdb.connect(config={"memory_limit": cfg.duckdb_memory_limit})
        build_title_map(
            conn,
            [dataset_dir(run_dir, STAGED_PAGES) / p.name for p in staged],
            [dataset_dir(run_dir, REDIRECTS) / p.name for p in staged],
            inputs.page_props,
        )
        # parts in threads, a cursor each: DuckDB and Parquet I/O release the GIL
        with ThreadPoolExecutor(max(1, min(cfg.workers, len(todo)))) as pool:
            jobs = pool.map(lambda p: _write_resolved(conn.cursor(), writer, run_dir, p, map_hash), todo)
            list(tqdm(jobs, total=len(todo), desc="resolve", disable=not progress))
        conn.close()
    parts = [writer.done_part(part_index(p.name), map_hash) for p in staged]
    extra = {"ingest_config": cfg.model_dump(mode="json")}
    return writer.finalize(parts, extra=extra)


def _write_resolved(cursor, writer: ShardWriter, run_dir: Path, staged: PartInfo, map_hash: str) -> PartInfo:
    table, stats = _resolve_part(cursor, dataset_dir(run_dir, STAGED_PAGES) / staged.name)
    info = writer.write_part(
        part_index(staged.name),
        [table],
        stats=stats + Counter(staged.stats),
        errors=staged.errors,
        part_fingerprint=map_hash,
    )
    cursor.close()
    return info
