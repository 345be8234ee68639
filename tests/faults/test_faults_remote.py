"""Case 5 of "What happens when things go wrong": a remote-linker outage is a failure, not a result,
and the token stays secret (loopback TAGME API of tests/tagme_server.py)."""

from __future__ import annotations

import pytest
from dumps import page, write_multistream
from tagme_server import serve_tagme

from flows.config import load_config
from preprocessing.ingest import IngestConfig, ingest, inputs_for_file
from preprocessing.link import LinkConfig, RemoteLinkingError, link
from preprocessing.tagme_remote import RemoteTagme, RemoteTagmeAuthError, RemoteTagmeConfig
from storage.errors import ConfigError
from storage.schemas import MENTIONS
from storage.shards import is_complete, iter_batches, part_paths, read_part_info

TOKEN = "s3cret-gcube-token"
PAGES_XML = [page(i, f"Jaguar {i}", f"The jaguar number {i} lives in Brazil.") for i in range(1, 7)]
ENTITIES = {"jaguar": (16599, "Jaguar", 0.5)}


@pytest.fixture
def run_dir(tmp_path):
    dump = write_multistream(tmp_path / "t-pages-articles-multistream.xml.bz2", PAGES_XML, per_stream=3)[0]
    run = tmp_path / "run"
    ingest(IngestConfig(workers=1, pages_per_part=3), inputs_for_file(dump), run, progress=False)
    return run


def _remote(url: str, **kw) -> LinkConfig:
    remote = RemoteTagmeConfig(
        api_url=url, token_env="TRELM_FAULTS_TOKEN", backoff_s=0, retries=0, rate_limit_per_s=1000, **kw
    )
    return LinkConfig(workers=1, linker="remote", remote=remote)


def test_outage_fails_the_stage_and_the_next_run_asks_again(run_dir, monkeypatch):
    monkeypatch.setenv("TRELM_FAULTS_TOKEN", TOKEN)
    with serve_tagme(ENTITIES, token=TOKEN) as api:
        api.fail(503, times=1000)
        api.reason = f"down, token={TOKEN}"  # a reason phrase that echoes the token
        with pytest.raises(RemoteLinkingError, match="failed on 6 of 6 pages") as err:
            link(_remote(api.url), run_dir, progress=False)
        assert TOKEN not in str(err.value) and "***" in str(err.value)
        assert not is_complete(run_dir, MENTIONS)
        for part in run_dir.glob("mentions/v*/part-*.parquet"):  # written, never trusted, masked
            assert TOKEN not in str(read_part_info(part).errors)
        api._faults.clear()
        sent = len(api.requests)
        manifest = link(_remote(api.url), run_dir, progress=False)
        assert len(api.requests) - sent == 6 and manifest["stats"].get("pages_remote_error", 0) == 0
    linked = [
        m
        for p in part_paths(run_dir, MENTIONS)
        for b in iter_batches(p)
        for r in b.to_pylist()
        for m in r["mentions"]
    ]
    assert sum(m["source"] == "tagme-api" for m in linked) == 6


def test_allowed_failures_complete_and_are_counted(run_dir, monkeypatch):
    monkeypatch.setenv("TRELM_FAULTS_TOKEN", TOKEN)
    with serve_tagme(ENTITIES, token=TOKEN) as api:
        api.fail(503, times=2)
        cfg = _remote(api.url).model_copy(update={"max_error_fraction": 0.5})
        manifest = link(cfg, run_dir, progress=False)
    assert manifest["stats"]["pages_remote_error"] == 2 and is_complete(run_dir, MENTIONS)


def test_a_redirect_is_not_followed_with_the_token(monkeypatch):
    monkeypatch.setenv("TRELM_FAULTS_TOKEN", TOKEN)
    with serve_tagme(ENTITIES, token=TOKEN) as target, serve_tagme(ENTITIES, token=TOKEN) as api:
        api.fail(307, times=10)
        api.location = target.url
        client = RemoteTagme(_remote(api.url).remote)
        with pytest.raises(RemoteTagmeAuthError, match="redirects \\(HTTP 307\\)"):
            client.annotate("the jaguar")
    assert target.requests == []


@pytest.mark.parametrize("url", ["http://tagme.example.org/tagme/tag", "http://10.0.0.1/tag"])
def test_plain_http_is_refused_for_a_token(url):
    with pytest.raises(ConfigError, match="the token would travel unencrypted"):
        load_config("sample", [f"link.remote.api_url={url}"])
    assert RemoteTagmeConfig(api_url="http://127.0.0.1:8080/tagme/tag")
