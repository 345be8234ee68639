"""Checkpoints to evaluate: where they are, and loading them as a masked LM or as an encoder.

A checkpoint is a Hugging Face `save_pretrained` folder (model + tokenizer). Names resolve as: `minilm`
-> the packaged all-MiniLM-L6-v2 (a BERT encoder without an MLM head); with a run, a plain name (no `/`)
-> `{run_dir}/checkpoints/{name}/hf` (CheckpointMissing when pre-training has not exported it);
anything else is a folder (`./name` for one in the working directory) or a Hugging Face id
(`owner/name`).
"""

from __future__ import annotations

from pathlib import Path

from storage import layout
from storage.errors import InputError
from storage.tokens import PACKAGED, model_location, quiet_loading


class NoMLMHead(InputError, ValueError):
    """The checkpoint has no trained MLM head: a cloze score would measure a random head."""

    fix = "evaluate a checkpoint with an MLM head on the cloze tasks"


class CheckpointMissing(InputError, FileNotFoundError):
    """A run checkpoint name without its hf/ export (pre-training has not produced it)."""


def resolve_checkpoint(name: str, run_dir: Path | None = None) -> str:
    """The folder (or hub id) a checkpoint name stands for."""
    if name == PACKAGED:
        return model_location(name)
    if run_dir is not None and "/" not in name:  # never a folder of that name in the working directory
        export = layout.hf_export(run_dir, name)
        if not export.is_dir():
            raise CheckpointMissing(f"no export at {export}", fix="run `trelm pretrain` first")
        return str(export)
    return str(name)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_masked_lm(path: str, device: str):
    """(model in eval mode on `device`, tokenizer); NoMLMHead when the head would be freshly initialised."""
    from transformers import AutoModelForMaskedLM

    with quiet_loading():
        model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    prefix = f"{model.base_model_prefix}."
    head_missing = sorted(k for k in info["missing_keys"] if not k.startswith(prefix))
    if head_missing:
        raise NoMLMHead(f"no MLM head in {path} (missing {', '.join(head_missing[:3])}, ...)")
    return model.to(device).eval(), load_tokenizer(path)
