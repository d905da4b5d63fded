"""Unpack an untrusted root file system tarball into a layer directory.

Every member is checked and created relative to the layer root through
directory file descriptors opened with O_NOFOLLOW, so no member can reach
outside the layer: `..` components are refused, leading `/` is dropped,
a symlink on the way to a member is refused, hard links must point at a
member already inside. Device nodes are skipped. Ownership is kept where the
current user namespace maps it, otherwise files belong to the caller (and
lose setuid/setgid bits). Directory modes are applied last, deepest first,
so read-only directories do not break extraction. A later member replaces
an earlier one (a directory tree included), as tar does; OCI whiteouts hide
lower layers only, in whatever order they come.

Memory stays bounded (under about 200 MB) whatever the input:
- the decompressors and the read-ahead are bounded (see plash.store.decompress);
- a member's extra headers (PAX records, GNU long names, sparse maps) may
  not exceed MAX_HEADERS (1 MiB);
- the paths made are remembered in a fixed 2 MiB bitmap.

The modules: decompress (the plain bytes, read ahead), members (the
writers), whiteouts (OCI's, in overlayfs form); here: the header rules and
the loop.

The end of the archive is where GNU tar sees it: a zero block ends it (and
what follows is ignored), an archive may end without zero blocks or with a
partial block, but a corrupt header or a truncated member is an error.
After the end, at most MAX_TRAILING (16 MiB) more are read, and no more once
DRAIN_IDLE (2 s) pass without data: enough for the padding and compressed
trailers real writers add (so a feeding pipe is not cut short), never a
hang on input that does not end (/dev/zero, a pipe left open).
"""

from __future__ import annotations

import errno
import os
import tarfile
from typing import BinaryIO

from plash.errors import UnpackError
from plash.store.decompress import MAX_HEADERS, ReadAhead, open_decompressed
from plash.store.members import Unpacker, member_parts

__all__ = ["member_parts", "unpack"]

_InvalidHeader: type[Exception] = tarfile.InvalidHeaderError  # type: ignore[attr-defined]  # not in typeshed


def _header_type(reader: ReadAhead) -> type[tarfile.TarInfo]:
    """tarfile's header parser, held to GNU tar's rules and to MAX_HEADERS.

    tarfile quietly ends an archive at a header with a bad checksum (past
    the first): GNU tar reports it and fails, and so do we. A member's extra
    headers (PAX records, GNU long names, sparse maps) are read into memory
    whole, so they may not be larger than MAX_HEADERS.
    """

    class Header(tarfile.TarInfo):
        __slots__ = ()

        @classmethod
        def fromtarfile(cls, tar: tarfile.TarFile) -> Header:
            if reader.limit is not None:  # the real header after a PAX or long-name one
                return super().fromtarfile(tar)
            reader.limit = reader.offset + MAX_HEADERS + tarfile.RECORDSIZE  # tarfile reads whole records
            try:
                return super().fromtarfile(tar)
            except _InvalidHeader as e:
                raise UnpackError(f"not a valid tarball: corrupt header at byte {tar.offset} ({e})") from None
            except RecursionError:
                raise UnpackError("not a valid tarball: too many extended headers in a row") from None
            finally:
                reader.limit = None

    return Header


def unpack(stream: BinaryIO, dest: str, oci: bool = False) -> int:
    """Unpack a (possibly compressed) tarball stream into dest; return the member count.

    With oci=True, the tarball is an OCI layer: its whiteouts become overlayfs
    whiteouts and opaque directories, and an empty layer is fine.
    """
    unpacker = Unpacker(dest, oci)
    count = 0
    old_umask = os.umask(0)
    plain: ReadAhead | None = None
    try:
        try:
            plain = open_decompressed(stream)
            with tarfile.open(fileobj=plain, mode="r|", tarinfo=_header_type(plain)) as tar:  # type: ignore[call-overload]
                while (info := tar.next()) is not None:
                    tar.members.clear()  # tarfile keeps every member: memory would grow with the input
                    unpacker.add(tar, info)
                    count += 1
            plain.drain()
        except UnpackError:
            raise
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise UnpackError("no space left on device while unpacking: the store's file system is full") from e
            if e.errno:
                raise UnpackError(f"cannot unpack: {e.strerror}") from e
            raise UnpackError(f"not a valid tarball: {e}") from e
        except Exception as e:  # tarfile, gzip, lzma and zstandard each raise their own
            raise UnpackError(f"not a valid tarball: {e}") from e
        if count == 0 and not oci:
            raise UnpackError("the tarball is empty")
        unpacker.finish()
    finally:
        if plain is not None:
            plain.close()
        os.umask(old_umask)
        unpacker.close()
    return count
