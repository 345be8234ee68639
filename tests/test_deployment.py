"""`make serve`'s script on loopback, then `prefect deployment run trelm/sample` through a real worker:
outputs checked with `trelm sql`, a second run cached stage by stage, a worker killed mid-stage and a
re-run that finishes without redoing the parts done before the kill."""

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# up to `link` (select and later stages are covered in-process by test_flows); parts of 10 pages
# give link a dozen parts, one at a time, so the kill lands between two of them
OVERRIDES = [
    "progress=false",
    "ingest.workers=1",
    "link.workers=1",
    "ingest.pages_per_part=10",
    "orchestration.run_until=link",
]


def _run(cmd: list[str], env: dict, timeout: float = 300) -> str:
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _deployment_run(env: dict, overrides: list[str], watch: bool = True) -> str:
    """Start a run of trelm/sample; its flow run id (after it finished, when `watch`)."""
    args = [
        str(BIN / "prefect"),
        "deployment",
        "run",
        "trelm/sample",
        "-p",
        f"overrides={json.dumps(overrides)}",
    ]
    if watch:
        args += ["--watch", "--watch-interval", "1", "--watch-timeout", "240"]
    out = _run(args, env, timeout=270)
    return re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)


def _post(api: str, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(
        f"{api}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _flow_state(api: str, flow_run_id: str) -> str:
    with urllib.request.urlopen(f"{api}/flow_runs/{flow_run_id}", timeout=30) as response:
        return json.loads(response.read())["state"]["name"]


def _task_states(api: str, flow_run_id: str) -> dict[str, set[str]]:
    """Task name (without Prefect's suffix) -> the states of its runs in the flow run and its subflows."""
    subflows = _post(api, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}})
    ids = [flow_run_id, *(f["id"] for f in subflows)]
    runs = _post(api, "/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": ids}}, "limit": 200})
    states: dict[str, set[str]] = {}
    for run in runs:
        states.setdefault(run["name"].rsplit("-", 1)[0], set()).add(run["state"]["name"])
    return states


def _sql(data_root: Path, query: str) -> list[dict]:
    return json.loads(
        _run([str(BIN / "trelm"), "sql", "--data-root", str(data_root), "--json", query], {**os.environ})
    )


def _kill_tree(pid: int) -> None:
    """SIGKILL the worker and everything under it (the flow run and its pools), as a lost node would."""
    worker = psutil.Process(pid)
    for proc in [*worker.children(recursive=True), worker]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def _parts(folder: Path) -> dict[str, tuple[int, int]]:
    """Part name -> (inode, mtime): a part rewritten (temp file renamed over it) gets a new inode."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("part-*.parquet")}


def _wait_for_rewritten(folder: Path, old: dict, at_least: int, timeout: float = 180) -> None:
    """Until the stage has rewritten `at_least` of the `old` parts, before it finishes."""
    deadline = time.monotonic() + timeout
    while len({name for name, key in _parts(folder).items() if old.get(name) != key}) < at_least:
        assert time.monotonic() < deadline, f"not {at_least} parts rewritten in {folder} after {timeout}s"
        time.sleep(0.05)
    assert not (folder / "_manifest.json").exists(), "the stage finished before the kill"


def _start_worker(env: dict, home: Path) -> subprocess.Popen:
    """A worker like serve.sh starts it, under its pid file so that `serve.sh stop` ends it."""
    with open(home / "worker.log", "ab") as log:
        worker = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", "trelm-process"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (home / "worker.pid").write_text(str(worker.pid))
    return worker


@pytest.mark.timeout(600)
def test_serve_run_cache_kill_and_resume(tmp_path):
    port, home, data = free_port(), tmp_path / "prefect-home", tmp_path / "data"
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_PORT": str(port),
        "PREFECT_API_URL": api,
        "PREFECT": str(BIN / "prefect"),
        "TRELM_DATA_ROOT": str(data),
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # the worker picks a run up within a second
    }
    try:  # inside: a start that fails half-way still leaves a server for `stop` to end
        started = _run([str(ROOT / "deploy" / "serve.sh"), "start"], env, timeout=200)
        assert f"UI http://127.0.0.1:{port}" in started and "started: worker" in started
        # the UI finds its API through /ui-settings: on a port other than 4200 it must name this port
        assert _ui_settings(port)["api_url"] == api
        _serve_run_cache_kill_and_resume(api, env, home, data)
    finally:
        stopped = _run([str(ROOT / "deploy" / "serve.sh"), "stop"], env, timeout=120)
    assert not list(home.glob("*.pid"))
    assert "stopped worker" in stopped and "stopped server" in stopped


def _ui_settings(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=30) as response:
        return json.loads(response.read())


def test_stop_without_the_serving_home_says_so(tmp_path):
    """`make stop` under another PREFECT_HOME finds no pid files: it fails and names the home it read."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path)}
    stop = [str(ROOT / "deploy" / "serve.sh"), "stop"]
    result = subprocess.run(stop, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert f"nothing to stop: no pid files in {tmp_path}" in result.stderr


def _serve_run_cache_kill_and_resume(api: str, env: dict, home: Path, data: Path) -> None:
    first = _deployment_run(env, OVERRIDES)
    assert _flow_state(api, first) == "Completed"
    assert _sql(data, "SELECT count(*) AS n FROM pages") == [{"n": 88}]
    linked = _sql(
        data, "SELECT count(*) AS n FROM mentions, unnest(mentions) AS t(m) WHERE m.source = 'tagme'"
    )
    assert linked[0]["n"] > 0

    # the same again, past the "nothing new" check: every stage's task comes from the cache
    again = _deployment_run(env, [*OVERRIDES, "orchestration.force=true"])
    states = _task_states(api, again)
    stage_tasks = {"download-files", "ingest-pages", "load-kg", "build-dictionary", "link-part"}
    assert stage_tasks <= set(states), states
    assert all(states[name] == {"Cached"} for name in stage_tasks), states

    # a changed link option reruns link only; the worker dies after two of its parts
    mentions = data / "runs" / "enwiki-20260301" / "mentions" / "v1"
    old = _parts(mentions)
    changed = [*OVERRIDES, "link.tagme.rho_threshold=0.3"]
    _deployment_run(env, changed, watch=False)
    _wait_for_rewritten(mentions, old, at_least=2)
    _kill_tree(int((home / "worker.pid").read_text()))
    rewritten = {name: key for name, key in _parts(mentions).items() if old.get(name) != key}
    assert not (mentions / "_manifest.json").exists() and len(rewritten) < len(old)

    _start_worker(env, home)
    resumed = _deployment_run(env, changed)
    assert _flow_state(api, resumed) == "Completed"
    states = _task_states(api, resumed)
    assert states["download-files"] == {"Cached"} and states["ingest-pages"] == {"Cached"}, states
    after = _parts(mentions)
    assert {name: after[name] for name in rewritten} == rewritten  # the parts done before the kill: kept
    assert all(after[name] != old[name] for name in old)  # and every other part made for the new config
    manifest = json.loads((mentions / "_manifest.json").read_text())
    assert len(manifest["parts"]) == len(old)
    assert manifest["link_config"]["tagme"]["rho_threshold"] == 0.3
