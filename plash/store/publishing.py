"""Writing the store: its skeleton, and publishing a staged image dir (id, merged meta, rename, index entry).

Publishing is: stage in tmp/, then under the lock allocate an id, rename the
staged dir into place and add the index symlink. A crash between the two
leaves an unindexed dir, which `clean` removes (under the same lock), so a
half-made image is never visible.

Imported by Store.ensure and Store.publish when first needed: `plash run` never writes.
"""

from __future__ import annotations

import os
import time

from plash.errors import StoreError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.store.layout import Store

# Keys of an image's meta whose values accumulate from parent to child; the
# others are replaced by the child's value.
ACCUMULATING = frozenset(("env", "env_prefix", "mount", "oci_env"))
# meta of the image's own layer, never inherited: when it was made, and what made it (the layer's
# build text, or the import's source), which `plash push` writes into the image's history
OWN = frozenset(("created", "created_by"))

# The deepest chain of layers an image may have (image 0 not counted): the
# overlay mount takes all of them as lower dirs in one page of options, and
# the kernel stacks at most 500. Docker's own limit is 127.
MAX_LAYERS = 250


def encode_meta(meta: dict[str, list[str]]) -> str:
    """Meta as lines of `key<TAB>value`; a key with several values has several lines."""
    out = []
    for key, values in meta.items():
        for v in values:
            v = v.replace("%", "%25").replace("\n", "%0A").replace("\t", "%09")
            out.append(f"{key}\t{v}\n")
    return "".join(out)


def merge_meta(parent: dict[str, list[str]], own: dict[str, list[str]]) -> dict[str, list[str]]:
    """An image's effective meta: its parent's, with its own accumulated or replacing."""
    merged = {k: list(v) for k, v in parent.items() if k not in OWN}
    for k, v in own.items():
        if k in ACCUMULATING:
            merged[k] = merged.get(k, []) + [x for x in v if x not in merged.get(k, [])]
        else:
            merged[k] = list(v)
    return merged


def make_skeleton(store: Store) -> None:
    """Create the store's skeleton (see Store.ensure).

    The store dir itself is made private (0700): imported setuid files
    live in it. The skeleton is made under the lock, so it never
    interleaves with a purge moving it away.
    """
    try:
        os.makedirs(store.path, mode=0o700, exist_ok=True)  # the mode is for the last component only
        store.private()
        with store.locked():
            if os.path.isdir(store.locks):
                return
            for d in (store.index, store.maps, store.keys, store.tmp, store.mnt):
                os.makedirs(d, exist_ok=True)
            os.makedirs(os.path.join(store.root0, "root"), exist_ok=True)
            if not os.path.lexists(os.path.join(store.index, "0")):
                store.replace_link("../layer/0", os.path.join(store.index, "0"))
            os.makedirs(store.locks, exist_ok=True)  # last: the mark of a complete skeleton
    except OSError as e:
        raise StoreError(f"cannot create the store at {store.path}: {e.strerror}") from e


def publish(store: Store, staged: str, parent: int, meta: dict[str, list[str]] | None = None,
            key: str | None = None) -> int:
    """Turn a staged image dir (with root/) into a new child of parent; return its id.

    The staged dir is renamed, so it must live inside this store. Its meta
    is stored merged with the parent's, so running needs one read. `key`
    is the image's content identity (the build cache key); without one it
    gets a random identity, and only a key given here is indexed in keys/.
    """
    merged = merge_meta(store.meta(parent), meta or {})
    merged["created"] = [repr(time.time())]
    merged["key"] = [key or "random-" + os.urandom(16).hex()]
    with open(os.path.join(staged, "meta"), "w") as f:
        f.write(encode_meta(merged))
    # made here, so that holding the image (see hold) changes nothing in the store
    os.close(os.open(store.inuse_file(staged), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    with store.locked():
        parent_dir = store.image_dir(parent) if parent else store.root0
        depth = len(store.chain(parent)) if parent else 1  # of the new image
        if depth > MAX_LAYERS:
            raise StoreError(f"an image has at most {MAX_LAYERS} layers; image {parent} has {depth - 1} already",
                             hint="join build steps into fewer layers")
        n = _allocate_id(store)
        dest = os.path.join(parent_dir, str(n))
        try:
            os.rename(staged, dest)
        except OSError as e:
            raise StoreError(f"cannot publish image {n}: {e.strerror}") from e
        try:
            store.replace_link(os.path.relpath(dest, store.index), os.path.join(store.index, str(n)))
            if key:
                store.replace_link(f"../index/{n}", os.path.join(store.keys, key))
        except OSError as e:
            # undo: back into the staging dir, which the caller discards
            link = os.path.join(store.index, str(n))
            if os.path.islink(link):
                os.unlink(link)
            os.rename(dest, staged)
            raise StoreError(f"cannot publish image {n}: {e.strerror}") from e
    return n


def _allocate_id(store: Store) -> int:
    """The next id (call with the lock held)."""
    counter = os.path.join(store.path, "next_id")
    try:
        with open(counter) as f:
            n = int(f.read().strip() or "1")
    except FileNotFoundError:
        n = 1
    # Never hand out an id that is still indexed (a counter lost to a crash).
    while os.path.lexists(os.path.join(store.index, str(n))):
        n += 1
    tmp = f"{counter}.{os.getpid()}.new"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600), "w") as f:
        f.write(f"{n + 1}\n")
    os.replace(tmp, counter)
    return n
