"""The per-part stages on a real Dask cluster (`distributed.LocalCluster`, 2 worker processes) and on a
real local Ray instance (2 CPUs, one declared GPU): the `trelm` flow through `select` with
`orchestration.task_runner=dask-address` / `ray-address` writes the same rows as the default runner
(the suite's `rehearsal_run`, same config), and the resources each stage declares reach the scheduler
and bind there."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from pathlib import Path

import distributed  # the `dask` extra, which `make test` installs
import pyarrow.parquet as pq
import pytest
import ray  # the `ray` extra, likewise
from distributed.diagnostics.plugin import SchedulerPlugin
from prefect import flow, task
from prefect.testing.utilities import prefect_test_harness
from prefect_dask import DaskTaskRunner
from prefect_ray import RayTaskRunner
from production_fixtures import override_args

from flows import ops
from flows.config import load_config
from storage import layout
from storage.schemas import CHECKPOINT_DATASETS, DATASETS
from storage.shards import is_complete, part_paths, read_manifest

# outputs of the stages after select, or of the run rather than of its data
_NOT_COMPARED = {"eval_results", *CHECKPOINT_DATASETS}
# manifest fields that say when or from where, not what
_MANIFEST_RUNTIME = {"created", "rebuilt", "select", "link_config"}
WORKER_GPUS = 1  # what each cluster worker declares (abstract: nothing checks a real GPU)
# what each stage's tasks declare in the cluster runs
RESOURCES = [
    f"orchestration.resources.select.gpus={WORKER_GPUS}",
    "orchestration.resources.link.memory_gb=2",
    "orchestration.resources.ingest.memory_gb=1",
]


def _rows(run_dir: Path, name: str) -> dict[str, list]:
    """Part name -> its rows (Parquet metadata, e.g. the writer's key-value pairs, is left out)."""
    return {p.name: pq.read_table(p).to_pylist() for p in part_paths(run_dir, DATASETS[name])}


def _manifest_facts(run_dir: Path, name: str) -> dict:
    manifest = read_manifest(run_dir, DATASETS[name])
    facts = {k: v for k, v in manifest.items() if k not in _MANIFEST_RUNTIME}
    facts["parts"] = [{k: p[k] for k in ("name", "rows")} for p in manifest["parts"]]
    return facts


# what the flow makes itself whatever the runner (the KG, the anchor dictionary, TransE's embeddings:
# 23 of a cluster run's ~50 s); taken from the reference run, a stage keeps them only when they are
# complete for its own provenance, so a cluster run that wrote other pages or instances remakes them
_RUNNER_INDEPENDENT = (
    "kg_entities",
    "kg_relations",
    "kg_triples",
    "anchors",
    "link_targets",
    "entity_embeddings",
)


def _seed(reference: Path, root: Path) -> None:
    for name in _RUNNER_INDEPENDENT:
        shutil.copytree(reference / name, layout.run_dir(root, reference.name) / name)


def run_through_select(rehearsal_run, root: Path, runner: list[str]) -> Path:
    """The rehearsal's config up to select on the runner `runner` names (`key=value` settings), each
    stage's tasks declaring RESOURCES; the run folder."""
    from flows.pipeline import trelm

    _seed(rehearsal_run.run_dir, root)
    settings = override_args(rehearsal_run.settings)[1::2]  # `--set k=v` pairs: the k=v
    settings += [f"data_root={root}", "orchestration.run_until=select", "orchestration.workers=2"]
    result = trelm(config=load_config("enwiki", [*settings, *runner, *RESOURCES]))
    assert set(result["stages"]) == {"download", "ingest", "link", "select"}
    return Path(result["run_dir"])


def assert_same_datasets(run_dir: Path, reference: Path) -> None:
    """Every dataset the run wrote, row for row, and its manifest's fingerprint and counts, are the
    reference run's."""
    written = [n for n, d in DATASETS.items() if n not in _NOT_COMPARED and is_complete(run_dir, d)]
    assert {"pages", "redirects", "mentions", "kg_triples", "instances", "entity_embeddings"} <= set(written)
    for name in written:
        assert _rows(run_dir, name) == _rows(reference, name), name
        assert _manifest_facts(run_dir, name) == _manifest_facts(reference, name), name


# ----------------------------------------------------------------------------- Dask


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


def _no_model_here(si_json: str):
    raise AssertionError("the flow process loaded the SI encoder's model: only the cluster's workers score")


def test_dask_cluster_writes_the_default_runners_rows(
    rehearsal_run, prefect_api, cluster, tmp_path, monkeypatch
):
    """ingest, link and select mapped on the cluster: every dataset, row for row, and its manifest's
    fingerprint and counts are the default runner's; the flow process (this one: select's prepare and
    finalize) needs the encoder's tokenizer only, never its model (the workers are other processes)."""
    from preprocessing import select

    monkeypatch.setattr(select, "_encoder", _no_model_here)
    local, restrictions = cluster
    runner = ["orchestration.task_runner=dask-address", f"orchestration.address={local.scheduler_address}"]
    run_dir = run_through_select(rehearsal_run, tmp_path / "data", runner)
    assert_same_datasets(run_dir, rehearsal_run.run_dir)
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


def _dask_submitted(address: str, gpus: float):
    orchestration = ops.OrchestrationConfig(
        task_runner="dask-address", address=address, resources={"select": {"gpus": gpus}}
    )
    with ops.task_resources(orchestration, "select"):
        return _probe.submit()


def _task_state(dask_scheduler, key: str) -> str:
    return dask_scheduler.tasks[key].state


@flow
def _dask_placement(address: str) -> tuple[str, str]:
    """(the scheduler's state of a task needing 2 GPUs, the worker that ran one needing 1)."""
    waiting = _dask_submitted(address, 2 * WORKER_GPUS)
    ran_on = _dask_submitted(address, WORKER_GPUS).result()
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
    state, ran_on = _dask_placement.with_options(task_runner=runner)(local.scheduler_address)
    assert state == "no-worker"
    assert ran_on in local.scheduler.workers


# ----------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def local_ray():
    """One node of 2 CPUs declaring one (abstract) GPU; the task runner joins it (`address: auto`). Ray's
    workers import tasks by module, so they get this checkout and the tests folder on their path."""
    path = [str(Path(__file__).parent), str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    ray.init(
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in path if p)}},
        num_cpus=2,
        num_gpus=WORKER_GPUS,
        include_dashboard=False,
        object_store_memory=200 * 2**20,  # the parts' PartInfo results are small; the default is 30% of RAM
        log_to_driver=False,
    )
    yield "auto"
    ray.shutdown()


def test_ray_writes_the_default_runners_rows(rehearsal_run, prefect_api, local_ray, tmp_path):
    runner = ["orchestration.task_runner=ray-address", f"orchestration.address={local_ray}"]
    run_dir = run_through_select(rehearsal_run, tmp_path / "data", runner)
    assert_same_datasets(run_dir, rehearsal_run.run_dir)


@task
def _assigned() -> tuple[dict, int]:
    """What Ray gave the task that runs this, and the worker process it runs in."""
    return ray.get_runtime_context().get_assigned_resources(), os.getpid()


def _ray_submitted(gpus: float):
    orchestration = ops.OrchestrationConfig(
        task_runner="ray-address", address="auto", resources={"select": {"gpus": gpus}}
    )
    with ops.task_resources(orchestration, "select"):
        return _assigned.submit()


@flow
def _ray_placement() -> tuple[list, list]:
    """(the refs of a task needing 2 GPUs that are ready within 2 s, what two tasks needing 1 got and
    where they ran, one after the other)."""
    waiting = _ray_submitted(2 * WORKER_GPUS)
    given = [_ray_submitted(WORKER_GPUS).result() for _ in range(2)]
    ready, _ = ray.wait([waiting.wrapped_future], timeout=2)
    ray.cancel(waiting.wrapped_future, force=True)
    return ready, given


def test_ray_assigns_a_declared_gpu_and_holds_a_task_needing_more(prefect_api, local_ray):
    """A part needing 2 GPUs waits (the node has 1); parts needing 1 get it, one after the other, in
    the same worker process: Ray's default for GPU tasks is a new process per task, which would load
    select's encoder and corpus again for every part."""
    ready, given = _ray_placement.with_options(task_runner=RayTaskRunner(address=local_ray))()
    assert ready == []
    assert [resources.get("GPU") for resources, _ in given] == [WORKER_GPUS, WORKER_GPUS]
    assert given[0][1] == given[1][1]
