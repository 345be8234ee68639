"""The DeepSpeed trainer end to end on a tiny model: 2 CPU ranks under ZeRO-2 through the `deepspeed`
launcher, a SIGKILL mid-run then a resume that gives the losses of an uninterrupted run, the Hugging Face
export, the train_log dataset and the variants."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from tests.pretrain_fixtures import copy_run, tiny_backbone, write_run
from trelm.config import PretrainConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pretrain")
    return tiny_backbone(root / "backbone"), write_run(root / "source-run")


def _config(backbone: Path, **train) -> PretrainConfig:
    return PretrainConfig.model_validate(
        {
            "model": {"backbone": str(backbone), "window_k": 2, "cka_negatives": 4, "max_tail_tokens": 2},
            "routing": {"steps": 4, "refresh_every": 2, "max_targets": 4},
            "train": {
                "micro_batch_size": 4,
                "max_steps": 6,
                "save_every": 2,
                "warmup_steps": 1,
                "lr": 1e-3,
                "threads": 1,
                "zero_stage": 0,
                "tensorboard": False,
                **train,
            },
        }
    )


def _launch(cfg: PretrainConfig, run_dir: Path, port: int) -> subprocess.Popen:
    """One rank in its own process, as the launcher starts it (so it can be killed for real)."""
    config_file = run_dir / "pretrain.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**os.environ, "MASTER_PORT": str(port), "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    command = [sys.executable, "-m", "trelm.launch", "--run-dir", str(run_dir), "--config", str(config_file)]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _losses(run_dir: Path, name: str = "trelm") -> dict[int, tuple[float, float, float]]:
    files = sorted((run_dir / "checkpoints" / name / "train_log" / "v2").glob("part-*.parquet"))
    rows = duckdb.sql(
        "PIVOT (SELECT step, name, value FROM read_parquet($f)) ON name IN ('loss', 'mlm_loss', 'cka_loss') "
        "USING first(value) GROUP BY step ORDER BY step",
        params={"f": [str(p) for p in files]},
    ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err.decode()[-3000:]


def test_killed_run_resumes_with_the_losses_of_an_uninterrupted_run(world, tmp_path):
    backbone, source = world
    cfg = _config(backbone)
    straight, killed = copy_run(source, tmp_path / "straight"), copy_run(source, tmp_path / "killed")
    _finish(_launch(cfg, straight, 29611))

    proc = _launch(cfg, killed, 29612)
    latest = killed / "checkpoints" / "trelm" / "latest"
    deadline = time.time() + 240
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = int(latest.read_text().strip().split("-")[1])
    assert step_at_kill < 6, "the run finished before it could be killed"
    _finish(_launch(cfg, killed, 29613))

    expected, resumed = _losses(straight), _losses(killed)
    assert sorted(resumed) == list(range(1, 7))  # every step logged once: no gap, no duplicate
    for step in expected:
        assert resumed[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
    manifest = json.loads(
        (killed / "checkpoints" / "trelm" / "train_log" / "v2" / "_manifest.json").read_text()
    )
    assert manifest["stats"]["steps"] == 6
    # keep_last (3) checkpoints at most remain
    assert len(list((killed / "checkpoints" / "trelm").glob("step-*"))) <= 3


def test_two_cpu_ranks_under_zero2_through_the_deepspeed_launcher(world, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from trelm.launch import pretrain

    backbone, source = world
    run_dir = copy_run(source, tmp_path / "run")
    cfg = _config(
        backbone, ranks=2, zero_stage=2, max_steps=3, save_every=3, master_port=29621, tensorboard=True
    )
    result = pretrain(cfg, run_dir)
    assert result["world"] == 2 and result["steps"] == 3
    ckpt = run_dir / "checkpoints" / "trelm"
    assert (ckpt / "latest").read_text().strip() == "step-00000003"
    assert list((ckpt / "step-00000003").glob("*optim_states.pt")), (
        "ZeRO-2 writes partitioned optimizer states"
    )
    assert {p.name for p in (ckpt / "step-00000003").glob("rng-rank*.pt")} == {"rng-rank0.pt", "rng-rank1.pt"}
    assert list((ckpt / "tb").glob("events.out.tfevents.*"))
    model = AutoModelForMaskedLM.from_pretrained(ckpt / "hf")
    tokenizer = AutoTokenizer.from_pretrained(ckpt / "hf")
    logits = model(**tokenizer("paris is the capital of [MASK] .", return_tensors="pt")).logits
    assert logits.shape[-1] == tokenizer.vocab_size
    assert sorted(_losses(run_dir)) == [1, 2, 3]


def test_variants_switch_the_parts_off():
    base = PretrainConfig()
    mlm = base.model_copy(update={"variant": "mlm_only"}).effective()
    assert not (mlm.model.inject_knowledge or mlm.model.memory_bank or mlm.model.cka or mlm.routing.enabled)
    assert not base.model_copy(update={"variant": "no_routing"}).effective().routing.enabled
    assert not base.model_copy(update={"variant": "no_memory"}).effective().model.memory_bank
    assert not base.model_copy(update={"variant": "no_injection"}).effective().model.inject_knowledge
    full = base.effective()
    assert full.model.cka and full.model.memory_bank and full.routing.enabled
    runs = base.model_copy(update={"compare": ["mlm_only", "trelm"]}).runs()
    assert [r.checkpoint_name for r in runs] == ["trelm", "mlm_only"]


def test_zero3_trains_routed_and_exports_the_gathered_weights(world, tmp_path):
    """Stage 3 partitions every weight: routing still updates paths and the export gathers full tensors."""
    from transformers import AutoModelForMaskedLM

    backbone, source = world
    run_dir = copy_run(source, tmp_path / "run")
    _finish(_launch(_config(backbone, zero_stage=3, max_steps=2, save_every=2), run_dir, 29631))
    exported = AutoModelForMaskedLM.from_pretrained(run_dir / "checkpoints" / "trelm" / "hf")
    initial = AutoModelForMaskedLM.from_pretrained(backbone)
    ffn = "bert.encoder.layer.0.intermediate.dense.weight"
    changed = (exported.state_dict()[ffn] != initial.state_dict()[ffn]).any(dim=1)
    assert 0 < int(changed.sum()) < changed.numel()  # some rows (the paths), not all
    attention = "bert.encoder.layer.0.attention.self.query.weight"
    assert exported.state_dict()[attention].equal(initial.state_dict()[attention])  # frozen


def test_every_variant_trains_with_dropout_on(world, tmp_path):
    """from_pretrained hands back a backbone in eval mode; without routing nothing else switches it."""
    import torch

    from trelm.trainer import ModelParts

    backbone, source = world
    cfg = _config(backbone).model_copy(update={"variant": "mlm_only"}).effective()
    parts = ModelParts(cfg, copy_run(source, tmp_path / "run"), torch.device("cpu"), torch.Generator())
    assert all(module.training for module in parts.model.modules())


def test_pretrain_flow_is_cached_and_resumes_when_its_export_is_gone(world, tmp_path):
    """Second run: the task is Cached and nothing is rewritten. Export deleted: the cache refreshes and the
    trainer resumes from `latest` (at the step budget already), re-exporting without training again."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.config import load_config
    from flows.pretrain import pretrain_flow

    backbone, source = world
    run_dir = copy_run(source, tmp_path / "data" / "runs" / "fixture")
    pretrain = _config(backbone, ranks=1, max_steps=2, save_every=2, master_port=29651)  # caching, not ranks
    cfg = load_config("sample", ["progress=false"]).model_copy(
        update={"data_root": tmp_path / "data", "run": "fixture", "pretrain": pretrain}
    )
    export = run_dir / "checkpoints" / "trelm" / "hf" / "model.safetensors"
    with prefect_test_harness(server_startup_timeout=120):
        first = pretrain_flow(cfg)
        trained_at = export.stat().st_mtime_ns
        again = pretrain_flow(cfg, return_state=True)
        assert again.is_completed() and export.stat().st_mtime_ns == trained_at
        shutil.rmtree(export.parent)
        resumed = pretrain_flow(cfg)
    assert first["stats"]["trelm_steps"] == resumed["stats"]["trelm_steps"] == 2  # tokens/s is the run's own
    assert export.exists() and sorted(_losses(run_dir)) == [1, 2]


def test_zero3_routed_on_two_ranks_resumes_on_one_through_the_universal_format(world, tmp_path):
    """A lost node: 2 ranks (ZeRO-3, routing) stop at step 2; one rank loads that checkpoint (partitioned
    for 2) through DeepSpeed's universal format, first with nothing left to train (its export must equal
    the 2-rank one: the weights crossed over), then training on with the schedule and the data position
    (counted in sequences) continued."""
    from safetensors.torch import load_file

    from trelm.checkpoints import latest
    from trelm.launch import pretrain

    backbone, source = world
    run_dir = copy_run(source, tmp_path / "run")
    ckpt = run_dir / "checkpoints" / "trelm"
    two = _config(backbone, ranks=2, zero_stage=3, max_steps=2, save_every=2, master_port=29641)
    assert pretrain(two, run_dir)["world"] == 2
    assert latest(ckpt).world == 2 and list((ckpt / "step-00000002").glob("zero_pp_rank_1_*optim_states.pt"))
    exported = load_file(ckpt / "hf" / "model.safetensors")

    proc = _launch(_config(backbone, zero_stage=3, max_steps=2), run_dir, 29642)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert "trelm: already trained to step 2" in err.decode() and "saved on 2 ranks, now 1" in err.decode()
    again = load_file(ckpt / "hf" / "model.safetensors")
    assert exported.keys() == again.keys() and all(again[k].equal(exported[k]) for k in exported)

    _finish(_launch(_config(backbone, zero_stage=3, max_steps=4, save_every=2), run_dir, 29643))
    point = latest(ckpt)
    assert (point.step, point.world) == (4, 1)
    # 2 steps x 2 ranks x 4 sequences, then 2 steps x 1 rank x 4: the same stream, cut anew
    assert json.loads((point.folder / "trainer_state.json").read_text())["sequences"] == 24
    lr = dict(_values(run_dir, "lr"))
    # logged after each step: 3 steps into warmup 1 + decay to 4 (a restarted schedule would log 1e-3)
    assert lr[3] == pytest.approx(1e-3 * (4 - 3) / (4 - 1))
    assert sorted(_losses(run_dir)) == [1, 2, 3, 4]
    assert not list(ckpt.glob("universal-*")) and not (ckpt / "latest_universal").exists()  # pruned


def _values(run_dir: Path, name: str) -> list[tuple[int, float]]:
    files = sorted((run_dir / "checkpoints" / "trelm" / "train_log" / "v2").glob("part-*.parquet"))
    return duckdb.sql(
        "SELECT step, value FROM read_parquet($f) WHERE name = $n ORDER BY step",
        params={"f": [str(p) for p in files], "n": name},
    ).fetchall()
