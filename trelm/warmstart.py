"""Warm start: MLM on the run's corpus for the backbone's fresh MLM head (and, by a setting, the whole
backbone), exported once as a Hugging Face folder that every compared pre-training variant starts from.

Why: the packaged MiniLM encoder has no MLM head (`trelm.model.load_backbone` initialises one), so a
cloze probe of any variant starts at the floor and its first steps are spent learning the head, the
same for every variant. Training the head once, before the comparison, takes that common cost out of
the variants' budgets and out of the comparison. `train_backbone=True` trains every parameter (a
randomly initialised benchmark backbone needs it to read the corpus at all).

Plain inputs (no Eq. 7, no memory, no CKA) and BERT masking from `trelm.batch`; one process and a plain
AdamW loop: it runs once, where the compared variants run through the DeepSpeed trainer.
"""

from __future__ import annotations

import time
from pathlib import Path

from storage.errors import ConfigError
from trelm.config import ModelConfig, WarmStartConfig


def warm_start(model_cfg: ModelConfig, cfg: WarmStartConfig, run_dir: Path, out: Path) -> dict:
    """Train `model_cfg.backbone`'s MLM on the run's `instances`; save it to `out`; returns a summary."""
    import torch

    from trelm.batch import TokenInfo
    from trelm.model import FRESH_ATTRIBUTE, load_backbone

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    mlm, tokenizer = load_backbone(model_cfg)
    fresh = set(getattr(mlm, FRESH_ATTRIBUTE, ()))
    for name, param in mlm.named_parameters():
        param.requires_grad_(cfg.train_backbone or name in fresh)
    params = [p for p in mlm.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"{model_cfg.backbone} has no fresh MLM parameters", fix="set train_backbone=True")
    start = time.perf_counter()
    losses = _train(mlm, TokenInfo.from_tokenizer(tokenizer), params, cfg, run_dir)
    out.mkdir(parents=True, exist_ok=True)
    mlm.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "steps": len(losses),
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "seconds": time.perf_counter() - start,
        "trained_parameters": sum(p.numel() for p in params),
        "export": str(out),
    }


def _train(mlm, tok_info, params, cfg: WarmStartConfig, run_dir: Path) -> list[float]:
    import torch

    from trelm.batch import IGNORE, make_batch
    from trelm.data import DataPosition, InstanceStream
    from trelm.losses import mlm_loss

    plain = ModelConfig(inject_knowledge=False, memory_bank=False, cka=False)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    ramp = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps))
    )
    stream = InstanceStream(run_dir, cfg.micro_batch_size, 0, 1, cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    mlm.train()
    losses: list[float] = []
    epoch = 0
    while len(losses) < cfg.steps:
        for _, rows in stream.batches(DataPosition(epoch, 0)):
            batch = make_batch(rows, tok_info, plain, generator)
            predicted = batch.mlm_labels != IGNORE
            hidden = mlm.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)[0]
            head = mlm.cls if hasattr(mlm, "cls") else mlm.lm_head
            loss = mlm_loss(head(hidden[predicted]), batch.mlm_labels[predicted])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            ramp.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if len(losses) >= cfg.steps:
                break
        epoch += 1
    return losses
