"""Worker processes for the CPU-bound stages (ingest, linking)."""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from tqdm._monitor import TMonitor

_before_fork: list[Callable[[], None]] = []


def close_before_fork(close: Callable[[], None]) -> None:
    """Register what this process must drop before it forks workers: a cached DuckDB connection, whose
    native threads do not exist in the child, so that the child's first use of it waits for ever."""
    _before_fork.append(close)


class _StoppingPool(ProcessPoolExecutor):
    """`with pool:` waits for every running task when the body raises (a failed part, Ctrl-C, a test's
    timeout), and for ever when a worker hangs. This one cancels what has not started and terminates
    the workers instead, so a failing stage fails at once. Nothing is lost: a part is sealed only when
    its worker finished it, and the next run redoes the others."""

    def __exit__(self, kind, error, tb):
        if kind is None:
            return super().__exit__(kind, error, tb)
        workers = list((self._processes or {}).values())  # Python 3.14 has terminate_workers()
        self.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()
        deadline = time.monotonic() + 10
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                worker.kill()
                worker.join()
        return False


def process_pool(workers: int, preload: list[str]) -> ProcessPoolExecutor:
    """`fork` starts workers without re-importing anything, but is only safe while this process has a
    single thread: a Prefect flow run has more, and a lock another thread holds at fork time would stay
    locked in the child. Then `forkserver`, whose server imports `preload` once and forks each worker
    from itself. Under `fork` this process imports `preload` first, for the same reason: a module the
    workers import lazily (spaCy, 3 s) is otherwise imported again by every worker of every pool.
    The forkserver is one per process and keeps the `preload` of the pool that started it.
    Before a fork, what `close_before_fork` registered is closed (no other thread can be using it
    then). Used as a context manager, the pool stops its workers when the body raises (`_StoppingPool`)."""
    if not _other_threads():
        for name in preload:
            importlib.import_module(name)
    if not _other_threads():  # again: an import may start a thread
        for close in _before_fork:
            close()
        return _StoppingPool(max_workers=workers, mp_context=get_context("fork"))
    context = get_context("forkserver")
    context.set_forkserver_preload(preload)
    return _StoppingPool(max_workers=workers, mp_context=context)


def _other_threads() -> list[threading.Thread]:
    """The threads but this one that could hold a lock a forked worker needs. tqdm's monitor does not
    count: the first progress bar starts it (even a disabled one), it sleeps between checks of the
    bars and takes only tqdm's own lock, which a worker never touches."""
    current = threading.current_thread()
    return [t for t in threading.enumerate() if t is not current and not isinstance(t, TMonitor)]
