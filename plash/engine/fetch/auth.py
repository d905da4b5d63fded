"""Registry auth as an httpx Auth flow: a 401's challenge answered with a Bearer token or Basic, then one retry.

The decisions are pure functions over a 401's challenges (`read_challenges`,
`choose_challenge`, `token_url`, `read_token`); `RegistryAuth` drives them
for every request a client sends to one registry, manifests and blobs alike,
so that a token that expires in the middle of an import is renewed where it
expires. The one piece of I/O of its own is the token request, made with
plash's bounded `get_bytes`.

Secrets stay out of error messages: a token is checked and never shown,
credentials travel only in Authorization headers, and the token service's
URL carries only the challenge's service and scope.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import httpx
import trio

from plash.engine.fetch.http import NO_AUTH, MiB, get_bytes, leave_unread, parse_json
from plash.errors import FetchError

# A token answer may weigh 1 MiB in memory (a JWT is a few KiB).
TOKEN_LIMIT = 1 * MiB
TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")  # RFC 6750 b64token
NO_TOKEN_SERVICE = "HTTP 401 and no token service to ask (not an anonymous registry)"


@dataclass(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header: its scheme (lower case) and parameters."""

    scheme: str
    params: dict[str, str]


def read_challenges(header: str) -> list[Challenge]:
    """Pure: the challenges of a WWW-Authenticate value, `Bearer realm="...",scope="..."` or several in a row.

    A token of its own (no `=` after it) starts a new challenge; quoted
    values may hold commas; a challenge with no parameters has {}.
    """
    out: list[Challenge] = []
    i, n = 0, len(header)
    while i < n:
        while i < n and header[i] in " ,\t":
            i += 1
        start = i
        while i < n and header[i] not in " ,=\t":
            i += 1
        word = header[start:i]
        j = i
        while j < n and header[j] in " \t":
            j += 1
        if j < n and header[j] == "=" and out:  # a parameter of the challenge before
            i = j + 1
            if header[i:i + 1] == '"':
                end = header.find('"', i + 1)
                end = n if end < 0 else end
                value, i = header[i + 1:end], end + 1
            else:
                end = header.find(",", i)
                end = n if end < 0 else end
                value, i = header[i:end].strip(), end
            out[-1].params[word.lower()] = value
        elif word:
            out.append(Challenge(word.lower(), {}))
        else:
            i += 1
    return out


def choose_challenge(headers: list[str], basic: bool) -> Challenge | None:
    """Pure: the challenge to answer: a Bearer one with a realm, else a Basic one when there are credentials."""
    challenges = [c for header in headers for c in read_challenges(header)]
    for c in challenges:
        if c.scheme == "bearer" and c.params.get("realm"):
            return c
    if basic:
        for c in challenges:
            if c.scheme == "basic":
                return c
    return None


def token_url(challenge: Challenge, repository: str, where: str, actions: str = "pull") -> str:
    """Pure: the token service's URL for a Bearer challenge: its realm with service and scope (actions by default)."""
    query = {k: v for k, v in challenge.params.items() if k in ("service", "scope")}
    query.setdefault("scope", f"repository:{repository}:{actions}")
    realm = challenge.params["realm"]
    try:
        return str(httpx.URL(realm, params=query))
    except httpx.InvalidURL as e:
        raise FetchError(f"{where}: the token service's address {realm!r} is invalid ({e})") from None


def read_token(body: bytes, url: str, realm: str) -> str:
    """Pure: the token of a token service's answer, checked to fit a header line; FetchError naming the realm."""
    answer = parse_json(body, url, "the token answer")
    token = answer.get("token") or answer.get("access_token")
    if not token:
        raise FetchError(f"{realm}: no token in the answer")
    # the token goes into a header line as it is: only the characters of a token68 may pass
    if not isinstance(token, str) or not TOKEN.fullmatch(token):
        raise FetchError(f"{realm}: the token in the answer is not a valid token")
    return token


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """Pure: scheme, host and port of a URL (the port None for the scheme's default)."""
    return url.scheme, url.host, url.port


class RegistryAuth(httpx.Auth):  # type: ignore[misc, unused-ignore]  # Any where mypy cannot see httpx
    """The auth of one registry for every request a client sends there, blobs too.

    Requests to other origins (a token service, a CDN a blob redirects to)
    pass untouched. A 401 from the registry is answered once: with a token
    for the challenge's realm, service and scope (Bearer; asked with the
    credentials if there are any), or with the credentials (Basic); then the
    request goes again, and a second 401 is an error. The Authorization is
    kept for the requests that follow, and the tasks that meet the same
    expired token at once ask for one new token between them.
    """

    def __init__(self, c: httpx.AsyncClient, base: str, repository: str,
                 credentials: tuple[str, str] | None = None, actions: str = "pull") -> None:
        self.c, self.repository, self.actions = c, repository, actions
        self.origin = origin(httpx.URL(base))
        self.basic = basic_header(*credentials) if credentials else None
        self.authorization: str | None = None
        self.renewing = trio.Lock()

    def __repr__(self) -> str:  # never the credentials or the token
        return f"<RegistryAuth {self.origin[0]}://{self.origin[1]} {self.repository}>"

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if origin(request.url) != self.origin:
            yield request
            return
        sent = self.authorization
        if sent:
            request.headers["Authorization"] = sent
        response = yield request
        if response.status_code != 401 or origin(response.url) != self.origin:  # a redirect's target is not ours
            return
        async with self.renewing:
            authorization = self.authorization
            if authorization is None or authorization == sent:  # nobody renewed it while this request was under way
                authorization = self.authorization = await self.answer(response)
        leave_unread(response)  # a 401's body is never wanted: not read at all, whatever its size
        request.headers["Authorization"] = authorization
        response = yield request
        if response.status_code == 401 and origin(response.url) == self.origin:
            raise FetchError(f"{request.url}: HTTP 401 even with a token", status=401)

    async def answer(self, response: httpx.Response) -> str:
        """The Authorization header that answers a 401's challenge (a token fetched for Bearer)."""
        where = str(response.request.url)
        challenge = choose_challenge(response.headers.get_list("www-authenticate"), self.basic is not None)
        if challenge is None:
            raise FetchError(f"{where}: {NO_TOKEN_SERVICE}", status=401)
        if challenge.scheme == "basic":
            assert self.basic is not None  # chosen only with credentials
            return self.basic
        url = token_url(challenge, self.repository, where, self.actions)
        # the token service is asked with the credentials, if any, and never through this flow
        body = await get_bytes(self.c, url, {"Authorization": self.basic} if self.basic else None,
                               limit=TOKEN_LIMIT, what="the token answer", auth=NO_AUTH)
        return f"Bearer {read_token(body, url, challenge.params['realm'])}"


def basic_header(username: str, password: str) -> str:
    """Pure: the Authorization header of HTTP Basic (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def parse_challenge(header: str) -> dict[str, str]:
    """Pure: the parameters of the first Bearer challenge of a WWW-Authenticate value ({} if none)."""
    return next((c.params for c in read_challenges(header) if c.scheme == "bearer"), {})
