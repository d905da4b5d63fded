"""docker-archive:FILE: the output of `docker save` or `podman save` (manifest.json, config, layer tarballs)."""

from __future__ import annotations

import io
import json
import os
import posixpath
from hashlib import sha256  # OpenSSL: 6x the speed of the built-in module hashpath uses for start-up
from typing import Any, Literal

import trio

from plash.engine.fetch import http, oci
from plash.engine.fetch.oci import Descriptor
from plash.engine.imports.blobs import FileBlobs, Readable
from plash.engine.imports.oci import import_layers
from plash.errors import PlashError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.events import Emit
    from plash.store.layout import Store


class _ByteRange(io.RawIOBase):
    """One member's bytes in a plain tarball, read through a file descriptor of its own."""

    def __init__(self, path: str, offset: int, size: int, what: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.pos, self.end, self.what = offset, offset + size, what

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        want = min(len(buf), self.end - self.pos)
        if want <= 0:
            return 0
        n = os.preadv(self.fd, [memoryview(buf)[:want]], self.pos)
        if n == 0:
            raise PlashError(f"{self.what}: the archive ends inside it (truncated)")
        self.pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


class _MemberReader:
    """A member's plain bytes (gzip and zstd layers decompressed), with read errors said as plash errors."""

    def __init__(self, stream: Readable, raw: Readable, what: str) -> None:
        self.stream, self.raw, self.what = stream, raw, what

    def read(self, n: int = -1, /) -> bytes:
        import tarfile
        import zlib

        import zstandard

        try:
            return self.stream.read(n)
        except (OSError, EOFError, zlib.error, zstandard.ZstdError, tarfile.TarError) as e:
            raise PlashError(f"{self.what}: cannot read it ({e})") from None

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            self.raw.close()


def _plain(raw: io.BufferedReader, what: str) -> _MemberReader:
    """A reader of raw's plain bytes: gzip and zstd are decompressed, anything else passes as it is."""
    try:
        magic = raw.peek(4)[:4]
    except (OSError, EOFError) as e:  # a gzip'd archive that ends early, say
        raw.close()
        raise PlashError(f"{what}: cannot read it ({e})") from None
    if magic.startswith(b"\x1f\x8b"):
        import gzip

        return _MemberReader(gzip.GzipFile(fileobj=raw, mode="rb"), raw, what)
    if magic == b"\x28\xb5\x2f\xfd":
        import zstandard

        return _MemberReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True), raw, what)
    return _MemberReader(raw, raw, what)


class ArchiveMembers:
    """The files of a docker-archive tarball by name (links followed), each opened with a reader of its own.

    Layers are read side by side from threads, so they must not share one
    tarfile object (its seeks and reads would interleave): the index gives
    each member's byte range once, and every reader opens the file itself.
    A compressed archive (docker save | gzip) has no byte ranges: its members
    are read through the tarfile, one at a time (serial).
    """

    def __init__(self, path: str) -> None:
        import tarfile

        self.path = path
        try:
            with open(path, "rb") as f:
                magic = f.read(6)
        except OSError as e:
            raise PlashError(f"docker-archive:{path}: cannot open: {e.strerror}") from None
        mode: Literal["r:", "r:gz", "r:bz2", "r:xz"] = "r:"
        if magic.startswith(b"\x1f\x8b"):
            mode = "r:gz"
        elif magic.startswith(b"BZh"):
            mode = "r:bz2"
        elif magic.startswith(b"\xfd7zXZ\x00"):
            mode = "r:xz"
        self.serial = mode != "r:"
        try:
            self.tar = tarfile.open(path, mode)  # noqa: SIM115 (open for the archive's life: see close)
            self.files = {self._norm(m.name): m for m in self._members()}
        except (tarfile.TarError, OSError, EOFError, ValueError) as e:  # gzip, bz2 and lzma raise their own
            raise PlashError(f"docker-archive:{path}: not a tarball ({' '.join(str(e).split())})") from None

    def _members(self) -> list[Any]:
        """The archive's members, read one header after the other, refusing any that points back.

        Not tarfile's getmembers(): a member with a negative (base-256) size
        moves its offset backwards, and tarfile then reads the same headers
        for ever (the CVE-2025-8194 class). Offsets must grow, sizes be >= 0.
        """
        out = []
        last = -1
        while (m := self.tar.next()) is not None:
            if m.size < 0 or m.offset <= last or m.offset_data < m.offset:
                raise PlashError(f"docker-archive:{self.path}: corrupt tar header at byte {m.offset} "
                                 f"({m.name!r}: size {m.size})")
            last = m.offset
            out.append(m)
        return out

    @staticmethod
    def _norm(name: str) -> str:
        return posixpath.normpath("/" + name).lstrip("/")

    def member(self, name: str) -> Any:
        """The regular file that name is, or links to."""
        info = self.files.get(self._norm(name))
        for _ in range(16):  # link chains are short; a loop is not followed forever
            if info is None or not (info.issym() or info.islnk()):
                break
            target = posixpath.join(posixpath.dirname(info.name), info.linkname) if info.issym() else info.linkname
            info = self.files.get(self._norm(target))
        if info is None or not info.isreg() or info.issparse():
            raise PlashError(f"docker-archive:{self.path}: no file {name} in the archive")
        return info

    def open_raw(self, name: str) -> io.BufferedReader:
        info = self.member(name)
        what = f"docker-archive:{self.path}: {name}"
        if self.serial:
            f = self.tar.extractfile(info)  # a BufferedReader (tarfile.ExFileObject); FileBlobs holds the lock
            assert isinstance(f, io.BufferedReader)
            return f
        return io.BufferedReader(_ByteRange(self.path, info.offset_data, info.size, what), http.CHUNK)

    def open(self, name: str) -> Readable:
        """A reader of the member's plain bytes: gzip and zstd layers are decompressed."""
        return _plain(self.open_raw(name), f"docker-archive:{self.path}: {name}")

    def read(self, name: str) -> bytes:
        """A small member's bytes, as they are."""
        raw = self.open_raw(name)
        f = _MemberReader(raw, raw, f"docker-archive:{self.path}: {name}")
        try:
            return f.read()
        finally:
            f.close()

    def close(self) -> None:
        self.tar.close()


async def import_archive(store: Store, path: str, emit: Emit) -> int:
    """docker-archive:FILE: the output of `docker save` or `podman save` (manifest.json, config, layer tarballs)."""
    members = await trio.to_thread.run_sync(ArchiveMembers, path)
    try:
        return await _import_archive(store, members, emit)
    finally:
        members.close()


async def _import_archive(store: Store, members: ArchiveMembers, emit: Emit) -> int:
    name = f"docker-archive:{members.path}"
    if "manifest.json" not in members.files:
        raise PlashError(f"{name}: not a docker save archive (no manifest.json)")
    try:
        entries = json.loads(await trio.to_thread.run_sync(members.read, "manifest.json"))
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("Config"), str)
                                                    and isinstance(e.get("Layers"), list) for e in entries):
            raise ValueError("not a list of images with Config and Layers")
    except ValueError as e:
        raise PlashError(f"{name}: not a docker save archive (manifest.json: {e})") from None
    if len(entries) != 1:
        raise PlashError(f"{name}: holds {len(entries)} images, plash imports archives of one")
    entry = entries[0]
    config_raw = await trio.to_thread.run_sync(members.read, entry["Config"])
    try:
        config = json.loads(config_raw)
        diff_ids = config["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError) as e:
        raise PlashError(f"{name}: bad image config {entry['Config']} ({e})") from None
    if len(diff_ids) != len(entry["Layers"]) or not all(str(d).startswith("sha256:") for d in diff_ids):
        raise PlashError(f"{name}: the image config lists {len(diff_ids)} diff_ids for {len(entry['Layers'])} layers")
    # a layer's diff_id is the sha256 of its plain tarball, and that is what is verified: a gzip or
    # zstd member (docker save from a containerd store keeps the registry's blobs) is decompressed here
    layers = []
    for i, (diff, member) in enumerate(zip(diff_ids, entry["Layers"], strict=True)):
        desc = oci.descriptor({"digest": diff}, name, f"layer {i + 1} of the image config", need_size=False)
        if not isinstance(member, str):
            raise PlashError(f"{name}: manifest.json names layer {i + 1} with {http.json_type(member)}, not a file name")
        layers.append(Descriptor(desc.digest, None, "application/vnd.oci.image.layer.v1.tar", member))
    config_desc = Descriptor("sha256:" + sha256(config_raw).hexdigest())
    blobs = FileBlobs(lambda desc: members.open(desc.member), name, serial=members.serial)
    return await import_layers(store, blobs, layers, config_desc, config, f"{name}: the image config", name, emit)
