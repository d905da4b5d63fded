"""The documents of a pushed image (OCI image spec): its config and manifest, made the same way every time.

JSON is written with sorted keys and no spaces, times in RFC 3339, so
that the same layers and settings give the same digests on any machine.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from hashlib import sha256  # OpenSSL: 6x the speed of the built-in module hashpath uses for start-up

from plash.engine.fetch.oci import GOARCH
from plash.engine.push.blobs import Packed
from plash.lang.tokens import unquote_words

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REF_NAME = "org.opencontainers.image.ref.name"
CACHE_ANNOTATION = "dev.plash.cache"
# what a cache entry carries of each layer's meta: what made it and an OCI image's settings; a hit
# takes nothing else from the cache (no mounts, no env names: those come from the build itself)
CACHE_META = ("created_by", "oci_env", "oci_workdir", "oci_cmd")


@dataclass
class LayerInfo:
    """One plash layer of the image: its blob (None for a layer without files), what made it, its key."""

    blob: Packed | None
    created_by: str
    key: str
    oci_meta: dict[str, list[str]] | None = None  # the layer's OCI settings (for a cache entry)


def canonical(doc: object) -> bytes:
    """Pure: a JSON document as bytes, the same for the same content."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(seconds: int) -> str:
    """Pure: a time as RFC 3339 in UTC, `1970-01-01T00:00:00Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def run_config(meta: dict[str, list[str]]) -> dict[str, object]:
    """Pure: the config section (Env, WorkingDir, Entrypoint, Cmd) from an image's run settings.

    An OCI image's own Env, WorkingDir and command are kept; a plash
    entrypoint becomes the Entrypoint. A PATH is given when none is set,
    since plash's containers have theirs from the image's /etc/profile.
    """
    env = list(meta.get("oci_env", []))
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, DEFAULT_PATH)
    config: dict[str, object] = {"Env": env}
    if meta.get("oci_workdir"):
        config["WorkingDir"] = meta["oci_workdir"][0]
    if meta.get("entrypoint"):
        config["Entrypoint"] = list(unquote_words(meta["entrypoint"][-1]))
    elif meta.get("oci_cmd"):
        config["Cmd"] = list(meta["oci_cmd"])
    return config


def image_config(layers: list[LayerInfo], meta: dict[str, list[str]], created: int) -> bytes:
    """Pure: the image config: platform, run settings, the diff_ids and one history entry per plash layer."""
    when = rfc3339(created)
    history: list[dict[str, object]] = []
    for layer in layers:
        entry: dict[str, object] = {"created": when, "created_by": layer.created_by}
        if not layer.key.startswith(("random-", "image-")):  # a content key: what the layer cache knows it by
            entry["comment"] = f"plash layer {layer.key}"
        if layer.blob is None:
            entry["empty_layer"] = True
        history.append(entry)
    arch = GOARCH.get(os.uname().machine, os.uname().machine)
    return canonical({
        "created": when, "architecture": arch, "os": "linux", "config": run_config(meta),
        "rootfs": {"type": "layers", "diff_ids": [x.blob.diff_id for x in layers if x.blob is not None]},
        "history": history,
    })


def descriptor(media_type: str, digest: str, size: int) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def manifest(config: bytes, layers: list[LayerInfo], cache_key: str | None = None) -> bytes:
    """Pure: the image manifest of a config and the layers' blobs.

    A layer cache entry (cache_key: the key it is tagged with) also lists
    every plash layer's key and the OCI settings it carries (annotation
    CACHE_ANNOTATION), so that a hit can be published under the same keys.
    """
    doc: dict[str, object] = {
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": descriptor(CONFIG_TYPE, digest_of(config), len(config)),
        "layers": [descriptor(x.blob.media_type, x.blob.digest, x.blob.size) for x in layers if x.blob is not None],
    }
    if cache_key is not None:
        listing = {"key": cache_key, "layers": [
            {"key": x.key, "empty": x.blob is None, "meta": x.oci_meta} for x in layers]}
        doc["annotations"] = {CACHE_ANNOTATION: canonical(listing).decode()}
    return canonical(doc)


def digest_of(data: bytes) -> str:
    return "sha256:" + sha256(data).hexdigest()


def parse_created(text: str | None) -> int:
    """The created time in seconds: `--created` (RFC 3339 in UTC, `now`, or `@SECONDS`), else SOURCE_DATE_EPOCH, else 0.

    A fixed default is what makes two pushes of the same layers the same
    image; every file time later than it is clamped to it.
    """
    from plash.errors import PlashError

    if text is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
        if not epoch:
            return 0
        if not epoch.isdigit():
            raise PlashError(f"SOURCE_DATE_EPOCH={epoch!r}: expected seconds since 1970")
        return int(epoch)
    if text == "now":
        return int(time.time())
    if text.startswith("@") and text[1:].isdigit():
        return int(text[1:])
    import calendar

    for pattern in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S+00:00", "%Y-%m-%d"):
        try:
            return calendar.timegm(time.strptime(text, pattern))
        except ValueError:
            continue
    raise PlashError(f"--created {text!r}: expected now, @SECONDS, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ")
