"""fsck's checks: what a reader of the store could trip on, and what killed processes left behind."""

from __future__ import annotations

import contextlib
import fcntl
import os

from plash import testhook
from plash.errors import NoImage
from plash.store.layout import Store
from plash.store.owners import owner_alive
from plash.store.removal import TRASH_PREFIX


def check(s: Store) -> tuple[list[str], list[str], list[int]]:
    """Check the store; return (broken, leftovers, the ids of broken images).

    Broken is what a reader could trip on: entries pointing to nothing or to
    the wrong place, images without their root or with unreadable meta.
    Leftovers are what killed processes leave behind and `clean` reclaims;
    no reader ever sees them.
    """
    broken: list[str] = []
    leftovers: list[str] = []
    # Under the store's lock, so that an rm or a publish running beside fsck is
    # seen before or after, never half-way (as a dangling entry, say).
    has_lock = os.path.exists(s.lock_file)  # a store without one: nothing to race with
    with s.locked() if has_lock else contextlib.nullcontext():
        testhook.pause("fsck-locked")
        for d, label in ((s.index, "index"), (s.maps, "map"), (s.keys, "keys")):
            if not os.path.isdir(d):
                continue
            for name in sorted(os.listdir(d)):
                p = os.path.join(d, name)
                if not os.path.islink(p):
                    broken.append(f"{label}/{name}: not a symlink")
                elif not os.path.exists(p):
                    broken.append(f"{label}/{name}: points to nothing")
                elif label == "index" and os.path.basename(os.readlink(p)) != name:
                    broken.append(f"index/{name}: points to image dir {os.path.basename(os.readlink(p))}")
        bad_images = []
        for image in s.ids():
            try:
                d = s.image_dir(image)
                missing = [x for x in ("root", "meta") if not os.path.lexists(os.path.join(d, x))]
                keyless = not missing and "key" not in s.meta(image)
            except NoImage:
                continue  # removed since it was listed (an rm running beside fsck): no damage
            if missing:
                broken.append(f"image {image}: missing {' and '.join(missing)}")
                bad_images.append(image)
            elif keyless:
                broken.append(f"image {image}: meta has no key (written by something else than plash)")
                bad_images.append(image)
        indexed = set()
        for i in s.ids():
            with contextlib.suppress(NoImage):
                indexed.add(os.path.realpath(s.image_dir(i)))
        for dirpath, dirnames, _ in os.walk(s.root0):
            for dn in list(dirnames):
                if dn.isdigit() and os.path.realpath(os.path.join(dirpath, dn)) not in indexed:
                    leftovers.append(f"{os.path.relpath(os.path.join(dirpath, dn), s.path)}: image dir without index entry")
            dirnames[:] = [dn for dn in dirnames if dn.isdigit()]
        for name in sorted(os.listdir(s.locks)) if os.path.isdir(s.locks) else []:
            try:
                fd = os.open(os.path.join(s.locks, name), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # released meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                leftovers.append(f"locks/{name}: left by a process that is gone")
            except BlockingIOError:
                pass  # held: a build is under way
            finally:
                os.close(fd)
        for name in sorted(os.listdir(s.tmp)) if os.path.isdir(s.tmp) else []:
            if not owner_alive(name):
                leftovers.append(f"tmp/{name}: left by a process that is gone")
        for name in sorted(os.listdir(s.path)):
            if name.startswith(TRASH_PREFIX) and not owner_alive(name[len(TRASH_PREFIX):]):
                leftovers.append(f"{name}: left by a purge that was killed")
    return broken, leftovers, bad_images
