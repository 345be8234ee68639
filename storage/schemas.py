"""Versioned Arrow schemas of every dataset the pipeline writes (the contract between stages).

A dataset's folder is `{dataset}/v{version}`: bumping a version here makes every stage write a new
folder instead of mixing rows of two shapes. Change a schema only with a version bump and a line
in the README's changelog.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class DatasetSchema:
    name: str
    version: int
    schema: pa.Schema
    description: str

    @property
    def folder(self) -> str:
        return f"{self.name}/v{self.version}"


LINK = pa.struct(
    [
        pa.field("start", pa.int32(), nullable=False),
        pa.field("end", pa.int32(), nullable=False),
        pa.field("target", pa.string(), nullable=False),
        pa.field("target_page_id", pa.int64()),
        pa.field("target_qid", pa.string()),
    ]
)

SPAN = pa.struct([pa.field("start", pa.int32(), nullable=False), pa.field("end", pa.int32(), nullable=False)])

MENTION = pa.struct(
    [
        pa.field("start", pa.int32(), nullable=False),
        pa.field("end", pa.int32(), nullable=False),
        pa.field("surface", pa.string(), nullable=False),
        pa.field("target", pa.string(), nullable=False),
        pa.field("target_page_id", pa.int64()),
        pa.field("qid", pa.string()),
        pa.field("kg_id", pa.int32()),
        pa.field("rho", pa.float32(), nullable=False),
        pa.field("link_prob", pa.float32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)

INSTANCE_ENTITY = pa.struct(
    [
        pa.field("tok_start", pa.int32(), nullable=False),
        pa.field("tok_end", pa.int32(), nullable=False),
        pa.field("kg_id", pa.int32(), nullable=False),
        pa.field("si", pa.float32(), nullable=False),
        pa.field("freq", pa.int64(), nullable=False),
        pa.field("important", pa.bool_(), nullable=False),
        pa.field("rel_id", pa.int32()),
        pa.field("tail_kg_id", pa.int32()),
        pa.field("tail_ids", pa.list_(pa.int32())),
    ]
)

PAGES = DatasetSchema(
    "pages",
    1,
    pa.schema(
        [
            pa.field("page_id", pa.int64(), nullable=False),
            pa.field("rev_id", pa.int64(), nullable=False),
            pa.field("title", pa.string(), nullable=False),
            pa.field("qid", pa.string()),
            pa.field("text", pa.large_string(), nullable=False),
            pa.field("links", pa.list_(LINK), nullable=False),
        ]
    ),
    "Namespace-0 articles as clean text; links are character spans of `text`.",
)

REDIRECTS = DatasetSchema(
    "redirects",
    1,
    pa.schema(
        [pa.field("title", pa.string(), nullable=False), pa.field("target", pa.string(), nullable=False)]
    ),
    "Redirect pages of namespace 0: normalized title -> normalized target title.",
)

MENTIONS = DatasetSchema(
    "mentions",
    1,
    pa.schema(
        [
            pa.field("page_id", pa.int64(), nullable=False),
            pa.field("sentences", pa.list_(SPAN), nullable=False),
            pa.field("mentions", pa.list_(MENTION), nullable=False),
        ]
    ),
    "Entity mentions per page, row-aligned with `pages` (same part names).",
)

KG_ENTITIES = DatasetSchema(
    "kg_entities",
    1,
    pa.schema(
        [
            pa.field("kg_id", pa.int32(), nullable=False),
            pa.field("qid", pa.string(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("aliases", pa.list_(pa.string()), nullable=False),
            pa.field("description", pa.string()),
            pa.field("degree", pa.int32(), nullable=False),
        ]
    ),
    "Wikidata5M entities with dense ids and degree in the triples.",
)

KG_RELATIONS = DatasetSchema(
    "kg_relations",
    1,
    pa.schema(
        [
            pa.field("rel_id", pa.int32(), nullable=False),
            pa.field("pid", pa.string(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("aliases", pa.list_(pa.string()), nullable=False),
        ]
    ),
    "Wikidata5M relations with dense ids.",
)

KG_TRIPLES = DatasetSchema(
    "kg_triples",
    1,
    pa.schema(
        [
            pa.field("head", pa.int32(), nullable=False),
            pa.field("rel", pa.int32(), nullable=False),
            pa.field("tail", pa.int32(), nullable=False),
        ]
    ),
    "Wikidata5M triples as dense ids.",
)


HELD_OUT_TRIPLES = DatasetSchema(
    "held_out_triples",
    1,
    KG_TRIPLES.schema,
    "KG triples `select` held out (a seeded per-head fraction): never a CKA target, not in the KG-embedding"
    " training set; the clean control of the knowledge probes.",
)


def entity_embeddings(dim: int) -> DatasetSchema:
    """The embedding width is a property of the run (written in the manifest), so the schema is built."""
    return DatasetSchema(
        "entity_embeddings",
        1,
        pa.schema(
            [
                pa.field("kg_id", pa.int32(), nullable=False),
                pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
            ]
        ),
        "One vector per KG entity (initialises the knowledge-augmented memory bank).",
    )


INSTANCES = DatasetSchema(
    "instances",
    1,
    pa.schema(
        [
            pa.field("seq_id", pa.int64(), nullable=False),
            pa.field("page_id", pa.int64(), nullable=False),
            pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
            pa.field("entities", pa.list_(INSTANCE_ENTITY), nullable=False),
        ]
    ),
    "Tokenized training sequences with their entities, SI scores and importance (the training contract).",
)

ANCHOR_TARGET = pa.struct(
    [
        pa.field("entity_id", pa.int32(), nullable=False),
        pa.field("target", pa.string(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
    ]
)

ANCHORS = DatasetSchema(
    "anchors",
    1,
    pa.schema(
        [
            pa.field("anchor", pa.string(), nullable=False),
            pa.field("link_count", pa.int64(), nullable=False),
            pa.field("text_count", pa.int64(), nullable=False),
            pa.field("link_prob", pa.float32(), nullable=False),
            pa.field("targets", pa.list_(ANCHOR_TARGET), nullable=False),
        ]
    ),
    "TAGME anchor dictionary: lower-cased token-joined anchor text, how often it is a link and how often"
    " it occurs as text, link_prob (link_count / text_count, or per article with"
    " `link.tagme.link_prob_per_article`), and its link targets by count (commonness).",
)

LINK_TARGETS = DatasetSchema(
    "link_targets",
    1,
    pa.schema(
        [
            pa.field("entity_id", pa.int32(), nullable=False),
            pa.field("target", pa.string(), nullable=False),
            pa.field("page_id", pa.int64()),
            pa.field("sources", pa.list_(pa.int64()), nullable=False),
        ]
    ),
    "Every page linked to (by normalized title; page_id null when the page is not in the dump) with a"
    " dense entity_id, and the articles linking to it (sorted page ids), for Milne-Witten relatedness.",
)

KG_ALIASES = DatasetSchema(
    "kg_aliases",
    1,
    pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("entity_ids", pa.list_(pa.int32()), nullable=False),
        ]
    ),
    "The KG's labels and aliases as TAGME dictionary keys (`anchor_key`; only keys TAGME could spot),"
    " each with the entities it names in first-seen order: link_targets' entity_id, or an id after"
    " theirs for an entity no link targets (kg_alias_entities). Built once by link's prepare for all"
    " of its workers.",
)

KG_ALIAS_ENTITIES = DatasetSchema(
    "kg_alias_entities",
    1,
    pa.schema(
        [
            pa.field("entity_id", pa.int32(), nullable=False),
            pa.field("target", pa.string(), nullable=False),
            pa.field("page_id", pa.int64()),
            pa.field("qid", pa.string()),
        ]
    ),
    "Entities that only KG aliases name (no link of the dump targets them): their entity_id after"
    " link_targets' ids, page title, page id and QID.",
)

ENTITY_STATS = DatasetSchema(
    "entity_stats",
    1,
    pa.schema(
        [
            pa.field("kg_id", pa.int32(), nullable=False),
            pa.field("freq", pa.int64(), nullable=False),
            pa.field("degree", pa.int32(), nullable=False),
            pa.field("long_tail", pa.bool_(), nullable=False),
            pa.field("has_knowledge", pa.bool_(), nullable=False),
            pa.field("in_sequences", pa.int64(), nullable=False),
            pa.field("selected", pa.int64(), nullable=False),
            pa.field("si_mean", pa.float32()),
        ]
    ),
    "Per KG entity mentioned in the corpus: frequency, KG degree, long-tail class, KG knowledge, how often"
    " it was in a training sequence and selected as important, mean SI.",
)

LONG_TAIL_WORDS = DatasetSchema(
    "long_tail_words",
    1,
    pa.schema(
        [
            pa.field("token_id", pa.int32(), nullable=False),
            pa.field("token", pa.string(), nullable=False),
            pa.field("count", pa.int64(), nullable=False),
        ]
    ),
    "Vocabulary tokens the training sequences use rarely: the long-tail words of the memory bank.",
)

RELATION_PHRASES = DatasetSchema(
    "relation_phrases",
    1,
    pa.schema(
        [
            pa.field("rel_id", pa.int32(), nullable=False),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("phrase", pa.string(), nullable=False),
            pa.field("count", pa.int64(), nullable=False),
        ]
    ),
    "How the corpus words each relation: the text between a linked head and the next linked mention in the"
    " same sentence when (head, rel, that tail) is a KG triple not held out, the most frequent per relation"
    " (rank 1 first). The cloze view of CKA reads rank 1 (`model.cka_cloze_relation`).",
)

TRAIN_LOG = DatasetSchema(
    "train_log",
    2,
    pa.schema(
        [
            pa.field("checkpoint", pa.string(), nullable=False),
            pa.field("step", pa.int64(), nullable=False),
            pa.field("name", pa.string(), nullable=False),
            pa.field("value", pa.float64(), nullable=False),
        ]
    ),
    "Training metrics, one row per (checkpoint, step, metric). Each pre-training run (checkpoint name)"
    " writes its own parts under checkpoints/{name}/train_log/v2; the view unions them, live while training.",
)

# datasets written per checkpoint folder (checkpoints/{name}/{dataset}/v{N}) rather than per run
CHECKPOINT_DATASETS = ("train_log",)

EVAL_RESULTS = DatasetSchema(
    "eval_results",
    1,
    pa.schema(
        [
            pa.field("checkpoint", pa.string(), nullable=False),
            pa.field("task", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("metric", pa.string(), nullable=False),
            pa.field("value", pa.float64(), nullable=False),
        ]
    ),
    "Downstream evaluation metrics.",
)

DATASETS: dict[str, DatasetSchema] = {
    d.name: d
    for d in (
        PAGES,
        REDIRECTS,
        MENTIONS,
        ANCHORS,
        LINK_TARGETS,
        KG_ALIASES,
        KG_ALIAS_ENTITIES,
        KG_ENTITIES,
        KG_RELATIONS,
        KG_TRIPLES,
        HELD_OUT_TRIPLES,
        ENTITY_STATS,
        LONG_TAIL_WORDS,
        RELATION_PHRASES,
        entity_embeddings(0),
        INSTANCES,
        TRAIN_LOG,
        EVAL_RESULTS,
    )
}
