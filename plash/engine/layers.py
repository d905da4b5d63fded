"""The life of a layer, written once: look up, lock, look up again, stage, produce, publish, discard.

Build steps, image imports and OCI layers are producers: each only fills
a staging dir's upper dir (Staging.upper). `make_chain` does the rest for
a chain of layers (each the parent of the next; one layer is a chain of
one), and `unpack_download` is the producer part shared by everything
that unpacks a download while it streams.
"""

from __future__ import annotations

import contextlib
import os

import trio

from plash.engine.children import discard, unpack_child
from plash.engine.events import Event, Kind
from plash.engine.locks import Holds, KeyLock
from plash.engine.plan import cached_on
from plash.engine.scheduler import first_error, limit
from plash.store.staging import Staging

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from plash.engine.events import Emit
    from plash.store.layout import Store

    Produce = Callable[[Staging], Awaitable[None]]
    Sink = Callable[[bytes], Awaitable[None]]


class LayerSpec:
    """One layer to make: its cache key, what fills it (None: nothing, a layer of settings), its meta.

    what names it in messages ("layer 2/3 (build.sh:4)"); kind names its
    staging dir; container: the staging dir gets the work and mount dirs of
    a container step.
    """

    __slots__ = ("container", "key", "kind", "meta", "produce", "what")

    def __init__(self, key: str, produce: Produce | None, what: str, meta: dict[str, list[str]] | None = None,
                 kind: str = "layer", container: bool = False) -> None:
        self.key, self.produce, self.what, self.meta = key, produce, what, meta
        self.kind, self.container = kind, container


async def _usable(found: int | None, holds: Holds | None) -> bool:
    """found is an image, held when holds are kept (off the trio thread: the in-use lock may wait for an rm)."""
    return found is not None and (holds is None or await trio.to_thread.run_sync(holds.image, found))


async def make_layer(store: Store, spec: LayerSpec, parent: int, emit: Emit, holds: Holds | None = None,
                     reuse: bool = True) -> int:
    """The image of spec's key, made on parent when it is not in the store (see make_chain)."""
    return await make_chain(store, [spec], parent, emit, holds, reuse)


async def make_chain(store: Store, specs: list[LayerSpec], parent: int, emit: Emit, holds: Holds | None = None,
                     reuse: bool = True) -> int:
    """The image of the chain's last key, with every missing layer of it made; return its id.

    A layer is there when its key names an image on the chain's image
    below it (plan.cached_on); from the first missing one up, every layer is
    made (its parent is new). The keys of the missing layers are locked in
    key order (chains that share layers cannot deadlock: whoever holds a
    key makes it, the others wait and reuse it); their producers run side
    by side, and nothing is published until all of them have succeeded, so
    a failure leaves the store as it was. Every staging dir is discarded on
    every way out. With reuse=False (a fresh import, --no-cache) a layer is
    made again unless another process made it anew while this one waited;
    the new image replaces the old one under its key. With holds, every
    image the chain returns or reuses is held in use.
    """
    before = [store.lookup_key(s.key) for s in specs]
    first = _walk(store, specs, before, reuse, 0, parent)
    if first[-1] is not None and await _usable(first[-1], holds):
        return first[-1]
    async with contextlib.AsyncExitStack() as locks:
        start = first.index(None) if None in first else len(specs) - 1
        todo = {s.key: s for s in specs[start:]}
        for key in sorted(todo):
            await locks.enter_async_context(KeyLock(store, key, emit, todo[key].what))
        # below start the layers were there (they are not locked: kept as found); look again above
        again = first[:start] + _walk(store, specs, before, reuse, start,
                                       first[start - 1] if start else parent)
        if again[-1] is not None and await _usable(again[-1], holds):
            return again[-1]
        missing = [i for i, found in enumerate(again) if found is None]
        stagings: dict[int, Staging] = {}
        try:
            async def produce(i: int) -> None:
                spec = specs[i]
                stagings[i] = await trio.to_thread.run_sync(Staging.new, store, spec.kind, spec.container)
                if spec.produce is not None:
                    await spec.produce(stagings[i])

            try:
                async with trio.open_nursery() as nursery:
                    for i in missing:
                        nursery.start_soon(produce, i)
            except BaseExceptionGroup as group:
                raise first_error(group) from None  # one producer's error, as it raised it
            ids: list[int] = []
            for i, spec in enumerate(specs):
                below = ids[-1] if ids else parent
                if i in stagings:
                    if holds is not None:
                        holds.staged(stagings[i].img)
                    ids.append(await trio.to_thread.run_sync(stagings[i].publish, below, spec.meta, spec.key))
                else:
                    found = again[i]
                    assert found is not None
                    ids.append(found)
        finally:
            for staging in stagings.values():
                await discard(staging)
    return ids[-1]


def _walk(store: Store, specs: list[LayerSpec], before: list[int | None], reuse: bool, start: int,
          below: int | None) -> list[int | None]:
    """From specs[start] up, the image to reuse for each (None: make it, and every layer above it).

    Without reuse, only an image other than the one found at first (made
    meanwhile by another process) is reused.
    """
    out: list[int | None] = []
    for i in range(start, len(specs)):
        found = cached_on(store, specs[i].key, below)
        below = found if found is not None and (reuse or found != before[i]) else None
        out.append(below)
    return out


class Download:
    """The transfer events of one label: start, progress, done; action names a transfer that is not a download.

    action is "" (a download, verified), "pack" (a layer packed into a blob)
    or "upload" (a blob sent to a registry); it travels as the events' text.
    """

    def __init__(self, emit: Emit, label: str, total: int | None, action: str = "") -> None:
        self.emit, self.label, self.count, self.action = emit, label, 0, action
        emit(Event(Kind.DOWNLOAD_START, label, 0, total, action))

    def __call__(self, done: int, total: int | None) -> None:
        self.count = done
        self.emit(Event(Kind.DOWNLOAD_PROGRESS, self.label, done, total, self.action))

    def done(self) -> None:
        self.emit(Event(Kind.DOWNLOAD_DONE, self.label, self.count, self.count, self.action))


async def unpack_download(root: str, fetch: Callable[[Sink], Awaitable[None]], what: Callable[[], str],
                          oci: bool = False) -> None:
    """Unpack into root what fetch streams, while it streams: download, hashing and unpacking overlap.

    The unpacker runs in the user namespace (a launcher child), fed through a
    pipe; fetch verifies what it sends, and its error (a digest mismatch)
    cancels the unpacker, so the caller's staging dir is discarded and
    nothing unverified is published. An unpacker done early (the end of the
    archive) lets the download go on to its end, verified; one that fails
    cancels it. Downloads take a slot of the process-wide download limit.
    """
    async with limit("download"):
        r, w = os.pipe()
        out = trio.lowlevel.FdStream(w)  # owns w from here
        read_end = [r]

        def close_read_end() -> None:  # once the unpacker has ended, writes to the pipe fail: see send_or_drop
            while read_end:
                os.close(read_end.pop())

        async def unpacker() -> None:
            try:
                await unpack_child(root, r, what, oci=oci)
            finally:
                close_read_end()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(unpacker)
                ended: list[bool] = []
                try:
                    async def sink(chunk: bytes) -> None:
                        await send_or_drop(out, chunk, ended)

                    await fetch(sink)
                finally:
                    await out.aclose()
        finally:
            close_read_end()  # the unpacker never started (cancelled at once)


async def send_or_drop(out: trio.lowlevel.FdStream, chunk: bytes, ended: list[bool]) -> None:
    """Feed the unpacker; once it has stopped reading (at the end of the archive, or failed), drop the rest.

    The download goes on to its end all the same, so that its digest is
    checked in full; the unpacker's exit status says whether it was content.
    """
    if ended:
        return
    try:
        await out.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        ended.append(True)
