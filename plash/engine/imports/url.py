"""--from-url and --from-lxc: a root file system tarball downloaded, verified and unpacked as it streams."""

from __future__ import annotations

from plash.engine.fetch import http, lxc
from plash.engine.layers import Download, unpack_download

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.events import Emit
    from plash.engine.layers import Produce, Sink
    from plash.store.staging import Staging


def url_producer(url: str, sha: str | None, emit: Emit) -> Produce:
    async def produce(staging: Staging) -> None:
        async with http.client() as c:
            async def fetch(sink: Sink) -> None:
                progress = Download(emit, url, None)
                await http.stream(c, url, sink, http.Verified(url, sha, None), progress)
                progress.done()

            await unpack_download(staging.upper, fetch, lambda: url)

    return produce


def lxc_producer(name: str, digest: str | None, insecure: bool, emit: Emit) -> Produce:
    """The catalogue is read while the unpacker process starts; its sha256 and size are checked on the way."""
    async def produce(staging: Staging) -> None:
        label = [name]
        async with http.client() as c:
            async def fetch(sink: Sink) -> None:
                rootfs = await lxc.resolve(c, name, insecure=insecure, digest=digest)
                label[0] = rootfs.url
                progress = Download(emit, rootfs.url, rootfs.size)
                await http.stream(c, rootfs.url, sink, http.Verified(rootfs.url, rootfs.sha256, rootfs.size), progress)
                progress.done()

            await unpack_download(staging.upper, fetch, lambda: label[0])

    return produce


async def lxc_rootfs_url(name: str, insecure: bool, digest: str | None) -> str:
    async with http.client() as c:
        return (await lxc.resolve(c, name, insecure=insecure, digest=digest)).url
