"""Import an OCI/Docker image from a registry: one plash layer per OCI layer, shared by key.

Layers download concurrently (bounded) and are unpacked while they stream,
each verified against its digest; they are published in order, since each
is the parent of the next. An empty top layer carries the image config
(Env, WorkingDir, Entrypoint/Cmd), so images that share all layers but
differ in config still share the layers.
"""

from __future__ import annotations

import json
import os

import trio

from plash.engine.events import Event
from plash.engine.fetch import http, oci
from plash.engine.plan import digest as key_digest
from plash.errors import PlashError
from plash.store.layout import Store
from plash.store.staging import new_staging

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.jobs import Emit

LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}
DOWNLOADS = int(os.environ.get("PLASH_DOWNLOADS", "4"))


def layer_keys(layers: list[dict]) -> list[str]:
    keys, parent = [], key_digest("oci-root")
    for layer in layers:
        parent = key_digest("oci-layer", parent, layer["digest"])
        keys.append(parent)
    return keys


def config_meta(config: dict) -> dict[str, list[str]]:
    """The run-time settings plash keeps from an OCI image config."""
    cfg = config.get("config") or {}
    meta: dict[str, list[str]] = {}
    if cfg.get("Env"):
        meta["oci_env"] = [str(e) for e in cfg["Env"]]
    if cfg.get("WorkingDir"):
        meta["oci_workdir"] = [str(cfg["WorkingDir"])]
    cmd = list(cfg.get("Entrypoint") or []) + list(cfg.get("Cmd") or [])
    if cmd:
        meta["oci_cmd"] = [str(a) for a in cmd]
    return meta


async def import_registry(store: Store, ref_text: str, emit: Emit) -> int:
    from plash.engine.jobs import discard, unpack_child

    ref = oci.parse_ref(ref_text)
    async with http.client() as c:
        reg = oci.Registry(c, ref)
        manifest, _ = await reg.manifest()
        config_desc = manifest.get("config") or {}
        config_raw = bytearray()

        async def keep(chunk: bytes) -> None:
            config_raw.extend(chunk)

        await http.stream(c, reg.blob_url(config_desc["digest"]), keep,
                          _verified(reg.blob_url(config_desc["digest"]), config_desc), headers=reg.headers())
        config = json.loads(bytes(config_raw))
        layers = manifest["layers"]
        for layer in layers:
            if layer.get("mediaType") not in LAYER_TYPES:
                raise http.FetchError(f"{ref}: unsupported layer type {layer.get('mediaType')}")
        keys = layer_keys(layers)
        ids: list[int | None] = [store.lookup_key(k) for k in keys]
        published = [trio.Event() for _ in layers]
        limiter = trio.CapacityLimiter(DOWNLOADS)

        async def one(i: int) -> None:
            if ids[i] is not None:
                published[i].set()
                return
            layer = layers[i]
            staging = new_staging(store, "oci", with_work=False)
            root = os.path.join(staging, "img", "root")
            try:
                async with limiter:
                    await _fetch_layer(c, reg, layer, root, emit, unpack_child)
                if i:
                    await published[i - 1].wait()
                parent = ids[i - 1] if i else 0
                assert parent is not None
                ids[i] = store.lookup_key(keys[i]) or store.publish(os.path.join(staging, "img"), parent, None, keys[i])
                published[i].set()
            finally:
                await discard(staging)

        async with trio.open_nursery() as nursery:
            for i in range(len(layers)):
                nursery.start_soon(one, i)
    top = ids[-1] if ids else 0
    assert top is not None
    final_key = key_digest("oci-config", keys[-1] if keys else "", config_desc["digest"])
    found = store.lookup_key(final_key)
    if found is not None:
        return found
    staging = new_staging(store, "oci-config", with_work=False)
    try:
        return store.publish(os.path.join(staging, "img"), top, config_meta(config), final_key)
    finally:
        await discard(staging)


def _verified(url: str, desc: dict) -> http.Verified:
    d = desc.get("digest", "")
    if not d.startswith("sha256:"):
        raise PlashError(f"{url}: unsupported digest {d!r} (only sha256)")
    return http.Verified(url, d[len("sha256:"):], desc.get("size"))


async def _fetch_layer(c, reg: oci.Registry, layer: dict, root: str, emit: Emit, unpack_child) -> None:  # type: ignore[no-untyped-def]
    """Stream one layer blob into an OCI unpacker, checking its digest and size on the way."""
    url = reg.blob_url(layer["digest"])
    verify = _verified(url, layer)
    label = f"{reg.ref.repository}@{layer['digest'][7:19]}"
    emit(Event("download-start", label, 0, layer.get("size")))
    r, w = os.pipe()
    async with trio.open_nursery() as nursery:
        async def unpacker() -> None:
            try:
                await unpack_child(root, r, url, oci=True)
            finally:
                os.close(r)

        nursery.start_soon(unpacker)
        out = trio.lowlevel.FdStream(w)
        try:
            async def sink(chunk: bytes) -> None:
                await out.send_all(chunk)

            def progress(done: int, total: int | None) -> None:
                emit(Event("download-progress", label, done, total))

            await http.stream(c, url, sink, verify, progress, headers=reg.headers())
        except trio.BrokenResourceError:
            pass  # the unpacker stopped; its error is raised from the nursery
        finally:
            await out.aclose()
    emit(Event("download-done", label, verify.count, verify.count))
