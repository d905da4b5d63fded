"""The download pipeline: a fetch streams a tarball into the real unpacker child while it arrives.

unpack_download runs `python -m plash.launch unpack` (in a user namespace:
as root it works, as a user it needs unprivileged user namespaces), fed by
a pipe; these tests feed it real tarballs made with tarfile, from fetches
written here, and, at the end, from a small HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import trio
import trio.testing
from enginekit import emit, fds, snapshot, store, tar_of  # noqa: F401 (fixtures, used by name)
from servers import QuietHandler

from plash.engine import layers
from plash.engine.events import Kind
from plash.engine.imports.url import url_producer
from plash.engine.layers import LayerSpec, make_layer, send_or_drop, unpack_download
from plash.engine.scheduler import Job, limit, run_dag
from plash.errors import DigestMismatch, PlashError
from plash.store.layout import Store

TIMEOUT = 30
FILES = {"etc/hostname": b"plash-test\n", "usr/share/doc/big": os.urandom(300_000)}

Sink = Callable[[bytes], Awaitable[None]]


def chunks(data: bytes, size: int = 1 << 14) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at:at + size]


def assert_unpacked(root: Path) -> None:
    for name, body in FILES.items():
        assert (root / name).read_bytes() == body, name


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:xz"])
async def test_a_streamed_tarball_is_unpacked_into_the_dir(tmp_path: Path, tar_of, fds, mode: str) -> None:
    archive = tar_of(FILES, mode)
    root = tmp_path / "root"
    root.mkdir()
    sent: list[int] = []

    async def fetch(sink: Sink) -> None:
        for chunk in chunks(archive):
            await sink(chunk)
            sent.append(len(chunk))

    before = fds.now()
    with trio.fail_after(TIMEOUT):
        await unpack_download(str(root), fetch, lambda: "the test tarball")
    assert sum(sent) == len(archive)
    assert_unpacked(root)
    assert fds.leaked(before, fds.now()) == {}


async def test_a_fetch_that_raises_cancels_the_unpacker_and_its_error_comes_out(tmp_path: Path, tar_of) -> None:
    archive = tar_of(FILES)
    root = tmp_path / "root"
    root.mkdir()

    async def fetch(sink: Sink) -> None:
        await sink(archive[:len(archive) // 2])
        raise DigestMismatch("http://example.invalid/root.tar: sha256 mismatch: got 00, expected ff")

    # the unpacker, cut off half-way, would fail too ("not a valid tarball") had it not been cancelled
    with trio.fail_after(TIMEOUT), pytest.RaisesGroup(pytest.RaisesExc(DigestMismatch, match="sha256 mismatch")):
        await unpack_download(str(root), fetch, lambda: "the test tarball")


async def test_an_unpacker_that_fails_cancels_the_fetch_and_names_what(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    cancelled: list[bool] = []

    async def fetch(sink: Sink) -> None:
        await sink(b"this is no tarball\n" * 1000)
        try:
            await trio.sleep_forever()  # a download that would go on: the unpacker's failure must end it
        except trio.Cancelled:
            cancelled.append(True)
            raise

    with trio.fail_after(TIMEOUT), pytest.RaisesGroup(pytest.RaisesExc(PlashError, match="^blob sha256:abc: ")):
        await unpack_download(str(root), fetch, lambda: "blob sha256:abc")
    assert cancelled == [True]


async def test_an_archive_that_ends_before_the_stream_lets_the_fetch_run_to_its_end(
        tmp_path: Path, tar_of, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the end of the archive the unpacker reads 16 MiB at most, then stops: the rest is dropped, unread."""
    dropped = [0]

    async def counting(out: trio.lowlevel.FdStream, chunk: bytes, ended: list[bool]) -> None:
        await send_or_drop(out, chunk, ended)
        dropped[0] += bool(ended)

    monkeypatch.setattr(layers, "send_or_drop", counting)
    archive = tar_of(FILES)
    root = tmp_path / "root"
    root.mkdir()
    trailing = 48 << 20  # more than the unpacker drains, its read-ahead and the pipe hold together
    sent = [0]
    ended = trio.Event()

    async def fetch(sink: Sink) -> None:
        await sink(archive)
        zeros = bytes(1 << 20)
        for _ in range(trailing >> 20):
            await sink(zeros)
            sent[0] += len(zeros)
        ended.set()  # a digest check would come here

    with trio.fail_after(TIMEOUT):
        await unpack_download(str(root), fetch, lambda: "the test tarball")
    assert ended.is_set()
    assert sent[0] == trailing
    assert dropped[0] > 0  # the unpacker stopped reading before the stream ended
    assert_unpacked(root)


async def test_send_or_drop_feeds_the_reader_then_drops_once_it_is_gone() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    out = trio.lowlevel.FdStream(w)
    ended: list[bool] = []
    try:
        await send_or_drop(out, b"first", ended)
        assert os.read(r, 100) == b"first"
        assert ended == []
        os.close(r)
        await send_or_drop(out, b"nobody reads this", ended)  # EPIPE: no error, the stream is marked ended
        assert ended == [True]
        await send_or_drop(out, b"nor this", ended)
        assert ended == [True]
    finally:
        await out.aclose()


async def test_send_or_drop_writes_nothing_once_ended() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    out = trio.lowlevel.FdStream(w)
    try:
        await send_or_drop(out, b"dropped", [True])
        with pytest.raises(BlockingIOError):
            os.read(r, 100)
    finally:
        await out.aclose()
        os.close(r)


async def test_a_failed_download_leaks_no_file_descriptor(tmp_path: Path, tar_of, fds) -> None:
    archive = tar_of(FILES)
    root = tmp_path / "root"
    root.mkdir()

    async def fetch(sink: Sink) -> None:
        await sink(archive[:len(archive) // 2])
        raise DigestMismatch("sha256 mismatch")

    before = fds.now()
    with trio.fail_after(TIMEOUT), pytest.RaisesGroup(DigestMismatch):
        await unpack_download(str(root), fetch, lambda: "the test tarball")
    assert fds.leaked(before, fds.now()) == {}


async def test_cancelled_while_waiting_for_a_download_slot_leaks_no_file_descriptor(tmp_path: Path, fds) -> None:
    held = trio.Event()
    fetched: list[bool] = []

    async def holder() -> None:
        async with limit("download"):
            held.set()
            await trio.sleep_forever()

    async def fetch(sink: Sink) -> None:
        fetched.append(True)

    async def downloader() -> None:
        await held.wait()
        await unpack_download(str(tmp_path), fetch, lambda: "a layer")

    before = fds.now()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            jobs = {"holder": Job("holder", (), "import", holder), "downloader": Job("downloader", (), "import", downloader)}
            nursery.start_soon(run_dag, jobs, {"import": 2, "download": 1})
            await held.wait()
            await trio.testing.wait_all_tasks_blocked()  # the downloader waits for the one slot
            nursery.cancel_scope.cancel()
    assert fetched == []
    assert fds.leaked(before, fds.now()) == {}


# -- the url producer against a real HTTP server -------------------------------------


class Server:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.hits = 0
        state = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                state.hits += 1
                if self.path != "/rootfs.tar.gz":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(state.body)))
                self.end_headers()
                for chunk in chunks(state.body):
                    self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/rootfs.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server(tar_of, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    s = Server(tar_of(FILES, "w:gz"))
    yield s
    s.close()


async def test_the_url_producer_downloads_verifies_and_unpacks(store: Store, emit, server: Server) -> None:
    sha = hashlib.sha256(server.body).hexdigest()
    spec = LayerSpec("url-import", url_producer(server.url, sha, emit), "the url image", kind="import")
    with trio.fail_after(TIMEOUT):
        image = await make_layer(store, spec, 0, emit)
    assert_unpacked(Path(store.image_dir(image), "root"))
    assert store.lookup_key("url-import") == image
    kinds = emit.kinds()
    assert kinds[0] == Kind.DOWNLOAD_START
    assert kinds[-1] == Kind.DOWNLOAD_DONE
    assert emit.events[-1].done == len(server.body)


async def test_the_url_producer_with_a_wrong_sha256_publishes_nothing(store: Store, emit, server: Server,
                                                                     snapshot) -> None:
    before = snapshot(store)
    spec = LayerSpec("url-import", url_producer(server.url, "0" * 64, emit), "the url image", kind="import")
    with trio.fail_after(TIMEOUT), pytest.raises(DigestMismatch, match="sha256 mismatch"):
        await make_layer(store, spec, 0, emit)
    assert server.hits == 1  # the whole body was read (and hashed), once
    assert Kind.DOWNLOAD_DONE not in emit.kinds()
    assert store.lookup_key("url-import") is None
    assert os.listdir(store.tmp) == []
    assert snapshot(store) == before
