"""Small mechanisms every package's config handling shares: nested dict merge, the YAML that is saved
beside outputs and inside checkpoints, and the `auto` device rule."""

from __future__ import annotations

from pathlib import Path

import yaml

from storage.shards import atomic_write_text


def deep_merge(base: dict, top: dict) -> dict:
    """`top` over `base`, section by section (nested mappings merge, anything else replaces)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = (
            deep_merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def write_yaml(path: Path, data: dict) -> None:
    """A config as YAML, keys in model order, published atomically."""
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def device_name(name: str) -> str:
    """`auto` is the GPU when one is visible, else the CPU; any other name is kept (`cuda:1`, `mps`)."""
    if name != "auto":
        return name
    import torch  # only here: the config layers import this module without the training stack

    return "cuda" if torch.cuda.is_available() else "cpu"
