"""Wikidata5M -> `kg_entities`, `kg_relations`, `kg_triples`: dense ids, names, descriptions, degree.

Inputs (REFERENCE.md): `wikidata5m_entity.txt` and `wikidata5m_relation.txt` (`ID\\talias1\\talias2...`),
`wikidata5m_text.txt` (`QID\\tdescription`) and one triple file (`Qh\\tPr\\tQt`), each plain or `.gz`.
kg_id and rel_id number the alias files' valid lines in file order; triples keep file order.

Why DuckDB and not a streaming Python pass (measured with benchmarks/kg_load.py on 2 cores, at the
full 4.6M entities and 20.6M triples): DuckDB reads, checks, de-duplicates and joins everything and
writes the three datasets in 22-32 s at 3.1 GiB peak RSS; a Python pass that only splits the triple
lines and looks their ids up in dicts takes 37-42 s by itself, before any Parquet is written. Every
DuckDB table lives in its buffer pool, which spills to a temp folder under the run past
`duckdb_memory_limit`: with descriptions as long as the real file's Wikipedia abstracts (a 2.7 GB
text file) the load takes 70 s and peaks at 4.2 GiB, where Python would hold all the text in memory.

Every line is read as one column (the line break is also the field delimiter, quoting off), so no
byte inside a line can split it or make it fail; lines DuckDB cannot read at all (invalid UTF-8, or
over its line-size limit) land in its rejects table and are counted from there. File order: a
table created from one `read_csv` keeps the file's row order while `preserve_insertion_order` is
on (verified at full scale by `benchmarks/kg_load.py --verify`), so its `rowid` is the line ordinal,
and every later step orders by it explicitly instead of trusting the order of a join.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from preprocessing.config import KGConfig
from preprocessing.dumpfiles import file_hash
from storage import layout
from storage.code import module_code_version
from storage.duck import sql_files
from storage.errors import InputError
from storage.schemas import KG_ENTITIES, KG_RELATIONS, KG_TRIPLES, DatasetSchema
from storage.shards import (
    PartInfo,
    Provenance,
    ShardWriter,
    empty_part,
    is_complete,
    read_manifest,
    stable_hash,
    write_parts,
)

log = logging.getLogger(__name__)

KEPLER_PAGE = "https://deepgraphlearning.github.io/project/wikidata5m"
DATASETS: tuple[DatasetSchema, ...] = (KG_ENTITIES, KG_RELATIONS, KG_TRIPLES)
_BATCH_ROWS = 262_144  # rows per DuckDB -> Arrow batch, and so per Parquet row group
# one VARCHAR column per line: the line break is the field delimiter too, quoting and escapes off
_READ_LINES = (
    "columns={'line': 'VARCHAR'}, delim='\\n', quote='', escape='', header=false, auto_detect=false, "
    "strict_mode=false, ignore_errors=true, store_rejects=true"
)


class KGFilesError(InputError, FileNotFoundError):
    """Wikidata5M files missing from the configured folder: the message says what to download."""




# ---------------------------------------------------------------- input files


def _file_names(cfg: KGConfig) -> dict[str, tuple[str, str]]:
    """Role -> (file name, the published archive that holds it)."""
    if cfg.triples == "all":
        triples = ("wikidata5m_all_triplet.txt", "wikidata5m_all_triplet.txt.gz")
    else:
        setting = cfg.triples.split("_")[0]
        triples = (f"wikidata5m_{cfg.triples}.txt", f"wikidata5m_{setting}.tar.gz")
    return {
        "entity": ("wikidata5m_entity.txt", "wikidata5m_alias.tar.gz"),
        "relation": ("wikidata5m_relation.txt", "wikidata5m_alias.tar.gz"),
        "text": ("wikidata5m_text.txt", "wikidata5m_text.txt.gz"),
        "triples": triples,
    }


def kg_files(cfg: KGConfig) -> dict[str, Path]:
    """The four input files (`entity`, `relation`, `text`, `triples`), each found plain or gzipped."""
    if cfg.path is None:
        raise KGFilesError("no Wikidata5M folder configured", fix="set kg.path to the folder of its files")
    folder = Path(cfg.path)
    found: dict[str, Path] = {}
    missing: dict[str, str] = {}
    for role, (name, archive) in _file_names(cfg).items():
        path = next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
        if path is None:
            missing[name] = archive
        else:
            found[role] = path
    if missing:
        archives = ", ".join(dict.fromkeys(missing.values()))
        raise KGFilesError(
            f"Wikidata5M folder {folder} lacks {', '.join(missing)} (plain or .gz)",
            fix=f"download {archives} from the KEPLER project page ({KEPLER_PAGE}) into {folder}; unpack "
            f"the .tar.gz archives, .txt.gz files can stay compressed. Or set kg.path to the folder that "
            f"holds the files.",
        )
    return found


def kg_provenance(cfg: KGConfig, files: dict[str, Path]) -> Provenance:
    # files are identified by size and mtime (or the sha1 a download recorded): hashing gigabytes
    # on every run would cost a minute; the memory limit does not change what is written
    config_hash = stable_hash({"triples": cfg.triples, "rows_per_part": cfg.rows_per_part})
    inputs = tuple((f"{role}:{p.name}", file_hash(p)) for role, p in sorted(files.items()))
    return Provenance(config_hash, inputs, module_code_version(__name__))


# ---------------------------------------------------------------- entry point


def load_kg(cfg: KGConfig, run_dir: Path, progress: bool = True) -> dict:
    """Write the three KG datasets; returns their manifests by dataset name.

    Returns at once when all three are complete with the same inputs, config and code. Otherwise
    all three are rebuilt: they come out of one pass over the same DuckDB tables.
    """
    run_dir = Path(run_dir)
    files = kg_files(cfg) if cfg.path is not None else {}
    provenance = kg_provenance(cfg, files)
    if all(is_complete(run_dir, d, provenance.fingerprint) for d in DATASETS):
        return {d.name: read_manifest(run_dir, d) for d in DATASETS}
    if not files:  # no KG: empty datasets, so readers and views see the same three tables
        writers = {d.name: ShardWriter(run_dir, d, provenance).open() for d in DATASETS}
        return {name: w.finalize([empty_part(w)], extra=_extra(cfg)) for name, w in writers.items()}
    spill = layout.staging_dir(run_dir, "kg")
    shutil.rmtree(spill, ignore_errors=True)  # a killed run's temp files
    spill.mkdir(parents=True)
    try:
        return _build(cfg, files, run_dir, provenance, spill, progress)
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def _build(cfg: KGConfig, files: dict[str, Path], run_dir: Path, provenance, spill: Path, progress):
    """Every file is read and checked before the old datasets are touched: a damaged or empty KG file
    fails here and the previous KG stays complete."""
    import duckdb  # here, so importing this module (e.g. for KGConfig) stays cheap

    settings = {
        "memory_limit": cfg.duckdb_memory_limit,
        "temp_directory": str(spill),
        "preserve_insertion_order": True,  # line ordinals are rowids: see the module docstring
    }
    steps = _Steps(progress, total=8)
    with duckdb.connect(config=settings) as conn:
        conn.execute("SET enable_progress_bar = false")  # ours is on stderr; DuckDB's prints on stdout
        relation_stats = steps.run("relations", _load_names, conn, "relation", files["relation"], "P")
        entity_stats = steps.run("entities", _load_names, conn, "entity", files["entity"], "Q")
        entity_stats.update(steps.run("descriptions", _load_descriptions, conn, files["text"]))
        triple_stats = steps.run("triples", _load_triples, conn, files["triples"])
        _require_rows(files, entity_stats, relation_stats, triple_stats)
        steps.run("degree", _count_degree, conn)
        writers = {d.name: ShardWriter(run_dir, d, provenance).open() for d in DATASETS}
        parts = {n: steps.run(f"write {n}", _write_dataset, conn, w, cfg) for n, w in writers.items()}
    steps.close()
    stats = {"kg_relations": relation_stats, "kg_entities": entity_stats, "kg_triples": triple_stats}
    return {name: writers[name].finalize(parts[name], stats[name], _extra(cfg)) for name in writers}


def _require_rows(files: dict[str, Path], entities: Counter, relations: Counter, triples: Counter) -> None:
    """A KG of no entities, relations or triples is a wrong or damaged file, not an empty KG."""
    for role, kept in (("entity", entities["entities"]), ("relation", relations["relations"])):
        if kept == 0:
            raise InputError(
                f"{files[role]}: no valid {role} line (id, tab, label) in it; the file is empty, binary "
                f"or not Wikidata5M's {role} file",
                fix="fetch the file again, or point kg.path at the folder of the real Wikidata5M files",
            )
    if triples["triples"] == 0:
        raise InputError(
            f"{files['triples']}: no triple of known entities and relations in it",
            fix="fetch the triples file again; it must match the entity and relation files",
        )


def _extra(cfg: KGConfig) -> dict:
    return {"kg_config": cfg.model_dump(mode="json")}


class _Steps:
    """A progress bar over the load's steps, and a log line with each step's time."""

    def __init__(self, progress: bool, total: int):
        self.bar = tqdm(total=total, desc="kg", unit="step", disable=not progress)

    def run(self, name: str, fn: Callable, *args):
        self.bar.set_postfix_str(name)
        started = time.perf_counter()
        result = fn(*args)
        log.info("kg %s: %.1f s", name, time.perf_counter() - started)
        self.bar.update()
        return result

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------- reading into DuckDB


def _read_lines(conn, table: str, path: Path, kind: str) -> Counter:
    """`table(line)` in file order (NULL for an empty line); counts the lines DuckDB rejected."""
    import duckdb

    try:
        conn.execute(
            f"CREATE TABLE {table} AS SELECT line FROM read_csv({sql_files(path)}, {_READ_LINES}, "
            f"rejects_table='{table}_rejects', rejects_scan='{table}_scan')"
        )
    except duckdb.IOException as exc:  # a cut or corrupt .gz: the file, not the run, is at fault
        raise InputError(f"{path}: cannot be read ({exc})", fix="fetch the file again") from exc
    rejected = conn.execute(
        f"SELECT lower(replace(error_type::VARCHAR, ' ', '_')), count(*) FROM {table}_rejects GROUP BY ALL"
    ).fetchall()
    conn.execute(f"DROP TABLE {table}_rejects; DROP TABLE {table}_scan")
    stats = Counter({f"{kind}_lines_dropped_{reason}": n for reason, n in rejected})
    stats[f"{kind}_lines"] = _count(conn, table) + sum(stats.values())
    return stats


def _problem_counts(conn, table: str, kind: str, reasons: tuple[str, ...]) -> tuple[Counter, int]:
    """Lines of `table` dropped for each reason in its `problem` column (every reason listed, zero or
    not: merge with `update`, as `+=` on a Counter drops zeros), and the lines without a problem."""
    counts = dict(conn.execute(f"SELECT problem, count(*) FROM {table} GROUP BY problem").fetchall())
    return Counter({f"{kind}_lines_dropped_{r}": counts.get(r, 0) for r in reasons}), counts.get(None, 0)


def _count(conn, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


_NAME_REASONS = ("empty", "one_column", "bad_id", "no_alias")
_KEPT = {"entity": "entities", "relation": "relations"}


def _load_names(conn, kind: str, path: Path, prefix: str) -> Counter:
    """Table `{kind}(dense_id, id, label, aliases)` from an alias file; the first line of an id wins."""
    stats = _read_lines(conn, f"{kind}_lines", path, kind)
    conn.execute(
        f"""CREATE TABLE {kind}_checked AS
        SELECT ord, cols[1] AS id, list_filter(cols[2:], lambda a: a <> '') AS aliases,
            CASE WHEN cols IS NULL THEN 'empty'
                 WHEN len(cols) < 2 THEN 'one_column'
                 WHEN NOT regexp_full_match(cols[1], '{prefix}[0-9]+') THEN 'bad_id'
                 WHEN len(aliases) = 0 THEN 'no_alias' END AS problem
        FROM (SELECT rowid AS ord, string_split(line, chr(9)) AS cols FROM {kind}_lines)"""
    )
    conn.execute(f"DROP TABLE {kind}_lines")
    drops, valid = _problem_counts(conn, f"{kind}_checked", kind, _NAME_REASONS)
    # the window numbers a narrow table of line ordinals, then the aliases are joined back:
    # numbering the wide rows directly sorts the aliases too (2x slower at full scale)
    conn.execute(
        f"""CREATE TABLE {kind} AS
        SELECT f.dense_id, c.id, c.aliases[1] AS label, c.aliases
        FROM (SELECT ord, (row_number() OVER (ORDER BY ord) - 1)::INTEGER AS dense_id
              FROM (SELECT min(ord) AS ord FROM {kind}_checked WHERE problem IS NULL GROUP BY id)) f
        JOIN {kind}_checked c USING (ord)"""
    )
    conn.execute(f"DROP TABLE {kind}_checked")
    kept = _count(conn, kind)
    stats.update(drops)
    stats.update({f"{kind}_lines_dropped_duplicate": valid - kept, _KEPT[kind]: kept})
    return stats


_TEXT_REASONS = ("empty", "no_description", "bad_id", "unknown_entity")


def _load_descriptions(conn, path: Path) -> Counter:
    """Table `description(kg_id, description)`: the first description of each known entity.

    The checks keep line ordinals only, and the text is cut out of the kept lines once: the real
    file is gigabytes of Wikipedia abstracts, so it is never held twice."""
    stats = _read_lines(conn, "text_lines", path, "description")
    # the id ends at the first tab; the description is the rest of the line, tabs included
    conn.execute(
        """CREATE TABLE text_checked AS
        SELECT ord, e.dense_id AS kg_id,
            CASE WHEN line IS NULL THEN 'empty'
                 WHEN tab = 0 OR tab = length(line) THEN 'no_description'
                 WHEN NOT regexp_full_match(t.id, 'Q[0-9]+') THEN 'bad_id'
                 WHEN e.dense_id IS NULL THEN 'unknown_entity' END AS problem
        FROM (SELECT rowid AS ord, line, strpos(line, chr(9)) AS tab, left(line, tab - 1) AS id
              FROM text_lines) t
        LEFT JOIN entity e ON e.id = t.id"""
    )
    drops, valid = _problem_counts(conn, "text_checked", "description", _TEXT_REASONS)
    conn.execute(
        """CREATE TABLE description AS
        SELECT f.kg_id, substr(t.line, strpos(t.line, chr(9)) + 1) AS description
        FROM (SELECT kg_id, min(ord) AS ord FROM text_checked WHERE problem IS NULL GROUP BY kg_id) f
        JOIN (SELECT rowid AS ord, line FROM text_lines) t USING (ord)"""
    )
    conn.execute("DROP TABLE text_lines; DROP TABLE text_checked")
    kept = _count(conn, "description")
    stats.update(drops)
    stats.update({"description_lines_dropped_duplicate": valid - kept, "descriptions": kept})
    return stats


_TRIPLE_REASONS = ("empty", "malformed", "unknown_relation", "unknown_entity")


def _load_triples(conn, path: Path) -> Counter:
    """Table `triple(ord, head, rel, tail, problem)`: every line, ids resolved; `problem` NULL = kept."""
    stats = _read_lines(conn, "triple_lines", path, "triple")
    conn.execute(
        """CREATE TABLE triple AS
        SELECT ord, h.dense_id AS head, r.dense_id AS rel, t.dense_id AS tail,
            CASE WHEN cols IS NULL THEN 'empty'
                 WHEN len(cols) <> 3 OR list_contains(cols, '') THEN 'malformed'
                 WHEN r.dense_id IS NULL THEN 'unknown_relation'
                 WHEN h.dense_id IS NULL OR t.dense_id IS NULL THEN 'unknown_entity' END AS problem
        FROM (SELECT rowid AS ord, string_split(line, chr(9)) AS cols FROM triple_lines) l
        LEFT JOIN entity h ON h.id = l.cols[1]
        LEFT JOIN relation r ON r.id = l.cols[2]
        LEFT JOIN entity t ON t.id = l.cols[3]"""
    )
    conn.execute("DROP TABLE triple_lines")
    drops, kept = _problem_counts(conn, "triple", "triple", _TRIPLE_REASONS)
    stats.update(drops)
    stats["triples"] = kept
    return stats


def _count_degree(conn) -> None:
    """Table `degree(kg_id, degree)`: kept triples per entity as head or tail (a self-loop counts twice)."""
    conn.execute(
        """CREATE TABLE degree AS
        SELECT kg_id, count(*)::INTEGER AS degree
        FROM (SELECT head AS kg_id FROM triple WHERE problem IS NULL
              UNION ALL SELECT tail FROM triple WHERE problem IS NULL)
        GROUP BY kg_id"""
    )


# ---------------------------------------------------------------- writing parts


_QUERIES = {
    "kg_relations": "SELECT dense_id AS rel_id, id AS pid, label, aliases FROM relation ORDER BY dense_id",
    "kg_triples": "SELECT head, rel, tail FROM triple WHERE problem IS NULL ORDER BY ord",
    "kg_entities": """SELECT e.dense_id AS kg_id, e.id AS qid, e.label, e.aliases, d.description,
            coalesce(g.degree, 0)::INTEGER AS degree
        FROM entity e
        LEFT JOIN description d ON d.kg_id = e.dense_id
        LEFT JOIN degree g ON g.kg_id = e.dense_id
        ORDER BY e.dense_id""",
}


def _write_dataset(conn, writer: ShardWriter, cfg: KGConfig) -> list[PartInfo]:
    """Stream the dataset's rows out of DuckDB into parts of `rows_per_part` rows."""
    reader = conn.sql(_QUERIES[writer.dataset.name]).to_arrow_reader(batch_size=_BATCH_ROWS)
    return write_parts(writer, reader, cfg.rows_per_part)
