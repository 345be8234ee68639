"""Checkpoint folders of a pre-training run: names, the files beside DeepSpeed's, pruning, and resuming on
another number of ranks.

`checkpoints/{name}/step-XXXXXXXX/` holds DeepSpeed's model/optimizer/scheduler states (with the client
state), and beside them, all written before DeepSpeed writes `latest` (so `latest` never names a half-
written checkpoint):

- `trainer_state.json`: step, world size, ZeRO stage and data position, readable without loading a
  tensor: a run finds out before it builds its engine whether it resumes on the same number of ranks;
- `memory_bank.pt` (identical on every rank, written by rank 0);
- `rng-rank{r}.pt`: python, numpy, torch, cuda and the batch generator of rank r.

ZeRO partitions the optimizer state (and under stage 3 the weights) by rank, so the files of a run on N
ranks do not load on M. A resume on another world converts the checkpoint once to DeepSpeed's universal
format (`deepspeed.checkpoint.ds_to_universal`: every parameter's fp32 weights and optimizer moments, whole)
into `universal-step-XXXXXXXX/` and loads it with `checkpoint.load_universal`; the data position counts
sequences (`trelm.data`), so the new ranks continue the same stream. Per-rank random states cannot carry
over to another world: each new rank seeds its own from (seed, step, rank), and the run says so.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from storage.errors import InputError
from storage.shards import atomic_write, atomic_write_bytes

TAG_PREFIX = "step-"
UNIVERSAL_PREFIX = "universal-"
TRAINER_STATE = "trainer_state.json"
MEMORY_BANK = "memory_bank.pt"


def tag_of(step: int) -> str:
    return f"{TAG_PREFIX}{step:08d}"


def rng_file(folder: Path, rank: int) -> Path:
    return folder / f"rng-rank{rank}.pt"


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint `latest` names, and how the run that wrote it was laid out."""

    folder: Path
    step: int
    world: int
    zero_stage: int

    def universal_folder(self) -> Path:
        return self.folder.with_name(UNIVERSAL_PREFIX + self.folder.name)


def latest(ckpt_dir: Path) -> ResumePoint | None:
    """The checkpoint to resume from, or None for a fresh run."""
    pointer = ckpt_dir / "latest"
    if not pointer.exists():
        return None
    folder = ckpt_dir / pointer.read_text().strip()
    state_file = folder / TRAINER_STATE
    if not state_file.exists():
        raise InputError(
            f"{folder} has no {TRAINER_STATE} (written by an older version of the trainer)",
            fix=f"delete {pointer} to start over, or resume it with that version",
        )
    state = json.loads(state_file.read_text())
    return ResumePoint(folder, state["step"], state["world"], state["zero_stage"])


def write_trainer_state(folder: Path, **state: int) -> None:
    """step, world, zero_stage, epoch, sequences: JSON that a person (or a run on another world) reads."""
    atomic_write_bytes(folder / TRAINER_STATE, json.dumps(state, indent=2).encode())


def atomic_torch_save(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def prune(ckpt_dir: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints; universal copies are dropped once a newer checkpoint exists."""
    tags = sorted(p for p in ckpt_dir.glob(f"{TAG_PREFIX}*") if p.is_dir())
    for old in tags[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    newest = UNIVERSAL_PREFIX + tags[-1].name if tags else ""
    stale = [p for p in ckpt_dir.glob(f"{UNIVERSAL_PREFIX}*") if p.name < newest]
    for converted in stale:
        shutil.rmtree(converted, ignore_errors=True)
    if stale:  # ds_to_universal points this file at the copy it made
        (ckpt_dir / "latest_universal").unlink(missing_ok=True)


def to_universal(point: ResumePoint) -> Path:
    """Convert `point` to DeepSpeed's universal checkpoint (once; a finished conversion is reused)."""
    from types import SimpleNamespace

    from deepspeed.checkpoint import ds_to_universal

    out = point.universal_folder()
    done = out / ".complete"
    if done.exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    args = SimpleNamespace(
        input_folder=str(point.folder),
        output_folder=str(out),
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=False,
    )
    ds_to_universal.main(args)
    done.touch()
    return out


# ---------------------------------------------------------------- random states


def rng_state(generator: torch.Generator) -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def reseed(seed: int, step: int, rank: int, generator: torch.Generator) -> None:
    """Fresh random states for a rank of a new world: distinct per rank and per resume step."""
    base = seed * 1_000_003 + step * 7919 + rank
    random.seed(base)
    np.random.seed(base % 2**32)
    torch.manual_seed(base)
    generator.manual_seed(base)
