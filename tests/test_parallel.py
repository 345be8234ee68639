"""Worker pools: `fork` while nothing else could hold a lock, else `forkserver`."""

from __future__ import annotations

import sys
import threading
import time

import psutil
import pytest
from tqdm import tqdm

from preprocessing import parallel


def _start_method(pool) -> str:
    with pool:
        return pool._mp_context.get_start_method()


def test_a_progress_bar_does_not_force_the_forkserver():
    # tqdm starts its monitor thread with the first bar, disabled or not, and `_extract` makes its bar
    # before its pool: the monitor made every ingest start its workers through the forkserver
    bar = tqdm(disable=True)
    try:
        monitor = [t for t in threading.enumerate() if t.name == "tqdm_monitor"]
        assert monitor and not set(monitor) & set(parallel._other_threads())
    finally:
        bar.close()


def test_another_thread_means_forkserver(monkeypatch):
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert other in parallel._other_threads()
        assert _start_method(parallel.process_pool(1, ["preprocessing.parallel"])) == "forkserver"
    finally:
        stop.set()
        other.join()
    monkeypatch.setattr(parallel, "_other_threads", list)  # as in a process with this thread alone
    assert _start_method(parallel.process_pool(1, [])) == "fork"


def test_a_forking_pool_imports_its_preload_first(monkeypatch):
    # before: `preload` reached only the forkserver, so under `fork` every worker of every pool imported
    # what the stage's functions import lazily (spaCy: 3 s a worker, three pools a link stage)
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    monkeypatch.setattr(parallel, "_other_threads", list)
    with parallel.process_pool(1, ["colorsys"]) as pool:
        assert pool._mp_context.get_start_method() == "fork" and "colorsys" in sys.modules
        assert pool.submit(_imported_before_this_call, "colorsys").result()


def _imported_before_this_call(name: str) -> bool:
    return name in sys.modules


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _gone(pid: int, timeout: float = 10) -> bool:
    """Whether the process has exited and been reaped (a zombie still exists) within `timeout`."""
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not psutil.pid_exists(pid)


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_a_failing_body_stops_the_workers_instead_of_waiting_for_them(method, monkeypatch):
    # before: `with pool:` waited for the running tasks (here 60 s each; for ever for a hung worker,
    # which is how the forked-DuckDB hang of the link tests outlived pytest's timeout)
    # forkserver as in a Prefect flow run, whose other threads rule out a fork; fork as in a process with
    # one thread (whatever threads earlier tests left in this one)
    others = [threading.current_thread()] if method == "forkserver" else []
    monkeypatch.setattr(parallel, "_other_threads", lambda: others)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="a part failed"), parallel.process_pool(2, []) as pool:
        assert pool._mp_context.get_start_method() == method
        futures = [pool.submit(_sleep, 60) for _ in range(4)]
        time.sleep(1)  # both workers busy
        workers = list(pool._processes.values())  # its own: other tests' threads may start processes
        raise RuntimeError("a part failed")
    assert time.monotonic() - start < 30
    # gone from the OS, not `is_alive()`: the executor's own thread may reap a worker first, and then the
    # Process object never learns its exit code and reads as alive for ever
    assert len(workers) == 2 and all(_gone(w.pid) for w in workers)
    assert all(f.cancelled() or f.exception(timeout=60) is not None for f in futures)  # none ran to its end


def test_a_pool_that_ends_normally_still_finishes_its_tasks():
    with parallel.process_pool(2, []) as pool:
        futures = [pool.submit(_sleep, 0.2) for _ in range(3)]
    assert all(f.done() and f.exception() is None for f in futures)
