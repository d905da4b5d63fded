"""Every path below a directory with what an unpacker must get right, to compare two unpacked trees."""

from __future__ import annotations

import hashlib
import os
import stat


def file_tree(root: str, dir_times: bool = True, links: bool = True) -> list[tuple[str, ...]]:
    """Each path: mode, owner, size, content hash or link target, xattrs, mtime (dirs' only with dir_times), links.

    Without dir_times, the times of directories and other non-files are left
    out (an import makes some of them itself, at its own time); without
    links, the hard-link count.
    """
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    what = hashlib.sha256(f.read()).hexdigest()
            else:
                what = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            xattrs = "" if stat.S_ISLNK(st.st_mode) else repr(sorted(
                (k, os.getxattr(path, k)) for k in os.listxattr(path)))
            timed = dir_times or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)
            row = (os.path.relpath(path, root), stat.filemode(st.st_mode), f"{st.st_uid}:{st.st_gid}",
                   str(st.st_size if not stat.S_ISDIR(st.st_mode) else 0), what, xattrs,
                   str(st.st_mtime_ns) if timed else "")
            if links:
                row += (str(st.st_nlink if not stat.S_ISDIR(st.st_mode) else 0),)
            out.append(row)
    return sorted(out)
