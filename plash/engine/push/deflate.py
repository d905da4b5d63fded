"""gzip on every core, with the same bytes whatever the number of cores (pigz's way, RFC 1951/1952).

The input is cut into blocks of BLOCK bytes at fixed offsets; each is
deflated on its own (zlib releases the GIL, so blocks go side by side in
threads), primed with the 32 KiB before it as dictionary and ended with a
sync flush, so the pieces join into one deflate stream; an empty final
block and the gzip trailer (CRC-32, length) close it. The header has no
name and no time. The output depends only on the input, the level and
zlib, never on how many threads made it.
"""

from __future__ import annotations

import collections
import os
import struct
import zlib
from concurrent.futures import Future, ThreadPoolExecutor

BLOCK = 1 << 20
WINDOW = 1 << 15
HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"  # deflate, no flags, mtime 0, no extra flags, Unix
FINAL = b"\x03\x00"  # an empty fixed-Huffman block with BFINAL set


def deflate_block(block: bytes, dictionary: bytes, level: int) -> bytes:
    """Pure: one block as raw deflate, primed with dictionary, ending byte-aligned (not final)."""
    if dictionary:
        c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY, dictionary)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(block) + c.flush(zlib.Z_SYNC_FLUSH)


class ParallelGzip:
    """A streaming gzip compressor: compress(data) returns what is ready, in order; flush() the rest and the end."""

    def __init__(self, level: int, threads: int | None = None) -> None:
        self.level = level
        self.threads = threads or max(1, min(8, os.cpu_count() or 1))
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="plash-gzip")
        self.pending: collections.deque[Future[bytes]] = collections.deque()
        self.buf = bytearray()
        self.tail = b""
        self.crc = 0
        self.length = 0
        self.started = False

    def _submit(self, block: bytes) -> None:
        self.pending.append(self.pool.submit(deflate_block, block, self.tail, self.level))
        self.tail = block[-WINDOW:]

    def _ready(self, wait_for: int) -> bytes:
        """The finished blocks at the front, waiting until at most wait_for are pending."""
        out = bytearray()
        if not self.started:
            out += HEADER
            self.started = True
        while self.pending and (len(self.pending) > wait_for or self.pending[0].done()):
            out += self.pending.popleft().result()
        return bytes(out)

    def compress(self, data: bytes) -> bytes:
        self.crc = zlib.crc32(data, self.crc)
        self.length += len(data)
        self.buf += data
        while len(self.buf) >= BLOCK:
            self._submit(bytes(self.buf[:BLOCK]))
            del self.buf[:BLOCK]
        return self._ready(2 * self.threads)  # memory: a few blocks in flight

    def flush(self) -> bytes:
        try:
            if self.buf:
                self._submit(bytes(self.buf))
                self.buf.clear()
            return self._ready(0) + FINAL + struct.pack("<II", self.crc & 0xFFFFFFFF, self.length & 0xFFFFFFFF)
        finally:
            self.close()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
