"""KG probe: cloze facts from the run's own KG, split into facts seen in training and unseen ones.

Facts are the run's `kg_triples` with entity labels (`kg_entities`) and relation PIDs (`kg_relations`),
read with DuckDB over the manifests' parts. A fact is *seen* when (head, rel, tail) is a CKA target of
the training data: an `instances` entity with important = true and kg_id/rel_id/tail_kg_id equal to it;
every other triple is *unseen*. Sentences come from relation templates: LAMA's for the PIDs LAMA has
(templates/lama_trex.jsonl), ours for the other PIDs of the sample KG (templates/kg_extra.jsonl), and a
user file (`probe.kg_templates`) on top; a relation with no template is skipped and counted.

Objects follow LAMA's single-token rule (cloze.py): a tail label that is not one vocabulary token is
skipped (`multi_token_object`), so the probe measures the single-token part of the KG only. P@1 is
given per split as LAMA's macro mean over relations and as the micro mean over facts (the sample's
relations have few facts each, so the micro figure is the steadier one).
"""

from __future__ import annotations

import json
from pathlib import Path

from storage.shards import IncompleteDatasetError
from trelm.evaluate.cloze import Fact, keep_single_token, probe_hits
from trelm.evaluate.metrics import macro_p_at_1

TEMPLATES_DIR = Path(__file__).with_name("templates")
SHIPPED_TEMPLATES = (TEMPLATES_DIR / "lama_trex.jsonl", TEMPLATES_DIR / "kg_extra.jsonl")
SPLITS = ("seen", "unseen")

# Every triple is classified in DuckDB (Wikidata5M has 20.6M): only the first `max_facts` templated facts of
# each split, in (head, rel, tail) order, come back to Python with their labels; the rest only as counts.
_RANKED_SQL = """
WITH seen AS (
  SELECT DISTINCT e.kg_id AS head, e.rel_id AS rel, e.tail_kg_id AS tail
  FROM instances, unnest(entities) AS x(e)
  WHERE e.important AND e.rel_id IS NOT NULL AND e.tail_kg_id IS NOT NULL
),
facts AS (
  SELECT k.head, k.rel, k.tail, r.pid, list_contains($pids, r.pid) AS templated, s.head IS NOT NULL AS seen
  FROM kg_triples k
  JOIN kg_relations r ON r.rel_id = k.rel
  LEFT JOIN seen s ON s.head = k.head AND s.rel = k.rel AND s.tail = k.tail
),
ranked AS (
  SELECT *, row_number() OVER (PARTITION BY templated, seen ORDER BY head, rel, tail) AS n FROM facts
)
"""
_FACTS_SQL = _RANKED_SQL + """
SELECT f.pid, h.label AS subject, t.label AS object, f.seen
FROM ranked f JOIN kg_entities h ON h.kg_id = f.head JOIN kg_entities t ON t.kg_id = f.tail
WHERE f.templated AND f.n <= $max_facts
ORDER BY f.head, f.rel, f.tail
"""
_SKIPPED_SQL = _RANKED_SQL + """
SELECT count(*) FILTER (WHERE NOT templated), count(*) FILTER (WHERE templated AND n > $max_facts) FROM ranked
"""


def read_templates(extra: Path | None = None) -> dict[str, str]:
    """PID -> template with [X] and [Y]; later files override earlier ones."""
    templates: dict[str, str] = {}
    for path in (*SHIPPED_TEMPLATES, *([Path(extra)] if extra else [])):
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                templates[row["relation"]] = row["template"]
    return templates


def read_kg_facts(
    run_dir: Path, pids: list[str], max_facts: int
) -> tuple[list[tuple[str, str, str, bool]], dict[str, int]]:
    """(pid, subject label, object label, seen) of the first `max_facts` facts of each split whose relation
    has a template (`pids`), and the counts of the others by reason (no_template, over_max_facts)."""
    from storage import duck

    conn, views = duck.connect(Path(run_dir))
    try:
        missing = {"kg_triples", "kg_entities", "kg_relations", "instances"} - set(views)
        if missing:
            needed = sorted(missing)
            raise IncompleteDatasetError(
                f"run {run_dir} lacks {needed}", fix="run `trelm link` and `trelm select`"
            )
        params = {"pids": sorted(pids), "max_facts": max_facts}
        rows = conn.execute(_FACTS_SQL, params).fetchall()
        no_template, over = conn.execute(_SKIPPED_SQL, params).fetchone()
    finally:
        conn.close()
    counts = {"no_template": no_template, "over_max_facts": over}
    return rows, {reason: n for reason, n in counts.items() if n}


def build_probe_facts(
    rows: list[tuple[str, str, str, bool]], templates: dict[str, str], max_facts: int, skipped: dict[str, int]
) -> list[Fact]:
    facts, per_split = [], dict.fromkeys(SPLITS, 0)
    for pid, subject, obj, seen in rows:
        split = SPLITS[0] if seen else SPLITS[1]
        if pid not in templates:
            skipped["no_template"] = skipped.get("no_template", 0) + 1
        elif per_split[split] >= max_facts:
            skipped["over_max_facts"] = skipped.get("over_max_facts", 0) + 1
        else:
            per_split[split] += 1
            facts.append(Fact(pid, subject, obj, templates[pid], {"split": split}))
    return facts


def evaluate_kg_probe(
    run_dir: Path,
    model,
    tokenizer,
    *,
    templates_file: Path | None = None,
    max_facts: int = 2000,
    batch_size: int = 32,
    max_len: int = 128,
) -> dict:
    """{metrics: {p_at_1, p_at_1_{seen,unseen}, micro_*, n_seen, n_unseen}, per_relation, n, skipped}."""
    templates = read_templates(templates_file)
    rows, skipped = read_kg_facts(run_dir, list(templates), max_facts)
    facts = build_probe_facts(rows, templates, max_facts, skipped)
    kept = keep_single_token(facts, tokenizer, None, skipped)
    hits = probe_hits(model, tokenizer, kept, None, batch_size, max_len)
    return summarize_kg_probe([fact for fact, _ in kept], hits, skipped)


def summarize_kg_probe(facts: list[Fact], hits: list[bool], skipped: dict[str, int]) -> dict:
    by_split: dict[str, dict[str, list[bool]]] = {s: {} for s in (*SPLITS, "all")}
    for fact, hit in zip(facts, hits, strict=True):
        for split in (fact.extra["split"], "all"):
            by_split[split].setdefault(fact.relation, []).append(hit)
    metrics: dict[str, float] = {"p_at_1": macro_p_at_1(by_split["all"])["p_at_1"]}
    per_relation: dict[str, dict] = {}
    for split in SPLITS:
        flat = [h for rel_hits in by_split[split].values() for h in rel_hits]
        scores = macro_p_at_1(by_split[split])
        metrics[f"p_at_1_{split}"] = scores["p_at_1"]
        metrics[f"micro_p_at_1_{split}"] = sum(flat) / len(flat) if flat else 0.0
        metrics[f"n_{split}"] = len(flat)
        for rel, value in scores["per_relation"].items():
            per_relation.setdefault(rel, {})[split] = value
            per_relation[rel][f"n_{split}"] = len(by_split[split][rel])
    return {
        "metrics": metrics,
        "per_relation": dict(sorted(per_relation.items())),
        "n": len(facts),
        "skipped": skipped,
    }
