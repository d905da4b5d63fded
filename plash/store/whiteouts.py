"""OCI whiteouts in their overlayfs form: a 0:0 character device hides a lower entry, an xattr a lower dir's contents.

OCI layers spell them as files (OCI image spec, "Whiteouts"): `.wh.NAME`
hides NAME of the lower layers, `.wh..wh..opq` in a directory hides all
that the lower layers hold in it.
"""

from __future__ import annotations

import os
import stat

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "user.overlay.opaque"


def hidden_name(name: str) -> str | None:
    """The name a `.wh.NAME` whiteout hides; None if it names nothing (`.wh.`, `.wh..`)."""
    hidden = name[len(WHITEOUT):]
    if not hidden or hidden in (".", "..") or "/" in hidden:
        return None
    return hidden


def make_opaque(fd: int) -> None:
    """Hide what lower layers hold in the directory at fd."""
    os.setxattr(fd, OPAQUE_XATTR, b"y")


def make_whiteout(pfd: int, name: str) -> None:
    """Hide name of the lower layers, in the directory at pfd."""
    # a 0:0 character device: unprivileged users may make this one (Linux >= 5.8)
    os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)


def is_whiteout(pfd: int, name: str) -> bool:
    """Whether name (in the directory at pfd) is a whiteout device."""
    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
