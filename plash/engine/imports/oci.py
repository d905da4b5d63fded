"""An OCI image as plash layers: one per OCI layer, shared by key, and an empty top layer for the config.

Layers are unpacked while they download, each verified against its
digest, one per two cores at a time (see unpack_slots); they are
published in order, since each is the parent of the next, and only when
all are verified. The empty top layer carries the image config (Env,
WorkingDir, Entrypoint/Cmd), so images that share all layers but differ in
config still share the layers.
"""

from __future__ import annotations

import contextlib
import os

import trio

from plash.engine.events import note
from plash.engine.fetch import credentials, http, oci
from plash.engine.fetch.http import JSONObject
from plash.engine.fetch.oci import Descriptor
from plash.engine.imports.blobs import FileBlobs, RegistryBlobs, read_blob
from plash.engine.layers import Download, LayerSpec, make_chain, unpack_download
from plash.engine.plan import digest as key_digest
from plash.errors import FetchError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.events import Emit
    from plash.engine.layers import Produce, Sink
    from plash.store.layout import Store
    from plash.store.staging import Staging

SMALL_LAYER = 4 << 20  # compressed bytes

LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}


def layer_keys(layers: list[Descriptor]) -> list[str]:
    keys, parent = [], key_digest("oci-root")
    for layer in layers:
        parent = key_digest("oci-layer", parent, layer.digest)
        keys.append(parent)
    return keys


def config_meta(config: object, where: str = "the image config") -> dict[str, list[str]]:
    """The run-time settings plash keeps from an OCI image config; FetchError naming where for a malformed one."""
    if not isinstance(config, dict):
        raise http.FetchError(f"{where}: not a JSON object")
    cfg = config.get("config")
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, dict):
        raise http.FetchError(f"{where}: its config is not an object")

    def strings(key: str) -> list[str]:
        value = cfg.get(key) or []
        if isinstance(value, str) and key != "Env":  # Docker's own reader takes a string for a list of one
            value = [value]
        # a NUL byte cannot pass execve: say so now, not when the image runs
        if not isinstance(value, list) or not all(isinstance(v, str) and "\0" not in v for v in value):
            raise http.FetchError(f"{where}: config.{key} is not a list of strings")
        return value

    meta: dict[str, list[str]] = {}
    if env := strings("Env"):
        meta["oci_env"] = env
    workdir = cfg.get("WorkingDir") or ""
    if not isinstance(workdir, str) or "\0" in workdir:
        raise http.FetchError(f"{where}: config.WorkingDir is not a string")
    if workdir:
        meta["oci_workdir"] = [workdir]
    if cmd := strings("Entrypoint") + strings("Cmd"):
        meta["oci_cmd"] = cmd
    return meta


def manifest_key(manifest_digest: str) -> str:
    """The key under which the image of a registry manifest is recorded (by its digest)."""
    return key_digest("oci-manifest", manifest_digest)


async def import_registry(store: Store, ref_text: str, emit: Emit) -> int:
    """The image of a registry reference; a manifest imported before (same digest) downloads nothing more."""
    ref = oci.parse_ref(ref_text)
    async with http.client() as c:
        reg = oci.Registry(c, ref, credentials.credentials_for(ref.registry, ref.repository))
        manifest, manifest_digest = await reg.manifest()
        known = store.lookup_key(manifest_key(manifest_digest))
        if known is not None:
            emit(note(f"{ref} is {manifest_digest[:19]}, in the store already: nothing to download"))
            return known
        image = await import_manifest(store, RegistryBlobs(c, reg), manifest, str(ref), emit)
    await trio.to_thread.run_sync(store.record_key, manifest_key(manifest_digest), image)
    return image


async def import_manifest(store: Store, blobs: RegistryBlobs | FileBlobs, manifest: JSONObject, name: str,
                          emit: Emit) -> int:
    """The image of a manifest: its config read and checked whole, then its layers made as one chain."""
    # the manifest and the config are checked whole before any layer is fetched or
    # published: a bad config found after the layers would leave them behind
    found = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(found, list):
        raise FetchError(f"{name}: the manifest has no list of layers")
    layers = [oci.descriptor(layer, name, f"layer {i + 1} of the manifest", need_size=False)
              for i, layer in enumerate(found)]
    config_desc = oci.descriptor(manifest.get("config"), name, "the config of the manifest")
    where = (blobs.reg.blob_url(config_desc.digest) if isinstance(blobs, RegistryBlobs)
             else f"{name}: the image config {config_desc.digest}")
    assert config_desc.size is not None
    if config_desc.size > oci.CONFIG_LIMIT:  # the digest check stops the download at the listed size
        raise FetchError(f"{where}: the image config is larger than {http.size_text(oci.CONFIG_LIMIT)}")
    seconds = http.document_timeout()
    with trio.move_on_after(seconds) as waiting:
        raw = await read_blob(blobs, config_desc)
    if waiting.cancelled_caught:
        raise FetchError(f"{where}: the image config did not arrive within {seconds:g} s "
                         "(PLASH_HTTP_DOCUMENT_TIMEOUT)")
    config = oci.parse_json(raw, where, "the image config")
    return await import_layers(store, blobs, layers, config_desc, config, where, name, emit)


async def import_layers(store: Store, blobs: RegistryBlobs | FileBlobs, layers: list[Descriptor],
                        config_desc: Descriptor, config: object, where: str, name: str, emit: Emit) -> int:
    """The layers as one chain of plash layers, topped by an empty one with the config's settings."""
    for layer in layers:
        if layer.media_type not in LAYER_TYPES:
            raise FetchError(f"{name}: unsupported layer type {layer.media_type[:100] or 'none'}")
    meta = config_meta(config, where)
    keys = layer_keys(layers)
    slots = unpack_slots()
    specs = [LayerSpec(key, layer_producer(blobs, layer, emit, slots), f"layer {key[:12]} of {name}",
                       meta={"created_by": [f"docker {name} layer {i}/{len(layers)} {layer.digest}"]}, kind="oci")
             for i, (key, layer) in enumerate(zip(keys, layers, strict=True), 1)]
    top = key_digest("oci-config", keys[-1] if keys else "", config_desc.digest)
    specs.append(LayerSpec(top, None, f"layer {top[:12]} of {name}",
                           meta={**meta, "created_by": [f"docker {name} config {config_desc.digest}"]}, kind="oci-config"))
    return await make_chain(store, specs, 0, emit)


def unpack_slots() -> trio.CapacityLimiter:
    """How many big layers of one image are unpacked (and so downloaded) at once: one per two cores.

    An unpacker keeps two cores busy, one thread inflating and one writing
    the files: more unpackers at once only share the same cores (measured
    on 2 cores: no faster), and each holds a process's memory. A small
    layer (at most SMALL_LAYER) takes no slot: it is done in a moment, and
    what it costs most, its process's start, then overlaps with a big one.
    """
    return trio.CapacityLimiter(max(1, len(os.sched_getaffinity(0)) // 2))


def layer_producer(blobs: RegistryBlobs | FileBlobs, layer: Descriptor, emit: Emit,
                   slots: trio.CapacityLimiter | None = None) -> Produce:
    """Stream one layer blob into an OCI unpacker, checking its digest and size on the way (in one of slots)."""
    label = blobs.label(layer)

    async def produce(staging: Staging) -> None:
        async def fetch(sink: Sink) -> None:
            progress = Download(emit, label, layer.size)
            await blobs.fetch(layer, sink, progress)
            progress.done()

        small = layer.size is not None and layer.size <= SMALL_LAYER
        async with contextlib.nullcontext() if slots is None or small else slots:
            await unpack_download(staging.upper, fetch, lambda: label, oci=True)

    return produce
