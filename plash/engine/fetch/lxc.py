"""LXC image servers (SPEC 6.1): find a root file system and its digest.

The simplestreams catalogue (streams/v1/index.json -> the images product
file) gives the item of ftype root.tar.xz with its sha256 and size. The plain index
(meta/1.0/index-user, index-system) has no digests, so it is used only with
--insecure or a digest from the user.
"""

from __future__ import annotations

import json
import os

import httpx

from plash.engine.fetch.http import JSONObject, get_bytes
from plash.engine.plan import debian_arch
from plash.errors import DigestMismatch, FetchError

DEFAULT_URL = "https://images.linuxcontainers.org"


def base_url() -> str:
    return os.environ.get("PLASH_LXC_URL", DEFAULT_URL).rstrip("/")


class Rootfs:
    """Where a root file system tarball is, and what it must hash to (None: unverified)."""

    def __init__(self, url: str, sha256: str | None, size: int | None) -> None:
        self.url, self.sha256, self.size = url, sha256, size


def split_name(name: str) -> tuple[str, str]:
    distro, sep, release = name.partition(":")
    if not sep or not distro or not release:
        raise FetchError(f"expected DISTRO:RELEASE, got {name!r}")
    return distro, release


ROOTFS_FTYPE = "root.tar.xz"


def rootfs_item(items: JSONObject) -> JSONObject | None:
    """Pure: the root.tar.xz item of one version, found by its ftype whatever its key (as LXD's client does).

    Servers key items as they like (root.tar.xz, rootfs.tar.xz, ...) beside
    lxd.tar.xz, root.squashfs, disk.qcow2 and deltas; an item without an
    ftype counts by its key, as older catalogues wrote them.
    """
    found = [(key != ROOTFS_FTYPE, key, item) for key, item in items.items() if isinstance(item, dict)
             and item.get("ftype", key) == ROOTFS_FTYPE and item.get("path") and item.get("sha256")]
    return min(found, key=lambda f: f[:2])[2] if found else None


def pick_from_streams(base: str, images: JSONObject, distro: str, release: str, arch: str) -> Rootfs | None:
    """Pure: the newest version of distro:release:arch:default with a root.tar.xz, in a simplestreams products document."""
    product = images.get("products", {}).get(f"{distro}:{release}:{arch}:default")
    if not product:
        return None
    versions = product.get("versions", {})
    for version in sorted(versions, reverse=True):
        item = rootfs_item(versions[version].get("items") or {})
        if item:
            size = item.get("size")
            url = f"{base}/{item['path'].lstrip('/')}"
            return Rootfs(url, str(item["sha256"]).lower(), int(size) if size is not None else None)
    return None


def pick_from_index(base: str, text: str, distro: str, release: str, arch: str) -> Rootfs | None:
    """Pure: the rootfs of the newest build in a meta/1.0 index (lines distro;release;arch;variant;build;path/)."""
    best: tuple[str, str] | None = None
    for line in text.splitlines():
        parts = line.strip().split(";")
        if (len(parts) >= 6 and parts[:4] == [distro, release, arch, "default"]
                and (best is None or parts[4] > best[0])):
            best = (parts[4], parts[5])
    if best is None:
        return None
    return Rootfs(f"{base}/{best[1].strip('/')}/rootfs.tar.xz", None, None)


async def resolve(c: httpx.AsyncClient, name: str, insecure: bool = False, digest: str | None = None) -> Rootfs:
    """Find DISTRO:RELEASE for this machine's architecture on the LXC image server."""
    distro, release = split_name(name)
    arch = debian_arch()
    base = base_url()
    try:
        index = json.loads(await get_bytes(c, f"{base}/streams/v1/index.json"))
        paths = [v.get("path") for v in index.get("index", {}).values() if v.get("datatype") == "image-downloads"]
        for path in paths or ["streams/v1/images.json"]:
            images = json.loads(await get_bytes(c, f"{base}/{path}"))
            found = pick_from_streams(base, images, distro, release, arch)
            if found:
                if digest and found.sha256 != digest.lower():
                    raise DigestMismatch(f"{name}: the server lists sha256 {found.sha256}, not the given {digest}")
                return found
        failure = FetchError(f"{name} ({arch}) is not in the image catalogue of {base}")
    except DigestMismatch:
        raise
    except FetchError as e:
        failure = e
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as e:
        # wrong JSON types or shapes from a hostile or broken server: a message, never a traceback
        failure = FetchError(f"{base}: bad simplestreams catalogue ({e!r:.200})")
    if not (insecure or digest):
        unreachable = failure.message.startswith("cannot reach ")  # the plain index is on the same server
        raise FetchError(failure.message, status=failure.status,
                         hint=None if unreachable else
                         "the plain index has no digests: use --insecure (or give the sha256) to use it")
    for index_name in ("index-user", "index-system"):
        try:
            text = (await get_bytes(c, f"{base}/meta/1.0/{index_name}")).decode()
        except FetchError:
            continue
        found = pick_from_index(base, text, distro, release, arch)
        if found:
            found.sha256 = digest.lower() if digest else None
            return found
    raise FetchError(f"{name} ({arch}) is not on {base}")
