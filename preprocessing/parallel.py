"""Worker processes for the CPU-bound stages (ingest, linking)."""

from __future__ import annotations

import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context


def process_pool(workers: int, preload: list[str]) -> ProcessPoolExecutor:
    """`fork` starts workers without re-importing anything (about 0.5 s a worker saved), but is only
    safe while this process has a single thread: a Prefect flow run has more, and a lock another
    thread holds at fork time would stay locked in the child. Then `forkserver`, whose server
    imports `preload` once and forks each worker from itself."""
    if threading.active_count() == 1:
        return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"))
    context = get_context("forkserver")
    context.set_forkserver_preload(preload)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)
