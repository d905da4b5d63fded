"""The store's persistent caches of build steps: $PLASH_DATA/cache/NAME, bound at a path for a step only.

    cache/<NAME>/   what the steps that bind it left there (apt's .deb files, pip's wheels, ...)

A cache never enters a layer or a key: it is bound for the steps of one
layer (`--cache-mount NAME:PATH`, and the package managers' own, see
plash.lang.caches). Steps sharing a cache take its lock (flock on the
cache dir itself) for as long as they run, so concurrent builds never see
another's half-written download; the package managers' own locks do not
suffice (apt's archive lock fails at once instead of waiting).
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from plash.store.layout import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

CACHE_DIR = "cache"
NAME_MAX = 64  # a cache name is also a file name, and is shown in df
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def name_problem(name: str) -> str | None:
    """Why name cannot name a cache (None: it can): one directory name, of letters, digits, '.', '_' and '-'."""
    if not name:
        return "the cache name is empty"
    if name in (".", "..") or name.startswith("."):
        return f"the cache name {name!r} starts with '.'"
    if len(name) > NAME_MAX:
        return f"the cache name is longer than {NAME_MAX} characters"
    if not set(name) <= _NAME_CHARS:
        return f"the cache name {name!r} has characters other than letters, digits, '.', '_' and '-'"
    return None


def root(store: Store) -> str:
    return os.path.join(store.path, CACHE_DIR)


def path(store: Store, name: str) -> str:
    """The host directory of cache name (not created)."""
    problem = name_problem(name)
    if problem:
        raise ValueError(problem)
    return os.path.join(root(store), name)


def ensure(store: Store, name: str, subdirs: tuple[str, ...] = ()) -> str:
    """The cache dir of name, made if missing (with subdirs a package manager expects), owned by the caller.

    The caller is uid 0 in a step's namespace, so the step's root writes it;
    mode 0755, so that a package manager's download user inside (apt's
    _apt) can reach what it is given. The store's own mode keeps others out.
    """
    d = path(store, name)
    os.makedirs(root(store), 0o700, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(d, 0o755)
    for sub in subdirs:
        os.makedirs(os.path.join(d, sub), 0o755, exist_ok=True)
    return d


def names(store: Store) -> list[str]:
    """The caches the store holds, sorted."""
    try:
        return sorted(n for n in os.listdir(root(store)) if name_problem(n) is None and os.path.isdir(
            os.path.join(root(store), n)))
    except FileNotFoundError:
        return []


class CacheLock:
    """An exclusive flock on a cache dir, held while a step that binds it runs (or while it is emptied)."""

    def __init__(self, cache_dir: str) -> None:
        self.fd = os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def try_lock(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def lock(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1


def empty(store: Store, remove: Callable[[str], None], wait: Callable[[str], None] | None = None) -> list[str]:
    """Empty every cache (the dirs stay); return the names emptied.

    remove deletes a tree that may hold files of subordinate ids (a step's
    apt chowns its downloads to _apt). A cache in use by a step is emptied
    when that step is done: wait(name) is told before waiting.
    """
    done = []
    for name in names(store):
        d = os.path.join(root(store), name)
        lock = CacheLock(d)
        try:
            if not lock.try_lock():
                if wait:
                    wait(name)
                lock.lock()
            for entry in sorted(os.listdir(d)):
                remove(os.path.join(d, entry))
        finally:
            lock.close()
        done.append(name)
    return done
