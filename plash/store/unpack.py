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

The modules: decompress and inflate (the plain bytes, read ahead),
tarstream (the members: common headers read there, others by tarfile),
members (the writers), whiteouts (OCI's, in overlayfs form); here: the
header rules and the loop.

The end of the archive is where GNU tar sees it: a zero block ends it (and
what follows is ignored), an archive may end without zero blocks or with a
partial block, but a corrupt header or a truncated member is an error.
After the end, at most MAX_TRAILING (16 MiB) more are read, and no more once
DRAIN_IDLE (2 s) pass without data: enough for the padding and compressed
trailers real writers add (so a feeding pipe is not cut short), never a
hang on input that does not end (/dev/zero, a pipe left open).
"""

from __future__ import annotations

import os
import tarfile
from typing import BinaryIO

from plash.errors import UnpackError, os_message
from plash.store.decompress import MAX_HEADERS, BadStream, ReadAhead, open_decompressed
from plash.store.members import Unpacker, member_error, member_parts, shown
from plash.store.tarstream import EndOfData, TarStream

__all__ = ["member_parts", "unpack"]

# tarfile's header errors (not in typeshed): the first three end the archive where GNU tar ends it too
_ZERO_BLOCK: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_NO_HEADER: type[Exception] = tarfile.EmptyHeaderError  # type: ignore[attr-defined]
_PARTIAL_HEADER: type[Exception] = tarfile.TruncatedHeaderError  # type: ignore[attr-defined]
_BAD_HEADER: type[Exception] = tarfile.InvalidHeaderError  # type: ignore[attr-defined]
_BAD_NEXT_HEADER: type[Exception] = tarfile.SubsequentHeaderError  # type: ignore[attr-defined]


class _Place:
    """Where in the tarball the unpacker is, for its error messages."""

    def __init__(self) -> None:
        self.member: tarfile.TarInfo | None = None  # the last member begun
        self.inside = False  # and still being made
        self.ended = False  # the archive has ended: what follows is read and checked
        self.count = 0  # members made

    def __str__(self) -> str:
        """", in member NAME", ", after member NAME", ..., for the end of a message."""
        if self.ended:
            return ", after the end of the archive"
        if self.member is None:
            return ""
        return f", {'in' if self.inside else 'after'} member {shown(self.member.name)}"


def _header_type(reader: ReadAhead, place: _Place) -> type[tarfile.TarInfo]:
    """tarfile's header parser, held to GNU tar's rules and to MAX_HEADERS, saying what is wrong with a header.

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
            at = f"at byte {tar.offset}"
            try:
                return super().fromtarfile(tar)
            except (BadStream, UnpackError):
                raise
            except _ZERO_BLOCK:
                raise  # the end of the archive
            except (_NO_HEADER, _PARTIAL_HEADER):
                if tar.offset == 0:
                    raise UnpackError("not a valid tarball: no data" if reader.offset == 0 else
                                      f"not a valid tarball: {reader.offset} bytes, less than one header") from None
                raise  # the end of the archive: GNU tar takes one without zero blocks, or with a partial block
            except _BAD_HEADER as e:
                raise UnpackError(f"not a valid tarball: bad header {at} ({e}){place}") from None
            except _BAD_NEXT_HEADER as e:
                raise UnpackError(f"not a valid tarball: bad header after the extended header {at} ({e}){place}") from None
            except RecursionError:
                raise UnpackError(f"not a valid tarball: too many extended headers in a row {at}{place}") from None
            except Exception as e:  # a bad header after a PAX or long-name one, or one tarfile trips over
                raise UnpackError(f"not a valid tarball: bad header {at} ({e or type(e).__name__}){place}") from None
            finally:
                reader.limit = None

    return Header


def _truncated(place: _Place, plain: ReadAhead) -> str:
    """The archive's early end, said for the member it happened in."""
    member = place.member
    if member is None:
        return "not a valid tarball: it ends early"
    if place.inside:
        got = max(0, min(member.size, plain.offset - member.offset_data))
        return (f"not a valid tarball: member {shown(member.name)} is truncated "
                f"(the archive ends after {got} of its {member.size} bytes)")
    return f"not a valid tarball: the archive ends in the padding after member {shown(member.name)}"


def unpack(stream: BinaryIO, dest: str, oci: bool = False) -> int:
    """Unpack a (possibly compressed) tarball stream into dest; return the member count.

    With oci=True, the tarball is an OCI layer: its whiteouts become overlayfs
    whiteouts and opaque directories, and an empty layer is fine. What is
    wrong with a tarball is an UnpackError naming the problem and where it is.
    """
    unpacker = Unpacker(dest, oci)
    place = _Place()
    old_umask = os.umask(0)
    plain: ReadAhead | None = None
    try:
        plain = open_decompressed(stream)
        try:
            tar = TarStream(plain, _header_type(plain, place))
            while (info := tar.next()) is not None:
                place.member, place.inside = info, True
                unpacker.add(tar, info)
                place.inside = False
                place.count += 1
            place.ended = True
            plain.drain()
        except BadStream as e:
            raise UnpackError(f"{e}{place}") from None
        except EndOfData:
            raise UnpackError(_truncated(place, plain)) from None
        except tarfile.ReadError as e:  # raised by tarfile itself
            raise UnpackError(f"not a valid tarball: {e}{place}") from None
        except (OSError, ValueError, OverflowError) as e:
            if place.member is not None and place.inside:
                raise member_error(place.member.name, e) from e
            text = os_message(e) if isinstance(e, OSError) else str(e)  # not seen: reading is checked where it happens
            raise UnpackError(f"cannot unpack: {text}{place}") from e
        if place.count == 0 and not oci:
            raise UnpackError("the tarball is empty")
        unpacker.finish()
    finally:
        if plain is not None:
            plain.close()
        os.umask(old_umask)
        unpacker.close()
    return place.count
