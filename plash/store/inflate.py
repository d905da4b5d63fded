"""gzip's plain bytes (RFC 1952), inflated by zlib-ng where it is installed, else by the standard zlib.

Inflating is most of the work of importing an OCI image, and zlib-ng
inflates about twice as fast as zlib. It has zlib's interface and zlib's
error messages, so what is said about a corrupt stream is the same with
either. The gzip framing is read here, as gzip.GzipFile reads it:
members follow one another, zero bytes may pad the end, each member's
CRC-32 and length are checked; a stream that ends early is an EOFError.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from types import ModuleType
from typing import Any

CHUNK = 1 << 18  # 256 KiB: decompressed bytes are handed over in pieces of this size, read ahead 4 of them
_FEXTRA, _FNAME, _FCOMMENT, _FHCRC = 4, 8, 16, 2


class BadStream(Exception):
    """What is wrong with the input, in words for an UnpackError; unpack adds where it happened."""


def zlib_library() -> ModuleType:
    """zlib-ng's zlib module when it imports, else the standard one (the same interface)."""
    try:
        from zlib_ng import zlib_ng  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        import zlib

        return zlib
    return zlib_ng  # type: ignore[no-any-return, unused-ignore]


class GzipReader:
    """The plain bytes of a gzip stream, a chunk at a time, from read1(n) (what the input has, b"" at its end)."""

    def __init__(self, read1: Callable[[int], bytes], lib: ModuleType | None = None) -> None:
        self.read1 = read1
        self.lib = lib or zlib_library()
        self.error: type[Exception] = self.lib.error
        self.rest = b""  # input read but not yet used
        self.inflate: Any = None  # the member's decompressor; None between members
        self.crc = 0
        self.size = 0
        self.members = 0
        self.ended = False

    def _more(self) -> bytes:
        """Input: what is left over, else what the input has; b"" at its end."""
        data, self.rest = (self.rest, b"") if self.rest else (self.read1(CHUNK), b"")
        return data

    def _take(self, n: int) -> bytes:
        """Exactly n bytes of input (EOFError if it ends first)."""
        while len(self.rest) < n:
            data = self.read1(CHUNK)
            if not data:
                raise EOFError
            self.rest += data
        taken, self.rest = self.rest[:n], self.rest[n:]
        return taken

    def _skip_field(self) -> None:
        """Past a zero-terminated header field (a name, a comment)."""
        while True:
            at = self.rest.find(b"\0")
            if at >= 0:
                self.rest = self.rest[at + 1:]
                return
            self.rest = b""
            self._take(1)

    def _start(self) -> bool:
        """Read a member's header; False at the end of the stream (only zero bytes, or nothing, follow)."""
        while True:
            self.rest = self.rest.lstrip(b"\0") if self.members else self.rest
            if self.rest:
                break
            self.rest = self.read1(CHUNK)
            if not self.rest:
                if not self.members:
                    raise EOFError
                return False
        while len(self.rest) < 2 and (data := self.read1(CHUNK)):
            self.rest += data
        if self.rest[:2] != b"\x1f\x8b":
            if self.members:  # after a member: what follows is not another one
                raise BadStream("not a valid tarball: corrupt gzip stream (what follows its end is not gzip)")
            raise BadStream("not a valid tarball: corrupt gzip stream (not a gzip file)")
        method, flags = self._take(10)[2:4]
        if method != 8:
            raise BadStream("not a valid tarball: corrupt gzip stream (unknown compression method)")
        if flags & _FEXTRA:
            (extra,) = struct.unpack("<H", self._take(2))
            self._take(extra)
        if flags & _FNAME:
            self._skip_field()
        if flags & _FCOMMENT:
            self._skip_field()
        if flags & _FHCRC:
            self._take(2)
        self.inflate = self.lib.decompressobj(-15)  # raw deflate: the framing is ours
        self.crc = self.size = 0
        return True

    def _finish(self) -> None:
        """The member's trailer: its CRC-32 and length, checked."""
        crc, size = struct.unpack("<II", self._take(8))
        if crc != self.crc:
            raise BadStream(f"not a valid tarball: corrupt gzip stream (CRC check failed {hex(crc)} != {hex(self.crc)})")
        if size != self.size & 0xFFFFFFFF:
            raise BadStream("not a valid tarball: corrupt gzip stream (incorrect length of data produced)")
        self.inflate = None
        self.members += 1

    def read(self) -> bytes:
        """Up to CHUNK plain bytes; b"" at the end; BadStream, EOFError or the library's error if it is not gzip."""
        while not self.ended:
            if self.inflate is None and not self._start():
                self.ended = True
                break
            inflate = self.inflate
            data = inflate.unconsumed_tail or self._more()
            if not data:
                raise EOFError
            out: bytes = inflate.decompress(data, CHUNK)  # at most CHUNK: a small input may expand hugely
            if out:
                self.crc = self.lib.crc32(out, self.crc)
                self.size += len(out)
            if inflate.eof:
                self.rest = inflate.unused_data
                self._finish()
            if out:
                return out
        return b""
