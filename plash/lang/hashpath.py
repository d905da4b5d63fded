"""The digest behind --hash-path: names, modes and contents of files, not mtimes."""

from __future__ import annotations

import os
import stat

try:  # the builtin module avoids importing OpenSSL on plash's start path
    from _sha256 import sha256  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    from hashlib import sha256


def hash_paths(paths: list[str]) -> str:
    h = sha256()
    for top in paths:
        _hash_one(h, top, os.path.basename(top.rstrip("/")) or "/")
    return h.hexdigest()


def _hash_one(h, path: str, name: str) -> None:  # type: ignore[no-untyped-def]
    st = os.lstat(path)
    h.update(f"{name}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode):o}\0".encode("utf-8", "surrogateescape"))
    if stat.S_ISDIR(st.st_mode):
        for entry in sorted(os.listdir(path)):
            _hash_one(h, os.path.join(path, entry), f"{name}/{entry}")
    elif stat.S_ISLNK(st.st_mode):
        h.update(os.fsencode(os.readlink(path)))
    elif stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    h.update(b"\0")
