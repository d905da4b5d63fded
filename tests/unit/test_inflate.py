"""The fast paths of unpack give what the slow ones give: each inflater, and headers read by plash or by tarfile.

Trees are compared whole: every path with its kind, mode, owner, size,
content hash, link target, xattrs and time.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trees import file_tree
from zlib_ng import zlib_ng

from plash.errors import UnpackError
from plash.store import inflate, tarstream
from plash.store.unpack import unpack

ROOT = os.geteuid() == 0
rng = random.Random(15)
T = 1_700_000_000


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644, link: str = "",
           ids: tuple[int, int] = (0, 0), fmt: int = tarfile.USTAR_FORMAT, pax: dict[str, str] | None = None) -> bytes:
    """One member's blocks in format fmt (whatever that format makes of a long name or a big number)."""
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.linkname, info.mtime = kind, len(data), mode, link, T
    info.uid, info.gid = ids
    info.pax_headers = pax or {}
    pad = b"\0" * (-len(data) % 512)
    return info.tobuf(fmt, "utf-8", "surrogateescape") + data + pad


def rich_tar() -> bytes:
    """A tarball of every kind of member plash makes, in ustar, GNU and PAX form, ending in zero blocks."""
    big = rng.randbytes(1_100_000)  # several of the decompressor's chunks
    parts = [
        member("d/", tarfile.DIRTYPE, mode=0o755),
        member("d/sub/", tarfile.DIRTYPE, mode=0o700),
        member("ro/", tarfile.DIRTYPE, mode=0o555),
        member("ro/inside", data=b"in a read-only directory"),
        *(member(f"d/size{n}", data=rng.randbytes(n)) for n in (0, 1, 511, 512, 513, 300_000)),
        member("d/big", data=big, mode=0o600),
        member("d/setuid", data=b"#!/bin/sh\n", mode=0o4755),
        member("d/readonly", data=b"r", mode=0o444),
        member("d/owned", data=b"o", ids=(1000, 1001)),
        member("d/link", tarfile.SYMTYPE, link="../ro/inside"),
        member("d/hard", tarfile.LNKTYPE, link="d/big"),
        member("d/fifo", tarfile.FIFOTYPE, mode=0o640),
        *(member(d, tarfile.DIRTYPE, mode=0o755) for d in ("p/", "gnu/", "pax/")),  # every dir listed: times set
        member("p/" + "u" * 120 + "/", tarfile.DIRTYPE, mode=0o750),  # ustar: the name split into prefix and name
        member("p/" + "u" * 120 + "/f", data=b"prefixed"),
        member("gnu/" + "g" * 150, data=b"a GNU long name", fmt=tarfile.GNU_FORMAT),
        member("gnu/big-uid", data=b"base-256", ids=(100_000_000, 7), fmt=tarfile.GNU_FORMAT),
        member("pax/" + "x" * 200, data=b"a PAX long name", fmt=tarfile.PAX_FORMAT),
        member("pax/xattr", data=b"x", fmt=tarfile.PAX_FORMAT, pax={"SCHILY.xattr.user.plash": "kept"}),
        member("pax/time", data=b"t", fmt=tarfile.PAX_FORMAT, pax={"mtime": f"{T + 0.25}"}),
        member("caf\udce9", data=b"a name that is not UTF-8"),
        member("v7dir/", tarfile.AREGTYPE, mode=0o755),  # old tar: a directory as a file with a trailing slash
        member("d/size1", data=b"a later member replaces an earlier one"),
    ]
    return b"".join(parts) + bytes(1024)


def tree(root: str) -> list[tuple[str, ...]]:
    """Every path below root: kind, mode, owner, size, content hash or link target, xattrs, time, links."""
    return file_tree(root)


def gzipped(raw: bytes) -> bytes:
    """gzip as real writers make it: two members (the first with a file name in its header), zero padding after."""
    buf = io.BytesIO()
    with gzip.GzipFile("layer.tar", "wb", fileobj=buf, mtime=0) as f:
        f.write(raw[:len(raw) // 2])
    return buf.getvalue() + gzip.compress(raw[len(raw) // 2:], 6, mtime=0) + bytes(600)


def unpacked(data: bytes, dest: Path, lib: object | None = None,
             monkeypatch: pytest.MonkeyPatch | None = None) -> list[tuple[str, ...]]:
    if lib is not None and monkeypatch is not None:
        monkeypatch.setattr(inflate, "zlib_library", lambda: lib)
    dest.mkdir()
    unpack(io.BytesIO(data), str(dest))
    return tree(str(dest))


def test_the_same_tree_with_each_inflater_and_either_header_reader(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    raw = rich_tar()
    plain = unpacked(raw, tmp_path / "plain")
    assert unpacked(gzipped(raw), tmp_path / "zlib-ng", zlib_ng, monkeypatch) == plain
    assert unpacked(gzipped(raw), tmp_path / "zlib", zlib, monkeypatch) == plain
    monkeypatch.setattr(tarstream, "plain_header", lambda block: None)  # every header read by tarfile
    assert unpacked(raw, tmp_path / "tarfile") == plain
    # and what was made is what the tarball holds
    got = {row[0]: row for row in plain}
    assert got["d/size1"][4] == hashlib.sha256(b"a later member replaces an earlier one").hexdigest()
    assert got["p/" + "u" * 120 + "/f"][1] == "-rw-r--r--"
    assert got["gnu/" + "g" * 150][4] == hashlib.sha256(b"a GNU long name").hexdigest()
    assert got["pax/" + "x" * 200][4] == hashlib.sha256(b"a PAX long name").hexdigest()
    assert got["d/hard"][7] == "2" and got["d/hard"][4] == got["d/big"][4]
    assert got["ro"][1] == "dr-xr-xr-x" and got["v7dir"][1] == "drwxr-xr-x"
    assert got["pax/time"][6] == str((T * 4 + 1) * 250_000_000)
    assert got["d/link"][4] == "../ro/inside" and got["d/fifo"][1] == "prw-r-----"
    assert "caf\udce9" in got
    if ROOT:
        assert got["d/owned"][2] == "1000:1001" and got["gnu/big-uid"][2] == "100000000:7"
        assert got["d/setuid"][1] == "-rwsr-xr-x"
        assert "user.plash" in got["pax/xattr"][5]


def test_without_zlib_ng_the_standard_zlib_inflates_the_same_tree(tmp_path: Path) -> None:
    """zlib-ng not installed (its import refused): zlib inflates, and the tree is the same."""
    raw = rich_tar()
    layer = tmp_path / "layer.tar.gz"
    layer.write_bytes(gzipped(raw))
    script = ("import sys; sys.modules['zlib_ng'] = None\n"  # as if not installed: its import fails
              "from plash.store import inflate; from plash.store.unpack import unpack\n"
              "print(inflate.zlib_library().__name__)\n"
              "unpack(open(sys.argv[1], 'rb'), sys.argv[2])\n")
    (tmp_path / "out").mkdir()
    r = subprocess.run([sys.executable, "-c", script, str(layer), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["zlib"]
    assert tree(str(tmp_path / "out")) == unpacked(raw, tmp_path / "plain")


def _cut(data: bytes, at: int) -> bytes:
    return data[:at]


def _primed(data: bytes) -> bytes:
    """Raw deflate that refers back to a dictionary the reader does not have."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=data)
    return c.compress(data) + c.flush()


def _with(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + bytes([value]) + data[at + 1:]


TAR = rich_tar()
GZ = gzip.compress(TAR, 6, mtime=0)
BROKEN_GZIP = {
    "bad CRC": (_with(GZ, len(GZ) - 8, GZ[-8] ^ 0xFF), f"corrupt gzip stream (CRC check failed {hex(zlib.crc32(TAR) ^ 0xFF)}"),
    "bad length": (_with(GZ, len(GZ) - 4, GZ[-4] ^ 1), "corrupt gzip stream (incorrect length of data produced)"),
    "bad deflate data": (GZ[:10] + b"\xff" * 40, "corrupt gzip stream (invalid block type)"),
    "distance too far back": (GZ[:10] + _primed(b"0123456789" * 10),
                              "corrupt gzip stream (invalid distance too far back)"),
    "cut in the data": (_cut(GZ, len(GZ) // 2), "truncated gzip stream (it ends before its end marker)"),
    "cut in the trailer": (_cut(GZ, len(GZ) - 3), "truncated gzip stream (it ends before its end marker)"),
    "cut in a second header": (GZ + b"\x1f\x8b\x08", "truncated gzip stream (it ends before its end marker)"),
    "garbage after the end": (GZ + b"not gzip at all", "corrupt gzip stream (what follows its end is not gzip)"),
    "garbage after padding": (GZ + bytes(100) + b"x", "corrupt gzip stream (what follows its end is not gzip)"),
    "unknown method": (_with(GZ, 2, 7), "corrupt gzip stream (unknown compression method)"),
}


@pytest.mark.parametrize("case", list(BROKEN_GZIP))
def test_each_inflater_says_the_same_about_broken_gzip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        case: str) -> None:
    data, words = BROKEN_GZIP[case]
    said = []
    for lib in (zlib_ng, zlib):
        monkeypatch.setattr(inflate, "zlib_library", lambda lib=lib: lib)
        dest = tmp_path / lib.__name__
        dest.mkdir()
        with pytest.raises(UnpackError) as e:
            unpack(io.BytesIO(data), str(dest))
        said.append(str(e.value))
    assert said[0] == said[1]
    assert said[0].startswith(f"not a valid tarball: {words}"), said[0]
    assert "\n" not in said[0]


# Headers as writers make them (any kind, any format), then changed at random: the fast reader gives
# tarfile's member, or leaves the header to tarfile.
_KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.AREGTYPE]
headers = st.builds(
    lambda name, kind, size, ids, fmt: member(name, kind, b"", 0o644, "target", ids, fmt)[:512][:124]
    + b"%011o\0" % size + member(name, kind, b"", 0o644, "target", ids, fmt)[:512][136:],
    st.text("ab/._- \u00e9", min_size=1, max_size=40),
    st.sampled_from(_KINDS), st.integers(0, 0o77777777777), st.tuples(st.integers(0, 2000), st.integers(0, 2000)),
    st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT]))


def _fix_checksum(block: bytes) -> bytes:
    chk = 256 + sum(block[:148]) + sum(block[156:])
    return block[:148] + b"%06o\0 " % chk + block[156:]


@settings(max_examples=400, deadline=None)
@given(headers, st.lists(st.tuples(st.integers(0, 511), st.integers(0, 255)), max_size=3), st.booleans())
def test_plain_headers_read_as_tarfile_reads_them(block: bytes, changes: list[tuple[int, int]], fix: bool) -> None:
    block = _fix_checksum(block)
    for at, value in changes:
        block = _with(block, at, value)
    if fix:
        block = _fix_checksum(block)
    fast = tarstream.plain_header(block)
    try:
        slow = tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        slow = None
    if fast is None:
        assert changes or block[156:157] not in tarstream._KINDS or slow is None
        return
    assert slow is not None
    fields = ("name", "type", "mode", "uid", "gid", "size", "mtime", "linkname")
    assert [getattr(fast, f) for f in fields] == [getattr(slow, f) for f in fields]
