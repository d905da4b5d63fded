"""Notes said once per store: stderr lines that are not errors (a slower or narrower path is taken)."""

from __future__ import annotations

import contextlib
import os


def once(store: str, key: str, text: str) -> None:
    """Write `plash: note: TEXT` to stderr unless this store has said the note KEY before."""
    marker = os.path.join(store, f".noted-{key}")
    if os.path.exists(marker):
        return
    os.write(2, f"plash: note: {text}\n".encode())
    with contextlib.suppress(OSError):  # a store not made yet, or read-only: said again next time
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
