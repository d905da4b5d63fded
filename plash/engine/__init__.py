"""The trio build engine: plans a build as a DAG of layer jobs and runs it.

Every module that imports httpx or trio is in this package, so this runs
first, and spares every engine start two costs of those libraries' own
imports (tests/unit/test_architecture.py checks that they are imported
nowhere else, and that both still work):

- httpx's __init__ imports its command-line client (httpx._main), which
  imports click, pygments, rich.syntax, rich.progress and rich.table
  whenever they are installed, as they are beside plash: about 60 ms on
  each command that downloads. plash never runs that client. A None in
  sys.modules makes `import httpx._main` fail with ImportError, which httpx
  catches: `httpx.main` is then its stub saying the CLI is not installed.
- trio names its worker threads through pthread_setname_np, and finds
  libpthread at import with ctypes.util.find_library("pthread"), which on
  Linux runs `/sbin/ldconfig -p` in a child process: about 10 ms of every
  build. With glibc, libpthread's soname is libpthread.so.0 on every
  architecture (a stub that leads to libc since glibc 2.34), which is what
  ldconfig answers; that answer is given without asking, for "pthread"
  only, from just before trio's import on. With any other C library
  (musl has no libpthread) find_library is left as it is.
"""

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # None: "do not import", as documented


class _BeforeTrio:
    """A meta path finder that finds nothing: it sees the first `import trio` go by, then is idle.

    (It stays in sys.meta_path: removing it while the import system walks
    that list would skip the finder after it.)
    """

    armed = True

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> None:
        if cls.armed and name == "trio":
            cls.armed = False
            _known_pthread()


def _known_pthread() -> None:
    import os

    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"; musl has no such name
    except (ValueError, OSError):
        return
    if not glibc or not glibc.startswith("glibc"):
        return
    import ctypes.util

    find_library = ctypes.util.find_library

    def pthread_known(name: str) -> str | None:
        return "libpthread.so.0" if name == "pthread" else find_library(name)

    ctypes.util.find_library = pthread_known


if "trio" not in sys.modules:
    sys.meta_path.insert(0, _BeforeTrio)
