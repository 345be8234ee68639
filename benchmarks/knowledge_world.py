"""A generated world for benchmarks/knowledge.py, in the pipeline's real formats.

A KG in Wikidata5M's files (entity, relation, text, all_triplet) of fictional people, each with one fact per
relation whose objects are real single-token words (countries, cities, occupations, ...), drawn from a
mildly skewed distribution so that each relation has a prior a model can learn without knowing any fact.
A corpus of one short page per mention: the person's name, one of their *text facts* stated with the
relation's template, and a filler sentence; `mentions` link the name and the stated fact's object to their
KG entities as the link stage would (source `anchor`; Wikipedia links "born in [[Paris]]"), which is what
`select`'s relation phrases are mined from. Frequent people have `frequent_mentions` pages, long-tail
people 1-3 (at most 3, as issue 12 asks).

Only two of a person's six facts are ever stated in the text (`text_facts`); the probe uses the other
ones, so a probed fact is never in the corpus: what a model knows of it came from the KG (CKA targets,
KG embeddings), and the held-out facts, which `select` keeps out of both, are the control.
The names are syllable strings no vocabulary word appears in, so no backbone knows anything of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from storage.schemas import MENTIONS, PAGES
from storage.shards import Provenance, ShardWriter

# pid, label, template ([X] subject, [Y] object), objects (single tokens of an uncased WordPiece vocabulary)
RELATIONS = (
    (
        "P27",
        "country of citizenship",
        "[X] is a citizen of [Y] .",
        "France Germany Italy Spain Japan China India Egypt Brazil Canada Mexico Russia Poland Sweden Greece",
    ),
    (
        "P19",
        "place of birth",
        "[X] was born in [Y] .",
        "Paris Berlin Rome Madrid Tokyo London Vienna Cairo Moscow Athens Lisbon Dublin Prague Warsaw Boston",
    ),
    (
        "P106",
        "occupation",
        "[X] works as a [Y] .",
        "painter poet singer actor lawyer engineer architect farmer teacher physician sculptor novelist "
        "composer chemist banker",
    ),
    (
        "P1412",
        "languages spoken, written or signed",
        "[X] speaks [Y] .",
        "French German Italian Spanish Japanese Chinese Arabic Russian Polish Greek Dutch Swedish Turkish "
        "Korean Hindi",
    ),
    (
        "P101",
        "field of work",
        "[X] works in the field of [Y] .",
        "physics chemistry biology history mathematics economics medicine philosophy music law poetry "
        "astronomy geology linguistics theology",
    ),
    (
        "P1303",
        "instrument",
        "[X] plays the [Y] .",
        "piano violin guitar flute cello drums trumpet harp organ clarinet saxophone banjo accordion oboe "
        "harmonica",
    ),
)
# a second wording of each relation, which the probe never uses: with `corpus_wording: other` the corpus says
# only this, so the probe's wording is never in the text (the mined phrase then differs from the probe's)
OTHER_WORDINGS = {
    "P27": "[X] holds the citizenship of [Y] .",
    "P19": "[X] came into the world in [Y] .",
    "P106": "[X] earns a living as a [Y] .",
    "P1412": "[X] is fluent in [Y] .",
    "P101": "[X] does research in [Y] .",
    "P1303": "[X] is a player of the [Y] .",
}
FILLERS = (
    "They lived there for many years .",
    "Little else is known about them .",
    "A short note mentions this .",
    "The story is told in an old letter .",
    "Their family kept the record .",
    "Few people remember this today .",
)
SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "ru",
    "ta",
    "ve",
    "zo",
    "ni",
    "sa",
    "po",
    "qe",
    "bu",
    "fa",
    "di",
    "ro",
    "xe",
    "ly",
    "ga",
    "tu",
    "ne",
    "vi",
    "ko",
    "ma",
)
HEAD_QID, OBJECT_QID = 900_000_000, 800_000_000


@dataclass
class WorldConfig:
    long_tail_people: int = 240
    frequent_people: int = 30
    frequent_mentions: int = 6
    text_facts: int = 2  # of a person's six facts, this many are stated in the text (never probed)
    prior_skew: float = 0.7  # object i of a relation has weight 1 / (i + 1) ** prior_skew
    seed: int = 0
    # how the corpus states a text fact: the probe's template (`probe`), only OTHER_WORDINGS (`other`), or
    # each page one of the two at random (`mixed`)
    corpus_wording: str = "probe"


def fictional_names(n: int, rng: np.random.Generator, vocab: set[str]) -> list[str]:
    """n distinct two-word names of 2-3 syllables, no word of which is a vocabulary word."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        words = ["".join(rng.choice(SYLLABLES, size=rng.integers(2, 4))) for _ in range(2)]
        if any(w in vocab for w in words) or " ".join(words) in seen:
            continue
        seen.add(" ".join(words))
        names.append(" ".join(w.capitalize() for w in words))
    return names


def people(cfg: WorldConfig, vocab: set[str]) -> list[dict]:
    """Each person: name, mentions (corpus frequency), facts {pid: object}, text_facts [pid, ...]."""
    rng = np.random.default_rng(cfg.seed)
    n = cfg.long_tail_people + cfg.frequent_people
    out = []
    for i, name in enumerate(fictional_names(n, rng, vocab)):
        facts = {}
        for pid, _, _, objects in RELATIONS:
            words = objects.split()
            weights = 1 / (np.arange(len(words)) + 1) ** cfg.prior_skew
            facts[pid] = words[int(rng.choice(len(words), p=weights / weights.sum()))]
        frequent = i >= cfg.long_tail_people
        mentions = cfg.frequent_mentions if frequent else int(rng.integers(1, 4))
        stated = rng.choice([r[0] for r in RELATIONS], size=cfg.text_facts, replace=False).tolist()
        out.append(
            {
                "qid": f"Q{HEAD_QID + i}",
                "name": name,
                "mentions": mentions,
                "facts": facts,
                "text_facts": stated,
            }
        )
    return out


def object_qids() -> dict[str, str]:
    words = dict.fromkeys(w for *_, objects in RELATIONS for w in objects.split())
    return {w: f"Q{OBJECT_QID + i}" for i, w in enumerate(words)}


def write_kg_files(folder: Path, persons: list[dict]) -> Path:
    """wikidata5m_{entity,relation,text,all_triplet}.txt of the world, as KEPLER publishes them."""
    folder.mkdir(parents=True, exist_ok=True)
    objects = object_qids()
    entities = [f"{p['qid']}\t{p['name']}" for p in persons] + [f"{q}\t{w}" for w, q in objects.items()]
    (folder / "wikidata5m_entity.txt").write_text("\n".join(entities) + "\n")
    (folder / "wikidata5m_relation.txt").write_text("\n".join(f"{r[0]}\t{r[1]}" for r in RELATIONS) + "\n")
    texts = [f"{p['qid']}\t{p['name']} is a person." for p in persons]
    (folder / "wikidata5m_text.txt").write_text("\n".join(texts) + "\n")
    triples = [f"{p['qid']}\t{pid}\t{objects[o]}" for p in persons for pid, o in p["facts"].items()]
    (folder / "wikidata5m_all_triplet.txt").write_text("\n".join(triples) + "\n")
    return folder


def page_texts(persons: list[dict], seed: int, wording: str = "probe") -> list[dict]:
    """One page per mention: (title, qid, text, name span, sentence spans), the text fact in `wording`
    (`WorldConfig.corpus_wording`)."""
    if wording not in ("probe", "other", "mixed"):
        raise ValueError(f"corpus wording {wording!r}: use probe, other or mixed")
    rng = np.random.default_rng([seed, 1])
    templates = {r[0]: r[2] for r in RELATIONS}
    pages = []
    for person in persons:
        for k in range(person["mentions"]):
            pid = person["text_facts"][k % len(person["text_facts"])]
            # `probe` draws nothing here, so its corpus is the one every earlier run used
            other = wording == "other" or (wording == "mixed" and rng.random() < 0.5)
            template = OTHER_WORDINGS[pid] if other else templates[pid]
            before_object, after_object = template.replace("[X]", person["name"]).split("[Y]")
            first = before_object + person["facts"][pid] + after_object
            second = FILLERS[int(rng.integers(len(FILLERS)))]
            pages.append(
                {
                    "title": f"{person['name']} ({k + 1})",
                    "qid": person["qid"],
                    "name": person["name"],
                    "object": (person["facts"][pid], len(before_object)),
                    "text": f"{first} {second}",
                    "sentences": [(0, len(first)), (len(first) + 1, len(first) + 1 + len(second))],
                }
            )
    order = rng.permutation(len(pages))
    return [pages[i] for i in order]


def write_corpus(run_dir: Path, pages: list[dict], kg_ids: dict[str, int], parts: int = 4) -> None:
    """`pages` and row-aligned `mentions`, `parts` parts each, in their real schemas."""
    provenance = Provenance("knowledge-world", (), "benchmark")
    page_writer = ShardWriter(run_dir, PAGES, provenance).open()
    mention_writer = ShardWriter(run_dir, MENTIONS, provenance).open()
    page_infos, mention_infos = [], []
    for index, chunk in enumerate(np.array_split(np.arange(len(pages)), parts)):
        rows = [(i + 1, pages[i]) for i in chunk]
        page_infos.append(
            page_writer.write_part(
                index, [pa.Table.from_pylist([_page_row(pid, p) for pid, p in rows], schema=PAGES.schema)]
            )
        )
        mention_infos.append(
            mention_writer.write_part(
                index,
                [
                    pa.Table.from_pylist(
                        [_mention_row(pid, p, kg_ids) for pid, p in rows], schema=MENTIONS.schema
                    )
                ],
            )
        )
    page_writer.finalize(page_infos)
    mention_writer.finalize(mention_infos)


def _page_row(page_id: int, page: dict) -> dict:
    return {
        "page_id": page_id,
        "rev_id": page_id,
        "title": page["title"],
        "qid": None,
        "text": page["text"],
        "links": [],
    }


def _mention_row(page_id: int, page: dict, kg_ids: dict[str, int]) -> dict:
    """The person's name and the text fact's object, both linked, as Wikipedia links "born in [[Paris]]"."""
    word, object_start = page["object"]
    object_qid = object_qids()[word]
    mentions = [
        _mention(page["text"].index(page["name"]), page["name"], page["qid"], kg_ids),
        _mention(object_start, word, object_qid, kg_ids),
    ]
    return {
        "page_id": page_id,
        "sentences": [{"start": a, "end": b} for a, b in page["sentences"]],
        "mentions": mentions,
    }


def _mention(start: int, surface: str, qid: str, kg_ids: dict[str, int]) -> dict:
    return {
        "start": start,
        "end": start + len(surface),
        "surface": surface,
        "target": surface,
        "target_page_id": None,
        "qid": qid,
        "kg_id": kg_ids[qid],
        "rho": 1.0,
        "link_prob": 1.0,
        "source": "anchor",
    }


def save(path: Path, persons: list[dict], cfg: WorldConfig) -> None:
    path.write_text(json.dumps({"config": cfg.__dict__, "people": persons}, indent=1))
