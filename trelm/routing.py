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

Attribution target (`attribution_target`, ours, not the paper's). "cka" (default) is the paper's P above.
"cloze" (needs `model.cka_plain_view="cloze"`) takes P from the MLM head instead: the full-softmax
probability of each gold tail token at its mask in the cloze view's rows ([CLS] head relation [MASK]..
[SEP], one per CKA target of the attribution batch: `cloze_probability`), the rows that view's loss trains
on, and scales those rows' head, relation and mask positions (`cloze_prompt_mask`). Why: routed, the
cloze loss can move only the paths, and paths attributed on the injected CKA answer (read from h_e) need
not be the neurons that carry the answer from plain tokens (issue 12: the routed extension learned
nothing). Same IG / first-order machinery: the m copies are the cloze rows repeated copy-major. Measured
there (quick mode, 1-2 seeds): it does not make routed training learn (seen MRR 0.32-0.34, the warm
start's 0.335); training the word embeddings beside the paths does (0.38-0.43 against unrouted 0.44-0.47
in the same runs, never reaching it), the CKA target alike: the frozen groups, not the target, stop it.

Paths (Eq. 12). Per layer the neuron set S is the top `top_fraction` of the scores, or the neurons with
score >= threshold x the layer's max (none when the max is <= 0). Neuron j owns row j and bias j of
`intermediate.dense` and column j of `output.dense`; those train. Everything else is frozen unless its group
is in `train_groups` (embeddings, attention, layer_norm, ffn_output_bias, head); parameters the model
reports as new (`new_parameter_names`, no pretrained value) always train.

Compute saving: the FFN linears become `trelm.sparse.RoutedLinear` (weight gradients of the active rows or
columns only) and the optimizer is `trelm.lazyadam.LazyAdamW` (moves only elements with a gradient).

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

from trelm.config import RoutingConfig
from trelm.sparse import COLS, ROWS, RoutedLinear

ALWAYS_TRAIN = ("ffn_path", "new")


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
        negatives, mask = self._target_inputs(batch)
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

    def _target_inputs(self, batch: Any) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(negatives, scaled positions) of the attributed answer. CKA's P is read from the head span's
        pooled encoding, so the head span is scaled; the cloze view's P is read at the masks of its own rows
        (not the batch's sequences), so those rows' prompt and masks are. The cloze P is a full softmax:
        no negatives."""
        if self.cfg.attribution_target == "cloze":
            return None, self.model.cloze_prompt_mask(batch)
        negatives = self.model.sample_negatives(batch, self._sampling_generator())
        return negatives, self.model.head_span_mask(batch)

    def _probability(self, batch, lam, negatives, repeat: int) -> torch.Tensor:
        """P on `repeat` copies (`cka_probability` or `cloze_probability`), called through the model's
        __call__, so that the hooks on the model itself run around it: under ZeRO-3 they gather the model's
        own and its registered external parameters (e.g. a tied decoder read outside the decoder's forward),
        which a plain method call would find empty."""
        if self.cfg.attribution_target == "cloze":
            method, args = self.model.cloze_probability, (batch, repeat)
        else:
            method, args = self.model.cka_probability, (batch, lam, negatives, repeat)
        with _forward_as(self.model, method):
            return self.model(*args)

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
            copies = output.view(steps, -1, *output.shape[1:])  # copy-major: [m, B, T, d_ff] (or C x L)
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
