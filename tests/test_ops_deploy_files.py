"""deploy/: the work-pool job templates and prefect.yaml agree with each other and with the flow."""

import json
import re
from pathlib import Path

import pytest
import yaml

from flows.config import load_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
TEMPLATES = {
    "trelm-docker": DEPLOY / "docker" / "base-job-template.json",
    "trelm-k8s": DEPLOY / "k8s" / "base-job-template.json",
}


def _placeholders(node) -> set[str]:
    """Every `{{ name }}` used anywhere in a job configuration."""
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(node)))


@pytest.mark.parametrize("pool", sorted(TEMPLATES))
def test_job_template_declares_every_placeholder(pool):
    template = json.loads(TEMPLATES[pool].read_text())
    declared = set(template["variables"]["properties"])
    assert _placeholders(template["job_configuration"]) <= declared
    # and declares nothing it does not use
    assert declared <= _placeholders(template["job_configuration"])


def _deployments() -> list[dict]:
    text = (DEPLOY / "prefect.yaml").read_text()
    return yaml.safe_load(text)["deployments"]


def test_deployments_use_declared_job_variables_and_valid_parameters():
    names = {d["name"] for d in _deployments()}
    assert {"full-pipeline", "sample", "gpu-stages-k8s", "gpu-stages-docker"} <= names
    for deployment in _deployments():
        pool = deployment["work_pool"]["name"]
        variables = set(deployment["work_pool"].get("job_variables", {}))
        if pool in TEMPLATES:
            assert variables <= set(json.loads(TEMPLATES[pool].read_text())["variables"]["properties"]), pool
        params = deployment["parameters"]
        cfg = load_config(params["preset"], params["overrides"])  # the flow would load exactly this
        handover = cfg.orchestration.then_deployment
        assert handover is None or handover.removeprefix("trelm/") in names


def test_gpu_deployments_ask_for_gpus():
    by_name = {d["name"]: d["work_pool"]["job_variables"] for d in _deployments()}
    assert by_name["gpu-stages-k8s"]["gpu_count"] >= 1 and by_name["full-pipeline-k8s"]["gpu_count"] == 0
    assert by_name["gpu-stages-docker"]["device_requests"][0]["capabilities"] == [["gpu"]]
    assert "device_requests" not in by_name["full-pipeline-docker"]


def test_full_pipeline_runs_daily():
    full = next(d for d in _deployments() if d["name"] == "full-pipeline")
    assert full["schedules"][0]["cron"] == "0 6 * * *" and full["schedules"][0]["active"] is True
    assert full["parameters"]["preset"] == "enwiki"
