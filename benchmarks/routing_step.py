"""Is a routed training step cheaper than a full one? Interleaved in one process (issue 12).

    python benchmarks/routing_step.py                                  # quick shape and 12 x 768, CPU
    python benchmarks/routing_step.py --work .bench/knowledge/work --shapes 128x3

The knowledge benchmark's world (built into --work when it has none) gives the data; per shape
(hidden x layers) a random BERT with the world's tokenizer is the backbone of one real Trainer per
variant: no_routing (TRELM, every parameter trains), trelm (routing, IG) and trelm with first-order
attribution, both refreshing every --refresh-every steps. The trainers take turns on the same batches
(the order rotates each round), so a load change on a shared machine hits every variant alike. The
table gives per variant the medians over rounds 3.. of each phase, the step without attribution, the
attribution per refresh, the step with attribution amortized, and each ratio to no_routing.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import knowledge  # noqa: E402

VARIANTS = {  # name: (trainer variant, routing overrides)
    "no_routing": ("no_routing", {}),
    "trelm (IG)": ("trelm", {"mode": "ig"}),
    "trelm (first-order)": ("trelm", {"mode": "first_order"}),
}
PHASES = ("forward_s", "backward_s", "optimizer_s")


def world(work: Path, args) -> Path:
    """The run folder of the knowledge world in `work` (built there at the quick shape if missing)."""
    run_dir = work / "run"
    if not (run_dir / "instances").exists():
        shutil.rmtree(work, ignore_errors=True)
        knowledge.build_world(work, knowledge.parse_args(["--quick"]))
    return run_dir


def backbone(work: Path, hidden: int, layers: int) -> Path:
    """A random BERT of this shape with the world's (cut) tokenizer."""
    from transformers import AutoTokenizer

    folder = work / f"backbone-{hidden}x{layers}"
    tokenizer = AutoTokenizer.from_pretrained(work / "backbone")
    tokenizer.save_pretrained(folder)
    knowledge.random_bert(folder, len(tokenizer), hidden, layers)
    return folder


def trainers(run_dir: Path, folder: Path, args) -> dict:
    from trelm.trainer import Trainer

    bench = knowledge.parse_args(["--quick", "--refresh-every", str(args.refresh_every)])
    bench.micro_batch, bench.steps, bench.threads = args.micro_batch, args.rounds, args.threads
    out = {}
    for name, (variant, routing) in VARIANTS.items():
        checkpoint = f"step-{folder.name}-{variant}-{routing.get('mode', 'full')}"
        cfg = knowledge.run_config(variant, checkpoint, 0, folder, bench, {}, routing)
        shutil.rmtree(run_dir / "checkpoints" / checkpoint, ignore_errors=True)
        out[name] = Trainer(cfg, run_dir, progress=False)
    return out


def interleaved(runs: dict, rounds: int) -> dict[str, list[dict]]:
    """Each round every trainer takes one step on the same rows, in a rotating order."""
    first = next(iter(runs.values()))
    batches = first.stream.batches(first.state.position)
    laps: dict[str, list[dict]] = {name: [] for name in runs}
    names = list(runs)
    for round_index in range(rounds):
        _, rows = next(batches)
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            laps[name].append(runs[name].micro_step(rows))
            runs[name].state.step += 1  # the router's refresh schedule reads the step
    return laps


def summarize(laps: list[dict], refresh_every: int) -> dict:
    """Medians over rounds 3.. (allocations and the first refresh excluded) and the attribution."""
    later = laps[2:] or laps
    row = {phase: statistics.median(m[phase] for m in later) for phase in PHASES}
    row["step_s"] = statistics.median(m["step_s"] - m["attribution_s"] for m in later)
    refreshes = [m["attribution_s"] for m in laps if m.get("refreshed")]
    row["attribution_s"] = statistics.mean(refreshes) if refreshes else 0.0
    row["amortized_s"] = row["step_s"] + row["attribution_s"] / refresh_every
    row["trainable_share"] = laps[-1]["trainable_share"]
    return row


def table(shape: str, rows: dict[str, dict], args) -> str:
    full = rows["no_routing"]
    lines = [
        f"shape {shape}, micro-batch {args.micro_batch} x 48 tokens, {args.rounds} interleaved rounds "
        f"(medians over rounds 3..), refresh every {args.refresh_every}:",
        "",
        "| variant | trainable | forward s | backward s | optimizer s | step s (no attribution) "
        "| attribution s / refresh | step s amortized | backward / full | step / full | amortized / full |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['trainable_share']:.1%} | "
            + " | ".join(f"{row[p]:.3f}" for p in PHASES)
            + f" | {row['step_s']:.3f} | {row['attribution_s']:.2f} | {row['amortized_s']:.3f} | "
            f"{row['backward_s'] / full['backward_s']:.2f} | {row['step_s'] / full['step_s']:.2f} | "
            f"{row['amortized_s'] / full['step_s']:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / ".bench" / "routing-step")
    parser.add_argument("--shapes", default="128x3,768x12", help="hidden x layers, comma-separated.")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--refresh-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run_dir = world(args.work, args)
    for shape in args.shapes.split(","):
        hidden, layers = (int(v) for v in shape.split("x"))
        runs = trainers(run_dir, backbone(args.work, hidden, layers), args)
        laps = interleaved(runs, args.rounds)
        rows = {name: summarize(values, args.refresh_every) for name, values in laps.items()}
        print(table(shape, rows, args), flush=True)
        del runs


if __name__ == "__main__":
    main()
