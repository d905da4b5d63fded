"""Where an OCI image's blobs come from: a registry, or local files; verified while they stream."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

import httpx
import trio

from plash.engine.fetch import http, oci
from plash.engine.fetch.oci import Descriptor

Sink = Callable[[bytes], Awaitable[None]]
Progress = Callable[[int, "int | None"], None]


class RegistryBlobs:
    """Blobs from a registry, verified while they stream (the client's auth flow renews tokens)."""

    def __init__(self, c: httpx.AsyncClient, reg: oci.Registry) -> None:
        self.c, self.reg = c, reg

    def label(self, desc: Descriptor) -> str:
        return f"{self.reg.ref.repository}@{desc.short}"

    async def fetch(self, desc: Descriptor, sink: Sink, progress: Progress) -> None:
        url = self.reg.blob_url(desc.digest)
        await http.stream(self.c, url, sink, verified(url, desc), progress)


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class FileBlobs:
    """Blobs from local files (an OCI layout dir, or members of a docker-archive tarball), verified too.

    opener gives each blob a reader of its own, since blobs are read side by
    side from threads; with serial=True they are read one at a time instead.
    """

    def __init__(self, opener: Callable[[Descriptor], Readable], name: str, serial: bool = False) -> None:
        self.opener, self.name = opener, name
        self.serial = trio.Lock() if serial else None

    def label(self, desc: Descriptor) -> str:
        return f"{self.name}@{desc.short}"

    async def fetch(self, desc: Descriptor, sink: Sink, progress: Progress) -> None:
        verify = verified(f"{self.name} blob {desc.digest}", desc)
        async with self.serial or contextlib.nullcontext():
            f = await trio.to_thread.run_sync(self.opener, desc)
            done = 0
            try:
                while chunk := await trio.to_thread.run_sync(f.read, http.CHUNK):
                    verify.update(chunk)
                    await sink(chunk)
                    done += len(chunk)
                    progress(done, desc.size)
            finally:
                f.close()
        verify.check()


async def read_blob(blobs: RegistryBlobs | FileBlobs, desc: Descriptor) -> bytes:
    raw = bytearray()

    async def keep(chunk: bytes) -> None:
        raw.extend(chunk)

    await blobs.fetch(desc, keep, lambda done, total: None)
    return bytes(raw)


def verified(url: str, desc: Descriptor) -> http.Verified:
    return http.Verified(url, desc.hex, desc.size)
