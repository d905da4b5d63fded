"""A tarball's plain bytes, whatever its compression, read ahead in a thread of its own.

Memory stays bounded whatever the input (see plash.store.unpack):
- xz: at most XZ_MEMLIMIT (130 MiB) for the decoder, enough for a 128 MiB
  dictionary; xz -9, the most real images use, needs 65 MiB.
- zstd: windows up to ZSTD_MAX_WINDOW (128 MiB, --long=27), which is also
  the most `zstd -d` accepts without --memory.
- gzip (32 KiB window) and bzip2 (under 4 MiB) are bounded by design.
- decompressed data is read at most 1 MiB ahead (4 chunks of 256 KiB).

After the end of the archive, at most MAX_TRAILING (16 MiB) more are read,
and no more once DRAIN_IDLE (2 s) pass without data (see ReadAhead.drain).
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, cast

from plash.errors import UnpackError, os_message
from plash.store.inflate import CHUNK, BadStream, GzipReader

__all__ = ["CHUNK", "BadStream", "ReadAhead", "open_decompressed"]

# Limits that hold memory and time for any input (see the module docstring).
XZ_MEMLIMIT = 130 << 20
ZSTD_MAX_WINDOW = 1 << 27
MAX_HEADERS = 1 << 20  # a member's extra headers, at most (see unpack's Header)
MAX_TRAILING = 16 << 20
DRAIN_IDLE = 2.0
PIPE_BUFFER = 1 << 20  # the most an unprivileged process may ask for (fs.pipe-max-size)


def open_decompressed(raw: BinaryIO) -> ReadAhead:
    """A reader of the tarball's plain bytes, whatever its compression.

    The input is read and decompressed by a thread of its own, ahead of the
    tar reader: zlib, lzma, bz2 and zstd release the GIL while they work, so
    decompressing overlaps with creating the files (as tar does with a
    separate xz process). Their errors become BadStream, naming the problem.
    gzip is inflated by zlib-ng where it is installed (see plash.store.inflate).
    """
    _widen_pipe(raw)
    # (the casts: typing's BinaryIO does not declare readinto, nor is a file that only reads one)
    buf = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast("io.RawIOBase", raw))
    try:
        magic = buf.peek(6)[:6]
    except OSError as e:
        raise UnpackError(f"cannot read the tarball: {os_message(e)}") from None
    read: Callable[[], bytes]
    if magic.startswith(b"\x1f\x8b"):
        gz = GzipReader(buf.read1)
        read = _checked(gz.read, "gzip", (gz.error,))
    elif magic.startswith(b"BZh"):
        import bz2

        bz = bz2.BZ2File(cast("BinaryIO", _Available(buf)))
        read = _checked(functools.partial(bz.read1, CHUNK), "bzip2", (OSError,))
    elif magic.startswith(b"\xfd7zXZ\x00"):
        import lzma

        read = _checked(functools.partial(next, _xz_chunks(buf), b""), "xz", (lzma.LZMAError,))
    elif magic.startswith(b"\x28\xb5\x2f\xfd"):
        read = _zstd_reader(buf)
    else:
        read = _checked(functools.partial(buf.read1, CHUNK), "", ())  # what a pipe has, without waiting for a full chunk
    return ReadAhead(read)


def _widen_pipe(raw: BinaryIO) -> None:
    """A pipe as input holds PIPE_BUFFER bytes, not 64 KiB: its writer and we wake each other less often.

    With 2 cores busy decompressing and writing files, a writer that must
    run every 64 KiB keeps the decompressor waiting for input.
    """
    import fcntl
    import stat

    try:
        fd = raw.fileno()
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BUFFER)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # over the user's pipe limit (fs.pipe-user-pages-soft), or not a file: the default size does


def _checked(read: Callable[[], bytes], kind: str, errors: tuple[type[Exception], ...]) -> Callable[[], bytes]:
    """read, with what goes wrong said once: the input's errors and the decompressor's (BadStream)."""

    def checked() -> bytes:
        try:
            return read()
        except (BadStream, UnpackError):
            raise
        except OSError as e:
            if e.errno is not None or not kind:  # from reading the input, not from the decompressor
                raise UnpackError(f"cannot read the tarball: {os_message(e)}") from None
            raise BadStream(f"not a valid tarball: corrupt {kind} stream ({_detail(e)})") from None
        except EOFError:
            raise BadStream(f"not a valid tarball: truncated {kind} stream (it ends before its end marker)") from None
        except errors as e:
            raise BadStream(f"not a valid tarball: corrupt {kind} stream ({_detail(e)})") from None

    return checked


def _detail(e: Exception) -> str:
    """A decompressor's error message, as the tail of ours."""
    text = str(e).rpartition(": ")[2] or type(e).__name__  # "Error -3 while decompressing data: ...", "zstd ...: ..."
    return text[:1].lower() + text[1:] if text[1:2].islower() else text  # "Corrupt input data", not "CRC ..."


class _Available:
    """A file whose read(n) gives what the input has (at least a byte), as a pipe does.

    For the decompressors: a buffered read(n) waits for n bytes, and so would
    hold back the end of the archive while the input stays open.
    """

    def __init__(self, buf: io.BufferedReader[Any]) -> None:
        self.read = buf.read1


class _ZstdFrames:
    """The input of the zstd decoder (as _Available), followed frame by frame to tell its end from a truncation.

    python-zstandard's reader ends quietly where its input ends, in the
    middle of a frame too; `zstd -d` calls that an error, and so do we.
    Only the frame and block headers are read (RFC 8878): what they do not
    describe (not zstd at all, a reserved block type) is the decoder's to refuse.
    """

    def __init__(self, buf: io.BufferedReader[Any]) -> None:
        self.read1 = buf.read1
        self.skip = 0  # bytes to pass over: header fields, block contents, a checksum
        self.head = b""  # the bytes of the header being collected
        self.want = 4  # its length
        self.step: Callable[[bytes], None] | None = self._magic  # what to do with it; None: not followed further
        self.checksum = 0

    def read(self, n: int) -> bytes:
        data = self.read1(n)
        if not data and self.step == self._magic and not (self.skip or self.head):
            return data  # the end, between frames
        if not data and self.step is not None:
            raise BadStream("not a valid tarball: truncated zstd stream (it ends inside a frame)")
        view = memoryview(data)
        while view and self.step is not None:
            if self.skip:
                k = min(self.skip, len(view))
                self.skip -= k
            else:
                k = self.want - len(self.head)
                self.head += view[:k]
                if len(self.head) == self.want:
                    head, self.head = self.head, b""
                    self.step(head)
            view = view[k:]
        return data

    def _magic(self, head: bytes) -> None:
        magic = int.from_bytes(head, "little")
        if magic == 0xFD2FB528:
            self.want, self.step = 1, self._frame_header
        elif magic & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame: its size, then as many bytes
            self.want, self.step = 4, self._skippable
        else:
            self.step = None

    def _skippable(self, head: bytes) -> None:
        self.skip = int.from_bytes(head, "little")
        self.want, self.step = 4, self._magic

    def _frame_header(self, head: bytes) -> None:
        fhd = head[0]
        single = fhd >> 5 & 1
        self.checksum = 4 if fhd >> 2 & 1 else 0
        # the window descriptor, the dictionary id, the content size
        self.skip = (1 - single) + (0, 1, 2, 4)[fhd & 3] + (single, 2, 4, 8)[fhd >> 6]
        self.want, self.step = 3, self._block

    def _block(self, head: bytes) -> None:
        header = int.from_bytes(head, "little")
        last, kind, size = header & 1, header >> 1 & 3, header >> 3
        if kind == 3:
            self.step = None  # reserved: the decoder refuses it
            return
        self.skip = 1 if kind == 1 else size  # an RLE block holds one byte
        if last:
            self.skip += self.checksum
            self.want, self.step = 4, self._magic


def _xz_chunks(buf: io.BufferedReader[Any]) -> Iterator[bytes]:
    """The plain bytes of an xz file, decoded within XZ_MEMLIMIT.

    Like lzma.LZMAFile (which has no memory limit): concatenated streams
    follow on; data after a stream that is not a stream is ignored.
    """
    import lzma

    def decoder() -> lzma.LZMADecompressor:
        return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)

    dec = decoder()
    try:
        while True:
            if dec.eof:
                rest = dec.unused_data or buf.read1(CHUNK)
                if not rest:
                    return
                dec = decoder()
                try:
                    out = dec.decompress(rest, CHUNK)
                except lzma.LZMAError as e:
                    if _xz_memory(e):
                        raise
                    return
            else:
                data = buf.read1(CHUNK) if dec.needs_input else b""
                if dec.needs_input and not data:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
                out = dec.decompress(data, CHUNK)  # bounded output: a small input may expand hugely
            if out:
                yield out
    except lzma.LZMAError as e:
        if _xz_memory(e):
            raise UnpackError(
                f"the xz stream needs more than {XZ_MEMLIMIT >> 20} MiB of memory to unpack (dictionary too large)"
            ) from None
        raise


def _xz_memory(e: Exception) -> bool:
    return "memory usage limit" in str(e).lower()


def _zstd_reader(buf: io.BufferedReader[Any]) -> Callable[[], bytes]:
    """The plain bytes of a zstd stream, its window within ZSTD_MAX_WINDOW, its end checked (see _ZstdFrames)."""
    # (zstandard ships its types; a mypy that runs without plash's dependencies cannot see them)
    import zstandard  # type: ignore[import-not-found, unused-ignore]

    reader = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(
        cast("BinaryIO", _ZstdFrames(buf)), read_across_frames=True)

    def read() -> bytes:
        try:
            data: bytes = reader.read1(CHUNK)
        except zstandard.ZstdError as e:
            if "too much memory" in str(e):
                raise UnpackError(
                    f"the zstd stream needs a window of more than {ZSTD_MAX_WINDOW >> 20} MiB to unpack"
                ) from None
            raise
        return data

    return _checked(read, "zstd", (zstandard.ZstdError,))


class ReadAhead:
    """Reads chunks in a daemon thread, a bounded number ahead (at most 4, 1 MiB).

    Decompressors are read with read1, which hands out what one read of the
    input gave: read, which fills its whole buffer first, would hold back
    the end of the archive while, say, gzip skips zero padding that never ends.
    """

    def __init__(self, read: Callable[[], bytes]) -> None:
        import queue
        import threading

        self.chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=4)
        self.pending = b""
        self.view = memoryview(self.pending)  # of pending, for take
        self.pos = 0  # in self.pending
        self.offset = 0  # bytes handed out so far
        self.limit: int | None = None  # handing out more than this raises (see Header)
        self.done = False
        self.stopped = False
        threading.Thread(target=self._pump, args=(read,), daemon=True).start()

    def _pump(self, read: Callable[[], bytes]) -> None:
        try:
            while not self.stopped:
                chunk = read()
                self.chunks.put(chunk)
                if not chunk:
                    return
        except BaseException as e:  # handed to the reader, raised there
            self.chunks.put(e)

    def _next(self, timeout: float | None = None) -> bool:
        """Take the next chunk; False at the end of the input."""
        got = self.chunks.get(timeout=timeout)
        if isinstance(got, BaseException):
            self.done = True
            raise got
        if not got:
            self.done = True
            return False
        self.pending, self.pos = got, 0
        self.view = memoryview(got)
        return True

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes, fewer when that is what has come so far; b"" at the end.

        (Never waiting for more than one byte: the end of the archive may be
        followed by input that never comes.)
        """
        if n == 0 or (self.pos == len(self.pending) and (self.done or not self._next())):
            return b""
        end = len(self.pending) if n < 0 else self.pos + n
        data = self.pending[self.pos:end]
        self.pos += len(data)
        self.offset += len(data)
        if self.limit is not None and self.offset > self.limit:
            raise BadStream(f"a tarball member's headers are larger than {MAX_HEADERS >> 20} MiB")
        return data

    def peek(self, n: int) -> bytes:
        """The next n bytes if the chunk at hand holds them (not handed out); else fewer, maybe none."""
        if self.pos == len(self.pending) and (self.done or not self._next()):
            return b""
        return self.pending[self.pos:self.pos + n]

    def take(self, n: int) -> memoryview:
        """Up to n bytes of the chunk at hand, as a view (not a copy); empty at the end. For file contents."""
        if self.pos == len(self.pending) and (self.done or not self._next()):
            return memoryview(b"")
        end = min(len(self.pending), self.pos + n)
        view = self.view[self.pos:end]
        self.offset += end - self.pos
        self.pos = end
        return view

    def skip(self, n: int) -> int:
        """Pass over up to n bytes of the chunk at hand; how many (0 at the end)."""
        if self.pos == len(self.pending) and (self.done or not self._next()):
            return 0
        k = min(len(self.pending) - self.pos, n)
        self.pos += k
        self.offset += k
        return k

    def drain(self) -> None:
        """Read on after the end of the archive, within bounds.

        That takes the padding of the last record and a compressed stream's
        trailer (checked), so a pipe feeding us is not cut off early; but it
        stops after MAX_TRAILING bytes, or DRAIN_IDLE seconds without data,
        so that input which never ends never hangs the unpacker.
        """
        import queue

        left = MAX_TRAILING - (len(self.pending) - self.pos)
        try:
            while left > 0 and not self.done and self._next(timeout=DRAIN_IDLE):
                left -= len(self.pending)
        except queue.Empty:
            pass
        self.pending, self.pos = b"", 0

    def close(self) -> None:
        """Stop the thread: it reads at most one more chunk."""
        import queue

        self.stopped = True
        try:
            while True:
                self.chunks.get_nowait()
        except queue.Empty:
            pass
