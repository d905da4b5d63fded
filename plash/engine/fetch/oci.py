"""OCI / Docker registries (SPEC 6.2): references, the token flow, manifests, platform choice.

The pure parts (parse_ref, the Bearer challenge, choose_manifest) are plain
functions; `Registry` does the HTTP through plash's http module.
"""

from __future__ import annotations

import json
import os

import httpx

from plash.engine.fetch.http import FetchError, get_bytes

DOCKER_HUB = "registry-1.docker.io"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
          "s390x": "s390x", "riscv64": "riscv64"}


class Ref:
    """registry, repository and tag or digest of an image reference."""

    __slots__ = ("registry", "repository", "tag", "digest")

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


def is_insecure_ok(registry: str) -> bool:
    """Plain http only for loopback registries or those in PLASH_INSECURE_REGISTRIES."""
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    if host in ("localhost", "[::1]") or host.startswith("127."):
        return True
    allowed = [r.strip() for r in os.environ.get("PLASH_INSECURE_REGISTRIES", "").split(",") if r.strip()]
    return registry in allowed or host in allowed


def parse_challenge(header: str) -> dict[str, str]:
    """The parameters of a `Bearer realm="...",service="...",scope="..."` challenge ({} if not Bearer)."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return {}
    out: dict[str, str] = {}
    i = 0
    while i < len(params):
        eq = params.find("=", i)
        if eq < 0:
            break
        key = params[i:eq].strip(" ,")
        if params[eq + 1:eq + 2] == '"':
            end = params.find('"', eq + 2)
            end = len(params) if end < 0 else end
            out[key] = params[eq + 2:end]
            i = end + 1
        else:
            end = params.find(",", eq)
            end = len(params) if end < 0 else end
            out[key] = params[eq + 1:end]
            i = end + 1
    return out


def choose_manifest(index: dict, arch: str | None = None, variant: str | None = None) -> dict:
    """The entry of a manifest list/index for linux on this machine."""
    arch = arch or GOARCH.get(os.uname().machine, os.uname().machine)
    candidates = [m for m in index.get("manifests", [])
                  if m.get("platform", {}).get("os") == "linux" and m.get("platform", {}).get("architecture") == arch]
    if variant:
        candidates = [m for m in candidates if m.get("platform", {}).get("variant") in (variant, None)]
    if not candidates:
        platforms = sorted({f"{m.get('platform', {}).get('os')}/{m.get('platform', {}).get('architecture')}"
                            for m in index.get("manifests", [])})
        raise FetchError(f"no linux/{arch} image in the manifest list (has: {', '.join(platforms) or 'none'})")
    return candidates[0]


class Registry:
    """One registry session: scheme, anonymous token, manifests and blobs."""

    def __init__(self, c: httpx.AsyncClient, ref: Ref) -> None:
        self.c, self.ref = c, ref
        self.base = f"{'http' if is_insecure_ok(ref.registry) else 'https'}://{ref.registry}/v2/{ref.repository}"
        self.token: str | None = None

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = dict(extra or {})
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    async def authorize(self, response: httpx.Response) -> None:
        """After a 401: get an anonymous token from the realm the challenge names."""
        params = parse_challenge(response.headers.get("www-authenticate", ""))
        if "realm" not in params:
            raise FetchError(f"{response.request.url}: HTTP 401 and no token service to ask (not an anonymous registry)")
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        query.setdefault("scope", f"repository:{self.ref.repository}:pull")
        url = httpx.URL(params["realm"], params=query)
        body = json.loads(await get_bytes(self.c, str(url)))
        token = body.get("token") or body.get("access_token")
        if not token:
            raise FetchError(f"{params['realm']}: no token in the answer")
        self.token = token

    async def get(self, url: str, accept: str | None = None) -> httpx.Response:
        """GET with the token flow; FetchError for errors."""
        for _ in range(2):
            try:
                r = await self.c.get(url, headers=self.headers({"Accept": accept} if accept else None))
            except httpx.TransportError as e:
                raise FetchError(f"{url}: {e or type(e).__name__}") from None
            if r.status_code == 401 and self.token is None:
                await self.authorize(r)
                continue
            if r.status_code == 404:
                raise FetchError(f"{self.ref}: not found ({url})")
            if r.status_code >= 400:
                raise FetchError(f"{url}: HTTP {r.status_code} {r.reason_phrase}")
            return r
        raise FetchError(f"{url}: HTTP 401 even with a token")

    async def manifest(self) -> tuple[dict, str]:
        """The image manifest for this machine (following a manifest list) and its digest."""
        from plash.lang.hashpath import sha256

        r = await self.get(f"{self.base}/manifests/{self.ref.reference}", ACCEPT)
        body = r.content
        digest = "sha256:" + sha256(body).hexdigest()
        if self.ref.digest and digest != self.ref.digest:
            raise FetchError(f"{self.ref}: manifest digest mismatch (got {digest})")
        doc = json.loads(body)
        media = doc.get("mediaType") or r.headers.get("content-type", "").split(";")[0]
        if media in INDEX_TYPES or "manifests" in doc:
            entry = choose_manifest(doc)
            r = await self.get(f"{self.base}/manifests/{entry['digest']}", ACCEPT)
            body = r.content
            digest = "sha256:" + sha256(body).hexdigest()
            if digest != entry["digest"]:
                raise FetchError(f"{self.ref}: manifest digest mismatch (got {digest}, listed {entry['digest']})")
            doc = json.loads(body)
        if doc.get("schemaVersion") != 2 or "layers" not in doc:
            raise FetchError(f"{self.ref}: unsupported manifest (schema {doc.get('schemaVersion')})")
        return doc, digest

    def blob_url(self, digest: str) -> str:
        return f"{self.base}/blobs/{digest}"
