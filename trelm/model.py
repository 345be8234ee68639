"""The TRELM model (paper sections 3.1-3.2): a BERT- or RoBERTa-style masked LM with knowledge injection at
important entities (Eq. 7), the knowledge-augmented memory bank (Eq. 4-6, `trelm.memory`) and contrastive
knowledge assessing (Eq. 2-3, `trelm.losses`).

- Backbone (`load_backbone`): any Hugging Face *ForMaskedLM. "minilm", the packaged encoder, has no MLM head:
  the head is fresh and its decoder tied to the word embeddings (`tie_word_embeddings` forced on).
- Eq. 7: at the tokens of an important entity e (with a bank row),
  I_p = (1 - lambda) h_e + lambda/2 (M_local(e) + M_global(e)), with h_e = W_k v_e + b_k a trainable
  projection of the entity's (frozen) KG embedding v_e; elsewhere I_p is the word embedding E_p. I is passed
  as `inputs_embeds`, so the backbone still adds its position / token-type embeddings and LayerNorm. Every
  token of the span gets the same I_p. Ablations: `inject_knowledge=False` puts E_p in place of h_e,
  `memory_bank=False` sets lambda = 0. Eq. 8: `ModelConfig.lambda_at(epoch)`.
- Extension (ours, off by default): `cka_plain_view` also learns CKA's targets from plain tokens (issue
  12's diagnostic: with the paper's CKA the decoder reads the fact from h_e, not from plain tokens).
  "span": the CKA decoder on the plain-token encoding of the same batch; "cloze": the MLM head at masks
  after the head entity's tokens and the relation label's tokens (the path a cloze probe reads). With
  `routing.attribution_target="cloze"` the router attributes that view's answer (`cloze_probability` at
  the positions `cloze_prompt_mask` gives) instead of the CKA answer.
- CKA decoder (the paper leaves it open; DKPLM, which it cites, decodes tail tokens from the head entity):
  a non-autoregressive *query decoder*. The query of the i-th tail token is
  h_d^i = LayerNorm(GELU(W_d (pool(head span) + R[r] + P[i]) + b_d)), with pool the mean of the last-layer
  outputs over the head entity's tokens, R a relation embedding and P a tail-position embedding; the
  matching function is f(h_d^i, y) = h_d^i . W_out[y] + b_out[y] with W_out / b_out the MLM decoder (tied to
  the word embeddings), so CKA and MLM score tokens in one space.
- KMB update (`update_memory`, after each forward pass, no grad): every entity occurrence with a bank row,
  important or not, feeds Eq. 4-6 from the detached last layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from storage.tokens import model_location, quiet_loading
from trelm.batch import IGNORE, Batch, EntityRows, TokenInfo
from trelm.config import ModelConfig
from trelm.losses import UnigramSampler, cka_log_probability, cka_logits, cka_loss, mlm_loss, total_loss
from trelm.memory import MemoryBank, span_mean, window_means

FRESH_ATTRIBUTE = "trelm_fresh_parameters"  # set by load_backbone: MLM parameters with no pretrained value


def load_backbone(cfg: ModelConfig):
    """(masked LM, tokenizer); the LM carries the names of its freshly initialised parameters."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    location = model_location(cfg.backbone)
    tokenizer = AutoTokenizer.from_pretrained(location)
    overrides = {"tie_word_embeddings": True} if cfg.backbone == "minilm" else {}
    if cfg.init == "random":
        mlm = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(location, **overrides))
        prefix = mlm.base_model_prefix + "."
        fresh = {name for name, _ in mlm.named_parameters() if not name.startswith(prefix)}
    else:
        with quiet_loading():  # its report lists the fresh MLM head as MISSING: expected, checked below
            mlm, info = AutoModelForMaskedLM.from_pretrained(location, output_loading_info=True, **overrides)
        fresh = {name for name, _ in mlm.named_parameters() if name in set(info["missing_keys"])}
        _check_only_the_head_is_fresh(location, mlm, fresh)
    if overrides and mlm.get_output_embeddings().weight is not mlm.get_input_embeddings().weight:
        raise RuntimeError(f"{location}: the fresh MLM decoder is not tied to the word embeddings")
    setattr(mlm, FRESH_ATTRIBUTE, tuple(sorted(fresh)))
    return mlm, tokenizer


def _check_only_the_head_is_fresh(location: str, mlm, fresh: set[str]) -> None:
    """A fresh MLM head is expected (it trains); a fresh encoder weight means a broken checkpoint."""
    encoder = sorted(name for name in fresh if name.startswith(mlm.base_model_prefix + "."))
    if encoder:
        missing = ", ".join(encoder[:5])
        raise RuntimeError(f"{location}: encoder weights missing from the checkpoint: {missing}")


@dataclass
class TrelmOutput:
    loss: torch.Tensor  # Eq. 3
    mlm_loss: torch.Tensor
    cka_loss: torch.Tensor  # Eq. 2 (0 without CKA)
    last_hidden: torch.Tensor  # [B, T, H]
    cls: torch.Tensor  # [B, H], the last layer at the first token


class TrelmModel(nn.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        mlm: nn.Module,
        tok_info: TokenInfo,
        entity_kg_ids: np.ndarray,
        entity_embeddings: torch.Tensor,
        n_relations: int,
        unigram_counts: torch.Tensor | None = None,
        seed: int = 0,
        initial_local: torch.Tensor | None = None,
    ):
        """entity_kg_ids: sorted kg_ids of the bank rows; entity_embeddings [len, kge_dim] aligned with them;
        unigram_counts [vocab] corpus token counts for Q (None: uniform over the non-special tokens);
        initial_local: a [len, H] start of M_local (None: lazily, see trelm.memory)."""
        super().__init__()
        self.cfg, self.mlm, self.tok_info = cfg, mlm, tok_info
        hidden, std = mlm.config.hidden_size, mlm.config.initializer_range
        self.entity_rows = EntityRows(entity_kg_ids)
        self.register_buffer("entity_vectors", entity_embeddings.float(), persistent=False)
        if cfg.inject_knowledge:
            self.knowledge_proj = _init(nn.Linear(entity_embeddings.shape[1], hidden), std)
        if cfg.cka:
            self.relation_emb = _init(nn.Embedding(max(n_relations, 1), hidden), std)
            self.cka_position = _init(nn.Embedding(cfg.max_tail_tokens, hidden), std)
            self.cka_dense = _init(nn.Linear(hidden, hidden), std)
            self.cka_norm = nn.LayerNorm(hidden, eps=getattr(mlm.config, "layer_norm_eps", 1e-12))
        self.memory = (
            MemoryBank(
                entity_kg_ids,
                hidden,
                cfg.gamma,
                cfg.memory_device,
                cfg.memory_max_device_bytes,
                initial_local,
            )
            if cfg.memory_bank
            else None
        )
        self._memory_placed_for: torch.device | None = None
        self.sampler = UnigramSampler(
            self._counts(unigram_counts), cfg.unigram_power, torch.Generator().manual_seed(seed)
        )

    def _counts(self, unigram_counts: torch.Tensor | None) -> torch.Tensor:
        if unigram_counts is not None:
            return unigram_counts
        counts = torch.ones(self.tok_info.vocab_size)
        counts[list(self.tok_info.special_ids)] = 0
        return counts

    # ------------------------------------------------------------ backbone pieces the router uses

    def _layers(self) -> list[nn.Module]:
        return list(self.mlm.base_model.encoder.layer)

    def encoder_layers(self) -> list[nn.Module]:
        """The backbone's transformer layers in order (the router replays the ones below a scaled layer)."""
        return self._layers()

    def ffn_intermediate_modules(self) -> list[nn.Module]:
        """Each layer's `intermediate` (its output: the FFN neuron activations)."""
        return [layer.intermediate for layer in self._layers()]

    def ffn_output_modules(self) -> list[nn.Module]:
        """Each layer's `output` (holding `output.dense`, the FFN's second matrix)."""
        return [layer.output for layer in self._layers()]

    def new_parameter_names(self) -> list[str]:
        """Parameters with no pretrained value: TRELM's own modules and a fresh MLM head."""
        fresh = {f"mlm.{name}" for name in getattr(self.mlm, FRESH_ATTRIBUTE, ())}
        return [name for name, _ in self.named_parameters() if not name.startswith("mlm.") or name in fresh]

    def external_parameters(self) -> list[nn.Parameter]:
        """Parameters read outside their own module's forward (the MLM decoder, in the CKA matching function):
        under ZeRO-3 register them with `deepspeed.zero.register_external_parameter(model, p)`."""
        output = self.mlm.get_output_embeddings()
        return [p for p in (output.weight, output.bias) if p is not None] if self.cfg.cka else []

    def export_hf(self, path: str | Path, tokenizer) -> None:
        """The inner masked LM + tokenizer, loadable with AutoModelForMaskedLM / AutoTokenizer."""
        self.mlm.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))

    # ------------------------------------------------------------ Eq. 7 inputs

    def _encode(self, batch: Batch, lam: float) -> torch.Tensor:
        embeds = self._input_embeddings(batch, lam)
        out = self.mlm.base_model(inputs_embeds=embeds, attention_mask=batch.attention_mask)
        return out.last_hidden_state

    def _input_embeddings(self, batch: Batch, lam: float) -> torch.Tensor:
        """Eq. 7 at the injected tokens (`batch.inject_index`), the word embedding E_p elsewhere."""
        embeds = self.mlm.get_input_embeddings()(batch.input_ids)
        if not (self.cfg.inject_knowledge or self.cfg.memory_bank):
            return embeds
        positions = (batch.inject_index.reshape(-1) >= 0).nonzero().flatten()
        flat = embeds.reshape(-1, embeds.shape[-1])
        entity = batch.inject_index.reshape(-1)[positions]
        knowledge = (
            self.knowledge_proj(self.entity_vectors[batch.ent_row[entity]])
            if self.cfg.inject_knowledge
            else flat[positions]
        )
        lam = lam if self.memory is not None else 0.0
        if lam > 0:
            local, global_ = self._read_memory(batch)
            knowledge = (1 - lam) * knowledge + lam / 2 * (local[entity] + global_[entity])
        return flat.index_copy(0, positions, knowledge.to(flat.dtype)).view_as(embeds)

    def _pretrained_start(self, batch: Batch) -> torch.Tensor:
        """[E, H]: mean input word embedding of each entity's tokens (the lazy M_local start)."""
        with torch.no_grad():
            words = self.mlm.get_input_embeddings()(batch.original_ids).float()
            return span_mean(words, batch.attention_mask, batch.ent_batch, batch.ent_start, batch.ent_end)

    def _read_memory(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(M_local, M_global) [E, H] per entity of the batch (rows -1 read row 0 and are never used)."""
        self._place_memory(batch.input_ids.device)
        return self.memory.read(batch.ent_row.clamp(min=0), self._pretrained_start(batch))

    def _place_memory(self, device: torch.device) -> None:
        if self._memory_placed_for != device:
            self.memory.place(device)
            self._memory_placed_for = device

    # ------------------------------------------------------------ losses

    def forward(self, batch: Batch, lam: float, negatives: torch.Tensor | None = None) -> TrelmOutput:
        """Eq. 3 on one batch; negatives [n_tail_tokens, K] (None: drawn from the model's sampler)."""
        hidden = self._encode(batch, lam)
        predicted = batch.mlm_labels != IGNORE
        mlm = mlm_loss(self._mlm_head()(hidden[predicted]), batch.mlm_labels[predicted])
        if not self.cfg.cka:
            return TrelmOutput(mlm, mlm, torch.zeros_like(mlm), hidden, hidden[:, 0])
        if negatives is None:
            negatives = self.sample_negatives(batch)
        cka = cka_loss(self._cka_logits(batch, hidden, negatives, copies=1))
        if self.cfg.cka_plain_view != "off":
            # the extension: the same targets learned from the head's own word pieces (no h_e, no memory),
            # so the backbone, not only W_k, has to hold the fact
            # added, not averaged: a long-tail fact is seen a few times an epoch, and halving its one
            # plain-token signal measurably slowed learning it (issue 12's benchmark)
            cka = cka + self._plain_view_loss(batch, negatives)
        return TrelmOutput(total_loss(mlm, cka, self.cfg.theta), mlm, cka, hidden, hidden[:, 0])

    def _plain_view_loss(self, batch: Batch, negatives: torch.Tensor) -> torch.Tensor:
        if self.cfg.cka_plain_view == "span":
            plain = self._encode(batch.plain(), 0.0)
            return cka_loss(self._cka_logits(batch, plain, negatives, copies=1))
        return mlm_loss(*self._cloze_logits(*self._cloze_inputs(batch)))

    def _cloze_logits(self, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(MLM head logits [n, V], gold tokens [n]) at the cloze rows' masks (`_cloze_inputs`), row-major."""
        hidden = self.mlm.base_model(input_ids=ids, attention_mask=(ids != self.tok_info.pad_id).long())[0]
        predicted = labels != IGNORE
        return self._mlm_head()(hidden[predicted]), labels[predicted]

    def cloze_probability(self, batch: Batch, repeat: int) -> torch.Tensor:
        """[repeat, n_tail_tokens]: the MLM head's probability (full softmax) of each gold tail token at its
        mask in the cloze view, the router's P with `routing.attribution_target="cloze"`; on the cloze rows
        repeated copy-major, like `cka_probability`'s batch."""
        ids, labels = (t.repeat(repeat, 1) for t in self._cloze_inputs(batch))
        logits, gold = self._cloze_logits(ids, labels)
        return logits.float().log_softmax(-1).gather(1, gold[:, None]).exp().view(repeat, -1)

    def cloze_prompt_mask(self, batch: Batch) -> torch.Tensor:
        """[C, L] bool: each cloze row's head tokens, relation tokens and masks (all but its first and last
        token and the padding), what the router scales for the cloze target: P is read at the masks."""
        ids, _ = self._cloze_inputs(batch)
        positions = torch.arange(ids.shape[1], device=ids.device)
        last = (ids != self.tok_info.pad_id).sum(1, keepdim=True) - 1
        return (positions > 0) & (positions < last)

    def set_relation_tokens(self, tokens: list[list[int]]) -> None:
        """Token ids of every relation's words (by rel_id), for the cloze view (`cka_plain_view="cloze"`)."""
        self.relation_tokens = [list(t) for t in tokens]

    def _cloze_inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """([C, L] ids, [C, L] labels): per CKA target, the sequence's first token, the head entity's own
        tokens, the relation's tokens, one mask per tail token, the sequence's last token."""
        if not hasattr(self, "relation_tokens"):
            raise RuntimeError('cka_plain_view="cloze" needs set_relation_tokens (the trainer calls it)')
        original, lengths = batch.original_ids.tolist(), batch.attention_mask.sum(1).tolist()
        rows = []
        for c, e in enumerate(batch.cka_entity.tolist()):
            b, start, end = (int(x[e]) for x in (batch.ent_batch, batch.ent_start, batch.ent_end))
            tail = batch.cka_tail[c][batch.cka_tail_mask[c]].tolist()
            prompt = [original[b][0], *original[b][start:end], *self.relation_tokens[int(batch.cka_rel[c])]]
            rows.append((prompt, tail, original[b][lengths[b] - 1]))
        width = max(len(p) + len(t) + 1 for p, t, _ in rows)
        ids = torch.full((len(rows), width), self.tok_info.pad_id, dtype=torch.long)
        labels = torch.full_like(ids, IGNORE)
        for r, (prompt, tail, last) in enumerate(rows):
            n = len(prompt)
            ids[r, : n + len(tail) + 1] = torch.tensor([*prompt, *[self.tok_info.mask_id] * len(tail), last])
            labels[r, n : n + len(tail)] = torch.tensor(tail)
        return ids.to(batch.input_ids.device), labels.to(batch.input_ids.device)

    def _mlm_head(self) -> nn.Module:
        return self.mlm.cls if hasattr(self.mlm, "cls") else self.mlm.lm_head

    def negative_generator(self, seed: int) -> torch.Generator:
        """A generator for `sample_negatives`, on the sampler's device (host memory, whatever the model's)."""
        return self.sampler.new_generator(seed)

    def sample_negatives(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n_tail_tokens, cka_negatives] unigram negatives on the batch's device."""
        n_tokens = int(batch.cka_tail_mask.sum())
        draws = self.sampler.sample((n_tokens, self.cfg.cka_negatives), generator)
        return draws.to(batch.input_ids.device)

    def _cka_queries(self, batch: Batch, hidden: torch.Tensor) -> torch.Tensor:
        """[n_tail_tokens, H] the decoder queries h_d^i (module doc), in cka_tail_mask order."""
        head = batch.cka_entity
        pooled = span_mean(
            hidden, batch.attention_mask, batch.ent_batch[head], batch.ent_start[head], batch.ent_end[head]
        )
        width = batch.cka_tail.shape[1]
        x = pooled.unsqueeze(1) + self.relation_emb(batch.cka_rel).unsqueeze(1)
        x = x + self.cka_position(torch.arange(width, device=x.device)).unsqueeze(0)
        query = self.cka_norm(nn.functional.gelu(self.cka_dense(x)))
        return query[batch.cka_tail_mask]

    def _cka_logits(self, batch: Batch, hidden, negatives: torch.Tensor, copies: int) -> torch.Tensor:
        output = self.mlm.get_output_embeddings()
        query = self._cka_queries(batch, hidden)
        groups = torch.arange(copies, device=query.device).repeat_interleave(len(query) // max(copies, 1))
        return cka_logits(
            query,
            batch.cka_tail[batch.cka_tail_mask],
            negatives,
            output.weight,
            output.bias,
            self.cfg.in_batch_negatives,
            groups,
        )

    @torch.no_grad()
    def cka_candidate_scores(self, batch: Batch, lam: float, candidates: torch.Tensor) -> torch.Tensor:
        """[C, n]: the CKA decoder's score f(h_d^1, y) of each candidate token y for the first tail token of
        every target (a diagnostic: pass `batch.plain()` to read the decoder from plain tokens)."""
        hidden = self._encode(batch, lam)
        head = batch.cka_entity
        pooled = span_mean(
            hidden, batch.attention_mask, batch.ent_batch[head], batch.ent_start[head], batch.ent_end[head]
        )
        x = pooled + self.relation_emb(batch.cka_rel) + self.cka_position.weight[0]
        query = self.cka_norm(nn.functional.gelu(self.cka_dense(x)))
        output = self.mlm.get_output_embeddings()
        bias = output.bias[candidates] if output.bias is not None else 0.0
        return query @ output.weight[candidates].T + bias

    def cka_probability(self, batch: Batch, lam: float, negatives: torch.Tensor, repeat: int) -> torch.Tensor:
        """[repeat, n_tail_tokens]: Eq. 9's P_x, the sampled-softmax probability of each correct tail token,
        on the batch repeated copy-major (copy r = rows r*B..(r+1)*B-1), the same negatives for every copy."""
        copies = batch.repeat(repeat)
        hidden = self._encode(copies, lam)
        logits = self._cka_logits(copies, hidden, negatives.repeat(repeat, 1), copies=repeat)
        return cka_log_probability(logits.float()).exp().view(repeat, -1)

    def attribution_batch(self, batch: Batch, max_targets: int) -> Batch:
        """The sequences holding the first `max_targets` CKA targets (the router copies them m times)."""
        return batch.for_targets(max_targets)

    def head_span_mask(self, batch: Batch) -> torch.Tensor:
        """[B, T] bool: the tokens of the head entities that have CKA targets."""
        head = batch.cka_entity
        positions = torch.arange(batch.input_ids.shape[1], device=head.device)
        spans = (positions >= batch.ent_start[head, None]) & (positions < batch.ent_end[head, None])
        hits = torch.zeros(batch.input_ids.shape, dtype=torch.long, device=head.device)
        return hits.index_add_(0, batch.ent_batch[head], spans.long()) > 0

    # ------------------------------------------------------------ memory bank

    @torch.no_grad()
    def update_memory(self, batch: Batch, output: TrelmOutput) -> None:
        """Eq. 4-6 from the detached last layer, for every entity occurrence with a bank row."""
        if self.memory is None:
            return
        self._place_memory(batch.input_ids.device)
        hidden = output.last_hidden.detach().float()
        occurrence = (batch.ent_row >= 0).nonzero().flatten()
        rows, seq = batch.ent_row[occurrence], batch.ent_batch[occurrence]
        local = window_means(
            hidden,
            batch.attention_mask,
            seq,
            batch.ent_start[occurrence],
            batch.ent_end[occurrence],
            self.cfg.window_k,
        )
        start = self._pretrained_start(batch)[occurrence]
        self.memory.update(
            rows, local, output.cls.detach().float()[seq], start, _first_in_sequence(seq, rows)
        )


def _first_in_sequence(seq: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[n] bool: the first occurrence of each (sequence, bank row) pair; Eq. 6 counts a context once."""
    if len(rows) == 0:
        return torch.zeros(0, dtype=torch.bool, device=rows.device)
    _, inverse = torch.unique(torch.stack([seq, rows]), dim=1, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(rows), device=rows.device)
    first = first.scatter_reduce(0, inverse, torch.arange(len(rows), device=rows.device), "amin")
    return torch.zeros(len(rows), dtype=torch.bool, device=rows.device).index_fill_(0, first, True)


def _init(module: nn.Module, std: float) -> nn.Module:
    """BERT-style initialisation of a new module (normal(0, std) weights, zero bias)."""
    nn.init.normal_(module.weight, std=std)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module
