"""`trelm select`: mentions -> important entities (SI score + KG knowledge) -> the `instances` shards.

Paper section 3.1 and the "Input" paragraph of 3.4. Per pages part (same part names as `pages`):

1. sequences of at most `max_seq_len` tokens along sentence boundaries (`preprocessing.sequences`),
   every KG-aligned mention mapped to its token span;
2. SI(e) = ||h_o|| ||h_rep|| / (h_o . h_rep) of every such mention, batched on the encoder
   (`preprocessing.importance`);
3. the policy: a mention's entity is *important* when it has knowledge in the KG (it heads a
   triple), its corpus frequency class is one the policy injects (the paper's Figure 3 variants:
   `long_tail`, `frequent`, `both`), and its SI is among the sequence's top `si_top_k` (and at
   least `si_threshold`, if set);
4. for an important entity, one KG triple (entity as head) and the tail label's tokens as the CKA
   target. `target_policy` picks the triple: `uniform`, a seeded uniform choice among the entity's
   triples (default: the targets then spread over the KG's facts), or `highest_degree`, its
   best-known tail (highest degree, then lowest relation id), which collapses many entities onto a
   few hub tails such as (instance of, human) -- kept for comparison.

Held-out facts: a seeded per-head fraction (`held_out_fraction`) of the KG triples is never a CKA
target and is left out of the KG-embedding training set; they are written as `held_out_triples`, so
the knowledge probes have facts that training never saw, by KG or by CKA, as a clean control.

Before the parts: entity frequency over the corpus (the long tail) and the cut-off between long-tail
and frequent entities. After them: the long-tail word list for the memory bank (vocabulary tokens
seen rarely in the corpus), per-entity statistics, a long-tail plot (PNG) in the run folder, and
`entity_embeddings` for every KG entity in use (`preprocessing.kge`). Every mention that is not
selected is counted by reason in the manifest.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing.config import SelectConfig, SIConfig
from preprocessing.importance import load_encoder, si_scores
from preprocessing.kge import read_triples, triple_array, write_entity_embeddings
from preprocessing.phrases import mine_relation_phrases
from preprocessing.sequences import load_tokenizer, page_sequences
from storage import layout
from storage.code import module_code_version
from storage.duck import dataset_files, sql_files
from storage.schemas import (
    ENTITY_STATS,
    HELD_OUT_TRIPLES,
    INSTANCES,
    KG_ENTITIES,
    KG_TRIPLES,
    LONG_TAIL_WORDS,
    MENTIONS,
    PAGES,
    RELATION_PHRASES,
)
from storage.shards import (
    PartInfo,
    Provenance,
    ShardWriter,
    atomic_write,
    atomic_write_text,
    dataset_dir,
    is_complete,
    part_paths,
    read_manifest,
    read_part_info,
    require_intact,
    stable_hash,
    write_table,
)
from storage.tokens import in_text_ids


def select_provenance(cfg: SelectConfig, run_dir: Path) -> Provenance:
    datasets = (PAGES, MENTIONS, KG_ENTITIES, KG_TRIPLES)
    inputs = tuple((d.name, read_manifest(run_dir, d)["fingerprint"]) for d in datasets)
    # batch size, device and dtype change speed, not (beyond float noise) which entities are chosen
    speed_only = {"si": {"batch_size", "device", "dtype"}, "kge": {"device"}}
    config = cfg.model_dump(exclude={**dict.fromkeys(_PHRASE_ONLY, True), **speed_only})
    return Provenance(stable_hash(config), inputs, module_code_version(__name__))


# settings only `relation_phrases` reads (its memory limit changes speed only): a new phrase count does not
# score the corpus again, nor does new scoring count the phrases again
_PHRASE_SETTINGS = ("phrase_max_words", "phrase_min_count", "phrases_per_relation", "phrase_content_words")
_PHRASE_ONLY = (*_PHRASE_SETTINGS, "duckdb_memory_limit")


def phrases_provenance(cfg: SelectConfig, run_dir: Path) -> Provenance:
    """`relation_phrases`' own: the phrase settings and the held-out split's, pages, mentions, triples."""
    inputs = tuple((d.name, read_manifest(run_dir, d)["fingerprint"]) for d in (PAGES, MENTIONS, KG_TRIPLES))
    config = {k: getattr(cfg, k) for k in (*_PHRASE_SETTINGS, "held_out_fraction", "target_seed")}
    return Provenance(stable_hash(config), inputs, module_code_version(__name__))


def write_relation_phrases(cfg: SelectConfig, run_dir: Path) -> dict:
    """`relation_phrases` from the triples not held out, unless complete for its provenance; its stats."""
    provenance = phrases_provenance(cfg, run_dir)
    if not is_complete(run_dir, RELATION_PHRASES, provenance.fingerprint):
        kept, _ = split_triples(cfg, run_dir)
        mine_relation_phrases(cfg, run_dir, kept, provenance)
    return read_manifest(run_dir, RELATION_PHRASES)["stats"]


# ---------------------------------------------------------------- corpus facts, before the parts

_FREQ_SQL = """SELECT m.kg_id, count(*) AS n FROM read_parquet({mentions}) AS x, unnest(x.mentions) AS t(m)
               WHERE m.kg_id IS NOT NULL GROUP BY 1"""
# the best-known fact of an entity: its triple (as head) whose tail has the highest degree, ties to the
# lowest relation id, then the lowest tail id. An ordered aggregate, not a packed sort key: hub tails of
# Wikidata5M close hundreds of thousands of triples, and `degree * 10**6` overflows INT32 from 2,148 on.
# {triples}: a FROM source of (head, rel, tail), the KG's parts or the triples left after the held-out split
_BEST_TRIPLE_SQL = """SELECT t.head, first(t.rel ORDER BY e.degree DESC, t.rel, t.tail) AS rel,
                             first(t.tail ORDER BY e.degree DESC, t.rel, t.tail) AS tail
                      FROM {triples} t JOIN read_parquet({entities}) e ON e.kg_id = t.tail
                      GROUP BY t.head"""
# the uniform policy: per head, the kept triple with the smallest seeded key (`triple_keys`)
_UNIFORM_TRIPLE_SQL = """SELECT head, first(rel ORDER BY key, rel, tail) AS rel,
                                first(tail ORDER BY key, rel, tail) AS tail
                         FROM {triples} GROUP BY head"""


@dataclass
class Corpus:
    """What every part needs to know about the whole corpus and KG, as arrays indexed by kg_id."""

    freq: np.ndarray  # mentions of each entity in the corpus
    cutoff: int  # entities with freq <= cutoff are long-tail
    rel: np.ndarray  # relation of the entity's chosen triple (as head), -1: no knowledge in the KG
    tail: np.ndarray  # tail of that triple
    tail_ids: dict[int, list[int]]  # tail kg_id -> token ids of its label

    def long_tail(self, kg_ids: np.ndarray) -> np.ndarray:
        return self.freq[kg_ids] <= self.cutoff


def build_corpus(cfg: SelectConfig, run_dir: Path, tokenizer, write: bool = True) -> Corpus:
    """The corpus facts; `write`: also write the held-out split (the stage's prepare step does; a worker
    rebuilding the same facts does not)."""
    import duckdb

    conn = duckdb.connect()
    n = read_manifest(run_dir, KG_ENTITIES)["rows"]
    counted = conn.sql(_FREQ_SQL.format(mentions=dataset_files(run_dir, MENTIONS))).fetchnumpy()
    freq = np.zeros(n, np.int64)
    freq[counted["kg_id"].astype(np.int64)] = counted["n"]
    best = chosen_triples(conn, cfg, run_dir, write)
    rel, tail = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
    rel[best["head"]], tail[best["head"]] = best["rel"], best["tail"]
    tail_ids = _tail_tokens(conn, run_dir, np.unique(best["tail"]), tokenizer, cfg.max_tail_tokens)
    conn.close()
    cutoff = cfg.long_tail_max_freq or _quantile_cutoff(freq, cfg.long_tail_quantile)
    return Corpus(freq, cutoff, rel, tail, tail_ids)


def best_triples(conn, run_dir: Path, triples: str | None = None) -> dict[str, np.ndarray]:
    """{head, rel, tail}: the highest-degree-tail triple of every entity that heads one (_BEST_TRIPLE_SQL),
    among `triples` (a FROM source; None: all the KG's triples)."""
    source = triples or f"read_parquet({dataset_files(run_dir, KG_TRIPLES)})"
    sql = _BEST_TRIPLE_SQL.format(triples=source, entities=dataset_files(run_dir, KG_ENTITIES))
    return conn.sql(sql).fetchnumpy()


def chosen_triples(conn, cfg: SelectConfig, run_dir: Path, write: bool = True) -> dict[str, np.ndarray]:
    """{head, rel, tail}: every head's CKA target by `cfg.target_policy`, never a held-out triple. Writes
    the held-out split as `held_out_triples` first when `write` (the KG-embedding step leaves those
    triples out); the split is a pure function of the triples and the seed, so a worker recomputes it."""
    kept, held = split_triples(cfg, run_dir)
    if write:
        write_held_out(run_dir, held, cfg)
    conn.register(
        "kept_triples",
        pa.table(
            {
                "head": pa.array(kept[:, 0], pa.int32()),
                "rel": pa.array(kept[:, 1], pa.int32()),
                "tail": pa.array(kept[:, 2], pa.int32()),
                "key": triple_keys(kept, cfg.target_seed, salt=1),
            }
        ),
    )
    if cfg.target_policy == "highest_degree":
        return best_triples(conn, run_dir, "kept_triples")
    return conn.sql(_UNIFORM_TRIPLE_SQL.format(triples="kept_triples")).fetchnumpy()


def split_triples(cfg: SelectConfig, run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """([n, 3] kept, [m, 3] held-out) (head, rel, tail) of the run's KG by `held_out_mask`."""
    triples = read_triples(run_dir)
    held = held_out_mask(triples, cfg.held_out_fraction, cfg.target_seed)
    return triples[~held], triples[held]


_MASK64 = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64: a fixed hash, so a split does not depend on the triples' order."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def triple_keys(triples: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """A uniform [0, 1) float64 per triple, a pure function of (head, rel, tail, seed, salt)."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps on purpose
        x = _mix(np.full(len(triples), (seed * 1_000_003 + salt) & _MASK64, np.uint64))
        for column in range(triples.shape[1]):
            x = _mix(x ^ triples[:, column].astype(np.uint64))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def held_out_mask(triples: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """[n] bool: per head, fraction x its triple count held out (stochastically rounded by a per-head key,
    so the expected share is `fraction` even for heads with few triples), always keeping one triple."""
    held = np.zeros(len(triples), bool)
    if fraction == 0 or not len(triples):
        return held
    heads = triples[:, 0]
    order = np.lexsort((triple_keys(triples, seed, salt=2), heads))  # by head, then a random rank
    _, start, count = np.unique(heads[order], return_index=True, return_counts=True)
    rank = np.arange(len(order)) - np.repeat(start, count)
    head_key = triple_keys(triples[order][start][:, :1], seed, salt=3)  # one draw per head
    quota = np.minimum(np.floor(fraction * count + head_key), count - 1)
    held[order] = rank < np.repeat(quota, count)
    return held


def write_held_out(run_dir: Path, held: np.ndarray, cfg: SelectConfig) -> None:
    inputs = (("kg_triples", read_manifest(run_dir, KG_TRIPLES)["fingerprint"]),)
    config = stable_hash({"fraction": cfg.held_out_fraction, "seed": cfg.target_seed})
    provenance = Provenance(config, inputs, module_code_version(__name__))
    columns = {n: pa.array(held[:, i], pa.int32()) for i, n in enumerate(("head", "rel", "tail"))}
    table = pa.table(columns).cast(HELD_OUT_TRIPLES.schema)
    write_table(run_dir, HELD_OUT_TRIPLES, provenance, table, stats={"triples": len(held)})


def read_held_out(run_dir: Path) -> np.ndarray:
    """[n, 3] int64 held-out (head, rel, tail) of the run (empty when select wrote none)."""
    written = is_complete(run_dir, HELD_OUT_TRIPLES)
    return triple_array(part_paths(run_dir, HELD_OUT_TRIPLES) if written else [])


def _quantile_cutoff(freq: np.ndarray, quantile: float) -> int:
    """The frequency at `quantile` of the entities that occur at all (at least 1)."""
    seen = freq[freq > 0]
    return int(np.quantile(seen, quantile, method="lower")) if len(seen) else 0


def _tail_tokens(conn, run_dir: Path, tails: np.ndarray, tokenizer, max_tokens: int) -> dict[int, list[int]]:
    """Token ids of each tail entity's label as it appears inside text: the CKA target."""
    conn.register("tails", pa.table({"kg_id": pa.array(tails, pa.int32())}))
    entities = dataset_files(run_dir, KG_ENTITIES)
    rows = conn.sql(
        f"SELECT e.kg_id, e.label FROM read_parquet({entities}) e JOIN tails USING (kg_id)"
    ).fetchall()
    encoded = in_text_ids(tokenizer, [label for _, label in rows])  # as the label reads in a sentence
    return {kg_id: ids[:max_tokens] for (kg_id, _), ids in zip(rows, encoded, strict=True)}


# ---------------------------------------------------------------- one part


def select_part(
    cfg: SelectConfig, run_dir: Path, index: int, corpus: Corpus, encoder: tuple, provenance
) -> PartInfo:
    """Sequences, SI and the policy for pages part `index` -> instances part `index` (kept when done)."""
    writer = ShardWriter(run_dir, INSTANCES, provenance)
    pages_path = part_paths(run_dir, PAGES)[index]
    source_fp = stable_hash([read_part_info(pages_path).fingerprint, corpus.cutoff])
    done = writer.done_part(index, source_fp)
    if done is not None:
        return done
    stats: Counter = Counter()
    sequences = _sequences(cfg, run_dir, index, encoder[0], stats)
    spans = [[(m.tok_start, m.tok_end) for m in seq.mentions] for seq, _ in sequences]
    scores = si_scores(encoder[1], encoder[0], [seq.input_ids for seq, _ in sequences], spans, cfg.si)
    table = _instances(cfg, corpus, sequences, scores, stats)
    return writer.write_part(index, [table], stats=stats, part_fingerprint=source_fp)


def _sequences(cfg: SelectConfig, run_dir: Path, index: int, tokenizer, stats: Counter) -> list[tuple]:
    """(Sequence, kg_ids of its mentions) for every sequence of the part's pages."""
    pages = pq.read_table(part_paths(run_dir, PAGES)[index], columns=["page_id", "text"]).to_pylist()
    mentions = pq.read_table(
        part_paths(run_dir, MENTIONS)[index], columns=["sentences", "mentions"]
    ).to_pylist()
    out = []
    for page, row in zip(pages, mentions, strict=True):
        linked = [m for m in row["mentions"] if m["kg_id"] is not None]
        stats["mentions_dropped_without_kg_id"] += len(row["mentions"]) - len(linked)
        sentences = [(s["start"], s["end"]) for s in row["sentences"]]
        spans = [(m["start"], m["end"]) for m in linked]
        seqs = page_sequences(tokenizer, page["page_id"], page["text"], sentences, spans, cfg.max_seq_len)
        stats["mentions_dropped_cut_by_sequence_boundary"] += sum(len(s.cut) for s in seqs)
        stats["mentions_dropped_covering_no_token"] += sum(len(s.untokenized) for s in seqs)
        out += [(s, np.array([linked[m.mention]["kg_id"] for m in s.mentions], np.int64)) for s in seqs]
    stats["sequences"] += len(out)
    return out


def important_mask(cfg: SelectConfig, corpus: Corpus, kg_ids: np.ndarray, si: np.ndarray, stats: Counter):
    """Which mentions of one sequence are important, and each rejection counted by its first reason."""
    has_knowledge = corpus.rel[kg_ids] >= 0
    tail = corpus.long_tail(kg_ids)
    wanted = {"both": np.ones_like(tail), "long_tail": tail, "frequent": ~tail}[cfg.policy]
    eligible = has_knowledge & wanted
    if cfg.si_threshold is not None:
        eligible &= si >= cfg.si_threshold
    chosen = np.zeros(len(kg_ids), bool)
    order = np.flatnonzero(eligible)[np.argsort(-si[eligible], kind="stable")]
    chosen[order[: cfg.si_top_k] if cfg.si_top_k else order] = True
    stats["dropped_no_kg_knowledge"] += int((~has_knowledge).sum())
    stats["dropped_by_frequency_policy"] += int((has_knowledge & ~wanted).sum())
    stats["dropped_low_si"] += int((has_knowledge & wanted & ~chosen).sum())
    stats["selected"] += int(chosen.sum())
    return chosen


def _instances(cfg: SelectConfig, corpus: Corpus, sequences: list[tuple], scores, stats: Counter) -> pa.Table:
    rows, counters = [], Counter()
    for (seq, kg_ids), si in zip(sequences, scores, strict=True):
        important = important_mask(cfg, corpus, kg_ids, np.asarray(si, np.float32), stats)
        entities = [
            _entity(m, int(k), float(s), bool(imp), corpus)
            for m, k, s, imp in zip(seq.mentions, kg_ids, si, important, strict=True)
        ]
        rows.append(
            {
                "seq_id": sequence_id(seq.page_id, counters[seq.page_id]),
                "page_id": seq.page_id,
                "input_ids": seq.input_ids,
                "entities": entities,
            }
        )
        counters[seq.page_id] += 1
    return pa.Table.from_pylist(rows, schema=INSTANCES.schema)


# seq_id = page_id * 2**20 + the sequence's index in its page: unique while a page has under 2**20
# sequences (134M tokens at 128 a sequence; the longest articles have well under 1M), and enwiki's page
# ids (~8e7) times 2**20 stay far below int64's 9.2e18
SEQUENCES_PER_PAGE = 1 << 20


def sequence_id(page_id: int, index: int) -> int:
    if not 0 <= index < SEQUENCES_PER_PAGE:
        raise ValueError(f"page {page_id}: sequence {index} is past {SEQUENCES_PER_PAGE} sequences per page")
    return page_id * SEQUENCES_PER_PAGE + index


def _entity(m, kg_id: int, si: float, important: bool, corpus: Corpus) -> dict:
    entity = {
        "tok_start": m.tok_start,
        "tok_end": m.tok_end,
        "kg_id": kg_id,
        "si": si,
        "freq": int(corpus.freq[kg_id]),
        "important": important,
        "rel_id": None,
        "tail_kg_id": None,
        "tail_ids": None,
    }
    if important:
        tail = int(corpus.tail[kg_id])
        entity.update(rel_id=int(corpus.rel[kg_id]), tail_kg_id=tail, tail_ids=corpus.tail_ids.get(tail, []))
    return entity


# ---------------------------------------------------------------- the stage


@lru_cache(maxsize=1)
def _encoder(si_json: str):
    """(tokenizer, model) of the SI encoder, loaded once per process: only where parts are scored (the
    tokenizer is the one the corpus facts use)."""
    cfg = SIConfig.model_validate_json(si_json)
    return load_encoder(cfg, _tokenizer(cfg.encoder))


@lru_cache(maxsize=1)
def _tokenizer(name: str):
    """The encoder's tokenizer alone: what the corpus facts and the finalize step need."""
    return load_tokenizer(name)


_INPUTS = ((PAGES, "ingest"), (MENTIONS, "link"), (KG_ENTITIES, "link"), (KG_TRIPLES, "link"))


def select(cfg: SelectConfig, run_dir: Path, progress: bool = True) -> dict:
    """The whole stage in this process; returns the `instances` manifest. Complete parts of an earlier
    run are kept. A task runner runs the same steps: `prepare`, `select_part_here` per part, `finalize`."""
    from tqdm import tqdm

    provenance = prepare(cfg, run_dir)
    if is_complete(run_dir, INSTANCES, provenance.fingerprint):
        write_relation_phrases(cfg, run_dir)  # a dataset `trelm verify` took back is made again
        return read_manifest(run_dir, INSTANCES)
    parts = [
        select_part_here(cfg, run_dir, i, provenance)
        for i in tqdm(range(n_parts(run_dir)), desc="select", disable=not progress)
    ]
    return finalize(cfg, run_dir, provenance, parts)


def prepare(cfg: SelectConfig, run_dir: Path) -> Provenance:
    """The stage's provenance; unless `instances` is complete for it: the inputs checked (damaged inputs
    fail here, naming the parts, not inside a part), the held-out split written, `instances` opened."""
    provenance = select_provenance(cfg, run_dir)
    if is_complete(run_dir, INSTANCES, provenance.fingerprint):
        return provenance
    for dataset, stage in _INPUTS:
        require_intact(run_dir, dataset, stage)
    ShardWriter(run_dir, INSTANCES, provenance).open()
    part_context(cfg, run_dir, provenance, write=True)  # this process's parts use it too
    return provenance


def n_parts(run_dir: Path) -> int:
    """One instances part per pages part."""
    return len(part_paths(run_dir, PAGES))


def select_part_here(cfg: SelectConfig, run_dir: Path, index: int, provenance: Provenance) -> PartInfo:
    """`select_part` with the corpus and the encoder of this process, built on its first part (a task
    runner's worker rebuilds them from the run folder rather than receiving them with each task)."""
    corpus = part_context(cfg, run_dir, provenance)
    return select_part(cfg, run_dir, index, corpus, _encoder(cfg.si.model_dump_json()), provenance)


def finalize(cfg: SelectConfig, run_dir: Path, provenance: Provenance, parts: list[PartInfo]) -> dict:
    """After the parts: the corpus-wide outputs, then the `instances` manifest."""
    corpus = part_context(cfg, run_dir, provenance)
    parts = sorted(parts, key=lambda p: p.name)
    summary = finalize_outputs(cfg, run_dir, corpus, _tokenizer(cfg.si.encoder), parts, provenance)
    writer = ShardWriter(run_dir, INSTANCES, provenance)
    return writer.finalize(parts, stats=summary["counts"], extra={"select": summary["facts"]})


_contexts: dict[tuple, Corpus] = {}  # the latest run's corpus facts in this process
_context_lock = threading.Lock()  # the threads of one worker build it once


def part_context(cfg: SelectConfig, run_dir: Path, provenance: Provenance, write: bool = False) -> Corpus:
    """The corpus facts for the parts of this run, built once per process and kept for the same config
    and provenance fingerprint (a changed input or config builds them again); `write`: build them
    afresh and write the held-out split (the stage's prepare step). They need the encoder's tokenizer
    only: a flow process that prepares and finalizes while a cluster scores never loads the model."""
    key = (cfg.model_dump_json(), str(run_dir), provenance.fingerprint)
    with _context_lock:
        if write or key not in _contexts:
            corpus = build_corpus(cfg, run_dir, _tokenizer(cfg.si.encoder), write)
            _contexts.clear()
            _contexts[key] = corpus
        return _contexts[key]


def finalize_outputs(cfg: SelectConfig, run_dir: Path, corpus: Corpus, tokenizer, parts, provenance) -> dict:
    """Entity statistics, long-tail words, the plot, and the embeddings of the entities in use."""
    import duckdb

    conn = duckdb.connect()
    instances = sql_files([dataset_dir(run_dir, INSTANCES) / p.name for p in parts])
    conn.execute(
        f"CREATE VIEW ent AS SELECT e.* FROM read_parquet({instances}) i, unnest(i.entities) AS t(e)"
    )
    facts = _si_distribution(conn) | {
        "long_tail_max_freq": corpus.cutoff,
        "policy": cfg.policy,
        "target_policy": cfg.target_policy,
        "held_out_triples": int(read_manifest(run_dir, HELD_OUT_TRIPLES)["rows"]),
    }
    _write_entity_stats(conn, run_dir, corpus, provenance)
    words = _write_long_tail_words(conn, run_dir, instances, tokenizer, cfg, provenance)
    in_use = conn.sql(
        "SELECT DISTINCT kg_id FROM ent UNION SELECT DISTINCT tail_kg_id FROM ent "
        "WHERE tail_kg_id IS NOT NULL"
    ).fetchnumpy()["kg_id"]
    conn.close()
    facts["relation_phrases"] = write_relation_phrases(cfg, run_dir)
    # the held-out facts are a control only while the KG embeddings never trained on them either
    held_out = read_held_out(run_dir)
    kg_ids = np.sort(in_use.astype(np.int64))
    write_entity_embeddings(run_dir, cfg.kge, kg_ids, progress=False, exclude=held_out)
    plot = plot_long_tail(corpus.freq, corpus.cutoff, layout.stage_dir(run_dir, "select") / "long_tail.png")
    facts |= {"long_tail_words": words, "long_tail_plot": str(plot)}
    atomic_write_text(layout.stage_dir(run_dir, "select") / "summary.json", json.dumps(facts, indent=2))
    return {"counts": {"entities_in_use": len(in_use)}, "facts": facts}


def _si_distribution(conn) -> dict:
    row = conn.sql(
        "SELECT count(*), avg(si), quantile_cont(si, [0.1, 0.25, 0.5, 0.75, 0.9, 0.99]) FROM ent"
    ).fetchall()[0]
    return {
        "si_count": row[0],
        "si_mean": row[1],
        "si_quantiles": dict(zip(["p10", "p25", "p50", "p75", "p90", "p99"], row[2] or [], strict=False)),
    }


def _write_entity_stats(conn, run_dir: Path, corpus: Corpus, provenance: Provenance) -> None:
    seen = np.flatnonzero(corpus.freq > 0)
    conn.register(
        "corpus",
        pa.table(
            {
                "kg_id": pa.array(seen, pa.int32()),
                "freq": corpus.freq[seen],
                "long_tail": corpus.long_tail(seen),
                "has_knowledge": corpus.rel[seen] >= 0,
            }
        ),
    )
    table = conn.sql(
        f"""SELECT c.kg_id, c.freq, k.degree, c.long_tail, c.has_knowledge, count(e.kg_id) AS in_sequences,
                   count(*) FILTER (WHERE e.important) AS selected, avg(e.si)::FLOAT AS si_mean
            FROM corpus c JOIN read_parquet({dataset_files(run_dir, KG_ENTITIES)}) k USING (kg_id)
            LEFT JOIN ent e USING (kg_id) GROUP BY ALL ORDER BY c.kg_id"""
    ).to_arrow_table()
    write_table(run_dir, ENTITY_STATS, provenance, table)


def _write_long_tail_words(
    conn, run_dir: Path, instances: str, tokenizer, cfg: SelectConfig, provenance
) -> int:
    """Vocabulary tokens the corpus uses rarely (Wu et al. 2020): the memory bank's long-tail words."""
    special = set(tokenizer.all_special_ids)
    counts = conn.sql(
        f"""SELECT id::INTEGER AS token_id, count(*) AS count FROM read_parquet({instances}) i,
            unnest(i.input_ids) AS t(id) GROUP BY 1
            HAVING count(*) BETWEEN {cfg.word_min_count} AND {cfg.long_tail_word_max_count} ORDER BY 1"""
    ).to_arrow_table()
    ids = [i for i in counts.column("token_id").to_pylist() if i not in special]
    # typed: with no token in the count range the list is empty, and an untyped empty array cannot filter
    keep = pa.array([i not in special for i in counts.column("token_id").to_pylist()], pa.bool_())
    counts = counts.filter(keep)
    table = counts.append_column("token", pa.array(tokenizer.convert_ids_to_tokens(ids), pa.string()))
    write_table(run_dir, LONG_TAIL_WORDS, provenance, table.select(["token_id", "token", "count"]))
    return table.num_rows


def plot_long_tail(freq: np.ndarray, cutoff: int, path: Path) -> Path:
    """Entity frequency by rank (log-log), the long-tail cut-off marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = np.sort(freq[freq > 0])[::-1]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(np.arange(1, len(ranked) + 1), ranked, marker=".", linestyle="none", markersize=3)
    ax.axhline(max(cutoff, 1), color="red", linestyle="--", label=f"long-tail cut-off: freq <= {cutoff}")
    ax.set_xlabel("entity rank")
    ax.set_ylabel("mentions in the corpus")
    ax.set_title(f"Entity frequency ({len(ranked)} entities)")
    ax.legend()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path
