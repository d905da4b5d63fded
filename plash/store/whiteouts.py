"""OCI whiteouts in their overlayfs form: a whiteout hides a lower entry, an xattr a lower dir's contents.

OCI layers spell them as files (OCI image spec, "Whiteouts"): `.wh.NAME`
hides NAME of the lower layers, `.wh..wh..opq` in a directory hides all
that the lower layers hold in it.

overlayfs knows two forms of whiteout (Documentation/filesystems/overlayfs.rst,
"whiteouts and opaque directories"): a 0:0 character device, and (Linux >=
6.7, lower layers only) a zero-size regular file with the xattr
user.overlay.whiteout in a directory whose user.overlay.opaque is "x". A
store that is itself on overlayfs (inside a container) cannot hold the
first (the outer overlay refuses to create it: it would be its own
whiteout), so there the second is written. Both are read everywhere.
"""

from __future__ import annotations

import errno
import os
import stat

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "user.overlay.opaque"
WHITEOUT_XATTR = "user.overlay.whiteout"

_devices_refused: list[bool] = []  # set once mknod of a whiteout device was refused (the store is on overlayfs)


def hidden_name(name: str) -> str | None:
    """The name a `.wh.NAME` whiteout hides; None if it names nothing (`.wh.`, `.wh..`)."""
    hidden = name[len(WHITEOUT):]
    if not hidden or hidden in (".", "..") or "/" in hidden:
        return None
    return hidden


def make_opaque(fd: int) -> None:
    """Hide what lower layers hold in the directory at fd."""
    os.setxattr(fd, OPAQUE_XATTR, b"y")


def make_whiteout(pfd: int, name: str, owner: tuple[int, int] | None = None) -> None:
    """Hide name of the lower layers, in the directory at pfd (owner: chown it, a copy's owner kept)."""
    if not _devices_refused:
        try:
            # a 0:0 character device: unprivileged users may make this one (Linux >= 5.8)
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
            if owner:
                os.chown(name, *owner, dir_fd=pfd, follow_symlinks=False)
            return
        except PermissionError:
            _devices_refused.append(True)
    make_file_whiteout(pfd, name, owner)


def file_whiteouts_work() -> bool:
    """Whether this kernel reads whiteout files (Linux >= 6.7)."""
    try:
        major, minor = (int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    except ValueError:
        return True  # an unusual version string: let the kernel decide
    return (major, minor) >= (6, 7)


NEEDS_FILE_WHITEOUTS = ("a store on overlayfs needs Linux >= 6.7, whose overlayfs reads whiteout files "
                        "(this kernel is {release})")


def make_file_whiteout(pfd: int, name: str, owner: tuple[int, int] | None = None) -> None:
    """The regular-file form of a whiteout (see above), its directory marked to have them."""
    if not file_whiteouts_work():
        from plash.errors import PlashError

        raise PlashError(NEEDS_FILE_WHITEOUTS.format(release=os.uname().release),
                         hint="set PLASH_DATA to a directory on another file system (a volume)")
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o000, dir_fd=pfd)
    try:
        os.setxattr(fd, WHITEOUT_XATTR, b"")
        if owner:
            os.fchown(fd, *owner)
    except OSError as e:
        os.close(fd)
        os.unlink(name, dir_fd=pfd)
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(e.errno, "this file system has neither whiteout devices nor user xattrs: "
                          "overlayfs layers cannot be stored on it") from None
        raise
    os.close(fd)
    if opaque_value(pfd) != b"y":  # an opaque directory hides all below anyway
        os.setxattr(pfd, OPAQUE_XATTR, b"x")


def opaque_value(fd: int) -> bytes | None:
    """The user.overlay.opaque value of the directory at fd: b"y" (opaque), b"x" (holds file whiteouts), None."""
    try:
        return os.getxattr(fd, OPAQUE_XATTR)
    except OSError:
        return None


def is_file_whiteout(pfd: int, name: str, st: os.stat_result) -> bool:
    """Whether name (st: its lstat) is the regular-file form of a whiteout."""
    if not (stat.S_ISREG(st.st_mode) and st.st_size == 0):
        return False
    try:
        os.getxattr(name if pfd < 0 else f"/proc/self/fd/{pfd}/{name}", WHITEOUT_XATTR, follow_symlinks=False)
    except OSError:
        return False
    return True


def is_whiteout(pfd: int, name: str) -> bool:
    """Whether name (in the directory at pfd) is a whiteout, in either form."""
    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    if stat.S_ISCHR(st.st_mode):
        return st.st_rdev == 0
    return is_file_whiteout(pfd, name, st)
