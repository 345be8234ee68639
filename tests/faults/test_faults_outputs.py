"""Cases 2 and 4 of "What happens when things go wrong": damaged outputs are noticed and rebuilt, and
one writer at a time holds a run folder, whatever the entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from dumps import page, write_multistream
from typer.testing import CliRunner

from flows.cli import app
from flows.ops import HOLDER_NAME, LOCK_NAME
from preprocessing.ingest import IngestConfig, ingest, inputs_for_file
from preprocessing.kg import KGConfig, load_kg
from preprocessing.link import LinkConfig, link
from preprocessing.select import SelectConfig, select
from storage.schemas import MENTIONS, PAGES
from storage.shards import MANIFEST, DamagedDatasetError, damaged_parts, dataset_dir

NAME = "testwiki-20260301-pages-articles-multistream1.xml-p1p99.bz2"
PAGES_XML = [page(i, f"Page {i}", f"[[Page {i % 6 + 1}]] is linked from page {i}.") for i in range(1, 13)]


@pytest.fixture
def dump(tmp_path):
    return write_multistream(tmp_path / NAME, PAGES_XML, per_stream=3)[0]


def _ingest(dump, run_dir):
    return ingest(IngestConfig(workers=1, pages_per_part=4), inputs_for_file(dump), run_dir, progress=False)


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "deleted":
        path.unlink()
    elif how == "cut":
        path.write_bytes(data[: len(data) // 2])
    else:  # same size, bytes changed inside: only the checksum tells
        at = 8  # inside the first column chunk, far from the footer
        path.write_bytes(data[:at] + bytes(b ^ 0xFF for b in data[at : at + 8]) + data[at + 8 :])


def test_manifest_records_size_and_checksum(dump, tmp_path):
    manifest = _ingest(dump, tmp_path / "run")
    entry = manifest["parts"][0]
    path = dataset_dir(tmp_path / "run", PAGES) / entry["name"]
    assert entry["bytes"] == path.stat().st_size and len(entry["sha256"]) == 64


@pytest.mark.parametrize("how", ["deleted", "cut"])
def test_rerun_of_a_stage_rebuilds_a_damaged_part_and_says_so(dump, tmp_path, how):
    run_dir = tmp_path / "run"
    before = _ingest(dump, run_dir)
    part = dataset_dir(run_dir, PAGES) / "part-00001.parquet"
    _damage(part, how)
    after = _ingest(dump, run_dir)
    assert damaged_parts(run_dir, PAGES, full=True) == []
    assert after["rows"] == before["rows"] and after["parts"] == before["parts"]
    assert len(after["rebuilt"]) == 1 and after["rebuilt"][0].startswith("part-00001.parquet")


def test_link_over_a_damaged_pages_part_names_it(dump, tmp_path):
    run_dir = tmp_path / "run"
    _ingest(dump, run_dir)
    _damage(dataset_dir(run_dir, PAGES) / "part-00001.parquet", "cut")
    with pytest.raises(DamagedDatasetError, match="part-00001.parquet: .*bytes, the manifest says") as err:
        link(LinkConfig(workers=1), run_dir, progress=False)
    assert "trelm ingest" in err.value.fix


def test_select_over_a_damaged_mentions_part_names_it(dump, tmp_path):
    run_dir = tmp_path / "run"
    _ingest(dump, run_dir)
    load_kg(KGConfig(), run_dir, progress=False)  # no KG configured: the empty datasets select reads
    link(LinkConfig(workers=1), run_dir, progress=False)
    _damage(dataset_dir(run_dir, MENTIONS) / "part-00000.parquet", "cut")
    with pytest.raises(DamagedDatasetError, match="mentions.*part-00000.parquet") as err:
        select(SelectConfig(), run_dir, progress=False)
    assert "trelm link" in err.value.fix


def test_verify_finds_every_damage_and_takes_the_parts_back(dump, tmp_path):
    data_root = tmp_path / "data"
    run_dir = data_root / "runs" / "testwiki-20260301"
    _ingest(dump, run_dir)
    (run_dir / "config.yaml").write_text("{}\n")
    pages_dir = dataset_dir(run_dir, PAGES)
    _damage(pages_dir / "part-00000.parquet", "flipped")
    runner = CliRunner()
    cheap = runner.invoke(app, ["verify", "--data-root", str(data_root)])
    assert cheap.exit_code == 0 and "pages: ok" in cheap.output, cheap.output  # size, footer match
    full = runner.invoke(app, ["verify", "--full", "--data-root", str(data_root)])
    assert full.exit_code == 2, full.output
    assert (
        "pages: damaged: part-00000.parquet: sha256 differs" in full.output and "trelm ingest" in full.output
    )
    assert not (pages_dir / MANIFEST).exists() and not (pages_dir / "part-00000.parquet").exists()
    rebuilt = _ingest(dump, run_dir)
    assert rebuilt["rebuilt"] == ["part-00000.parquet: sha256 differs from the manifest's"]
    assert runner.invoke(app, ["verify", "--full", "--data-root", str(data_root)]).exit_code == 0


def _hold_lock(run_dir):
    """Another process holding the run folder as `trelm run` does."""
    script = (
        "import json, sys, time; from filelock import FileLock; from pathlib import Path; "
        "d = Path(sys.argv[1]); "
        f"lock = FileLock(d / {LOCK_NAME!r}); lock.acquire(); "
        f"(d / {HOLDER_NAME!r}).write_text(json.dumps({{'host': 'h', 'pid': 4242}})); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(run_dir)])
    deadline = time.monotonic() + 20
    while not (run_dir / HOLDER_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


def test_stage_command_fails_naming_the_holder_while_another_run_holds_the_folder(dump, tmp_path):
    data_root = tmp_path / "data"
    run_dir = data_root / "runs" / "testwiki-20260301"
    run_dir.mkdir(parents=True)
    holder = _hold_lock(run_dir)
    try:
        result = CliRunner().invoke(
            app,
            [
                "ingest",
                "--dump",
                str(dump),
                "--data-root",
                str(data_root),
                "--set",
                "orchestration.lock_timeout_s=0",
            ],
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 75, result.output
    assert "in use by another run (host h, pid 4242)" in result.output
    assert not dataset_dir(run_dir, PAGES).exists()


def test_nested_holders_in_one_process_share_the_lock(tmp_path):
    from flows.ops import lock_holder, run_lock

    with run_lock(tmp_path, 0, lock_holder()), run_lock(tmp_path, 0, lock_holder()):
        assert json.loads((tmp_path / HOLDER_NAME).read_text())["pid"]
    assert not (tmp_path / HOLDER_NAME).exists()


@pytest.mark.timeout(300)
def test_a_forced_run_over_a_deleted_part_rebuilds_it(tmp_path):
    """`orchestration.force=true` used to end in a FileNotFoundError traceback on a deleted part."""
    import sys
    from pathlib import Path

    data_root = tmp_path / "data"
    command = [str(Path(sys.executable).with_name("trelm")), "run", "--data-root", str(data_root)]
    command += ["--config", "sample", "--set", "orchestration.run_until=ingest", "--set", "progress=false"]
    assert subprocess.run(command, capture_output=True).returncode == 0
    (run_dir,) = (data_root / "runs").iterdir()
    _damage(dataset_dir(run_dir, PAGES) / "part-00001.parquet", "deleted")
    forced = subprocess.run([*command, "--set", "orchestration.force=true"], capture_output=True, text=True)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert damaged_parts(run_dir, PAGES, full=True) == []
