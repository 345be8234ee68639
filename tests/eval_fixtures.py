"""Tiny masked LMs and data files in the real evaluation formats, written by the evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path

SPECIALS_BERT = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCT = [".", ",", "@", "#", "*", "^", "(", ")", ":", "-", "'"]


def tiny_config(kind: str, vocab_size: int, **ids):
    from transformers import BertConfig, RobertaConfig

    cls = BertConfig if kind == "bert" else RobertaConfig
    return cls(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=160,
        **ids,
    )


def bert_tokenizer(folder: Path, words: list[str]):
    """Uncased WordPiece over SPECIALS + punctuation + `words` (lower-cased), saved in `folder`."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = list(dict.fromkeys(SPECIALS_BERT + PUNCT + [w.lower() for w in words]))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast.from_pretrained(folder, do_lower_case=True)


def byte_alphabet() -> list[str]:
    """GPT-2's byte-to-character map: printable bytes stand for themselves, the rest from U+0100 on."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    shifted = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


def roberta_tokenizer(folder: Path, words: list[str]):
    """Byte-level BPE whose vocabulary has `Ġword` for each word (merge chains) and every single byte."""
    from transformers import AddedToken, RobertaTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", *byte_alphabet()]
    merges = []
    for word in ("Ġ" + w for w in words):
        for end in range(2, len(word) + 1):
            merges.append(f"{word[: end - 1]} {word[end - 1]}")
            vocab.append(word[:end])
    vocab = list(dict.fromkeys(vocab))
    merges = list(dict.fromkeys(merges))
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    # RoBERTa's mask absorbs the space before it, so the object slot is predicted as "Ġword"
    return RobertaTokenizerFast.from_pretrained(folder, mask_token=AddedToken("<mask>", lstrip=True))


def save_mlm(
    folder: Path, kind: str, words: list[str], favour: dict[str, float] | None = None, seed: int = 0
):
    """A random tiny BERT/RoBERTa MLM + tokenizer in `folder`; `favour` adds to the output bias of words
    (a large value makes the word the prediction at every mask, whatever the random weights say)."""
    import torch
    from transformers import BertForMaskedLM, RobertaForMaskedLM

    torch.manual_seed(seed)
    tokenizer = (bert_tokenizer if kind == "bert" else roberta_tokenizer)(folder, words)
    if kind == "bert":
        model = BertForMaskedLM(tiny_config("bert", len(tokenizer)))
    else:
        ids = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
        model = RobertaForMaskedLM(tiny_config("roberta", len(tokenizer), **ids))
    head = model.cls.predictions if kind == "bert" else model.lm_head
    with torch.no_grad():
        for word, boost in (favour or {}).items():
            token = word.lower() if kind == "bert" else "Ġ" + word  # the object token after a space
            head.bias[tokenizer.convert_tokens_to_ids(token)] += boost
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_lama(root: Path) -> Path:
    """LAMA's data/ layout: relations.jsonl, TREx/P*.jsonl, Google_RE/*_test.jsonl."""
    write_jsonl(
        root / "relations.jsonl",
        [
            {
                "relation": "P19",
                "template": "[X] was born in [Y] .",
                "label": "place of birth",
                "type": "N-1",
            },
            {"relation": "P36", "template": "The capital of [X] is [Y] .", "label": "capital", "type": "1-1"},
            {"relation": "P999", "template": "[X] likes [Y] .", "label": "no file", "type": "N-M"},
        ],
    )
    write_jsonl(
        root / "TREx" / "P19.jsonl",
        [
            {
                "uuid": "a",
                "sub_label": "Ada Smith",
                "obj_label": "Paris",
                "predicate_id": "P19",
                "evidences": [],
            },
            {
                "uuid": "b",
                "sub_label": "Bob Jones",
                "obj_label": "Rome",
                "predicate_id": "P19",
                "evidences": [],
            },
            {
                "uuid": "c",
                "sub_label": "Cy Paris",
                "obj_label": "Paris",
                "predicate_id": "P19",
                "evidences": [],
            },
            {
                "uuid": "d",
                "sub_label": "Di Long",
                "obj_label": "New York",
                "predicate_id": "P19",
                "evidences": [],
            },
        ],
    )
    write_jsonl(
        root / "TREx" / "P36.jsonl",
        [
            {
                "uuid": "e",
                "sub_label": "France",
                "obj_label": "Paris",
                "predicate_id": "P36",
                "evidences": [],
            },
            {"uuid": "f", "sub_label": "Italy", "obj_label": "Rome", "predicate_id": "P36", "evidences": []},
        ],
    )
    yes, no = {"judgment": "yes"}, {"judgment": "no"}
    for relation, rows in {
        "place_of_birth": [("Ada Smith", "Paris", [yes, yes, no]), ("Bob Jones", "Rome", [no, no, yes])],
        "date_of_birth": [("Ada Smith", "1900", [yes])],
        "place_of_death": [("Eve Rome", "Rome", [yes]), ("Al Bo", "Paris", [yes, no])],
    }.items():
        write_jsonl(
            root / "Google_RE" / f"{relation}_test.jsonl",
            [
                {"sub_label": s, "obj_label": o, "masked_sentences": [f"{s} ... [MASK] ."], "judgments": j}
                for s, o, j in rows
            ],
        )
    return root


def write_kg_run(run_dir: Path) -> Path:
    """A run folder with kg_entities, kg_relations, kg_triples and instances (through ShardWriter).

    Triples: Ada Smith -P19-> Paris (a CKA target: seen), France -P36-> Paris (unseen: its instance
    entity is not important), Italy -P36-> Rome (seen), Ada Smith -P9999-> France (no template),
    Ada Smith -P19-> New York (two-token object).
    """
    import pyarrow as pa

    from storage.schemas import INSTANCES, KG_ENTITIES, KG_RELATIONS, KG_TRIPLES
    from storage.shards import Provenance, ShardWriter

    labels = ["Ada Smith", "Paris", "France", "Rome", "Italy", "New York"]
    entity = {"tok_start": 1, "tok_end": 2, "si": 1.0, "freq": 1, "tail_ids": None}
    tables = {
        KG_ENTITIES: [
            {"kg_id": i, "qid": f"Q{i}", "label": label, "aliases": [], "description": None, "degree": 1}
            for i, label in enumerate(labels)
        ],
        KG_RELATIONS: [
            {"rel_id": i, "pid": pid, "label": pid, "aliases": []}
            for i, pid in enumerate(["P19", "P36", "P9999"])
        ],
        KG_TRIPLES: [
            {"head": h, "rel": r, "tail": t}
            for h, r, t in [(0, 0, 1), (2, 1, 1), (4, 1, 3), (0, 2, 2), (0, 0, 5)]
        ],
        INSTANCES: [
            {
                "seq_id": 0,
                "page_id": 1,
                "input_ids": [2, 5, 3],
                "entities": [
                    entity | {"kg_id": 0, "important": True, "rel_id": 0, "tail_kg_id": 1},
                    entity | {"kg_id": 4, "important": True, "rel_id": 1, "tail_kg_id": 3},
                    entity | {"kg_id": 2, "important": False, "rel_id": 1, "tail_kg_id": 1},
                ],
            }
        ],
    }
    for dataset, rows in tables.items():
        writer = ShardWriter(run_dir, dataset, Provenance("test", (), "test")).open()
        part = writer.write_part(0, [pa.Table.from_pylist(rows, schema=dataset.schema)])
        writer.finalize([part])
    (run_dir / "config.yaml").write_text("preset: sample\n")
    return run_dir


def write_open_entity(folder: Path, persons: list[str], places: list[str], repeat: int = 1) -> Path:
    """Open Entity json (ERNIE layout): the mention's word decides its types (person vs location+place)."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for word in (persons + places) * repeat:
        sent = f"we met {word} there ."
        labels = ["person"] if word in persons else ["location", "place"]
        items.append({"sent": sent, "start": 7, "end": 7 + len(word), "labels": labels, "ents": []})
    for split in ("train", "dev", "test"):
        (folder / f"{split}.json").write_text(json.dumps(items))
    return folder
