"""The registry auth flow in process: its pure decisions, and RegistryAuth against httpx's MockTransport (no network)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from plash.engine.fetch import http
from plash.engine.fetch.auth import (
    NO_TOKEN_SERVICE,
    Challenge,
    choose_challenge,
    read_challenges,
    read_token,
    token_url,
)
from plash.engine.fetch.oci import Ref, Registry
from plash.errors import FetchError

REGISTRY = "registry.example"
BASE = f"https://{REGISTRY}/v2/a/b"
REALM = "https://auth.example/token"
CHALLENGE = f'Bearer realm="{REALM}",service="registry.example",scope="repository:a/b:pull"'
SECRET = "s3cret-password"


def test_challenges_are_read_by_scheme_and_parameter() -> None:
    assert read_challenges(CHALLENGE) == [Challenge("bearer", {
        "realm": REALM, "service": "registry.example", "scope": "repository:a/b:pull"})]
    both = read_challenges('Basic realm="a, b", Bearer realm="https://x/t",scope=repository:a:pull')
    assert both == [Challenge("basic", {"realm": "a, b"}), Challenge("bearer", {"realm": "https://x/t", "scope": "repository:a:pull"})]
    assert read_challenges("Negotiate") == [Challenge("negotiate", {})]
    assert read_challenges("") == []
    assert choose_challenge(['Basic realm="r"', CHALLENGE], basic=False) == read_challenges(CHALLENGE)[0]
    assert choose_challenge(['Basic realm="r"'], basic=True) == Challenge("basic", {"realm": "r"})
    assert choose_challenge(['Basic realm="r"', 'Bearer service="no realm"'], basic=False) is None


def test_token_url_and_token() -> None:
    url = token_url(Challenge("bearer", {"realm": REALM, "service": "s"}), "a/b", BASE)
    assert url == f"{REALM}?service=s&scope=repository%3Aa%2Fb%3Apull"
    with pytest.raises(FetchError, match="the token service's address 'http://x:abc/' is invalid"):
        token_url(Challenge("bearer", {"realm": "http://x:abc/"}), "a/b", BASE)
    assert read_token(b'{"access_token": "abc.def"}', url, REALM) == "abc.def"
    with pytest.raises(FetchError, match="not a valid token") as e:
        read_token(b'{"token": "a b\\r\\nX-Evil: 1"}', url, REALM)
    assert "Evil" not in e.value.message


class FakeRegistry:
    """A registry and its token service as httpx handlers: tokens of a generation, revoked by `expire()`."""

    def __init__(self, password: str | None = None, scheme: str = "bearer") -> None:
        self.password, self.scheme = password, scheme
        self.generation = 1
        self.refusing = False  # a token service whose tokens the registry refuses
        self.token_asks: list[httpx.Request] = []
        self.seen: list[httpx.Request] = []
        self.pulled = 0  # chunks read of 401 bodies
        self.together = 0  # refuse nothing until this many requests are refused at once
        self.refused: list[str | None] = []  # the Authorization of each refused request (the flow changes requests)
        self.all_refused = trio.Event()

    def expire(self, together: int = 0) -> None:
        """Revoke the tokens; the next `together` requests that bring one are refused only once all have come."""
        self.generation += 1
        self.together, self.refused, self.all_refused = together, [], trio.Event()

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.host == "auth.example":
            self.token_asks.append(request)
            if self.refusing:
                return answer(200, b'{"token": "token-refused"}')
            if self.password and request.headers.get("Authorization") != basic("me", self.password):
                return answer(401)
            return answer(200, f'{{"token": "token-{self.generation}"}}'.encode())
        if request.url.host == "cdn.example":
            return answer(200, b"from the cdn")
        if self.scheme == "basic":
            if request.headers.get("Authorization") == basic("me", SECRET):
                return answer(200, b"ok")
            return answer(401, headers={"WWW-Authenticate": 'Basic realm="registry"'})
        if self.refusing or request.headers.get("Authorization") != f"Bearer token-{self.generation}":
            self.refused.append(request.headers.get("Authorization"))
            if len(self.refused) >= self.together:
                self.all_refused.set()
            await self.all_refused.wait()
            return httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE}, stream=Unread(self))
        if request.url.path.endswith("/redirect"):
            return answer(307, headers={"Location": "https://cdn.example/blob"})
        return answer(200, b"ok")


class Unread(httpx.AsyncByteStream):
    """A 401's long body (6 MiB; a hostile one has no end) that counts what is read of it: the flow must not read it."""

    def __init__(self, fake: FakeRegistry) -> None:
        self.fake = fake

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(100):
            self.fake.pulled += 1
            yield b"x" * 65536


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> httpx.Response:
    """An answer as a transport gives it: its body a stream, not read yet (as plash reads bodies: raw)."""
    return httpx.Response(status, headers={"Content-Length": str(len(body)), **(headers or {})},
                          stream=httpx.ByteStream(body))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def session(fake: FakeRegistry, credentials: tuple[str, str] | None = None) -> tuple[httpx.AsyncClient, Registry]:
    c = httpx.AsyncClient(transport=httpx.MockTransport(fake.handler), follow_redirects=True)
    return c, Registry(c, Ref(REGISTRY, "a/b", "1", None), credentials)


async def get(c: httpx.AsyncClient, path: str) -> bytes:
    return await http.get_bytes(c, f"{BASE}/{path}")


async def blob(c: httpx.AsyncClient, path: str) -> bytes:
    out = bytearray()

    async def keep(chunk: bytes) -> None:
        out.extend(chunk)

    await http.stream(c, f"{BASE}/{path}", keep, http.Verified(path, None, None))
    return bytes(out)


async def test_a_token_is_fetched_for_the_challenge_and_kept() -> None:
    fake = FakeRegistry()
    c, reg = session(fake)
    async with c:
        assert reg.headers() == {}  # the flow on the client authorizes, not the caller
        assert await get(c, "manifests/1") == b"ok"
        assert await blob(c, "blobs/x") == b"ok"
    assert [str(r.url) for r in fake.token_asks] == [
        f"{REALM}?service=registry.example&scope=repository%3Aa%2Fb%3Apull"]
    assert "Authorization" not in fake.token_asks[0].headers
    assert fake.pulled == 0


async def test_a_token_that_expires_on_blobs_is_renewed_once_for_all() -> None:
    fake = FakeRegistry()
    c, _ = session(fake)
    async with c:
        assert await get(c, "manifests/1") == b"ok"
        fake.expire(together=4)  # the four requests meet the expired token at once
        results: list[bytes] = []

        async def one(i: int) -> None:
            results.append(await blob(c, f"blobs/{i}"))

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(one, i)
        assert results == [b"ok"] * 4
    assert len(fake.token_asks) == 2  # the first token, and one renewal for the four that met its expiry
    assert fake.refused == ["Bearer token-1"] * 4
    assert fake.pulled == 0


async def test_a_second_401_is_an_error_without_secrets() -> None:
    fake = FakeRegistry(password=SECRET)
    c, _ = session(fake, ("me", SECRET))
    async with c:
        assert await get(c, "manifests/1") == b"ok"
        assert fake.token_asks[0].headers["Authorization"] == basic("me", SECRET)  # the token service gets the credentials
        assert fake.seen[-1].headers["Authorization"] == "Bearer token-1"  # the registry gets the token only
        fake.refusing = True
        for call in (get(c, "manifests/1"), blob(c, "blobs/x")):
            with pytest.raises(FetchError) as e:
                await call
            assert e.value.status == 401
            assert e.value.message.endswith(": HTTP 401 even with a token")
            shown = " ".join(e.value.lines())
            for secret in (SECRET, base64.b64encode(SECRET.encode()).decode(), "token-"):
                assert secret not in shown


async def test_basic_with_credentials_and_no_token_service_without() -> None:
    fake = FakeRegistry(scheme="basic")
    c, _ = session(fake, ("me", SECRET))
    async with c:
        assert await get(c, "manifests/1") == b"ok"
        assert await blob(c, "blobs/x") == b"ok"
    assert fake.token_asks == []
    anonymous = FakeRegistry(scheme="basic")
    c, _ = session(anonymous)
    async with c:
        with pytest.raises(FetchError) as e:
            await blob(c, "blobs/x")
    assert e.value.status == 401
    assert e.value.message == f"{BASE}/blobs/x: {NO_TOKEN_SERVICE}"


async def test_other_origins_get_no_authorization() -> None:
    fake = FakeRegistry()
    c, _ = session(fake)
    async with c:
        assert await get(c, "manifests/1") == b"ok"
        assert await blob(c, "redirect") == b"from the cdn"
        assert await http.get_bytes(c, "https://cdn.example/other") == b"from the cdn"
    cdn = [r for r in fake.seen if r.url.host == "cdn.example"]
    assert len(cdn) == 2
    assert not any("Authorization" in r.headers for r in cdn)
