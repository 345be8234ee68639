"""The `trelm` flow on a temporary Prefect API: every stage cached across runs, a changed stage config
or an edited module re-running the stages it concerns only, a deleted output re-running its stage, the
artifacts of a run."""

import base64
import logging
import shutil
from pathlib import Path

import pytest
from mirror_server import serve_mirror
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.testing.utilities import prefect_test_harness

from flows.config import load_config
from flows.pipeline import trelm
from storage import code
from storage.schemas import INSTANCES, MENTIONS, PAGES
from storage.shards import MANIFEST, dataset_dir
from trelm.provenance import pretrain_provenance

SAMPLE_MIRROR = Path(__file__).resolve().parents[1] / "sample" / "mirror"
STAGE_TASKS = (
    "download-files",
    "ingest-pages",
    "load-kg",
    "build-dictionary",
    "link-part",
    "select-instances",
)


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT with random weights and MiniLM's tokenizer, saved as an encoder folder:
    the test is about orchestration, so SI scoring only has to run, not to be meaningful."""
    import torch
    from transformers import BertConfig, BertModel

    from preprocessing.sequences import load_tokenizer

    tokenizer = load_tokenizer("minilm")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-encoder")
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _flow_run_ids(state) -> list:
    parent = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]))
        )
    return [parent, *(c.id for c in children)]


def _task_states(state) -> dict[str, set[str]]:
    """Task name (without Prefect's suffix) -> states of its runs in this flow run and its subflows."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=_flow_run_ids(state)))
        )
    states: dict[str, set[str]] = {}
    for run in runs:
        states.setdefault(run.name.rsplit("-", 1)[0], set()).add(run.state.name)
    return states


def _artifact_keys(state) -> set[str]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=_flow_run_ids(state)))
        )
    return {a.key for a in artifacts}


def _mtime(run_dir: Path, dataset) -> int:
    return (dataset_dir(run_dir, dataset) / MANIFEST).stat().st_mtime_ns


def _file_requests(mirror) -> int:
    return len([r for r in mirror.requests if r.path.endswith((".bz2", ".gz"))])


def _edit_copy_of_the_code(root: Path, module_file: str, monkeypatch) -> None:
    """Code versions read from a copy of our packages with one file edited (the running code cannot be
    edited under the test); `storage.code` finds the copy through PROJECT_ROOT."""
    skip = shutil.ignore_patterns("__pycache__")
    for package in code.PROJECT_PACKAGES:
        shutil.copytree(code.PROJECT_ROOT / package, root / package, ignore=skip)
    with open(root / module_file, "a") as f:
        f.write("# an edit\n")
    monkeypatch.setattr(code, "PROJECT_ROOT", root)


def test_stages_cache_and_rerun_from_the_changed_stage(prefect_api, tiny_encoder, tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    shutil.copytree(SAMPLE_MIRROR, root)
    with serve_mirror(root) as mirror:
        overrides = [f"download.mirror={mirror.url}", f"data_root={tmp_path / 'data'}", "progress=false"]
        # select included, with a tiny encoder and fewer TransE epochs: the test is about orchestration
        overrides += ["ingest.workers=1", f"select.si.encoder={tiny_encoder}", "select.kge.epochs=5"]
        overrides += ["orchestration.run_until=select"]
        cfg = load_config("sample", overrides)
        first_state = trelm(config=cfg, return_state=True)
        first = first_state.result()
        stages = first["stages"]
        assert stages["ingest"]["rows"] >= 60 and stages["link"]["stats"]["mentions_tagme"] > 0
        assert stages["select"]["stats"]["selected"] > 0
        assert set(stages) == {"download", "ingest", "link", "select"}
        assert {
            "download-stage",
            "ingest-stage",
            "link-stage",
            "select-stage",
            "trelm-run",
        } <= _artifact_keys(first_state)
        assert {"link-progress", "select-progress"} <= _artifact_keys(first_state)
        run_dir = Path(first["run_dir"])
        stamps = {d.name: _mtime(run_dir, d) for d in (PAGES, MENTIONS, INSTANCES)}
        fetched = _file_requests(mirror)

        forced = cfg.model_copy(
            update={"orchestration": cfg.orchestration.model_copy(update={"force": True})}
        )
        again = trelm(config=forced, return_state=True)
        assert again.result()["stages"] == stages
        states = _task_states(again)
        assert {name: states[name] for name in STAGE_TASKS} == {name: {"Cached"} for name in STAGE_TASKS}
        assert {d.name: _mtime(run_dir, d) for d in (PAGES, MENTIONS, INSTANCES)} == stamps
        assert _file_requests(mirror) == fetched

        # one select option changed: everything before select is cached, select runs
        top_k = cfg.select.si_top_k + 1
        select = cfg.select.model_copy(update={"si_top_k": top_k})
        changed = trelm(config=cfg.model_copy(update={"select": select}), return_state=True)
        states = _task_states(changed)
        assert {name: states[name] for name in STAGE_TASKS[:-1]} == {
            name: {"Cached"} for name in STAGE_TASKS[:-1]
        }
        assert states["select-instances"] == {"Completed"}
        assert (
            _mtime(run_dir, MENTIONS) == stamps["mentions"]
            and _mtime(run_dir, INSTANCES) != stamps["instances"]
        )
        assert (
            changed.result()["stages"]["select"]["stats"]["selected"] >= stages["select"]["stats"]["selected"]
        )

        # a module select imports edited (not select.py): select runs again, the stages before it stay
        # cached, and what reads select's output sees a new fingerprint
        _edit_copy_of_the_code(tmp_path / "code", "preprocessing/sequences.py", monkeypatch)
        variant = cfg.pretrain.runs()[0]
        before_pretrain = pretrain_provenance(variant, run_dir).fingerprint
        edited = trelm(config=cfg.model_copy(update={"select": select}), return_state=True)
        states = _task_states(edited)
        assert {name: states[name] for name in STAGE_TASKS[:-1]} == {
            name: {"Cached"} for name in STAGE_TASKS[:-1]
        }
        assert states["select-instances"] == {"Completed"}
        assert _mtime(run_dir, MENTIONS) == stamps["mentions"]
        assert pretrain_provenance(variant, run_dir).fingerprint != before_pretrain  # pretrain's key moves

        # an output deleted by hand: its cache entry is not trusted
        (dataset_dir(run_dir, PAGES) / MANIFEST).unlink()
        until_ingest = forced.orchestration.model_copy(update={"run_until": "ingest"})
        rerun = trelm(config=forced.model_copy(update={"orchestration": until_ingest}), return_state=True)
        assert _task_states(rerun)["ingest-pages"] == {"Completed"}
        assert (dataset_dir(run_dir, PAGES) / MANIFEST).exists()


# the tiny world's model and a few steps: the test is about what the UI shows, not about training
TINY_PRETRAIN = (
    "model.window_k=2", "model.cka_negatives=4", "model.max_tail_tokens=2", "routing.steps=4",
    "routing.refresh_every=2", "routing.max_targets=4", "train.micro_batch_size=4", "train.save_every=2",
    "train.warmup_steps=1", "train.threads=1", "train.tensorboard=false", "compare=[]",
)  # fmt: skip


def _artifacts(state) -> dict:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=_flow_run_ids(state)))
        )
    return {a.key: a for a in artifacts}


def test_pretrain_in_the_ui_progress_names_pictures_and_resume(prefect_api, tmp_path, caplog):
    """The pretrain subflow on a tiny world: a task named by its variant, a progress artifact with the
    step and loss parts, the loss curves as an inline PNG, and a log that says how training began."""
    from flows.pretrain import pretrain_flow
    from tests.pretrain_fixtures import tiny_backbone, write_run

    backbone = tiny_backbone(tmp_path / "backbone")
    write_run(tmp_path / "data" / "runs" / "tiny")
    overrides = [
        f"data_root={tmp_path / 'data'}",
        "run=tiny",
        "progress=false",
        f"select.si.encoder={backbone}",
    ]
    overrides += [f"pretrain.{key}" for key in TINY_PRETRAIN] + [f"pretrain.model.backbone={backbone}"]
    logging.getLogger("prefect.flow_runs").addHandler(caplog.handler)

    def train(max_steps: int):
        caplog.clear()
        cfg = load_config("sample", [*overrides, f"pretrain.train.max_steps={max_steps}"])
        state = pretrain_flow(cfg, return_state=True)
        return state, state.result(), caplog.text

    state, result, log = train(2)
    assert result["stats"]["trelm_steps"] == 2 and result["stats"]["trelm_tokens_per_s"] > 0
    assert _task_runs(state) == {"pretrain-trelm": "Completed"}  # named by its variant
    assert "trelm: training from step 0 to 2" in log
    artifacts = _artifacts(state)
    progress = artifacts["pretrain-trelm-progress"]
    assert progress.data == 100.0 and progress.description.startswith("`trelm`: step 2/2: loss ")
    assert "tokens/s" in progress.description
    picture = artifacts["pretrain-losses"].data
    png = base64.b64decode(picture.split("data:image/png;base64,", 1)[1].split(")", 1)[0])
    assert png[:4] == b"\x89PNG" and "pretrain-summary" in artifacts

    _, result, log = train(3)  # a longer budget: continues from the step-2 checkpoint
    assert "trelm: resumed from step 2 (to 3)" in log and result["stats"]["trelm_steps"] == 3
    state, _, log = train(3)
    assert "trelm: already trained to step 3 (cached)" in log
    assert _task_runs(state) == {"pretrain-trelm": "Cached"}


def _task_runs(state) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=_flow_run_ids(state)))
        )
    return {run.name: run.state.name for run in runs}
