"""plash login's check: do credentials open a registry's /v2/, as docker login asks?

GET /v2/ without credentials; a 401 is answered as its challenge asks:
Basic with the credentials, or Bearer with a token the token service gives
for them (asked with no scope: there is no repository, and a pull scope
for none would be invalid); then /v2/ again, which must answer 2xx. A
registry that answers 2xx at once needs no credentials and accepts any.

Credentials travel only in Authorization headers, and never to a token
service on plain http unless that host may have plain http (loopback or
PLASH_INSECURE_REGISTRIES).
"""

from __future__ import annotations

import httpx
import trio

from plash.engine.fetch.auth import TOKEN_LIMIT, basic_header, choose_challenge, read_token
from plash.engine.fetch.http import NO_AUTH, Document, MiB, client, get_document
from plash.engine.fetch.oci import DOCKER_HUB, is_insecure_ok, registry_host
from plash.errors import FetchError

# /v2/ answers {} (a registry's error page may be larger); nothing of it is kept
ANSWER_LIMIT = 1 * MiB


def api_url(registry: str) -> str:
    """Pure: the URL of a registry's /v2/ (registry: a key as plash login writes it; docker.io is Docker Hub's)."""
    host = DOCKER_HUB if registry == "docker.io" else registry
    name, port = registry_host(host)
    netloc = host if ":" not in name else f"[{name}]" + (f":{port}" if port else "")  # a bare v6 address
    return f"{'http' if is_insecure_ok(host) else 'https'}://{netloc}/v2/"


def refused(registry: str, status: int) -> FetchError:
    return FetchError(f"{registry}: login refused (HTTP {status})", status=status)


async def check_login(c: httpx.AsyncClient, registry: str, username: str, password: str) -> None:
    """Return if the registry lets these credentials in; FetchError naming the registry if not."""
    url = api_url(registry)
    basic = basic_header(username, password)
    answer = await get_document(c, url, limit=ANSWER_LIMIT, what="the registry's answer", auth=NO_AUTH)
    if answer.status == 401:
        authorization = await answer_challenge(c, registry, answer, basic)
        answer = await get_document(c, url, {"Authorization": authorization}, limit=ANSWER_LIMIT,
                                    what="the registry's answer", auth=NO_AUTH)
        if answer.status in (401, 403):
            raise refused(registry, answer.status)
    if not 200 <= answer.status < 300:
        raise FetchError(f"{url}: HTTP {answer.status} {answer.reason}", status=answer.status)


async def answer_challenge(c: httpx.AsyncClient, registry: str, answer: Document, basic: str) -> str:
    """The Authorization header that answers a 401 of /v2/: basic itself, or a token asked for with it."""
    challenge = choose_challenge(answer.headers.get_list("www-authenticate"), basic=True)
    if challenge is None:
        raise FetchError(f"{registry}: HTTP 401 and no way to log in offered (neither Basic nor Bearer)", status=401)
    if challenge.scheme == "basic":
        return basic
    realm = challenge.params["realm"]
    try:
        url = httpx.URL(realm, params={k: v for k, v in challenge.params.items() if k == "service"})
    except httpx.InvalidURL as e:
        raise FetchError(f"{registry}: the token service's address {realm!r} is invalid ({e})") from None
    if url.scheme != "https" and not is_insecure_ok(url.netloc.decode("ascii", "replace")):
        raise FetchError(f"{registry}: the token service {realm} is not https: the credentials are not sent there")
    token = await get_document(c, str(url), {"Authorization": basic}, limit=TOKEN_LIMIT, what="the token answer",
                               auth=NO_AUTH)
    if token.status in (401, 403):
        raise refused(registry, token.status)
    if not 200 <= token.status < 300:
        raise FetchError(f"{url}: HTTP {token.status} {token.reason}", status=token.status)
    return f"Bearer {read_token(token.body, str(url), realm)}"


def verify_login(registry: str, username: str, password: str) -> None:
    """check_login, in a trio run of its own."""

    async def main() -> None:
        async with client() as c:
            await check_login(c, registry, username, password)

    trio.run(main)
