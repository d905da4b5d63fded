"""HTTP for plash: timeouts, bounded retries with backoff, Range resume, digests checked while streaming.

Every httpx error becomes a FetchError that names the URL and what went
wrong; callers never see httpx types.
"""

from __future__ import annotations

import os
from typing import AsyncIterator, Awaitable, Callable

import httpx
import trio

from plash.errors import PlashError
from plash.lang.hashpath import sha256

RETRIES = 4
CHUNK = 1 << 16


class FetchError(PlashError):
    """A download failed; the message names the URL."""


def timeout() -> httpx.Timeout:
    seconds = float(os.environ.get("PLASH_HTTP_TIMEOUT", "30"))
    return httpx.Timeout(seconds, connect=min(seconds, 15.0))


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout(), follow_redirects=True,
                             headers={"User-Agent": "plash (+https://github.com/ihucos/plash)"})


def _describe(e: Exception) -> str:
    if isinstance(e, httpx.TimeoutException):
        return "timed out"
    if isinstance(e, httpx.ConnectError):
        return f"cannot connect ({e})" if str(e) else "cannot connect"
    if isinstance(e, httpx.RemoteProtocolError):
        return f"connection broken ({e})"
    return str(e) or type(e).__name__


async def get_bytes(c: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> bytes:
    """GET a small document, with retries; FetchError on failure."""
    delay = 0.2
    for attempt in range(RETRIES):
        try:
            r = await c.get(url, headers=headers)
        except httpx.TransportError as e:
            if attempt == RETRIES - 1:
                raise FetchError(f"{url}: {_describe(e)}") from None
        else:
            if r.status_code < 500 or attempt == RETRIES - 1:
                if r.status_code >= 400:
                    raise FetchError(f"{url}: HTTP {r.status_code} {r.reason_phrase}")
                return r.content
        await trio.sleep(delay)
        delay *= 3
    raise AssertionError("unreachable")


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
            raise FetchError(f"{self.url}: sha256 mismatch: got {digest}, expected {self.sha}")
        return digest


async def stream(c: httpx.AsyncClient, url: str, sink: Callable[[bytes], Awaitable[None]],
                 verify: Verified, progress: Callable[[int, int | None], None] | None = None,
                 headers: dict[str, str] | None = None) -> str:
    """Download url into sink, resuming with Range after a broken connection; return the sha256.

    Bytes reach the sink exactly once and in order; when the server cannot
    resume (no 206), a broken transfer is an error rather than a restart,
    since the sink may have consumed the first part.
    """
    delay = 0.2
    attempt = 0
    total: int | None = verify.size
    while True:
        h = dict(headers or {})
        if verify.count:
            h["Range"] = f"bytes={verify.count}-"
        try:
            async with c.stream("GET", url, headers=h) as r:
                if r.status_code >= 500 and attempt < RETRIES - 1:
                    raise _Retry(f"HTTP {r.status_code}")
                if r.status_code >= 400:
                    raise FetchError(f"{url}: HTTP {r.status_code} {r.reason_phrase}")
                if verify.count and r.status_code != 206:
                    raise FetchError(f"{url}: the connection broke and the server cannot resume (no Range support)")
                if total is None and "content-length" in r.headers and not verify.count:
                    total = int(r.headers["content-length"])
                async for chunk in _chunks(r):
                    verify.update(chunk)
                    await sink(chunk)
                    if progress:
                        progress(verify.count, total)
            # httpx raises for a body shorter than its Content-Length; a listed
            # size the server disagrees with is the size check's business
            return verify.check()
        except (httpx.TransportError, _Retry) as e:
            attempt += 1
            if attempt >= RETRIES:
                raise FetchError(f"{url}: {_describe(e)} "
                                 f"(after {RETRIES} attempts)") from None
        await trio.sleep(delay)
        delay *= 3


class _Retry(Exception):
    pass


async def _chunks(r: httpx.Response) -> AsyncIterator[bytes]:
    async for chunk in r.aiter_raw(CHUNK):
        yield chunk
