"""SHA-256 for plash: the digest behind --hash-path (names, modes and contents, not mtimes) and layer keys."""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False  # typing itself is not imported: it slows plash's start
if TYPE_CHECKING:
    from typing import Protocol

    Buffer = bytes | bytearray | memoryview

    class Hasher(Protocol):
        """What plash uses of a hashlib hash object."""

        def update(self, data: Buffer, /) -> None: ...

        def hexdigest(self) -> str: ...


def sha256(data: Buffer = b"") -> Hasher:
    """A SHA-256 hash object, hashlib's."""
    # imported on first use: hashlib loads OpenSSL (~4 ms); a build's layer keys pay it, importing the planner need not
    import hashlib

    return hashlib.sha256(data)


def hash_paths(paths: list[str]) -> str:
    h = sha256()
    for top in paths:
        _hash_one(h, top, os.path.basename(top.rstrip("/")) or "/")
    return h.hexdigest()


def _hash_one(h: Hasher, path: str, name: str) -> None:
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
