"""import-tar against hostile tarballs: decompression bombs, endless input, corrupt members, replaced trees.

Memory is checked as the peak RSS of plash and its unpacker child (ru_maxrss
of waited-for descendants), a resource bound, never a timing one.
"""

from __future__ import annotations

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
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("plash error:"), r.stderr
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


@pytest.mark.parametrize("case", ["bad checksum", "garbage header", "truncated member"])
def test_corrupt_members_publish_nothing(plash: Plash, shared_dir: Path, case: str) -> None:
    raw = tar_bytes([("a", tarfile.REGTYPE, b"a" * 700), ("b/", tarfile.DIRTYPE, None), ("b/c", tarfile.REGTYPE, b"c")])
    second = 1536  # the header of b/
    if case == "bad checksum":
        raw = raw[:second + 10] + bytes([raw[second + 10] ^ 1]) + raw[second + 11:]
    elif case == "garbage header":
        end = second + 512 + 1024
        raw = raw[:end] + b"G" * 512 + bytes(1024)
    else:
        raw = raw[:512 + 300]
    path = shared_dir / f"corrupt-{case.replace(' ', '-')}-{plash.user}.tar"
    path.write_bytes(raw)
    path.chmod(0o644)
    plash.ok("init")
    before = plash.snapshot()
    refused(plash, plash("import-tar", str(path)), before, "not a valid tarball")


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
    assert os.readlink(layer / "d" / "e") == "elsewhere" and (layer / "d" / "y").read_bytes() == b"y"
    assert os.readlink(layer / "g") == "d" and (layer / "z").read_bytes() == b"z"
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
