"""The DeepSpeed pre-training loop: TRELM (Eq. 2-11) on the `instances` shards, resumable step by step.

One process per rank (`trelm.launch` starts them); each rank streams its slice of the data
(`trelm.data`), builds the same model from the same seed, and steps a DeepSpeed engine (ZeRO stage,
precision, accumulation, clipping from `train`). Per optimizer step: the router refreshes the
knowledge paths (every `routing.refresh_every` steps), forward, the memory bank update (Eq. 4-6, the
same on every rank), backward, step; the step's loss parts, lambda, throughput, trainable share and
attribution time go to `train_log` (Parquet, per checkpoint), TensorBoard and a progress bar.

A checkpoint (`checkpoints/{name}/step-XXXXXXXX`, laid out by `trelm.checkpoints`) holds DeepSpeed's
model/optimizer/scheduler states, and as client state everything else a resume needs: step, data
position, lambda's epoch, the router's paths, the resolved config; the memory bank, each rank's RNG
states and the run's layout are files of the same folder. Resuming replays nothing: the data stream
seeks to the saved position and every random source continues from its saved state, so a killed run's
losses equal an uninterrupted run's. A run resumed on another number of ranks loads the checkpoint
through DeepSpeed's universal format and continues the same data stream (`trelm.checkpoints`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from storage import layout
from storage.configio import write_yaml
from trelm import checkpoints
from trelm.checkpoints import atomic_torch_save, rng_state, set_rng_state
from trelm.config import PretrainConfig
from trelm.data import DataPosition, InstanceStream
from trelm.distributed import init_distributed, mean_over_ranks, peak_memory_mb
from trelm.engine import deepspeed_config, linear_schedule
from trelm.provenance import pretrain_provenance
from trelm.trainlog import PROGRESS_EVERY_S, TrainLog, start_line, write_progress


@dataclass
class TrainState:
    step: int = 0
    position: DataPosition = field(default_factory=DataPosition)
    log_parts: int = 0  # train_log parts written (part index of the next flush)


# ---------------------------------------------------------------- the model and its surroundings


class ModelParts:
    """What a rank builds from the run's datasets: the TRELM model, tokenizer, router and optimizer."""

    def __init__(self, cfg: PretrainConfig, run_dir: Path, device: torch.device, generator: torch.Generator):
        from trelm.batch import TokenInfo
        from trelm.data import corpus_entities, entity_vectors, relation_count, unigram_counts
        from trelm.model import TrelmModel, load_backbone
        from trelm.routing import Router

        self.cfg = cfg
        mlm, self.tokenizer = load_backbone(cfg.model)
        self.tok_info = TokenInfo.from_tokenizer(self.tokenizer)
        kg_ids = corpus_entities(run_dir)
        self.model = TrelmModel(
            cfg.model,
            mlm,
            self.tok_info,
            kg_ids,
            torch.from_numpy(entity_vectors(run_dir, kg_ids)),
            relation_count(run_dir),
            torch.from_numpy(unigram_counts(run_dir, self.tok_info.vocab_size)),
            seed=cfg.train.seed,
        ).to(device)
        if cfg.model.cka_plain_view == "cloze":  # issue 12's extension reads the relations' words
            from trelm.relations import relation_cloze_ids

            relations = relation_cloze_ids(run_dir, self.tokenizer, cfg.model.cka_cloze_relation)
            self.model.set_relation_tokens(relations)
        self.model.train()  # from_pretrained leaves the backbone in eval mode: dropout must be on
        self.model.sampler.generator = generator  # one per-rank stream, saved in every checkpoint
        self.router = Router(self.model, cfg.routing, seed=cfg.train.seed) if cfg.routing.enabled else None
        if self.router is not None:
            self.router.install()

    def batch(self, rows: list[dict], generator: torch.Generator):
        from trelm.batch import make_batch

        return make_batch(rows, self.tok_info, self.cfg.model, generator, self.model.entity_rows)

    def lam(self, epoch: int) -> float:
        return self.cfg.model.lambda_at(epoch)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        if self.router is not None:
            return self.router.trainable_parameters()
        return [p for p in self.model.parameters() if p.requires_grad]

    def optimizer(self, params, train) -> torch.optim.Optimizer:
        """LazyAdamW under routing (a row off the paths does not move on old momentum), AdamW otherwise."""
        from trelm.lazyadam import LazyAdamW

        kind = LazyAdamW if self.router is not None else torch.optim.AdamW
        return kind(params, lr=train.lr, weight_decay=train.weight_decay)

    def refresh_routes(self, batch, lam: float, step: int) -> dict[str, float]:
        if self.router is None:
            return {"trainable_share": 1.0}
        stats = self.router.refresh(batch, lam, step)
        stats.pop("attribution_seconds")  # the step timer's attribution_s lap measures the same call
        return stats

    def register_external_parameters(self, zero_stage: int) -> None:
        """ZeRO-3 gathers a module's weights for its own forward only: CKA reads the tied MLM decoder
        outside it, so DeepSpeed must be told to gather those weights for the whole model's forward."""
        if zero_stage == 3:
            import deepspeed

            for param in self.model.external_parameters():
                deepspeed.zero.register_external_parameter(self.model, param)

    def routing_state(self) -> dict | None:
        return self.router.state_dict() if self.router is not None else None

    def load_routing_state(self, state: dict | None) -> None:
        if self.router is not None and state is not None:
            self.router.load_state_dict(state)

    def save_memory(self, path: Path) -> None:
        if self.model.memory is not None:
            atomic_torch_save(self.model.memory.state_dict(), path)

    def load_memory(self, path: Path) -> None:
        if self.model.memory is not None:
            self.model.memory.load_state_dict(torch.load(path, weights_only=True))

    def export_hf(self, path: Path, zero_stage: int, rank: int) -> None:
        """`save_pretrained` + tokenizer on rank 0; under ZeRO-3 every rank first gathers the weights."""
        import contextlib

        import deepspeed

        gather = (
            deepspeed.zero.GatheredParameters(list(self.model.mlm.parameters()), modifier_rank=None)
            if zero_stage == 3
            else contextlib.nullcontext()
        )
        with gather:
            if rank == 0:
                self.model.export_hf(path, self.tokenizer)


# ---------------------------------------------------------------- the run


class Trainer:
    """One rank's training run: build, resume, step until the budget, checkpoint, export."""

    def __init__(self, cfg: PretrainConfig, run_dir: Path, progress: bool = True):
        self.cfg, self.run_dir, self.progress = cfg.effective(), Path(run_dir), progress
        self.ckpt_dir = layout.checkpoint_dir(run_dir, cfg.checkpoint_name)
        self.dist = init_distributed(self.cfg)
        if self.cfg.train.threads and self.dist.device.type == "cpu":
            torch.set_num_threads(self.cfg.train.threads)
        torch.manual_seed(self.cfg.train.seed)  # same initial weights on every rank
        self.generator = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + self.dist.rank)
        self.parts = ModelParts(self.cfg, self.run_dir, self.dist.device, self.generator)
        torch.manual_seed(self.cfg.train.seed + 7919 * (self.dist.rank + 1))  # dropout differs per rank
        self.stream = InstanceStream(
            self.run_dir,
            self.cfg.train.micro_batch_size,
            self.dist.rank,
            self.dist.world,
            self.cfg.train.seed,
        )
        self.resume_point = checkpoints.latest(self.ckpt_dir)
        self.engine = self._engine()
        self.state = TrainState()
        self.log = self._train_log() if self.dist.rank == 0 else None
        self.progress_file = layout.train_progress(self.run_dir, self.cfg.checkpoint_name)
        self.progress_written = 0.0  # time.monotonic() of the last progress file

    @property
    def resumes_on_another_world(self) -> bool:
        """ZeRO 1-3 partition the optimizer by rank: another world loads through the universal format."""
        point = self.resume_point
        return point is not None and point.world != self.dist.world and point.zero_stage > 0

    def _engine(self):
        import deepspeed

        params = self.parts.trainable_parameters()
        optimizer = self.parts.optimizer(params, self.cfg.train)
        scheduler = linear_schedule(optimizer, self.cfg.train.warmup_steps, self.cfg.train.max_steps)
        config = deepspeed_config(self.cfg, self.dist.device, self.dist.world)
        if self.resumes_on_another_world:
            config["checkpoint"] = {"load_universal": True}
        self.parts.register_external_parameters(self.cfg.train.zero_stage)
        engine, *_ = deepspeed.initialize(
            model=self.parts.model, optimizer=optimizer, lr_scheduler=scheduler, config=config
        )
        if self.dist.world == 1 and self.cfg.train.zero_stage == 0:
            # one rank has nothing to average, but DeepSpeed would still flatten every gradient, all-reduce
            # it and copy it back each step (under ZeRO 1-3 the same call also partitions: left on there)
            engine.enable_backward_allreduce = False
        return engine

    def _train_log(self) -> TrainLog:
        provenance = pretrain_provenance(self.cfg, self.run_dir)
        log = TrainLog(self.ckpt_dir, self.cfg.checkpoint_name, provenance, self.cfg.train.tensorboard)
        (log.writer.dir / "_manifest.json").unlink(missing_ok=True)  # a manifest marks a finished run only
        return log

    # ---- the loop

    def run(self) -> dict:
        self.resume()
        start_step = self.state.step
        if self.dist.rank == 0:  # said on the terminal: a resumed run should not pass for a fresh one
            print(start_line(self.cfg.checkpoint_name, start_step, self.cfg.train.max_steps), file=sys.stderr)
        bar = _progress_bar(self.cfg.train.max_steps, self.state.step, self.progress and self.dist.rank == 0)
        train = self.cfg.train
        while self.state.step < train.max_steps and self.state.position.epoch < train.max_epochs:
            for position, rows in self.stream.batches(self.state.position):
                metrics = self.micro_step(rows)
                self.state.position = position
                if metrics is None:  # inside a gradient accumulation
                    continue
                self._after_step(metrics, bar)
                if self.state.step >= train.max_steps:
                    break
            else:
                self.state.position = DataPosition(self.state.position.epoch + 1, 0)
        bar.close()
        return {**self.finish(), "start_step": start_step}

    def micro_step(self, rows: list[dict]) -> dict | None:
        """Route, forward, memory update, backward, step; the metrics at an optimizer-step boundary."""
        model, lam = self.parts.model, self.parts.lam(self.state.position.epoch)
        batch = self.parts.batch(rows, self.generator).to(self.dist.device)
        timer = StepTimer(self.dist.device)
        routing = self.parts.refresh_routes(batch, lam, self.state.step)
        timer.lap("attribution_s")
        out = self.engine(batch, lam)
        timer.lap("forward_s")
        model.update_memory(batch, out)
        timer.lap("memory_s")
        self.engine.backward(out.loss)
        timer.lap("backward_s")
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        timer.lap("optimizer_s")
        if not boundary:
            return None
        tokens = float(batch.attention_mask.sum()) * self.dist.world
        return {
            "loss": out.loss.item(),
            "mlm_loss": out.mlm_loss.item(),
            "cka_loss": out.cka_loss.item(),
            "lambda": lam,
            "lr": self.engine.get_lr()[0],
            "epoch": self.state.position.epoch,
            **routing,
            **timer.laps,
            "step_s": timer.total,
            "tokens_per_s": tokens / max(timer.total, 1e-9),
            "peak_memory_mb": peak_memory_mb(self.dist.device),
        }

    def _after_step(self, metrics: dict, bar) -> None:
        self.state.step += 1
        metrics = mean_over_ranks(metrics)
        if self.log is not None and self.state.step % self.cfg.train.log_every == 0:
            self.log.add(self.state.step, metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", lam=f"{metrics['lambda']:.3f}")
        last = self.state.step >= self.cfg.train.max_steps
        if self.dist.rank == 0 and (last or time.monotonic() - self.progress_written >= PROGRESS_EVERY_S):
            write_progress(self.progress_file, self.state.step, self.cfg.train.max_steps, metrics)
            self.progress_written = time.monotonic()
        if self.state.step % self.cfg.train.save_every == 0 or self.state.step >= self.cfg.train.max_steps:
            self.save()

    # ---- checkpoints

    def save(self) -> None:
        """RNG files, bank and layout first, then DeepSpeed's states, whose `latest` file comes last."""
        folder = self.ckpt_dir / checkpoints.tag_of(self.state.step)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(rng_state(self.generator), checkpoints.rng_file(folder, self.dist.rank))
        if self.dist.rank == 0:
            self.parts.save_memory(folder / checkpoints.MEMORY_BANK)
            checkpoints.write_trainer_state(
                folder,
                step=self.state.step,
                world=self.dist.world,
                zero_stage=self.cfg.train.zero_stage,
                epoch=self.state.position.epoch,
                sequences=self.state.position.sequences,
            )
            self.log.flush(self.state.log_parts)
        self.state.log_parts += 1
        self.engine.save_checkpoint(str(self.ckpt_dir), tag=folder.name, client_state=self._client_state())
        if self.dist.rank == 0:
            checkpoints.prune(self.ckpt_dir, self.cfg.train.keep_last)
        torch.distributed.barrier()

    def _client_state(self) -> dict:
        from deepspeed.checkpoint.constants import (
            UNIVERSAL_CHECKPOINT_INFO,
            UNIVERSAL_CHECKPOINT_VERSION_KEY,
            UNIVERSAL_CHECKPOINT_VERSION_VALUE,
        )

        return {
            "step": self.state.step,
            "epoch": self.state.position.epoch,
            "sequences": self.state.position.sequences,
            "log_parts": self.state.log_parts,
            "lambda": self.parts.lam(self.state.position.epoch),
            "routing": self.parts.routing_state(),
            "world": self.dist.world,
            "config": self.cfg.model_dump(mode="json"),
            # what ds_to_universal requires to convert this checkpoint for another number of ranks
            UNIVERSAL_CHECKPOINT_INFO: {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE},
        }

    def resume(self) -> None:
        """Continue from `latest` when there is one: weights, optimizer, scheduler, bank, RNG, position."""
        point = self.resume_point
        if point is None:
            return
        load_path, client = self.engine.load_checkpoint(str(self.ckpt_dir), tag=self._load_tag(point))
        if load_path is None:
            raise RuntimeError(f"cannot load the checkpoint named by {self.ckpt_dir / 'latest'}")
        position = DataPosition(client["epoch"], client["sequences"])
        self.state = TrainState(client["step"], position, client["log_parts"])
        self.parts.load_memory(point.folder / checkpoints.MEMORY_BANK)
        self.parts.load_routing_state(client["routing"])
        rng = checkpoints.rng_file(point.folder, self.dist.rank)
        if point.world == self.dist.world:
            set_rng_state(torch.load(rng, weights_only=False), self.generator)
        else:  # another world: no saved stream belongs to this rank
            checkpoints.reseed(self.cfg.train.seed, point.step, self.dist.rank, self.generator)
        if self.log is not None:
            self.log.truncate(self.state.log_parts)
        if self.dist.rank == 0 and point.world != self.dist.world:
            moved = f"saved on {point.world} ranks, now {self.dist.world}"
            print(f"{self.cfg.checkpoint_name}: {moved}", file=sys.stderr)

    def _load_tag(self, point: checkpoints.ResumePoint) -> str:
        """The folder to load: the checkpoint itself, or its universal copy for another world."""
        if not self.resumes_on_another_world:
            return point.folder.name
        if self.dist.rank == 0:
            checkpoints.to_universal(point)
        torch.distributed.barrier()
        return point.universal_folder().name

    def finish(self) -> dict:
        """Export the model in Hugging Face format and close `train_log` with the run's summary."""
        hf_dir = self.ckpt_dir / layout.HF_EXPORT
        self.parts.export_hf(hf_dir, zero_stage=self.cfg.train.zero_stage, rank=self.dist.rank)
        summary = {"steps": self.state.step, "epochs": self.state.position.epoch, "world": self.dist.world}
        if self.dist.rank == 0:
            self.log.flush(self.state.log_parts)
            self.log.finalize({"steps": self.state.step})
            write_yaml(self.ckpt_dir / layout.RUN_CONFIG, self.cfg.model_dump(mode="json"))
        torch.distributed.barrier()
        return {"checkpoint": str(self.ckpt_dir), "hf": str(hf_dir), **summary}


class StepTimer:
    """Wall time of the phases of a step; on a GPU each lap waits for the queued kernels first."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.laps: dict[str, float] = {}
        self.start = self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.last = now

    @property
    def total(self) -> float:
        return self.last - self.start


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="pretrain", unit="step")
