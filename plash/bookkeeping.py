"""The store's bookkeeping commands: rm, map, clean, shrink, purge and fsck (the CLI only parses and calls these).

Synchronous, as plash.actions: deleting trees that hold files of subordinate
ids happens in forked children, in the user namespace.
"""

from __future__ import annotations

import contextlib
import os

from plash import config
from plash.actions import existing_store, image_store, store
from plash.errors import NoImage, PlashError, StoreError
from plash.launch.child import rmtree_anywhere
from plash.store import names
from plash.store.layout import Store


def _discard(path: str) -> None:
    with contextlib.suppress(OSError, PlashError):  # left for `plash clean`, which reclaims dirs whose owner is gone
        rmtree_anywhere(path)


def remove(image_text: str) -> list[int]:
    s, image = image_store(image_text, write=True)
    trash, gone = s.detach(image)
    rmtree_anywhere(trash)
    return gone


def map_key(key: str, image: str | None) -> int | None:
    """`map KEY [IMAGE]`: the image KEY points to (None when unset); with IMAGE (an id or a name) set it, with '' delete it."""
    s = Store(config.data_dir())
    s.check_map_name(key)
    if image is None:
        return existing_store().map_get(key)
    if image == "":
        s.map_del(key)  # deleting a key that is not set (or in a store not made yet) is fine
        return None
    s, n = image_store(image, write=True)
    s.map_set(key, n)
    return None


def map_entries() -> dict[str, int]:
    """`map` alone: every name with its image, sorted by name (a missing store has none, and stays missing)."""
    return names.map_entries(Store(config.data_dir()))


def clean() -> list[str]:
    s = Store(config.data_dir())
    if not s.exists():
        return []  # nothing to clean, and nothing to create
    s.ensure()  # a store emptied by a killed purge gets its skeleton back
    removed, dirs = s.clean_plan()
    for d in dirs:
        try:
            rmtree_anywhere(d)
        except (OSError, PlashError):
            removed.append(f"(could not delete all of {os.path.relpath(d, s.path)} yet; run clean again)")
    from plash.store import execmemo

    memos = execmemo.prune(s)
    if memos:
        removed.append(f"{memos} stale build memo(s) ({execmemo.MEMO_DIR}/)")
    return removed


def shrink() -> list[int]:
    """Delete about half of the images, oldest first; return the removed ids.

    Each candidate goes with its descendants, so it is taken only when they
    all fit in what is left of the half: in the usual store, where most
    images descend from one imported base, that base stays. Images in use by
    a running container or build are skipped.
    """
    s = Store(config.data_dir())
    if not s.exists():
        return []
    s.ensure()
    ids = s.ids()
    quota = len(ids) // 2
    removed: list[int] = []
    for i in sorted(ids, key=lambda i: (s.created(i), i)):
        if len(removed) >= quota:
            break
        try:
            count = len(s.descendants(i))
        except NoImage:
            continue  # removed with an older one, or by another process
        if len(removed) + count > quota:
            continue
        try:
            trash, gone = s.detach(i, at_most=quota - len(removed))
        except PlashError:
            continue  # in use, gone meanwhile, or grown past what is left of the half
        _discard(trash)
        removed.extend(gone)
    return removed


def store_exists() -> bool:
    return Store(config.data_dir()).exists()


def purge() -> bool:
    """Empty the store dir in place (it stays, with its mode); False when there is none."""
    s = Store(config.data_dir())
    if not s.exists():
        return False
    trash = s.empty_into_trash()
    try:
        rmtree_anywhere(trash)
    except (OSError, PlashError):
        raise StoreError(f"the store is empty, but not all of {trash} could be deleted yet",
                         hint="plash clean deletes the rest") from None
    return True


def fsck(repair: bool) -> tuple[list[str], list[str], list[str]]:
    """Check the store (see plash.store.fsck); with repair, fix what can be fixed safely.

    Returns (broken, leftovers, repaired).
    """
    from plash.store.fsck import check

    s = store() if repair else existing_store()  # checking alone creates nothing
    broken, leftovers, bad_images = check(s)
    repaired: list[str] = []
    if repair and (broken or leftovers):
        for image in bad_images:
            with contextlib.suppress(PlashError):
                repaired += [f"removed broken image {i}" for i in remove(str(image))]
        for d in (s.index, s.maps, s.keys):
            for name in os.listdir(d) if os.path.isdir(d) else []:
                p = os.path.join(d, name)
                if not os.path.islink(p) and os.path.isfile(p):
                    os.unlink(p)
                    repaired.append(f"removed {os.path.relpath(p, s.path)}")
        repaired += [f"removed {r}" for r in clean()]
    return broken, leftovers, repaired
