"""Operations of the `trelm` flow: a new dump on the mirror, "nothing new", the run-folder lock, runners."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mirror_server import serve_mirror
from prefect.testing.utilities import prefect_test_harness

from flows import evaluate, ops, pipeline, pretrain, stages
from flows.config import load_config
from flows.pipeline import trelm
from flows.report import stage_table
from preprocessing.download import DumpNotFoundError
from storage.errors import RetryableError
from storage.schemas import PAGES
from storage.shards import MANIFEST, dataset_dir

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MIRROR = ROOT / "sample" / "mirror"


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _finish_run(wiki_dir: Path, done: str, new: str) -> None:
    """Publish run `new` as finished: the files of run `done` under the new run's names, as the mirror
    does once every job of a run is done (its dumpstatus.json gains the files and `done` states)."""
    status = json.loads((wiki_dir / done / "dumpstatus.json").read_text().replace(done, new))
    shutil.rmtree(wiki_dir / new)
    (wiki_dir / new).mkdir()
    for old_file in (wiki_dir / done).iterdir():
        (wiki_dir / new / old_file.name.replace(done, new)).write_bytes(old_file.read_bytes())
    (wiki_dir / new / "dumpstatus.json").write_text(json.dumps(status))


def _file_requests(mirror) -> int:
    return len([r for r in mirror.requests if r.path.endswith((".bz2", ".gz"))])


def test_new_dump_runs_once_into_its_own_folder(prefect_api, tmp_path):
    root = tmp_path / "mirror"
    shutil.copytree(SAMPLE_MIRROR, root)
    with serve_mirror(root) as mirror:
        overrides = [f"download.mirror={mirror.url}", f"data_root={tmp_path / 'data'}", "progress=false"]
        cfg = load_config("sample", [*overrides, "ingest.workers=1", "orchestration.run_until=ingest"])
        first = trelm(config=cfg)  # 20260320 is still running on the mirror: 20260301 is the newest
        assert first["date"] == "20260301"
        old_run = Path(first["run_dir"])
        record = json.loads((old_run / ops.RECORD_NAME).read_text())
        assert (record["date"], record["config_hash"]) == ("20260301", ops.outputs_hash(cfg))
        fetched = _file_requests(mirror)

        state = trelm(config=cfg, return_state=True)  # the schedule fires again: nothing new
        assert state.is_completed() and state.name == "NothingNew"
        assert str(old_run) in state.message and "20260301" in state.message
        assert state.result()["run_dir"] == str(old_run)
        assert _file_requests(mirror) == fetched

        other = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"pages_per_part": 30})})
        assert trelm(config=other)["run_dir"] == str(old_run)  # same dump, other config: processed again
        back = trelm(config=cfg)  # and back: the record was the other config's
        assert back["stages"]["ingest"] == first["stages"]["ingest"]
        old_files = {p: p.stat().st_mtime_ns for p in old_run.rglob("*") if p.is_file()}

        _finish_run(root / "enwiki", "20260301", "20260320")
        newer = trelm(config=cfg)
        assert newer["date"] == "20260320"
        new_run = Path(newer["run_dir"])
        assert new_run.name == "enwiki-20260320" and (new_run / ops.RECORD_NAME).exists()
        assert newer["stages"]["ingest"] == first["stages"]["ingest"]  # the same pages, renamed
    # the earlier run is untouched
    assert {p: p.stat().st_mtime_ns for p in old_run.rglob("*") if p.is_file()} == old_files
    assert (
        json.loads((dataset_dir(old_run, PAGES) / MANIFEST).read_text())["rows"]
        == newer["stages"]["ingest"]["rows"]
    )


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from flows.ops import run_lock
    run_dir, seconds = Path(sys.argv[1]), float(sys.argv[2])
    with run_lock(run_dir, 0, {"host": "test", "pid": 1, "flow_run": "holder-run"}):
        print("held", flush=True)
        time.sleep(seconds)
        (run_dir / "holder-done").write_text("done")
    """
)


def _hold(run_dir: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the run folder's lock for `seconds`; returns once it holds it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir), str(seconds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_fails_naming_the_holder_then_takes_the_lock_of_a_dead_one(tmp_path):
    run_dir = tmp_path / "runs" / "enwiki-20260301"
    holder = _hold(run_dir, 60)
    second = ops.run_lock(run_dir, 0.2, ops.lock_holder("second"))
    with pytest.raises(ops.RunLockedError, match=r"in use by another run .*flow_run holder-run"):
        second.__enter__()
    holder.kill()  # SIGKILL: no clean-up ran, the kernel drops the lock
    holder.wait()
    with ops.run_lock(run_dir, 0, ops.lock_holder("third")):
        assert json.loads((run_dir / ops.HOLDER_NAME).read_text())["flow_run"] == "third"
    assert not (run_dir / ops.HOLDER_NAME).exists()


def test_second_run_waits_for_the_first(tmp_path):
    run_dir = tmp_path / "runs" / "enwiki-20260301"
    holder = _hold(run_dir, 1.0)
    with ops.run_lock(run_dir, 60, ops.lock_holder("second")):
        assert (run_dir / "holder-done").exists()  # we got in only after the first run finished
    holder.wait()


def test_flow_fails_clearly_while_another_run_holds_the_folder(prefect_api, tmp_path):
    cfg = load_config(
        "sample",
        [f"data_root={tmp_path / 'data'}", "download.date=20260301", "orchestration.lock_timeout_s=0"],
    )
    holder = _hold(tmp_path / "data" / "runs" / "enwiki-20260301", 60)
    try:
        state = trelm(config=cfg, return_state=True)
    finally:
        holder.kill()
    assert state.is_failed()
    with pytest.raises(ops.RunLockedError, match="holder-run"):
        state.result()
    assert not (tmp_path / "data" / "dumps").exists()  # nothing was touched


def test_a_task_retries_a_retryable_error_and_not_a_fatal_one(prefect_api, monkeypatch):
    cfg = load_config("sample", ["download.date=20260301"])
    task = pipeline.resolve_date_task.with_options(retry_delay_seconds=0)  # its own retries and condition
    calls = []

    def busy_then_fine(config):
        calls.append("busy")
        if len(calls) < 3:
            raise RetryableError("mirror busy")
        return config

    monkeypatch.setattr(stages, "resolved", busy_then_fine)
    assert task(cfg) == cfg and len(calls) == 3

    def not_there(config):
        calls.append("missing")
        raise DumpNotFoundError("no dump run enwiki/20260301")

    calls.clear()
    monkeypatch.setattr(stages, "resolved", not_there)
    with pytest.raises(DumpNotFoundError):
        task(cfg)
    assert calls == ["missing"]  # an input error fails the same way every time: not retried


def test_every_task_with_retries_retries_only_retryable_errors():
    from prefect import Task

    tasks = [t for m in (pipeline, pretrain, evaluate) for t in vars(m).values() if isinstance(t, Task)]
    assert any(t.retries for t in tasks)  # the walk sees the tasks
    assert [t.name for t in tasks if t.retries and t.retry_condition_fn is not ops.retry_transient] == []


def test_outputs_hash_ignores_runtime_settings_only():
    base = load_config("sample")
    runtime = load_config(
        "sample", ["data_root=/elsewhere", "progress=false", "orchestration.lock_timeout_s=5"]
    )
    assert ops.outputs_hash(runtime) == ops.outputs_hash(base)
    assert ops.outputs_hash(load_config("sample", ["download.max_connections=1"])) == ops.outputs_hash(base)
    for override in ("select.si_top_k=3", "orchestration.run_until=link", "download.layout=recombined"):
        assert ops.outputs_hash(load_config("sample", [override])) != ops.outputs_hash(base), override


@pytest.mark.parametrize(
    ("kind", "module", "extra"),
    [("dask-local", "prefect_dask", "dask"), ("ray-address", "prefect_ray", "ray")],
)
def test_task_runner_names_the_missing_extra(kind, module, extra):
    cfg = ops.OrchestrationConfig(task_runner=kind, address="ray://127.0.0.1:10001")
    try:
        __import__(module)
    except ImportError:
        with pytest.raises(ImportError, match=rf"trelm-pipeline\[{extra}\]"):
            ops.make_task_runner(cfg)
    else:
        assert type(ops.make_task_runner(cfg)).__module__.startswith(module)


@pytest.mark.parametrize(
    ("kind", "declared"), [("dask-address", {"GPU": 1, "MEMORY": 16e9}), ("dask-local", None)]
)
def test_only_an_existing_dask_cluster_gets_resource_annotations(kind, declared):
    """A local cluster's workers declare nothing: an annotated part would never find a worker there."""
    import dask

    resources = {"select": {"gpus": 1, "memory_gb": 16}}
    cfg = ops.OrchestrationConfig(task_runner=kind, address="tcp://127.0.0.1:8786", resources=resources)
    with ops.task_resources(cfg, "select"):
        assert dask.get_annotations().get("resources") == declared


def test_address_runners_need_an_address():
    with pytest.raises(ValueError, match="orchestration.address"):
        ops.make_task_runner(ops.OrchestrationConfig(task_runner="dask-address"))


def test_stage_table_rows():
    table = stage_table("ingest", {"rows": 88, "stats": {"articles": 88, "skipped_namespace": 7}}, 4.0, 123)
    assert table[:4] == [
        {"metric": "rows in", "kind": "flow", "value": 123},
        {"metric": "rows out", "kind": "flow", "value": 88},
        {"metric": "wall time s", "kind": "flow", "value": 4.0},
        {"metric": "throughput rows/s", "kind": "flow", "value": 30.8},  # 123 / 4
    ]
    assert table[4:] == [
        {"metric": "articles", "kind": "count", "value": 88},
        {"metric": "skipped_namespace", "kind": "dropped", "value": 7},
    ]


def test_stage_tables_of_stages_without_rows_have_no_null_or_throughput_rows():
    from trelm.evaluate.report import evaluation_stats

    results = [
        {"checkpoint": "minilm", "tasks": {"kg-probe": {"status": "not run: no MLM head"}}},
        {"checkpoint": "trelm", "tasks": {"kg-probe": {"status": "ok", "metrics": {}}}},
    ]
    evaluate = stage_table("evaluate", {"report": "r.md", "stats": evaluation_stats(results)}, 9.0, 170)
    assert evaluate == [
        {"metric": "wall time s", "kind": "flow", "value": 9.0},
        {"metric": "checkpoints", "kind": "count", "value": 2},
        {"metric": "tasks_scored", "kind": "count", "value": 1},
        {"metric": "tasks_not_run", "kind": "count", "value": 1},
    ]
    pretrain = stage_table("pretrain", {"stats": {"trelm_steps": 40, "trelm_tokens_per_s": 812.5}}, 60.0, 170)
    assert [row["metric"] for row in pretrain] == ["wall time s", "trelm_steps", "trelm_tokens_per_s"]
