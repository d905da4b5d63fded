"""The members of a tar stream, read straight from its plain bytes: the common headers here, the rest by tarfile.

A root file system is mostly plain ustar headers of files, directories and
links (whatever wrote it, GNU tar, Go's archive/tar or Python's tarfile):
plain_header reads one of those in one pass, giving the TarInfo that
tarfile would. Whatever else comes (PAX and GNU long-name headers,
devices, sparse files, numbers in base-256, a bad checksum, the end of the
archive) is tarfile's to read, through TarInfo.fromtarfile: its reads and
its errors stay what they were. File contents go from the decompressed
chunks to the file without a copy.
"""

from __future__ import annotations

import os
import tarfile
from typing import cast

from plash.errors import UnpackError
from plash.store.decompress import ReadAhead

BLOCK = tarfile.BLOCKSIZE
_ENCODING = tarfile.ENCODING  # tarfile's, for the same names
_KINDS = (tarfile.REGTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE)


class EndOfData(Exception):
    """The archive ends inside a member's contents, or in the padding after them."""


def _number(field: bytes) -> int:
    """A numeric header field as tarfile reads it (octal, up to a NUL, blanks around); ValueError otherwise."""
    if field[0] in (0o200, 0o377):
        raise ValueError("base-256")  # tarfile's to read
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode(_ENCODING, "surrogateescape")


def plain_header(block: bytes) -> tarfile.TarInfo | None:
    """Pure: the member of a plain header of a file, directory or link, as tarfile reads it; None for any other.

    None also where tarfile would find fault (a bad checksum or number),
    so that tarfile says what it is.
    """
    kind = block[156:157]
    if kind not in _KINDS:
        return None
    try:
        checksum = _number(block[148:156])
        mode, uid, gid = _number(block[100:108]), _number(block[108:116]), _number(block[116:124])
        size, mtime = _number(block[124:136]), _number(block[136:148])
        _number(block[329:337]), _number(block[337:345])  # device numbers: unused, but tarfile checks them
    except ValueError:
        return None
    if checksum != sum(block[:148]) + sum(block[156:]) + 256:  # 256: the checksum field, counted as blanks
        return None  # or a signed checksum, which tarfile takes too
    name, prefix = _text(block[:100]), _text(block[345:500])
    if kind == tarfile.DIRTYPE:
        name = name.rstrip("/")
    if prefix:
        name = prefix + "/" + name
        if kind == tarfile.DIRTYPE:
            name = name.rstrip("/")
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.size, info.mtime = mode, uid, gid, size, mtime
    info.type, info.linkname = kind, _text(block[157:257])
    return info


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


class TarStream:
    """The members of the tar stream in plain, in order; copy() writes a member's contents.

    For the members it leaves to tarfile, it is what TarInfo.fromtarfile
    reads from: a TarFile's fileobj (itself), offset, encoding, errors and
    global PAX headers.
    """

    encoding = _ENCODING
    errors = "surrogateescape"

    def __init__(self, plain: ReadAhead, header: type[tarfile.TarInfo]) -> None:
        self.plain = plain
        self.header = header  # tarfile's reader, held to plash's rules (see plash.store.unpack)
        self.fileobj = self
        self.offset = 0  # where the next header starts
        self.pax_headers: dict[str, str] = {}  # global ones: they apply to every later member

    def read(self, n: int) -> bytes:
        """n bytes, fewer only at the end of the input (for tarfile)."""
        parts = []
        while n > 0 and (data := self.plain.read(n)):
            parts.append(data)
            n -= len(data)
        return b"".join(parts)

    def tell(self) -> int:
        return self.plain.offset

    def _skip_to(self, offset: int) -> None:
        left = offset - self.plain.offset
        if left < 0:
            raise UnpackError(f"not a valid tarball: bad header at byte {self.offset} (its data runs into the next header)")
        while left:
            got = self.plain.skip(left)
            if not got:
                raise EndOfData
            left -= got

    def next(self) -> tarfile.TarInfo | None:
        """The next member; None at the end of the archive."""
        self._skip_to(self.offset)  # past the last member's contents and padding
        block = b"" if self.pax_headers else self.plain.peek(BLOCK)  # global PAX headers: tarfile applies them
        info = plain_header(block) if len(block) == BLOCK else None
        if info is None:
            try:
                info = self.header.fromtarfile(self)  # type: ignore[arg-type]  # (a TarFile as far as it reads)
            except (tarfile.EOFHeaderError, tarfile.EmptyHeaderError,  # type: ignore[attr-defined]
                    tarfile.TruncatedHeaderError):  # type: ignore[attr-defined]
                return None  # the end of the archive, where GNU tar sees it (unpack's Header says where it is not)
            return info
        kind = info.type
        self.plain.skip(BLOCK)
        info.offset = self.offset
        info.offset_data = self.offset + BLOCK
        # contents follow the header of a regular file only, as tarfile (and GNU tar) has it
        self.offset = info.offset_data + (_padded(info.size) if kind == tarfile.REGTYPE else 0)
        return info

    def copy(self, info: tarfile.TarInfo, fd: int) -> None:
        """Write the member's contents to fd (a sparse member's holes are left as holes)."""
        self._skip_to(info.offset_data)
        sparse = cast("list[tuple[int, int]] | None", info.sparse)  # (typeshed has it as bytes)
        if sparse is None:
            self._copy(fd, info.size)
            return
        for start, length in sparse:
            os.lseek(fd, start, os.SEEK_SET)
            self._copy(fd, length)
        os.ftruncate(fd, info.size)

    def _copy(self, fd: int, size: int) -> None:
        while size > 0:
            view = self.plain.take(size)
            if not view:
                raise EndOfData
            size -= len(view)
            while view:
                view = view[os.write(fd, view):]

