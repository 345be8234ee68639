"""What a pre-training run is made from (the `pretrain` stage's provenance): the variant's effective
config, the datasets training reads, and the code `trelm pretrain` runs. The train log records it and
the flow's cache key is made of it, so a re-selected corpus or an edited trainer module is a new run."""

from __future__ import annotations

from pathlib import Path

from storage.code import module_code_version
from storage.schemas import INSTANCES, KG_RELATIONS, RELATION_PHRASES, entity_embeddings
from storage.shards import Provenance, read_manifest, stable_hash
from trelm.config import PretrainConfig

TRAINING_INPUTS = (INSTANCES, entity_embeddings(0), KG_RELATIONS)


def training_inputs(cfg: PretrainConfig) -> tuple:
    """The datasets this variant's training reads: `relation_phrases` too where the cloze view reads them."""
    model = cfg.effective().model
    reads_phrases = model.cka_plain_view == "cloze" and model.cka_cloze_relation == "phrase"
    return TRAINING_INPUTS + ((RELATION_PHRASES,) if reads_phrases else ())


def pretrain_provenance(cfg: PretrainConfig, run_dir: Path) -> Provenance:
    inputs = tuple((d.name, read_manifest(run_dir, d)["fingerprint"]) for d in training_inputs(cfg))
    # the launcher's closure holds the trainer, the model, routing, the data stream and storage
    return Provenance(
        stable_hash(cfg.effective().model_dump(mode="json")), inputs, module_code_version("trelm.launch")
    )
