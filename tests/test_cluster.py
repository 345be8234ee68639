"""The per-part stages on a real Dask cluster (`distributed.LocalCluster`, 2 worker processes): the
`trelm` flow through `select` with `orchestration.task_runner=dask-address` writes the same rows as
the default runner (the suite's `rehearsal_run`, same config), and the resources each stage declares
reach the scheduler and bind there."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import distributed  # the `dask` extra, which `make test` installs
import pyarrow.parquet as pq
import pytest
from distributed.diagnostics.plugin import SchedulerPlugin
from prefect import flow, task
from prefect.testing.utilities import prefect_test_harness
from prefect_dask import DaskTaskRunner
from production_fixtures import override_args

from flows import ops
from flows.config import load_config
from storage.schemas import CHECKPOINT_DATASETS, DATASETS
from storage.shards import is_complete, part_paths, read_manifest

# outputs of the stages after select, or of the run rather than of its data
_NOT_COMPARED = {"eval_results", *CHECKPOINT_DATASETS}
# manifest fields that say when or from where, not what
_MANIFEST_RUNTIME = {"created", "rebuilt", "select", "link_config"}
WORKER_GPUS = 1  # what each worker of the cluster declares (abstract: nothing checks a real GPU)


class Restrictions(SchedulerPlugin):
    """Records the resource restrictions of every task the scheduler is asked to place, by key."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.seen: dict[str, dict] = {}

    def transition(self, key, start, finish, *args, **kwargs):
        task = self.scheduler.tasks.get(key)
        if task is not None and finish in ("processing", "no-worker"):
            self.seen[str(key)] = dict(task.resource_restrictions or {})


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread, each declaring one (abstract) GPU and 4 GB."""
    with distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        resources={"GPU": WORKER_GPUS, "MEMORY": 4e9},
        dashboard_address=None,
    ) as local:
        plugin = Restrictions(local.scheduler)
        local.scheduler.add_plugin(plugin, name="restrictions")
        yield local, plugin


def _rows(run_dir: Path, name: str) -> dict[str, list]:
    """Part name -> its rows (Parquet metadata, e.g. the writer's key-value pairs, is left out)."""
    return {p.name: pq.read_table(p).to_pylist() for p in part_paths(run_dir, DATASETS[name])}


def _manifest_facts(run_dir: Path, name: str) -> dict:
    manifest = read_manifest(run_dir, DATASETS[name])
    facts = {k: v for k, v in manifest.items() if k not in _MANIFEST_RUNTIME}
    facts["parts"] = [{k: p[k] for k in ("name", "rows")} for p in manifest["parts"]]
    return facts


def _dask_run(rehearsal_run, root: Path, address: str) -> Path:
    """The rehearsal's config up to select, on the cluster, declaring select's GPU and link's memory."""
    from flows.pipeline import trelm

    settings = override_args(rehearsal_run.settings)[1::2]  # `--set k=v` pairs: the k=v
    settings += [f"data_root={root}", "orchestration.run_until=select", "orchestration.workers=2"]
    settings += ["orchestration.task_runner=dask-address", f"orchestration.address={address}"]
    settings += [f"orchestration.resources.select.gpus={WORKER_GPUS}"]
    settings += ["orchestration.resources.link.memory_gb=2", "orchestration.resources.ingest.memory_gb=1"]
    result = trelm(config=load_config("enwiki", settings))
    assert set(result["stages"]) == {"download", "ingest", "link", "select"}
    return Path(result["run_dir"])


def test_dask_cluster_writes_the_default_runners_rows(rehearsal_run, prefect_api, cluster, tmp_path):
    """ingest, link and select mapped on the cluster: every dataset, row for row, and its manifest's
    fingerprint and counts are the default runner's."""
    local, restrictions = cluster
    run_dir = _dask_run(rehearsal_run, tmp_path / "data", local.scheduler_address)
    written = [n for n, d in DATASETS.items() if n not in _NOT_COMPARED and is_complete(run_dir, d)]
    assert {"pages", "redirects", "mentions", "kg_triples", "instances", "entity_embeddings"} <= set(written)
    for name in written:
        assert _rows(run_dir, name) == _rows(rehearsal_run.run_dir, name), name
        assert _manifest_facts(run_dir, name) == _manifest_facts(rehearsal_run.run_dir, name), name
    # every part of the three stages went through the scheduler, declaring what its stage's settings say
    by_task: dict[str, set] = {}
    tasks = Counter()
    for key, need in restrictions.seen.items():
        by_task.setdefault(key.rsplit("-", 1)[0], set()).add(tuple(sorted(need.items())))
        tasks[key.rsplit("-", 1)[0]] += 1
    expected = {
        "extract_part_task": {(("MEMORY", 1e9),)},
        "link_part_task": {(("MEMORY", 2e9),)},
        "select_part_task": {(("GPU", WORKER_GPUS),)},
    }
    assert {name: by_task.get(name) for name in expected} == expected
    parts = len(part_paths(run_dir, DATASETS["pages"]))
    assert parts > 1 and all(tasks[name] == parts for name in expected)  # one task per part


@task
def _probe() -> str:
    """Where a task ran: its worker's address."""
    return distributed.get_worker().address


def _submitted(address: str, gpus: float):
    orchestration = ops.OrchestrationConfig(
        task_runner="dask-address", address=address, resources={"select": {"gpus": gpus}}
    )
    with ops.task_resources(orchestration, "select"):
        return _probe.submit()


def _task_state(dask_scheduler, key: str) -> str:
    return dask_scheduler.tasks[key].state


@flow
def _placement(address: str) -> tuple[str, str]:
    """(the scheduler's state of a task needing 2 GPUs, the worker that ran one needing 1)."""
    waiting = _submitted(address, 2 * WORKER_GPUS)
    ran_on = _submitted(address, WORKER_GPUS).result()
    time.sleep(1)  # the scheduler had the time to place it, had any worker declared enough
    with distributed.Client(address) as client:
        state = client.run_on_scheduler(_task_state, key=waiting.wrapped_future.key)
    waiting.wrapped_future.cancel()
    return state, ran_on


def test_a_task_needing_more_than_any_worker_declares_waits(prefect_api, cluster):
    """What a declared resource does: a part needing 2 GPUs finds no worker (each declares 1) and waits;
    one needing 1 runs on a worker of the cluster."""
    local, _ = cluster
    runner = DaskTaskRunner(address=local.scheduler_address)
    state, ran_on = _placement.with_options(task_runner=runner)(local.scheduler_address)
    assert state == "no-worker"
    assert ran_on in local.scheduler.workers
