"""Case 6, the KG: a damaged or empty Wikidata5M file fails the load with the file's name, and the KG
loaded before it stays complete (it used to lose its manifests first, or become a KG of 0 entities)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from preprocessing.kg import KGConfig, load_kg
from storage.errors import InputError
from storage.schemas import KG_ENTITIES, KG_RELATIONS, KG_TRIPLES
from storage.shards import is_complete

FILES = {
    "wikidata5m_entity.txt.gz": "Q1\tuniverse\nQ2\tEarth\tthe world\n",
    "wikidata5m_relation.txt.gz": "P31\tinstance of\n",
    "wikidata5m_text.txt.gz": "Q1\tAll of space and time.\n",
    "wikidata5m_all_triplet.txt.gz": "Q2\tP31\tQ1\n",
}


def _kg(folder: Path, **replace: bytes) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in FILES.items():
        path = folder / name
        if name in replace:
            path.write_bytes(replace[name])
        else:
            with gzip.open(path, "wt", encoding="utf-8") as f:
                f.write(text)
    return folder


@pytest.fixture
def loaded(tmp_path) -> Path:
    run_dir = tmp_path / "run"
    load_kg(KGConfig(path=_kg(tmp_path / "kg")), run_dir, progress=False)
    return run_dir


@pytest.mark.parametrize(
    ("damaged", "message"),
    [
        (gzip.compress(b"")[:12], "wikidata5m_entity.txt.gz"),  # a cut .gz
        (gzip.compress(b""), "no valid entity line"),  # empty
        (gzip.compress(bytes(range(256)) * 8), "no valid entity line"),  # binary
    ],
)
def test_a_damaged_entity_file_fails_and_keeps_the_previous_kg(loaded, tmp_path, damaged, message):
    bad = _kg(tmp_path / "kg", **{"wikidata5m_entity.txt.gz": damaged})
    with pytest.raises(InputError, match=message) as raised:
        load_kg(KGConfig(path=bad), loaded, progress=False)
    assert raised.value.fix
    assert all(is_complete(loaded, d) for d in (KG_ENTITIES, KG_RELATIONS, KG_TRIPLES))
