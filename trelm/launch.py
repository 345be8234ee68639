"""Start pre-training: in this process for one local rank, through the `deepspeed` launcher otherwise.

`train.ranks: 1` (a laptop, or a flow task on one GPU) trains in-process. More ranks, or a
`train.hostfile` for several nodes, run `python -m deepspeed.launcher.runner --module trelm.launch`:
the launcher starts one process per rank (per GPU; on a CPU-only machine, CPU ranks over gloo)
and each runs `main()` below. The resolved config travels as a YAML file beside the checkpoints,
and rank 0 leaves the run's summary in `result.json` for the caller. Resuming is the trainer's
business (`latest`), so a crashed or killed launch is simply started again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from storage import layout
from storage.configio import write_yaml
from storage.errors import TrelmError
from storage.shards import atomic_write_text
from trelm.config import PretrainConfig

RESULT = "result.json"
LAUNCH_CONFIG = "launch.yaml"


def pretrain(cfg: PretrainConfig, run_dir: Path, progress: bool = True) -> dict:
    """Train `cfg` on the run's `instances`; returns the summary (checkpoint folder, HF export, steps)."""
    if cfg.train.ranks == 1 and cfg.train.hostfile is None:
        from trelm.trainer import Trainer

        return Trainer(cfg, run_dir, progress=progress).run()
    return launch_ranks(cfg, run_dir)


def launcher_command(cfg: PretrainConfig, run_dir: Path, config_file: Path) -> list[str]:
    where = (
        ["--hostfile", str(cfg.train.hostfile)]
        if cfg.train.hostfile
        else ["--num_gpus", str(cfg.train.ranks)]
    )
    return [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        *where,
        "--master_port",
        str(cfg.train.master_port),
        "--no_local_rank",  # ranks read LOCAL_RANK from the environment the launcher sets
        "--module",
        "trelm.launch",
        "--run-dir",
        str(Path(run_dir).resolve()),
        "--config",
        str(config_file),
    ]


def launch_ranks(cfg: PretrainConfig, run_dir: Path) -> dict:
    ckpt = layout.checkpoint_dir(run_dir, cfg.checkpoint_name)
    ckpt.mkdir(parents=True, exist_ok=True)
    config_file = ckpt / LAUNCH_CONFIG
    write_yaml(config_file, cfg.model_dump(mode="json"))
    (ckpt / RESULT).unlink(missing_ok=True)
    command = launcher_command(cfg, run_dir, config_file.resolve())
    from trelm.distributed import accelerator_env

    env = {**accelerator_env(cfg), **os.environ, "PYTHONUNBUFFERED": "1"}
    # the launcher's and the ranks' log goes to stderr (fd 2): stdout is for results (`trelm run`'s lines)
    done = subprocess.run(command, env=env, stdout=2)
    if done.returncode != 0 or not (ckpt / RESULT).exists():
        raise TrelmError(
            f"pre-training ranks failed (exit {done.returncode}): see the log above",
            fix=f"run the same command again to resume from {ckpt / 'latest'}: {' '.join(command)}",
        )
    return json.loads((ckpt / RESULT).read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="One rank of a TRELM pre-training run (started by deepspeed)."
    )
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True, help="The resolved `pretrain` config (YAML).")
    args = parser.parse_args(argv)
    cfg = PretrainConfig.model_validate(yaml.safe_load(args.config.read_text()))
    from trelm.trainer import Trainer

    result = Trainer(cfg, args.run_dir, progress=os.environ.get("RANK", "0") == "0").run()
    if os.environ.get("RANK", "0") == "0":
        path = Path(result["checkpoint"]) / RESULT
        atomic_write_text(path, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
