"""The unpacker on its own: many directories, read-only trees, replacing entries."""

from __future__ import annotations

import io
import os
import resource
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from procs import run_group

from plash.errors import UnpackError
from plash.store.unpack import unpack


def tar_of(members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m in members:
            body = (data or {}).get(m.name)
            if body is not None:
                m.size = len(body)
            tar.addfile(m, io.BytesIO(body) if body is not None else None)
    return buf.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.mode, i.linkname = kind, mode, link
    return i


def test_many_directories_with_few_file_descriptors(tmp_path: Path) -> None:
    members = []
    for a in range(40):
        members.append(info(f"d{a}/", tarfile.DIRTYPE, 0o755))
        for b in range(30):
            members.append(info(f"d{a}/e{b}/", tarfile.DIRTYPE, 0o755))
            members.append(info(f"d{a}/e{b}/f"))
    raw = tar_of(members)
    src = tmp_path / "many.tar"
    src.write_bytes(raw)
    dest = tmp_path / "out"
    dest.mkdir()
    ours = resource.getrlimit(resource.RLIMIT_NOFILE)
    code = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
from plash.store.unpack import unpack
count = unpack(open({str(src)!r}, 'rb'), {str(dest)!r})
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], count)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # 1240 directories unpacked with at most 200 descriptors open
    assert r.stdout.split() == ["200", str(len(members))]
    assert (dest / "d39" / "e29" / "f").exists()
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == ours  # the limit was only lowered in the child


def test_replacing_entries(tmp_path: Path) -> None:
    members = [info("a/", tarfile.DIRTYPE, 0o755), info("a/x"), info("a", tarfile.SYMTYPE, 0o777, "target"),
               info("f"), info("f/", tarfile.DIRTYPE, 0o755)]
    raw = tar_of(members, {"a/x": b"x", "f": b"f"})
    dest = tmp_path / "out"
    dest.mkdir()
    unpack(io.BytesIO(raw), str(dest))
    assert (dest / "a").is_symlink()
    assert (dest / "f").is_dir()


def unpack_dir(tmp_path: Path, raw: bytes, oci: bool = False, name: str = "out") -> Path:
    dest = tmp_path / name
    dest.mkdir()
    unpack(io.BytesIO(raw), str(dest), oci=oci)
    return dest


@pytest.mark.parametrize("replacement", ["file", "symlink", "fifo", "hardlink"])
def test_a_later_member_replaces_nested_directories(tmp_path: Path, replacement: str) -> None:
    kind = {"file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE, "fifo": tarfile.FIFOTYPE,
            "hardlink": tarfile.LNKTYPE}[replacement]
    members = [info("keep/", tarfile.DIRTYPE, 0o755), info("keep/k"),
               info("a/", tarfile.DIRTYPE, 0o755), info("a/b/", tarfile.DIRTYPE, 0o555), info("a/b/c/", tarfile.DIRTYPE),
               info("a/b/c/f"), info("a/b/g"), info("a/h"),
               info("a", kind, 0o644, "keep/k" if kind == tarfile.LNKTYPE else "target"),
               # after the replacement: members beside it, and a new tree of that name's sibling
               info("keep/after"), info("n/", tarfile.DIRTYPE, 0o755), info("n/m/", tarfile.DIRTYPE, 0o755),
               info("n/m/x"), info("n/m", tarfile.REGTYPE), info("n/y")]
    raw = tar_of(members, {"keep/k": b"k", "a": b"new" if kind == tarfile.REGTYPE else None,  # type: ignore[dict-item]
                           "keep/after": b"after", "n/m": b"m", "n/y": b"y"})
    dest = unpack_dir(tmp_path, raw)
    a = dest / "a"
    assert not a.is_dir() or a.is_symlink()
    if replacement == "file":
        assert a.read_bytes() == b"new"
    elif replacement == "symlink":
        assert os.readlink(a) == "target"
    elif replacement == "hardlink":
        assert os.stat(a).st_ino == os.stat(dest / "keep" / "k").st_ino
    else:
        assert stat.S_ISFIFO(os.lstat(a).st_mode)
    assert (dest / "keep" / "after").read_bytes() == b"after"
    assert (dest / "n" / "m").read_bytes() == b"m"
    assert (dest / "n" / "y").read_bytes() == b"y"
    assert sorted(os.listdir(dest)) == ["a", "keep", "n"]
    assert sorted(os.listdir(dest / "keep")) == ["after", "k"]


def test_a_file_replaces_a_directory_below_others(tmp_path: Path) -> None:
    members = [info("a/", tarfile.DIRTYPE, 0o755), info("a/b/", tarfile.DIRTYPE, 0o755), info("a/b/x/", tarfile.DIRTYPE),
               info("a/b/x/f"), info("a/b", tarfile.REGTYPE), info("a/c"), info("a/b2/", tarfile.DIRTYPE, 0o700),
               info("a/b2/z")]
    dest = unpack_dir(tmp_path, tar_of(members, {"a/b": b"b", "a/c": b"c", "a/b2/z": b"z"}))
    assert (dest / "a" / "b").read_bytes() == b"b"
    assert (dest / "a" / "c").read_bytes() == b"c"
    assert (dest / "a" / "b2" / "z").read_bytes() == b"z"
    assert sorted(os.listdir(dest)) == ["a"]
    assert sorted(os.listdir(dest / "a")) == ["b", "b2", "c"]


def test_a_hard_link_may_not_replace_the_directory_of_its_target(tmp_path: Path) -> None:
    members = [info("a/", tarfile.DIRTYPE, 0o755), info("a/f"), info("a", tarfile.LNKTYPE, link="a/f")]
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnpackError, match="hard link replaces the directory"):
        unpack(io.BytesIO(tar_of(members, {"a/f": b"f"})), str(dest))


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, "user.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def test_oci_whiteouts_in_every_order_the_spec_allows(tmp_path: Path) -> None:
    """Whiteouts hide lower layers only, before or after what this layer adds (OCI image spec, Whiteouts)."""
    members = [
        info("w/", tarfile.DIRTYPE, 0o755),
        info("w/.wh.f"), info("w/f"),  # the whited-out file comes back in this layer
        info("w/.wh.d"), info("w/d/", tarfile.DIRTYPE, 0o755), info("w/d/x"),  # ... a directory: opaque
        info("w/.wh.i"), info("w/i/y"),  # ... a directory made for a member below it: opaque
        info("w/.wh.s"), info("w/s", tarfile.SYMTYPE, link="f"),
        info("w/g"), info("w/.wh.g"),  # a whiteout after this layer's file leaves it
        info("w/e/", tarfile.DIRTYPE, 0o755), info("w/e/z"), info("w/.wh.e"),  # ... and a directory, made opaque
        info("w/.wh.gone"), info("w/.wh.gone"),  # nothing of this layer: a whiteout (twice is fine)
        info("o/", tarfile.DIRTYPE, 0o755), info("o/before"), info("o/.wh..wh..opq"), info("o/after"),
        info("p/", tarfile.DIRTYPE, 0o755), info("p/.wh..wh..opq"), info("p/q"),
    ]
    dest = unpack_dir(tmp_path, tar_of(members, {"w/f": b"f", "w/d/x": b"x", "w/i/y": b"y", "w/g": b"g"}), oci=True)
    w = dest / "w"
    assert (w / "f").read_bytes() == b"f"
    assert not _opaque(w / "f")
    assert (w / "d").is_dir()
    assert _opaque(w / "d")
    assert (w / "d" / "x").read_bytes() == b"x"
    assert (w / "i").is_dir()
    assert _opaque(w / "i")
    assert (w / "i" / "y").read_bytes() == b"y"
    assert os.readlink(w / "s") == "f"
    assert (w / "g").read_bytes() == b"g"
    assert (w / "e").is_dir()
    assert _opaque(w / "e")
    assert (w / "e" / "z").exists()
    assert _whiteout(w / "gone")
    assert sorted(os.listdir(w)) == ["d", "e", "f", "g", "gone", "i", "s"]
    assert _opaque(dest / "o")
    assert sorted(os.listdir(dest / "o")) == ["after", "before"]
    assert _opaque(dest / "p")
    assert sorted(os.listdir(dest / "p")) == ["q"]
    assert not _opaque(w)




def _child(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run_group([sys.executable, "-c", code], timeout)


def test_a_deep_tree_without_recursion_or_many_fds(tmp_path: Path) -> None:
    depth = 1200
    members = [info("d/" * i, tarfile.DIRTYPE, 0o755) for i in range(1, depth + 1)]
    members += [info("d/" * depth + "f"), info("d/" * 600 + "x/", tarfile.DIRTYPE, 0o755)]
    members += [info("d/" * 3, tarfile.REGTYPE)]  # replaces a tree about 1200 levels deep
    members += [info("d/" * 2 + "e/" * depth, tarfile.DIRTYPE, 0o500), info("d/" * 2 + "e/" * depth + "g")]
    src = tmp_path / "deep.tar"
    src.write_bytes(tar_of(members, {"d/" * 2 + "e/" * depth + "g": b"g"}))
    dest = tmp_path / "out"
    dest.mkdir()
    try:
        _unpack_deep(src, dest, depth, len(members))
    finally:
        subprocess.run(["rm", "-rf", str(dest)], check=True)  # pytest's cleanup (shutil.rmtree) recurses


def _unpack_deep(src: Path, dest: Path, depth: int, count: int) -> None:
    code = f"""
import resource, sys
sys.setrecursionlimit(200)
resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
from plash.store.unpack import unpack
print(unpack(open({str(src)!r}, 'rb'), {str(dest)!r}))
"""
    r = _child(code)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == count
    fd = os.open(dest / "d" / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth - 1):
            nfd = os.open("e", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        assert os.listdir(fd) == ["e"]
        nfd = os.open("e", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
        assert os.listdir(fd) == ["g"]
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o500
    finally:
        os.close(fd)
    assert (dest / "d" / "d" / "d").is_file()


def _tar_with_end(members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> tuple[bytes, int]:
    """A tarball, and the offset of its end-of-archive blocks."""
    raw = tar_of(members, data)
    end = 0
    while end < len(raw):
        block = raw[end:end + 512]
        if block == bytes(512):
            return raw, end
        size = int(block[124:136].rstrip(b"\0 ") or b"0", 8)
        end += 512 + (size + 511) // 512 * 512
    raise AssertionError("no end of archive")


GOOD = [info("a"), info("b/", tarfile.DIRTYPE, 0o755), info("b/c")]
GOOD_DATA = {"a": b"a" * 700, "b/c": b"c"}


@pytest.mark.parametrize("case", ["no end blocks", "one zero block", "trailing garbage", "garbage after one zero block",
                                  "a partial block at the end"])
def test_archive_ends_gnu_tar_accepts(tmp_path: Path, case: str) -> None:
    raw, end = _tar_with_end(GOOD, GOOD_DATA)
    tail = {"no end blocks": b"", "one zero block": bytes(512), "trailing garbage": bytes(1024) + b"junk" * 5000,
            "garbage after one zero block": bytes(512) + b"x" * 512, "a partial block at the end": b"y" * 100}[case]
    dest = tmp_path / "out"
    dest.mkdir()
    assert unpack(io.BytesIO(raw[:end] + tail), str(dest)) == 3
    assert (dest / "b" / "c").read_bytes() == b"c"


UNPACK_STDIN = """
import os, sys
from plash.store.unpack import unpack
print(unpack(sys.stdin.buffer, sys.argv[1]), flush=True)
os._exit(0)  # as plash's launcher: the reader thread may still wait on stdin
"""


def test_input_that_never_ends_after_the_archive(tmp_path: Path) -> None:
    """Zeros (or anything) forever after the end of the archive: the unpacker stops reading."""
    src = tmp_path / "good.tar"
    src.write_bytes(tar_of(GOOD, GOOD_DATA))
    (tmp_path / "out").mkdir()
    r = run_group(["sh", "-c", 'cat "$1" /dev/zero | "$2" -c "$3" "$4"', "sh", str(src), sys.executable,
                   UNPACK_STDIN, str(tmp_path / "out")])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "3\n", r.stderr
    assert (tmp_path / "out" / "b" / "c").read_bytes() == b"c"


@pytest.mark.parametrize("compress", [[], ["gzip"], ["xz"], ["zstd"], ["bzip2"]])
def test_a_pipe_that_never_closes(tmp_path: Path, compress: list[str]) -> None:
    """Not even the end of a gzip stream may hold back the end of the archive."""
    (tmp_path / "out").mkdir()
    raw = tar_of(GOOD, GOOD_DATA)
    if compress:
        raw = subprocess.run(compress, input=raw, capture_output=True, check=True, timeout=60).stdout
    r = run_group([sys.executable, "-c", UNPACK_STDIN, str(tmp_path / "out")], stdin=raw, hold_stdin=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "3\n", r.stderr


@pytest.mark.parametrize("case", ["bad checksum", "garbage header", "truncated data", "missing padding"])
def test_corrupt_members_are_refused(tmp_path: Path, case: str) -> None:
    raw, end = _tar_with_end(GOOD, GOOD_DATA)
    second = 512 + 1024  # the header of b/
    if case == "bad checksum":
        raw = raw[:second + 10] + bytes([raw[second + 10] ^ 1]) + raw[second + 11:]
    elif case == "garbage header":
        raw = raw[:end] + b"G" * 512 + bytes(1024)
    elif case == "truncated data":
        raw = raw[:512 + 300]
    else:
        raw = raw[:512 + 700]
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnpackError, match="not a valid tarball"):
        unpack(io.BytesIO(raw), str(dest))
