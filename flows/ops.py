"""Running the pipeline as a service: which stages, on which task runner, one run per folder, done once.

- **Stages and runner** (`orchestration:` in the config, `flows.config.OrchestrationConfig`):
  `run_until` stops the parent flow after a stage (a deployment can run up to `link` on CPU nodes and
  leave the rest to a GPU deployment, and tests can stop before slow stages); `task_runner` picks
  where the per-part tasks run: threads (the default), a local Dask cluster, a Dask scheduler address
  or a Ray address. Dask and Ray are optional extras, imported only when chosen.
- **Nothing left behind.** `trelm run` runs under `supervise`: stopped by Ctrl-C or SIGTERM, it stops
  its worker processes and Prefect's temporary server with it.
- **Run lock.** Whatever writes a run folder (the `trelm` flow, a stage flow, every stage command of
  the CLI, `trelm verify`) holds an exclusive OS file lock (`filelock`, i.e. `flock`) on
  `{run_dir}/.run.lock` while it works on the folder; within one process the lock is re-entrant (the
  `trelm` flow's stage subflows take it again). The kernel drops it when the
  holder dies, so a killed worker never leaves a stale lock behind; `.run-holder.json` beside it
  names the holder (host, pid, flow run) for the message the second run gets when it gives up.
- **Retries.** A task with retries retries a `RetryableError` only (`retry_transient`): an input error
  or a bug fails the same way every time.
- **Completion record.** `_run_complete.json`, written last in the run folder, holds the dump date,
  the hash of every setting that changes an output (`outputs_hash`), the code version of the
  pipeline (`storage.code`) and each stage's stats. A scheduled run whose newest finished dump has a
  record with the same hashes ends at once ("nothing new"); a new dump date gets its own run
  folder, so earlier runs stay untouched.

Its settings are `OrchestrationConfig` in `flows.config`. The CLI imports this module for every command,
so it imports no Prefect, Dask or Ray at module level.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from pydantic import BaseModel

from flows.config import OrchestrationConfig
from storage.code import module_code_version
from storage.errors import ConfigError, RetryableError
from storage.shards import atomic_write_bytes, stable_hash

RECORD_NAME = "_run_complete.json"
LOCK_NAME = ".run.lock"
HOLDER_NAME = ".run-holder.json"
# settings that change where or how a run works, never what it writes: left out of `outputs_hash`
_RUNTIME_FIELDS = {"preset", "data_root", "run", "progress", "orchestration"}
_DOWNLOAD_OUTPUT_FIELDS = {"wiki", "layout"}  # mirror, politeness and retries do not change the bytes





# ----------------------------------------------------------------------------- task runners


def _extra_missing(kind: str, extra: str, exc: ImportError) -> ImportError:
    return ImportError(
        f"orchestration.task_runner={kind} needs the `{extra}` extra: pip install 'trelm-pipeline[{extra}]' "
        f"({exc})"
    )


def make_task_runner(cfg: OrchestrationConfig):
    """The Prefect task runner that `cfg` names; a clear ImportError when its extra is missing."""
    if cfg.task_runner.endswith("-address") and not cfg.address:
        raise ConfigError(
            f"orchestration.task_runner={cfg.task_runner} needs orchestration.address",
            fix="set orchestration.address to the scheduler's address (tcp://host:8786 or ray://host:10001)",
        )
    if cfg.task_runner.startswith("dask"):
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise _extra_missing(cfg.task_runner, "dask", exc) from exc
        if cfg.task_runner == "dask-address":
            return DaskTaskRunner(address=cfg.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers or os.cpu_count() or 1})
    if cfg.task_runner == "ray-address":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as exc:
            raise _extra_missing(cfg.task_runner, "ray", exc) from exc
        return RayTaskRunner(address=cfg.address)
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    runner = ProcessPoolTaskRunner if cfg.task_runner == "processes" else ThreadPoolTaskRunner
    return runner(max_workers=cfg.workers)


def task_resources(cfg: OrchestrationConfig, stage: str):
    """A context in which the stage's per-part tasks are submitted with what `orchestration.resources`
    declares for it: Dask resource annotations (`GPU`, `MEMORY` in bytes), Ray remote options; nothing on
    the other runners, or when nothing is declared (a worker without resources then runs the task).
    `dask-local` is a local pool like `processes`: its workers, started by the runner, declare no
    resources, so an annotated task would wait for ever there."""
    need = getattr(cfg.resources, stage)
    memory = int(need.memory_gb * 1e9) if need.memory_gb else None
    if cfg.task_runner == "dask-address" and (need.gpus or memory):
        import dask

        declared = {"GPU": need.gpus, "MEMORY": memory}
        return dask.annotate(resources={k: v for k, v in declared.items() if v})
    if cfg.task_runner.startswith("ray") and (need.gpus or memory):
        from prefect_ray.context import remote_options

        declared = {"num_gpus": need.gpus, "memory": memory}
        options = {k: v for k, v in declared.items() if v}
        if need.gpus:
            # Ray ends a worker after each GPU task by default (max_calls 1, to free the device's
            # memory); then every select part would load the encoder and rebuild the corpus again.
            # 0 = no limit: a worker keeps its encoder for the next part
            options["max_calls"] = 0
        return remote_options(**options)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- retries


def retry_transient(task, task_run, state) -> bool:
    """Prefect's `retry_condition_fn` for the tasks that have retries: True for a RetryableError."""
    return isinstance(state.result(raise_on_failure=False), RetryableError)


# ----------------------------------------------------------------------------- the run lock


class RunLockedError(RetryableError, RuntimeError):
    """Another run holds the run folder: free once that run ends."""


def _holder_text(run_dir: Path) -> str:
    try:
        holder = json.loads((run_dir / HOLDER_NAME).read_text())
    except (OSError, ValueError):
        return "an unknown holder"
    return ", ".join(f"{k} {v}" for k, v in holder.items())


def lock_holder(flow_run: str | None = None) -> dict:
    """Who this process is, for the holder file."""
    holder = {"host": socket.gethostname(), "pid": os.getpid()}
    if flow_run:
        holder["flow_run"] = flow_run
    return {**holder, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


_held: dict[Path, int] = {}  # run folders this process holds, with how many holders inside it
_held_lock = threading.Lock()


def _enter_held(run_dir: Path) -> bool:
    """Count one more holder if this process already holds `run_dir`'s lock."""
    with _held_lock:
        if run_dir in _held:
            _held[run_dir] += 1
            return True
        return False


def _leave_held(run_dir: Path) -> bool:
    """One holder less; True when it was the last one (the lock is to be released)."""
    with _held_lock:
        _held[run_dir] -= 1
        if _held[run_dir]:
            return False
        del _held[run_dir]
        return True


@contextmanager
def run_lock(run_dir: Path, timeout_s: float, holder: dict) -> Iterator[None]:
    """Hold the run folder exclusively; wait up to `timeout_s` (-1: for ever) for another holder.
    Re-entrant within a process: an inner holder (a stage flow inside `trelm`) goes straight in."""
    run_dir = Path(run_dir).resolve()
    if _enter_held(run_dir):
        try:
            yield
        finally:
            _leave_held(run_dir)
        return
    with _exclusive(run_dir, timeout_s, holder):
        yield


@contextmanager
def _exclusive(run_dir: Path, timeout_s: float, holder: dict) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / LOCK_NAME, timeout=timeout_s, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise RunLockedError(
            f"run folder {run_dir} is in use by another run ({_holder_text(run_dir)}); waited "
            f"{timeout_s:g}s (orchestration.lock_timeout_s)",
            fix="wait for that run to finish, or cancel it",
        ) from None
    with _held_lock:
        _held[run_dir] = 1
    try:
        atomic_write_bytes(run_dir / HOLDER_NAME, json.dumps(holder).encode())
        yield
    finally:
        if _leave_held(run_dir):
            (run_dir / HOLDER_NAME).unlink(missing_ok=True)
            lock.release()


# ----------------------------------------------------------------------------- the completion record


def outputs_hash(cfg: BaseModel) -> str:
    """Hash of every setting that changes what the run writes (and of how far it runs)."""
    data = cfg.model_dump(mode="json", exclude=_RUNTIME_FIELDS)
    data["download"] = {k: v for k, v in data["download"].items() if k in _DOWNLOAD_OUTPUT_FIELDS}
    return stable_hash([data, cfg.orchestration.run_until])


def pipeline_code() -> str:
    """The code version of every stage the `trelm` flow runs: after an edit the run is not "nothing new",
    and each stage then finds by its own provenance whether the edit concerns it."""
    return module_code_version("flows.pipeline")


def completed_run(run_dir: Path, cfg: BaseModel) -> dict | None:
    """The run folder's completion record if it was written for the same dump and config, else None."""
    try:
        record = json.loads((run_dir / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None
    now = {"date": cfg.download.date, "config_hash": outputs_hash(cfg), "code_version": pipeline_code()}
    return record if all(record.get(k) == v for k, v in now.items()) else None


def clear_completion(run_dir: Path) -> None:
    """Taken back when stages start: outputs being rewritten are not what the old record describes."""
    (run_dir / RECORD_NAME).unlink(missing_ok=True)


def write_completion(run_dir: Path, cfg: BaseModel, stages: dict[str, dict]) -> dict:
    """The completion record, written last (atomically) once every stage up to `run_until` is done."""
    record = {
        "wiki": cfg.download.wiki,
        "date": cfg.download.date,
        "config_hash": outputs_hash(cfg),
        "code_version": pipeline_code(),
        "run_until": cfg.orchestration.run_until,
        "stages": {name: result.get("stats", {}) for name, result in stages.items()},
        "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_bytes(run_dir / RECORD_NAME, json.dumps(record, indent=2).encode())
    return record


# ----------------------------------------------------------------------------- a run leaves nothing behind

SUPERVISED_ENV = "TRELM_SUPERVISED"  # set in the child: the command runs instead of supervising again


def supervise(argv: list[str]) -> int:
    """Run `argv` in a session of its own and return its exit status. SIGINT and SIGTERM go to the command
    (which then marks its flow run crashed, through its server: so not to the whole session at once), a
    second one kills the session; once the command has ended whatever of its session is left is killed.
    So a stopped `trelm run` leaves neither worker processes nor Prefect's temporary server behind: the
    command starts that server and Prefect stops it at a normal exit only."""
    child = subprocess.Popen(argv, start_new_session=True, env={**os.environ, SUPERVISED_ENV: "1"})
    signals_seen = []

    def forward(signum, _frame) -> None:
        signals_seen.append(signum)
        with contextlib.suppress(ProcessLookupError):
            if len(signals_seen) == 1:
                os.kill(child.pid, signum)
            else:
                os.killpg(child.pid, signal.SIGKILL)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # the session's leftovers, the command itself is gone
    return 128 - status if status < 0 else status  # killed by signal N: the shell's 128 + N
