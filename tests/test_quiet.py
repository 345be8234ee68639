"""What `trelm run` prints: a line per stage and an epilogue (where, how big, what the scores mean, what
next), and none of the third-party noise silenced at its source (transformers' load report of a fresh MLM
head, DeepSpeed's accelerator warning and op banner, Prefect's telemetry errors and state lines)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from flows import report
from flows.report import run_epilogue, stage_line

REPO = Path(__file__).resolve().parents[1]
NOISE = (
    "seem corrupted", "LOAD REPORT", "Setting accelerator to CPU", "built successfully", "torch_max_mem",
    "telemetry", "Beginning subflow run", "Finished in state",
)  # fmt: skip


def test_the_whole_run_prints_a_line_per_stage_then_the_epilogue(rehearsal_run):
    lines = rehearsal_run.stdout.splitlines()
    stages = [line.split()[0] for line in lines[:6]]
    assert stages == ["download", "ingest", "link", "select", "pretrain", "evaluate"], lines
    assert "articles 88" in lines[1] and "trelm_steps 4, trelm_tokens_per_s " in lines[4]
    assert "tasks_scored" in lines[5]
    assert lines[6].startswith(f"done: {rehearsal_run.run_dir} (") and "GB of it checkpoints" in lines[6]
    assert any(line.strip().startswith("trelm inspect --data-root") for line in lines[6:])
    assert not [noise for noise in NOISE if noise in rehearsal_run.stdout + rehearsal_run.stderr]


def test_the_packaged_backbone_loads_without_a_load_report(capfd):
    from trelm.config import ModelConfig
    from trelm.model import FRESH_ATTRIBUTE, load_backbone

    mlm, _ = load_backbone(ModelConfig(backbone="minilm"))
    captured = capfd.readouterr()
    assert "MISSING" not in captured.err + captured.out and "corrupted" not in captured.err + captured.out
    assert "cls.predictions.transform.dense.weight" in getattr(mlm, FRESH_ATTRIBUTE)  # fresh, as it should be


def _world_of_one(port: int) -> subprocess.CompletedProcess:
    """`init_distributed` in a process of its own, as a flow run's in-process training calls it."""
    code = (
        "from trelm.config import PretrainConfig; from trelm.distributed import init_distributed; "
        f"init_distributed(PretrainConfig.model_validate({{'train': {{'master_port': {port}}}}}))"
    )
    # no launcher's variables: an earlier test of this process may have set them
    dropped = {"DS_ACCELERATOR", "MASTER_PORT", "MASTER_ADDR", "RANK", "LOCAL_RANK", "WORLD_SIZE"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)


def test_a_cpu_world_of_one_starts_without_deepspeed_noise():
    done = _world_of_one(29673)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Setting accelerator to CPU" not in done.stdout + done.stderr
    assert "built successfully" not in done.stdout + done.stderr


def test_a_world_of_one_starts_while_another_holds_the_configured_port():
    with socket.socket() as holder:  # another run's world of one, or any server, on master_port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        done = _world_of_one(holder.getsockname()[1])
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_epilogue_says_size_scale_and_next_commands(tmp_path):
    run_dir = tmp_path / "runs" / "enwiki-20260301"
    (run_dir / "checkpoints" / "trelm").mkdir(parents=True)
    (run_dir / "checkpoints" / "trelm" / "mp_rank_00_model_states.pt").write_bytes(b"\0" * 3_000_000)
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "report.md").write_bytes(b"\0" * 1_000_000)
    text = run_epilogue({"run_dir": str(run_dir)}, Path("data/demo"), "sample")
    assert text.splitlines()[0] == f"done: {run_dir} (0.00 GB, 0.00 GB of it checkpoints)"
    assert report.disk_use(run_dir) == (4_000_000, 3_000_000)
    assert report.SAMPLE_SCALE in text and f"cat {run_dir}/eval/report.md" in text
    assert "  trelm inspect --data-root data/demo --run enwiki-20260301" in text
    assert report.SAMPLE_SCALE not in run_epilogue({"run_dir": str(run_dir)}, Path("d"), "enwiki")


def test_a_stage_line_shows_its_headline_stats():
    line = stage_line("link", {"stats": {"mentions": 1822, "mentions_tagme": 515, "spots": 664}}, 29.44)
    assert line == "link        29.4 s  mentions 1,822, mentions_tagme 515"  # spots: not a headline
    rates = {"stats": {"trelm_steps": 40, "trelm_tokens_per_s": 12911.69, "x_tokens_per_s": 7.5432}}
    expected = "trelm_steps 40, trelm_tokens_per_s 12,912, x_tokens_per_s 7.54"
    assert stage_line("pretrain", rates, 83.3).endswith(expected)


def test_the_first_cpu_training_announces_deepspeeds_op_build(tmp_path, monkeypatch, capsys):
    import torch.utils.cpp_extension

    from trelm import distributed

    build_dir = str(tmp_path)
    monkeypatch.setattr(torch.utils.cpp_extension, "_get_build_directory", lambda name, verbose: build_dir)
    distributed._announce_op_build()
    assert "DeepSpeed is building its CPU communication op" in capsys.readouterr().err
    (tmp_path / f"{distributed.SHM_OP}.so").write_bytes(b"")  # built: nothing to say
    distributed._announce_op_build()
    assert capsys.readouterr().err == ""
