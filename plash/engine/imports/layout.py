"""oci:DIR[:TAG]: an image from an OCI image layout directory (as skopeo and buildah write them)."""

from __future__ import annotations

import os

import trio

from plash.engine.fetch import oci
from plash.engine.fetch.oci import Descriptor
from plash.engine.imports.blobs import FileBlobs, Readable, read_blob
from plash.engine.imports.oci import import_manifest
from plash.errors import PlashError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.events import Emit
    from plash.store.layout import Store


def _read_index(spec: str) -> tuple[str, str, bytes]:
    """The layout's dir, the tag asked for, and its index.json (at most MANIFEST_LIMIT + 1 bytes of it)."""
    path, _, tag = spec.partition(":") if not os.path.isdir(spec) else (spec, "", "")
    try:
        with open(os.path.join(path, "index.json"), "rb") as f:
            return path, tag, f.read(oci.MANIFEST_LIMIT + 1)
    except OSError as e:
        raise PlashError(f"oci:{spec}: not an OCI image layout ({e.strerror})") from None


async def import_layout(store: Store, spec: str, emit: Emit) -> int:
    """oci:DIR[:TAG]: an OCI image layout directory."""
    path, tag, raw = await trio.to_thread.run_sync(_read_index, spec)
    if len(raw) > oci.MANIFEST_LIMIT:
        raise PlashError(f"oci:{spec}: index.json is larger than {oci.MANIFEST_LIMIT >> 20} MiB")
    index = oci.parse_json(raw, f"oci:{spec}", "index.json")

    def opener(desc: Descriptor) -> Readable:
        try:
            return open(os.path.join(path, "blobs", "sha256", desc.hex), "rb")
        except OSError as e:
            raise PlashError(f"oci:{spec}: missing blob {desc.digest}: {e.strerror}") from None

    blobs = FileBlobs(opener, f"oci:{path}")
    entries = index.get("manifests", [])
    if not isinstance(entries, list) or not all(isinstance(m, dict) for m in entries):
        raise PlashError(f"oci:{spec}: index.json has no list of manifests")
    for m in entries:
        oci.check_descriptor(m, f"oci:{spec}: index.json", "a manifest entry")  # each, before one is chosen
    if tag:
        entries = [m for m in entries if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag]
    if len(entries) != 1:
        raise PlashError(f"oci:{spec}: {'no image tagged ' + tag if tag else 'several images: name one with oci:DIR:TAG'}"
                         if not (tag and entries) else f"oci:{spec}: several images tagged {tag}")
    entry = oci.descriptor(entries[0], f"oci:{spec}: index.json", "a manifest entry")
    doc = oci.parse_json(await read_blob(blobs, entry), f"oci:{spec}", "the manifest")
    if entry.media_type in oci.INDEX_TYPES or "manifests" in doc:
        entry = oci.descriptor(oci.choose_manifest(doc, where=f"oci:{spec}"), f"oci:{spec}", "the manifest entry")
        doc = oci.parse_json(await read_blob(blobs, entry), f"oci:{spec}", "the manifest")
    return await import_manifest(store, blobs, doc, f"oci:{spec}", emit)
