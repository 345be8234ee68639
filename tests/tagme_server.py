"""A loopback TAGME web API for tests: answers POST /tagme/tag like tagme.d4science.org does.

    entities = {"Obama": (534366, "Barack_Obama", 0.4), "the": None}    # None: a spot left unlinked
    with serve_tagme(entities, token="T") as tagme:   # tagme.url == "http://127.0.0.1:PORT/tagme/tag"
        tagme.fail(503, times=2)                      # answer 503 to the next 2 requests
        tagme.reason, tagme.location = "Bad T", URL   # the reason phrase and Location of failures
        tagme.stall(0.5, times=1)                     # sleep 0.5 s before the next answer, once
        ...
        tagme.requests                                # [TagRequest(text, lang, long_text, authorized)]

Every occurrence of a dictionary surface in the text becomes an annotation with UTF-16 offsets, as the
Java service counts them; a surface mapped to None gives an annotation without "title" (and without
"id"), as the service reports spots it did not link. A wrong gcube-token gets 401. The record keeps
whether the token was right, never the token itself.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

PATH = "/tagme/tag"
Entity = tuple[int, str, float]  # (page id, title, rho)


@dataclass(frozen=True)
class TagRequest:
    text: str
    lang: str | None
    long_text: str | None
    authorized: bool


@dataclass
class _Fault:
    value: float
    times: int

    def take(self) -> bool:
        if self.times <= 0:
            return False
        self.times -= 1
        return True


@dataclass
class TagmeServer:
    """The knobs a test sets and the record it reads; shared by all handler threads."""

    entities: dict[str, Entity | None]
    token: str
    url: str = ""  # the /tag endpoint, set once the server listens
    requests: list[TagRequest] = field(default_factory=list)
    reason: str | None = None  # the reason phrase of a failure's status line (None: the standard one)
    location: str | None = None  # a Location header sent with failures (for a 3xx)
    _faults: list[tuple[str, _Fault]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, status: int = 503, times: int = 1) -> None:
        self._faults.append(("fail", _Fault(status, times)))

    def stall(self, seconds: float, times: int = 1) -> None:
        """Sleep before answering (normally), so that a client with a shorter timeout gives up."""
        self._faults.append(("stall", _Fault(seconds, times)))

    def _record(self, request: TagRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_fault(self) -> tuple[str, float] | None:
        """The first fault not yet spent, used once."""
        with self._lock:
            for kind, fault in self._faults:
                if fault.take():
                    return kind, fault.value
        return None

    def answer(self, text: str, lang: str) -> dict:
        """The JSON the service sends for `text`."""
        annotations = [
            _annotation(text, start, surface, self.entities[surface])
            for start, surface in _find(text, self.entities)
        ]
        return {
            "timestamp": "2026-03-01T10:00:00",
            "time": 3,
            "api": "tag",
            "lang": lang,
            "annotations": annotations,
            "test": "5",
        }


def _find(text: str, surfaces: dict) -> list[tuple[int, str]]:
    """(index, surface) of every occurrence of every surface, by position."""
    found = []
    for surface in surfaces:
        start = text.find(surface)
        while start >= 0:
            found.append((start, surface))
            start = text.find(surface, start + len(surface))
    return sorted(found)


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _annotation(text: str, start: int, surface: str, entity: Entity | None) -> dict:
    begin = _utf16_len(text[:start])
    ann = {"spot": surface, "start": begin, "end": begin + _utf16_len(surface), "link_probability": 0.25}
    if entity is None:
        return {**ann, "rho": 0.0}
    page_id, title, rho = entity
    return {**ann, "id": page_id, "title": title, "rho": rho}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffer the response (flushed after do_POST): headers and body as one write, else the client's
    # delayed ACK holds each answer back some 40 ms.
    wbufsize = 1 << 16

    def log_message(self, *args):
        pass  # keep test output clean, and request lines out of logs

    def do_POST(self):
        state: TagmeServer = self.server.state
        form = self._form()
        text, lang = form.get("text", ""), form.get("lang", "en")
        authorized = form.get("gcube-token") == state.token
        state._record(TagRequest(text, form.get("lang"), form.get("long_text"), authorized))
        if self.path != PATH:
            return self._send(404, {"error": "not found"})
        if not authorized:
            return self._send(401, {"error": "Unauthorized"})
        fault = state._take_fault()
        if fault is not None and fault[0] == "fail":
            return self._send(int(fault[1]), {"error": "Service Unavailable"}, state.reason, state.location)
        if fault is not None:
            time.sleep(fault[1])
        self._send(200, state.answer(text, lang))

    def _form(self) -> dict[str, str]:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
        return {key: values[0] for key, values in parse_qs(body, keep_blank_values=True).items()}

    def _send(
        self, status: int, payload: dict, reason: str | None = None, location: str | None = None
    ) -> None:
        body = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status, reason)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a client that timed out has hung up


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: TagmeServer

    def handle_error(self, request, client_address):
        # a client that timed out and hung up (the stall knob) is expected; anything else is not
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serve_tagme(entities: dict[str, Entity | None], token: str = "test-token") -> Iterator[TagmeServer]:
    """Serve the API on 127.0.0.1 (a free port) in a background thread for the duration of the block."""
    server = _Server(("127.0.0.1", 0), _Handler)
    state = TagmeServer(entities, token)
    state.url = f"http://127.0.0.1:{server.server_address[1]}{PATH}"
    server.state = state
    # A short poll interval: shutdown() waits up to one interval, at the end of every test.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
