"""Download one Wikipedia dump run from a mirror, resumably and verified.

The files to fetch are the ones that `dumpstatus.json` of the run lists for the jobs we need; each lands
in `{dumps_root}/{wiki}/{date}/` under its published name, is written as `NAME.part` while in flight,
resumed with an HTTP Range request after a cut, and is renamed to `NAME` only once its size, md5 and
sha1 match the published ones. `_download.json`, written last, marks the run as downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse
from urllib.request import url2pathname

import pydantic
import requests
import urllib3
from pydantic import Field
from tqdm import tqdm

from preprocessing.config import DownloadConfig
from storage import layout
from storage.errors import InputError, RetryableError, TrelmError
from storage.shards import atomic_write_text

PART_SUFFIX = ".part"

JOBS_BY_LAYOUT = {
    "split": ("articlesmultistreamdump", "redirecttable", "pagepropstable"),
    "recombined": ("articlesmultistreamdumprecombine", "redirecttable", "pagepropstable"),
}
_DATE_HREF = re.compile(r'href="(?:[^"]*/)?(\d{8})/?"')








class DumpNotFoundError(InputError, ValueError):
    """The wiki, the run date or a finished run is not on the mirror."""

    fix = "check --wiki and --date against the mirror's listing, or try another --mirror"


class DownloadError(TrelmError, RuntimeError):
    """A file could not be downloaded: the mirror refuses it (a 4xx status, a file it does not have)."""

    fix = "try another --mirror, or check that this one serves the run completely"

    def __init__(self, url: str, received: int, cause: object):
        super().__init__(f"download of {url} failed after {received} bytes received: {cause}")
        self.url, self.received, self.cause = url, received, cause


class DownloadRetriesSpent(RetryableError, DownloadError):
    """Every attempt at a file failed on a network error or a bad transfer: worth another go later."""

    fix = "run it again later: the download resumes where it stopped"


class FileResult(pydantic.BaseModel):
    name: str = Field(description="File name as published.")
    bytes: int = Field(description="File size.")
    status: Literal["fetched", "skipped", "resumed"] = Field(
        description="skipped: already present and verified; resumed: part of it came from an earlier attempt."
    )
    transferred: int = Field(0, description="Bytes received over the wire for this file, retries included.")


class DownloadReport(pydantic.BaseModel):
    wiki: str
    date: str = Field(description="The resolved run date.")
    directory: Path = Field(description="Where the files are: {dumps_root}/{wiki}/{date}.")
    files: list[FileResult]
    bytes_transferred: int
    seconds: float


@dataclass(frozen=True)
class _FileSpec:
    name: str
    size: int
    md5: str | None
    sha1: str | None


class _Transient(RetryableError):
    """Retry, keeping what the part file holds (a cut, a 5xx)."""


class _BadPart(_Transient):
    """Retry from scratch: what the part file holds is wrong."""


class _Cancelled(TrelmError):
    """Another file failed or the user interrupted: stop this transfer (the other failure is reported)."""


_RETRYABLE = (
    _Transient,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,  # raw streaming raises urllib3's own errors (IncompleteRead, timeouts)
    ConnectionError,
    TimeoutError,
)


# ----------------------------------------------------------------------------- mirror access


def _is_file_mirror(cfg: DownloadConfig) -> bool:
    return cfg.mirror.startswith("file://")


def _local_path(url: str) -> Path:
    # file://./sample/mirror is accepted as a relative path (netloc "."), handy on the command line.
    parsed = urlparse(url)
    netloc = "" if parsed.netloc in ("", "localhost") else parsed.netloc
    return Path(netloc + url2pathname(parsed.path))


def _new_session(cfg: DownloadConfig) -> requests.Session:
    session = requests.Session()
    # identity: a server that gzips on the fly would change the bytes we hash against dumpstatus.json.
    session.headers.update({"User-Agent": cfg.user_agent, "Accept-Encoding": "identity"})
    return session


def _with_retries(
    cfg: DownloadConfig,
    url: str,
    attempt: Callable[[], object],
    received: Callable[[], int] = lambda: 0,
    stop: threading.Event | None = None,
):
    """attempt() until it succeeds, backing off exponentially; DownloadRetriesSpent once they are spent."""
    stop = stop or threading.Event()
    last: BaseException | None = None
    for n in range(cfg.retries + 1):
        # An interruptible sleep: a failure elsewhere must not wait out this file's backoff.
        if n and stop.wait(cfg.backoff_s * 2 ** (n - 1)):
            raise _Cancelled(url)
        try:
            return attempt()
        except _RETRYABLE as exc:
            last = exc
    raise DownloadRetriesSpent(url, received(), f"{cfg.retries + 1} attempts, last error: {last!r}") from last


def _check_status(response: requests.Response, url: str) -> None:
    code = response.status_code
    if code in (408, 429) or code >= 500:
        raise _Transient(f"HTTP {code}")
    if code == 416:
        raise _BadPart("HTTP 416 range not satisfiable: the part is longer than the file")
    if code >= 400:
        raise DownloadError(url, 0, f"HTTP {code} {response.reason}")


def _read_text(cfg: DownloadConfig, url: str, session: requests.Session | None) -> str | None:
    """The body of a small resource (listing, dumpstatus.json); None when it does not exist."""
    if _is_file_mirror(cfg):
        path = _local_path(url)
        return path.read_text("utf-8") if path.is_file() else None

    def attempt() -> str | None:
        response = session.get(url, timeout=cfg.timeout_s)
        if response.status_code == 404:
            return None
        _check_status(response, url)
        return response.text

    return _with_retries(cfg, url, attempt)


def _list_dates(cfg: DownloadConfig, session: requests.Session | None) -> list[str]:
    """Run dates on the mirror, newest first; DumpNotFoundError when the wiki is not there."""
    url = f"{cfg.mirror}/{cfg.wiki}/"
    if _is_file_mirror(cfg):
        folder = _local_path(url)
        names = [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else None
    else:
        listing = _read_text(cfg, url, session)
        names = None if listing is None else _DATE_HREF.findall(listing)
    if names is None:
        raise DumpNotFoundError(f"wiki {cfg.wiki!r} not found at {cfg.mirror} ({url})")
    return sorted({n for n in names if re.fullmatch(r"\d{8}", n)}, reverse=True)


def _load_status(cfg: DownloadConfig, date: str, session: requests.Session | None) -> dict | None:
    text = _read_text(cfg, f"{cfg.mirror}/{cfg.wiki}/{date}/dumpstatus.json", session)
    return None if text is None else json.loads(text)


def _unfinished(status: dict, jobs: tuple[str, ...]) -> list[str]:
    """The needed jobs that are not done, as 'job (status)'."""
    states = {job: status.get("jobs", {}).get(job, {}).get("status", "missing") for job in jobs}
    return [f"{job} ({state})" for job, state in states.items() if state != "done"]


# ----------------------------------------------------------------------------- resolving the run


def _resolve(cfg: DownloadConfig, session: requests.Session | None) -> tuple[str, dict]:
    jobs = JOBS_BY_LAYOUT[cfg.layout]
    if cfg.date != "latest":
        status = _load_status(cfg, cfg.date, session)
        if status is None:
            dates = _list_dates(cfg, session)
            raise DumpNotFoundError(
                f"no dump run {cfg.wiki}/{cfg.date} at {cfg.mirror}; runs there: {', '.join(dates) or 'none'}"
            )
        if missing := _unfinished(status, jobs):
            raise DumpNotFoundError(f"run {cfg.wiki}/{cfg.date} is not finished: {', '.join(missing)}")
        return cfg.date, status
    return _newest_finished(cfg, session, jobs)


def _newest_finished(cfg: DownloadConfig, session, jobs: tuple[str, ...]) -> tuple[str, dict]:
    dates = _list_dates(cfg, session)
    why: list[str] = []
    for date in dates:
        status = _load_status(cfg, date, session)
        missing = ["dumpstatus.json missing"] if status is None else _unfinished(status, jobs)
        if not missing:
            return date, status
        why.append(f"{date}: {', '.join(missing)}")
    detail = "; ".join(why) or "no run dates listed"
    raise DumpNotFoundError(f"no finished {cfg.layout} run of {cfg.wiki} at {cfg.mirror} ({detail})")


def resolve_date(cfg: DownloadConfig, session: requests.Session | None = None) -> str:
    """The run date to download: cfg.date checked, or the newest run whose needed jobs are all done."""
    if session is not None or _is_file_mirror(cfg):
        return _resolve(cfg, session)[0]
    with _new_session(cfg) as own:
        return _resolve(cfg, own)[0]


def _file_specs(status: dict, jobs: tuple[str, ...]) -> list[_FileSpec]:
    specs = []
    for job in jobs:
        for name, meta in status["jobs"][job].get("files", {}).items():
            specs.append(_FileSpec(name, int(meta["size"]), meta.get("md5"), meta.get("sha1")))
    return specs


# ----------------------------------------------------------------------------- one file


def _hashers() -> dict[str, hashlib._Hash]:
    return {"md5": hashlib.md5(), "sha1": hashlib.sha1()}


def _hash_prefix(path: Path, cfg: DownloadConfig, bar: tqdm | None = None) -> dict[str, hashlib._Hash]:
    """Hashers fed with the file's current bytes (a part to resume, or a final file to re-verify)."""
    hashers = _hashers()
    with open(path, "rb") as f:
        for chunk in iter(partial(f.read, cfg.chunk_bytes), b""):
            for h in hashers.values():
                h.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    return hashers


def _mismatch(spec: _FileSpec, size: int, hashers: dict[str, hashlib._Hash]) -> str | None:
    if size != spec.size:
        return f"size {size} != {spec.size}"
    for algo in ("md5", "sha1"):
        expected = getattr(spec, algo)
        if expected and hashers[algo].hexdigest() != expected.lower():
            return f"{algo} {hashers[algo].hexdigest()} != {expected}"
    return None


@contextmanager
def _open_http(session: requests.Session, url: str, offset: int, cfg: DownloadConfig):
    """Yield (start, chunks): start is `offset` when the server honoured the Range, else 0."""
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(url, headers=headers, stream=True, timeout=cfg.timeout_s) as response:
        _check_status(response, url)
        start = 0
        if offset and response.status_code == 206:
            start = _content_range_start(response)
            if start != offset:
                raise _BadPart(f"asked for bytes {offset}-, got {response.headers.get('Content-Range')}")
        # decode_content=False: the bytes exactly as published, whatever Content-Encoding says.
        yield start, response.raw.stream(cfg.chunk_bytes, decode_content=False)


def _content_range_start(response: requests.Response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


@contextmanager
def _open_local(path: Path, offset: int, cfg: DownloadConfig):
    if not path.is_file():
        raise DownloadError(str(path), 0, "file not found on the mirror")
    with open(path, "rb") as f:
        f.seek(offset)
        yield offset, iter(partial(f.read, cfg.chunk_bytes), b"")


class _FileJob:
    """Download state of one file across attempts."""

    def __init__(
        self, spec: _FileSpec, url: str, directory: Path, cfg: DownloadConfig, stop: threading.Event
    ):
        self.spec, self.url, self.cfg, self.stop = spec, url, cfg, stop
        self.final = directory / spec.name
        self.part = directory / (spec.name + PART_SUFFIX)
        self.transferred = 0
        self.resumed = False

    def received(self) -> int:
        return self.part.stat().st_size if self.part.exists() else 0

    def attempt(self, opener, bar: tqdm | None) -> None:
        """One try: continue the part from where it ends, verify, rename. Raises on anything wrong."""
        try:
            self._attempt(opener, bar)
        except _BadPart:
            self.part.unlink(missing_ok=True)
            raise

    def _attempt(self, opener, bar: tqdm | None) -> None:
        offset = self.received()
        if offset > self.spec.size:
            raise _BadPart(f"{self.spec.name}: part is longer than the published file")
        hashers = _hash_prefix(self.part, self.cfg) if offset else _hashers()
        self.resumed = offset > 0
        if offset < self.spec.size:
            with opener(offset) as (start, chunks):
                if start != offset:  # the server ignored the Range: start over
                    offset, hashers, self.resumed = 0, _hashers(), False
                if bar is not None:
                    bar.reset(total=self.spec.size)
                    bar.update(offset)
                self._write(chunks, offset, hashers, bar)
        self._verify_and_publish(hashers)

    def _write(self, chunks: Iterator[bytes], offset: int, hashers, bar: tqdm | None) -> None:
        with open(self.part, "r+b" if offset else "wb") as out:
            out.seek(offset)
            out.truncate()
            for chunk in chunks:
                if self.stop.is_set():
                    raise _Cancelled(self.url)
                out.write(chunk)
                for h in hashers.values():
                    h.update(chunk)
                self.transferred += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))

    def _verify_and_publish(self, hashers) -> None:
        size = self.received()
        if size < self.spec.size:  # the stream ended early without an error: resume next time
            raise _Transient(f"stream ended at {size} of {self.spec.size} bytes")
        if problem := _mismatch(self.spec, size, hashers):
            raise _BadPart(f"{self.spec.name}: {problem}")
        os.replace(self.part, self.final)


def _final_is_valid(job: _FileJob, bar: tqdm | None) -> bool:
    if not job.final.is_file() or job.final.stat().st_size != job.spec.size:
        return False
    return _mismatch(job.spec, job.spec.size, _hash_prefix(job.final, job.cfg, bar)) is None


def _make_bar(name: str, total: int, enabled: bool) -> tqdm | nullcontext:
    if not enabled:
        return nullcontext()
    return tqdm(total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024, leave=False)


def _fetch_one(job: _FileJob, opener, progress: bool) -> FileResult:
    with _make_bar(f"verify {job.spec.name}", job.spec.size, progress and job.final.is_file()) as bar:
        if _final_is_valid(job, bar):
            return FileResult(name=job.spec.name, bytes=job.spec.size, status="skipped")
    # A final file that fails verification is corrupt: drop it and download afresh.
    job.final.unlink(missing_ok=True)
    with _make_bar(job.spec.name, job.spec.size, progress) as bar:
        _with_retries(job.cfg, job.url, lambda: job.attempt(opener, bar), job.received, job.stop)
    status = "resumed" if job.resumed else "fetched"
    return FileResult(name=job.spec.name, bytes=job.spec.size, status=status, transferred=job.transferred)


# ----------------------------------------------------------------------------- the run


class _ThreadSessions:
    """One requests.Session per worker thread (a Session is not meant to be shared across threads)."""

    def __init__(self, cfg: DownloadConfig):
        self.cfg, self.local, self.all, self.lock = cfg, threading.local(), [], threading.Lock()

    def get(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = _new_session(self.cfg)
            with self.lock:
                self.all.append(self.local.session)
        return self.local.session

    def close(self) -> None:
        for session in self.all:
            session.close()


def _download_file(job: _FileJob, sessions: _ThreadSessions, progress: bool) -> FileResult:
    if _is_file_mirror(job.cfg):
        opener = partial(_open_local, _local_path(job.url), cfg=job.cfg)
    else:
        opener = partial(_open_http, sessions.get(), job.url, cfg=job.cfg)
    return _fetch_one(job, opener, progress)


def _download_all(
    jobs: list[_FileJob], cfg: DownloadConfig, stop: threading.Event, progress: bool
) -> list[FileResult]:
    sessions = _ThreadSessions(cfg)
    with ThreadPoolExecutor(max_workers=cfg.max_connections, thread_name_prefix="dumps") as pool:
        futures = [pool.submit(_download_file, job, sessions, progress) for job in jobs]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()  # re-raise the first failure
        finally:
            # On failure or Ctrl-C, stop the other transfers at their next chunk (their parts stay
            # resumable) instead of letting the pool finish multi-gigabyte files.
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            sessions.close()
    return [f.result() for f in futures]


def _write_manifest(directory: Path, cfg: DownloadConfig, date: str, specs: list[_FileSpec]) -> None:
    manifest = {
        "wiki": cfg.wiki,
        "date": date,
        "mirror": cfg.mirror,
        "layout": cfg.layout,
        "jobs": list(JOBS_BY_LAYOUT[cfg.layout]),
        "files": [{"name": s.name, "size": s.size, "md5": s.md5, "sha1": s.sha1} for s in specs],
        "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_text(directory / layout.DOWNLOAD_MANIFEST, json.dumps(manifest, indent=2) + "\n")


def download_run(cfg: DownloadConfig, dumps_root: Path, progress: bool = True) -> DownloadReport:
    """Download (or complete, or re-verify) the run into dumps_root/{wiki}/{date}/ and report on it."""
    started = time.monotonic()
    with nullcontext() if _is_file_mirror(cfg) else _new_session(cfg) as session:
        date, status = _resolve(cfg, session)
    specs = _file_specs(status, JOBS_BY_LAYOUT[cfg.layout])
    directory = Path(dumps_root) / cfg.wiki / date
    directory.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    jobs = [_FileJob(s, f"{cfg.mirror}/{cfg.wiki}/{date}/{s.name}", directory, cfg, stop) for s in specs]
    results = _download_all(jobs, cfg, stop, progress) if jobs else []
    _write_manifest(directory, cfg, date, specs)
    return DownloadReport(
        wiki=cfg.wiki,
        date=date,
        directory=directory,
        files=results,
        bytes_transferred=sum(r.transferred for r in results),
        seconds=round(time.monotonic() - started, 3),
    )
