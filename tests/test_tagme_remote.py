"""The remote TAGME linker against a loopback TAGME API: offsets, splitting, retries, token handling."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pydantic
import pytest
import tagme
from tagme_server import serve_tagme

from preprocessing.tagme_remote import (
    RemoteTagme,
    RemoteTagmeAuthError,
    RemoteTagmeConfig,
    RemoteTagmeError,
    resolve_token,
    split_text,
)

TOKEN = "s3cret-gcube-token-0123456789"
ENV = "TRELM_TEST_TAGME_TOKEN"
ENTITIES = {
    "Obama": (534366, "Barack_Obama", 0.41),
    "Paris": (22989, "Paris", 0.35),
    "Hawaii": (13270, "Hawaii", 0.05),
    "𠮷野家": (1180000, "Yoshinoya", 0.3),  # U+20BB7: outside the BMP, two UTF-16 units
    "visited": None,  # a spot the service leaves unlinked
}


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(ENV, TOKEN)
    with serve_tagme(ENTITIES, token=TOKEN) as api:
        yield api


def _client(server, **overrides) -> RemoteTagme:
    fast = {"token_env": ENV, "backoff_s": 0.01, "timeout_s": 2.0, "rate_limit_per_s": 1000.0}
    return RemoteTagme(RemoteTagmeConfig(api_url=server.url, **{**fast, **overrides}))


def _spans(text, annotations) -> list[tuple[str, str]]:
    for a in annotations:
        assert text[a.start : a.end] == a.spot
    return [(a.spot, a.title) for a in annotations]


def test_annotations_offsets_and_titles(server):
    client = _client(server)
    text = "Obama visited Paris. Later Obama flew to Hawaii."
    found = client.annotate(text)
    assert _spans(text, found) == [
        ("Obama", "Barack Obama"),  # the service's underscores become spaces
        ("Paris", "Paris"),
        ("Obama", "Barack Obama"),
        ("Hawaii", "Hawaii"),
    ]
    assert [(a.start, a.wiki_id, a.rho, a.link_prob) for a in found[:2]] == [
        (0, 534366, 0.41, 0.25),
        (14, 22989, 0.35, 0.25),
    ]
    assert client.dropped == {"unlinked": 1}
    (request,) = server.requests
    assert (request.text, request.lang, request.long_text, request.authorized) == (text, "en", "3", True)


def test_same_request_as_the_tagme_package(server):
    response = tagme.annotate("Obama in Paris", gcube_token=TOKEN, api=server.url)
    assert [a.mention for a in response.annotations] == ["Obama", "Paris"]
    _client(server).annotate("Obama in Paris")
    assert server.requests[0] == server.requests[1]


def test_utf16_offsets_map_to_python_indices(server):
    text = "😀 Obama ate at 𠮷野家 🎉🎉 in Paris 𝔘 after Obama"
    found = _client(server).annotate(text)
    assert _spans(text, found) == [
        ("Obama", "Barack Obama"),
        ("𠮷野家", "Yoshinoya"),
        ("Paris", "Paris"),
        ("Obama", "Barack Obama"),
    ]
    assert found[-1].end == len(text)


def test_min_rho_drops_and_counts(server):
    client = _client(server, min_rho=0.1)
    text = "Obama visited Hawaii."
    assert _spans(text, client.annotate(text)) == [("Obama", "Barack Obama")]
    assert client.dropped == {"unlinked": 1, "below_min_rho": 1}


def test_long_text_goes_in_pieces_with_offsets(server):
    paragraphs = [
        "Obama visited Paris. Then Hawaii. " * 2,
        "Paris again, with Obama.\n",
        "𠮷野家 in Paris " * 6,
    ]
    text = "\n\n".join(paragraphs)
    found = _client(server, max_chars=60).annotate(text)
    pieces = [r.text for r in server.requests]
    assert len(pieces) > 3 and all(len(p) <= 60 for p in pieces) and "".join(pieces) == text
    expected = sorted(
        (i, s) for s, entity in ENTITIES.items() if entity for i in range(len(text)) if text.startswith(s, i)
    )
    assert [(a.start, a.spot) for a in found] == expected
    _spans(text, found)


def test_split_text_cuts_at_boundaries():
    text = "First sentence here. Second one follows it.\n\nA new paragraph starts. And ends."
    pieces = split_text(text, 50)
    assert [p for _, p in pieces] == [
        "First sentence here. Second one follows it.\n\n",
        "A new paragraph starts. And ends.",
    ]
    assert pieces[1][0] == text.index("A new")
    # No boundary at all: hard cuts.
    assert split_text("x" * 25, 10) == [(0, "x" * 10), (10, "x" * 10), (20, "x" * 5)]
    assert split_text("", 10) == [(0, "")]


def test_503_is_retried(server):
    server.fail(503, times=2)
    assert _spans("Paris", _client(server).annotate("Paris")) == [("Paris", "Paris")]
    assert len(server.requests) == 3


def test_timeout_is_retried(server):
    server.stall(0.6, times=1)
    start = time.monotonic()
    assert _spans("Paris", _client(server, timeout_s=0.2).annotate("Paris")) == [("Paris", "Paris")]
    assert len(server.requests) == 2 and 0.2 <= time.monotonic() - start < 0.6


def test_retries_exhausted_record_the_error_and_go_on(server):
    server.fail(503, times=3)  # every attempt at the first text
    texts = ["Obama in Paris", "Obama again", "", "Paris"]
    results = list(_client(server, retries=2).annotate_many(texts))
    assert results[0][0] == [] and "3 attempts" in results[0][1] and "503" in results[0][1]
    assert [(_spans(t, anns), error) for t, (anns, error) in zip(texts[1:], results[1:], strict=True)] == [
        ([("Obama", "Barack Obama")], None),
        ([], None),
        ([("Paris", "Paris")], None),
    ]
    assert len(server.requests) == 5  # 3 attempts, then one each: the empty text is not sent


def test_401_not_retried_names_the_variable_not_the_token(server, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(ENV, TOKEN + "-wrong")  # holds TOKEN: a leak of this one shows too
    client = _client(server)
    with pytest.raises(RemoteTagmeAuthError) as failure:
        client.annotate("Paris")
    assert len(server.requests) == 1 and ENV in str(failure.value)
    with pytest.raises(RemoteTagmeAuthError):  # annotate_many stops: every text would fail alike
        list(client.annotate_many(["Paris", "Obama"]))
    assert TOKEN not in str(failure.value) and TOKEN not in caplog.text


def test_token_never_in_logs_messages_or_reprs(server, caplog):
    caplog.set_level(logging.DEBUG)  # urllib3 logs each request line at DEBUG
    client = _client(server, retries=1, timeout_s=0.2)
    client.annotate("Obama")
    server.fail(503, times=2)
    ((_, error),) = client.annotate_many(["Paris"])
    server.stall(0.5, times=2)
    with pytest.raises(RemoteTagmeError) as failure:
        client.annotate("Paris")
    for shown in (
        caplog.text,
        error,
        str(failure.value),
        repr(failure.value.__cause__),
        repr(client),
        repr(vars(client)),
    ):
        assert TOKEN not in shown
    assert all(r.authorized for r in server.requests)  # it was sent, in the body


def test_token_from_env_or_missing(monkeypatch):
    cfg = RemoteTagmeConfig(token_env=ENV)
    monkeypatch.setenv(ENV, f"  {TOKEN}\n")
    assert resolve_token(cfg) == TOKEN
    monkeypatch.delenv(ENV)
    with pytest.raises(RemoteTagmeAuthError, match=f"{ENV}.*token_secret_block"):
        RemoteTagme(cfg)


def test_token_from_prefect_secret_block(monkeypatch):
    from prefect.blocks.system import Secret

    class FakeSecret:
        def get(self):
            return TOKEN

    def load(cls, name):
        if name != "tagme":
            raise ValueError(f"Unable to find block document named {name} for block type secret")
        return FakeSecret()

    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(Secret, "load", classmethod(load))
    assert resolve_token(RemoteTagmeConfig(token_env=ENV, token_secret_block="tagme")) == TOKEN
    with pytest.raises(RemoteTagmeAuthError, match="'other'"):
        resolve_token(RemoteTagmeConfig(token_env=ENV, token_secret_block="other"))


def test_config_rejects_a_token_in_the_url_without_echoing_it():
    with pytest.raises(pydantic.ValidationError) as failure:
        RemoteTagmeConfig(api_url=f"https://tagme.d4science.org/tagme/tag?gcube-token={TOKEN}")
    assert TOKEN not in str(failure.value)


def test_rate_limit_is_shared_across_threads(server):
    rate, n = 100.0, 13
    client = _client(server, rate_limit_per_s=rate)
    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(client.annotate, ["Paris"] * n))
    assert time.monotonic() - start >= (n - 1) / rate
    assert all(len(r) == 1 for r in results) and len(server.requests) == n
