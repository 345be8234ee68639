"""`pretrain` config: the model (KMB, CKA, Eq. 7), routing (DKR), the DeepSpeed run, and the ablation variant.

Light on purpose (pydantic only): `flows.config` imports it to build the pipeline's parameter schema, and
`trelm sql` must not pay for torch. The variants are the paper's Table 6 rows plus continued MLM
pre-training of the same backbone; a variant switches parts off on top of the sections' own flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trelm.modelconfig import ModelConfig
from trelm.routingconfig import RoutingConfig

Variant = Literal["trelm", "mlm_only", "no_injection", "no_memory", "no_routing", "trelm_plain_cka"]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage (0: plain data parallel).")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 on a GPU that supports it, fp32 otherwise (CPU bf16 is slow)."
    )
    micro_batch_size: int = Field(16, ge=1, description="Sequences per rank per forward pass.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step (DeepSpeed accumulation).")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay.")
    warmup_steps: int = Field(100, ge=0, description="Linear warmup from 0 to lr over this many steps.")
    max_steps: int = Field(1000, ge=1, description="Step budget (optimizer steps); decay reaches 0 here.")
    max_epochs: int = Field(
        100, ge=1, description="Stop after this many passes over `instances` even if steps remain."
    )
    grad_clip: float = Field(1.0, ge=0, description="Global gradient-norm clip (0: off).")
    seed: int = Field(0, description="Seeds data order, masking, negatives, dropout and initialisation.")
    save_every: int = Field(200, ge=1, description="Checkpoint every this many steps (and at the end).")
    keep_last: int = Field(3, ge=1, description="Checkpoints kept; older ones are deleted after a save.")
    log_every: int = Field(1, ge=1, description="Steps between rows of `train_log` and TensorBoard points.")
    tensorboard: bool = Field(True, description="Also write TensorBoard events to checkpoints/{name}/tb.")
    ranks: int = Field(
        1, ge=1, description="Local processes: 1 trains in-process, more go through `deepspeed`."
    )
    hostfile: Path | None = Field(
        None, description="DeepSpeed hostfile for several nodes (see deploy/deepspeed/hostfile.example)."
    )
    master_port: int = Field(29517, description="Rendezvous port of the ranks.")
    deepspeed_config: Path | None = Field(
        None, description="A DeepSpeed JSON whose keys override the generated ones (see deploy/deepspeed/)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available.")
    threads: int | None = Field(
        None, ge=1, description="torch intra-op threads per rank on CPU (None: default)."
    )


class PretrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant: Variant = Field(
        "trelm",
        description="trelm (all parts); mlm_only (continued MLM of the backbone); no_injection (no KG "
        "embedding in Eq. 7); no_memory (no KMB: lambda = 0); no_routing (every parameter trains); "
        "trelm_plain_cka (our extension, not the paper's: trelm with model.cka_plain_view, default cloze).",
    )
    name: str | None = Field(None, description="Checkpoint folder under checkpoints/ (default: the variant).")
    compare: list[Variant] = Field(
        default_factory=list,
        description="Also train these variants with the same data and settings (the flow runs each into "
        "checkpoints/{variant}), for `evaluate` to compare, e.g. [mlm_only].",
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="Backbone, KMB, CKA (Eq. 2-8).")
    routing: RoutingConfig = Field(default_factory=RoutingConfig, description="Dynamic knowledge routing.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The DeepSpeed run.")

    @model_validator(mode="after")
    def _warm_up_below_zero3(self) -> PretrainConfig:
        """A routing warm-up freezes parameters mid-run; ZeRO-3 has partitioned them by then."""
        routing = self.effective().routing  # a variant may switch routing off
        if routing.enabled and routing.full_steps > 0 and self.train.zero_stage == 3:
            raise ValueError("routing.full_steps > 0 needs train.zero_stage 0-2 (ZeRO-3 partitions first)")
        return self

    def runs(self) -> list[PretrainConfig]:
        """The configured variant, then each of `compare` (deduplicated), as single-run configs."""
        variants = dict.fromkeys([self.variant, *self.compare])
        return [
            self.model_copy(
                update={"variant": v, "name": None if v != self.variant else self.name, "compare": []}
            )
            for v in variants
        ]

    @property
    def checkpoint_name(self) -> str:
        return self.name or self.variant

    def effective(self) -> PretrainConfig:
        """The config with the variant's switches applied (what the trainer runs and saves)."""
        model, routing = self.model, self.routing
        if self.variant == "mlm_only":
            model = model.model_copy(update={"inject_knowledge": False, "memory_bank": False, "cka": False})
            routing = routing.model_copy(update={"enabled": False})
        elif self.variant == "no_injection":
            model = model.model_copy(update={"inject_knowledge": False})
        elif self.variant == "no_memory":
            model = model.model_copy(update={"memory_bank": False})
        elif self.variant == "no_routing":
            routing = routing.model_copy(update={"enabled": False})
        elif self.variant == "trelm_plain_cka" and model.cka_plain_view == "off":
            # the variant's default view; a config may pick "span" instead
            model = model.model_copy(update={"cka_plain_view": "cloze"})
        if not model.cka and routing.enabled:
            # attribution is taken on the CKA answer's probability (Eq. 9): without CKA there is no target
            routing = routing.model_copy(update={"enabled": False})
        return self.model_copy(update={"model": model, "routing": routing})
