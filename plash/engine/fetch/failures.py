"""A failed request in words: `cannot reach HOST: name not resolved`, never `[Errno -2]`."""

from __future__ import annotations

import errno
import re
import socket
import ssl

import httpx

# What a refused connection's errno means, in words (negative: getaddrinfo's EAI_* codes)
_CONNECT_ERRNOS = {
    -2: "name not resolved", -3: "name not resolved (for now: the name server did not answer)",
    -5: "name not resolved (it has no address)", -9: "name not resolved (no address of this family)",
    errno.ECONNREFUSED: "connection refused", errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "no route to host", errno.ETIMEDOUT: "timed out", errno.ECONNRESET: "connection reset",
}


def connect_reason(e: Exception) -> str:
    """Why a connection failed, in words: from the OSError under httpx's and httpcore's errors, or their text."""
    seen: Exception | BaseException | None = e
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, socket.gaierror):
            return "name not resolved"
        if isinstance(seen, ssl.SSLError):
            return f"TLS failed ({seen.reason or seen})"
        if isinstance(seen, OSError) and seen.errno in _CONNECT_ERRNOS:
            return _CONNECT_ERRNOS[seen.errno]
        if isinstance(seen, BaseExceptionGroup) and seen.exceptions:  # trio tried each address: the first says
            seen = seen.exceptions[0]
            continue
        seen = seen.__cause__ or seen.__context__
    found = re.search(r"\[Errno (-?\d+)\]", str(e))
    if found and int(found.group(1)) in _CONNECT_ERRNOS:
        return _CONNECT_ERRNOS[int(found.group(1))]
    if "certificate" in str(e).lower() or "ssl" in str(e).lower():
        return f"TLS failed ({e})"
    return str(e) or "cannot connect"


def failure(url: str, e: Exception) -> str:
    """The message of a failed request: `cannot reach HOST: REASON` when no connection was made, else URL: what."""
    if isinstance(e, httpx.ConnectError):
        try:
            where = httpx.URL(url)
            host = where.host + (f":{where.port}" if where.port else "")
        except (httpx.InvalidURL, TypeError):
            host = url
        return f"cannot reach {host}: {connect_reason(e)}"
    return f"{url}: {describe(e)}"


def describe(e: Exception) -> str:
    if isinstance(e, httpx.TimeoutException):
        return "timed out"
    if isinstance(e, httpx.ConnectError):
        return f"cannot connect: {connect_reason(e)}"
    if isinstance(e, httpx.RemoteProtocolError):
        return f"connection broken ({e})"
    if isinstance(e, httpx.UnsupportedProtocol):  # file:, ftp:, or a redirect there
        return "only http and https URLs can be fetched"
    if isinstance(e, httpx.TooManyRedirects):
        return "too many redirects (a redirect loop?)"
    if isinstance(e, httpx.InvalidURL):
        return f"invalid URL ({e})"
    return str(e) or type(e).__name__
