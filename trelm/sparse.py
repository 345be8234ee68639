"""Row- and column-sparse weight gradients for the routed FFN linears (dynamic knowledge routing, Eq. 12).

Compute saving. Frozen groups get requires_grad=False, so autograd computes no weight gradient for them
(nor input gradients below the lowest trainable parameter). The FFN linears become `RoutedLinear` (the same
parameter objects under the same names: state dicts and the HF export are unchanged) whose autograd Function
computes the full input gradient but the weight gradient only for the active rows (grad_W[S] = g[:, S]^T x)
or columns (grad_W[:, S] = g^T x[:, S]), exact zeros elsewhere: that matmul shrinks to |S| / d_ff of its
dense size.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ROWS, COLS = "rows", "cols"
PATH_ATTRIBUTE = "trelm_path"  # on a routed FFN weight: (mode, active indices), read by LazyAdamW


class _RowColSparseLinear(torch.autograd.Function):
    """y = x W^T + b with the weight gradient computed only for the active rows or columns of W."""

    @staticmethod
    def forward(ctx, x, weight, bias, active, mode):
        # the parameter itself is saved (not a copy): under ZeRO-3 DeepSpeed re-gathers it before backward
        ctx.save_for_backward(x, weight, active)
        ctx.mode = mode
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, active = ctx.saved_tensors
        flat_grad = grad_out.reshape(-1, grad_out.shape[-1])
        flat_x = x.reshape(-1, x.shape[-1])
        grad_x = grad_out @ weight if ctx.needs_input_grad[0] else None
        grad_w = (
            _weight_grad(flat_grad, flat_x, weight, active, ctx.mode) if ctx.needs_input_grad[1] else None
        )
        grad_b = _bias_grad(flat_grad, active, ctx.mode) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None


def _weight_grad(flat_grad, flat_x, weight, active, mode) -> torch.Tensor:
    """Dense-shaped weight grad: exact zeros outside the active rows/columns, only |S| of them computed."""
    if active.numel() == weight.shape[0 if mode == ROWS else 1]:  # every neuron (routing warm-up): dense
        return flat_grad.t() @ flat_x
    grad_w = weight.new_zeros(weight.shape)
    if mode == ROWS:  # grad_W[S] = g[:, S]^T x
        return grad_w.index_copy_(0, active, flat_grad.index_select(1, active).t() @ flat_x)
    columns = flat_grad.t() @ flat_x.index_select(1, active)  # grad_W[:, S] = g^T x[:, S]
    return grad_w.index_copy_(1, active, columns)


def _bias_grad(flat_grad, active, mode) -> torch.Tensor:
    """rows: bias j belongs to neuron j (zeros off S); cols: the output bias is shared, full gradient."""
    if mode == ROWS:
        grad_b = flat_grad.new_zeros(flat_grad.shape[-1])
        return grad_b.index_copy_(0, active, flat_grad.index_select(1, active).sum(0))
    return flat_grad.sum(0)


class RoutedLinear(nn.Linear):
    """nn.Linear whose weight gradient covers only `active_indices` (rows for `intermediate.dense`, columns
    for `output.dense`). The custom Function runs inside this module's forward, so ZeRO-3's per-module gather
    hooks see it like any Linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, mode: str = ROWS, device=None):
        super().__init__(in_features, out_features, bias, device=device)
        if mode not in (ROWS, COLS):
            raise ValueError(f"mode must be {ROWS!r} or {COLS!r}, got {mode!r}")
        self.mode = mode
        self.register_buffer("active_indices", torch.empty(0, dtype=torch.long), persistent=False)

    @classmethod
    def wrap(cls, linear: nn.Linear, mode: str) -> RoutedLinear:
        """A RoutedLinear holding `linear`'s own parameter objects (no copy of the data)."""
        routed = cls(linear.in_features, linear.out_features, linear.bias is not None, mode, device="meta")
        routed.weight = linear.weight
        routed.bias = linear.bias
        routed.active_indices = torch.empty(0, dtype=torch.long, device=linear.weight.device)
        return routed

    def set_active(self, indices: torch.Tensor) -> None:
        self.active_indices = indices.to(device=self.active_indices.device, dtype=torch.long)
        setattr(self.weight, PATH_ATTRIBUTE, (self.mode, self.active_indices))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RowColSparseLinear.apply(x, self.weight, self.bias, self.active_indices, self.mode)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode}, active={self.active_indices.numel()}"
