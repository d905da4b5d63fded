"""The parallel gzip of push: valid gzip, and the same bytes whatever the number of threads."""

from __future__ import annotations

import gzip
import random
import subprocess

import pytest

from plash.engine.push.deflate import BLOCK, ParallelGzip


def squeeze(data: bytes, threads: int, piece: int = 1 << 16, level: int = 6) -> bytes:
    g = ParallelGzip(level, threads)
    out = bytearray()
    for i in range(0, len(data), piece):
        out += g.compress(data[i:i + piece])
    out += g.flush()
    return bytes(out)


rng = random.Random(7)
CASES = {
    "empty": b"",
    "one byte": b"x",
    "one block": bytes(BLOCK),
    "blocks and a bit": rng.randbytes(BLOCK) + b"abc" * BLOCK + rng.randbytes(1234),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_output_is_gzip_and_the_same_for_any_thread_count(name: str) -> None:
    data = CASES[name]
    outs = {squeeze(data, threads) for threads in (1, 2, 3, 8)}
    assert len(outs) == 1
    out = outs.pop()
    assert gzip.decompress(out) == data
    r = subprocess.run(["gzip", "-t"], input=out, capture_output=True)  # the reference reader agrees
    assert r.returncode == 0, r.stderr
    assert out[4:8] == b"\0\0\0\0"  # no time in the header


def test_pieces_of_any_size_give_the_same_bytes() -> None:
    data = CASES["blocks and a bit"]
    assert squeeze(data, 2, piece=7919) == squeeze(data, 2, piece=BLOCK * 2)
    assert squeeze(data[:BLOCK + 10], 2, piece=1) == squeeze(data[:BLOCK + 10], 2, piece=BLOCK)


def test_repeats_across_blocks_still_compress() -> None:
    # the dictionary carries the last 32 KiB over: a block that repeats the one before shrinks to almost nothing
    data = rng.randbytes(1 << 14) * (3 * BLOCK // (1 << 14))
    assert len(squeeze(data, 4)) < len(data) // 50
