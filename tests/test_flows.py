"""The `trelm` flow on a temporary Prefect API: stage subflows, caching across runs, invalidation."""

import shutil
from pathlib import Path

import pytest
from mirror_server import serve_mirror
from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

from flows.config import load_config
from flows.pipeline import trelm
from storage.schemas import PAGES
from storage.shards import MANIFEST, dataset_dir

SAMPLE_MIRROR = Path(__file__).resolve().parents[1] / "sample" / "mirror"


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _latest_states(names: list[str]) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs = sorted(client.read_task_runs(), key=lambda r: r.expected_start_time or r.created)
    states = {}
    for run in runs:
        for name in names:
            if run.name.startswith(name):
                states[name] = run.state.name
    return states


def test_flow_runs_caches_and_reruns_what_was_deleted(prefect_api, tmp_path):
    root = tmp_path / "mirror"
    shutil.copytree(SAMPLE_MIRROR, root)
    with serve_mirror(root) as mirror:
        cfg = load_config(
            "sample",
            [
                f"download.mirror={mirror.url}",
                f"data_root={tmp_path / 'data'}",
                "progress=false",
                "ingest.workers=1",
            ],
        )
        first = trelm(config=cfg)
        assert first["pages"] >= 60
        assert first["mentions"]["mentions_tagme"] > 0 and first["mentions"]["mentions_anchor"] > 0
        assert first["instances"]["selected"] > 0
        run_dir = Path(first["run_dir"])
        manifest = dataset_dir(run_dir, PAGES) / MANIFEST
        stamp = manifest.stat().st_mtime_ns
        file_requests = len([r for r in mirror.requests if ".bz2" in r.path or ".gz" in r.path])

        again = trelm(config=cfg)
        assert again == first
        assert _latest_states(["download-files", "ingest-pages", "select-instances"]) == {
            "download-files": "Cached",
            "ingest-pages": "Cached",
            "select-instances": "Cached",
        }
        assert manifest.stat().st_mtime_ns == stamp  # the stage did not run
        assert len([r for r in mirror.requests if ".bz2" in r.path or ".gz" in r.path]) == file_requests

        manifest.unlink()  # an output deleted by hand: its cache entry must not be trusted
        trelm(config=cfg)
        assert _latest_states(["ingest-pages"]) == {"ingest-pages": "Completed"}
        assert manifest.exists()
