"""Hostile registries and image servers on 127.0.0.1: huge, slow, malformed and looping answers.

Each is a plash error of one line naming the URL and what is wrong, the
store is unchanged, and nothing is waited on forever. The servers are the
standard library's, in a thread, answering every path as the test says;
they may sleep between the bytes they drip (that is the hostile input),
the tests never do, and every plash run is bounded in time.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import rootfs
import trio
from conftest import Plash
from oci_images import layer_tar
from servers import QuietHandler

from plash.engine.fetch import http

Answer = Callable[[BaseHTTPRequestHandler], None]
REPO = "test/x"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MiB = 1 << 20


class Hostile:
    """An HTTP server on 127.0.0.1 that answers each path (without its query) with routes[path]."""

    def __init__(self) -> None:
        self.routes: dict[str, Answer] = {}
        self.hits: Counter[str] = Counter()
        self.stop = threading.Event()  # ends the drips when the test is over
        state = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                state.hits[path] += 1
                answer = state.routes.get(path)
                try:
                    if answer is None:
                        send(self, b"", status=404)
                    else:
                        answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # plash gave up, as it should

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def send(h: BaseHTTPRequestHandler, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def body(data: bytes, ctype: str = "application/json", status: int = 200, **headers: str) -> Answer:
    return lambda h: send(h, data, status, {"Content-Type": ctype, **headers})


def chunked(total: int, piece: bytes = b" " * 65536) -> Answer:
    """total bytes without a Content-Length, in chunks."""
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        sent = 0
        while sent < total:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
        h.wfile.write(b"0\r\n\r\n")
    return answer


def claims(length: int) -> Answer:
    """A Content-Length of length bytes, then a few bytes and the end of the connection."""
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(length))
        h.end_headers()
        h.wfile.write(b"{" * 1000)
        h.close_connection = True
    return answer


def drip(server: Hostile, data: bytes, every: float = 0.2, headers_too: bool = False) -> Answer:
    """data one byte at a time, a byte every `every` seconds (the status line and headers too, if asked)."""
    def answer(h: BaseHTTPRequestHandler) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        if not headers_too:
            h.wfile.write(head)
            h.wfile.flush()
        for b in (head if headers_too else b"") + data:
            if server.stop.wait(every):
                return
            h.wfile.write(bytes([b]))
            h.wfile.flush()
        h.close_connection = True
    return answer


def silent(server: Hostile) -> Answer:
    """Headers, then nothing until the test is over."""
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.flush()
        server.stop.wait(60)
        h.close_connection = True
    return answer


def redirect(to: str) -> Answer:
    return lambda h: send(h, b"", 302, {"Location": to})


@functools.cache
def busybox_layer() -> bytes:
    buf = io.BytesIO()
    rootfs.busybox_tar(buf, "")
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Image:
    """A valid image (busybox and a layer with one file) served by a Hostile server; tests spoil parts of it."""

    def __init__(self, server: Hostile, tag: str = "1") -> None:
        self.server, self.tag = server, tag
        self.base = busybox_layer()
        self.layer = layer_tar([("etc/hostile", "file", "served\n")])
        self.config = json.dumps({"architecture": "amd64", "os": "linux",
                                  "rootfs": {"type": "layers", "diff_ids": [sha(self.base), sha(self.layer)]},
                                  "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]}}).encode()
        self.manifest: dict = {}
        self.serve()

    def serve(self, config: bytes | None = None, config_size: int | None = None) -> None:
        """(Re)publish the blobs and the manifest; config replaces the config blob."""
        config = self.config if config is None else config
        self.config_path = self.blob(config)
        self.base_path = self.blob(self.base)
        self.layer_path = self.blob(self.layer)
        self.manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config),
                                    "size": len(config) if config_size is None else config_size},
                         "layers": [{"mediaType": LAYER_TYPE, "digest": sha(layer), "size": len(layer)}
                                    for layer in (self.base, self.layer)]}
        self.set_manifest(json.dumps(self.manifest).encode())

    def blob(self, data: bytes) -> str:
        path = f"/v2/{REPO}/blobs/{sha(data)}"
        self.server.routes[path] = body(data, "application/octet-stream")
        return path

    @property
    def manifest_path(self) -> str:
        return f"/v2/{REPO}/manifests/{self.tag}"

    @property
    def manifest_url(self) -> str:
        return self.server.url + self.manifest_path

    def set_manifest(self, raw: bytes, ctype: str = MANIFEST_TYPE) -> None:
        self.server.routes[self.manifest_path] = body(raw, ctype)

    @property
    def ref(self) -> str:
        return f"{self.server.host}/{REPO}:{self.tag}"


@pytest.fixture
def server():
    s = Hostile()
    yield s
    s.close()


@pytest.fixture
def image(server: Hostile) -> Image:
    return Image(server)


QUICK = {"PLASH_HTTP_TIMEOUT": "10", "PLASH_HTTP_DOCUMENT_TIMEOUT": "1", "PLASH_HTTP_MIN_RATE": "1",
         "PLASH_HTTP_RATE_WINDOW": "1"}


def fails(plash: Plash, *args: str, env: dict[str, str] | None = None, timeout: float = 30) -> str:
    """Run plash, which must fail with one error line and leave the store as it was; return that line."""
    if not plash.store.exists():  # a store with something in it, to compare
        tiny = plash.work / "tiny.tar"
        tiny.write_bytes(layer_tar([("etc/", "dir", ""), ("etc/tiny", "file", "tiny\n")]))
        plash.import_tar(tiny)
    before = plash.snapshot()
    r = plash(*args, env={**QUICK, **(env or {})}, timeout=timeout)
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("plash error:")]
    assert len(errors) == 1, r.stderr
    assert "internal error" not in errors[0] and "Traceback" not in r.stderr, r.stderr
    assert plash.snapshot() == before
    return errors[0]


def test_the_hostile_image_imports_when_nothing_is_spoilt(root_plash: Plash, image: Image) -> None:
    out = root_plash.ok("import-docker", image.ref, env=QUICK, timeout=30)
    assert root_plash.ok("run", out, "cat", "/etc/hostile") == "served"


# 6. plain http only for real loopback


@pytest.mark.parametrize("host", ["127.0.0.1.invalid", "127.evil.invalid"])
def test_a_name_that_looks_like_loopback_is_https(root_plash: Plash, host: str) -> None:
    # .invalid never resolves (RFC 6761): the error names the URL plash tried, and its scheme
    line = fails(root_plash, "import-docker", f"{host}:5000/{REPO}:1")
    assert line.startswith(f"plash error: https://{host}:5000/v2/{REPO}/manifests/1: "), line


def test_localhost_is_plain_http(root_plash: Plash, server: Hostile) -> None:
    image = Image(server)
    port = server.host.rsplit(":", 1)[1]
    out = root_plash.ok("import-docker", f"localhost:{port}/{REPO}:{image.tag}", env=QUICK, timeout=30)
    assert root_plash.ok("run", out, "cat", "/etc/hostile") == "served"


# 8. limits on what is read into memory


def test_a_manifest_over_4_mib_by_its_content_length(root_plash: Plash, server: Hostile, image: Image) -> None:
    server.routes[image.manifest_path] = claims(5 * MiB)
    assert fails(root_plash, "import-docker", image.ref) == f"plash error: {image.manifest_url}: the manifest is larger than 4 MiB"


def test_a_manifest_over_4_mib_while_it_streams(root_plash: Plash, server: Hostile, image: Image) -> None:
    server.routes[image.manifest_path] = chunked(64 * MiB)
    assert fails(root_plash, "import-docker", image.ref) == f"plash error: {image.manifest_url}: the manifest is larger than 4 MiB"


def test_a_gzip_bomb_is_capped_when_decoded(root_plash: Plash, server: Hostile, image: Image) -> None:
    bomb = gzip.compress(b" " * (64 * MiB))  # 64 KiB on the wire
    server.routes[image.manifest_path] = body(bomb, MANIFEST_TYPE, **{"Content-Encoding": "gzip"})
    assert fails(root_plash, "import-docker", image.ref) == f"plash error: {image.manifest_url}: the manifest is larger than 4 MiB"


def test_a_token_answer_over_1_mib(root_plash: Plash, server: Hostile, image: Image) -> None:
    challenge = f'Bearer realm="{server.url}/token",service="test"'
    server.routes[image.manifest_path] = body(b"", status=401, **{"WWW-Authenticate": challenge})
    server.routes["/token"] = chunked(8 * MiB)
    line = fails(root_plash, "import-docker", image.ref)
    assert line.startswith(f"plash error: {server.url}/token?")
    assert line.endswith(": the token answer is larger than 1 MiB")


def test_an_image_config_over_8_mib_is_not_fetched(root_plash: Plash, server: Hostile, image: Image) -> None:
    image.serve(config_size=9 * MiB)
    line = fails(root_plash, "import-docker", image.ref)
    assert line == f"plash error: {server.url}{image.config_path}: the image config is larger than 8 MiB"
    assert server.hits[image.config_path] == 0
    assert server.hits[image.layer_path] == 0


def test_an_image_config_longer_than_listed(root_plash: Plash, server: Hostile, image: Image) -> None:
    image.serve()
    server.routes[image.config_path] = chunked(64 * MiB)
    line = fails(root_plash, "import-docker", image.ref)
    assert line == f"plash error: {server.url}{image.config_path}: more data than the expected {len(image.config)} bytes"
    assert server.hits[image.layer_path] == server.hits[image.base_path] == 0


@pytest.mark.parametrize("answer", ["content-length", "streamed"])
def test_an_lxc_catalogue_over_64_mib(root_plash: Plash, server: Hostile, answer: str) -> None:
    server.routes["/streams/v1/index.json"] = body(json.dumps({"index": {"images": {
        "datatype": "image-downloads", "path": "streams/v1/images.json"}}}).encode())
    server.routes["/streams/v1/images.json"] = claims(65 * MiB) if answer == "content-length" else chunked(65 * MiB)
    line = fails(root_plash, "import-lxc", "busybox:1", env={"PLASH_LXC_URL": server.url})
    assert line == f"plash error: {server.url}/streams/v1/images.json: the document is larger than 64 MiB"


async def test_get_bytes_never_buffers_more_than_its_limit(server: Hostile) -> None:
    server.routes["/a"] = chunked(10 * MiB, b"x" * 1000)
    server.routes["/b"] = body(b"y" * 2048)
    server.routes["/c"] = body(gzip.compress(b"z" * 2048), **{"Content-Encoding": "gzip"})
    server.routes["/d"] = body(gzip.compress(b"z" * 2048)[:-20], **{"Content-Encoding": "gzip"})
    server.routes["/e"] = body(b"not gzip", **{"Content-Encoding": "gzip"})
    server.routes["/f"] = body(b"zstd?", **{"Content-Encoding": "zstd"})
    with trio.fail_after(20):
        async with http.client() as c:
            with pytest.raises(http.FetchError, match=r"/a: the thing is larger than 1 KiB$"):
                await http.get_bytes(c, f"{server.url}/a", limit=1024, what="the thing")
            assert await http.get_bytes(c, f"{server.url}/b", limit=2048) == b"y" * 2048
            with pytest.raises(http.FetchError, match=r"/b: the document is larger than 2047 bytes$"):
                await http.get_bytes(c, f"{server.url}/b", limit=2047)
            assert await http.get_bytes(c, f"{server.url}/c", limit=2048) == b"z" * 2048
            with pytest.raises(http.FetchError, match=r"/c: the document is larger than 2047 bytes$"):
                await http.get_bytes(c, f"{server.url}/c", limit=2047)
            with pytest.raises(http.FetchError, match=r"/d: the document ends inside its gzip stream \(truncated\)$"):
                await http.get_bytes(c, f"{server.url}/d")
            with pytest.raises(http.FetchError, match=r"/e: the document is not valid gzip"):
                await http.get_bytes(c, f"{server.url}/e")
            with pytest.raises(http.FetchError, match=r"/f: the document comes in an encoding plash did not ask for"):
                await http.get_bytes(c, f"{server.url}/f")
    assert 64 * MiB == http.DOCUMENT_LIMIT  # what lxc.py's catalogues get without asking


# 10. a deadline per request


def test_a_manifest_dripped_a_byte_at_a_time(root_plash: Plash, server: Hostile, image: Image) -> None:
    server.routes[image.manifest_path] = drip(server, json.dumps(image.manifest).encode())
    started = time.monotonic()
    line = fails(root_plash, "import-docker", image.ref, timeout=20)
    assert line == (f"plash error: {image.manifest_url}: the manifest did not arrive within 1 s "
                    "(PLASH_HTTP_DOCUMENT_TIMEOUT)")
    assert time.monotonic() - started < 15


def test_headers_dripped_a_byte_at_a_time(root_plash: Plash, server: Hostile, image: Image) -> None:
    server.routes[image.manifest_path] = drip(server, b"{}", headers_too=True)
    line = fails(root_plash, "import-docker", image.ref, timeout=20)
    assert line.endswith(": the manifest did not arrive within 1 s (PLASH_HTTP_DOCUMENT_TIMEOUT)")


def test_a_config_dripped_a_byte_at_a_time(root_plash: Plash, server: Hostile, image: Image) -> None:
    server.routes[image.config_path] = drip(server, image.config, every=0.05)
    line = fails(root_plash, "import-docker", image.ref, env={"PLASH_HTTP_MIN_RATE": "0"}, timeout=20)
    assert line == (f"plash error: {server.url}{image.config_path}: the image config did not arrive within 1 s "
                    "(PLASH_HTTP_DOCUMENT_TIMEOUT)")
    assert server.hits[image.layer_path] == server.hits[image.base_path] == 0


def test_a_blob_dripped_a_byte_at_a_time(root_plash: Plash, server: Hostile, image: Image) -> None:
    server.routes[image.layer_path] = drip(server, image.layer)
    line = fails(root_plash, "import-docker", image.ref, timeout=20)
    assert line == (f"plash error: {server.url}{image.layer_path}: too slow: less than 1 KiB/s over 1 s "
                    "(PLASH_HTTP_MIN_RATE, PLASH_HTTP_RATE_WINDOW)")


@pytest.mark.parametrize("how", ["silent", "headers dripped"])
def test_a_blob_that_never_comes(root_plash: Plash, server: Hostile, image: Image, how: str) -> None:
    server.routes[image.layer_path] = silent(server) if how == "silent" else drip(server, image.layer, headers_too=True)
    line = fails(root_plash, "import-docker", image.ref, env={"PLASH_HTTP_TIMEOUT": "30"}, timeout=20)
    assert line.endswith(f"{image.layer_path}: too slow: less than 1 KiB/s over 1 s (PLASH_HTTP_MIN_RATE, PLASH_HTTP_RATE_WINDOW)")


def test_an_lxc_rootfs_dripped_a_byte_at_a_time(root_plash: Plash, server: Hostile) -> None:
    rootfs = b"\xfd7zXZ\x00" + b"x" * 2000
    path = "/images/busybox/1/rootfs.tar.xz"
    server.routes["/streams/v1/index.json"] = body(json.dumps({"index": {"images": {
        "datatype": "image-downloads", "path": "streams/v1/images.json"}}}).encode())
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, "amd64")
    server.routes["/streams/v1/images.json"] = body(json.dumps({"products": {f"busybox:1:{arch}:default": {"versions": {
        "1": {"items": {"root.tar.xz": {"ftype": "root.tar.xz", "path": path.lstrip("/"),
                                        "sha256": hashlib.sha256(rootfs).hexdigest(), "size": len(rootfs)}}}}}}}).encode())
    server.routes[path] = drip(server, rootfs)
    line = fails(root_plash, "import-lxc", "busybox:1", env={"PLASH_LXC_URL": server.url}, timeout=20)
    assert line == f"plash error: {server.url}{path}: too slow: less than 1 KiB/s over 1 s (PLASH_HTTP_MIN_RATE, PLASH_HTTP_RATE_WINDOW)"


async def test_a_slow_but_steady_blob_is_fine(server: Hostile, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"s" * 3000
    server.routes["/blob"] = drip(server, data, every=0.001)  # up to 1000 bytes/s, over 1 s windows of 200
    monkeypatch.setenv("PLASH_HTTP_MIN_RATE", str(200 / 1024))
    monkeypatch.setenv("PLASH_HTTP_RATE_WINDOW", "1")
    got = bytearray()

    async def sink(chunk: bytes) -> None:
        got.extend(chunk)

    with trio.fail_after(20):
        async with http.client() as c:
            await http.stream(c, f"{server.url}/blob", sink, http.Verified("x", None, None))
    assert got == data


@pytest.mark.parametrize(("name", "value"), [("PLASH_HTTP_DOCUMENT_TIMEOUT", "soon"), ("PLASH_HTTP_RATE_WINDOW", "0"),
                                        ("PLASH_HTTP_MIN_RATE", "-1"), ("PLASH_HTTP_TIMEOUT", "nan")])
def test_bad_limits_in_the_environment(root_plash: Plash, image: Image, name: str, value: str) -> None:
    line = fails(root_plash, "import-docker", image.ref, env={name: value})
    assert line.startswith(f"plash error: {name}={value!r}: expected a number")


# 16. malformed documents are messages, not internal errors


def manifest_with(image: Image, change: Callable[[dict], object]) -> bytes:
    m = json.loads(json.dumps(image.manifest))
    change(m)
    return json.dumps(m).encode()


MANIFESTS: dict[str, tuple[Callable[[Image], bytes], str]] = {
    "not json": (lambda i: b"<html>hello</html>", "the manifest is not JSON"),
    "a list": (lambda i: b"[]", "the manifest is not a JSON object but a list"),
    "no layers": (lambda i: manifest_with(i, lambda m: m.pop("layers")), "the manifest has no list of layers"),
    "layers an object": (lambda i: manifest_with(i, lambda m: m.update(layers={})), "the manifest has no list of layers"),
    "a layer without digest": (lambda i: manifest_with(i, lambda m: m["layers"][0].pop("digest")),
                               "layer 1 of the manifest has no valid sha256 digest (digest: none)"),
    "a layer a string": (lambda i: manifest_with(i, lambda m: m["layers"].append("x")),
                         "layer 3 of the manifest is not an object but a string"),
    "a digest with a path": (lambda i: manifest_with(i, lambda m: m["layers"][0].update(digest="sha256:../../../x")),
                             "layer 1 of the manifest has no valid sha256 digest (digest: 'sha256:../../../x')"),
    "no config": (lambda i: manifest_with(i, lambda m: m.pop("config")), "the config of the manifest is not an object"),
    "schema 1": (lambda i: manifest_with(i, lambda m: m.update(schemaVersion=1)), "unsupported manifest (schema 1)"),
    "an index of strings": (lambda i: json.dumps({"mediaType": INDEX_TYPE, "manifests": "x"}).encode(),
                            "the manifest list has no list of manifests"),
    "an index entry without digest": (lambda i: json.dumps({"mediaType": INDEX_TYPE, "manifests": [
        {"platform": {"os": "linux", "architecture": a}} for a in ("amd64", "arm64")]}).encode(),
        "entry of the manifest list has no valid sha256 digest (digest: none)"),
    "an index with string platforms": (lambda i: json.dumps({"mediaType": INDEX_TYPE, "manifests": [
        {"digest": sha(b""), "platform": "linux/amd64"}]}).encode(), "no linux/"),
}


@pytest.mark.parametrize("case", MANIFESTS)
def test_a_malformed_manifest(root_plash: Plash, server: Hostile, image: Image, case: str) -> None:
    make, wrong = MANIFESTS[case]
    image.set_manifest(make(image))
    line = fails(root_plash, "import-docker", image.ref)
    assert line.startswith(f"plash error: {image.manifest_url}: ") and wrong in line, line
    assert server.hits[image.layer_path] == server.hits[image.base_path] == 0


TOKENS = {
    "not json": (b"token please", "the token answer is not JSON"),
    "a list": (b'["let-me-in"]', "the token answer is not a JSON object but a list"),
    "no token": (b'{"expires_in": 60}', "no token in the answer"),
    "a token not a string": (b'{"token": {"a": 1}}', "the token in the answer is not a valid token"),
    "a token with a line break": (b'{"token": "a\\r\\nX-Evil: 1"}', "the token in the answer is not a valid token"),
}


@pytest.mark.parametrize("case", TOKENS)
def test_a_malformed_token_answer(root_plash: Plash, server: Hostile, image: Image, case: str) -> None:
    answer, wrong = TOKENS[case]
    challenge = f'Bearer realm="{server.url}/token",service="test"'
    server.routes[image.manifest_path] = body(b"", status=401, **{"WWW-Authenticate": challenge})
    server.routes["/token"] = body(answer)
    line = fails(root_plash, "import-docker", image.ref)
    assert line.startswith(f"plash error: {server.url}/token") and wrong in line, line


CONFIGS = {
    "not json": (b"\x00\x01", "the image config is not JSON"),
    "a list": (b"[1, 2]", "the image config is not a JSON object but a list"),
    "config a list": (b'{"config": []}', "its config is not an object"),
    "Env a number": (b'{"config": {"Env": 7}}', "config.Env is not a list of strings"),
    "Cmd of numbers": (b'{"config": {"Cmd": [1, 2]}}', "config.Cmd is not a list of strings"),
    "WorkingDir a list": (b'{"config": {"WorkingDir": ["/"]}}', "config.WorkingDir is not a string"),
}


@pytest.mark.parametrize("case", CONFIGS)
def test_a_malformed_config_publishes_no_layer(root_plash: Plash, server: Hostile, image: Image, case: str) -> None:
    config, wrong = CONFIGS[case]
    image.serve(config=config)
    line = fails(root_plash, "import-docker", image.ref)
    assert line.startswith(f"plash error: {server.url}{image.config_path}: ") and wrong in line, line
    assert server.hits[image.layer_path] == server.hits[image.base_path] == 0  # checked before any layer is even fetched


@pytest.mark.parametrize("what", ["manifest", "token", "blob"])
def test_a_redirect_loop(root_plash: Plash, server: Hostile, image: Image, what: str) -> None:
    if what == "manifest":
        path = image.manifest_path
    elif what == "token":
        path = "/token"
        challenge = f'Bearer realm="{server.url}/token",service="test"'
        server.routes[image.manifest_path] = body(b"", status=401, **{"WWW-Authenticate": challenge})
    else:
        path = image.layer_path
    server.routes[path] = redirect(path)
    line = fails(root_plash, "import-docker", image.ref)
    assert line.startswith(f"plash error: {server.url}{path}") and line.endswith(": too many redirects (a redirect loop?)"), line


def test_a_redirect_to_another_scheme(root_plash: Plash, server: Hostile, image: Image) -> None:
    server.routes[image.manifest_path] = redirect("file:///etc/passwd")
    line = fails(root_plash, "import-docker", image.ref)
    assert line == f"plash error: {image.manifest_url}: only http and https URLs can be fetched"


async def test_httpx_errors_never_escape(server: Hostile) -> None:
    server.routes["/loop"] = redirect("/loop")
    with trio.fail_after(20):
        async with http.client() as c:
            for call in (lambda: http.get_bytes(c, f"{server.url}/loop"),
                         lambda: http.stream(c, f"{server.url}/loop", sink_nothing, http.Verified("x", None, None))):
                with pytest.raises(http.FetchError, match="too many redirects"):
                    await call()
            with pytest.raises(http.FetchError):
                await http.get_bytes(c, "http://[not a url")
    assert not issubclass(http.FetchError, httpx.HTTPError)


async def sink_nothing(chunk: bytes) -> None:
    pass
