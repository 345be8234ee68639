import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from preprocessing.kg import KGConfig, KGFilesError, kg_files, load_kg
from storage.schemas import KG_ENTITIES, KG_RELATIONS, KG_TRIPLES
from storage.shards import MANIFEST, dataset_dir, part_paths, read_manifest

SAMPLE_KG = Path(__file__).resolve().parents[1] / "sample" / "wikidata5m"

# Hand-made Wikidata5M files: the comment on each line says what becomes of it.
ENTITY_LINES = [
    b"Q1\tAlpha\tA\tThe Alpha",  # kg_id 0
    b"Q2\tBeta",  # kg_id 1
    b"",  # empty
    b"Q3",  # one column
    b"X9\tBad id",  # bad id
    b"Q2\tBeta again",  # duplicate: the first Q2 wins
    b"Q4\t\t",  # no alias
    b'Q5\tGamma "the third"\t\tG',  # kg_id 2: the quote is text, the empty alias is skipped
    b"Q6\tDelta",  # kg_id 3
    b"Q8\tbroken \xff\xfe utf-8",  # rejected by the reader: invalid encoding
]
RELATION_LINES = [
    b"P1\tinstance of\tis a",  # rel_id 0
    b"P2\tpart of",  # rel_id 1
    b"P1\tagain",  # duplicate
    b"Q7\tnot a relation",  # bad id
]
TEXT_LINES = [
    b"Q2\tsecond letter\twith a tab",  # the description keeps its tab
    b"Q1\tfirst letter",
    b"Q1\tanother description",  # duplicate
    b"Q99\tnot in the entity file",  # unknown entity
    b"Q5",  # no description
    b"Q6\t",  # no description
    b"",  # empty
    b"bad\tbad id",  # bad id
]
TRIPLE_LINES = [
    b"Q1\tP1\tQ2",  # kept (0, 0, 1)
    b"Q2\tP2\tQ5",  # kept (1, 1, 2)
    b"Q5\tP1\tQ5",  # kept (2, 0, 2): a self-loop
    b"Q1\tP9\tQ2",  # unknown relation
    b"Q1\tP1\tQ99",  # unknown entity
    b"Q3\tP1\tQ1",  # unknown entity: Q3's line was dropped
    b"Q1\tP1",  # malformed
    b"Q1\tP1\tQ2\tQ5",  # malformed
    b"",  # empty
    b"Q6\tP2\tQ1",  # kept (3, 1, 0)
]
FILES = {
    "wikidata5m_entity.txt": ENTITY_LINES,
    "wikidata5m_relation.txt": RELATION_LINES,
    "wikidata5m_text.txt": TEXT_LINES,
    "wikidata5m_all_triplet.txt": TRIPLE_LINES,
}


def write_kg(folder: Path, gz: bool = False, files: dict[str, list[bytes]] = FILES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        data = b"\n".join(lines) + b"\n"
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


def read_rows(run_dir: Path, dataset) -> list[dict]:
    return pa.concat_tables(pq.read_table(p) for p in part_paths(run_dir, dataset)).to_pylist()


@pytest.fixture(params=[False, True], ids=["plain", "gzip"])
def loaded(request, tmp_path):
    kg = write_kg(tmp_path / "kg", gz=request.param)
    manifests = load_kg(KGConfig(path=kg), tmp_path / "run", progress=False)
    return tmp_path / "run", manifests


def test_entities_get_dense_ids_names_descriptions_and_degree(loaded):
    run_dir, _ = loaded
    rows = read_rows(run_dir, KG_ENTITIES)
    assert [(r["kg_id"], r["qid"], r["label"]) for r in rows] == [
        (0, "Q1", "Alpha"),
        (1, "Q2", "Beta"),
        (2, "Q5", 'Gamma "the third"'),
        (3, "Q6", "Delta"),
    ]
    assert rows[0]["aliases"] == ["Alpha", "A", "The Alpha"]
    assert rows[2]["aliases"] == ['Gamma "the third"', "G"]
    assert [r["description"] for r in rows] == ["first letter", "second letter\twith a tab", None, None]
    # Q1: head of t0, tail of t3; Q2: tail of t0, head of t1; Q5: tail of t1, both ends of t2; Q6: t3
    assert [r["degree"] for r in rows] == [2, 2, 3, 1]


def test_relations_and_triples_in_file_order(loaded):
    run_dir, _ = loaded
    relations = read_rows(run_dir, KG_RELATIONS)
    assert relations == [
        {"rel_id": 0, "pid": "P1", "label": "instance of", "aliases": ["instance of", "is a"]},
        {"rel_id": 1, "pid": "P2", "label": "part of", "aliases": ["part of"]},
    ]
    triples = [(r["head"], r["rel"], r["tail"]) for r in read_rows(run_dir, KG_TRIPLES)]
    assert triples == [(0, 0, 1), (1, 1, 2), (2, 0, 2), (3, 1, 0)]


def _drops(stats: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in stats.items() if k.startswith(prefix)}


def test_every_dropped_line_is_counted_by_reason(loaded):
    _, manifests = loaded
    entities = manifests["kg_entities"]["stats"]
    assert (entities["entity_lines"], entities["entities"]) == (len(ENTITY_LINES), 4)
    assert _drops(entities, "entity_lines_dropped_") == {
        "empty": 1,
        "one_column": 1,
        "bad_id": 1,
        "duplicate": 1,
        "no_alias": 1,
        "invalid_encoding": 1,
    }
    assert (entities["description_lines"], entities["descriptions"]) == (len(TEXT_LINES), 2)
    assert _drops(entities, "description_lines_dropped_") == {
        "empty": 1,
        "no_description": 2,
        "bad_id": 1,
        "unknown_entity": 1,
        "duplicate": 1,
    }
    relations = manifests["kg_relations"]["stats"]
    assert (relations["relation_lines"], relations["relations"]) == (4, 2)
    assert _drops(relations, "relation_lines_dropped_") == {
        "empty": 0,
        "one_column": 0,
        "bad_id": 1,
        "duplicate": 1,
        "no_alias": 0,
    }
    assert manifests["kg_triples"]["stats"] == {
        "triple_lines": 10,
        "triples": 4,
        "triple_lines_dropped_empty": 1,
        "triple_lines_dropped_malformed": 2,
        "triple_lines_dropped_unknown_relation": 1,
        "triple_lines_dropped_unknown_entity": 2,
    }
    assert [manifests[d]["rows"] for d in ("kg_entities", "kg_relations", "kg_triples")] == [4, 2, 4]


def test_missing_files_name_the_folder_the_files_and_what_to_download(tmp_path):
    kg = write_kg(tmp_path / "kg", files={"wikidata5m_entity.txt": ENTITY_LINES})
    with pytest.raises(KGFilesError) as err:
        kg_files(KGConfig(path=kg))
    message = str(err.value)
    for needed in (
        str(kg),
        "wikidata5m_relation.txt",
        "wikidata5m_text.txt",
        "wikidata5m_all_triplet.txt",
        "wikidata5m_alias.tar.gz",
        "wikidata5m_text.txt.gz",
        "wikidata5m_all_triplet.txt.gz",
        "KEPLER",
    ):
        assert needed in message
    assert "wikidata5m_entity.txt" not in message  # present, so not listed
    with pytest.raises(KGFilesError, match="wikidata5m_transductive.tar.gz"):
        kg_files(KGConfig(path=kg, triples="transductive_train"))


def test_files_are_found_plain_or_gzipped(tmp_path):
    kg = write_kg(tmp_path / "kg", gz=True)
    (kg / "wikidata5m_entity.txt.gz").unlink()
    write_kg(kg, files={"wikidata5m_entity.txt": ENTITY_LINES})
    files = kg_files(KGConfig(path=kg))
    assert {role: p.name for role, p in files.items()} == {
        "entity": "wikidata5m_entity.txt",
        "relation": "wikidata5m_relation.txt.gz",
        "text": "wikidata5m_text.txt.gz",
        "triples": "wikidata5m_all_triplet.txt.gz",
    }


def test_config_rejects_unknown_triple_files_and_fields():
    with pytest.raises(ValidationError):
        KGConfig(triples="everything")
    with pytest.raises(ValidationError):
        KGConfig(memory="4GB")
    assert all(f.description for f in KGConfig.model_fields.values())


def _mtimes(run_dir: Path) -> dict[str, int]:
    files = [p for d in (KG_ENTITIES, KG_RELATIONS, KG_TRIPLES) for p in dataset_dir(run_dir, d).iterdir()]
    return {str(p): p.stat().st_mtime_ns for p in files}


def test_second_run_returns_at_once_and_a_changed_input_rebuilds(tmp_path):
    kg, run_dir = write_kg(tmp_path / "kg"), tmp_path / "run"
    first = load_kg(KGConfig(path=kg), run_dir, progress=False)
    before = _mtimes(run_dir)
    assert load_kg(KGConfig(path=kg), run_dir, progress=False) == first
    assert _mtimes(run_dir) == before  # no part or manifest rewritten
    write_kg(kg, files={"wikidata5m_all_triplet.txt": TRIPLE_LINES + [b"Q2\tP1\tQ6"]})
    again = load_kg(KGConfig(path=kg), run_dir, progress=False)
    assert again["kg_triples"]["rows"] == 5
    assert again["kg_entities"]["fingerprint"] != first["kg_entities"]["fingerprint"]
    assert not (run_dir / "_staging" / "kg").exists()  # DuckDB's spill folder is cleaned up


def test_parts_hold_rows_per_part_rows_in_order(tmp_path):
    kg = write_kg(tmp_path / "kg")
    manifests = load_kg(KGConfig(path=kg, rows_per_part=3), tmp_path / "run", progress=False)
    assert [p["rows"] for p in manifests["kg_triples"]["parts"]] == [3, 1]
    assert [p["rows"] for p in manifests["kg_entities"]["parts"]] == [3, 1]
    assert [r["kg_id"] for r in read_rows(tmp_path / "run", KG_ENTITIES)] == [0, 1, 2, 3]
    assert [r["head"] for r in read_rows(tmp_path / "run", KG_TRIPLES)] == [0, 1, 2, 3]


def test_no_kg_writes_empty_datasets(tmp_path):
    manifests = load_kg(KGConfig(), tmp_path / "run", progress=False)
    for dataset in (KG_ENTITIES, KG_RELATIONS, KG_TRIPLES):
        assert manifests[dataset.name]["rows"] == 0
        assert (dataset_dir(tmp_path / "run", dataset) / MANIFEST).exists()
        assert pq.read_schema(part_paths(tmp_path / "run", dataset)[0]) == dataset.schema


def test_bundled_sample_kg(tmp_path):
    manifests = load_kg(KGConfig(path=SAMPLE_KG), tmp_path / "run", progress=True)
    assert [manifests[d]["rows"] for d in ("kg_entities", "kg_relations", "kg_triples")] == [282, 33, 800]
    assert manifests["kg_triples"]["stats"]["triple_lines_dropped_unknown_entity"] == 0
    entities = {r["qid"]: r for r in read_rows(tmp_path / "run", KG_ENTITIES)}
    assert entities["Q90"]["label"] == "Paris"
    assert entities["Q142"]["kg_id"] == 0  # the first line of the entity file
    assert sum(r["degree"] for r in entities.values()) == 2 * 800
    assert read_manifest(tmp_path / "run", KG_TRIPLES)["kg_config"]["triples"] == "all"


def test_a_split_can_be_loaded_instead_of_all_triples(tmp_path):
    manifests = load_kg(
        KGConfig(path=SAMPLE_KG, triples="transductive_train"), tmp_path / "run", progress=False
    )
    assert manifests["kg_triples"]["rows"] == 733
