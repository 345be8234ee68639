import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from preprocessing.kg import KGConfig, load_kg
from preprocessing.kge import (
    EMBEDDINGS,
    GraphViteFormatError,
    KGEConfig,
    load_graphvite,
    train_transe,
    write_entity_embeddings,
)
from storage.schemas import KG_ENTITIES, KG_TRIPLES, entity_embeddings
from storage.shards import part_paths

SAMPLE_KG = Path(__file__).resolve().parents[1] / "sample" / "wikidata5m"
# small and quick, yet enough steps for TransE to learn the sample KG (6 batches x 40 epochs)
FAST = {"dim": 32, "epochs": 40, "batch_size": 128, "learning_rate": 0.02}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The sample KG's tensors are tiny, and some ops (Adam's sqrt) enter a parallel region whatever
    their size: on a loaded 2-core machine each waits for a descheduled second thread (8 ms per sqrt
    measured; default TransE on the sample took 27 s on two threads, 0.3 s on one)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("kge") / "run"
    load_kg(KGConfig(path=SAMPLE_KG), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def trained(sample_run):
    return train_transe(sample_run, KGEConfig(**FAST))


def read_embeddings(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(part_paths(run_dir, EMBEDDINGS)[0])
    return table["kg_id"].to_numpy(), np.stack(table["vector"].to_numpy(zero_copy_only=False))


def true_and_corrupted_distance(vectors: np.ndarray, triples: np.ndarray) -> tuple[float, float]:
    """Mean TransE distance |h + r - t| of the triples and of the same triples with shuffled tails,
    r fitted to the rows as the mean offset t - h of each relation's triples."""
    h, rel, t = triples.T
    relations = np.zeros((rel.max() + 1, vectors.shape[1]), np.float32)
    for r in np.unique(rel):
        relations[r] = (vectors[t[rel == r]] - vectors[h[rel == r]]).mean(axis=0)
    shuffled = np.random.default_rng(0).permutation(t)
    true = np.abs(vectors[h] + relations[rel] - vectors[t]).sum(axis=1).mean()
    corrupted = np.abs(vectors[h] + relations[rel] - vectors[shuffled]).sum(axis=1).mean()
    return true, corrupted


# ---------------------------------------------------------------- TransE


def test_transe_beats_random_scoring_on_held_out_triples(trained):
    vectors, metrics = trained
    assert vectors.shape == (282, 32) and vectors.dtype == np.float32
    assert metrics["eval_triples"] >= 50 and metrics["triples_train"] + metrics["eval_triples"] == 800
    # 282 candidates: random scoring gets H(N)/N ~ 0.022
    assert 0.015 < metrics["random_mrr"] < 0.03
    assert metrics["mrr"] > 3 * metrics["random_mrr"]
    assert metrics["hits_at_10"] > 0.2


def test_row_i_is_kg_id_i(sample_run, trained):
    """TransE puts h + r near t: true triples are closer than ones with shuffled tails only when row i
    of the matrix is the entity with kg_id i (shuffled rows lose the difference)."""
    vectors, _ = trained
    triples = pq.read_table(part_paths(sample_run, KG_TRIPLES)[0]).to_pandas().to_numpy()
    true, corrupted = true_and_corrupted_distance(vectors, triples)
    assert true < 0.75 * corrupted
    shuffled_rows = vectors[np.random.default_rng(1).permutation(len(vectors))]
    true, corrupted = true_and_corrupted_distance(shuffled_rows, triples)
    assert true > 0.85 * corrupted


def test_training_is_deterministic_for_a_seed(sample_run, trained):
    again, metrics = train_transe(sample_run, KGEConfig(**FAST))
    np.testing.assert_array_equal(again, trained[0])
    assert metrics == trained[1]


# ---------------------------------------------------------------- the dataset


def test_writes_the_requested_entities_with_schema_and_dim(sample_run, trained):
    manifest = write_entity_embeddings(
        sample_run, KGEConfig(**FAST), np.array([5, 3, 3, 200]), progress=False
    )
    assert manifest["dim"] == 32 and manifest["method"] == "transe-pykeen"
    assert manifest["rows"] == 3 and manifest["stats"]["entities"] == 3
    assert manifest["metrics"]["mrr"] == trained[1]["mrr"]
    path = part_paths(sample_run, EMBEDDINGS)[0]
    assert pq.read_schema(path).remove_metadata() == entity_embeddings(32).schema
    kg_ids, vectors = read_embeddings(sample_run)
    assert kg_ids.tolist() == [3, 5, 200]
    np.testing.assert_array_equal(vectors, trained[0][[3, 5, 200]])


class Retrained(Exception):
    pass


def test_second_run_returns_at_once_and_other_ids_rewrite(sample_run, monkeypatch):
    cfg = KGEConfig(**FAST)
    first = write_entity_embeddings(sample_run, cfg, np.array([1, 2]), progress=False)

    def retrain(*args, **kwargs):
        raise Retrained

    monkeypatch.setattr("preprocessing.kge.train_transe", retrain)
    # the device is not part of the provenance: it changes speed, not the embeddings
    again = write_entity_embeddings(sample_run, cfg.model_copy(update={"device": "cpu"}), np.array([2, 1]))
    assert again == first
    with pytest.raises(Retrained):
        write_entity_embeddings(sample_run, cfg, np.array([1, 2, 3]), progress=False)


def test_unknown_kg_ids_are_a_clear_error(sample_run):
    with pytest.raises(ValueError, match=r"outside the KG's 282 entities: \[282\]"):
        write_entity_embeddings(sample_run, KGEConfig(**FAST), np.array([0, 282]), progress=False)


# ---------------------------------------------------------------- GraphVite


class EasyDict(dict):
    """easydict.EasyDict as GraphVite pickles it: a dict whose keys are mirrored as attributes."""

    __module__ = "easydict"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.__dict__.update(kwargs)


def write_graphvite_model(path: Path, qids: list[str], dim: int = 8) -> dict:
    """A model as GraphVite's `save_model` pickles it (protocol 4, GraphVite's HIGHEST_PROTOCOL on
    Python 3.7): graph.entity2id / relation2id / id2entity / id2relation, solver.*_embeddings."""
    id2entity = list(qids)
    entity2id = {q: i for i, q in enumerate(id2entity)}
    model = EasyDict(
        graph=EasyDict(entity2id=entity2id, relation2id={"P31": 0}, id2entity=id2entity, id2relation=["P31"]),
        solver=EasyDict(
            entity_embeddings=np.arange(len(qids) * dim, dtype=np.float32).reshape(-1, dim) + 1,
            relation_embeddings=np.ones((1, dim), np.float32),
        ),
    )
    with path.open("wb") as f:
        pickle.dump(model, f, protocol=4)
    return model


@pytest.fixture
def graphvite_model(tmp_path, monkeypatch, sample_run):
    """(pickle path, the model, our QIDs by kg_id): GraphVite's rows in an order of their own (ours
    reversed), kg_ids 7 and 100 missing, and an entity our KG lacks."""
    monkeypatch.setitem(sys.modules, "easydict", types.SimpleNamespace(EasyDict=EasyDict))
    ours = pq.read_table(part_paths(sample_run, KG_ENTITIES)[0])["qid"].to_pylist()
    theirs = [q for i, q in enumerate(ours) if i not in (7, 100)][::-1] + ["Q999999999"]
    path = tmp_path / "transe_wikidata5m.pkl"
    model = write_graphvite_model(path, theirs)
    monkeypatch.delitem(sys.modules, "easydict")  # loading must not need the package
    return path, model, ours


def test_graphvite_rows_are_found_by_qid_and_missing_entities_are_zero(sample_run, graphvite_model):
    path, model, ours = graphvite_model
    vectors = load_graphvite(path, sample_run)
    assert vectors.shape == (282, 8) and vectors.dtype == np.float32
    table, entity2id = model["solver"]["entity_embeddings"], model["graph"]["entity2id"]
    for kg_id, qid in enumerate(ours):
        expected = np.zeros(8) if kg_id in (7, 100) else table[entity2id[qid]]
        np.testing.assert_array_equal(vectors[kg_id], expected)
    np.testing.assert_array_equal(load_graphvite(path, sample_run, np.array([100, 3])), vectors[[100, 3]])


def test_graphvite_dataset_counts_the_entities_without_a_vector(sample_run, graphvite_model):
    path, model, ours = graphvite_model
    cfg = KGEConfig(source="graphvite", graphvite_path=path)
    manifest = write_entity_embeddings(sample_run, cfg, progress=False)
    assert manifest["dim"] == 8 and manifest["method"] == "graphvite:transe_wikidata5m.pkl"
    assert manifest["rows"] == 282 and manifest["stats"]["entities_without_vector"] == 2
    assert (
        pq.read_schema(part_paths(sample_run, EMBEDDINGS)[0]).remove_metadata() == entity_embeddings(8).schema
    )
    kg_ids, vectors = read_embeddings(sample_run)
    assert kg_ids.tolist() == list(range(282))
    np.testing.assert_array_equal(
        vectors[5], model["solver"]["entity_embeddings"][model["graph"]["entity2id"][ours[5]]]
    )


def test_a_model_pickled_by_numpy_1_loads(sample_run, graphvite_model, monkeypatch):
    """GraphVite's models were pickled under numpy 1, whose array rebuilder numpy 2 renamed
    (numpy.core -> numpy._core). Protocol 2 names globals in plain text, so the bytes can be renamed."""
    path, model, _ = graphvite_model
    monkeypatch.setitem(sys.modules, "easydict", types.SimpleNamespace(EasyDict=EasyDict))
    old = pickle.dumps(model, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in old
    monkeypatch.delitem(sys.modules, "easydict")
    expected = load_graphvite(path, sample_run)
    path.write_bytes(old)
    np.testing.assert_array_equal(load_graphvite(path, sample_run), expected)


class Payload:
    def __reduce__(self):
        return (print, ("this ran while unpickling",))


def test_graphvite_loader_runs_no_foreign_code_and_names_what_it_found(sample_run, tmp_path, capsys):
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"graph": Payload()}, protocol=4))
    with pytest.raises(GraphViteFormatError, match="holds no builtins.print"):
        load_graphvite(evil, sample_run)
    assert "this ran" not in capsys.readouterr().out
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"graph": {"name2id": {}}, "solver": {}}, protocol=4))
    with pytest.raises(GraphViteFormatError, match=r"found graph keys \['name2id'\] and solver keys \[\]"):
        load_graphvite(other, sample_run)


def test_graphvite_source_needs_a_model_file(sample_run, tmp_path):
    with pytest.raises(ValidationError, match="graphvite_path"):
        KGEConfig(source="graphvite")
    cfg = KGEConfig(source="graphvite", graphvite_path=tmp_path / "transe_wikidata5m.pkl")
    with pytest.raises(FileNotFoundError, match="transe_wikidata5m.pkl not found: download"):
        write_entity_embeddings(sample_run, cfg, progress=False)


def test_held_out_split_on_a_kg_of_degree_one_entities(hub_kg_small, tmp_path):
    """Wikidata5M's shape: most entities close one triple (here 6,000 leaves on two hub tails). PyKEEN's
    coverage split failed there ("Could not find a coverage of all entities"); held-out triples now come
    only from those whose entities and relation keep another training triple."""
    import torch
    from pykeen.triples import CoreTriplesFactory

    from preprocessing.kge import _split

    load_kg(KGConfig(path=hub_kg_small), tmp_path, progress=False)
    triples = torch.from_numpy(
        np.stack(
            [
                np.concatenate(
                    [t[c].to_numpy() for t in map(pq.read_table, part_paths(tmp_path, KG_TRIPLES))]
                )
                for c in ("head", "rel", "tail")
            ],
            axis=1,
        ).astype(np.int64)
    )
    factory = CoreTriplesFactory.create(triples, num_entities=20_000, num_relations=33)
    train, held_out = _split(factory, KGEConfig(eval_triples=1000))  # a tenth: 680
    assert 500 <= held_out.num_triples <= 680  # only triples between entities of degree >= 2 qualify
    assert train.num_triples + held_out.num_triples == factory.num_triples
    trained_ids = set(train.mapped_triples[:, [0, 2]].reshape(-1).tolist())
    assert set(held_out.mapped_triples[:, [0, 2]].reshape(-1).tolist()) <= trained_ids
    assert set(held_out.mapped_triples[:, 1].tolist()) <= set(train.mapped_triples[:, 1].tolist())
    again = _split(factory, KGEConfig(eval_triples=1000))[1]
    assert torch.equal(again.mapped_triples, held_out.mapped_triples)  # seeded
