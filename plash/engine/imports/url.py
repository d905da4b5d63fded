"""--from-url and --from-lxc: a root file system tarball downloaded, verified and unpacked as it streams."""

from __future__ import annotations

from plash.engine.events import note
from plash.engine.fetch import http, lxc
from plash.engine.layers import Download, unpack_download
from plash.engine.plan import digest as key_digest
from plash.errors import PlashError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.events import Emit
    from plash.engine.layers import Produce, Sink
    from plash.store.layout import Store
    from plash.store.staging import Staging


class Unchanged(PlashError):
    """A source looked at again (--pull) whose content made an image of its key before: that image is kept."""

    def __init__(self, image: int) -> None:
        super().__init__(f"unchanged: image {image}")
        self.image = image


class Content:
    """The sha256 of an import's tarball, as its producer learns it; the image made of it is recorded by it."""

    def __init__(self, store: Store, key: str, emit: Emit, pull: bool) -> None:
        self.store, self.key, self.emit, self.pull = store, key, emit, pull
        self.sha: str | None = None

    def seen(self, sha: str, what: str) -> None:
        """Note the content's digest; when pulling, Unchanged if an image of this key was made of it (and is there)."""
        self.sha = sha
        known = self.store.lookup_key(self.content_key()) if self.pull else None
        if known is not None:
            self.emit(note(f"{what} is unchanged (sha256 {sha[:12]}): kept image {known}"))
            raise Unchanged(known)

    def content_key(self) -> str:
        assert self.sha is not None
        return key_digest("import-content", self.key, self.sha)


def url_producer(url: str, sha: str | None, emit: Emit, content: Content | None = None) -> Produce:
    """The tarball at url (with content: a download whose digest made an image before keeps that one)."""
    async def produce(staging: Staging) -> None:
        async with http.client() as c:
            async def fetch(sink: Sink) -> None:
                progress = Download(emit, url, None)
                got = await http.stream(c, url, sink, http.Verified(url, sha, None), progress)
                progress.done()
                if content is not None:
                    content.seen(got, url)

            await unpack_download(staging.upper, fetch, lambda: url)

    return produce


def lxc_producer(name: str, digest: str | None, insecure: bool, emit: Emit, content: Content | None = None) -> Produce:
    """The catalogue is read while the unpacker process starts; its sha256 and size are checked on the way.

    With content, a rootfs whose listed sha256 made an image before is not downloaded: that image is kept.
    """
    async def produce(staging: Staging) -> None:
        label = [name]
        async with http.client() as c:
            async def fetch(sink: Sink) -> None:
                rootfs = await lxc.resolve(c, name, insecure=insecure, digest=digest)
                label[0] = rootfs.url
                if content is not None and rootfs.sha256:
                    content.seen(rootfs.sha256, name)
                progress = Download(emit, rootfs.url, rootfs.size)
                await http.stream(c, rootfs.url, sink, http.Verified(rootfs.url, rootfs.sha256, rootfs.size), progress)
                progress.done()

            await unpack_download(staging.upper, fetch, lambda: label[0])

    return produce


async def lxc_rootfs_url(name: str, insecure: bool, digest: str | None) -> str:
    async with http.client() as c:
        return (await lxc.resolve(c, name, insecure=insecure, digest=digest)).url
