"""Copy a finished upper dir into the store, for a store on overlayfs.

The kernel refuses an overlay upper dir on overlayfs, so where the store is
itself on overlayfs (the root of a container) a build step's changes land on
a tmpfs first (see plash.launch.mounts) and are copied in here, inside the
namespace, so owners are kept as the container saw them. Everything is
kept as it is (modes, owners, times, xattrs, hard links) except whiteout
devices, which overlayfs cannot hold and become whiteout files
(plash.store.whiteouts).
"""

from __future__ import annotations

import errno
import os
import stat

from plash.store.whiteouts import make_file_whiteout

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 30


def copy_layer(src: str, dst: str) -> None:
    """Copy the tree at src into the existing, empty directory dst (its own metadata too)."""
    sfd = os.open(src, _DIR)
    dfd = os.open(dst, _DIR)
    try:
        _tree(sfd, dfd, "", _Links(dfd))
        _meta(sfd, dfd, os.fstat(sfd))
    finally:
        os.close(sfd)
        os.close(dfd)


class _Links:
    """First copies of hard-linked files, by source inode: their paths below the destination's root."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.first: dict[tuple[int, int], str] = {}


def _tree(sfd: int, dfd: int, rel: str, links: _Links) -> None:
    for entry in os.scandir(sfd):
        name = entry.name
        st = entry.stat(follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(name, 0o700, dir_fd=dfd)
            child_s = os.open(name, _DIR, dir_fd=sfd)
            child_d = os.open(name, _DIR, dir_fd=dfd)
            try:
                _copy_xattrs(child_s, child_d)  # the opaque mark first: whiteouts below leave a "y" alone
                _tree(child_s, child_d, f"{rel}{name}/", links)
                _meta(child_s, child_d, st, xattrs=False)
            finally:
                os.close(child_s)
                os.close(child_d)
        elif stat.S_ISCHR(mode) and st.st_rdev == 0:
            make_file_whiteout(dfd, name, (st.st_uid, st.st_gid))
        elif stat.S_ISREG(mode):
            first = links.first.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
            if first is not None:
                # the path is of directories made here, below the destination's root: no symlink on the way
                os.link(first, name, src_dir_fd=links.root, dst_dir_fd=dfd, follow_symlinks=False)
                continue
            _copy_file(sfd, dfd, name, st)
            if st.st_nlink > 1:
                links.first[(st.st_dev, st.st_ino)] = rel + name
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=sfd), name, dir_fd=dfd)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd, follow_symlinks=False)
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(name, mode, st.st_rdev, dir_fd=dfd)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
            os.chmod(name, stat.S_IMODE(mode), dir_fd=dfd)  # not a symlink: made just now
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd, follow_symlinks=False)
        # sockets are left out: nothing can use one after its server is gone


def _copy_file(sfd: int, dfd: int, name: str, st: os.stat_result) -> None:
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
    try:
        dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            left = st.st_size
            while left > 0:
                try:
                    n = os.copy_file_range(src, dst, min(left, _CHUNK))
                except OSError as e:
                    if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    n = os.sendfile(dst, src, None, min(left, _CHUNK))
                if n == 0:
                    break  # shrank meanwhile: what is there is copied
                left -= n
            _copy_xattrs(src, dst)
            _meta(src, dst, st, xattrs=False)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_xattrs(sfd: int, dfd: int) -> None:
    try:
        names = os.listxattr(sfd)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        try:
            os.setxattr(dfd, name, os.getxattr(sfd, name))
        except OSError as e:
            if e.errno != errno.ENODATA:
                raise


def _meta(sfd: int, dfd: int, st: os.stat_result, xattrs: bool = True) -> None:
    """Owner, mode (after the owner: chown clears setuid bits) and times of sfd onto dfd."""
    if xattrs:
        _copy_xattrs(sfd, dfd)
    os.fchown(dfd, st.st_uid, st.st_gid)
    os.fchmod(dfd, stat.S_IMODE(st.st_mode))
    os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
