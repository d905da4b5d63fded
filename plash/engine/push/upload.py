"""Blobs and manifests into a registry (OCI distribution spec, "Push"), streamed from files.

A blob the registry has (HEAD) is never sent again; one it has in another
repository is mounted from there; a small one goes in one PUT, a big one
in PATCH chunks and a closing PUT. Errors are FetchErrors naming the
method, the URL without its query (upload URLs carry the registry's
state) and the registry's own error code and message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import httpx
import trio

from plash.engine.fetch import failures, http
from plash.errors import FetchError

MONOLITHIC = 16 << 20  # blobs up to this size go in one PUT
PATCH_CHUNK = 64 << 20
ERROR_LIMIT = 64 << 10  # what of an error answer is read


def _shown(url: httpx.URL | str) -> str:
    u = httpx.URL(str(url))
    return str(u.copy_with(query=None, fragment=None))


async def _reason(r: httpx.Response) -> str:
    """The registry's own words for an error answer: `CODE: message` of its first error, else the status."""
    body = b""
    async for chunk in r.aiter_raw():
        body += chunk
        if len(body) > ERROR_LIMIT:
            break
    text = f"HTTP {r.status_code} {r.reason_phrase}".strip()
    try:
        first = json.loads(body)["errors"][0]
        code, message = str(first.get("code", "")), str(first.get("message", ""))
        detail = ": ".join(x for x in (code, message[:200]) if x)
        return f"{text} ({detail})" if detail else text
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return text


async def request(c: httpx.AsyncClient, method: str, url: str | httpx.URL, ok: tuple[int, ...],
                  headers: dict[str, str] | None = None, content: AsyncIterator[bytes] | bytes | None = None,
                  what: str = "") -> httpx.Response:
    """Send one request; an answer whose status is not in ok, or a broken connection, is a FetchError.

    The answer's body is read and closed here: these answers carry headers only.
    """
    try:
        r = await c.send(c.build_request(method, url, headers=headers, content=content), stream=True)
    except httpx.ConnectError as e:
        raise FetchError(failures.failure(str(url), e)) from None
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        raise FetchError(f"{what or method} {_shown(url)}: {failures.describe(e)}") from None
    try:
        if r.status_code not in ok:
            raise FetchError(f"{what or method} {_shown(url)}: {await _reason(r)}", status=r.status_code)
        drained = 0
        async for chunk in r.aiter_raw():  # a body nobody wants: read a little, then drop the connection
            drained += len(chunk)
            if drained > ERROR_LIMIT:
                break
        return r
    finally:
        await r.aclose()


async def has_blob(c: httpx.AsyncClient, base: str, digest: str) -> bool:
    r = await request(c, "HEAD", f"{base}/blobs/{digest}", (200, 404), what="checking for a blob:")
    return r.status_code == 200


def _location(r: httpx.Response) -> httpx.URL:
    loc = r.headers.get("location")
    if not loc:
        raise FetchError(f"{_shown(r.request.url)}: HTTP {r.status_code} without a Location to upload to")
    return r.request.url.join(loc)


async def mount(c: httpx.AsyncClient, base: str, digest: str, source: str) -> httpx.URL | None:
    """Mount a blob from another repository of the registry; None when mounted, else the upload it started instead."""
    r = await request(c, "POST", mount_url(base, digest, source), (201, 202), content=b"",
                      headers={"Content-Length": "0"}, what="mounting a blob:")
    if r.status_code == 201:
        return None
    return _location(r)


def mount_url(base: str, digest: str, source: str) -> str:
    return str(httpx.URL(f"{base}/blobs/uploads/", params={"mount": digest, "from": source}))


async def _file_chunks(path: str, start: int, length: int, progress: Callable[[int], None]) -> AsyncIterator[bytes]:
    f = await trio.to_thread.run_sync(open, path, "rb")
    try:
        await trio.to_thread.run_sync(f.seek, start)
        left = length
        while left:
            chunk = await trio.to_thread.run_sync(f.read, min(left, http.CHUNK * 16))
            if not chunk:
                raise FetchError(f"{path}: shorter than it was")
            left -= len(chunk)
            progress(len(chunk))
            yield chunk
    finally:
        f.close()


async def upload_blob(c: httpx.AsyncClient, base: str, path: str, digest: str, size: int,
                      progress: Callable[[int, int | None], None], start: httpx.URL | None = None) -> None:
    """Upload the blob in file path (its digest and size known) to the repository at base."""
    if start is None:
        r = await request(c, "POST", f"{base}/blobs/uploads/", (202,), content=b"", headers={"Content-Length": "0"},
                          what="starting an upload:")
        start = _location(r)
    sent = 0

    def count(n: int) -> None:
        nonlocal sent
        sent += n
        progress(sent, size)

    where = start
    octets = "application/octet-stream"
    if size <= MONOLITHIC:
        await request(c, "PUT", where.copy_merge_params({"digest": digest}), (201,),
                      {"Content-Type": octets, "Content-Length": str(size)},
                      _file_chunks(path, 0, size, count), "uploading a blob:")
        return
    offset = 0
    while offset < size:
        n = min(PATCH_CHUNK, size - offset)
        r = await request(c, "PATCH", where, (202,),
                          {"Content-Type": octets, "Content-Length": str(n), "Content-Range": f"{offset}-{offset + n - 1}"},
                          _file_chunks(path, offset, n, count), "uploading a blob:")
        where = _location(r)
        offset += n
    await request(c, "PUT", where.copy_merge_params({"digest": digest}), (201,), {"Content-Length": "0"}, b"",
                  "finishing an upload:")


async def put_bytes_blob(c: httpx.AsyncClient, base: str, data: bytes, digest: str) -> None:
    """A small blob (an image config) from memory, unless the registry has it."""
    if await has_blob(c, base, digest):
        return
    r = await request(c, "POST", f"{base}/blobs/uploads/", (202,), content=b"", headers={"Content-Length": "0"},
                      what="starting an upload:")
    await request(c, "PUT", _location(r).copy_merge_params({"digest": digest}), (201,),
                  {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}, data,
                  "uploading the image config:")


async def put_manifest(c: httpx.AsyncClient, base: str, reference: str, data: bytes, media_type: str) -> None:
    await request(c, "PUT", f"{base}/manifests/{reference}", (200, 201, 202),
                  {"Content-Type": media_type, "Content-Length": str(len(data))}, data, "uploading the manifest:")

