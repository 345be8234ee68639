"""How the corpus words each KG relation, mined by distant supervision (as LPAQA and T-REx align text with
Wikidata): where a linked mention of a head entity is followed, in the same sentence, by the next linked
mention, and (head, rel, that mention's entity) is a KG triple, the text between the two is one wording of
`rel` ("was born in" between a person and their birthplace). Counted over the corpus, the most frequent
wordings per relation become the `relation_phrases` dataset, which the cloze view of CKA reads instead of
the relation's label (`model.cka_cloze_relation`): a probe or a downstream sentence says "X was born in
[MASK]", not "X place of birth [MASK]".

Only consecutive mentions pair (text with another linked entity inside is not one relation's wording), only
head before tail (the cloze view reads "head phrase [MASK]"), and never a held-out triple, so the control
facts of the knowledge probes contribute nothing; a wording of function words alone ("and": coordination
wins for symmetric relations) is dropped unless `select.phrase_content_words` is off. Streaming: one
pages/mentions part at a time in DuckDB, the triples loaded once; only the (rel, phrase) counts accumulate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from preprocessing.config import SelectConfig
from storage import layout
from storage.duck import scratch, sql_str
from storage.schemas import MENTIONS, PAGES, RELATION_PHRASES
from storage.shards import Provenance, part_paths, write_table

# per part, first the pairs: every mention placed in the sentence that holds it whole (ASOF: the last
# sentence starting at or before it), paired with the next mention of that sentence, both with a KG id
# (a mention without one between two entities still breaks their pair), the gap short enough to be a phrase
# of max_words words
_PAIRS_SQL = """
CREATE OR REPLACE TEMP TABLE pair AS
WITH mention AS (
    SELECT x.page_id, t.m.start AS m_start, t.m."end" AS m_end, t.m.kg_id AS kg_id
    FROM read_parquet({mentions}) x, unnest(x.mentions) AS t(m)
), sentence AS (
    SELECT x.page_id, t.s.start AS s_start, t.s."end" AS s_end
    FROM read_parquet({mentions}) x, unnest(x.sentences) AS t(s)
), placed AS (
    SELECT m.*, s.s_start
    FROM mention m ASOF JOIN sentence s ON m.page_id = s.page_id AND m.m_start >= s.s_start
    WHERE m.m_end <= s.s_end
), consecutive AS (
    SELECT page_id, kg_id AS head, m_end AS gap_start,
           lead(kg_id) OVER w AS tail, lead(m_start) OVER w AS gap_end
    FROM placed WINDOW w AS (PARTITION BY page_id, s_start ORDER BY m_start, m_end)
)
SELECT * FROM consecutive
WHERE head IS NOT NULL AND tail IS NOT NULL AND gap_end >= gap_start AND gap_end - gap_start <= {max_chars}
"""
# then the pairs that are kept triples: a table of known size, so DuckDB builds its hash on the pairs and
# streams the 21M triples past it (in one query with the text, it cut every pair's text before joining)
_MATCHED_SQL = """
CREATE OR REPLACE TEMP TABLE matched AS
SELECT p.page_id, p.gap_start, p.gap_end, k.rel AS rel_id
FROM pair p JOIN kept k ON k.head = p.head AND k.tail = p.tail
"""
# and only for those the text between, runs of whitespace and Unicode separators (no-break spaces) collapsed
_COUNT_SQL = """
INSERT INTO counted
SELECT rel_id, phrase, count(*) FROM (
    SELECT m.rel_id,
           trim(regexp_replace(
               substring(g.text, m.gap_start + 1, m.gap_end - m.gap_start), '[\\s\\p{{Z}}]+', ' ', 'g'
           )) AS phrase
    FROM matched m JOIN read_parquet({pages}) g USING (page_id)
)
WHERE regexp_matches(phrase, '\\pL') AND len(string_split(phrase, ' ')) <= {max_words} {content}
GROUP BY ALL
"""
# the kept phrases: at least min_count occurrences, the `per_relation` most frequent per relation (ties: the
# shorter, then the alphabetically first phrase, so the ranking is a pure function of the counts)
_TOP_SQL = """
SELECT rel_id::INTEGER AS rel_id, rank::INTEGER AS rank, phrase, count::BIGINT AS count FROM (
    SELECT rel_id, phrase, sum(count) AS count,
           row_number() OVER (PARTITION BY rel_id ORDER BY sum(count) DESC, length(phrase), phrase) AS rank
    FROM counted GROUP BY rel_id, phrase HAVING sum(count) >= {min_count}
) WHERE rank <= {per_relation} ORDER BY rel_id, rank
"""
# with `select.phrase_content_words`: some run of letters in the phrase is not a stop word
_CONTENT_SQL = """AND EXISTS (
    SELECT 1 FROM unnest(regexp_extract_all(lower(phrase), '\\pL+')) AS w(word)
    WHERE word NOT IN (SELECT word FROM stop_word)
)"""
_CHARS_PER_WORD = 24  # a cheap bound before splitting: no phrase of max_words words is longer in practice


def mine_relation_phrases(cfg: SelectConfig, run_dir: Path, kept: np.ndarray, provenance: Provenance) -> dict:
    """Writes `relation_phrases` from the run's pages and mentions and the `kept` [n, 3] (head, rel, tail)
    triples; returns {relations with a phrase, phrases}."""
    conn = scratch(cfg.duckdb_memory_limit, layout.stage_dir(run_dir, "select") / "duckdb-tmp")
    try:
        conn.register("kept_arrow", _triple_table(kept))
        # a real table, scanned once per part; a triple listed twice would count its wordings twice
        conn.execute("CREATE TABLE kept AS SELECT DISTINCT head, rel, tail FROM kept_arrow")
        conn.unregister("kept_arrow")
        conn.execute("CREATE TABLE counted (rel_id INTEGER, phrase VARCHAR, count BIGINT)")
        conn.register("stop_word", pa.table({"word": sorted(_stop_words())}))
        for pages, mentions in zip(part_paths(run_dir, PAGES), part_paths(run_dir, MENTIONS), strict=True):
            _count_part(conn, cfg, pages, mentions)
        top = conn.sql(
            _TOP_SQL.format(min_count=cfg.phrase_min_count, per_relation=cfg.phrases_per_relation)
        ).to_arrow_table()
    finally:
        conn.close()
    stats = {"relations": len(set(top.column("rel_id").to_pylist())), "phrases": top.num_rows}
    write_table(run_dir, RELATION_PHRASES, provenance, top.cast(RELATION_PHRASES.schema), stats=stats)
    return stats


def _count_part(conn, cfg: SelectConfig, pages: Path, mentions: Path) -> None:
    """Adds one pages/mentions part's (rel_id, phrase, count) rows to `counted`."""
    conn.execute(
        _PAIRS_SQL.format(mentions=sql_str(mentions), max_chars=cfg.phrase_max_words * _CHARS_PER_WORD)
    )
    conn.execute(_MATCHED_SQL)
    content = _CONTENT_SQL if cfg.phrase_content_words else ""
    conn.execute(_COUNT_SQL.format(pages=sql_str(pages), max_words=cfg.phrase_max_words, content=content))


def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS  # the word list alone: no pipeline is loaded

    return STOP_WORDS


def _triple_table(triples: np.ndarray) -> pa.Table:
    return pa.table({n: pa.array(triples[:, i], pa.int32()) for i, n in enumerate(("head", "rel", "tail"))})
