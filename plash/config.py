"""Settings read from the environment: where the store is, what to export."""

from __future__ import annotations

import os

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Host variables every container receives (SPEC 5, "Environment").
PASSED_ENV = ("TERM", "DISPLAY", "XAUTHORITY", "HOME", "PLASH_DATA")

# Host paths bound into every container; /tmp only at run time, not in builds.
RUN_BINDS = ("/home", "/root", "/tmp", "/dev", "/proc", "/sys", "/etc/resolv.conf")
BUILD_BINDS = tuple(p for p in RUN_BINDS if p != "/tmp")


def data_dir() -> str:
    """The store's path: $PLASH_DATA, else ~/.plashdata (absolute, not resolved)."""
    path = os.environ.get("PLASH_DATA") or os.path.join(
        os.path.expanduser("~"), ".plashdata"
    )
    return os.path.abspath(path)


def exported_names() -> list[str]:
    """Names listed in PLASH_EXPORT (colon separated)."""
    return [n for n in os.environ.get("PLASH_EXPORT", "").split(":") if n]


def debug() -> bool:
    return os.environ.get("PLASH_DEBUG", "") not in ("", "0")
