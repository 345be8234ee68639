"""The ranks of a pre-training run: joining the world the launcher started (or making a world of one),
each rank's device, and the few collective reductions the loop needs."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from storage.configio import device_name
from trelm.config import PretrainConfig


@dataclass
class RankInfo:
    rank: int
    world: int
    device: torch.device


def resolve_device(name: str) -> torch.device:
    """This rank's device: `cuda` means the GPU of its local rank."""
    name = device_name(name)
    return torch.device(name, int(os.environ.get("LOCAL_RANK", 0))) if name == "cuda" else torch.device(name)


SHM_OP = "deepspeed_shm_comm"  # the op DeepSpeed compiles for CPU ranks the first time a machine trains


def accelerator_env(cfg: PretrainConfig) -> dict[str, str]:
    """The environment of a process that imports DeepSpeed: a CPU run names the CPU, so DeepSpeed takes
    it without warning "unable to detect" a GPU in every process (set before its import)."""
    return {"DS_ACCELERATOR": "cpu"} if resolve_device(cfg.train.device).type == "cpu" else {}


def init_distributed(cfg: PretrainConfig) -> RankInfo:
    """Join the ranks the launcher started, or make this process a world of one (in-flow training)."""
    device = resolve_device(cfg.train.device)
    for key, value in accelerator_env(cfg).items():
        os.environ.setdefault(key, value)
    import deepspeed

    if "WORLD_SIZE" not in os.environ:
        # a world of one (no launcher started this process) has no peer to meet: port 0 lets its store bind
        # a free port, so two in-flow trainings on one machine (overlapping runs, test workers) do not collide
        os.environ["MASTER_PORT"] = "0"
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(cfg.train.master_port))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        if device.type == "cpu":
            _announce_op_build()
        # DeepSpeed prints "... built successfully" on every start, built or loaded: nothing to act on
        with contextlib.redirect_stdout(io.StringIO()):
            deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    return RankInfo(torch.distributed.get_rank(), torch.distributed.get_world_size(), device)


def _announce_op_build() -> None:
    """The first CPU training on a machine compiles DeepSpeed's shared-memory op (25-75 s on 2 cores,
    silently): said beforehand, so that the pause does not pass for a hang."""
    from torch.utils.cpp_extension import _get_build_directory

    if not (Path(_get_build_directory(SHM_OP, verbose=False)) / f"{SHM_OP}.so").exists():
        print(
            "pretrain: DeepSpeed is building its CPU communication op (once per machine, about a minute)",
            file=sys.stderr,
            flush=True,
        )


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory, or on a CPU the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def mean_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    if torch.distributed.get_world_size() == 1:
        return metrics
    on_gpu = torch.distributed.get_backend() == "nccl"  # nccl reduces device tensors only
    values = torch.tensor(list(metrics.values()), dtype=torch.float64, device="cuda" if on_gpu else "cpu")
    torch.distributed.all_reduce(values)
    return dict(zip(metrics, (values / torch.distributed.get_world_size()).tolist(), strict=True))
