"""plash push: an image of the store as an OCI image, in a registry, an OCI layout dir or a docker-archive file.

One OCI layer per plash layer (a layer without files is an empty_layer
history entry), packed reproducibly (plash.store.packing), compressed
with gzip (or zstd, or nothing for docker-archive); a config with the
diff_ids, one history entry per plash layer (what made it, its key) and
the image's run settings; a manifest. The same image pushed twice, or the
same build made on two machines, gives the same digests.
"""

from __future__ import annotations

import os

import trio

from plash.engine.events import note
from plash.engine.fetch import http, oci
from plash.engine.fetch.credentials import credentials_for
from plash.engine.push import image as docs
from plash.engine.push.targets import Archive, Layout, Registry, Target
from plash.engine.scheduler import first_error, run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.events import Emit
    from plash.store.layout import Store

COMPRESSIONS = ("gzip", "zstd")


def _created_by(meta: dict[str, list[str]]) -> str:
    """What made a layer, for its history entry: a local tarball by its file name, not where it was."""
    text = meta.get("created_by", ["plash layer"])[-1]
    kind, _, path = text.partition(" ")
    if kind == "tarball" and path.startswith("/"):
        return f"tarball {os.path.basename(path)}"
    return text


def _is_empty(store: Store, image: int) -> bool:
    try:
        return not os.listdir(store.layer_root(image))
    except OSError:
        return False  # unreadable here: the packer will say


async def push_image(store: Store, image: int, target_text: str, compression: str, created: int, emit: Emit,
                     cache_key: str | None = None) -> str:
    """Push image to target_text; return the manifest's digest. cache_key: a layer cache entry (see image.manifest)."""
    if target_text.startswith("oci:"):
        target: Target = Layout(store, target_text[len("oci:"):], compression, created, emit)
        return await _push_to(store, image, target, emit, cache_key)
    if target_text.startswith("docker-archive:"):
        target = Archive(store, target_text[len("docker-archive:"):], created, emit)
        return await _push_to(store, image, target, emit, cache_key)
    ref = oci.parse_ref(target_text)
    credentials = credentials_for(ref.registry, ref.repository)
    async with http.client() as c:
        target = Registry(store, c, ref, credentials, compression, created, emit)
        return await _push_to(store, image, target, emit, cache_key)


async def _push_to(store: Store, image: int, target: Target, emit: Emit, cache_key: str | None) -> str:
    hold = store.hold(image)  # no rm while its layers are read
    try:
        chain = store.chain(image)[1:]
        metas = [store.meta(i) for i in chain]
        infos = [docs.LayerInfo(None, _created_by(m), store.key_of(i), {k: m[k] for k in docs.CACHE_META if k in m})
                 for i, m in zip(chain, metas, strict=True)]
        await target.open()
        try:
            async with trio.open_nursery() as nursery:
                for n, (layer, info) in enumerate(zip(chain, infos, strict=True)):
                    if not _is_empty(store, layer):
                        nursery.start_soon(_one, target, layer, info, f"layer {n + 1}/{len(chain)} (image {layer})")
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        config = docs.image_config(infos, store.meta(image), target.clamp)
        manifest = docs.manifest(config, infos, cache_key)
        await target.finish(config, manifest)
        await trio.to_thread.run_sync(target.remember)
        digest = docs.digest_of(manifest)
        if cache_key is None:
            emit(note(f"pushed image {image} as {digest}"))
        return digest
    finally:
        target.close()
        os.close(hold)


async def _one(target: Target, layer: int, info: docs.LayerInfo, label: str) -> None:
    info.blob = await target.layer(layer, label)


def push(store: Store, image: int, target: str, compression: str, created: int, emit: Emit) -> str:
    result: str = run(push_image, store, image, target, compression, created, emit, emit=emit)
    return result
