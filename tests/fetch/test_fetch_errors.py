"""Fetch errors are data: the HTTP status in FetchError.status, a digest that disagrees as DigestMismatch (in process)."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from plash.engine.fetch import lxc
from plash.engine.fetch.oci import Registry, parse_ref
from plash.errors import DigestMismatch, FetchError

MANIFEST = json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:" + "a" * 64, "size": 2}, "layers": []}).encode()


def client(routes: dict[str, tuple[int, bytes]]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        status, body = routes.get(request.url.path, (404, b""))
        return httpx.Response(status, headers={"Content-Length": str(len(body))}, stream=httpx.ByteStream(body))

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(("status", "ending"), [(404, "not found (https://registry.example/v2/a/b/manifests/1)"),
                                                (403, "HTTP 403 Forbidden")])
async def test_a_manifest_error_carries_its_status(status: int, ending: str) -> None:
    async with client({"/v2/a/b/manifests/1": (status, b"")}) as c:
        with pytest.raises(FetchError) as e:
            await Registry(c, parse_ref("registry.example/a/b:1")).manifest()
    assert e.value.status == status
    assert e.value.message.endswith(ending)


async def test_a_manifest_that_disagrees_with_its_digest() -> None:
    wrong, right = "sha256:" + "b" * 64, "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
    async with client({f"/v2/a/b/manifests/{wrong}": (200, MANIFEST), f"/v2/a/b/manifests/{right}": (200, MANIFEST)}) as c:
        with pytest.raises(DigestMismatch, match="manifest digest mismatch"):
            await Registry(c, parse_ref(f"registry.example/a/b@{wrong}")).manifest()
        manifest, digest = await Registry(c, parse_ref(f"registry.example/a/b@{right}")).manifest()
    assert digest == right
    assert manifest["layers"] == []


async def test_an_lxc_catalogue_error_keeps_its_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLASH_LXC_URL", "https://lxc.example")
    async with client({"/streams/v1/index.json": (410, b"")}) as c:
        with pytest.raises(FetchError) as e:
            await lxc.resolve(c, "debian:bookworm")
    assert e.value.status == 410
    assert e.value.message == "https://lxc.example/streams/v1/index.json: HTTP 410 Gone"
    assert e.value.hint is not None
