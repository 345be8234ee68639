"""The knowledge-augmented memory bank (KMB, paper section 3.2, Eq. 4-6).

Rows are the entities given at construction (a sorted array of kg_ids; the trainer passes the entities that
occur in the corpus), each with a local memory, a global memory and an occurrence count.

- Eq. 4 (`window_means`): the mean of the last-layer outputs over [l-k, r+k] (r the last token of the span),
  clipped to the sequence and skipping padding. The mean is over the positions actually summed: the paper's
  denominator 2k+r-l is one short of the 2k+r-l+1 positions of an unclipped window, and clipping at the
  sequence ends leaves fewer.
- Local memory start ("initialize M_local using the pre-trained embeddings"): either a tensor given at
  construction, or lazily, per row, the mean of the backbone's input word embeddings of the entity's tokens at
  its first occurrence in training. Until a row has been updated, `read` returns that fallback for both
  memories; the first update writes it as the starting local memory, then applies Eq. 5. (With a tensor,
  the global memory also reads the tensor until the entity's first context.)
- Eq. 5 (moving average): several occurrences of one entity in a batch are applied in batch order, in closed
  form: after n occurrences v_0..v_{n-1}, M <- (1-g)^n M + sum_j g (1-g)^(n-1-j) v_j, equal to n sequential
  updates.
- Eq. 6 (global memory): the running mean of the last-layer [CLS] output over the sequences (contexts) the
  entity occurred in; an entity twice in one sequence counts that context once (`global_mask`).
- Placement: the tensors live on the accelerator when `placement` says so (or "auto" and they fit
  `max_device_bytes`), else in host memory (pinned under CUDA) with a gather before and a scatter after each
  batch. Both paths run the same arithmetic on the compute device, so they give identical results.
- Several ranks (torch.distributed initialised, world > 1): `update` all-gathers every rank's
  (rows, vectors), padded to the largest count, and applies them rank by rank, so the banks stay identical.

Deviation: the paper also keeps long-tail *words* in the KMB (section 3.4, "Input"); this bank holds entities.
"""

from __future__ import annotations

import numpy as np
import torch

from trelm.batch import EntityRows


def span_mean(
    values: torch.Tensor, mask: torch.Tensor, batch: torch.Tensor, start: torch.Tensor, end: torch.Tensor
) -> torch.Tensor:
    """[E, H]: mean of values[batch[e], start[e]:end[e]] over the positions where mask is set (prefix sums,
    in float32 so that a difference of two long bf16 sums keeps the span; an empty span gives zeros)."""
    weights = mask.float().unsqueeze(-1)
    sums = torch.nn.functional.pad(torch.cumsum(values.float() * weights, 1), (0, 0, 1, 0))  # [B, T+1, H]
    counts = torch.nn.functional.pad(torch.cumsum(weights, 1), (0, 0, 1, 0))
    total = sums[batch, end] - sums[batch, start]
    count = counts[batch, end] - counts[batch, start]
    return (total / count.clamp(min=1)).to(values.dtype)


def window_means(
    hidden: torch.Tensor, attention_mask: torch.Tensor, batch, start, end, k: int
) -> torch.Tensor:
    """Eq. 4: mean of hidden over [start-k, end-1+k] (end exclusive), clipped to the sequence, no padding."""
    width = hidden.shape[1]
    return span_mean(hidden, attention_mask, batch, (start - k).clamp(min=0), (end + k).clamp(max=width))


class MemoryBank:
    def __init__(
        self,
        kg_ids: np.ndarray,
        hidden: int,
        gamma: float,
        placement: str = "auto",
        max_device_bytes: int = 2 * 1024**3,
        initial_local: torch.Tensor | None = None,
    ):
        self.index = EntityRows(kg_ids)
        self.gamma = gamma
        self.placement = placement
        self.max_device_bytes = max_device_bytes
        n = len(self.index)
        self.local = torch.zeros(n, hidden)
        self.global_ = torch.zeros(n, hidden)
        self.count = torch.zeros(n, dtype=torch.long)
        self.initialized = torch.zeros(n, dtype=torch.bool)
        if initial_local is not None:
            self.local.copy_(initial_local)
            self.global_.copy_(initial_local)
            self.initialized.fill_(True)

    # ------------------------------------------------------------ placement and checkpoints

    @property
    def nbytes(self) -> int:
        tensors = (self.local, self.global_, self.count, self.initialized)
        return sum(t.element_size() * t.numel() for t in tensors)

    @property
    def device(self) -> torch.device:
        return self.local.device

    def place(self, device: torch.device | str) -> torch.device:
        """Move the bank where `placement` puts it for a model on `device`; returns the storage device."""
        device = torch.device(device)
        on_device = self.placement == "device" or (
            self.placement == "auto" and self.nbytes <= self.max_device_bytes
        )
        target = device if on_device else torch.device("cpu")
        pin = target.type == "cpu" and device.type == "cuda"
        for name in ("local", "global_", "count", "initialized"):
            moved = getattr(self, name).to(target)
            setattr(self, name, moved.pin_memory() if pin else moved)
        return target

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "kg_ids": torch.from_numpy(self.index.kg_ids.copy()),
            "local": self.local.cpu(),
            "global": self.global_.cpu(),
            "count": self.count.cpu(),
            "initialized": self.initialized.cpu(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not np.array_equal(state["kg_ids"].numpy(), self.index.kg_ids):
            raise ValueError("memory-bank checkpoint holds other entities than this bank")
        self.local.copy_(state["local"])
        self.global_.copy_(state["global"])
        self.count.copy_(state["count"])
        self.initialized.copy_(state["initialized"])

    # ------------------------------------------------------------ read and update

    def row_of(self, kg_ids) -> np.ndarray:
        """Bank rows of kg_ids (-1 where not in the bank)."""
        return self.index(kg_ids)

    def read(self, rows: torch.Tensor, fallback: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M_local, M_global) [n, H] for bank rows (>= 0) on the device of `fallback`; rows never updated
        (nor given an initial tensor) read `fallback` (their pretrained start) for both."""
        at = rows.to(self.device)
        local = self.local[at].to(fallback.device, non_blocking=True)
        global_ = self.global_[at].to(fallback.device, non_blocking=True)
        ready = self.initialized[at].to(fallback.device).unsqueeze(-1)
        fallback = fallback.to(local.dtype)
        return torch.where(ready, local, fallback), torch.where(ready, global_, fallback)

    @torch.no_grad()
    def update(
        self,
        rows: torch.Tensor,
        local_vectors: torch.Tensor,
        cls_vectors: torch.Tensor,
        init_vectors: torch.Tensor,
        global_mask: torch.Tensor,
    ) -> None:
        """Eq. 5 and Eq. 6 for occurrences in order (after all ranks' occurrences are gathered, rank by rank):
        rows [n], local_vectors (Eq. 4) / cls_vectors / init_vectors (pretrained start) [n, H],
        global_mask [n] (False: a repeat of the entity in the same sequence, left out of Eq. 6)."""
        vectors = torch.cat([local_vectors, cls_vectors, init_vectors], 1).float()
        meta = torch.stack([rows.long(), global_mask.long()], 1)
        if _distributed():
            vectors, meta = _all_gather_padded(vectors), _all_gather_padded(meta)
        if len(meta):
            local, cls, init = vectors.chunk(3, dim=1)
            self._apply(meta[:, 0], local, cls, init, meta[:, 1].bool())

    def _apply(self, rows, local, cls, init, global_mask) -> None:
        unique, inverse = torch.unique(rows, return_inverse=True)
        position, per_row = _positions_in_group(inverse, len(unique))
        at = unique.to(self.device)
        old_local = self.local[at].to(rows.device)
        first = torch.full((len(unique),), len(rows), device=rows.device).scatter_reduce(
            0, inverse, torch.arange(len(rows), device=rows.device), "amin"
        )
        ready = self.initialized[at].to(rows.device).unsqueeze(-1)
        start = torch.where(ready, old_local, init[first])
        keep = (1 - self.gamma) ** per_row.unsqueeze(-1).to(local.dtype)
        weight = self.gamma * (1 - self.gamma) ** (per_row[inverse] - 1 - position).to(local.dtype)
        new_local = keep * start + torch.zeros_like(start).index_add_(
            0, inverse, weight.unsqueeze(-1) * local
        )
        new_global, new_count = self._running_mean(at, inverse, cls, global_mask, len(unique))
        self.local[at] = new_local.to(self.device)
        self.global_[at] = new_global.to(self.device)
        self.count[at] = new_count.to(self.device)
        self.initialized[at] = True

    def _running_mean(self, at, inverse, cls, global_mask, n_unique):
        """Eq. 6: (old mean * old count + sum of the new [CLS] vectors) / new count."""
        old_count = self.count[at].to(cls.device)
        old_global = self.global_[at].to(cls.device)
        added = torch.zeros(n_unique, dtype=torch.long, device=cls.device).index_add_(
            0, inverse, global_mask.long()
        )
        sums = torch.zeros_like(old_global).index_add_(
            0, inverse, cls * global_mask.unsqueeze(-1).to(cls.dtype)
        )
        count = old_count + added
        mean = (old_global * old_count.unsqueeze(-1) + sums) / count.clamp(min=1).unsqueeze(-1)
        return torch.where(count.unsqueeze(-1) > 0, mean, old_global), count


def _positions_in_group(inverse: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(j's rank among the occurrences of its group in order, occurrences per group)."""
    per_group = torch.bincount(inverse, minlength=n_groups)
    order = torch.sort(inverse, stable=True).indices
    group_start = torch.cumsum(per_group, 0) - per_group
    position = torch.empty_like(inverse)
    position[order] = torch.arange(len(inverse), device=inverse.device) - group_start[inverse[order]]
    return position, per_group


def _distributed() -> bool:
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and (torch.distributed.get_world_size() > 1)
    )


def _all_gather_padded(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of `tensor` (counts may differ), concatenated in rank order."""
    dist = torch.distributed
    count = torch.tensor([len(tensor)], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    if longest == 0:  # every rank sees the same counts, so all skip the second collective together
        return tensor
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: len(tensor)] = tensor
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(c.item())] for g, c in zip(gathered, counts, strict=True)])
