"""Room left on the store's file system, for error messages that say why a write failed."""

from __future__ import annotations

import os


def full_store_note(path: str | None = None) -> str:
    """'; the store's file system is full (PATH)' when it has (almost) no room left, else ''."""
    if path is None:
        from plash import config

        path = config.data_dir()
    try:
        st = os.statvfs(path)
    except OSError:
        return ""
    if st.f_bavail * st.f_frsize < 1 << 20 or (st.f_files and st.f_favail == 0):
        return f"; the store's file system is full ({path})"
    return ""
