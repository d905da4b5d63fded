"""OCI / Docker registries (SPEC 6.2): references, manifests, platform choice.

The pure parts (parse_ref, is_loopback, the checks of registry documents,
choose_manifest) are plain functions; `Registry` does the HTTP through
plash's http module, with the registry's auth flow (auth.py) on the client. Registries are untrusted: every document is
read within a limit of its kind and checked before anything uses it, and a
malformed one is a FetchError naming its URL and what is wrong.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from hashlib import sha256  # OpenSSL: 6x the speed of the built-in module hashpath uses for start-up

import httpx

from plash.engine.fetch.auth import RegistryAuth
from plash.engine.fetch.http import Document, JSONObject, MiB, get_document, json_type, parse_json
from plash.errors import DigestMismatch, FetchError

__all__ = ["parse_json"]  # its home is http; kept importable from here

DOCKER_HUB = "registry-1.docker.io"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)
# What a registry's answers may weigh in memory. Manifests and indexes: 4 MiB,
# as containerd and the distribution registry accept (real ones are a few KiB);
# image configs: 8 MiB (they carry the build history, real ones are under
# 100 KiB); token answers: see auth.TOKEN_LIMIT.
MANIFEST_LIMIT = 4 * MiB
CONFIG_LIMIT = 8 * MiB
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
          "s390x": "s390x", "riscv64": "riscv64"}


class Ref:
    """registry, repository and tag or digest of an image reference."""

    __slots__ = ("digest", "registry", "repository", "tag")

    def __init__(self, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
        self.registry, self.repository, self.tag, self.digest = registry, repository, tag, digest

    @property
    def reference(self) -> str:
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        sep = "@" if self.digest else ":"
        return f"{self.registry}/{self.repository}{sep}{self.reference}"


def parse_ref(text: str) -> Ref:
    """`[registry[:port]/]name[:tag|@sha256:digest]`, Docker Hub by default (`library/` for single names)."""
    if not text or text != text.strip() or " " in text:
        raise FetchError(f"invalid image reference: {text!r}")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not digest.startswith("sha256:") or len(digest) != 71:
            raise FetchError(f"invalid digest in image reference: {text!r}")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, rest
    tag = None
    name, colon, maybe_tag = path.rpartition(":")
    if colon and "/" not in maybe_tag:
        path, tag = name, maybe_tag
    if not path or any(c.isupper() for c in path) or path.startswith("/") or "//" in path:
        raise FetchError(f"invalid image reference: {text!r}")
    if registry == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    return Ref(registry, path, tag, digest)


def registry_host(registry: str) -> tuple[str, str | None]:
    """Pure: the host and port of `host`, `host:port`, `[v6]`, `[v6]:port` or a bare v6 address (port None if absent)."""
    if registry.startswith("["):
        host, bracket, rest = registry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return registry, None
        return host, rest[1:] if rest else None
    if registry.count(":") == 1:
        host, _, port = registry.partition(":")
        return host, port
    return registry, None


def is_loopback(registry: str) -> bool:
    """Pure: whether a registry is this machine by its name: `localhost` or a loopback IP address, with or without port.

    Decided by parsing, never by prefix: `127.evil.example` and
    `127.0.0.1.nip.io` are names anyone can point anywhere.
    """
    host, port = registry_host(registry)
    if port is not None and not (port.isdigit() and port.isascii()):
        return False
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if registry.startswith("[") and ip.version != 6:  # brackets are for v6 addresses only
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def is_insecure_ok(registry: str) -> bool:
    """Plain http only for loopback registries or those in PLASH_INSECURE_REGISTRIES (`host` or `host:port`)."""
    if is_loopback(registry):
        return True
    host, _ = registry_host(registry)
    allowed = [r.strip() for r in os.environ.get("PLASH_INSECURE_REGISTRIES", "").split(",") if r.strip()]
    return registry in allowed or host in allowed


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor (OCI image spec), checked: a sha256 digest, its size and media type.

    size is None only where the document need not give one; member names the
    docker-archive member that holds a layer's bytes (archives have no blobs).
    """

    digest: str
    size: int | None = None
    media_type: str = ""
    member: str = ""

    @property
    def hex(self) -> str:
        return self.digest[len("sha256:"):]

    @property
    def short(self) -> str:
        return self.hex[:12]


def descriptor(desc: object, where: str, what: str, need_size: bool = True) -> Descriptor:
    """Pure: desc (JSON) as a Descriptor; FetchError naming where and what when it is not one."""
    checked = check_descriptor(desc, where, what, need_size)
    media_type = checked.get("mediaType")
    return Descriptor(checked["digest"], checked.get("size"), media_type if isinstance(media_type, str) else "")


def check_descriptor(desc: object, where: str, what: str, need_size: bool = True) -> JSONObject:
    """Pure: desc as a content descriptor (a sha256 digest, and a size unless need_size is False)."""
    if not isinstance(desc, dict):
        raise FetchError(f"{where}: {what} is not an object but {json_type(desc)}")
    digest = desc.get("digest")
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        shown = repr(digest)[:80] if digest is not None else "none"
        raise FetchError(f"{where}: {what} has no valid sha256 digest (digest: {shown})")
    size = desc.get("size")
    if (size is not None or need_size) and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise FetchError(f"{where}: {what} has no valid size (size: {repr(size)[:40]})")
    return desc


def check_manifest(doc: JSONObject, where: str) -> JSONObject:
    """Pure: doc as an image manifest (schema 2, a config and a list of layers, each a descriptor)."""
    if doc.get("schemaVersion") != 2:
        raise FetchError(f"{where}: unsupported manifest (schema {repr(doc.get('schemaVersion'))[:20]})")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise FetchError(f"{where}: the manifest has no list of layers")
    check_descriptor(doc.get("config"), where, "the config of the manifest")
    for i, layer in enumerate(layers):
        check_descriptor(layer, where, f"layer {i + 1} of the manifest")
    return doc


def choose_manifest(index: object, arch: str | None = None, variant: str | None = None,
                    where: str = "the manifest list") -> JSONObject:
    """The entry of a manifest list/index for linux on this machine."""
    arch = arch or GOARCH.get(os.uname().machine, os.uname().machine)
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list):
        raise FetchError(f"{where}: the manifest list has no list of manifests")

    def platform(m: object) -> JSONObject:
        p = m.get("platform") if isinstance(m, dict) else None
        return p if isinstance(p, dict) else {}

    candidates = [m for m in entries if platform(m).get("os") == "linux" and platform(m).get("architecture") == arch]
    if variant:
        candidates = [m for m in candidates if platform(m).get("variant") in (variant, None)]
    if not candidates:
        platforms = sorted({f"{platform(m).get('os')}/{platform(m).get('architecture')}" for m in entries})
        raise FetchError(f"{where}: no linux/{arch} image in the manifest list (has: {', '.join(platforms) or 'none'})")
    return check_descriptor(candidates[0], where, f"the linux/{arch} entry of the manifest list", need_size=False)


class Registry:
    """One registry session: its base URL, its auth flow (set on the client), manifests and blob URLs.

    The auth flow goes on the client so that every request the client sends
    to this registry, the blobs the caller streams with it too, answers a
    401 by itself (auth.RegistryAuth); so one Registry per client.
    """

    def __init__(self, c: httpx.AsyncClient, ref: Ref, credentials: tuple[str, str] | None = None,
                 actions: str = "pull") -> None:
        self.c, self.ref = c, ref
        host, port = registry_host(ref.registry)
        netloc = ref.registry if ":" not in host else f"[{host}]" + (f":{port}" if port else "")  # a bare v6 address
        self.base = f"{'http' if is_insecure_ok(ref.registry) else 'https'}://{netloc}/v2/{ref.repository}"
        self.auth = RegistryAuth(c, self.base, ref.repository, credentials, actions)
        c.auth = self.auth

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """extra as it is: Authorization comes from the auth flow on the client now (kept for old callers)."""
        return dict(extra or {})

    async def get(self, url: str, accept: str, limit: int, what: str) -> Document:
        """GET a document of at most limit bytes (a 401 is the auth flow's); FetchError for errors."""
        answer = await get_document(self.c, url, {"Accept": accept}, limit, what)
        if answer.status == 404:
            raise FetchError(f"{self.ref}: not found ({url})", status=404)
        if answer.status >= 400:
            raise FetchError(f"{url}: HTTP {answer.status} {answer.reason}", status=answer.status)
        if answer.status >= 300:  # a redirect httpx did not follow: no Location
            raise FetchError(f"{url}: HTTP {answer.status} {answer.reason} without a place to go", status=answer.status)
        return answer

    async def manifest(self) -> tuple[JSONObject, str]:
        """The image manifest for this machine (following a manifest list) and its digest."""
        url = f"{self.base}/manifests/{self.ref.reference}"
        answer = await self.get(url, ACCEPT, MANIFEST_LIMIT, "the manifest")
        digest = "sha256:" + sha256(answer.body).hexdigest()
        if self.ref.digest and digest != self.ref.digest:
            raise DigestMismatch(f"{self.ref}: manifest digest mismatch (got {digest})")
        doc = parse_json(answer.body, url, "the manifest")
        media = doc.get("mediaType") or answer.headers.get("content-type", "").split(";")[0]
        if media in INDEX_TYPES or "manifests" in doc:
            entry = choose_manifest(doc, where=url)
            url = f"{self.base}/manifests/{entry['digest']}"
            answer = await self.get(url, ACCEPT, MANIFEST_LIMIT, "the manifest")
            digest = "sha256:" + sha256(answer.body).hexdigest()
            if digest != entry["digest"]:
                raise DigestMismatch(f"{self.ref}: manifest digest mismatch (got {digest}, listed {entry['digest']})")
            doc = parse_json(answer.body, url, "the manifest")
        return check_manifest(doc, url), digest

    def blob_url(self, digest: str) -> str:
        return f"{self.base}/blobs/{digest}"
