"""The production paths on a CUDA machine, in one command: SI scoring in bf16, then a few steps of each
pre-training variant on the rehearsal data, each asserted to run and to lower its loss.

    python benchmarks/gpu_check.py                      # on a GPU machine (refuses to run without CUDA)
    python benchmarks/gpu_check.py --model base         # a roberta-base-sized random model: a meaningful MFU
    python benchmarks/gpu_check.py --allow-cpu --steps 4 --model tiny   # the script's own smoke run

The rehearsal data is what tests/test_rehearsal.py runs the `enwiki` preset on, made here from the
bundled sample (nothing from a hub): a byte-level BPE trained on the sample, a random RobertaForMaskedLM
(`tiny`: 2 layers, hidden 32; `base`: roberta-base's 12 x 768 shape), a Wikidata5M-format KG with hub
tails of degree 10,000. `trelm run --config enwiki` makes the datasets up to `select` with SI scored on
the device in bf16; then every variant trains `--steps` steps through the real trainer (`trelm.launch`,
ZeRO-2, bf16 where supported), in its own process.

Printed per variant: loss at the first and last logged steps, tokens/s, step time, peak GPU memory (max
allocated) and, for the MLM-only step, the model FLOPs utilization (6 N + 12 L H T FLOPs per token over
the device's dense bf16 peak). SI scoring: mentions scored per second. Everything also goes to
`--out/gpu_check.json` with the device name and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

from pretrain import mfu, model_dims, train_log  # noqa: E402
from production_fixtures import (  # noqa: E402
    REHEARSAL_KG_ENTITIES,
    SAMPLE,
    byte_bpe_roberta,
    enwiki_rehearsal,
    hub_kg,
    override_args,
)

VARIANTS = {
    "trelm_ig": {"variant": "trelm", "routing": {"mode": "ig", "refresh_every": 5}},
    "trelm_first_order": {"variant": "trelm", "routing": {"mode": "first_order", "refresh_every": 1}},
    "no_routing": {"variant": "no_routing"},
    "mlm_only": {"variant": "mlm_only"},
}
SHAPES = {  # RobertaConfig sizes: (layers, hidden, heads, d_ff)
    "tiny": (2, 32, 2, 64),
    "base": (12, 768, 12, 3072),
}


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def make_model(folder: Path, shape: str) -> Path:
    """The sample-trained byte-level BPE and a random RobertaForMaskedLM of the given shape (made once)."""
    return folder if (folder / "config.json").exists() else byte_bpe_roberta(folder, shape=SHAPES[shape])


def make_run(work: Path, model: Path, device: str) -> Path:
    """`trelm run --config enwiki` up to select, on the rehearsal's stand-ins, SI on `device` in bf16."""
    kg = work / "kg"
    if not (kg / "wikidata5m_entity.txt").exists():
        hub_kg(kg, n_entities=REHEARSAL_KG_ENTITIES)
    settings = enwiki_rehearsal(SAMPLE / "mirror", kg, model, work / "eval-data")
    settings |= {
        "orchestration.run_until": ("select", "pre-training runs per variant below"),
        "select.si.device": (device, "the device under test"),
        "select.si.dtype": ("bfloat16" if device == "cuda" else "float32", "bf16 on the GPU"),
        "select.kge.device": (device, "the device under test"),
    }
    data_root = str(work / "data")
    command = [sys.executable, "-m", "flows.cli", "run", "--config", "enwiki", "--data-root", data_root]
    command += override_args(settings)
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    (run_dir,) = (work / "data" / "runs").iterdir()
    return run_dir


def si_throughput(run_dir: Path, model: Path, device: str) -> dict:
    """Mentions scored per second by `si_scores` on the run's sequences (bf16 on a GPU)."""
    import torch

    from preprocessing.importance import SIConfig, load_encoder, si_scores

    files = [str(p) for p in sorted((run_dir / "instances" / "v1").glob("part-*.parquet"))]
    rows = duckdb.sql(
        "SELECT input_ids, list_transform(entities, lambda e: [e.tok_start, e.tok_end]) "
        "FROM read_parquet($f)",
        params={"f": files},
    ).fetchall()
    cfg = SIConfig(encoder=str(model), device=device, dtype="bfloat16" if device == "cuda" else "float32")
    tokenizer, encoder = load_encoder(cfg)
    sequences, spans = [r[0] for r in rows], [[tuple(s) for s in r[1]] for r in rows]
    si_scores(encoder, tokenizer, sequences[:8], spans[:8], cfg)  # warm-up: kernels, allocator
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    scores = si_scores(encoder, tokenizer, sequences, spans, cfg)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    mentions = sum(len(s) for s in scores)
    return {"mentions": mentions, "seconds": seconds, "mentions_per_s": mentions / seconds}


def train_variant(run_dir: Path, model: Path, name: str, args) -> dict:
    """One variant through `python -m trelm.launch` (one rank), as the trainer runs in production."""
    import yaml

    from storage.configio import deep_merge
    from trelm.config import PretrainConfig

    base = {
        "name": name,
        "model": {"backbone": str(model)},
        "train": {
            "micro_batch_size": args.micro_batch,
            "max_steps": args.steps,
            "save_every": args.steps,
            "warmup_steps": 1,
            "lr": args.lr,
            "zero_stage": 2,
            "tensorboard": False,
            "device": args.device,
        },
    }
    cfg = PretrainConfig.model_validate(deep_merge(base, VARIANTS[name]))
    # figures are measured, never read back: an earlier run's checkpoint would resume at its budget
    shutil.rmtree(run_dir / "checkpoints" / name, ignore_errors=True)
    config_file = run_dir / f"gpu-check-{name}.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**os.environ, "MASTER_PORT": "29791", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    command = [sys.executable, "-m", "trelm.launch", "--run-dir", str(run_dir), "--config", str(config_file)]
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    return summarize(train_log(run_dir, name), args)


def summarize(log: dict[str, list[float]], args) -> dict:
    losses = log["loss"]
    k = max(1, len(losses) // 4)  # first and last quarter of the steps
    after_warmup = slice(min(2, len(losses) - 1), None)
    return {
        "loss_first": statistics.mean(losses[:k]),
        "loss_last": statistics.mean(losses[-k:]),
        "tokens_per_s": statistics.median(log["tokens_per_s"][after_warmup]),
        "step_s": statistics.median(log["step_s"][after_warmup]),
        "peak_memory_mb": max(log["peak_memory_mb"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="base")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--out", type=Path, default=REPO / ".bench" / "gpu_check")
    parser.add_argument("--allow-cpu", action="store_true", help="Run without CUDA (a smoke run).")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("no CUDA device: run this on a GPU machine (or --allow-cpu for a smoke run)")
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    work = args.out / args.model
    work.mkdir(parents=True, exist_ok=True)
    model = make_model(work / "model", args.model)
    run_dir = make_run(work, model, args.device)
    report = {"device": device_name(), "date": datetime.date.today().isoformat(), "model": args.model}
    report["si"] = si_throughput(run_dir, model, args.device)
    report["variants"] = {name: train_variant(run_dir, model, name, args) for name in VARIANTS}
    (seq_len,) = duckdb.sql(
        "SELECT max(len(input_ids)) FROM read_parquet($f)",
        params={"f": [str(p) for p in (run_dir / "instances" / "v1").glob("part-*.parquet")]},
    ).fetchall()[0]
    # (6 N + 12 L H T) FLOPs per token at the measured rate, over the device's dense bf16 peak
    mlm_rate = report["variants"]["mlm_only"]["tokens_per_s"]
    report["mfu_mlm_step"] = mfu(*model_dims(str(model)), seq_len, mlm_rate)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print_report(report)
    failed = [n for n, v in report["variants"].items() if not v["loss_last"] < v["loss_first"]]
    if failed:
        raise SystemExit(f"loss did not fall for {failed}: see {args.out / 'gpu_check.json'}")


def print_report(report: dict) -> None:
    print(f"device: {report['device']} ({report['date']}), model: {report['model']}")
    si = report["si"]
    print(f"SI scoring: {si['mentions']} mentions in {si['seconds']:.2f} s = {si['mentions_per_s']:.0f}/s")
    print("| variant | loss first | loss last | tokens/s | step s | peak MB (GPU allocated; CPU RSS) |")
    print("|---|---|---|---|---|---|")
    for name, v in report["variants"].items():
        print(
            f"| {name} | {v['loss_first']:.3f} | {v['loss_last']:.3f} | {v['tokens_per_s']:.0f} | "
            f"{v['step_s']:.3f} | {v['peak_memory_mb']:.0f} |"
        )
    value = report["mfu_mlm_step"]
    print(f"MFU of the MLM-only step: {'n/a (unknown peak)' if value is None else f'{value:.1%}'}")


if __name__ == "__main__":
    main()
