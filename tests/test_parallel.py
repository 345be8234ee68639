"""Worker pools: `fork` while nothing else could hold a lock, else `forkserver`."""

from __future__ import annotations

import threading

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
