"""LAMA (T-REx, Google-RE) and LAMA-UHN from LAMA's `data/` folder, scored as P@1 per relation.

Sentences come from the relation templates (`relations.jsonl` for T-REx; LAMA's fixed Google-RE
templates), one per fact, as LAMA's `run_experiments.py` does. Google-RE facts whose "no" judgments
outnumber the "yes" ones are dropped, as in LAMA.

LAMA-UHN (Poerner et al.) filters, applied on top:
1. string match: drop a fact whose object (lower-cased) is a substring of its subject (lower-cased);
2. person names: for relations whose subject is a person (PERSON_RELATIONS below), each word of the
   subject's name is put into "[X] is a common name in the following language|country : [MASK] ." and
   the fact is dropped when the object is among the name model's top 3 for any word. UHN used
   BERT-base-cased as the name model (one fixed subset); `uhn_name_model: self` uses the evaluated model
   itself (deviation, stated in the report: each checkpoint gets its own subset), a folder or id any
   other model, null turns this filter off.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from storage.errors import InputError
from trelm.evaluate.cloze import (
    Fact,
    keep_single_token,
    object_token_id,
    predict_masked,
    probe_hits,
    read_common_vocab,
)
from trelm.evaluate.metrics import macro_p_at_1

GOOGLE_RE_TEMPLATES = {
    "place_of_birth": "[X] was born in [Y] .",
    "date_of_birth": "[X] (born [Y]).",
    "place_of_death": "[X] died in [Y] .",
}
# subject is a person; the value says which name question the UHN filter asks
PERSON_RELATIONS = {
    "P19": "country", "P20": "country", "P27": "country", "P937": "country",
    "P103": "language", "P1412": "language",
    "place_of_birth": "country", "place_of_death": "country",
}  # fmt: skip
NAME_QUESTION = "[X] is a common name in the following {kind} : [Y] ."
NAME_TOP_K = 3


class LamaDataError(InputError, FileNotFoundError):
    """The folder is not LAMA's data/ layout (an OSError: the evaluation reports the task as not run)."""

    fix = "point the task at LAMA's data/ folder"


def _jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as lines:
        yield from (json.loads(line) for line in lines if line.strip())


def read_trex(data_dir: Path) -> list[Fact]:
    """Facts of every relation in relations.jsonl that has a TREx/{PID}.jsonl file."""
    relations = Path(data_dir) / "relations.jsonl"
    if not relations.exists():
        raise LamaDataError(f"{relations} not found")
    facts = []
    for rel in _jsonl(relations):
        path = Path(data_dir) / "TREx" / f"{rel['relation']}.jsonl"
        if path.exists():
            facts += [
                Fact(rel["relation"], row["sub_label"], row["obj_label"], rel["template"])
                for row in _jsonl(path)
            ]
    return facts


def _judged_true(row: dict) -> bool:
    votes = [j.get("judgment") for j in row.get("judgments", [])]
    return votes.count("no") <= votes.count("yes")


def read_google_re(data_dir: Path, skipped: dict[str, int]) -> list[Fact]:
    facts = []
    for relation, template in GOOGLE_RE_TEMPLATES.items():
        path = Path(data_dir) / "Google_RE" / f"{relation}_test.jsonl"
        if not path.exists():
            raise LamaDataError(f"{path} not found")
        for row in _jsonl(path):
            if _judged_true(row):
                facts.append(Fact(relation, row["sub_label"], row["obj_label"], template))
            else:
                skipped["negative_judgments"] = skipped.get("negative_judgments", 0) + 1
    return facts


def uhn_string_match(facts: list[Fact], skipped: dict[str, int]) -> list[Fact]:
    kept = [f for f in facts if f.obj.lower() not in f.subject.lower()]
    skipped["uhn_string_match"] = skipped.get("uhn_string_match", 0) + len(facts) - len(kept)
    return kept


def uhn_person_names(
    kept: list[tuple[Fact, int]], name_model, name_tokenizer, skipped: dict[str, int], batch_size: int = 32
) -> list[tuple[Fact, int]]:
    """Drop person facts whose object the name model guesses from a word of the subject's name (top 3).

    The object id is re-derived in the name model's vocabulary (it may differ from the evaluated one).
    """
    queries, owners = [], []
    for index, (fact, _) in enumerate(kept):
        kind = PERSON_RELATIONS.get(fact.relation)
        for word in fact.subject.split() if kind else ():
            template = NAME_QUESTION.format(kind=kind)
            queries.append(Fact(fact.relation, word, fact.obj, template).sentence(name_tokenizer.mask_token))
            owners.append(index)
    guesses = predict_masked(name_model, name_tokenizer, queries, top_k=NAME_TOP_K, batch_size=batch_size)
    guessable = {
        owner
        for owner, top in zip(owners, guesses, strict=True)
        if object_token_id(name_tokenizer, kept[owner][0].obj) in top
    }
    skipped["uhn_person_name"] = skipped.get("uhn_person_name", 0) + len(guessable)
    return [pair for index, pair in enumerate(kept) if index not in guessable]


def evaluate_lama(
    data_dir: Path,
    dataset: str,
    model,
    tokenizer,
    *,
    uhn: bool = False,
    name_model=None,
    common_vocab: Path | None = None,
    batch_size: int = 32,
    max_len: int = 128,
) -> dict:
    """{metrics: {p_at_1}, per_relation: {rel: P@1}, n, skipped: {reason: count}}.

    `dataset`: `trex` or `google-re`; `name_model`: (model, tokenizer) for the UHN person-name filter,
    None to skip it.
    """
    skipped: dict[str, int] = {}
    facts = read_trex(data_dir) if dataset == "trex" else read_google_re(data_dir, skipped)
    if uhn:
        facts = uhn_string_match(facts, skipped)
    allowed = read_common_vocab(common_vocab, tokenizer) if common_vocab else None
    kept = keep_single_token(facts, tokenizer, allowed, skipped)
    if uhn and name_model is not None:
        kept = uhn_person_names(kept, *name_model, skipped, batch_size)
    hits = probe_hits(model, tokenizer, kept, allowed, batch_size, max_len)
    by_relation: dict[str, list[bool]] = {}
    for (fact, _), hit in zip(kept, hits, strict=True):
        by_relation.setdefault(fact.relation, []).append(hit)
    scores = macro_p_at_1(by_relation)
    return {
        "metrics": {"p_at_1": scores["p_at_1"]},
        "per_relation": scores["per_relation"],
        "n": len(kept),
        "skipped": skipped,
    }
