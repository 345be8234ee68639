"""KG embeddings of the Wikidata5M entities -> `entity_embeddings` (kg_id, vector[dim]).

The paper (3.1, and "Input" in 3.4) replaces the embeddings of important entities with those of a
KG embedding algorithm. Two sources:

- `train`: TransE trained with PyKEEN on the run's `kg_triples`. PyKEEN gets the triples already in
  our dense ids (`CoreTriplesFactory.create` with num_entities = the `kg_entities` row count), so row
  i of its entity matrix is kg_id i by construction, with no label mapping in between. A small
  held-out split measures link prediction (filtered, both directions: MRR and Hits@10) next to the
  MRR that random scoring gets on the same candidate sets, so the figure can be judged.
- `graphvite`: a published GraphVite model for Wikidata5M (TransE, DistMult, ... at 512 dims).
  GraphVite's `ApplicationMixin.save_model` (python/graphvite/application/application.py; usage in
  doc/source/pretrained_model.rst) pickles `EasyDict(graph=..., solver=...)`: `graph` holds the
  graph's attributes with a "2" in their name, for a knowledge graph `entity2id` (QID -> row),
  `relation2id`, `id2entity`, `id2relation` (include/bind.h), and `solver` its numpy attributes,
  `entity_embeddings` and `relation_embeddings` (float32, one row per id). Unpickling normally
  needs the `easydict` package; the unpickler here maps EasyDict to a plain dict subclass and
  refuses every other class but numpy's array rebuilders, so a downloaded pickle cannot run code.

An entity without a vector (in no triple to train on, or absent from the GraphVite model) gets a zero
vector, counted in the manifest: zero says "no knowledge" where random noise would pass for some.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from preprocessing.config import KGEConfig
from preprocessing.dumpfiles import file_hash
from preprocessing.kg import KGFilesError
from storage.code import module_code_version
from storage.configio import device_name
from storage.errors import InputError
from storage.schemas import KG_ENTITIES, KG_RELATIONS, KG_TRIPLES, entity_embeddings
from storage.shards import (
    PartInfo,
    Provenance,
    ShardWriter,
    is_complete,
    part_paths,
    read_manifest,
    stable_hash,
)

log = logging.getLogger(__name__)

EMBEDDINGS = entity_embeddings(0)  # folder and manifest do not depend on the width: for lookups
_ROWS_PER_PART = 131_072  # 256 MB per part at GraphVite's 512 dims
# link-prediction scratch: TransE scores a query against a slice of candidates through a
# (batch, slice, dim) tensor; this many float32 elements (256 MB) bound it
_EVAL_SCRATCH = 1 << 26


class GraphViteFormatError(InputError, ValueError):
    """The pickle is not a GraphVite knowledge-graph model: the message names what was found."""

    fix = "set kge.graphvite_path to a GraphVite Wikidata5M model, e.g. transe_wikidata5m.pkl"




# ---------------------------------------------------------------- entry point


def write_entity_embeddings(
    run_dir: Path,
    cfg: KGEConfig,
    kg_ids: np.ndarray | None = None,
    progress: bool = True,
    exclude: np.ndarray | None = None,
) -> dict:
    """Write the vectors of `kg_ids` (all KG entities if None) as `entity_embeddings`; returns its manifest.

    `exclude`: [n, 3] (head, rel, tail) triples TransE must not train on (select's held-out facts).
    Returns at once when the dataset is complete for the same KG, config, ids, exclusions and code.
    """
    run_dir = Path(run_dir)
    ids = _requested_ids(run_dir, kg_ids)
    exclude = np.zeros((0, 3), np.int64) if exclude is None else np.asarray(exclude, np.int64).reshape(-1, 3)
    provenance = kge_provenance(run_dir, cfg, None if kg_ids is None else ids, exclude)
    if is_complete(run_dir, EMBEDDINGS, provenance.fingerprint):
        return read_manifest(run_dir, EMBEDDINGS)
    if cfg.source == "train":
        table, metrics = train_transe(run_dir, cfg, progress, exclude)
        vectors, extra = table[ids], {"method": "transe-pykeen", "metrics": metrics}
    else:
        vectors = load_graphvite(cfg.graphvite_path, run_dir, ids)
        extra = {"method": f"graphvite:{cfg.graphvite_path.name}"}
    writer = ShardWriter(run_dir, entity_embeddings(vectors.shape[1]), provenance).open()
    parts = _write_parts(writer, ids, vectors, progress)
    return writer.finalize(parts, extra={"dim": vectors.shape[1], **extra})


def kge_provenance(
    run_dir: Path, cfg: KGEConfig, kg_ids: np.ndarray | None, exclude: np.ndarray | None = None
) -> Provenance:
    inputs = [
        (d.name, read_manifest(run_dir, d)["fingerprint"]) for d in (KG_ENTITIES, KG_RELATIONS, KG_TRIPLES)
    ]
    if cfg.source == "graphvite":
        # the model file stands for every training setting; the path itself may move
        inputs.append(("graphvite", file_hash(_graphvite_file(cfg.graphvite_path))))
        config: dict = {"source": "graphvite"}
    else:
        # the device changes speed and float noise, not what the embeddings are
        config = cfg.model_dump(mode="json", exclude={"device", "graphvite_path"})
    config["kg_ids"] = None if kg_ids is None else hashlib.sha256(kg_ids.tobytes()).hexdigest()[:16]
    if exclude is not None and len(exclude) and cfg.source == "train":
        config["exclude"] = hashlib.sha256(np.ascontiguousarray(exclude, np.int64).tobytes()).hexdigest()[:16]
    return Provenance(stable_hash(config), tuple(inputs), module_code_version(__name__))


def _requested_ids(run_dir: Path, kg_ids: np.ndarray | None) -> np.ndarray:
    """Sorted distinct int64 kg_ids; every one must be an entity of the run's KG."""
    n_entities = read_manifest(run_dir, KG_ENTITIES)["rows"]
    if kg_ids is None:
        return np.arange(n_entities, dtype=np.int64)
    ids = np.unique(np.asarray(kg_ids, dtype=np.int64))
    bad = ids[(ids < 0) | (ids >= n_entities)]
    if len(bad):
        raise ValueError(f"kg_ids outside the KG's {n_entities} entities: {bad[:10].tolist()}")
    return ids


def _write_parts(writer: ShardWriter, ids: np.ndarray, vectors: np.ndarray, progress: bool) -> list[PartInfo]:
    # range over at least one row, so an empty request still writes an (empty) part to read
    starts = range(0, max(len(ids), 1), _ROWS_PER_PART)
    return [
        _write_part(writer, i, ids[s : s + _ROWS_PER_PART], vectors[s : s + _ROWS_PER_PART])
        for i, s in enumerate(tqdm(starts, desc="entity_embeddings", unit="part", disable=not progress))
    ]


def _write_part(writer: ShardWriter, index: int, ids: np.ndarray, vectors: np.ndarray) -> PartInfo:
    # counted per part: a check over all of GraphVite's rows at once would take gigabytes of scratch
    stats = {"entities": len(ids), "entities_without_vector": int((~vectors.any(axis=1)).sum())}
    return writer.write_part(index, [_table(ids, vectors)], stats)


def _table(ids: np.ndarray, vectors: np.ndarray) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    return pa.table(
        {
            "kg_id": pa.array(ids, pa.int32()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        }
    )


# ---------------------------------------------------------------- TransE with PyKEEN


def train_transe(
    run_dir: Path, cfg: KGEConfig, progress: bool = False, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, dict]:
    """TransE on the run's KG: (float32 [n_entities, dim] with row i = kg_id i, metrics).

    `exclude` [n, 3]: triples left out of training and evaluation altogether (select's held-out facts).
    The metrics hold the triple counts, the untrained (zeroed) entities and, when triples are held
    out, the filtered link-prediction MRR / Hits@10 and the MRR of random scoring.
    """
    import torch
    from pykeen.triples import CoreTriplesFactory
    from pykeen.utils import set_random_seed

    set_random_seed(cfg.seed)  # numpy, torch and python: the batch order draws from them
    n_entities = read_manifest(run_dir, KG_ENTITIES)["rows"]
    n_relations = read_manifest(run_dir, KG_RELATIONS)["rows"]
    triples, excluded = _without(read_triples(run_dir), exclude)
    triples = torch.from_numpy(triples)
    # a duplicate split across train and test would be a free hit
    unique = torch.unique(triples, dim=0)
    metrics: dict = {
        "triples": len(triples) + excluded,
        "triples_excluded": excluded,
        "triples_duplicate": len(triples) - len(unique),
    }
    if not len(unique):
        metrics["entities_untrained"] = n_entities
        return np.zeros((n_entities, cfg.dim), np.float32), metrics
    factory = CoreTriplesFactory.create(unique, num_entities=n_entities, num_relations=n_relations)
    train, held_out = _split(factory, cfg)
    model = _fit(train, cfg, progress)
    vectors = model.entity_representations[0]().detach().cpu().numpy().astype(np.float32)
    trained = np.zeros(n_entities, dtype=bool)
    trained[train.mapped_triples[:, [0, 2]].reshape(-1).numpy()] = True
    vectors[~trained] = 0
    metrics.update(triples_train=train.num_triples, entities_untrained=int((~trained).sum()))
    if held_out is not None:
        metrics.update(_evaluate(model, train, held_out, cfg.dim))
    return vectors, metrics


def read_triples(run_dir: Path) -> np.ndarray:
    """[n, 3] int64 (head, rel, tail) of the run's KG, in part order."""
    return triple_array(part_paths(run_dir, KG_TRIPLES))


def triple_array(paths) -> np.ndarray:
    """[n, 3] int64 (head, rel, tail) of Parquet parts with those columns ([0, 3] when they hold none)."""
    tables = [pq.read_table(p, columns=["head", "rel", "tail"]) for p in paths]
    if not sum(t.num_rows for t in tables):
        return np.zeros((0, 3), np.int64)
    columns = [np.concatenate([t[c].to_numpy() for t in tables]) for c in ("head", "rel", "tail")]
    return np.stack(columns, axis=1).astype(np.int64)


def _without(triples: np.ndarray, exclude: np.ndarray | None) -> tuple[np.ndarray, int]:
    """(the triples not in `exclude`, how many rows were dropped): every copy of an excluded triple goes."""
    if exclude is None or not len(exclude):
        return triples, 0
    both = np.concatenate([triples, np.asarray(exclude, np.int64)])
    _, inverse = np.unique(both, axis=0, return_inverse=True)
    drop = np.isin(inverse.reshape(-1)[: len(triples)], inverse.reshape(-1)[len(triples) :])
    return triples[~drop], int(drop.sum())


def _split(factory, cfg: KGEConfig):
    """(train, held-out or None): held-out triples whose entities and relation all stay in training, so
    every evaluated id has been trained. (PyKEEN's `split` instead demands a training set covering every
    entity within its ratio, and fails on a KG of many degree-1 entities, as Wikidata5M is.)"""
    n_eval = min(cfg.eval_triples, factory.num_triples // 10)
    held = _evaluable(factory.mapped_triples, n_eval, cfg.seed) if n_eval else []
    if not len(held):
        return factory, None
    keep = np.ones(factory.num_triples, dtype=bool)
    keep[held] = False
    exchange, triples = factory.clone_and_exchange_triples, factory.mapped_triples
    return exchange(triples[keep]), exchange(triples[held])


def _evaluable(triples, n: int, seed: int) -> list[int]:
    """Up to n triple indices, drawn in a seeded order, each leaving its head, relation and tail at least
    one other training triple (counts are decremented as triples are taken, so two picks cannot orphan
    an entity together)."""
    ids = triples.numpy()
    entity_left = np.bincount(ids[:, [0, 2]].reshape(-1))
    relation_left = np.bincount(ids[:, 1])
    taken: list[int] = []
    for i in np.random.default_rng(seed).permutation(len(ids)):
        head, rel, tail = ids[i]
        if head == tail or entity_left[head] < 2 or entity_left[tail] < 2 or relation_left[rel] < 2:
            continue
        entity_left[[head, tail]] -= 1
        relation_left[rel] -= 1
        taken.append(int(i))
        if len(taken) == n:
            break
    return taken


def _fit(train, cfg: KGEConfig, progress: bool):
    import torch
    from pykeen.models import TransE
    from pykeen.training import SLCWATrainingLoop

    device = torch.device(device_name(cfg.device))
    model = TransE(triples_factory=train, embedding_dim=cfg.dim, random_seed=cfg.seed).to(device)
    optimizer = torch.optim.Adam(model.get_grad_params(), lr=cfg.learning_rate)
    # the memory probe would run a whole extra epoch; a batch of triples needs little memory anyway
    loop = SLCWATrainingLoop(
        model=model, triples_factory=train, optimizer=optimizer, automatic_memory_optimization=False
    )
    # PyKEEN runs a full gc.collect() after every epoch; with torch and PyKEEN loaded that walks
    # some 300k objects (0.1-0.2 s), more than an epoch of a small KG takes. Frozen objects are
    # skipped, so each collect walks only what training allocated.
    gc.freeze()
    try:
        losses = loop.train(
            triples_factory=train,
            num_epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            use_tqdm=progress,
            use_tqdm_batch=False,
            pin_memory=device.type == "cuda",  # pinned pages only speed up copies to a GPU
        )
    finally:
        gc.unfreeze()
    log.info("TransE: %d epochs on %s, final loss %.4f", cfg.epochs, device, losses[-1])
    return model


def _evaluate(model, train, held_out, dim: int) -> dict:
    """Filtered rank-based link prediction on the held-out triples (heads and tails)."""
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.metrics.ranking import InverseHarmonicMeanRank

    # the buffers are kept after finalize: their candidate counts give the random baseline
    evaluator = RankBasedEvaluator(
        filtered=True,
        metrics=["inverse_harmonic_mean_rank", "hits_at_k"],
        metrics_kwargs=[None, {"k": 10}],
        add_defaults=False,
        clear_on_finalize=False,
    )
    # sizes are ours (below); torch_max_mem, which would tune them on CUDA only, warns about every CPU run
    logging.getLogger("torch_max_mem").setLevel(logging.ERROR)
    slice_size = max(1, min(model.num_entities, _EVAL_SCRATCH // dim))
    batch_size = max(1, _EVAL_SCRATCH // (slice_size * dim))
    results = evaluator.evaluate(
        model,
        held_out.mapped_triples,
        batch_size=batch_size,
        slice_size=slice_size,
        use_tqdm=False,
        additional_filter_triples=[train.mapped_triples],
    )
    candidates = np.concatenate([c for side in evaluator.num_candidates.values() for c in side])
    evaluator.clear()
    return {
        "eval_triples": held_out.num_triples,
        "mrr": results.get_metric("both.realistic.inverse_harmonic_mean_rank"),
        "hits_at_10": results.get_metric("both.realistic.hits_at_10"),
        # E[1/rank] when each query's rank is uniform over its filtered candidates: H(N) / N
        "random_mrr": InverseHarmonicMeanRank().expected_value(num_candidates=candidates),
    }


# ---------------------------------------------------------------- GraphVite models


def load_graphvite(path: Path, run_dir: Path, kg_ids: np.ndarray | None = None) -> np.ndarray:
    """The GraphVite vectors of `kg_ids` (all KG entities if None), in that order, as float32 rows.

    GraphVite's rows are found by QID; an entity the model lacks gets a zero row (logged, and counted
    by `write_entity_embeddings`). Rows are copied out for the requested ids only: the TransE model
    is 9.4 GB of vectors, and a second full copy would double the peak memory.
    """
    model = _read_graphvite_pickle(Path(path))
    entity2id, table = model["graph"]["entity2id"], np.asarray(model["solver"]["entity_embeddings"])
    qids = _qids(run_dir)
    ids = np.arange(len(qids)) if kg_ids is None else np.asarray(kg_ids, dtype=np.int64)
    rows = np.fromiter((entity2id.get(q, -1) for q in qids[ids]), dtype=np.int64, count=len(ids))
    found = rows >= 0
    if found.any() and rows.max() >= len(table):
        raise GraphViteFormatError(f"{path}: entity2id points past the {len(table)} embedding rows")
    vectors = np.zeros((len(ids), table.shape[1]), dtype=np.float32)
    vectors[found] = table[rows[found]]
    log.info("GraphVite %s: %d of %d entities have no vector", Path(path).name, (~found).sum(), len(ids))
    return vectors


class _AttrDict(dict):
    """Stands in for easydict.EasyDict: a dict subclass, so the pickled attributes land in __dict__."""


# numpy's array and dtype rebuilders, under numpy 1 (numpy.core) and numpy 2 (numpy._core) names
_NUMPY_NAMES = {"_reconstruct", "_frombuffer", "ndarray", "dtype", "scalar"}


class _GraphViteUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) == ("easydict", "EasyDict"):
            return _AttrDict
        if module.split(".")[0] == "numpy" and name in _NUMPY_NAMES:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):  # how protocol 2 spells bytes: a pure function
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a GraphVite model holds no {module}.{name}: refusing to load it")


def _graphvite_file(path: Path) -> Path:
    if not path.is_file():
        raise KGFilesError(
            f"GraphVite model {path} not found",
            fix="download e.g. transe_wikidata5m.pkl (GraphVite's pretrained Wikidata5M models, linked "
            "from its docs) or set kge.graphvite_path",
        )
    return path


def _read_graphvite_pickle(path: Path) -> dict:
    log.info("reading GraphVite model %s (%.1f GB)", path, _graphvite_file(path).stat().st_size / 1e9)
    with path.open("rb") as f:
        try:
            model = _GraphViteUnpickler(f).load()
        except pickle.UnpicklingError as e:
            raise GraphViteFormatError(f"{path}: {e}") from e
    if not isinstance(model, dict):
        raise GraphViteFormatError(
            f"{path}: expected a GraphVite model (a dict), found a {type(model).__name__}"
        )
    graph, solver = model.get("graph") or {}, model.get("solver") or {}
    if "entity2id" not in graph or "entity_embeddings" not in solver:
        raise GraphViteFormatError(
            f"{path}: expected graph.entity2id and solver.entity_embeddings (a GraphVite knowledge-graph "
            f"model), found graph keys {sorted(graph)} and solver keys {sorted(solver)}"
        )
    return model


def _qids(run_dir: Path) -> np.ndarray:
    """QID of every kg_id (object array indexed by kg_id)."""
    tables = [pq.read_table(p, columns=["kg_id", "qid"]) for p in part_paths(run_dir, KG_ENTITIES)]
    qids = np.empty(read_manifest(run_dir, KG_ENTITIES)["rows"], dtype=object)
    for t in tables:
        qids[t["kg_id"].to_numpy()] = t["qid"].to_numpy(zero_copy_only=False)
    return qids
