"""Case 6: a stopped `trelm run` leaves nothing running: not its worker processes, not the temporary Prefect
server it started (which used to outlive it, orphaned)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _session_members(sid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # field 6 of stat: the session id
            members.append(int(stat.parent.name))
    return members


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _wait_for(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.timeout(300)
def test_a_stopped_run_stops_its_workers_and_its_prefect_server(tmp_path):
    data_root = tmp_path / "data"
    command = [str(BIN / "trelm"), "run", "--data-root", str(data_root), "--config", "sample"]
    command += ["--set", "orchestration.run_until=link", "--set", "progress=false"]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: _children(run.pid), 30)
    (command_pid,) = _children(run.pid)  # the command itself, in a session of its own
    _wait_for(lambda: any((data_root / "runs").glob("*/pages")), 240)  # the server is up, ingest runs
    assert len(_session_members(command_pid)) > 1  # the command, its server and its workers
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) != 0
    _wait_for(lambda: not _session_members(command_pid), 10)
    assert not os.path.exists(f"/proc/{command_pid}")
