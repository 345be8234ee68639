"""The knowledge benchmark's quick world is the same in every invocation (issue 12): its random backbone
feeds the SI scores, `instances` and the warm start, so an unseeded one made two runs compare different
worlds (their warm starts scored 0.328 and 0.255 seen long-tail MRR on the same facts)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import knowledge  # noqa: E402 - a script beside the benchmarks, not a package


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_the_quick_backbone_depends_on_its_seed_only(tmp_path):
    for name, global_seed in (("a", 1), ("b", 2)):  # two invocations whose global RNGs differ
        torch.manual_seed(global_seed)
        knowledge.random_bert(tmp_path / name, vocab_size=50, hidden=32, layers=1, seed=0)
    knowledge.random_bert(tmp_path / "other", vocab_size=50, hidden=32, layers=1, seed=1)
    first, second, other = (_weights(tmp_path / n) for n in ("a", "b", "other"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(
        first["bert.embeddings.word_embeddings.weight"], other["bert.embeddings.word_embeddings.weight"]
    )


def test_building_the_backbone_leaves_the_callers_rng_alone(tmp_path):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    knowledge.random_bert(tmp_path / "m", vocab_size=50, hidden=32, layers=1, seed=0)
    assert torch.equal(torch.rand(3), expected)
