"""HTTP for plash: timeouts, bounded retries with backoff, Range resume, digests checked while streaming.

Every httpx error becomes a FetchError that names the URL and what went
wrong; callers never see httpx types.

Servers are untrusted, so every request is bounded in size and in time:

- a small document (`get_document`, `get_bytes`: manifests, tokens,
  catalogues) is read into memory only up to a limit per kind, checked
  against Content-Length first and counted while it streams (on the wire
  and, for a gzip answer, decoded); and it must arrive whole within
  PLASH_HTTP_DOCUMENT_TIMEOUT seconds (default 120), redirects and retries
  included;
- a blob (`stream`) may take as long as it needs, but must keep arriving at
  PLASH_HTTP_MIN_RATE KiB/s (default 1) on average over every
  PLASH_HTTP_RATE_WINDOW seconds (default 60; a rate of 0 turns this off);
- PLASH_HTTP_TIMEOUT (default 30) bounds each connect and read, as before.
"""

from __future__ import annotations

import collections
import json
import math
import os
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from hashlib import sha256  # OpenSSL: 6x the speed of the built-in module hashpath uses for start-up
from typing import Any

import httpx
import trio

from plash.engine.fetch.failures import failure
from plash.errors import DigestMismatch, FetchError, PlashError

__all__ = ["FetchError"]  # its home is plash.errors; kept importable from here

RETRIES = 4
CHUNK = 1 << 16
KiB = 1 << 10
MiB = 1 << 20
# The default limit of a small document: LXC simplestreams catalogues are the
# largest (images.json of images.linuxcontainers.org is several MB and grows),
# Debian Release files are far smaller; OCI documents pass limits of their own.
DOCUMENT_LIMIT = 64 * MiB
# A request sent as it is, whatever auth its client has (the base Auth's flow
# yields the request untouched): a token request must not go through the flow
# that asked for it.
NO_AUTH = httpx.Auth()
# A JSON object from a server: its values are whatever the server sent, checked where used.
JSONObject = dict[str, Any]


def _env_number(name: str, default: float, allow_zero: bool = False) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise PlashError(f"{name}={text!r}: expected a number {'0 or more' if allow_zero else 'greater than 0'}")
    return value


def timeout() -> httpx.Timeout:
    seconds = _env_number("PLASH_HTTP_TIMEOUT", 30)
    return httpx.Timeout(seconds, connect=min(seconds, 15.0))


def document_timeout() -> float:
    """Seconds a small document may take to arrive whole (PLASH_HTTP_DOCUMENT_TIMEOUT)."""
    return _env_number("PLASH_HTTP_DOCUMENT_TIMEOUT", 120)


def min_rate() -> tuple[float, float]:
    """The slowest a blob may arrive: (bytes per second, over how many seconds); 0 bytes: no limit."""
    return (_env_number("PLASH_HTTP_MIN_RATE", 1, allow_zero=True) * KiB,
            _env_number("PLASH_HTTP_RATE_WINDOW", 60))


def client(auth: httpx.Auth | None = None) -> httpx.AsyncClient:
    """The client for a session; auth, if given, sees every request that does not bring its own."""
    return httpx.AsyncClient(auth=auth, timeout=timeout(), follow_redirects=True,
                             headers={"User-Agent": "plash (+https://github.com/ihucos/plash)"})


async def _send(c: httpx.AsyncClient, request: httpx.Request, auth: httpx.Auth | None) -> httpx.Response:
    """Send a request, streamed, with auth (None: the client's)."""
    if auth is None:
        return await c.send(request, stream=True)
    return await c.send(request, auth=auth, stream=True)


class _Unread(httpx.AsyncByteStream):  # type: ignore[misc, unused-ignore]  # Any where mypy cannot see httpx
    """An answer's body that is never read: it yields nothing, and closing it closes (and drops) the connection."""

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self.stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        return
        yield b""  # an async generator that ends at once

    async def aclose(self) -> None:
        await self.stream.aclose()


def leave_unread(response: httpx.Response) -> None:
    """Make a streamed answer's body empty, unread, for an auth flow that sends its request again.

    httpx reads such an answer whole before the next request, decoding it
    too; a server's 401 may be of any size and encoding. Dropping the
    connection costs a new one for the retry, which is rare.
    """
    if isinstance(response.stream, httpx.AsyncByteStream):
        response.stream = _Unread(response.stream)


def size_text(n: int) -> str:
    """4194304 -> '4 MiB'."""
    for unit, size in (("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def parse_json(body: bytes, where: str, what: str) -> JSONObject:
    """Pure: a JSON object from a server, or a FetchError naming the document and what is wrong."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:  # RecursionError: nested too deep
        raise FetchError(f"{where}: {what} is not JSON ({str(e)[:100] or type(e).__name__})") from None
    if not isinstance(doc, dict):
        raise FetchError(f"{where}: {what} is not a JSON object but {json_type(doc)}")
    return doc


def json_type(value: object) -> str:
    """Pure: what a JSON value is, in words ("a list")."""
    kinds: dict[type, str] = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
                              float: "a number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Document:
    """A small document's answer: status and headers, and the body of a 2xx answer (b"" otherwise)."""

    url: str
    status: int
    reason: str
    headers: httpx.Headers
    body: bytes


async def get_document(c: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None,
                       limit: int = DOCUMENT_LIMIT, what: str = "the document",
                       auth: httpx.Auth | None = None) -> Document:
    """GET a small document of at most limit bytes, with retries for broken connections and 5xx answers.

    The answer comes back whatever its status (the last one of a 5xx); a
    broken connection, a body over the limit, or no whole answer within
    document_timeout() is a FetchError that names the URL (`what` names the
    kind of document in the message). auth: see _send.
    """
    seconds = document_timeout()
    with trio.move_on_after(seconds):
        return await _get_document(c, url, headers, limit, what, auth)
    raise FetchError(f"{url}: {what} did not arrive within {seconds:g} s (PLASH_HTTP_DOCUMENT_TIMEOUT)")


async def get_bytes(c: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None,
                    limit: int = DOCUMENT_LIMIT, what: str = "the document", auth: httpx.Auth | None = None) -> bytes:
    """GET a small document, with retries; FetchError on failure (see get_document)."""
    doc = await get_document(c, url, headers, limit, what, auth)
    if not 200 <= doc.status < 300:  # 3xx: a redirect without a Location
        raise FetchError(f"{url}: HTTP {doc.status} {doc.reason}", status=doc.status)
    return doc.body


async def _get_document(c: httpx.AsyncClient, url: str, headers: dict[str, str] | None, limit: int,
                        what: str, auth: httpx.Auth | None) -> Document:
    delay = 0.2
    for attempt in range(RETRIES):
        last = attempt == RETRIES - 1
        try:
            doc = await _get_once(c, url, headers, limit, what, auth)
        except httpx.UnsupportedProtocol as e:  # file:, ftp: (a redirect there, say): never tried again
            raise FetchError(failure(url, e)) from None
        except httpx.TransportError as e:
            if last:
                raise FetchError(failure(url, e)) from None
        except (httpx.HTTPError, httpx.InvalidURL) as e:  # redirect loops, bad URLs: trying again changes nothing
            raise FetchError(failure(url, e)) from None
        else:
            if doc.status < 500 or last:
                return doc
        await trio.sleep(delay)
        delay *= 3
    raise AssertionError("unreachable")


async def _get_once(c: httpx.AsyncClient, url: str, headers: dict[str, str] | None, limit: int,
                    what: str, auth: httpx.Auth | None) -> Document:
    # gzip is the one encoding asked for, and it is decoded here, with the
    # limit applied to the decoded bytes: httpx would decode a bomb whole
    h = {"Accept-Encoding": "gzip", **(headers or {})}
    r = await _send(c, c.build_request("GET", url, headers=h), auth)
    try:
        if not 200 <= r.status_code < 300:
            return Document(url, r.status_code, r.reason_phrase, r.headers, b"")
        too_large = FetchError(f"{url}: {what} is larger than {size_text(limit)}")
        length = r.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise too_large
        encoding = r.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip"):
            raise FetchError(f"{url}: {what} comes in an encoding plash did not ask for ({encoding})")
        gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding != "identity" else None
        body = bytearray()
        wire = 0
        async for chunk in r.aiter_raw(CHUNK):
            wire += len(chunk)
            if wire > limit:
                raise too_large
            if gunzip is None:
                body += chunk
                continue
            try:
                while chunk:
                    body += gunzip.decompress(chunk, limit + 1 - len(body))
                    if len(body) > limit:
                        raise too_large
                    chunk = gunzip.unconsumed_tail
            except zlib.error as e:
                raise FetchError(f"{url}: {what} is not valid gzip ({e})") from None
        if gunzip is not None and not gunzip.eof:
            raise FetchError(f"{url}: {what} ends inside its gzip stream (truncated)")
        return Document(url, r.status_code, r.reason_phrase, r.headers, bytes(body))
    finally:
        await r.aclose()


class Verified:
    """Hashes and counts bytes as they stream by; checks size and sha256 at the end."""

    def __init__(self, url: str, sha: str | None, size: int | None) -> None:
        self.url, self.sha, self.size = url, sha.lower() if sha else None, size
        self.hash = sha256()
        self.count = 0

    def update(self, chunk: bytes) -> None:
        self.hash.update(chunk)
        self.count += len(chunk)
        if self.size is not None and self.count > self.size:
            raise FetchError(f"{self.url}: more data than the expected {self.size} bytes")

    def check(self) -> str:
        if self.size is not None and self.count != self.size:
            raise FetchError(f"{self.url}: size mismatch: got {self.count} bytes, expected {self.size}")
        digest = self.hash.hexdigest()
        if self.sha is not None and digest != self.sha:
            raise DigestMismatch(f"{self.url}: sha256 mismatch: got {digest}, expected {self.sha}")
        return digest


class RateGuard:
    """Fails a transfer that brings fewer than rate bytes/s on average over the last window seconds.

    Bytes are counted over a sliding window; the first check comes once the
    transfer is a window old, and a server that sends nothing at all is
    caught by waiting at most a window for each read (`deadline`).
    """

    def __init__(self, url: str, rate: float, window: float) -> None:
        self.url, self.rate, self.window = url, rate, window
        self.start = trio.current_time()
        self.recent: collections.deque[tuple[float, int]] = collections.deque()
        self.in_window = 0

    @property
    def deadline(self) -> float:
        """Seconds to wait for the next bytes (inf: no limit)."""
        return self.window if self.rate > 0 else math.inf

    def error(self) -> FetchError:
        return FetchError(f"{self.url}: too slow: less than {self.rate / KiB:g} KiB/s over {self.window:g} s "
                          "(PLASH_HTTP_MIN_RATE, PLASH_HTTP_RATE_WINDOW)")

    def arrived(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = trio.current_time()
        self.recent.append((now, n))
        self.in_window += n
        while self.recent and self.recent[0][0] <= now - self.window:
            self.in_window -= self.recent.popleft()[1]
        if now - self.start >= self.window and self.in_window < self.rate * self.window:
            raise self.error()


async def stream(c: httpx.AsyncClient, url: str, sink: Callable[[bytes], Awaitable[None]],
                 verify: Verified, progress: Callable[[int, int | None], None] | None = None,
                 headers: dict[str, str] | None = None, auth: httpx.Auth | None = None) -> str:
    """Download url into sink, resuming with Range after a broken connection; return the sha256.

    Bytes reach the sink exactly once and in order; when the server cannot
    resume (no 206), a broken transfer is an error rather than a restart,
    since the sink may have consumed the first part. A transfer slower than
    min_rate() is an error too, and is not tried again. auth: see _send.
    """
    delay = 0.2
    attempt = 0
    total: int | None = verify.size
    rate, window = min_rate()
    while True:
        h = dict(headers or {})
        if verify.count:
            h["Range"] = f"bytes={verify.count}-"
        guard = RateGuard(url, rate, window)
        try:
            # the answer's headers count as the first bytes: a server that drips them is too slow too
            with trio.move_on_after(guard.deadline) as waiting:
                r = await _send(c, c.build_request("GET", url, headers=h), auth)
            if waiting.cancelled_caught:
                raise guard.error()
            try:
                if r.status_code >= 500 and attempt < RETRIES - 1:
                    raise _Retry(f"HTTP {r.status_code}")
                if r.status_code >= 300:  # 3xx: a redirect without a Location
                    raise FetchError(f"{url}: HTTP {r.status_code} {r.reason_phrase}", status=r.status_code)
                if verify.count and r.status_code != 206:
                    raise FetchError(f"{url}: the connection broke and the server cannot resume (no Range support)")
                if total is None and "content-length" in r.headers and not verify.count:
                    length = r.headers["content-length"]
                    total = int(length) if length.isdigit() else None
                chunks = r.aiter_raw()  # what each read brings: a chunk size would hold bytes back from the rate count
                while True:
                    with trio.move_on_after(guard.deadline) as waiting:
                        chunk = await anext(chunks, b"")
                    if waiting.cancelled_caught:
                        raise guard.error()
                    if not chunk:
                        break
                    guard.arrived(len(chunk))
                    verify.update(chunk)
                    await sink(chunk)
                    if progress:
                        progress(verify.count, total)
            finally:
                await r.aclose()
            # httpx raises for a body shorter than its Content-Length; a listed
            # size the server disagrees with is the size check's business
            return verify.check()
        except httpx.UnsupportedProtocol as e:
            raise FetchError(failure(url, e)) from None
        except (httpx.TransportError, _Retry) as e:
            attempt += 1
            if attempt >= RETRIES:
                raise FetchError(f"{failure(url, e)} (after {RETRIES} attempts)") from None
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise FetchError(failure(url, e)) from None
        await trio.sleep(delay)
        delay *= 3


class _Retry(Exception):
    pass
