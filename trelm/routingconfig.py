"""Configuration of dynamic knowledge routing (paper section 3.3, Eq. 9-12): pydantic only, no torch, so the
flow config can import it without the heavy stack. The mechanics live in `trelm/routing.py`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
    train_groups: list[TrainGroup] = Field(
        default_factory=list,
        description="Parameter groups that train in full besides the paths: embeddings, attention, "
        "layer_norm, ffn_output_bias, head. Empty (default) = frozen. Parameters with no pretrained value "
        "always train.",
    )
