"""Dynamic knowledge routing (trelm/routing.py) on a tiny stand-in of the TRELM model: IG against a
brute-force Riemann sum, the row/column-sparse autograd against dense gradients, routed optimizer steps
(plain torch and DeepSpeed ZeRO 0/2/3 in one process), selection rules and LazyAdamW."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from conftest import free_port
from torch import nn

from trelm.config import RoutingConfig
from trelm.lazyadam import LazyAdamW
from trelm.routing import Router
from trelm.sparse import RoutedLinear

VOCAB, HIDDEN, D_FF, LAYERS, SEQ, ROWS = 40, 32, 64, 2, 7, 3
SPAN = slice(2, 5)  # scaled span of every row; P is read inside it, so the last layer's neurons matter too
NEGATIVES = 5
CLOZE_ROWS, CLOZE_LEN, CLOZE_MASK = 4, 5, 3  # the cloze target's own rows, a shape unlike the batch's
CLOZE_PROMPT = slice(1, CLOZE_MASK + 1)  # their scaled positions: prompt and mask, not the first/last token


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second intra-op thread only adds contention on shared cores (30x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class CkaBias(nn.Module):
    """A parameter with no pretrained value, inside a submodule so that ZeRO-3 gathers it in a forward."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(VOCAB))

    def forward(self, logits):
        return logits + self.bias


class TinyTRELM(nn.Module):
    """Stand-in exposing the methods the router relies on. P = sampled softmax at the masked position over the
    target token and the negatives, with a new (not pretrained) bias on the CKA logits."""

    def __init__(self):
        super().__init__()
        from transformers import BertConfig, BertForMaskedLM

        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=2,
            intermediate_size=D_FF,
            max_position_embeddings=16,
            initializer_range=0.15,  # large enough weights that P depends visibly on the FFN neurons
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1,
        )
        self.bert = BertForMaskedLM(config)
        self.cka_head = CkaBias()

    def _layers(self):
        return self.bert.bert.encoder.layer

    def encoder_layers(self):
        return list(self._layers())

    def ffn_intermediate_modules(self):
        return [layer.intermediate for layer in self._layers()]

    def ffn_output_modules(self):
        return [layer.output for layer in self._layers()]

    def new_parameter_names(self):
        return ["cka_head.bias"]

    def attribution_batch(self, batch, max_targets):
        return batch  # every row holds one target here

    def head_span_mask(self, batch):
        mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
        mask[:, SPAN] = True
        return mask

    def negative_generator(self, seed):
        return torch.Generator().manual_seed(seed)

    def sample_negatives(self, batch, generator):
        return torch.randint(0, VOCAB, (batch["input_ids"].shape[0], NEGATIVES), generator=generator)

    def external_parameters(self):
        return [self.bert.get_output_embeddings().weight]

    def cka_logits(self, batch, negatives, repeat):
        # reads the tied decoder outside its module's forward, as the TRELM matching function does
        hidden = self.bert.bert(input_ids=batch["input_ids"].repeat(repeat, 1)).last_hidden_state
        logits = self.cka_head(hidden @ self.bert.get_output_embeddings().weight.t())
        at_target = logits[torch.arange(logits.shape[0]), batch["target_pos"].repeat(repeat)]
        candidates = torch.cat([batch["target"][:, None], negatives], 1).repeat(repeat, 1)
        return at_target.gather(1, candidates)  # [repeat * B, 1 + K], the correct token first

    def cka_probability(self, batch, lam, negatives, repeat):
        probs = self.cka_logits(batch, negatives, repeat).softmax(-1)[:, 0]
        return probs.view(repeat, -1)

    def cloze_probability(self, batch, repeat):
        """The MLM head's full-softmax P of the gold token at the mask of the cloze rows (not the batch's)."""
        logits = self.bert(input_ids=batch["cloze_ids"].repeat(repeat, 1)).logits[:, CLOZE_MASK]
        gold = batch["cloze_gold"].repeat(repeat)
        return logits.softmax(-1)[torch.arange(len(gold)), gold].view(repeat, -1)

    def cloze_prompt_mask(self, batch):
        mask = torch.zeros_like(batch["cloze_ids"], dtype=torch.bool)
        mask[:, CLOZE_PROMPT] = True
        return mask

    def forward(self, batch, negatives):  # the CKA loss
        logits = self.cka_logits(batch, negatives, 1)
        return nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))


def make_batch(seed=1):
    gen = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(0, VOCAB, (ROWS, SEQ), generator=gen),
        "target_pos": torch.tensor([2, 4, 3]),
        "target": torch.randint(0, VOCAB, (ROWS,), generator=gen),
        "cloze_ids": torch.randint(0, VOCAB, (CLOZE_ROWS, CLOZE_LEN), generator=gen),
        "cloze_gold": torch.randint(0, VOCAB, (CLOZE_ROWS,), generator=gen),
    }


def fixed_negatives(model, batch):
    return model.sample_negatives(batch, torch.Generator().manual_seed(0))


def target_of(model, batch, negatives, target):
    """(P on one copy, scaled positions) of an attribution target, written out independently of the router."""
    if target == "cloze":
        return lambda: model.cloze_probability(batch, 1), model.cloze_prompt_mask(batch)
    return lambda: model.cka_probability(batch, 0.5, negatives, 1), model.head_span_mask(batch)


def brute_force_ig(model, batch, negatives, layer, steps, target="cka"):
    """Eq. 11 by a loop over k: a separate forward/backward with v = k/m * v_bar at the scaled positions."""
    module = model.ffn_intermediate_modules()[layer]
    probability, mask = target_of(model, batch, negatives, target)
    mask = mask[..., None]
    with torch.no_grad():
        v_bar = {}
        handle = module.register_forward_hook(lambda m, i, o: v_bar.setdefault("v", o.detach()))
        probability()
        handle.remove()
    total = torch.zeros(D_FF)
    for k in range(1, steps + 1):
        leaf = (k / steps * v_bar["v"]).requires_grad_()
        handle = module.register_forward_hook(lambda m, i, o, leaf=leaf: torch.where(mask, leaf, o))
        prob = probability()
        handle.remove()
        (grad,) = torch.autograd.grad(prob.sum(), leaf)
        total += (v_bar["v"] * grad * mask).sum((0, 1)) / steps
    return total


def attribute_with(model, cfg, batch):
    """The router's first negatives come from a generator seeded like `fixed_negatives`'."""
    return Router(model, cfg, seed=0).attribute(batch, 0.5)


@pytest.mark.parametrize("target", ["cka", "cloze"])
def test_ig_attribution_equals_brute_force_riemann_sum(target):
    model, batch = TinyTRELM().eval(), make_batch()
    cfg = RoutingConfig(steps=20, attribution_target=target)
    scores = attribute_with(model, cfg, batch)
    negatives = fixed_negatives(model, batch)
    for layer in range(LAYERS):
        expected = brute_force_ig(model, batch, negatives, layer, cfg.steps, target)
        assert expected.abs().max() > 1e-6
        torch.testing.assert_close(scores[layer], expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("target", ["cka", "cloze"])
def test_first_order_equals_activation_times_gradient(target):
    model, batch = TinyTRELM().eval(), make_batch()
    scores = attribute_with(model, RoutingConfig(mode="first_order", attribution_target=target), batch)
    probability, mask = target_of(model, batch, fixed_negatives(model, batch), target)
    for layer, module in enumerate(model.ffn_intermediate_modules()):
        kept = {}
        handle = module.register_forward_hook(lambda m, i, o, kept=kept: kept.setdefault("v", o))
        prob = probability()
        handle.remove()
        (grad,) = torch.autograd.grad(prob.sum(), kept["v"])
        torch.testing.assert_close(scores[layer], (kept["v"] * grad * mask[..., None]).sum((0, 1)).detach())


def test_the_cloze_target_attributes_another_answer():
    """Its own rows and P: other scores than the CKA target's, and the last layer still scores (the masks,
    where P is read, are scaled)."""
    model, batch = TinyTRELM().eval(), make_batch()
    cka, cloze = (attribute_with(model, RoutingConfig(attribution_target=t), batch) for t in ("cka", "cloze"))
    for layer in range(LAYERS):
        assert cloze[layer].abs().max() > 1e-6 and not torch.allclose(cloze[layer], cka[layer])


@pytest.mark.parametrize("mode", ["rows", "cols"])
def test_sparse_autograd_matches_dense_on_active_and_is_zero_elsewhere(mode):
    torch.manual_seed(0)
    dense = nn.Linear(6, 8) if mode == "rows" else nn.Linear(8, 6)
    routed = RoutedLinear.wrap(dense, mode)
    assert routed.weight is dense.weight and routed.bias is dense.bias
    active = torch.tensor([1, 4, 5])
    routed.set_active(active)
    x = torch.randn(2, 3, dense.in_features, requires_grad=True)
    grad_out = torch.randn(2, 3, dense.out_features)
    (dx, dw, db) = torch.autograd.grad(dense(x), (x, dense.weight, dense.bias), grad_out)
    (rx, rw, rb) = torch.autograd.grad(routed(x), (x, routed.weight, routed.bias), grad_out)
    torch.testing.assert_close(rx, dx)
    dim = 0 if mode == "rows" else 1
    off = torch.ones(dw.shape[dim], dtype=torch.bool)
    off[active] = False
    torch.testing.assert_close(rw.index_select(dim, active), dw.index_select(dim, active))
    assert (rw.index_select(dim, off.nonzero().flatten()) == 0).all()
    if mode == "rows":  # bias j belongs to neuron j
        torch.testing.assert_close(rb[active], db[active])
        assert (rb[off] == 0).all()
    else:  # the output bias is shared by all neurons: full gradient
        torch.testing.assert_close(rb, db)


@pytest.mark.parametrize("mode", ["rows", "cols"])
def test_every_neuron_active_gives_the_dense_gradient(mode):
    """The routing warm-up activates every neuron: the weight gradient is then the full one."""
    torch.manual_seed(0)
    dense = nn.Linear(6, 8) if mode == "rows" else nn.Linear(8, 6)
    routed = RoutedLinear.wrap(dense, mode)
    routed.set_active(torch.arange(8))
    x = torch.randn(2, 3, dense.in_features)
    grad_out = torch.randn(2, 3, dense.out_features)
    expected = torch.autograd.grad(dense(x), (dense.weight, dense.bias), grad_out)
    torch.testing.assert_close(
        torch.autograd.grad(routed(x), (routed.weight, routed.bias), grad_out), expected
    )


def test_select_by_top_fraction_and_threshold():
    scores = [torch.tensor([0.5, -1.0, 2.0, 1.0, 0.3, 0.0, 1.9, 0.1, 0.2, 0.45])]
    top = Router(None, RoutingConfig(select="top_fraction", top_fraction=0.25)).select(scores)
    assert top[0].tolist() == [2, 3, 6]  # ceil(0.25 * 10) = 3 highest
    by_threshold = Router(None, RoutingConfig(select="threshold", threshold=0.2)).select(scores)
    assert by_threshold[0].tolist() == [0, 2, 3, 6, 9]  # >= 0.2 * 2.0 = 0.4
    none_positive = Router(None, RoutingConfig(select="threshold")).select([torch.tensor([-1.0, 0.0])])
    assert none_positive[0].numel() == 0


def test_lazy_adamw_equals_torch_adamw_on_dense_gradients():
    torch.manual_seed(0)
    ours = torch.randn(5, 4, requires_grad=True)
    reference = ours.detach().clone().requires_grad_()
    lazy = LazyAdamW([ours], lr=0.01, weight_decay=0.1)
    torch_adamw = torch.optim.AdamW([reference], lr=0.01, weight_decay=0.1)
    for _ in range(5):
        grad = torch.randn(5, 4)
        ours.grad, reference.grad = grad.clone(), grad.clone()
        lazy.step()
        torch_adamw.step()
    torch.testing.assert_close(ours, reference)


def test_lazy_adamw_leaves_zero_gradient_elements_alone():
    param = torch.ones(2, 3, requires_grad=True)
    optimizer = LazyAdamW([param], lr=0.1, weight_decay=0.5)
    param.grad = torch.ones(2, 3)
    optimizer.step()
    before = param.detach().clone()
    param.grad = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    optimizer.step()
    moved = param.detach() != before
    assert moved.tolist() == [[True, False, False], [False, False, True]]
    # per-element bias correction: an element seen once more is at step 2, the others stay at 1
    assert optimizer.state[param]["elem_step"].tolist() == [[2, 1, 1], [1, 1, 2]]


def test_lazy_adamw_reads_the_paths_of_a_routed_weight_and_still_skips_zero_gradients():
    """A routed weight tells LazyAdamW its active rows/columns; inside them an exactly-zero gradient still
    leaves its element alone, and the update equals the scanning one."""
    grad = torch.zeros(4, 3)
    grad[1] = torch.tensor([1.0, 0.0, -2.0])
    grad[3] = torch.tensor([0.5, 0.25, 0.0])
    results = []
    for hinted in (True, False):
        torch.manual_seed(0)  # the same initial weights for both
        linear = nn.Linear(3, 4)
        routed = RoutedLinear.wrap(linear, "rows")
        if hinted:
            routed.set_active(torch.tensor([1, 3]))
        optimizer = LazyAdamW([routed.weight], lr=0.1, weight_decay=0.5)
        before = routed.weight.detach().clone()
        routed.weight.grad = grad.clone()
        optimizer.step()
        results.append(routed.weight.detach().clone())
        assert ((results[-1] != before) == (grad != 0)).all()
    torch.testing.assert_close(results[0], results[1])


def installed(cfg=None, seed_batch=1):
    model = TinyTRELM()
    router = Router(model, cfg or RoutingConfig(top_fraction=0.25))
    router.install()
    batch = make_batch(seed_batch)
    router.refresh(batch, 0.5, step=0)
    return model, router, batch


def snapshot(model):
    return {name: p.detach().float().clone() for name, p in model.named_parameters()}


def assert_only_paths_changed(model, router, before):
    """Changed: exactly the selected rows/biases of intermediate.dense, columns of output.dense, new ones."""
    after = snapshot(model)
    path_names = set()
    for layer, indices in enumerate(router.paths):
        # the dim that is NOT the neuron's: reduce over it to get "neuron j changed"
        other_dim = {
            "intermediate.dense.weight": 1,
            "intermediate.dense.bias": None,
            "output.dense.weight": 0,
        }
        for suffix, dim in other_dim.items():
            name = f"bert.bert.encoder.layer.{layer}.{suffix}"
            path_names.add(name)
            differs = after[name] != before[name]
            changed = differs if dim is None else differs.any(dim=dim)
            expected = torch.zeros_like(changed)
            expected[indices] = True
            assert changed.tolist() == expected.tolist(), name
    assert not torch.equal(after["cka_head.bias"], before["cka_head.bias"])  # new parameters always train
    for name in after.keys() - path_names - {"cka_head.bias"}:
        assert torch.equal(after[name], before[name]), f"frozen {name} changed"


def routed_loss(model, batch):
    return model(batch, fixed_negatives(model, batch))


def test_routed_step_changes_only_selected_rows_and_columns():
    model, router, batch = installed()
    assert isinstance(model.ffn_intermediate_modules()[0].dense, RoutedLinear)
    assert [p.shape[0] for p in router.paths] == [16, 16]  # ceil(0.25 * 64)
    trainable = router.trainable_parameters()
    optimizer = LazyAdamW(trainable, lr=0.01)
    before = snapshot(model)
    routed_loss(model, batch).backward()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert "bert.bert.encoder.layer.0.attention.self.query.weight" in frozen
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)  # no weight grads computed
    optimizer.step()
    assert_only_paths_changed(model, router, before)
    assert set(map(id, optimizer.state)) == set(map(id, trainable))  # optimizer state only for what trains


def test_train_groups_share_state_dict_and_refresh_every():
    model, router, batch = installed(
        RoutingConfig(top_fraction=0.25, train_groups=["layer_norm"], refresh_every=3)
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "bert.bert.embeddings.LayerNorm.weight" in trainable
    assert "bert.bert.encoder.layer.1.output.dense.bias" not in trainable
    norms = (2 * LAYERS + 2) * 2 * HIDDEN  # 2 per layer, embeddings, MLM head; weight and bias each
    per_neuron = HIDDEN + 1 + HIDDEN  # row, bias, column
    expected = (VOCAB + norms + LAYERS * 16 * per_neuron) / sum(p.numel() for p in model.parameters())
    assert router.trainable_share() == pytest.approx(expected)
    kept = router.refresh(make_batch(seed=7), 0.5, step=1)
    assert kept["refreshed"] == 0.0 and kept["selected_layer0"] == 16.0
    clone = Router(copy.deepcopy(model), router.cfg)
    clone.load_state_dict(router.state_dict())
    assert [p.tolist() for p in clone.paths] == [p.tolist() for p in router.paths]
    assert clone.last_refresh_step == 0
    assert router.refresh(make_batch(seed=7), 0.5, step=3)["refreshed"] == 1.0
    # the next micro-batch of the same optimizer step (gradient accumulation) keeps its paths
    assert router.refresh(make_batch(seed=8), 0.5, step=3)["refreshed"] == 0.0


def test_routing_warm_up_updates_everything_then_only_the_paths():
    """full_steps=2: steps 0-1 train every parameter with no attribution; at step 2 the groups freeze, the
    paths are attributed, and from then on a step changes only them (momentum of the warm-up included)."""
    model = TinyTRELM()
    router = Router(model, RoutingConfig(top_fraction=0.25, full_steps=2))
    router.install()
    trainable = router.trainable_parameters()
    assert len(trainable) == len(list(model.parameters()))
    optimizer = LazyAdamW(trainable, lr=0.01)
    query = "bert.bert.encoder.layer.0.attention.self.query.weight"
    for step in range(3):
        stats = router.refresh(make_batch(seed=step), 0.5, step)
        assert stats["refreshed"] == float(step == 2) and (router.paths is None) == (step < 2)
        before = snapshot(model)
        routed_loss(model, make_batch(seed=step)).backward()
        optimizer.step()
        optimizer.zero_grad()
        if step < 2:
            after = snapshot(model)
            assert not torch.equal(after[query], before[query])
            ffn = "bert.bert.encoder.layer.0.intermediate.dense.weight"
            assert (after[ffn] != before[ffn]).any(1).all()  # every neuron's row moved
    assert stats["trainable_share"] < 0.5 and not dict(model.named_parameters())[query].requires_grad
    assert_only_paths_changed(model, router, before)


@pytest.fixture(scope="module")
def single_rank():
    """A one-process gloo group for DeepSpeed; the environment and the group are undone afterwards, so later
    tests (and the processes they launch) do not inherit them."""
    import deepspeed
    import torch.distributed as dist

    env = dict(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
    )
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    deepspeed.init_distributed(dist_backend="gloo")
    yield deepspeed
    dist.destroy_process_group()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key)
        else:
            os.environ[key] = value


def gathered_snapshot(deepspeed, model):
    """Full parameter values, also under ZeRO-3 (a parameter's local tensor is empty between forwards)."""
    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        return snapshot(model)


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_routed_step_under_deepspeed_zero(single_rank, stage):
    """One routed bf16 step through the DeepSpeed engine with LazyAdamW as the client optimizer; then a
    refresh on the engine's model (under ZeRO-3 the attribution's hooks run inside the gather hooks)."""
    model, router, batch = installed()
    optimizer = LazyAdamW(router.trainable_parameters(), lr=0.01)
    config = {
        "train_micro_batch_size_per_gpu": ROWS,
        "bf16": {"enabled": True},
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
    }
    engine, *_ = single_rank.initialize(model=model, optimizer=optimizer, config=config)
    if stage == 3:  # the model's forward reads the decoder outside the decoder's forward
        single_rank.zero.register_external_parameter(model, *model.external_parameters())
    before = gathered_snapshot(single_rank, model)
    engine.backward(engine(batch, fixed_negatives(model, batch)))
    engine.step()
    with single_rank.zero.GatheredParameters(list(model.parameters())):
        assert_only_paths_changed(model, router, before)
    stats = router.refresh(make_batch(seed=5), 0.5, step=1)
    assert stats["refreshed"] == 1.0 and stats["selected_layer1"] == 16.0


def test_routing_warm_up_is_refused_under_zero3():
    from pydantic import ValidationError

    from trelm.config import PretrainConfig

    warm_up = {"routing": {"full_steps": 5}}
    assert PretrainConfig.model_validate({**warm_up, "train": {"zero_stage": 2}}).routing.full_steps == 5
    with pytest.raises(ValidationError, match="full_steps"):
        PretrainConfig.model_validate({**warm_up, "train": {"zero_stage": 3}})
    no_routing = {"routing": {"full_steps": 5, "enabled": False}, "train": {"zero_stage": 3}}
    assert PretrainConfig.model_validate(no_routing).train.zero_stage == 3


def test_the_cloze_target_needs_the_cloze_view():
    from pydantic import ValidationError

    from trelm.config import PretrainConfig

    cloze = {"routing": {"attribution_target": "cloze"}}
    assert PretrainConfig.model_validate({**cloze, "variant": "trelm_plain_cka"}).effective().routing.enabled
    for other in (
        {"variant": "trelm"},
        {"variant": "trelm_plain_cka", "model": {"cka_plain_view": "span"}},
        {"variant": "trelm_plain_cka", "compare": ["trelm"]},  # the compared run could not attribute either
    ):
        with pytest.raises(ValidationError, match='needs model.cka_plain_view "cloze"'):
            PretrainConfig.model_validate({**cloze, **other})
    # nothing is attributed without routing
    assert PretrainConfig.model_validate({**cloze, "variant": "no_routing"}).variant == "no_routing"
