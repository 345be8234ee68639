"""Entity linking through the public TAGME web API (D4Science): the alternative to the local linker.

    client = RemoteTagme(RemoteTagmeConfig())          # the token from $TAGME_GCUBE_TOKEN
    for annotations, error in client.annotate_many(texts):
        ...                                            # error: None, or why this text got no answer

The `tagme` package (0.1.3) defines the request (the form fields of `tagme.annotate`) and parses the
answer (`tagme.AnnotateResponse`, which drops unlinked spots), but it posts without a timeout and turns
every non-200 answer into None. So the HTTP happens here: a timeout, retries with exponential backoff
on network errors, 408, 429 and 5xx, and a rate limit that all threads using one client share.

TAGME is a Java service: its offsets count UTF-16 code units; they are mapped to Python string
indices. Texts longer than `max_chars` go in pieces cut at paragraph or sentence boundaries, so
TAGME's disambiguation context is one piece.

The gcube token travels only in the POST body: never in the URL, a log line, an exception message
or a repr.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import requests
import tagme
from pydantic import SecretStr

from preprocessing.config import RemoteTagmeConfig
from preprocessing.titles import normalize_title
from storage.errors import InputError, PartError, RetryableError

log = logging.getLogger(__name__)

_NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
_AUTH_STATUS = (401, 403)
_SNIPPET_CHARS = 200
# Where a long text may be cut, strongest first: paragraph, line, sentence end, word.
_BOUNDARIES = (
    re.compile(r"\n[^\S\n]*\n\s*"),
    re.compile(r"\n\s*"),
    re.compile(r"[.!?][\"'\u201d\u2019)\]]*\s+|[\u3002\uff01\uff1f]"),
    re.compile(r"\s+"),
)
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")




@dataclass(frozen=True, slots=True)
class RemoteAnnotation:
    """A linked spot. `start`, `end`: Python string indices into the text given (text[start:end] == spot)."""

    start: int
    end: int
    spot: str
    title: str  # normalized with preprocessing.titles.normalize_title
    wiki_id: int  # the page id in TAGME's Wikipedia snapshot, which may be older than our dump
    rho: float
    link_prob: float  # NaN where the service sends no link_probability


class RemoteTagmeError(PartError, RuntimeError):
    """The TAGME API gave no usable answer for a text (after the retries, where retrying makes sense)."""


class RemoteTagmeAuthError(InputError, RemoteTagmeError):
    """No token, or the service refused it: fatal for every text, so `annotate_many` raises it."""


def resolve_token(cfg: RemoteTagmeConfig) -> str:
    """The gcube token: from the environment variable `cfg.token_env`, else from `cfg.token_secret_block`."""
    token = os.environ.get(cfg.token_env, "").strip()
    if token:
        return token
    if cfg.token_secret_block:
        return _secret_block_token(cfg.token_secret_block)
    raise RemoteTagmeAuthError(
        "no TAGME token",
        fix=f"set the environment variable {cfg.token_env} to your D4Science gcube token, "
        "or set the option token_secret_block to the name of a Prefect Secret block holding it",
    )


def _secret_block_token(name: str) -> str:
    from prefect.blocks.system import Secret  # lazy: importing Prefect takes about a second

    try:
        value = Secret.load(name).get()
    except Exception as exc:  # a missing block (ValueError) or no reachable Prefect API (httpx errors)
        raise RemoteTagmeAuthError(
            f"could not load the Prefect Secret block {name!r}: {exc}",
            fix="create the Secret block, or set token_secret_block to the name of one that exists",
        ) from exc
    if not isinstance(value, str) or not value.strip():
        raise RemoteTagmeAuthError(
            f"the Prefect Secret block {name!r} holds no token string", fix="store the gcube token in it"
        )
    return value.strip()


class _RateLimiter:
    """At most `per_s` calls to wait() return per second, across threads: each call reserves the next slot."""

    def __init__(self, per_s: float):
        self.interval = 1.0 / per_s
        self.next_slot = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            slot = max(self.next_slot, now)
            self.next_slot = slot + self.interval
        # Sleep outside the lock, so that other threads can reserve the slots after this one meanwhile.
        time.sleep(slot - now)


class _Transient(RetryableError):
    """A failure worth retrying: network error, timeout, 408, 429, 5xx."""


def split_text(text: str, max_chars: int) -> list[tuple[int, str]]:
    """(offset, piece) pairs: pieces of at most `max_chars` that together are `text`, cut at boundaries."""
    pieces, pos = [], 0
    while len(text) - pos > max_chars:
        end = pos + _cut(text[pos : pos + max_chars])
        pieces.append((pos, text[pos:end]))
        pos = end
    pieces.append((pos, text[pos:]))
    return pieces


def _cut(window: str) -> int:
    """Where the piece that starts `window` ends: after the last boundary of the strongest kind in the
    window's second half (the half keeps pieces, hence requests, few), else at the window's end."""
    half = len(window) // 2
    for boundary in _BOUNDARIES:
        matches = list(boundary.finditer(window, half))
        if matches:
            return matches[-1].end()
    return len(window)


def _utf16_to_index(text: str) -> list[int] | None:
    """The Python index of each UTF-16 offset 0..n into `text`; None when they coincide (no astral chars)."""
    if not _ASTRAL.search(text):
        return None
    index = []
    for i, char in enumerate(text):
        index.append(i)
        if ord(char) > 0xFFFF:
            index.append(i)  # the low surrogate's offset; a well-formed answer never points there
    index.append(len(text))
    return index


def _span(begin: int, end: int, to_index: list[int] | None, chars: int) -> tuple[int, int]:
    """Python indices for TAGME's UTF-16 span [begin, end) in a text of `chars` characters."""
    units = chars if to_index is None else len(to_index) - 1
    if not 0 <= begin < end <= units:
        raise RemoteTagmeError(f"malformed TAGME answer: span [{begin}, {end}) outside {units} UTF-16 units")
    return (begin, end) if to_index is None else (to_index[begin], to_index[end])


def _parse_body(body: object) -> tuple[list[tagme.Annotation], list[float], int]:
    """The linked annotations, their link probabilities and how many spots were unlinked."""
    try:
        parsed = tagme.AnnotateResponse(body)  # keeps the annotations that have a "title"
        link_probs = [float(a.get("link_probability", math.nan)) for a in body["annotations"] if "title" in a]
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise RemoteTagmeError(f"malformed TAGME answer: {exc!r}") from exc
    return parsed.annotations, link_probs, len(body["annotations"]) - len(parsed.annotations)


class RemoteTagme:
    """A client of the TAGME /tag API. One instance may serve many threads; they share its rate limit.

    `dropped` counts, by reason, the annotations the service sent that `annotate` did not return:
    unlinked (no title), below_min_rho, bad_title (normalize_title rejects it).
    """

    def __init__(self, cfg: RemoteTagmeConfig, session: requests.Session | None = None):
        self.cfg = cfg
        self._token = SecretStr(resolve_token(cfg))  # SecretStr: repr and vars() show asterisks
        self._session = session
        self._local = threading.local()
        self._limiter = _RateLimiter(cfg.rate_limit_per_s)
        self._dropped: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def dropped(self) -> dict[str, int]:
        with self._lock:
            return dict(self._dropped)

    def annotate(self, text: str) -> list[RemoteAnnotation]:
        """The annotations of `text`; RemoteTagmeError when a piece of it gets no answer after the retries."""
        found: list[RemoteAnnotation] = []
        for offset, piece in split_text(text, self.cfg.max_chars):
            if piece.strip():  # the service rejects empty texts, and they hold no entity anyway
                found += self._annotate_piece(piece, offset)
        return found

    def annotate_many(self, texts: Iterable[str]) -> Iterator[tuple[list[RemoteAnnotation], str | None]]:
        """Per text, (annotations, None), or ([], why) when it failed; the texts after it go on.
        A token problem fails every text alike, so RemoteTagmeAuthError is raised instead."""
        for text in texts:
            try:
                result = self.annotate(text), None
            except RemoteTagmeAuthError:
                raise
            except RemoteTagmeError as exc:
                log.warning("TAGME gave no answer for a text: %s", exc)
                result = [], str(exc)
            yield result

    def _annotate_piece(self, piece: str, offset: int) -> list[RemoteAnnotation]:
        annotations, link_probs, unlinked = _parse_body(self._post(piece))
        self._count("unlinked", unlinked)
        to_index = _utf16_to_index(piece)
        found = []
        for ann, link_prob in zip(annotations, link_probs, strict=True):
            title = normalize_title(ann.entity_title or "")
            if ann.score < self.cfg.min_rho or title is None:
                self._count("below_min_rho" if ann.score < self.cfg.min_rho else "bad_title")
                continue
            start, end = _span(ann.begin, ann.end, to_index, len(piece))
            # The spot is taken from our text, so that it matches the offsets whatever the service echoes.
            spot = piece[start:end]
            found.append(
                RemoteAnnotation(
                    offset + start, offset + end, spot, title, ann.entity_id, ann.score, link_prob
                )
            )
        return found

    def _count(self, reason: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self._dropped[reason] += n

    def _post(self, text: str) -> object:
        """The decoded JSON answer for `text`, retrying transient failures with exponential backoff."""
        last: _Transient | None = None
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                delay = self.cfg.backoff_s * 2 ** (attempt - 1)
                log.info(
                    "TAGME request failed (%s); retry %d of %d in %.2f s",
                    last,
                    attempt,
                    self.cfg.retries,
                    delay,
                )
                time.sleep(delay)
            try:
                return self._post_once(text)
            except _Transient as exc:
                last = exc
        raise RemoteTagmeError(
            f"TAGME API at {self.cfg.api_url}: no answer after {self.cfg.retries + 1} attempts; last: {last}"
        ) from last

    def _post_once(self, text: str) -> object:
        self._limiter.wait()
        try:
            # a redirect is not followed: a 307 or 308 would re-send the body, token included, elsewhere
            response = self._get_session().post(
                self.cfg.api_url, data=self._payload(text), timeout=self.cfg.timeout_s, allow_redirects=False
            )
        except _NETWORK_ERRORS as exc:
            raise _Transient(self._mask(f"{type(exc).__name__}: {exc}")) from exc
        self._check_status(response)
        try:
            return response.json()
        except ValueError as exc:
            raise RemoteTagmeError(
                f"TAGME API answered with something that is not JSON: {self._snippet(response)}"
            ) from exc

    def _payload(self, text: str) -> list[tuple[str, object]]:
        # The form fields of tagme.annotate. 'replace' turns a lone surrogate into '?': one UTF-16 unit
        # for one, so the offsets still line up.
        return [
            ("text", text.encode("utf-8", "replace")),
            ("long_text", tagme.DEFAULT_LONG_TEXT),
            ("lang", self.cfg.lang),
            ("gcube-token", self._token.get_secret_value()),
        ]

    def _get_session(self) -> requests.Session:
        if self._session is not None:
            return self._session
        # One Session per thread: requests does not promise that a Session is thread-safe.
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _check_status(self, response: requests.Response) -> None:
        code = response.status_code
        if code == 200:
            return
        if code in _AUTH_STATUS:
            raise RemoteTagmeAuthError(
                f"the TAGME API refused the gcube token (HTTP {code})",
                fix=f"check the token in the environment variable {self.cfg.token_env} "
                "(or in the Prefect Secret block named by token_secret_block)",
            )
        if 300 <= code < 400:
            raise RemoteTagmeAuthError(
                f"the TAGME API at {self.cfg.api_url} redirects (HTTP {code}) to "
                f"{self._mask(response.headers.get('Location', '?'))}: not followed, the token goes to "
                "api_url only",
                fix="set link.remote.api_url to the address it redirects to, if you trust it",
            )
        reason = self._mask(response.reason or "")
        if code in (408, 429) or code >= 500:
            raise _Transient(f"HTTP {code} {reason}")
        raise RemoteTagmeError(f"TAGME API answered HTTP {code} {reason}: {self._snippet(response)}")

    def _mask(self, text: str) -> str:
        """`text` with the token replaced by ***: whatever a server or a library echoes, no message,
        manifest or Parquet metadata field carries it."""
        return text.replace(self._token.get_secret_value(), "***")

    def _snippet(self, response: requests.Response) -> str:
        """The start of an answer's body for an error message, in case a server echoes the token: masked."""
        return " ".join(self._mask(response.text)[:_SNIPPET_CHARS].split())
