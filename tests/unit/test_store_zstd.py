"""zstd input: what zstd's own tools write unpacks, and a stream cut short anywhere inside a frame is refused.

python-zstandard's reader ends quietly where its input ends; the unpacker
follows the frames itself (plash.store.decompress) to tell the two apart.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard
from conftest import need

from plash.errors import UnpackError
from plash.store.unpack import unpack

# 8 members: random data (stored in raw blocks) and text (compressed and RLE blocks)
MEMBERS = 8


def a_tarball() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(MEMBERS):
            data = os.urandom(60_000) if i % 2 else b"hello\n" * 20_000 + bytes(100_000)
            info = tarfile.TarInfo(f"f{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


SPLIT = 300_001  # inside a member's data
SKIPPABLE = (0x184D2A5E).to_bytes(4, "little") + (6).to_bytes(4, "little") + b"plash!"  # a frame zstd passes over


def zstd_tool(args: list[str], raw: bytes) -> bytes:
    need(shutil.which(args[0]) is not None, f"{args[0]} is not installed")
    return subprocess.run([*args, "-q", "-c"], input=raw, capture_output=True, check=True, timeout=60).stdout


def unpacked(tmp_path: Path, data: bytes) -> int:
    dest = tmp_path / f"out-{len(os.listdir(tmp_path))}"
    dest.mkdir()
    return unpack(io.BytesIO(data), str(dest))


WRITERS = {
    "zstd -1": lambda raw: zstd_tool(["zstd", "-1"], raw),
    "zstd -19": lambda raw: zstd_tool(["zstd", "-19"], raw),
    "zstd --long=27": lambda raw: zstd_tool(["zstd", "--long=27"], raw),
    "zstd -T2": lambda raw: zstd_tool(["zstd", "-T2", "-3"], raw),
    "zstd --no-check": lambda raw: zstd_tool(["zstd", "--no-check"], raw),
    "zstd --no-content-size": lambda raw: zstd_tool(["zstd", "--no-content-size"], raw),
    "python-zstandard with checksum": lambda raw: zstandard.ZstdCompressor(write_checksum=True).compress(raw),
    "two frames": lambda raw: zstandard.compress(raw[:SPLIT]) + zstandard.compress(raw[SPLIT:]),
    "a skippable frame between two": lambda raw: zstandard.compress(raw[:SPLIT]) + SKIPPABLE + zstandard.compress(raw[SPLIT:]),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_zstd_streams_unpack_and_cuts_inside_frames_are_refused(tmp_path: Path, writer: str) -> None:
    raw = a_tarball()
    data = WRITERS[writer](raw)
    assert unpacked(tmp_path, data) == MEMBERS
    first = len(zstandard.compress(raw[:SPLIT]))
    # where a frame ends, a cut leaves a shorter stream (zstd -d takes it too): the tar reader's to refuse
    frame_ends = {first, first + len(SKIPPABLE)} if "frame" in writer else set()
    # from 4 bytes on: a shorter input is not even taken for zstd
    cuts = sorted({*range(4, 40), *range(40, len(data), len(data) // 30), len(data) - 1} - frame_ends)
    for cut in cuts:
        with pytest.raises(UnpackError) as e:
            unpacked(tmp_path, data[:cut])
        assert e.value.message.startswith("not a valid tarball: truncated zstd stream (it ends inside a frame)"), cut
