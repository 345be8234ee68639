"""Dynamic knowledge routing (DKR, paper section 3.3, Eq. 9-12): find the FFN neurons that carry the CKA
answer and update only the parameters on those knowledge paths.

Attribution (Eq. 9-11). P is the probability of the correct CKA token (the model's sampled softmax,
`cka_probability`). For FFN layer l the neuron activations v (output of the layer's `intermediate` module)
at the scaled positions (`head_span_mask`) are replaced by alpha * v_bar, alpha = k/m, k = 1..m; the m
scaled copies run as ONE batch (the model repeats the batch copy-major, a forward hook on the layer's
`intermediate` scales copy k), and Attr_i = v_bar_i / m * sum_k dP/dv_i(alpha_k), summed over the scaled
positions and over the first `max_targets` targets. `first_order` mode is the cheap alternative: v * dP/dv
at alpha = 1, one pass for all layers. Attribution runs in eval mode (no dropout: the m copies must differ
only in alpha) with negatives drawn once per refresh, so every copy sees the same sampled softmax. Under data
parallelism the per-layer scores are summed over ranks before selection: every rank routes the same paths.
The scaled positions must include the positions where P is read: an FFN neuron at position p reaches other
positions only through later attention layers, so the last layer's scores are exactly 0 otherwise.

Paths (Eq. 12). Per layer the neuron set S is the top `top_fraction` of the scores, or the neurons with
score >= threshold x the layer's max (none when the max is <= 0). Neuron j owns row j and bias j of
`intermediate.dense` and column j of `output.dense`; those train. Everything else is frozen unless its group
is in `train_groups` (embeddings, attention, layer_norm, ffn_output_bias, head); parameters the model
reports as new (`new_parameter_names`, no pretrained value) always train.

Compute saving. Frozen groups get requires_grad=False, so autograd computes no weight gradient for them
(nor input gradients below the lowest trainable parameter). The FFN linears become `RoutedLinear` (the same
parameter objects under the same names: state dicts and the HF export are unchanged) whose autograd Function
computes the full input gradient but the weight gradient only for the active rows (grad_W[S] = g[:, S]^T x)
or columns (grad_W[:, S] = g^T x[:, S]), exact zeros elsewhere: that matmul shrinks to |S| / d_ff of its
dense size. The optimizer gets only the trainable parameters. `LazyAdamW` moves an element only where its
gradient is non-zero, so rows off the current paths do not drift on momentum of earlier steps (elementwise
because DeepSpeed ZeRO 1-2 hands the optimizer flat fp32 partitions, where rows are not visible but zeros
are); it gathers those elements and updates only them, so its cost on a routed FFN weight is two passes
(compare, nonzero) plus |S| / d_ff of AdamW's. Gradients stay dense-shaped, so data-parallel gradient
communication is not reduced, only compute.

Routing warm-up (`full_steps`, not in the paper): the first N steps update every parameter (every neuron
active, no attribution), then the groups freeze and routing starts. The optimizer is built once, so it
then holds every parameter; frozen ones get no gradient again and LazyAdamW skips them.

Cost (CPU, 1 thread, MiniLM-sized BERT: 6 layers, hidden 384, d_ff 1536, random weights). Backward of a
routed step vs a full update on the same 8 x 128 batch, top_fraction 0.1: encoder-only loss 199 vs 350 ms
(-43%), MLM loss 464 vs 836 ms (-45%); top_fraction 0.25: -39%. The faithful attribution is one forward and
backward of m x B rows per FFN layer: on 2 x 128 tokens it took 8.8 s (m = 20) against 0.12 s first-order and
about 1.5 s for a full training step on 8 x 128, so `refresh_every`, a small attribution batch or
`first_order` decide whether routing saves time overall; the paper does not quantify its overhead.

Deviations from the paper / choices it leaves open:
- All targets of the batch and all scaled positions are scaled together in one pass: the score is the IG of
  sum_targets P under the joint scaling, summed over the scaled positions (Dai et al. attribute one prompt
  at a time). This is what makes "paths for each batch in parallel" (the paper's remark) one pass a layer.
- A path is an intermediate neuron; Eq. 12's input and output neurons are all those connected to it (full
  row j and column j): the paper does not say how input/output neurons would be chosen.
- LazyAdamW keeps a step count per element (an extra fp32 state, 3 states instead of AdamW's 2), so an
  element's bias correction counts only the steps it was updated in; with no zero gradients it is AdamW.
  Beside it, a scalar `step` as torch's AdamW keeps, so that DeepSpeed's universal checkpoint (a resume on
  another number of ranks) can convert its state; the per-element counts are rebuilt from it there.
- Paths are refreshed every `refresh_every` steps (default 1: every batch, as in the paper). Attribution
  runs on the sequences holding the batch's first `max_targets` CKA targets (`attribution_batch`), with
  every target in them: its cost grows with the sequences it copies m times per layer, not the targets.

DeepSpeed. `install()` runs before `deepspeed.initialize` and outside `zero.Init` (requires_grad decides what
the optimizer holds); the client optimizer is `LazyAdamW(router.trainable_parameters())` with
`zero_allow_untested_optimizer: true`. ZeRO 0 and 2 (bf16): tested in one process, only the selected
rows/columns and the always-trainable parameters change in a step. ZeRO-3: also works, tested in one process
(world size 1, bf16) and on 2 CPU ranks (fp32, resumed on 1 through the universal format): DeepSpeed's
per-module hooks gather the RoutedLinear's weight before its forward (the custom Function runs inside that
forward) and again before its backward (the Function saves the parameter object, not a copy, as DeepSpeed's
own ZeRO-3 linear does); the dense-shaped sparse gradient is
reduce-scattered like any other, and after a step only the selected rows/columns changed. The attribution
calls `cka_probability` through the model's `__call__` (forward temporarily bound to it), so ZeRO-3's hooks on
the model gather its direct and registered external parameters (a tied decoder read outside the decoder's
forward must be registered with `deepspeed.zero.register_external_parameter`, as for training); a plain
method call would find them empty. ZeRO-3 saves no communication: frozen weights are still gathered (their
input gradients are needed) and the zeros of the sparse gradients are reduce-scattered. Multi-rank ZeRO-3 is
untested here (one process only).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from trelm.routingconfig import RoutingConfig

ROWS, COLS = "rows", "cols"
PATH_ATTRIBUTE = "trelm_path"  # on a routed FFN weight: (mode, active indices), read by LazyAdamW
ALWAYS_TRAIN = ("ffn_path", "new")


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


class LazyAdamW(torch.optim.Optimizer):
    """AdamW that updates moments, weight decay and parameter only where grad != 0, with per-element bias
    correction (each element counts the steps it was updated in). Equals torch AdamW when no gradient is 0."""

    def __init__(
        self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01
    ):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _state(self, param: torch.Tensor) -> dict:
        """`step` (scalar, as torch's AdamW keeps it) counts the tensor's steps, `elem_step` each element's.
        A checkpoint converted to DeepSpeed's universal format (a resume on another number of ranks) carries
        only step and the moments: `elem_step` is then rebuilt as `step` where the element has been updated
        (exp_avg_sq > 0), which is exact for elements updated at every step since their first, and makes the
        bias correction of the others slightly too weak (about 1 - beta2 ** step)."""
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            state["elem_step"] = torch.zeros_like(param, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        elif "elem_step" not in state:
            step = state["step"].to(device=param.device, dtype=torch.float32)
            state["elem_step"] = torch.where(state["exp_avg_sq"] > 0, step, torch.zeros_like(step))
        return state

    def _update(self, param: torch.Tensor, group: dict) -> None:
        """Only the elements with a non-zero gradient are gathered, updated and written back: on a routed
        FFN weight that is |S| / d_ff of the tensor (10% at top_fraction 0.1) instead of ~20 full-size
        elementwise passes over it, and where the weight carries its paths (`PATH_ATTRIBUTE`) only their
        elements are even looked at. A dense gradient skips the gather (index None)."""
        state = self._state(param)
        state["step"].add_(1)
        flat_grad = param.grad.reshape(-1)
        index = _path_elements(param)
        if index is None:
            touched = flat_grad != 0
            index = None if bool(touched.all()) else touched.nonzero().squeeze(1)
        else:  # only the paths' elements can have a gradient: no scan of the rest
            index = index[flat_grad.index_select(0, index) != 0]
        views = [t.view(-1) for t in (param, state["exp_avg"], state["exp_avg_sq"], state["elem_step"])]
        values = [v if index is None else v.index_select(0, index) for v in views]
        grad = flat_grad if index is None else flat_grad.index_select(0, index)
        for view, new in zip(views, _adamw_elements(*values, grad, group), strict=True):
            if index is None:
                view.copy_(new)
            else:
                view.index_copy_(0, index, new)


def _path_elements(param: torch.Tensor) -> torch.Tensor | None:
    """Flat indices of a routed FFN weight's active rows or columns, the only elements RoutedLinear's
    backward gives a gradient, or None (scan the gradient): no hint, every neuron active, or a gradient
    that is not the parameter's shape (DeepSpeed ZeRO 1-3 and bf16 hand the optimizer flat partitions)."""
    hint = getattr(param, PATH_ATTRIBUTE, None)
    if hint is None or param.grad.shape != param.shape:
        return None
    mode, active = hint
    rows, cols = param.shape
    if active.numel() == (rows if mode == ROWS else cols):
        return None
    if mode == ROWS:
        return (active[:, None] * cols + torch.arange(cols, device=active.device)).reshape(-1)
    return (torch.arange(rows, device=active.device)[:, None] * cols + active).reshape(-1)


def _adamw_elements(param, exp_avg, exp_avg_sq, elem_step, grad, group: dict) -> tuple:
    """AdamW on the gathered elements, each with its own step count: new (param, m, v, steps)."""
    (beta1, beta2), lr = group["betas"], group["lr"]
    steps = elem_step + 1
    exp_avg = exp_avg.lerp(grad, 1 - beta1)
    exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
    bias1, bias2_sqrt = 1 - beta1**steps, (1 - beta2**steps).sqrt()
    denom = (exp_avg_sq.sqrt() / bias2_sqrt).add_(group["eps"])
    update = lr * exp_avg / bias1 / denom + lr * group["weight_decay"] * param
    return param - update, exp_avg, exp_avg_sq, steps


def _module_group(name: str, module: nn.Module) -> str:
    """Training group of a module's own parameters, from its type and its place in the HF model."""
    if isinstance(module, nn.LayerNorm) or "layernorm" in type(module).__name__.lower():
        return "layer_norm"
    if ".attention." in f".{name}.":
        return "attention"
    return "embeddings" if "embeddings" in name else "head"


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def _parameters_frozen(model: nn.Module) -> Iterator[None]:
    """Attribution differentiates with respect to activations only: with every parameter's requires_grad
    off, backward forms no weight gradient at all (the sparse Function's included), only input gradients."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for param in trainable:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in trainable:
            param.requires_grad_(True)


@contextmanager
def _replay_below(layers: list[nn.Module], output, copies: int) -> Iterator[None]:
    """`layers` (those below the scaled one) return `output` repeated for the copies instead of computing:
    the last of them hands it to the scaled layer, the others' results are overwritten anyway. A layer's
    output is a tensor (transformers 5) or a tuple whose first item is the hidden states (4.x)."""
    if not layers:
        yield
        return
    if isinstance(output, tuple):
        replay = (_repeat_rows(output[0], copies), *output[1:])
    else:
        replay = _repeat_rows(output, copies)
    for layer in layers:
        layer.forward = lambda *_args, **_kwargs: replay
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def _repeat_rows(hidden: torch.Tensor, copies: int) -> torch.Tensor:
    return hidden.repeat(copies, *([1] * (hidden.dim() - 1)))  # copy-major, as the model repeats the batch


@contextmanager
def _forward_as(model: nn.Module, method) -> Iterator[None]:
    model.forward = method  # an instance attribute shadows the class's forward for __call__
    try:
        yield
    finally:
        del model.forward


class Router:
    """Dynamic knowledge routing over a TRELM model (see the module doc for the contract it relies on)."""

    def __init__(self, model: nn.Module, cfg: RoutingConfig, seed: int = 0):
        self.model, self.cfg = model, cfg
        self.paths: list[torch.Tensor] | None = None
        self.frozen = False  # set by install, or at step full_steps under a routing warm-up
        self._share: float | None = None  # trainable_share of the current paths (the log's, every step)
        self.last_refresh_step = -1
        self._seed = seed
        self._generator: torch.Generator | None = None

    # -- setup -----------------------------------------------------------------------------------------------
    def _ffn_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return list(zip(self.model.ffn_intermediate_modules(), self.model.ffn_output_modules(), strict=True))

    def install(self) -> None:
        """Swap the FFN linears for RoutedLinear, freeze what does not train (before deepspeed.initialize).
        With a routing warm-up (`full_steps`) everything trains and every neuron is active until
        `refresh` reaches step full_steps; the optimizer built now then holds every parameter."""
        if not self.cfg.enabled:
            return
        for intermediate, output in self._ffn_pairs():
            if not isinstance(intermediate.dense, RoutedLinear):
                intermediate.dense = RoutedLinear.wrap(intermediate.dense, ROWS)
                output.dense = RoutedLinear.wrap(output.dense, COLS)
        if self.cfg.full_steps > 0:
            self._activate_every_neuron()
        else:
            self._freeze()

    def _freeze(self) -> None:
        """requires_grad only for the paths' tensors, new parameters and `train_groups`."""
        groups = self.parameter_groups()
        training = set(ALWAYS_TRAIN) | set(self.cfg.train_groups)
        for param in self.model.parameters():
            param.requires_grad_(groups[id(param)] in training)
        self.frozen = True

    def _activate_every_neuron(self) -> None:
        for intermediate, output in self._ffn_pairs():
            every = torch.arange(intermediate.dense.out_features)
            intermediate.dense.set_active(every)
            output.dense.set_active(every)

    def parameter_groups(self) -> dict[int, str]:
        """id(parameter) -> group: ffn_path, ffn_output_bias, new, or a `train_groups` name."""
        groups: dict[int, str] = {}
        for name, module in self.model.named_modules():
            for param in module.parameters(recurse=False):
                groups.setdefault(id(param), _module_group(name, module))  # tied weights: first owner wins
        for intermediate, output in self._ffn_pairs():
            for param in (intermediate.dense.weight, intermediate.dense.bias, output.dense.weight):
                groups[id(param)] = "ffn_path"
            if output.dense.bias is not None:
                groups[id(output.dense.bias)] = "ffn_output_bias"
        new_names = set(self.model.new_parameter_names())
        for name, param in self.model.named_parameters():
            if name in new_names:
                groups[id(param)] = "new"
        return groups

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer gets (after `install`): optimizer state exists only for these (every
        parameter under a routing warm-up: frozen ones then get no gradient, so LazyAdamW skips them)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    # -- attribution -----------------------------------------------------------------------------------------
    def _sampling_generator(self) -> torch.Generator:
        if self._generator is None:  # made by the model: it lives where the model draws negatives
            self._generator = self.model.negative_generator(self._seed)
        return self._generator

    def attribute(self, batch: Any, lam: float) -> list[torch.Tensor]:
        """Per-layer neuron scores [d_ff] (Eq. 11, or v * dP/dv in first_order mode), summed over ranks."""
        batch = self.model.attribution_batch(batch, self.cfg.max_targets)
        negatives = self.model.sample_negatives(batch, self._sampling_generator())
        mask = self.model.head_span_mask(batch)
        with _eval_mode(self.model), _parameters_frozen(self.model):
            if self.cfg.mode == "first_order":
                scores = self._first_order(batch, lam, negatives, mask)
            else:
                below = self._layer_outputs(batch, lam, negatives)
                scores = [
                    self._integrated_gradients(layer, batch, lam, negatives, mask, below)
                    for layer in range(len(self._ffn_pairs()))
                ]
        return _sum_over_ranks(scores)

    def _probability(self, batch, lam, negatives, repeat: int) -> torch.Tensor:
        """`cka_probability` called through the model's __call__, so that the hooks on the model itself run
        around it: under ZeRO-3 they gather the model's own and its registered external parameters (e.g. a
        tied decoder read outside the decoder's forward), which a plain method call would find empty."""
        with _forward_as(self.model, self.model.cka_probability):
            return self.model(batch, lam, negatives, repeat)

    def _layer_outputs(self, batch, lam, negatives) -> list:
        """Every encoder layer's output on one copy of the batch, recorded in one no-grad pass."""
        outputs: list = []
        handles = [
            layer.register_forward_hook(lambda _module, _inputs, output: outputs.append(output))
            for layer in self.model.encoder_layers()
        ]
        try:
            with torch.no_grad():
                self._probability(batch, lam, negatives, 1)
        finally:
            for handle in handles:
                handle.remove()
        return outputs

    def _integrated_gradients(self, layer: int, batch, lam, negatives, mask, below: list) -> torch.Tensor:
        """Eq. 11 for one layer: the m scaled copies (alpha = k/m) in one batched pass. The copies are
        identical below the scaled layer, so those layers replay their recorded output instead of running m
        times (about half the work of a full pass per layer, averaged over the layers)."""
        steps, captured = self.cfg.steps, {}

        def scale(module, inputs, output):
            copies = output.view(steps, -1, *output.shape[1:])  # copy-major: [m, B, T, d_ff]
            v_bar = copies[0].detach()  # every copy is identical below the scaled layer (eval mode)
            alphas = torch.arange(1, steps + 1, device=output.device) / steps  # fp32 k/m, then cast
            scaled = (alphas.view(-1, 1, 1, 1) * v_bar).to(output.dtype).requires_grad_()
            captured.update(v_bar=v_bar, scaled=scaled)
            return torch.where(mask[None, :, :, None], scaled, copies).view_as(output)

        handle = self.model.ffn_intermediate_modules()[layer].register_forward_hook(scale)
        try:
            replayed = below[layer - 1] if layer else None
            with _replay_below(self.model.encoder_layers()[:layer], replayed, steps):
                probability = self._probability(batch, lam, negatives, steps)
        finally:
            handle.remove()
        (grads,) = torch.autograd.grad(probability.sum(), captured["scaled"])
        # grads are exactly 0 off the mask (torch.where routes them to the unscaled copies)
        return (captured["v_bar"] * grads.sum(0) / steps).sum((0, 1)).float()

    def _first_order(self, batch, lam, negatives, mask) -> list[torch.Tensor]:
        """v * dP/dv at alpha = 1 for every layer, one forward and one backward."""
        captured: dict[int, torch.Tensor] = {}

        def capture(layer):
            def hook(module, inputs, output):
                # the lowest layer's v has no graph when nothing below trains: make it a leaf to take dP/dv
                captured[layer] = output if output.requires_grad else output.detach().requires_grad_()
                return captured[layer]

            return hook

        modules = self.model.ffn_intermediate_modules()
        handles = [module.register_forward_hook(capture(i)) for i, module in enumerate(modules)]
        try:
            probability = self._probability(batch, lam, negatives, 1)
        finally:
            for handle in handles:
                handle.remove()
        activations = [captured[i] for i in range(len(modules))]
        grads = torch.autograd.grad(probability.sum(), activations)
        return [
            (v.detach() * g).masked_fill(~mask[..., None], 0).sum((0, 1)).float()
            for v, g in zip(activations, grads, strict=True)
        ]

    # -- selection and routing -------------------------------------------------------------------------------
    def select(self, scores: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-layer sorted neuron indices on the paths (top fraction, or >= threshold x layer max)."""
        return [self._select_layer(layer_scores) for layer_scores in scores]

    def _select_layer(self, scores: torch.Tensor) -> torch.Tensor:
        if self.cfg.select == "top_fraction":
            count = max(1, math.ceil(self.cfg.top_fraction * scores.numel()))
            return scores.topk(count).indices.sort().values
        top = scores.max()
        if top <= 0:  # no neuron raises P: no path in this layer
            return torch.empty(0, dtype=torch.long, device=scores.device)
        return torch.nonzero(scores >= self.cfg.threshold * top).flatten()

    def set_paths(self, paths: list[torch.Tensor]) -> None:
        self.paths = [p.to(torch.long) for p in paths]
        for (intermediate, output), indices in zip(self._ffn_pairs(), self.paths, strict=True):
            intermediate.dense.set_active(indices)
            output.dense.set_active(indices)

    def refresh(self, batch: Any, lam: float, step: int) -> dict[str, float]:
        """Recompute the paths when step % refresh_every == 0 (or none exist yet), on the step's first
        micro-batch; stats for the log. Under a routing warm-up nothing happens before step full_steps;
        there the groups freeze and the first paths are attributed."""
        if not self.cfg.enabled:
            return {}
        if step < self.cfg.full_steps:
            return {"attribution_seconds": 0.0, "refreshed": 0.0, "trainable_share": 1.0}
        if not self.frozen:
            self._freeze()
        # once per optimizer step: under gradient accumulation every micro-batch of a step shares the paths
        due = step % self.cfg.refresh_every == 0 and step != self.last_refresh_step
        refreshed = self.paths is None or due
        seconds = 0.0
        if refreshed:
            start = time.perf_counter()
            self.set_paths(self.select(self.attribute(batch, lam)))
            seconds = time.perf_counter() - start
            self.last_refresh_step = step
        return self._stats(refreshed, seconds)

    def _stats(self, refreshed: bool, seconds: float) -> dict[str, float]:
        if refreshed or self._share is None:  # a walk over every module: only when the paths change
            self._share = self.trainable_share()
        stats = {
            "attribution_seconds": seconds,
            "refreshed": float(refreshed),
            "trainable_share": self._share,
        }
        for layer, ((intermediate, _), indices) in enumerate(zip(self._ffn_pairs(), self.paths, strict=True)):
            stats[f"selected_layer{layer}"] = float(indices.numel())
            stats[f"share_layer{layer}"] = indices.numel() / intermediate.dense.out_features
        return stats

    def trainable_share(self) -> float:
        """Parameters updated per step / all parameters: path rows, biases and columns plus whole trainable
        tensors (new parameters and `train_groups`)."""
        if not self.cfg.enabled:
            return 1.0
        params, groups = list(self.model.parameters()), self.parameter_groups()
        whole = sum(_numel(p) for p in params if p.requires_grad and groups[id(p)] != "ffn_path")
        on_paths = 0
        for (intermediate, output), indices in zip(self._ffn_pairs(), self.paths or [], strict=False):
            per_neuron = intermediate.dense.in_features + 1 + output.dense.out_features  # row, bias, column
            on_paths += indices.numel() * per_neuron
        return (whole + on_paths) / sum(_numel(p) for p in params)

    # -- checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        paths = None if self.paths is None else [p.cpu().tolist() for p in self.paths]
        generator = self._sampling_generator().get_state()  # a resumed run draws the same negatives
        return {"paths": paths, "last_refresh_step": self.last_refresh_step, "generator": generator}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_refresh_step = state["last_refresh_step"]
        self._sampling_generator().set_state(state["generator"])
        if state["paths"] is not None:
            self.set_paths([torch.tensor(p, dtype=torch.long) for p in state["paths"]])


def _numel(param: nn.Parameter) -> int:
    """Full size, also for a ZeRO-3 partitioned parameter (whose local tensor is empty)."""
    return int(getattr(param, "ds_numel", param.numel()))


def _sum_over_ranks(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sum per-layer scores over data-parallel ranks so that every rank selects the same paths."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return scores
    if torch.distributed.get_world_size() == 1:
        return scores
    stacked = torch.stack(scores)
    torch.distributed.all_reduce(stacked)
    return list(stacked.unbind(0))
