"""SHA-256 for plash: the digest behind --hash-path (names, modes and contents, not mtimes) and layer keys."""

from __future__ import annotations

import os
import stat
import sys

TYPE_CHECKING = False  # typing itself is not imported: it slows plash's start
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    Buffer = bytes | bytearray | memoryview

    class Hasher(Protocol):
        """What plash uses of a hashlib hash object."""

        def update(self, data: Buffer, /) -> None: ...

        def hexdigest(self) -> str: ...


def sha256(data: Buffer = b"") -> Hasher:
    """A SHA-256 hash object: CPython's built-in one when there is one, else hashlib's.

    Every plash executable's start computes its layer keys, and hashlib
    costs ~4 ms there (it loads OpenSSL) against ~0.1 ms for the built-in
    module, which is `_sha2` since 3.12 and was `_sha256` before. Both
    compute the same digests as hashlib's; hashlib is the fallback.
    """
    global _SHA256
    if _SHA256 is None:
        _SHA256 = _builtin_sha256()
    return _SHA256(data)


def _builtin_sha256() -> Callable[[Buffer], Hasher]:
    try:
        module = __import__("_sha2" if sys.version_info >= (3, 12) else "_sha256")
    except ImportError:
        pass  # a Python built without it
    else:
        found: Callable[[Buffer], Hasher] = module.sha256
        return found
    import hashlib

    return hashlib.sha256


_SHA256: Callable[[Buffer], Hasher] | None = None


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
