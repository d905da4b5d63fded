"""Staging dirs for new layers: tmp/<owner>/img/root (the upper dir), work/, mnt/.

After the container that wrote a layer has ended, `finish_staging` removes
the mount points the launcher had to create (listed in tmp/<owner>/residue)
and overlayfs's work dir, so the layer holds only what the command changed.
"""

from __future__ import annotations

import os
import stat

from plash.store.layout import Store, rmtree


def new_staging(s: Store, kind: str, with_work: bool = True) -> str:
    staging = s.mkdtemp(kind)
    os.makedirs(os.path.join(staging, "img", "root"))
    if with_work:
        os.mkdir(os.path.join(staging, "work"))
        os.mkdir(os.path.join(staging, "mnt"))
    return staging


def finish_staging(staging: str) -> None:
    upper = os.path.join(staging, "img", "root")
    try:
        with open(os.path.join(staging, "residue")) as f:
            created = [line for line in f.read().split("\n") if line]
    except FileNotFoundError:
        created = []
    remove_residue(upper, created)
    rmtree(os.path.join(staging, "work"))


def remove_residue(upper: str, created: list[str]) -> None:
    """Remove mount points the launcher created, and dirs copied up only for them."""
    parents: set[str] = set()
    for rel in reversed(created):
        p = upper + rel
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(p)
            except OSError:
                continue
        elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
            os.unlink(p)
        else:
            continue
        parents.add(os.path.dirname(rel))
    for rel in sorted(parents, key=len, reverse=True):
        while rel not in ("", "/"):
            p = upper + rel
            try:
                if os.listdir(p) or is_opaque(p):
                    break
                os.rmdir(p)
            except OSError:
                break
            rel = os.path.dirname(rel)


def is_opaque(path: str) -> bool:
    for name in ("user.overlay.opaque", "trusted.overlay.opaque"):
        try:
            if os.getxattr(path, name, follow_symlinks=False):
                return True
        except OSError:
            pass
    return False
