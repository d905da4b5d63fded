"""Taking images and leftovers out of the store: rm (detach), purge (empty_into_trash) and clean (clean_plan).

Each moves what goes into a directory of its own under the store's lock,
for the caller to delete afterwards (possibly inside the user namespace),
so deleting races with nothing.

`purge` empties the store in place: under the lock it moves every entry
but the lock file into a purge-* dir, locks/ (the mark of a complete
skeleton) first and the index right after, then deletes that dir. A purge
killed half-way leaves either a store with all its images or an empty one;
the next write rebuilds the skeleton and `clean` reclaims the purge-* dir.

Imported by the Store methods when first used: `plash run` never removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from plash.errors import NoImage, PlashError, StoreError
from plash.store.owners import owned_name, owner_alive, token

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.store.layout import Store

TRASH_PREFIX = "purge-"

# Moved first by purge: without locks/ the skeleton counts as incomplete (the
# next write rebuilds it), without index/ no image is visible any more.
_PURGE_FIRST = ("locks", "index", "map", "keys")


def detach(store: Store, image: int, at_most: int | None = None) -> tuple[str, list[int]]:
    """Unlink an image and its descendants from the tree and index.

    Returns the temp path now holding their files (to be deleted by the
    caller, possibly inside the user namespace) and the removed ids.
    With at_most, an image with more descendants than that (counting
    itself) is left alone: PlashError. So is an image in use (see Store.hold).
    """
    with store.locked():
        src = store.image_dir(image)
        gone = store.descendants(image)
        if at_most is not None and len(gone) > at_most:
            raise PlashError(f"image {image} has {len(gone)} image(s) with its descendants, more than {at_most}")
        held = [_try_exclusive(store, i) for i in gone]
        try:
            busy = [i for i, fd in zip(gone, held, strict=True) if fd is None]
            if busy:
                raise PlashError(f"image {busy[0]} is in use by a running container or build",
                                 hint="wait for it to end, then try again")
            trash = store.mkdtemp("rm")
            os.rename(src, os.path.join(trash, "tree"))
        finally:
            for fd in held:
                if fd is not None:
                    os.close(fd)
        for i in gone:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(store.index, str(i)))
        _drop_dangling(store.maps)
        _drop_dangling(store.keys)
    return trash, gone


def _try_exclusive(store: Store, image: int) -> int | None:
    """An fd holding the exclusive lock of an image (see Store.hold), None if a container or build holds it."""
    fd = os.open(store.inuse_file(store.image_dir(image)), os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def empty_into_trash(store: Store) -> str:
    """Under the lock, move every entry of the store but its lock file into a new purge-* dir; return it.

    The store dir itself stays (it may be a mount point, or its parent
    read-only) with its mode. The lock file stays too: processes waiting
    for it must keep meeting each other on one inode.
    """
    trash = os.path.join(store.path, TRASH_PREFIX + owned_name(token()))
    with store.locked():
        try:
            os.mkdir(trash, 0o700)
            names = [n for n in os.listdir(store.path) if n != "lock" and os.path.join(store.path, n) != trash
                     and not (n.startswith(TRASH_PREFIX) and owner_alive(n[len(TRASH_PREFIX):]))]
            names.sort(key=lambda n: (_PURGE_FIRST.index(n) if n in _PURGE_FIRST else len(_PURGE_FIRST), n))
            for name in names:
                os.rename(os.path.join(store.path, name), os.path.join(trash, name))
        except OSError as e:
            raise StoreError(f"cannot purge {store.path}: {e.strerror}") from e
    return trash


def clean_plan(store: Store) -> tuple[list[str], list[str]]:
    """Under the lock: drop dangling links; list reclaimable temp and orphan dirs.

    Returns (removed entry names, directories to delete). Orphans (image
    dirs without an index entry, left by a crash while publishing) are
    moved into a fresh temp dir so deleting them later races with nothing.
    """
    removed: list[str] = []
    trash_dirs: list[str] = []
    with store.locked():
        for d, label in ((store.index, "index"), (store.maps, "map"), (store.keys, "keys")):
            removed += [f"{label}/{n}" for n in _drop_dangling(d)]
        indexed = set()
        for name in os.listdir(store.index):
            if name.isdigit():
                with contextlib.suppress(NoImage):
                    indexed.add(os.path.realpath(store.image_dir(int(name))))
        orphans = []
        for dirpath, dirnames, _ in os.walk(store.root0):
            keep = []
            for dn in dirnames:
                p = os.path.join(dirpath, dn)
                if not dn.isdigit():
                    continue
                if os.path.realpath(p) in indexed:
                    keep.append(dn)
                else:
                    orphans.append(p)
            dirnames[:] = keep
        if orphans:
            trash = store.mkdtemp("orphans")
            for i, p in enumerate(orphans):
                os.rename(p, os.path.join(trash, str(i)))
                removed.append(os.path.relpath(p, store.path))
            trash_dirs.append(trash)
        for name in os.listdir(store.locks) if os.path.isdir(store.locks) else []:
            if _drop_stale_lock(os.path.join(store.locks, name)):
                removed.append(f"locks/{name}")
        for name in os.listdir(store.tmp):
            p = os.path.join(store.tmp, name)
            if p in trash_dirs:
                continue
            if not owner_alive(name):
                trash_dirs.append(p)
                removed.append(f"tmp/{name}")
        for name in os.listdir(store.path):  # what a killed purge had moved aside
            if name.startswith(TRASH_PREFIX) and not owner_alive(name[len(TRASH_PREFIX):]):
                trash_dirs.append(os.path.join(store.path, name))
                removed.append(name)
    return removed, trash_dirs


def _drop_stale_lock(path: str) -> bool:
    """Unlink a key lock file nobody holds (left by a killed process)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # waiters that opened it see another inode in place and retry
    os.close(fd)
    return True


def _drop_dangling(directory: str) -> list[str]:
    dropped = []
    for name in os.listdir(directory):
        p = os.path.join(directory, name)
        if os.path.islink(p) and not os.path.exists(p):
            try:
                os.unlink(p)
                dropped.append(name)
            except FileNotFoundError:
                pass
    return dropped
