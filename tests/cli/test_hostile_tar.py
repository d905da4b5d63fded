"""import-tar against hostile tarballs: decompression bombs, endless input, corrupt members, replaced trees.

Memory is checked as the peak RSS of plash and its unpacker child (ru_maxrss
of waited-for descendants), a resource bound, never a timing one.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
import rootfs
import zstandard
from conftest import PLASH, Plash
from procs import run_group

RSS_BOUND_KB = 200 << 10

# Runs a command and prints the peak RSS of it and its descendants, in KiB, as the last line.
PEAK_RSS = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)
sys.exit(code)
"""


def import_measured(plash: Plash, path: Path, timeout: float = 120) -> tuple[subprocess.CompletedProcess, int]:
    """import-tar path; the result (stdout without the RSS line) and the peak RSS in KiB."""
    r = plash.sh([sys.executable, "-c", PEAK_RSS, PLASH, "import-tar", str(path)], timeout=timeout)
    *lines, rss = r.stdout.splitlines()
    r.stdout = "".join(line + "\n" for line in lines)
    return r, int(rss)


def refused(plash: Plash, r: subprocess.CompletedProcess, before: list[tuple[str, str]], what: str) -> None:
    assert r.returncode == 1, r.stderr
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("plash error:"), r.stderr
    assert what in r.stderr, r.stderr
    assert plash.snapshot() == before


def tar_bytes(members: list[tuple[str, bytes, bytes | None]]) -> bytes:
    """A tarball from (name, type, data-or-None) triples; a symlink's data is its target."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, 0o755 if kind == tarfile.DIRTYPE else 0o644, 1_700_000_000
            if kind == tarfile.SYMTYPE:
                info.linkname = (data or b"").decode()
                data = None
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def zeros_tar_header(size: int) -> bytes:
    """The start of a tarball whose one member, `zeros`, holds size zero bytes (to follow)."""
    info = tarfile.TarInfo("zeros")
    info.size, info.mode = size, 0o644
    return info.tobuf(tarfile.GNU_FORMAT)


def xz_with_dictionary(plain: bytes, dict_code: int) -> bytes:
    """An xz stream of plain whose block header declares another LZMA2 dictionary size.

    dict_code is the LZMA2 property byte: size = (2 | code & 1) << (code // 2 + 11),
    40 meaning 4 GiB - 1. The data only needs the small dictionary it was made with;
    a decoder without a limit still reserves (and fills) the declared one.
    """
    import lzma

    xz = bytearray(lzma.compress(plain, lzma.FORMAT_XZ, filters=[{"id": lzma.FILTER_LZMA2, "preset": 0}]))
    start = 12  # after the stream header
    size = (xz[start] + 1) * 4
    flags, filter_id, props = xz[start + 1], xz[start + 2], xz[start + 3]
    assert (flags, filter_id, props) == (0, 0x21, 1), "one LZMA2 filter, no sizes in the block header"
    xz[start + 4] = dict_code
    xz[start + size - 4:start + size] = zlib.crc32(bytes(xz[start:start + size - 4])).to_bytes(4, "little")
    return bytes(xz)


def zstd_with_window(plain: bytes, window_log: int) -> bytes:
    """A zstd frame of plain whose header declares a window of 2**window_log bytes."""
    frame = bytearray(zstandard.ZstdCompressor(write_content_size=False).compress(plain))
    assert frame[4] & 0x20 == 0, "not a single-segment frame: the window descriptor follows"
    frame[5] = (window_log - 10) << 3
    return bytes(frame)


@pytest.fixture(scope="module")
def xz_bomb(shared_dir: Path) -> Path:
    """Under 100 kB: a tarball of 256 MiB of zeros in one xz block declaring a 1 GiB dictionary."""
    path = shared_dir / "bomb.tar.xz"
    path.write_bytes(xz_with_dictionary(zeros_tar_header(256 << 20) + bytes(256 << 20), 36))
    path.chmod(0o644)
    return path


def test_xz_dictionary_bomb(plash: Plash, xz_bomb: Path) -> None:
    assert xz_bomb.stat().st_size < 100_000
    plash.ok("init")
    before = plash.snapshot()
    r, rss = import_measured(plash, xz_bomb)
    refused(plash, r, before, "the xz stream needs more than 130 MiB of memory to unpack (dictionary too large)")
    assert rss < RSS_BOUND_KB, f"peak RSS {rss >> 10} MiB"


def test_xz_largest_dictionaries_accepted(root_plash: Plash, shared_dir: Path) -> None:
    """xz -9 (64 MiB) is what real images use; 128 MiB, filled, still fits in the memory bound."""
    path = shared_dir / "xz9.tar.xz"
    raw = io.BytesIO()
    rootfs.busybox_tar(raw, "")
    import lzma

    path.write_bytes(lzma.compress(raw.getvalue(), lzma.FORMAT_XZ, preset=9))
    image = root_plash.import_tar(path)
    assert root_plash.ok("run", image, "cat", "/etc/os-release").startswith("NAME=busybox")
    big = shared_dir / "dict128.tar.xz"
    big.write_bytes(xz_with_dictionary(zeros_tar_header(140 << 20) + bytes(140 << 20) + bytes(1024), 30))
    r, rss = import_measured(root_plash, big)
    assert r.returncode == 0, r.stderr
    assert rss < RSS_BOUND_KB, f"peak RSS {rss >> 10} MiB"
    root_plash.ok("rm", r.stdout.strip())
    big.unlink()


def test_zstd_window_limit(plash: Plash, shared_dir: Path) -> None:
    raw = tar_bytes([("etc/", tarfile.DIRTYPE, None), ("etc/hello", tarfile.REGTYPE, b"hello\n")])
    ok = shared_dir / f"window27-{plash.user}.tar.zst"
    ok.write_bytes(zstd_with_window(raw, 27))  # zstd --long=27, the most zstd -d takes without --memory
    ok.chmod(0o644)
    layer = Path(plash.ok("nodepath", plash.import_tar(ok))) / "root"
    assert (layer / "etc" / "hello").read_bytes() == b"hello\n"
    bomb = shared_dir / f"window31-{plash.user}.tar.zst"
    bomb.write_bytes(zstd_with_window(raw, 31))
    bomb.chmod(0o644)
    before = plash.snapshot()
    r, rss = import_measured(plash, bomb)
    refused(plash, r, before, "the zstd stream needs a window of more than 128 MiB to unpack")
    assert rss < RSS_BOUND_KB


def test_dev_zero_ends(plash: Plash) -> None:
    plash.ok("init")
    before = plash.snapshot()
    r = plash("import-tar", "/dev/zero", timeout=60)
    refused(plash, r, before, "the tarball is empty")




def test_endless_input_after_the_archive(plash: Plash, busybox_tgz: Path, shared_dir: Path) -> None:
    """Zeros forever after a tarball (plain or compressed) on stdin: the import ends, and works."""
    plain = shared_dir / f"endless-{plash.user}.tar"
    plain.write_bytes(zlib.decompress(busybox_tgz.read_bytes(), wbits=31))
    plain.chmod(0o644)
    for path in (plain, busybox_tgz):
        r = run_group(plash.command(["sh", "-c", 'cat "$1" /dev/zero | "$2" import-tar -', "sh", str(path), PLASH]),
                      cwd=plash.work)
        assert r.returncode == 0, r.stderr
        assert plash.ok("run", r.stdout.strip(), "cat", "/etc/os-release").startswith("NAME=busybox")


def test_stdin_that_never_closes(plash: Plash, busybox_tgz: Path) -> None:
    r = run_group(plash.command([PLASH, "import-tar", "-"]), stdin=busybox_tgz.read_bytes(), hold_stdin=True,
                  cwd=plash.work)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().isdigit()


# Each case: the tarball's bytes, made from A_B_C (below), and the one-line message saying what is wrong with it.
A_B_C = [("a", tarfile.REGTYPE, b"a" * 700), ("b/", tarfile.DIRTYPE, None), ("b/c", tarfile.REGTYPE, b"c")]
SECOND = 1536  # the header of b/, after a's header and its 700 bytes padded to 1024


def flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1:]


def gzip_with_bad_crc(raw: bytes) -> bytes:
    gz = bytearray(gzip.compress(raw, mtime=0))
    gz[-8] ^= 0xFF  # the CRC32 of the trailer: the data itself decompresses fine
    return bytes(gz)


def zstd_cut_after_member_a(raw: bytes) -> bytes:
    """A zstd frame holding a's header and data in a block of its own, cut after that block.

    Its plain bytes end exactly where b's header would start, which tar
    alone takes as a complete archive: only the zstd frame tells.
    """
    cobj = zstandard.ZstdCompressor().compressobj()
    return cobj.compress(raw[:SECOND]) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)


BROKEN = {
    "bad checksum": (lambda: flip(tar_bytes(A_B_C), SECOND + 10),
                     "not a valid tarball: bad header at byte 1536 (bad checksum), after member a"),
    "garbage header": (lambda: tar_bytes(A_B_C)[:SECOND] + b"G" * 512 + bytes(1024),
                       "not a valid tarball: bad header at byte 1536 (invalid header), after member a"),
    "truncated member": (lambda: tar_bytes(A_B_C)[:512 + 300],
                         "not a valid tarball: member a is truncated (the archive ends after 300 of its 700 bytes)"),
    "missing padding": (lambda: tar_bytes(A_B_C)[:512 + 700],
                        "not a valid tarball: the archive ends in the padding after member a"),
    "less than a header": (lambda: b"this is not a tarball\n",
                           "not a valid tarball: 22 bytes, less than one header"),
    "bad header after a long name": (lambda: tar_bytes([("x" * 200, tarfile.REGTYPE, b"x")])[:1024] + b"G" * 512,
                                     "not a valid tarball: bad header after the extended header at byte 0"),
    "unsupported member type": (lambda: tar_bytes([("a", b"M", b"x" * 10), *A_B_C[1:]]),
                                "unsupported member type 'M' in tarball: a"),
    "gzip crc": (lambda: gzip_with_bad_crc(tar_bytes(A_B_C)),
                 "not a valid tarball: corrupt gzip stream (CRC check failed"),
    "corrupt deflate data": (lambda: gzip.compress(tar_bytes(A_B_C), mtime=0)[:10] + b"\xff" * 40,
                             "not a valid tarball: corrupt gzip stream (invalid block type)"),
    "truncated gzip": (lambda: gzip.compress(tar_bytes(A_B_C), mtime=0)[:-20],
                       "not a valid tarball: truncated gzip stream (it ends before its end marker)"),
    "truncated zstd": (lambda: zstd_cut_after_member_a(tar_bytes(A_B_C)),
                       "not a valid tarball: truncated zstd stream (it ends inside a frame), after member a"),
    "a name too long for the file system": (lambda: tar_bytes([("n" * 300, tarfile.REGTYPE, b"x")]),
                                            f"cannot unpack member {'n' * 300}: File name too long"),
    "a name on two lines": (lambda: tar_bytes([("a\nb", tarfile.LNKTYPE, None)]),
                            "hard link to the root in tarball: a\\nb"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_tarballs_say_what_is_wrong(plash: Plash, shared_dir: Path, case: str) -> None:
    """One line that names the problem, and where it is; the store stays as it was."""
    make, message = BROKEN[case]
    path = shared_dir / f"broken-{case.replace(' ', '-')}-{plash.user}.tar"
    path.write_bytes(make())
    path.chmod(0o644)
    plash.ok("init")
    before = plash.snapshot()
    refused(plash, plash("import-tar", str(path)), before, message)


@pytest.mark.parametrize(("flag", "kind"), [("-z", "gzip"), ("-J", "xz"), ("-j", "bzip2"), ("--zstd", "zstd")])
def test_a_tarball_cut_short_by_the_tar_tool(plash: Plash, shared_dir: Path, flag: str, kind: str) -> None:
    """A compressed tarball made by tar, cut in half: the compressed stream is said to be truncated."""
    tree = shared_dir / f"tree-{kind}-{plash.user}"
    tree.mkdir()
    for i in range(20):
        (tree / f"f{i}").write_bytes(os.urandom(10_000))  # incompressible: half the file is half the archive
    whole = shared_dir / f"whole-{kind}-{plash.user}.tar"
    subprocess.run(["tar", "-c", flag, "-f", str(whole), "-C", str(tree), "."], check=True, timeout=60)
    path = shared_dir / f"cut-{kind}-{plash.user}.tar"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    path.chmod(0o644)
    plash.ok("init")
    before = plash.snapshot()
    refused(plash, plash("import-tar", str(path)), before, f"not a valid tarball: truncated {kind} stream")


@pytest.mark.parametrize("tail", ["none", "garbage", "partial block"])
def test_archive_ends_gnu_tar_accepts(plash: Plash, shared_dir: Path, tail: str) -> None:
    """No end-of-archive blocks, or anything after them: GNU tar takes these (exit 0), and so do we."""
    raw = tar_bytes([("a", tarfile.REGTYPE, b"a" * 700), ("b/", tarfile.DIRTYPE, None), ("b/c", tarfile.REGTYPE, b"c")])
    end = 512 + 1024 + 512 + 1024  # after b/c and its data
    raw = raw[:end] + {"none": b"", "garbage": bytes(1024) + os.urandom(3000), "partial block": b"x" * 100}[tail]
    path = shared_dir / f"ends-{tail.replace(' ', '-')}-{plash.user}.tar"
    path.write_bytes(raw)
    path.chmod(0o644)
    layer = Path(plash.ok("nodepath", plash.import_tar(path))) / "root"
    assert (layer / "b" / "c").read_bytes() == b"c"


def test_later_members_replace_nested_directories(plash: Plash, shared_dir: Path) -> None:
    raw = tar_bytes([("a/", tarfile.DIRTYPE, None), ("a/b/", tarfile.DIRTYPE, None), ("a/b/c/", tarfile.DIRTYPE, None),
                     ("a/b/c/f", tarfile.REGTYPE, b"f"), ("a", tarfile.REGTYPE, b"now a file"),
                     ("d/", tarfile.DIRTYPE, None), ("d/e/", tarfile.DIRTYPE, None), ("d/e/x", tarfile.REGTYPE, b"x"),
                     ("d/e", tarfile.SYMTYPE, b"elsewhere"), ("d/y", tarfile.REGTYPE, b"y"),
                     ("g/", tarfile.DIRTYPE, None), ("g/h/", tarfile.DIRTYPE, None), ("g/h/i", tarfile.REGTYPE, b"i"),
                     ("g", tarfile.SYMTYPE, b"d"), ("z", tarfile.REGTYPE, b"z")])
    path = shared_dir / f"replace-{plash.user}.tar"
    path.write_bytes(raw)
    path.chmod(0o644)
    layer = Path(plash.ok("nodepath", plash.import_tar(path))) / "root"
    assert (layer / "a").read_bytes() == b"now a file"
    assert os.readlink(layer / "d" / "e") == "elsewhere"
    assert (layer / "d" / "y").read_bytes() == b"y"
    assert os.readlink(layer / "g") == "d"
    assert (layer / "z").read_bytes() == b"z"
    assert sorted(os.listdir(layer)) == ["a", "d", "g", "z"]


def test_a_deep_tarball(root_plash: Plash, shared_dir: Path) -> None:
    """1200 levels: the unpacker neither recurses nor runs out of fds."""
    depth = 1200
    members: list[tuple[str, bytes, bytes | None]] = [("d/" * i, tarfile.DIRTYPE, None) for i in range(1, depth + 1)]
    members.append(("d/" * depth + "f", tarfile.REGTYPE, b"deep"))
    path = shared_dir / "deep.tar"
    path.write_bytes(tar_bytes(members))
    image = root_plash.import_tar(path)
    layer = Path(root_plash.ok("nodepath", image)) / "root"
    r = subprocess.run(["find", str(layer), "-name", "f"], capture_output=True, text=True, timeout=60)
    assert r.stdout.count("/d") == depth, r.stderr
    subprocess.run(["rm", "-rf", str(layer / "d")], check=True, timeout=60)  # the store's rmtree recurses
