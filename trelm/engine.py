"""How DeepSpeed runs a variant: the precision, the engine's config from `train` (with a user's
DeepSpeed JSON on top), and the learning-rate schedule as a pure function of the step."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from storage.configio import deep_merge
from trelm.config import PretrainConfig


def use_bf16(cfg: PretrainConfig, device: torch.device) -> bool:
    if cfg.train.precision != "auto":
        return cfg.train.precision == "bf16"
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def deepspeed_config(cfg: PretrainConfig, device: torch.device, world: int) -> dict:
    """The engine's JSON from `train`, with a user's `train.deepspeed_config` keys on top."""
    train = cfg.train
    ds = {
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": train.micro_batch_size * train.grad_accum * world,
        "gradient_clipping": train.grad_clip,
        "zero_optimization": {"stage": train.zero_stage},
        "bf16": {"enabled": use_bf16(cfg, device)},
        # the optimizer is ours (LazyAdamW under routing, AdamW otherwise): DeepSpeed checks its name
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if train.deepspeed_config:
        ds = deep_merge(ds, yaml.safe_load(Path(train.deepspeed_config).read_text()))
    return ds


def linear_schedule(optimizer, warmup: int, total: int):
    """Warmup from 0 to the peak over `warmup` steps, then linear decay to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
