import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage import duck
from storage.schemas import DATASETS, PAGES, REDIRECTS
from storage.shards import (
    MANIFEST,
    IncompleteDatasetError,
    Provenance,
    ShardWriter,
    is_complete,
    is_loss_stat,
    part_paths,
    read_manifest,
    stable_hash,
)


def _prov(config: str = "c1") -> Provenance:
    return Provenance(config, (("dump.xml.bz2", "sha1:abc"),), "code1")


def _redirects(n: int, offset: int = 0) -> pa.Table:
    return pa.table({"title": [f"T{i + offset}" for i in range(n)], "target": ["X"] * n}, REDIRECTS.schema)


def test_every_dataset_has_a_versioned_folder_and_a_schema():
    for name, ds in DATASETS.items():
        assert ds.folder == f"{name}/v{ds.version}"
        assert len(ds.schema) >= 2


def test_parts_are_atomic_and_carry_fingerprint_and_stats(tmp_path):
    w = ShardWriter(tmp_path, REDIRECTS, _prov("c1")).open()
    info = w.write_part(0, [_redirects(3), _redirects(2, 3)], stats={"redirects": 5}, part_fingerprint="in0")
    assert info.rows == 5 and info.stats == {"redirects": 5}
    assert [p.name for p in w.dir.iterdir()] == ["part-00000.parquet"]  # no temp file left
    assert pq.read_table(w.part_path(0)).num_rows == 5
    assert w.done_part(0, "in0").stats == {"redirects": 5}
    assert w.done_part(0, "other-input") is None  # changed input: the part is redone
    assert ShardWriter(tmp_path, REDIRECTS, _prov("c2")).done_part(0, "in0") is None  # changed config/code


def test_failed_write_leaves_no_part(tmp_path):
    w = ShardWriter(tmp_path, REDIRECTS, _prov()).open()

    def batches():
        yield _redirects(2)
        raise RuntimeError("killed mid-part")

    with pytest.raises(RuntimeError):
        w.write_part(0, batches())
    assert list(w.dir.iterdir()) == []


def test_manifest_written_last_marks_complete_and_drops_stale_parts(tmp_path):
    w = ShardWriter(tmp_path, REDIRECTS, _prov()).open()
    parts = [w.write_part(i, [_redirects(i + 1)], stats={"x": 1}, errors=[f"e{i}"]) for i in range(3)]
    assert not is_complete(tmp_path, REDIRECTS)
    with pytest.raises(IncompleteDatasetError, match="run the stage"):
        part_paths(tmp_path, REDIRECTS)
    manifest = w.finalize(parts[:2], extra={"note": "x"})
    assert manifest["rows"] == 3 and manifest["stats"] == {"x": 2} and manifest["errors"] == ["e0", "e1"]
    assert manifest["note"] == "x"
    assert manifest["parts"] == [
        {"name": "part-00000.parquet", "rows": 1, "bytes": parts[0].bytes, "sha256": parts[0].sha256},
        {"name": "part-00001.parquet", "rows": 2, "bytes": parts[1].bytes, "sha256": parts[1].sha256},
    ]
    assert (manifest["config_hash"], manifest["inputs"], manifest["code_version"]) == (
        "c1",
        {"dump.xml.bz2": "sha1:abc"},
        "code1",
    )
    assert not w.part_path(2).exists()
    assert read_manifest(tmp_path, REDIRECTS) == json.loads((w.dir / MANIFEST).read_text())
    assert is_complete(tmp_path, REDIRECTS, _prov().fingerprint) and not is_complete(tmp_path, REDIRECTS, "x")
    w.open()  # a new run of the stage: the dataset is incomplete until it finishes
    assert not is_complete(tmp_path, REDIRECTS)


def test_schema_is_enforced(tmp_path):
    w = ShardWriter(tmp_path, PAGES, _prov()).open()
    bad = pa.table({"page_id": ["not a number"]})
    with pytest.raises((pa.ArrowInvalid, ValueError, KeyError)):
        w.write_part(0, [bad])
    assert list(w.dir.glob("*.parquet")) == []


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_a_stages_own_duckdb_keeps_its_limit_and_prints_no_progress_bar(tmp_path):
    conn = duck.scratch("1GB", tmp_path / "spill")
    settings = "current_setting('enable_progress_bar'), current_setting('temp_directory')"
    progress, spill = conn.execute(f"SELECT {settings}").fetchone()
    assert progress is False and spill == str(tmp_path / "spill")
    assert conn.execute("SELECT current_setting('memory_limit')").fetchone()[0] in ("953.6 MiB", "1.0 GB")


def test_duckdb_views_only_for_complete_datasets(tmp_path):
    w = ShardWriter(tmp_path, REDIRECTS, _prov()).open()
    parts = [w.write_part(0, [_redirects(2)]), w.write_part(1, [_redirects(3, 2)])]
    (w.dir / ".part-00002.parquet.tmp-1").write_bytes(b"half written")
    conn, views = duck.connect(tmp_path)
    assert views == []
    w.finalize(parts)
    columns, rows = duck.query(tmp_path, "SELECT count(*) AS n, min(title) AS first FROM redirects")
    assert columns == ["n", "first"] and rows == [(5, "T0")]


@pytest.mark.parametrize(
    ("name", "lost"),
    [
        ("skipped_namespace", True),
        ("skipped_bad_xml:enwiki-p1.bz2", True),
        ("dropped_low_si", True),
        ("triple_lines_dropped_malformed", True),
        ("mentions_dropped_cut_by_sequence_boundary", True),
        ("mentions_without_kg", False),  # kept with a null kg_id: not lost
        ("links_unresolved", False),
        ("articles", False),
        ("droppedness", False),  # a word of the name, not a substring
    ],
)
def test_loss_stats_follow_one_naming_rule(name, lost):
    assert is_loss_stat(name) is lost
