"""A layer cache in OCI registries: --cache-from to look in before building, --cache-to to push new layers to.

A cache entry is an OCI image in the cache repository, tagged with a
layer's key (a sha256 hex: a valid tag), whose layers are the whole chain
below it; its manifest lists every plash layer's key (annotation
push.image.CACHE_ANNOTATION), so a hit is published under the same keys
and later builds reuse it locally. Shared ancestors are shared blobs, and
anyone can `podman pull` an entry.

Before a build's jobs run, one job per build looks for its highest missing
key in the caches (top down: one manifest request per key until a hit),
and a hit downloads only the layers the store lacks, verified by digest.
Layers made in the run are pushed as entries in the background, one at a
time, bounded by the download/upload limit, and finished before plash
exits. The cache never fails a build: a cache that cannot be reached, an
entry that does not verify, a push that is refused are warnings, and the
layer is built (or stays unpushed) instead.
"""

from __future__ import annotations

import math
import re

import trio

from plash.engine.events import note
from plash.engine.fetch import http, oci
from plash.engine.fetch.credentials import credentials_for
from plash.engine.imports.blobs import RegistryBlobs
from plash.engine.imports.oci import LAYER_TYPES, layer_producer
from plash.engine.layers import LayerSpec, make_chain
from plash.engine.plan import cached_on
from plash.engine.push import push_image
from plash.engine.push.image import CACHE_ANNOTATION, CACHE_META
from plash.engine.scheduler import Job, run_dag
from plash.engine.steps import made_by
from plash.errors import FetchError, PlashError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from plash.engine.events import Emit
    from plash.engine.plan import Prepared
    from plash.store.layout import Store

KEY = re.compile(r"[0-9a-f]{64}|random-[0-9a-f]{32}")


def check_repository(text: str, option: str) -> str:
    """A cache repository (`[REGISTRY/]NAME`, no tag or digest), or a PlashError naming the option."""
    try:
        ref = oci.parse_ref(text)
    except FetchError as e:
        raise PlashError(f"{option} {text}: {e.message}") from None
    if ref.tag or ref.digest:
        raise PlashError(f"{option} {text}: a layer cache is a repository: name it without a tag or digest")
    return f"{ref.registry}/{ref.repository}"


class Cache:
    """The caches of one run: where to look (sources), where to push (targets), and what came from where."""

    def __init__(self, sources: list[str], targets: list[str], no_cache: bool = False) -> None:
        # --no-cache takes nothing from a cache either; what it builds is pushed (it replaces the entries)
        self.sources = [] if no_cache else [check_repository(s, "--cache-from") for s in sources]
        self.targets = [check_repository(t, "--cache-to") for t in targets]
        self.failed: set[str] = set()  # sources that could not be used: not asked again in this run
        self.restored: set[tuple[str, str]] = set()  # (key, repository): not pushed back there
        self.send: trio.MemorySendChannel[tuple[str, int]] | None = None

    def __bool__(self) -> bool:
        return bool(self.sources or self.targets)


def read_listing(manifest: dict[str, Any], where: str, key: str) -> list[dict[str, Any]]:
    """Pure: the plash layers a cache entry lists, checked against its manifest; FetchError if it is not one."""
    annotations = manifest.get("annotations")
    text = annotations.get(CACHE_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(text, str):
        raise FetchError(f"{where}: not a plash layer cache entry (no {CACHE_ANNOTATION} annotation)")
    listing = http.parse_json(text.encode(), where, "the cache entry's layer list")
    layers = listing.get("layers")
    if listing.get("key") != key or not isinstance(layers, list) or not layers:
        raise FetchError(f"{where}: the cache entry is not the one of key {key[:12]}")
    for entry in layers:
        meta = entry.get("meta") if isinstance(entry, dict) else None
        if (not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not KEY.fullmatch(entry["key"])
                or not isinstance(entry.get("empty"), bool) or not isinstance(meta, dict)
                or not all(k in CACHE_META and isinstance(v, list) and all(isinstance(x, str) and "\0" not in x
                                                                           for x in v) for k, v in meta.items())):
            raise FetchError(f"{where}: the cache entry's layer list is malformed")
    if sum(not e["empty"] for e in layers) != len(manifest["layers"]):
        raise FetchError(f"{where}: the cache entry lists other layers than its manifest has")
    return layers


async def restore(store: Store, repository: str, key: str, known: dict[str, dict[str, list[str]]],
                  emit: Emit, on: str | None = None) -> tuple[int, list[str]] | None:
    """The image of key from a cache repository, made from the layers the store lacks; None on a miss.

    known: the meta of the layers this build would make itself (a hit gets
    theirs, not the cache's); other layers get what CACHE_META allows. on:
    the key of a layer the entry must be made on (a base just pulled), else
    it is a miss.
    """
    ref = oci.parse_ref(f"{repository}:{key}")
    async with http.client() as c:
        reg = oci.Registry(c, ref, credentials_for(ref.registry, ref.repository))
        try:
            manifest, _ = await reg.manifest()
        except FetchError as e:
            if e.status == 404:
                return None
            raise
        where = str(ref)
        entries = read_listing(manifest, where, key)
        if on is not None and on not in [e["key"] for e in entries]:
            emit(note(f"layer {key[:12]} of the layer cache {repository} is made on another base: not used"))
            return None
        descs = iter([oci.descriptor(d, where, f"layer {i + 1} of the manifest")
                      for i, d in enumerate(manifest["layers"])])
        blobs = RegistryBlobs(c, reg)
        specs = []
        for entry in entries:
            what = f"cached layer {entry['key'][:12]} from {repository}"
            produce = None
            if not entry["empty"]:
                desc = next(descs)
                if desc.media_type not in LAYER_TYPES:
                    raise FetchError(f"{where}: unsupported layer type {desc.media_type[:100] or 'none'}")
                produce = layer_producer(blobs, desc, emit)
            meta = known.get(entry["key"], entry["meta"])
            specs.append(LayerSpec(entry["key"], produce, what, meta=meta, kind="cache"))
        emit(note(f"layer {key[:12]} is in the layer cache {repository}"))
        image = await make_chain(store, specs, 0, emit)
        return image, [e["key"] for e in entries]


async def restore_highest(store: Store, plan: Prepared, cache: Cache, emit: Emit, base: int | None = None) -> None:
    """Restore the highest missing key of a build that a cache has (everything below it comes along).

    base: the base image, pulled already (--pull); only an entry made on it
    is a hit, and the base is not looked for.
    """
    order = [layer.key for layer, found in zip(reversed(plan.layers), reversed(plan.ids), strict=True)
             if found is None]
    if base is not None:  # the layers there on the new base are not looked for
        below: int | None = base
        there = 0
        while there < len(plan.layers) and (below := cached_on(store, plan.layers[there].key, below)) is not None:
            there += 1
        order = [layer.key for layer in reversed(plan.layers[there:])]
    elif plan.base_id is None:
        order.append(plan.base_key)
    on = store.key_of(base) if base is not None else None
    known = {layer.key: {**layer.meta, "created_by": [made_by(layer)]} for layer in plan.layers}
    for key in order:
        if base is None and store.lookup_key(key) is not None:  # made meanwhile (another build, another process)
            return
        for repository in cache.sources:
            if repository in cache.failed:
                continue
            try:
                found = await restore(store, repository, key, known, emit, on)
            except PlashError as e:
                cache.failed.add(repository)
                emit(note(f"warning: the layer cache {repository} cannot be used: {e.message}; building instead"))
                continue
            if found is None:
                continue
            image, keys = found
            await trio.to_thread.run_sync(_record, store, plan, key, image)
            cache.restored.update((k, repository) for k in [*keys, key])
            return


def _record(store: Store, plan: Prepared, key: str, image: int) -> None:
    """Index a hit under the key asked for, and the build's base under its own key (an import's source key)."""
    if store.lookup_key(key) is None:
        store.record_key(key, image)
    if plan.base_id is None and plan.layers and store.lookup_key(plan.base_key) is None:
        first = store.lookup_key(plan.layers[0].key)
        if first is not None:
            store.record_key(plan.base_key, store.parent(first))


def cached_jobs(store: Store, plans: list[Prepared], jobs: dict[str, Job], cache: Cache, emit: Emit) -> dict[str, Job]:
    """The DAG with the caches in it: a look-up job before each build's jobs; what they make, pushed."""
    out = dict(jobs)
    extra: dict[str, list[str]] = {}
    for plan in plans:
        keys = [plan.base_key, *(layer.key for layer in plan.layers)]
        if cache.sources and plan.pull and plan.source.pullable():
            # --pull: the base is looked at first; an entry is a hit only when it was made on that base
            look = f"cache-from {plan.final_key} pulled"

            async def look_up_on(base: int, plan: Prepared = plan) -> None:
                await restore_highest(store, plan, cache, emit, base)

            out[look] = Job(look, (plan.base_key,), "none", look_up_on, label="layer cache")
            for k in keys[1:]:
                extra.setdefault(k, []).append(look)
        elif cache.sources:
            look = f"cache-from {plan.final_key}"

            async def look_up(plan: Prepared = plan) -> None:
                await restore_highest(store, plan, cache, emit)

            out[look] = Job(look, (), "none", look_up, label="layer cache")
            for k in keys:
                extra.setdefault(k, []).append(look)
    for key, job in jobs.items():
        out[key] = _wrapped(job, tuple(extra.get(key, ())), cache)
    return out


def _wrapped(job: Job, more: tuple[str, ...], cache: Cache) -> Job:
    """job, after the look-ups in more, its result pushed to the caches when it made a layer."""
    n, run, pushes = len(job.deps), job.run, job.resource != "none" and bool(cache.targets)

    async def wrapped(*results: Any) -> Any:
        image = await run(*results[:n])
        if pushes and cache.send is not None and isinstance(image, int):
            cache.send.send_nowait((job.key, image))
        return image

    return Job(job.key, (*job.deps, *more), job.resource, wrapped, job.label)


async def _pusher(store: Store, cache: Cache, receive: trio.MemoryReceiveChannel[tuple[str, int]],
                  emit: Emit) -> None:
    """Push each layer made as a cache entry, in the order they were made, one at a time."""
    async with receive:
        async for key, image in receive:
            for repository in cache.targets:
                if (key, repository) in cache.restored:
                    continue
                try:
                    await push_image(store, image, f"{repository}:{key}", "gzip", 0, emit, cache_key=key)
                except PlashError as e:
                    emit(note(f"warning: layer {key[:12]} was not pushed to the layer cache {repository}: {e.message}"))
                else:
                    cache.restored.add((key, repository))
                    emit(note(f"pushed layer {key[:12]} to the layer cache {repository}"))


async def run_cached(store: Store, jobs: dict[str, Job], limits: dict[str, int], keep_going: bool, cache: Cache,
                     emit: Emit) -> dict[str, Any]:
    """run_dag, with the cache pushes going on beside it and finished before it returns."""
    send, receive = trio.open_memory_channel[tuple[str, int]](math.inf)
    cache.send = send
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_pusher, store, cache, receive, emit)
        try:
            results = await run_dag(jobs, limits, keep_going)
        finally:
            send.close()  # the pusher ends once it has pushed what is queued
    return results
