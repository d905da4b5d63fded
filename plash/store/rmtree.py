"""Removing trees, however deep and however their modes are set."""

from __future__ import annotations

import contextlib
import os
import stat

from plash.errors import UnpackError

TYPE_CHECKING = False  # typing is not imported at run time: the launcher runs this
if TYPE_CHECKING:
    from collections.abc import Callable

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def rmtree(path: str) -> None:
    """Remove a tree, making read-only directories writable on the way.

    Iterative, one open directory at a time (it climbs back through ".."):
    no recursion limit and no descriptor limit, however deep the tree is (a
    hostile tarball may nest thousands of levels), so the store always stays
    cleanable.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    cur = _open_fixing(path, flags, None)
    stack: list[tuple[str, list[str] | None]] = [(os.path.basename(os.path.normpath(path)), None)]
    try:
        while stack:
            name, pending = stack[-1]
            if pending is None:
                pending = []
                for entry in _listdir_fixing(cur):
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.name)
                        else:
                            _fixing(cur, os.unlink, entry.name)
                    except FileNotFoundError:
                        pass
                stack[-1] = (name, pending)
            if pending:
                sub = pending.pop()
                try:
                    nxt = _open_fixing(sub, flags, cur)
                except FileNotFoundError:
                    continue
                os.close(cur)
                cur = nxt
                stack.append((sub, None))
                continue
            up = os.open("..", flags & ~os.O_NOFOLLOW, dir_fd=cur)
            os.close(cur)
            cur = up
            stack.pop()
            with contextlib.suppress(FileNotFoundError):
                _fixing(cur, os.rmdir, name)
    finally:
        os.close(cur)


def _fixing(dir_fd: int, op: Callable[..., None], name: str) -> None:
    """op(name, dir_fd=dir_fd) (an unlink or rmdir); on a permission error make the dir writable and retry."""
    try:
        op(name, dir_fd=dir_fd)
    except PermissionError:
        os.fchmod(dir_fd, stat.S_IRWXU)
        op(name, dir_fd=dir_fd)


def _open_fixing(name: str, flags: int, dir_fd: int | None) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except PermissionError:
        if dir_fd is not None:
            os.fchmod(dir_fd, stat.S_IRWXU)  # no search permission on the parent, perhaps
        os.chmod(name, stat.S_IRWXU, dir_fd=dir_fd)
        return os.open(name, flags, dir_fd=dir_fd)


def _listdir_fixing(fd: int) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(fd))
    except PermissionError:
        os.fchmod(fd, stat.S_IRWXU)
        return list(os.scandir(fd))


def rmtree_at(pfd: int, name: str) -> None:
    """Remove the tree name in the directory at pfd, without recursion and with two fds open at most (for the unpacker).

    It climbs back up through "..", checking that it arrives where it came from.
    """
    fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
    # per level: the directory's name, (dev, ino) of its parent, its subdirectories left to remove
    stack: list[tuple[str, tuple[int, int], list[str]]] = []
    here = name
    try:
        while True:
            os.fchmod(fd, 0o700)
            subdirs = []
            for entry in os.listdir(fd):
                if stat.S_ISDIR(os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode):
                    subdirs.append(entry)
                else:
                    os.unlink(entry, dir_fd=fd)
            st = os.fstat(fd)
            stack.append((here, (st.st_dev, st.st_ino), subdirs))
            while stack and not stack[-1][2]:
                here, _, _ = stack.pop()
                if not stack:
                    os.close(fd)
                    fd = -1
                    os.rmdir(here, dir_fd=pfd)
                    return
                up = os.open("..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = up
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != stack[-1][1]:
                    raise UnpackError("a directory being replaced was moved while unpacking")
                os.rmdir(here, dir_fd=fd)
            here = stack[-1][2].pop()
            down = os.open(here, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = down
    finally:
        if fd >= 0:
            os.close(fd)
