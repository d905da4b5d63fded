"""A plash layer as an OCI layer blob: packed in the user namespace, compressed and hashed on the way to a file.

A launcher child writes the layer's tarball (plash.store.packing) into a
pipe; a thread here hashes it (the diff_id), compresses it (gzip without
a timestamp, on every core: deflate.py; or zstd), hashes that (the digest) and writes it to a file.
Packing and compressing overlap, and layers are packed side by side under
the run's download/upload limit.

What a layer gave is remembered next to it (Store.packed_record): the
same layer, compression and clamp give the same bytes, so a later push
knows the digest without packing, asks the registry whether it has the
blob and packs only when it has not.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass, field
from hashlib import sha256  # OpenSSL: 6x the speed of the built-in module hashpath uses for start-up

import trio

from plash.engine.children import run_child
from plash.engine.launcher import launcher
from plash.engine.layers import Download
from plash.engine.push.deflate import ParallelGzip
from plash.engine.scheduler import first_error, limit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.events import Emit
    from plash.store.layout import Store

MEDIA_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}
GZIP_LEVEL = 5  # podman's default; zlib's 6 is 1.5x slower for 1% less: part of what makes a digest
ZSTD_LEVEL = 3
F_SETPIPE_SZ = 1031
CHUNK = 1 << 20


@dataclass
class Packed:
    """One layer blob: its digest and size, the digest of its tarball (diff_id), and the file, if made."""

    digest: str
    size: int
    diff_id: str
    media_type: str
    path: str | None = None
    pushed: list[tuple[str, str]] = field(default_factory=list)  # (registry, repository) that have it

    @property
    def hex(self) -> str:
        return self.digest.removeprefix("sha256:")


def _record_key(compression: str, clamp: int) -> str:
    return f"{compression}:{clamp}"


def remembered(store: Store, image: int, compression: str, clamp: int) -> Packed | None:
    """What an earlier push made of the image's layer with these settings (None if it made nothing yet)."""
    try:
        with open(store.packed_record(image)) as f:
            entry = json.load(f).get(_record_key(compression, clamp))
        pushed = [(str(r), str(p)) for r, p in entry.get("pushed", [])]
        return Packed(str(entry["digest"]), int(entry["size"]), str(entry["diff_id"]), MEDIA_TYPES[compression],
                      pushed=pushed)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # none, or not ours to trust: packed again


def remember(store: Store, image: int, compression: str, clamp: int, packed: Packed) -> None:
    """Keep what the layer gave (best effort: a record that cannot be written costs a packing next time)."""
    path = store.packed_record(image)
    try:
        with open(path) as f:
            table = json.load(f)
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):
        table = {}
    table[_record_key(compression, clamp)] = {
        "digest": packed.digest, "size": packed.size, "diff_id": packed.diff_id,
        "pushed": sorted({tuple(p) for p in packed.pushed}),
    }
    tmp = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(OSError):
        with open(tmp, "w") as f:
            json.dump(table, f)
        os.replace(tmp, path)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _compressor(compression: str) -> tuple[object, object] | None:
    """(compress, flush) of a streaming compressor, or None for a plain tarball."""
    if compression == "gzip":
        z = ParallelGzip(GZIP_LEVEL)  # on every core; the same bytes whatever their number
        return z.compress, z.flush
    if compression == "zstd":
        import zstandard

        c = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        return c.compress, c.flush
    return None


def _compress(read_fd: int, dest: str, compression: str, progress: Download) -> Packed:
    """Hash, compress, hash and write what comes from read_fd until its end (runs in a thread)."""
    diff, blob, size, raw = sha256(), sha256(), 0, 0
    comp = _compressor(compression)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    with open(fd, "wb") as f:
        def out(data: bytes) -> None:
            nonlocal size
            if data:
                blob.update(data)
                f.write(data)
                size += len(data)

        while chunk := os.read(read_fd, CHUNK):
            diff.update(chunk)
            raw += len(chunk)
            out(comp[0](chunk) if comp else chunk)  # type: ignore[operator]
            progress(raw, None)
        if comp:
            out(comp[1]())  # type: ignore[operator]
    return Packed(f"sha256:{blob.hexdigest()}", size, f"sha256:{diff.hexdigest()}", MEDIA_TYPES[compression], dest)


async def pack_layer(store: Store, image: int, compression: str, clamp: int, dest_dir: str, emit: Emit,
                     label: str) -> Packed:
    """The blob of image's own layer, written to dest_dir/<hex> (kept if already there: same bytes)."""
    async with limit("download"):
        r, w = os.pipe()
        open_fds = [r, w]

        def close(fd: int) -> None:
            if fd in open_fds:
                open_fds.remove(fd)
                os.close(fd)

        with contextlib.suppress(OSError):
            fcntl.fcntl(r, F_SETPIPE_SZ, CHUNK)
        part = os.path.join(dest_dir, f".part-{os.getpid()}-{os.urandom(6).hex()}")
        progress = Download(emit, label, None, "pack")
        result: list[Packed] = []
        failed: list[BaseException] = []
        try:
            async def packer() -> None:
                try:
                    await run_child(launcher("pack", store.layer_root(image), str(clamp)), stdout=w, errors=True)
                finally:
                    close(w)

            def compress() -> None:
                try:
                    result.append(_compress(r, part, compression, progress))
                except BaseException as e:
                    failed.append(e)  # its own error comes first: the packer's broken pipe follows from it
                finally:
                    close(r)  # a packer still writing gets EPIPE, and stops

            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(packer)
                    nursery.start_soon(trio.to_thread.run_sync, compress)
            except BaseExceptionGroup as group:
                raise (failed[0] if failed else first_error(group)) from None
            if failed:
                raise failed[0]
            packed = result[0]
            final = os.path.join(dest_dir, packed.hex)
            os.replace(part, final)
            packed.path = final
            progress.done()
            return packed
        finally:
            for fd in list(open_fds):  # never started
                close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
