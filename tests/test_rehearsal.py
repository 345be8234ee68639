"""The `enwiki` preset itself, download -> evaluate, on production-shaped stand-ins: a byte-level BPE RoBERTa
made here as SI encoder, backbone and evaluated baseline, a Wikidata5M-format KG with hub tails of degree
10,000, 2 ranks through the deepspeed launcher under the preset's ZeRO-2. Only the settings listed in
`production_fixtures.enwiki_rehearsal` (each with its reason: a location or a size) differ from the preset;
the test checks that the run's saved config equals the shipped preset everywhere else."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from flows.config import load_config
from storage.tokens import in_text_ids

# the whole pipeline runs in the session fixture `rehearsal_run` (conftest): about 3 min on an idle 2-core
# machine, shared with tests/test_readme.py
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def rehearsal(rehearsal_run):
    return rehearsal_run.run_dir, rehearsal_run.settings, rehearsal_run.model


def _sql(run_dir: Path, query: str) -> list[tuple]:
    from storage import duck

    conn, _ = duck.connect(run_dir)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_everything_but_the_listed_overrides_runs_as_shipped(rehearsal, monkeypatch):
    import yaml

    run_dir, settings, _ = rehearsal
    monkeypatch.setenv("TRELM_EVAL_DATA", str(run_dir.parents[2] / "eval-data"))  # as the run expanded it
    saved = _flatten(yaml.safe_load((run_dir / "config.yaml").read_text()))
    shipped = _flatten(load_config("enwiki").model_dump(mode="json"))
    differ = {k for k in shipped if saved.get(k) != shipped[k]} - {"data_root", "run", "download.date"}
    assert differ <= set(settings), sorted(differ - set(settings))
    assert (shipped["download.date"], saved["download.date"]) == ("latest", "20260301")  # resolved, not set
    assert saved["preset"] == "enwiki" and saved["pretrain.train.zero_stage"] == 2


def test_cka_targets_are_tail_labels_as_they_read_in_text(rehearsal):
    from transformers import AutoTokenizer

    run_dir, _, model = rehearsal
    rows = _sql(
        run_dir,
        "SELECT DISTINCT k.label, e.tail_ids FROM instances, unnest(entities) AS t(e) "
        "JOIN kg_entities k ON k.kg_id = e.tail_kg_id WHERE e.important",
    )
    assert len(rows) >= 5
    tokenizer = AutoTokenizer.from_pretrained(model)
    expected = in_text_ids(tokenizer, [label for label, _ in rows])
    assert [ids for _, ids in rows] == [ids[:8] for ids in expected]  # select.max_tail_tokens: 8
    assert all(tokenizer.convert_ids_to_tokens(ids)[0].startswith("Ġ") for _, ids in rows)
    assert _sql(run_dir, "SELECT max(degree) >= 10000, max(kg_id) >= 599999 FROM kg_entities") == [
        (True, True)
    ]


def test_exports_load_as_roberta_and_the_report_is_written(rehearsal):
    from transformers import AutoModelForMaskedLM, RobertaForMaskedLM

    run_dir, _, _ = rehearsal
    for name in ("trelm", "mlm_only"):
        export = run_dir / "checkpoints" / name / "hf"
        assert isinstance(AutoModelForMaskedLM.from_pretrained(export), RobertaForMaskedLM)
        state = json.loads(
            (run_dir / "checkpoints" / name / "step-00000004" / "trainer_state.json").read_text()
        )
        assert (state["world"], state["zero_stage"]) == (2, 2)
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    text = json.dumps(report)
    assert "kg-probe" in text and "not run" in text  # the probe ran; downstream data is absent here
    steps = duckdb.sql(
        "SELECT max(step) FROM read_parquet($f)",
        params={
            "f": [str(p) for p in (run_dir / "checkpoints" / "trelm" / "train_log" / "v2").glob("*.parquet")]
        },
    ).fetchall()
    assert steps == [(4,)]


def test_every_test_of_the_whole_run_shares_its_worker(request):
    """Under `make test`'s xdist workers a test that takes `rehearsal_run` outside the group would build
    the run a second time, on the same rendezvous port (the first try of the grouping split them)."""
    from conftest import REHEARSAL, worker_group

    items = request.session.items  # the whole suite's under `make test`
    takers = {item.path for item in items if "rehearsal_run" in item.fixturenames}
    assert all(worker_group(path) == REHEARSAL for path in takers)
    assert worker_group(Path(__file__)) == REHEARSAL  # through this file's `rehearsal` fixture
    storage = Path(__file__).with_name("test_storage.py")
    assert worker_group(storage) == str(storage)
