"""copy_layer: an upper dir copied into the store as it is, whiteout devices turned into whiteout files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from plash.store.layercopy import copy_layer
from plash.store.whiteouts import OPAQUE_XATTR, WHITEOUT_XATTR, is_whiteout


def whiteout_device(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))


def test_everything_is_kept_and_whiteouts_become_files(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "opaque").mkdir()
    os.setxattr(src / "opaque", OPAQUE_XATTR, b"y")
    whiteout_device(src / "opaque" / "gone")
    (src / "plain").mkdir()
    whiteout_device(src / "plain" / "gone")
    (src / "plain" / "kept").write_text("kept\n")
    (src / "a").write_text("linked\n")
    (src / "deep" / "er").mkdir(parents=True)
    os.link(src / "a", src / "deep" / "er" / "b")
    os.link(src / "a", src / "z")
    (src / "tool").write_bytes(b"\x7fELF")
    os.setxattr(src / "tool", "user.note", b"hello")
    os.utime(src / "tool", ns=(1_000_000_000, 1_500_000_000_123))
    os.symlink("a", src / "link")
    os.mkfifo(src / "pipe", 0o640)
    owned = os.getuid() == 0
    if owned:
        os.chown(src / "tool", 7, 7)
    os.chmod(src / "tool", 0o4755)
    os.chmod(src / "deep", 0o711)
    os.utime(src / "deep", ns=(1_000_000_000, 1_200_000_000_000))

    copy_layer(str(src), str(dst))

    assert sorted(os.listdir(dst)) == ["a", "deep", "link", "opaque", "pipe", "plain", "tool", "z"]
    for d in ("opaque", "plain"):
        gone = dst / d / "gone"
        assert gone.is_file() and gone.stat().st_size == 0
        assert os.getxattr(gone, WHITEOUT_XATTR) == b""
        fd = os.open(dst / d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert is_whiteout(fd, "gone")
        finally:
            os.close(fd)
    assert os.getxattr(dst / "opaque", OPAQUE_XATTR) == b"y"  # still opaque: it hides all below anyway
    assert os.getxattr(dst / "plain", OPAQUE_XATTR) == b"x"  # marked as holding whiteout files
    assert (dst / "plain" / "kept").read_text() == "kept\n"
    ino = (dst / "a").stat().st_ino
    assert (dst / "deep" / "er" / "b").stat().st_ino == ino == (dst / "z").stat().st_ino
    assert (dst / "a").stat().st_nlink == 3
    tool = (dst / "tool").stat()
    assert stat.S_IMODE(tool.st_mode) == 0o4755  # the setuid bit survives the chown
    assert tool.st_mtime_ns == 1_500_000_000_123
    assert os.getxattr(dst / "tool", "user.note") == b"hello"
    if owned:
        assert (tool.st_uid, tool.st_gid) == (7, 7)
    assert os.readlink(dst / "link") == "a"
    assert stat.S_ISFIFO((dst / "pipe").lstat().st_mode) and stat.S_IMODE((dst / "pipe").lstat().st_mode) == 0o640
    deep = (dst / "deep").stat()
    assert stat.S_IMODE(deep.st_mode) == 0o711 and deep.st_mtime_ns == 1_200_000_000_000  # set after its contents


def test_a_copy_into_a_tree_that_is_not_empty_fails_loudly(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "f").write_text("new")
    (dst / "f").write_text("old")
    with pytest.raises(FileExistsError):
        copy_layer(str(src), str(dst))
    assert (dst / "f").read_text() == "old"
