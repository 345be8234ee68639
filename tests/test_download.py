"""`trelm download`: run resolution, verified resumable downloads, etiquette, faults (loopback mirror)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pydantic
import pytest
from mirror_server import MirrorServer, serve_mirror, write_run

from preprocessing.download import (
    DownloadConfig,
    DownloadError,
    DumpNotFoundError,
    download_run,
    resolve_date,
)

WIKI, DATE, NEWER, OLDER = "enwiki", "20260301", "20260320", "20260201"
MS1 = f"{WIKI}-{DATE}-pages-articles-multistream1.xml-p1p41242.bz2"
IDX1 = f"{WIKI}-{DATE}-pages-articles-multistream-index1.txt-p1p41242.bz2"
MS2 = f"{WIKI}-{DATE}-pages-articles-multistream2.xml-p41243p151573.bz2"
IDX2 = f"{WIKI}-{DATE}-pages-articles-multistream-index2.txt-p41243p151573.bz2"
RECOMBINED = f"{WIKI}-{DATE}-pages-articles-multistream.xml.bz2"
RECOMBINED_IDX = f"{WIKI}-{DATE}-pages-articles-multistream-index.txt.bz2"
REDIRECT = f"{WIKI}-{DATE}-redirect.sql.gz"
PAGE_PROPS = f"{WIKI}-{DATE}-page_props.sql.gz"
SPLIT_FILES = {MS1, IDX1, MS2, IDX2, REDIRECT, PAGE_PROPS}


def _blob(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _run_jobs(date: str) -> dict[str, dict[str, bytes]]:
    """The jobs of one run, file names carrying `date`, with random contents of a few KiB."""

    def files(*names_sizes):
        return {name.replace(DATE, date): _blob(name + date, size) for name, size in names_sizes}

    return {
        "articlesmultistreamdump": files((MS1, 60_000), (IDX1, 5_000), (MS2, 40_000), (IDX2, 3_000)),
        "articlesmultistreamdumprecombine": files((RECOMBINED, 100_000), (RECOMBINED_IDX, 8_000)),
        "articlesdump": files((f"{WIKI}-{DATE}-pages-articles1.xml-p1p41242.bz2", 7_000)),
        "redirecttable": files((REDIRECT, 12_000)),
        "pagepropstable": files((PAGE_PROPS, 9_000)),
    }


@pytest.fixture
def mirror_root(tmp_path: Path) -> Path:
    """An older finished run, the finished run DATE and a newer run still in progress."""
    root = tmp_path / "mirror"
    write_run(root, WIKI, OLDER, _run_jobs(OLDER))
    write_run(root, WIKI, DATE, _run_jobs(DATE), {"metacurrentdump": "waiting"})
    in_progress = {"articlesmultistreamdump": "in-progress", "articlesmultistreamdumprecombine": "waiting"}
    write_run(root, WIKI, NEWER, _run_jobs(NEWER), in_progress)
    return root


@pytest.fixture
def mirror(mirror_root: Path):
    with serve_mirror(mirror_root) as server:
        yield server


def _cfg(mirror_url: str, **overrides) -> DownloadConfig:
    fast = {"backoff_s": 0.001, "retries": 3, "timeout_s": 5.0, "chunk_bytes": 4096}
    return DownloadConfig(mirror=mirror_url, wiki=WIKI, **{**fast, **overrides})


def _published(mirror_root: Path, name: str, date: str = DATE) -> bytes:
    return (mirror_root / WIKI / date / name).read_bytes()


def _statuses(report) -> dict[str, str]:
    return {f.name: f.status for f in report.files}


# ----------------------------------------------------------------------------- resolving the run


def test_latest_skips_the_unfinished_run(mirror: MirrorServer, mirror_root: Path):
    assert resolve_date(_cfg(mirror.url)) == DATE
    assert resolve_date(_cfg(mirror_root.as_uri())) == DATE
    # The newer run has redirects and page props done, but not the articles.
    assert any(r.path == f"/{WIKI}/{NEWER}/dumpstatus.json" for r in mirror.requests)


def test_explicit_date_is_checked(mirror: MirrorServer):
    assert resolve_date(_cfg(mirror.url, date=OLDER)) == OLDER
    with pytest.raises(DumpNotFoundError, match=r"articlesmultistreamdump \(in-progress\)"):
        resolve_date(_cfg(mirror.url, date=NEWER))


@pytest.mark.parametrize("kind", ["http", "file"])
def test_unknown_date_lists_the_existing_dates(mirror: MirrorServer, mirror_root: Path, kind: str):
    url = mirror.url if kind == "http" else mirror_root.as_uri()
    with pytest.raises(DumpNotFoundError) as info:
        resolve_date(_cfg(url, date="20250101"))
    assert f"{NEWER}, {DATE}, {OLDER}" in str(info.value)


def test_unknown_wiki(mirror: MirrorServer):
    with pytest.raises(DumpNotFoundError, match="wiki 'nowiki' not found"):
        resolve_date(_cfg(mirror.url).model_copy(update={"wiki": "nowiki"}))


def test_no_finished_run_names_the_jobs_not_done(tmp_path: Path):
    write_run(tmp_path, WIKI, NEWER, _run_jobs(NEWER), {"redirecttable": "failed"})
    with pytest.raises(DumpNotFoundError, match=rf"{NEWER}: redirecttable \(failed\)"):
        resolve_date(_cfg(tmp_path.as_uri()))


def test_config_validation():
    with pytest.raises(pydantic.ValidationError, match="at most 2"):
        DownloadConfig(max_connections=3)
    assert DownloadConfig(mirror="https://mirror.example.org/dumps/", max_connections=4).mirror == (
        "https://mirror.example.org/dumps"
    )
    for bad in ({"date": "2026-03-01"}, {"mirror": "ftp://x"}, {"wiki": "../etc"}):
        with pytest.raises(pydantic.ValidationError):
            DownloadConfig(**bad)
    assert DownloadConfig().user_agent.startswith("trelm-pipeline/")


# ----------------------------------------------------------------------------- downloading


def test_full_download(mirror: MirrorServer, mirror_root: Path, tmp_path: Path):
    report = download_run(_cfg(mirror.url), tmp_path / "dumps", progress=True)
    run = tmp_path / "dumps" / WIKI / DATE
    assert report.date == DATE and report.directory == run
    assert _statuses(report) == dict.fromkeys(SPLIT_FILES, "fetched")
    assert sorted(p.name for p in run.iterdir()) == sorted(SPLIT_FILES | {"_download.json"})
    for name in SPLIT_FILES:
        assert (run / name).read_bytes() == _published(mirror_root, name)
    assert report.bytes_transferred == sum(len(_published(mirror_root, n)) for n in SPLIT_FILES)
    manifest = json.loads((run / "_download.json").read_text())
    assert manifest["date"] == DATE
    by_name = {f["name"]: f for f in manifest["files"]}
    assert by_name[REDIRECT]["sha1"] == hashlib.sha1(_published(mirror_root, REDIRECT)).hexdigest()
    assert by_name[REDIRECT]["size"] == 12_000


def test_recombined_layout(mirror: MirrorServer, tmp_path: Path):
    report = download_run(_cfg(mirror.url, layout="recombined"), tmp_path, progress=False)
    assert set(_statuses(report)) == {RECOMBINED, RECOMBINED_IDX, REDIRECT, PAGE_PROPS}


def test_rerun_skips_verified_files(mirror: MirrorServer, tmp_path: Path):
    download_run(_cfg(mirror.url), tmp_path, progress=False)
    seen = len(mirror.requests)
    report = download_run(_cfg(mirror.url), tmp_path, progress=False)
    assert _statuses(report) == dict.fromkeys(SPLIT_FILES, "skipped")
    assert report.bytes_transferred == 0
    assert not [r for r in mirror.requests[seen:] if r.path.endswith((".bz2", ".gz"))]


def test_resume_after_a_cut(mirror: MirrorServer, mirror_root: Path, tmp_path: Path):
    mirror.cut(MS1, after=20_000)
    report = download_run(_cfg(mirror.url), tmp_path, progress=False)
    assert [r.range for r in mirror.file_requests(MS1)] == [None, "bytes=20000-"]
    assert (tmp_path / WIKI / DATE / MS1).read_bytes() == _published(mirror_root, MS1)
    assert _statuses(report)[MS1] == "resumed"
    assert next(f for f in report.files if f.name == MS1).transferred == 60_000


def test_resume_a_part_left_by_an_interrupted_run(mirror: MirrorServer, mirror_root: Path, tmp_path: Path):
    run = tmp_path / WIKI / DATE
    run.mkdir(parents=True)
    (run / f"{MS2}.part").write_bytes(_published(mirror_root, MS2)[:10_000])
    report = download_run(_cfg(mirror.url), tmp_path, progress=False)
    assert [r.range for r in mirror.file_requests(MS2)] == ["bytes=10000-"]
    assert (run / MS2).read_bytes() == _published(mirror_root, MS2)
    assert not (run / f"{MS2}.part").exists()
    assert next(f for f in report.files if f.name == MS2).model_dump() == {
        "name": MS2,
        "bytes": 40_000,
        "status": "resumed",
        "transferred": 30_000,
    }


def test_a_wrong_part_is_detected_and_fetched_again(mirror: MirrorServer, mirror_root: Path, tmp_path: Path):
    run = tmp_path / WIKI / DATE
    run.mkdir(parents=True)
    (run / f"{MS2}.part").write_bytes(b"x" * 10_000)
    report = download_run(_cfg(mirror.url), tmp_path, progress=False)
    assert [r.range for r in mirror.file_requests(MS2)] == ["bytes=10000-", None]
    assert (run / MS2).read_bytes() == _published(mirror_root, MS2)
    assert _statuses(report)[MS2] == "fetched"


def test_a_corrupted_transfer_is_fetched_again(mirror: MirrorServer, mirror_root: Path, tmp_path: Path):
    mirror.corrupt(REDIRECT)
    report = download_run(_cfg(mirror.url), tmp_path, progress=False)
    assert [r.range for r in mirror.file_requests(REDIRECT)] == [None, None]
    assert (tmp_path / WIKI / DATE / REDIRECT).read_bytes() == _published(mirror_root, REDIRECT)
    assert _statuses(report)[REDIRECT] == "fetched"


def test_a_corrupted_file_on_disk_is_fetched_again(mirror: MirrorServer, mirror_root: Path, tmp_path: Path):
    download_run(_cfg(mirror.url), tmp_path, progress=False)
    target = tmp_path / WIKI / DATE / PAGE_PROPS
    data = bytearray(target.read_bytes())
    data[100] ^= 1  # same size, different hashes
    target.write_bytes(bytes(data))
    report = download_run(_cfg(mirror.url), tmp_path, progress=False)
    assert _statuses(report) == {**dict.fromkeys(SPLIT_FILES, "skipped"), PAGE_PROPS: "fetched"}
    assert target.read_bytes() == _published(mirror_root, PAGE_PROPS)


def test_a_server_that_ignores_range(mirror: MirrorServer, mirror_root: Path, tmp_path: Path):
    mirror.ignore_range = True
    mirror.cut(MS1, after=20_000)
    report = download_run(_cfg(mirror.url), tmp_path, progress=False)
    assert [r.range for r in mirror.file_requests(MS1)] == [None, "bytes=20000-"]
    assert (tmp_path / WIKI / DATE / MS1).read_bytes() == _published(mirror_root, MS1)
    assert _statuses(report)[MS1] == "fetched"  # the 200 answer started it over


def test_user_agent_is_sent_on_every_request(mirror: MirrorServer, tmp_path: Path):
    agent = "trelm-test/1.0 (https://example.org/trelm; tests)"
    download_run(_cfg(mirror.url, user_agent=agent), tmp_path, progress=False)
    assert mirror.requests and {r.user_agent for r in mirror.requests} == {agent}


def test_at_most_two_connections(mirror: MirrorServer, tmp_path: Path):
    mirror.delay_s = 0.002  # each file takes long enough for transfers to overlap
    download_run(_cfg(mirror.url, max_connections=2), tmp_path, progress=False)
    assert mirror.max_active == 2


def test_file_mirror(mirror_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run = tmp_path / "dumps" / WIKI / DATE
    run.mkdir(parents=True)
    (run / f"{MS1}.part").write_bytes(_published(mirror_root, MS1)[:1_000])
    monkeypatch.chdir(tmp_path)  # file://./mirror is a path relative to the working directory
    report = download_run(_cfg("file://./mirror"), tmp_path / "dumps", progress=False)
    assert report.date == DATE
    assert _statuses(report) == {**dict.fromkeys(SPLIT_FILES, "fetched"), MS1: "resumed"}
    for name in SPLIT_FILES:
        assert (run / name).read_bytes() == _published(mirror_root, name)
    assert (run / "_download.json").exists()


# ----------------------------------------------------------------------------- errors


def test_retries_exhausted(mirror: MirrorServer, tmp_path: Path):
    mirror.fail(IDX1, status=503, times=None)
    with pytest.raises(DownloadError, match=rf"{mirror.url}/{WIKI}/{DATE}/{IDX1}.*HTTP 503"):
        download_run(_cfg(mirror.url, retries=2), tmp_path, progress=False)
    assert len(mirror.file_requests(IDX1)) == 3
    assert not (tmp_path / WIKI / DATE / "_download.json").exists()


def test_cuts_every_time_report_the_bytes_received(mirror: MirrorServer, tmp_path: Path):
    mirror.cut(MS1, after=1_000, times=None)
    with pytest.raises(DownloadError, match="3000 bytes received") as info:
        download_run(_cfg(mirror.url, retries=2), tmp_path, progress=False)
    assert info.value.received == 3_000
    # Each retry resumed; the part stays for the next run to continue.
    assert [r.range for r in mirror.file_requests(MS1)] == [None, "bytes=1000-", "bytes=2000-"]
    assert (tmp_path / WIKI / DATE / f"{MS1}.part").stat().st_size == 3_000


def test_a_missing_file_is_fatal_at_once(mirror: MirrorServer, mirror_root: Path, tmp_path: Path):
    (mirror_root / WIKI / DATE / IDX2).unlink()
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_run(_cfg(mirror.url), tmp_path, progress=False)
    assert len(mirror.file_requests(IDX2)) == 1
