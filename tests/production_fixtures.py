"""Production-shaped fixtures, made here from the sample (nothing from a hub).

- `byte_bpe_roberta`: RoBERTa's tokenizer family and model class. A byte-level BPE trained with
  `tokenizers` on the sample's own article text, with RoBERTa's special tokens and post-processor,
  wrapped as `RobertaTokenizerFast`, beside a random `RobertaForMaskedLM` of 2 layers (hidden 32).
  Positions are RoBERTa's: `max_position_embeddings` = 512 + padding_idx + 1 = 514.
- `hub_kg`: the sample's Wikidata5M files with Wikidata5M's shapes added: filler entities first, so
  that the sample's entities get kg_ids at Wikidata5M's magnitude (the loader numbers entities in file
  order; by default the real 4,594,485 entities in all), QIDs of nine digits, and hub tails closing at
  least `hub_degree` triples each ("human" Q5 by `instance of`, "United States" Q30 by `country`), as
  the most common Wikidata5M tails do.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "sample"
WIKIDATA5M_ENTITIES = 4_594_485
FILLER_QID_BASE = 100_000_000  # nine-digit QIDs, as Wikidata's newest items have
HUB_TAILS = (("P31", "Q5"), ("P17", "Q30"))  # (relation, tail): instance of human, country United States
_MARKUP = re.compile(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]|\{\{[^}]*\}\}|'{2,}|<[^>]+>")


def sample_texts() -> list[str]:
    """The sample's articles as plain-ish text (links reduced to their anchors): the tokenizer's corpus."""
    articles = sorted((SAMPLE / "src" / "articles").glob("*.wiki"))
    return [_MARKUP.sub(r"\1", path.read_text(encoding="utf-8")) for path in articles]


def byte_bpe_tokenizer(folder: Path, vocab_size: int = 4000):
    """A RobertaTokenizerFast whose byte-level BPE was trained on the sample, saved in `folder`."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's order: <pad> is id 1
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(sample_texts(), vocab_size=vocab_size, min_frequency=2, special_tokens=specials)
    bpe.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    folder.mkdir(parents=True, exist_ok=True)
    bpe.save(str(folder / "tokenizer.json"))
    tokenizer = RobertaTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), model_max_length=512)
    tokenizer.save_pretrained(folder)
    return tokenizer


def byte_bpe_roberta(folder: Path, seed: int = 0, shape: tuple[int, int, int, int] = (2, 32, 2, 64)) -> Path:
    """save_pretrained of a random RobertaForMaskedLM of `shape` (layers, hidden, heads, d_ff; default tiny)
    and the sample-trained byte-level BPE."""
    import torch
    from transformers import RobertaConfig, RobertaForMaskedLM

    tokenizer = byte_bpe_tokenizer(folder)
    torch.manual_seed(seed)
    layers, hidden, heads, d_ff = shape
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=d_ff,
        max_position_embeddings=514,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        type_vocab_size=1,
    )
    RobertaForMaskedLM(config).save_pretrained(folder)
    return folder


def hub_kg(folder: Path, n_entities: int = WIKIDATA5M_ENTITIES, hub_degree: int = 10_000) -> Path:
    """The sample KG in Wikidata5M's files and shapes (module doc). Returns the folder."""
    src = SAMPLE / "wikidata5m"
    sample_entities = (src / "wikidata5m_entity.txt").read_text(encoding="utf-8")
    n_fillers = n_entities - sample_entities.count("\n")
    if n_fillers < hub_degree * len(HUB_TAILS):
        raise ValueError(f"{n_entities} entities leave too few fillers for hubs of degree {hub_degree}")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("wikidata5m_relation.txt", "wikidata5m_text.txt"):
        shutil.copy(src / name, folder / name)
    with open(folder / "wikidata5m_entity.txt", "w", encoding="utf-8") as out:
        out.writelines(f"Q{FILLER_QID_BASE + i}\tentity {i}\n" for i in range(n_fillers))
        out.write(sample_entities)
    with open(folder / "wikidata5m_all_triplet.txt", "w", encoding="utf-8") as out:
        out.write((src / "wikidata5m_all_triplet.txt").read_text(encoding="utf-8"))
        for k, (pid, tail) in enumerate(HUB_TAILS):
            heads = range(k * hub_degree, (k + 1) * hub_degree)
            out.writelines(f"Q{FILLER_QID_BASE + i}\t{pid}\t{tail}\n" for i in heads)
    return folder


# ---------------------------------------------------------------- the `enwiki` preset, rehearsed here

REHEARSAL_KG_ENTITIES = 600_000


def enwiki_rehearsal(mirror: Path, kg: Path, model: Path, eval_data: Path) -> dict[str, tuple[object, str]]:
    """The settings of the `enwiki` preset a rehearsal on this machine must change, each with its reason:
    locations (what is not here) and sizes (what 2 cores cannot do in minutes). Everything else runs as
    shipped. `kg` should come from `hub_kg(n_entities=REHEARSAL_KG_ENTITIES)`: TransE's step touches every
    entity row, 6 min for two epochs at Wikidata5M's 4.6M on 2 cores (that size is loaded and selected
    on in tests/test_production_shapes.py)."""
    return {
        "download.mirror": (f"file://{mirror}", "location: the bundled sample mirror, no network here"),
        "kg.path": (str(kg), "location: a Wikidata5M-format KG with hub tails of degree 10,000"),
        "select.si.encoder": (str(model), "location: roberta-base is on the hub; a local byte-BPE RoBERTa"),
        "pretrain.model.backbone": (str(model), "location: the same local RoBERTa (one tokenizer)"),
        "evaluate.checkpoints": ([str(model), "mlm_only", "trelm"], "location: the hub's roberta-base"),
        "evaluate.seeds": ([1], "size: one fine-tuning seed (no task data here: 'not run')"),
        "ingest.pages_per_part": (40, "size: 20,000 pages a part would put the 123-page sample in one part"),
        "ingest.duckdb_memory_limit": ("2GB", "size: 8GB of 24 would starve the other processes"),
        "link.duckdb_memory_limit": ("2GB", "size: as above"),
        "select.kge.dim": (16, "size: 128-d TransE over 600k entities"),
        "select.kge.epochs": (1, "size: 100 epochs"),
        "select.kge.eval_triples": (20, "size: filtered ranking scores every entity, ~0.4 s a triple here"),
        "pretrain.train.ranks": (2, "size: 8 GPUs -> 2 CPU ranks (still the deepspeed launcher, gloo)"),
        "pretrain.train.micro_batch_size": (4, "size: the sample has ~150 sequences, fewer than 32 x 8 x 8"),
        "pretrain.train.grad_accum": (1, "size: as above"),
        "pretrain.train.max_steps": (4, "size: 100,000 steps"),
        "pretrain.train.warmup_steps": (1, "size: warmup within the 4 steps"),
        "pretrain.train.save_every": (2, "size: a checkpoint within the 4 steps"),
        "pretrain.routing.refresh_every": (2, "size: a path refresh within the 4 steps"),
        "progress": (False, "a log file, not a terminal"),
    }


def override_args(settings: dict[str, tuple[object, str]]) -> list[str]:
    """`--set key=value` arguments for `trelm` (values as YAML, lists in flow style)."""
    import yaml

    args = []
    for key, (value, _) in settings.items():
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        args += ["--set", f"{key}={text}"]
    return args
