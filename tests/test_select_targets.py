"""CKA target policy and the held-out split of `select` (issue 12), on a hand-made KG in the real schemas."""

from collections import Counter

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from preprocessing.kge import KGEConfig, train_transe
from preprocessing.select import (
    SelectConfig,
    chosen_triples,
    held_out_mask,
    read_held_out,
    read_triples,
    triple_keys,
)
from storage.schemas import KG_ENTITIES, KG_RELATIONS, KG_TRIPLES
from storage.shards import Provenance, ShardWriter

N_HEADS, N_TAILS, PER_HEAD = 40, 12, 6
HUB = N_HEADS  # the first tail: it closes a triple of every head, so it has the highest degree


def _write(run_dir, dataset, columns: dict) -> None:
    writer = ShardWriter(run_dir, dataset, Provenance(dataset.name, (), "test")).open()
    table = pa.table(columns).cast(dataset.schema)
    writer.finalize([writer.write_part(0, [table])])


@pytest.fixture(scope="module")
def kg_run(tmp_path_factory):
    """40 heads with 6 triples each: (head, r0, HUB) and five (head, r_k, a random non-hub tail)."""
    run_dir = tmp_path_factory.mktemp("targets")
    rng = np.random.default_rng(0)
    rows = []
    for head in range(N_HEADS):
        rows.append((head, 0, HUB))
        tails = rng.choice(np.arange(HUB + 1, HUB + N_TAILS), size=PER_HEAD - 1, replace=False)
        rows += [(head, k + 1, int(t)) for k, t in enumerate(tails)]
    triples = np.array(rows)
    n = HUB + N_TAILS
    degree = np.bincount(triples[:, [0, 2]].reshape(-1), minlength=n)
    _write(run_dir, KG_ENTITIES, {
        "kg_id": range(n), "qid": [f"Q{i}" for i in range(n)], "label": [f"e{i}" for i in range(n)],
        "aliases": [[]] * n, "description": [None] * n, "degree": degree.tolist(),
    })  # fmt: skip
    _write(run_dir, KG_RELATIONS, {
        "rel_id": range(PER_HEAD), "pid": [f"P{i}" for i in range(PER_HEAD)], "label": ["r"] * PER_HEAD,
        "aliases": [[]] * PER_HEAD,
    })  # fmt: skip
    _write(run_dir, KG_TRIPLES, {"head": triples[:, 0], "rel": triples[:, 1], "tail": triples[:, 2]})
    return run_dir


def _targets(run_dir, **cfg) -> dict[int, tuple[int, int]]:
    with duckdb.connect() as conn:
        best = chosen_triples(conn, SelectConfig(**cfg), run_dir)
    return {int(h): (int(r), int(t)) for h, r, t in zip(best["head"], best["rel"], best["tail"], strict=True)}


def test_highest_degree_policy_collapses_onto_the_hub(kg_run):
    targets = _targets(kg_run, target_policy="highest_degree", held_out_fraction=0)
    assert set(targets.values()) == {(0, HUB)}


def test_uniform_policy_spreads_over_each_heads_triples(kg_run):
    targets = _targets(kg_run, target_policy="uniform", held_out_fraction=0)
    triples = {tuple(t) for t in read_triples(kg_run).tolist()}
    assert len(targets) == N_HEADS and all((h, *rt) in triples for h, rt in targets.items())
    relations = Counter(r for r, _ in targets.values())
    # uniform over 6 relations for 40 heads: every relation chosen, none for more than half the heads
    assert len(relations) == PER_HEAD and max(relations.values()) < N_HEADS // 2
    assert sum(t == HUB for _, t in targets.values()) < N_HEADS // 3


def test_uniform_policy_is_seeded(kg_run):
    first = _targets(kg_run, held_out_fraction=0, target_seed=1)
    assert first == _targets(kg_run, held_out_fraction=0, target_seed=1)
    assert first != _targets(kg_run, held_out_fraction=0, target_seed=2)


def test_keys_do_not_depend_on_the_triples_order():
    triples = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    keys = triple_keys(triples, seed=3, salt=1)
    assert np.array_equal(triple_keys(triples[::-1], seed=3, salt=1), keys[::-1])
    assert ((keys >= 0) & (keys < 1)).all() and len(set(keys)) == 3


def test_held_out_fraction_per_head_keeps_one_triple():
    heads = np.repeat(np.arange(300), 3)
    triples = np.stack([heads, np.tile(np.arange(3), 300), np.arange(900)], 1)
    held = held_out_mask(triples, 1 / 3, seed=0)
    per_head = np.bincount(heads[held], minlength=300)
    assert per_head.max() <= 2 and held.mean() == pytest.approx(1 / 3, abs=0.05)
    single = held_out_mask(np.array([[0, 0, 1], [1, 0, 2]]), 0.9, seed=0)
    assert not single.any()  # a head's only triple is never held out
    assert not held_out_mask(triples, 0.0, seed=0).any()


@pytest.mark.parametrize("policy", ["uniform", "highest_degree"])
def test_no_held_out_triple_is_a_cka_target(kg_run, policy):
    targets = _targets(kg_run, target_policy=policy, held_out_fraction=0.5, target_seed=4)
    held = {tuple(t) for t in read_held_out(kg_run).tolist()}
    assert len(held) >= N_HEADS * 2  # about half of the 240 triples, each head keeping at least one
    assert not {(h, *rt) for h, rt in targets.items()} & held
    assert len(targets) == N_HEADS  # every head still has a (kept) target


def test_held_out_triples_are_not_in_the_kge_training_set(kg_run):
    _targets(kg_run, held_out_fraction=0.5, target_seed=4)
    held = read_held_out(kg_run)
    cfg = KGEConfig(dim=8, epochs=1, batch_size=64, eval_triples=0)
    captured = {}

    import preprocessing.kge as kge

    fit = kge._fit

    def spy(train, cfg, progress):
        captured["train"] = {tuple(t) for t in train.mapped_triples.tolist()}
        return fit(train, cfg, progress)

    kge._fit = spy
    try:
        _, metrics = train_transe(kg_run, cfg, exclude=held)
    finally:
        kge._fit = fit
    assert metrics["triples_excluded"] == len(held)
    assert not captured["train"] & {tuple(t) for t in held.tolist()}
    assert len(captured["train"]) == N_HEADS * PER_HEAD - len(held)
