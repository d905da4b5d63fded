"""Base images from elsewhere: each kind of source is a producer that fills one staging dir.

    tarball      a local root file system tarball     (tarball.py)
    url          a tarball downloaded (and verified)   (url.py)
    lxc          an LXC image server's rootfs          (url.py)
    debootstrap  a Debian root made by mmdebstrap       (debootstrap.py)
    docker       an OCI image: registry, oci:DIR, docker-archive:FILE (oci.py, layout.py, archive.py)

The protocols (HTTP, the registry API, simplestreams) are in engine/fetch.
"""

from __future__ import annotations

from plash.engine.events import note
from plash.engine.imports import archive, debootstrap, layout, oci, tarball, url
from plash.engine.layers import LayerSpec, make_layer
from plash.engine.locks import KeyLock
from plash.engine.plan import Kinds
from plash.engine.scheduler import run
from plash.errors import PlashError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.events import Emit
    from plash.engine.plan import Source
    from plash.store.layout import Store


async def import_source(store: Store, source: Source, key: str, emit: Emit, reuse: bool = True,
                        insecure: bool = False, pull: bool = False) -> int:
    """Import a base image and record it under its key; reuse a recorded one unless told not to.

    pull (--pull): look at the source again, and import it if it changed
    (a registry image: its manifest; a URL: its content); the image under
    key is kept when it did not. A tarball's key is its content already, a
    source with a digest is pinned: pull changes nothing for them.
    """
    pull = pull and source.pullable()
    if pull:
        reuse = False
    what = f"the {source.kind} image {' '.join(source.args)}"
    first, rest = source.args[0], (source.args[1] if len(source.args) > 1 else None)
    if source.kind == Kinds.DOCKER:
        return await _docker(store, first, key, what, emit, reuse)
    content = url.Content(store, key, emit, pull)  # a download's digest: pulled again, the same one keeps its image
    if source.kind == Kinds.TARBALL:
        produce = tarball.producer(first, emit)
    elif source.kind == Kinds.URL:
        produce = url.url_producer(first, rest, emit, content)
    elif source.kind == Kinds.LXC:
        produce = url.lxc_producer(first, rest, insecure, emit, content)
    elif source.kind == Kinds.DEBOOTSTRAP:
        produce = debootstrap.producer(first, rest, emit)
    else:
        raise PlashError(f"cannot import from {source.kind}")  # an image of the store: nothing to import
    meta = {"created_by": [" ".join((source.kind, *source.args))]}
    try:
        image = await make_layer(store, LayerSpec(key, produce, what, meta=meta, kind="import"), 0, emit,
                                 reuse=reuse)
    except url.Unchanged as same:
        image = same.image
        if store.lookup_key(key) != image:  # the source went back to what it was
            store.record_key(key, image)
        return image
    if content.sha is not None:
        store.record_key(content.content_key(), image)
    return image


async def _docker(store: Store, ref: str, key: str, what: str, emit: Emit, reuse: bool) -> int:
    """An OCI image is a chain of layers of its own (shared by their keys); the source key names its top."""
    before = store.lookup_key(key)
    if reuse and before is not None:
        return before
    async with KeyLock(store, key, emit, what):
        found = store.lookup_key(key)  # another process may have imported it meanwhile
        if found is not None and (reuse or found != before):
            return found
        emit(note(f"importing {ref}"))
        image = await import_ref(store, ref, emit)
        store.record_key(key, image)
        return image


async def import_ref(store: Store, ref: str, emit: Emit) -> int:
    """An OCI image by reference: REGISTRY/NAME[:TAG|@DIGEST], oci:DIR[:TAG] or docker-archive:FILE."""
    if ref.startswith("oci:"):
        return await layout.import_layout(store, ref[len("oci:"):], emit)
    if ref.startswith("docker-archive:"):
        return await archive.import_archive(store, ref[len("docker-archive:"):], emit)
    return await oci.import_registry(store, ref, emit)


def run_import(store: Store, source: Source, emit: Emit, insecure: bool = False) -> int:
    """Import fresh (no cache lookup) and record the key, so later builds reuse the result."""

    async def go() -> int:
        return await import_source(store, source, source.import_key(), emit, reuse=False, insecure=insecure)

    result: int = run(go, emit=emit)
    return result


def lxc_url(name: str, insecure: bool, digest: str | None) -> str:
    """The rootfs URL import-lxc would download (for --dry)."""
    result: str = run(url.lxc_rootfs_url, name, insecure, digest)
    return result
