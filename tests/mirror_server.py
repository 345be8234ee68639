"""A loopback dump mirror for tests: serves a folder over HTTP with Range support and fault injection.

    with serve_mirror(root) as mirror:           # mirror.url == "http://127.0.0.1:PORT"
        mirror.cut("file.bz2", after=1000)       # close the connection after 1000 body bytes, once
        mirror.corrupt("file.bz2")               # flip a byte of the next response, once
        mirror.fail("file.bz2", status=503)      # answer 503, once (times=None: always)
        mirror.ignore_range = True               # answer 200 with the whole file to Range requests
        ...
        mirror.requests                          # [Request(path, range, user_agent)] for assertions
        mirror.max_active                        # most file bodies in flight at once

`write_run` builds a run folder (`{wiki}/{date}/` with dumpstatus.json and sums files) to serve.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_SEND_CHUNK = 4096


@dataclass(frozen=True)
class Request:
    path: str
    range: str | None
    user_agent: str | None


@dataclass
class _Fault:
    value: int
    times: int | None  # None: every time

    def take(self) -> bool:
        """Use the fault once; False when it is spent."""
        if self.times == 0:
            return False
        if self.times is not None:
            self.times -= 1
        return True


@dataclass
class MirrorServer:
    """The knobs a test sets and the record it reads; shared by all handler threads."""

    url: str = ""  # the mirror base URL, set once the server listens
    ignore_range: bool = False
    delay_s: float = 0.0  # sleep per sent chunk, so concurrent transfers overlap measurably
    requests: list[Request] = field(default_factory=list)
    max_active: int = 0
    _active: int = 0
    _cuts: dict[str, _Fault] = field(default_factory=dict)
    _corrupt: dict[str, _Fault] = field(default_factory=dict)
    _fail: dict[str, _Fault] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cut(self, name: str, after: int, times: int | None = 1) -> None:
        self._cuts[name] = _Fault(after, times)

    def corrupt(self, name: str, times: int | None = 1) -> None:
        self._corrupt[name] = _Fault(0, times)

    def fail(self, name: str, status: int = 503, times: int | None = 1) -> None:
        self._fail[name] = _Fault(status, times)

    def file_requests(self, name: str) -> list[Request]:
        return [r for r in self.requests if r.path.rsplit("/", 1)[-1] == name]

    def _take(self, faults: dict[str, _Fault], name: str) -> int | None:
        with self._lock:
            fault = faults.get(name)
            return fault.value if fault is not None and fault.take() else None

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    @contextmanager
    def _transfer(self) -> Iterator[None]:
        with self._lock:
            self._active += 1
            self.max_active = max(self.max_active, self._active)
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1


class _Handler(SimpleHTTPRequestHandler):
    # HTTP/1.1 so that clients keep connections alive as they would against the real mirror.
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass  # keep test output clean

    def do_GET(self):
        state: MirrorServer = self.server.state
        state._record(Request(self.path, self.headers.get("Range"), self.headers.get("User-Agent")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return super().do_GET()  # directory listings (hrefs like 20260301/) and 404s
        with state._transfer():
            self._send_file(state, path)

    def _send_file(self, state: MirrorServer, path: Path) -> None:
        name = path.name
        if (status := state._take(state._fail, name)) is not None:
            return self.send_error(status)
        data = path.read_bytes()
        if state._take(state._corrupt, name) is not None and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = self._range_start(state, len(data))
        if start is None:
            return
        self._send_headers(start, len(data), ranged=start > 0, accept_ranges=not state.ignore_range)
        self._send_body(state, data[start:], state._take(state._cuts, name))

    def _range_start(self, state: MirrorServer, size: int) -> int | None:
        """The first byte to send; None after answering 416."""
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if state.ignore_range or not match:
            return 0
        start = int(match.group(1))
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return start

    def _send_headers(self, start: int, size: int, ranged: bool, accept_ranges: bool) -> None:
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        if accept_ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def _send_body(self, state: MirrorServer, body: bytes, cut_after: int | None) -> None:
        limit = len(body) if cut_after is None else min(cut_after, len(body))
        for pos in range(0, limit, _SEND_CHUNK):
            self.wfile.write(body[pos : min(pos + _SEND_CHUNK, limit)])
            if state.delay_s:
                time.sleep(state.delay_s)
        if cut_after is not None:
            # Content-Length promised more: closing now is a connection cut mid-file for the client.
            self.wfile.flush()
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: MirrorServer


@contextmanager
def serve_mirror(root: Path) -> Iterator[MirrorServer]:
    """Serve `root` on 127.0.0.1 (a free port) in a background thread for the duration of the block."""
    server = _Server(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    mirror = MirrorServer()
    mirror.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.state = mirror
    # A short poll interval: shutdown() waits up to one interval, at the end of every test.
    serve = partial(server.serve_forever, poll_interval=0.02)
    thread = threading.Thread(target=serve, name="mirror-server", daemon=True)
    thread.start()
    try:
        yield mirror
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# ----------------------------------------------------------------------------- building a mirror tree


def file_entry(wiki: str, date: str, name: str, data: bytes) -> dict:
    """A dumpstatus.json entry for a finished file."""
    return {
        "size": len(data),
        "url": f"/{wiki}/{date}/{name}",
        "md5": hashlib.md5(data).hexdigest(),
        "sha1": hashlib.sha1(data).hexdigest(),
    }


def write_run(
    root: Path, wiki: str, date: str, jobs: dict[str, dict[str, bytes]], states: dict[str, str] | None = None
) -> Path:
    """Write `{root}/{wiki}/{date}/` like the real mirror: the files of every job, dumpstatus.json and the
    md5/sha1 sums files. `states` overrides a job's status (default "done"); files of a job that is not
    done are listed with their size only and not written, as on the mirror while a job runs."""
    states = states or {}
    run = root / wiki / date
    run.mkdir(parents=True, exist_ok=True)
    status: dict = {"jobs": {}, "version": "0.8"}
    for job, files in jobs.items():
        state = states.get(job, "done")
        entries = {}
        for name, data in files.items():
            entries[name] = file_entry(wiki, date, name, data) if state == "done" else {"size": len(data)}
            if state == "done":
                (run / name).write_bytes(data)
        status["jobs"][job] = {"status": state, "updated": f"{date[:4]}-{date[4:6]}-{date[6:]} 12:00:00"}
        status["jobs"][job]["files"] = entries
    (run / "dumpstatus.json").write_text(json.dumps(status, indent=1))
    _write_sums(run, wiki, date, status)
    return run


def _write_sums(run: Path, wiki: str, date: str, status: dict) -> None:
    for algo in ("md5", "sha1"):
        lines = [
            f"{meta[algo]}  {name}\n"
            for job in status["jobs"].values()
            for name, meta in job["files"].items()
            if algo in meta
        ]
        (run / f"{wiki}-{date}-{algo}sums.txt").write_text("".join(lines))
