"""Pre-training cost and time-to-quality: MLM-only, TRELM without and with routing, side by side.

    python benchmarks/pretrain.py                         # the sample run (built into .bench/ if missing)
    python benchmarks/pretrain.py --run-dir DIR --steps 40 --quality-steps 300 --backbone roberta-base

Part 1 (cost): every variant trains `--steps` steps on the same data, in its own process (so each
peak memory is its own), through the real trainer; the phases come back from its `train_log`:
forward, backward, optimizer, attribution (per refresh, and amortized over `refresh_every`),
step time, tokens/s, peak memory (GPU: max allocated; CPU: peak RSS), trainable share, and on a GPU
the model FLOPs utilization (6 x parameters x tokens per step + attention, over the device's peak).
Targets: routed backward <= 0.7 x the full update's backward; a TRELM step (attribution amortized)
<= 1.3 x an MLM-only step.

Part 2 (time to quality): MLM-only and TRELM train `--quality-steps` steps on all but the last
`instances` part, with a checkpoint every `--quality-every` steps; each checkpoint's backbone is
scored on the held-out part by MLM loss (plain inputs: no memory bank, no injection -- what a
downstream user of the exported model sees). The target is the held-out loss MLM-only reaches at
its end (or `--target-loss`); the table gives the wall time (sum of logged step times) at which each
variant first reaches it. The paper claims TRELM needs at least 50% less time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from storage.schemas import INSTANCES  # noqa: E402
from storage.shards import Provenance, ShardWriter, part_paths, read_part_info  # noqa: E402

VARIANTS = {
    "mlm_only": {"variant": "mlm_only"},
    "trelm_no_routing": {"variant": "no_routing"},
    "trelm_routing_ig": {"variant": "trelm", "routing": {"mode": "ig"}},
    "trelm_routing_first_order": {"variant": "trelm", "routing": {"mode": "first_order", "refresh_every": 1}},
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks


def sample_run() -> Path:
    """The bundled sample's run, made once with `trelm run` into .bench/sample-data."""
    root = REPO / ".bench" / "sample-data"
    runs = sorted((root / "runs").glob("*/instances/v1/_manifest.json"))
    if not runs:
        subprocess.run(
            [sys.executable, "-m", "flows.cli", "run", "--data-root", str(root)], cwd=REPO, check=True
        )
        runs = sorted((root / "runs").glob("*/instances/v1/_manifest.json"))
    return runs[0].parents[2]


def copy_run(src: Path, dst: Path, parts: slice = slice(None)) -> Path:
    """The run's datasets without checkpoints; `parts`: the instances parts kept (the rest is held out)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "eval", "instances"))
    writer = ShardWriter(dst, INSTANCES, Provenance("benchmark-split", (), "benchmark")).open()
    for index, path in enumerate(part_paths(src, INSTANCES)[parts]):
        shutil.copy(path, writer.part_path(index))
    writer.finalize([read_part_info(p) for p in sorted(writer.dir.glob("part-*.parquet"))])
    return dst


def train(run_dir: Path, name: str, overrides: dict, args, steps: int, save_every: int) -> dict:
    """One variant in its own process through `python -m trelm.launch`; returns its wall and peak RSS."""
    from storage.configio import deep_merge
    from trelm.config import PretrainConfig

    cfg = deep_merge(
        {
            "name": name,
            "model": {"backbone": args.backbone, "init": args.init},
            "routing": {"refresh_every": args.refresh_every, "max_targets": args.max_targets},
            "train": {
                "micro_batch_size": args.micro_batch,
                "max_steps": steps,
                "save_every": save_every,
                "keep_last": 1000,
                "warmup_steps": max(1, steps // 10),
                "lr": args.lr,
                "zero_stage": 0,
                "tensorboard": False,
                "device": args.device,
                "precision": args.precision,
            },
        },
        overrides,
    )
    config_file = run_dir / f"{name}.yaml"
    config_file.write_text(yaml.safe_dump(PretrainConfig.model_validate(cfg).model_dump(mode="json")))
    env = {
        **os.environ,
        "MASTER_PORT": str(29700 + len(name)),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "trelm.launch", "--run-dir", str(run_dir), "--config", str(config_file)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{name} failed (status {status}); run the command by hand to see why")
    return {"peak_rss_mb": usage.ru_maxrss / 1024}


def train_log(run_dir: Path, name: str) -> dict[str, list[float]]:
    from trelm.trainlog import read_train_log

    return read_train_log(run_dir / "checkpoints" / name)


def cost_row(log: dict[str, list[float]], warmup: int, refresh_every: int, peak_rss: float) -> dict:
    """Medians over the steps after `warmup`; attribution per refresh and amortized per step."""

    def med(key: str) -> float:
        values = log.get(key, [])[warmup:]
        return statistics.median(values) if values else 0.0

    refreshes = [a for a, r in zip(log.get("attribution_s", []), log.get("refreshed", []), strict=False) if r]
    per_refresh = statistics.median(refreshes[1:] or refreshes) if refreshes else 0.0
    plain_step = med("forward_s") + med("backward_s") + med("optimizer_s") + med("memory_s")
    amortized = per_refresh / refresh_every if refreshes else 0.0
    return {
        "forward_s": med("forward_s"),
        "backward_s": med("backward_s"),
        "optimizer_s": med("optimizer_s"),
        "attribution_per_refresh_s": per_refresh,
        "step_s": plain_step + amortized,
        "tokens_per_s": med("tokens_per_s"),
        "trainable_share": med("trainable_share") or 1.0,
        "peak_memory_mb": max(log.get("peak_memory_mb", [0.0])) if "cuda" in _device_name() else peak_rss,
    }


def _device_name() -> str:
    import torch

    return f"cuda {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cpu"


def mfu(n_params: int, layers: int, hidden: int, seq_len: int, tokens_per_s: float) -> float | None:
    """Model FLOPs utilization: (6 N + 12 L H T) FLOPs per token (PaLM appendix B) over the device's peak."""
    name = _device_name()
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    if peak is None:
        return None
    flops_per_token = 6 * n_params + 12 * layers * hidden * seq_len
    return flops_per_token * tokens_per_s / (peak * 1e12)


def checkpoint_scores(run_dir: Path, name: str, heldout: Path, args) -> dict[int, dict[str, float]]:
    """Per checkpoint step: held-out MLM loss (fixed masking seed, plain inputs) and KG-probe P@1 on the
    facts training saw as CKA targets (`trelm.evaluate.kg_probe`), of the backbone alone."""
    import torch

    from trelm.batch import TokenInfo
    from trelm.config import ModelConfig
    from trelm.evaluate.kg_probe import evaluate_kg_probe
    from trelm.model import load_backbone

    plain = ModelConfig(
        backbone=args.backbone, init=args.init, inject_knowledge=False, memory_bank=False, cka=False
    )
    mlm, tokenizer = load_backbone(plain)
    tok_info = TokenInfo.from_tokenizer(tokenizer)
    rows = pq.read_table(heldout, columns=["input_ids", "entities"]).to_pylist()
    scores = {}
    for folder in sorted((run_dir / "checkpoints" / name).glob("step-*")):
        module = torch.load(folder / "mp_rank_00_model_states.pt", weights_only=False)["module"]
        mlm.load_state_dict({k[4:]: v for k, v in module.items() if k.startswith("mlm.")}, strict=False)
        mlm.eval()
        probe = evaluate_kg_probe(run_dir, mlm, tokenizer)["metrics"]
        scores[int(folder.name.split("-")[1])] = {
            "heldout_loss": heldout_mlm_loss(mlm, rows, tok_info, plain),
            "kg_probe_seen": probe["p_at_1_seen"],
        }
    return scores


def heldout_mlm_loss(mlm, rows: list[dict], tok_info, plain) -> float:
    import torch

    from trelm.batch import IGNORE, make_batch
    from trelm.losses import mlm_loss

    generator = torch.Generator().manual_seed(1234)  # the same masked positions for every checkpoint
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), 16):
            batch = make_batch(rows[start : start + 16], tok_info, plain, generator)
            predicted = batch.mlm_labels != IGNORE
            logits = mlm(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            total += float(mlm_loss(logits[predicted], batch.mlm_labels[predicted])) * int(predicted.sum())
            count += int(predicted.sum())
    return total / max(count, 1)


def time_to_target(
    scores: dict[int, float], step_times: list[float], target: float, lower: bool
) -> float | None:
    """Wall seconds of training (logged step times) until the first checkpoint at the target or better."""
    elapsed = np.cumsum(step_times)
    for step in sorted(scores):
        if (scores[step] <= target) if lower else (scores[step] >= target):
            return float(elapsed[step - 1])
    return None


def model_dims(backbone: str) -> tuple[int, int, int]:
    """(parameters, layers, hidden) of the backbone, from its config (embeddings included)."""
    from transformers import AutoConfig

    from storage.tokens import model_location

    c = AutoConfig.from_pretrained(model_location(backbone))
    per_layer = 4 * c.hidden_size**2 + 2 * c.hidden_size * c.intermediate_size
    return c.num_hidden_layers * per_layer + c.vocab_size * c.hidden_size, c.num_hidden_layers, c.hidden_size


def cost_part(source: Path, work: Path, args) -> list[tuple[str, dict]]:
    n_params, layers, hidden = model_dims(args.backbone)
    files = [str(p) for p in part_paths(source, INSTANCES)]
    (seq_len,) = duckdb.sql(
        "SELECT max(len(input_ids)) FROM read_parquet($f)", params={"f": files}
    ).fetchall()[0]
    rows = []
    for name, overrides in VARIANTS.items():
        run_dir = copy_run(source, work / f"cost-{name}")
        rss = train(run_dir, name, overrides, args, args.steps, args.steps)["peak_rss_mb"]
        refresh = overrides.get("routing", {}).get("refresh_every", args.refresh_every)
        row = cost_row(train_log(run_dir, name), args.warmup, refresh, rss)
        row["mfu"] = mfu(n_params, layers, hidden, seq_len, row["tokens_per_s"])
        rows.append((name, row))
        print(f"  {name}: done", flush=True)
    return rows


def quality_part(source: Path, work: Path, args) -> list[tuple[str, dict]]:
    """MLM-only and TRELM to the same step budget; targets: MLM-only's final held-out loss and (when it
    is above zero) MLM-only's final KG-probe score, or `--target-loss`."""
    heldout = part_paths(source, INSTANCES)[-1]
    results = {}
    for name in ("mlm_only", "trelm_routing_ig"):
        run_dir = copy_run(source, work / f"quality-{name}", slice(0, -1))
        train(run_dir, name, VARIANTS[name], args, args.quality_steps, args.quality_every)
        results[name] = (checkpoint_scores(run_dir, name, heldout, args), train_log(run_dir, name)["step_s"])
    baseline = results["mlm_only"][0][max(results["mlm_only"][0])]
    loss_target = args.target_loss or baseline["heldout_loss"]
    probe_target = baseline["kg_probe_seen"] or args.probe_target
    rows = []
    for name, (scores, times) in results.items():
        final = scores[max(scores)]
        losses = {step: v["heldout_loss"] for step, v in scores.items()}
        probes = {step: v["kg_probe_seen"] for step, v in scores.items()}
        rows.append(
            (
                name,
                {
                    "heldout_loss_final": final["heldout_loss"],
                    "loss_target": loss_target,
                    "s_to_loss_target": time_to_target(losses, times, loss_target, lower=True),
                    "kg_probe_seen_final": final["kg_probe_seen"],
                    "probe_target": probe_target,
                    "s_to_probe_target": time_to_target(probes, times, probe_target, lower=False),
                    "train_s": sum(times),
                },
            )
        )
    return rows


def print_table(title: str, rows: list[tuple[str, dict]]) -> None:
    keys = list(rows[0][1])
    print(f"\n{title}\n| variant | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for name, row in rows:
        print(f"| {name} | " + " | ".join(_fmt(row[k]) for k in keys) + " |")


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, help="A run folder with instances (default: the sample run).")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--init", default="pretrained", choices=["pretrained", "random"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="Steps left out of the medians.")
    parser.add_argument("--refresh-every", type=int, default=25)
    parser.add_argument("--max-targets", type=int, default=4)
    parser.add_argument("--quality-steps", type=int, default=0, help="0 skips part 2.")
    parser.add_argument("--quality-every", type=int, default=10)
    parser.add_argument("--target-loss", type=float, help="Held-out loss target (default: MLM-only's final).")
    parser.add_argument(
        "--probe-target", type=float, default=0.05, help="KG-probe target if MLM-only scores 0."
    )
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    source = args.run_dir or sample_run()
    work = REPO / ".bench" / "pretrain"
    print(f"device: {_device_name()}; data: {source}; backbone: {args.backbone} ({args.init})")
    cost = cost_part(source, work, args)
    print_table("cost per step (medians)", cost)
    by_name = dict(cost)
    backward_ratio = by_name["trelm_routing_ig"]["backward_s"] / by_name["trelm_no_routing"]["backward_s"]
    step_ratio = by_name["trelm_routing_ig"]["step_s"] / by_name["mlm_only"]["step_s"]
    print(f"\nrouted / full backward: {backward_ratio:.2f} (target <= 0.70)")
    print(
        f"TRELM (routing, attribution amortized over {args.refresh_every}) / MLM-only step: "
        f"{step_ratio:.2f} (target <= 1.30)"
    )
    ig = by_name["trelm_routing_ig"]
    routed_step = ig["step_s"] - ig["attribution_per_refresh_s"] / args.refresh_every
    room = 1.3 * by_name["mlm_only"]["step_s"] - routed_step
    break_even = ig["attribution_per_refresh_s"] / room if room > 0 else float("inf")
    print(
        f"faithful attribution: {ig['attribution_per_refresh_s']:.2f} s per refresh; the 1.3x target holds "
        f"from refresh_every >= {break_even:.0f}"
    )
    quality = quality_part(source, work, args) if args.quality_steps else []
    if quality:
        print_table("time to quality (held-out MLM loss)", quality)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cost": cost,
                    "quality": quality,
                    "backward_ratio": backward_ratio,
                    "step_ratio": step_ratio,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
