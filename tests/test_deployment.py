"""`prefect deployment run trelm/full-pipeline` against a real local Prefect server and process worker."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"prefect server at {url} not healthy after {timeout}s")


@contextmanager
def _process(cmd: list[str], env: dict, log: Path):
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _prefect(args: list[str], env: dict, timeout: float = 300) -> str:
    result = subprocess.run(
        [PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.timeout(600)
def test_deployment_run_on_local_server_and_worker(tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "TRELM_HOME": str(ROOT),
    }
    server_cmd = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with _process(server_cmd, {**env, "PREFECT_API_URL": ""}, tmp_path / "server.log") as server:
        _wait_healthy(api, server, tmp_path / "server.log")
        _prefect(["work-pool", "create", "trelm-process", "--type", "process"], env)
        _prefect(["--no-prompt", "deploy", "--prefect-file", "deploy/prefect.yaml", "--all"], env)
        worker_cmd = [PREFECT, "worker", "start", "--pool", "trelm-process"]
        with _process(worker_cmd, env, tmp_path / "worker.log"):
            overrides = json.dumps([f"data_root={tmp_path / 'data'}", "progress=false", "ingest.workers=1"])
            out = _prefect(
                [
                    "deployment",
                    "run",
                    "trelm/full-pipeline",
                    "-p",
                    "preset=sample",
                    "-p",
                    f"overrides={overrides}",
                    "--watch",
                    "--watch-timeout",
                    "400",
                ],
                env,
                timeout=450,
            )
    assert "Completed" in out, out + (tmp_path / "worker.log").read_text()[-3000:]
    manifest = tmp_path / "data" / "runs" / "enwiki-20260301" / "pages" / "v1" / "_manifest.json"
    assert json.loads(manifest.read_text())["rows"] >= 60
