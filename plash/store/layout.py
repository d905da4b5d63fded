"""All paths of the store, and the queries on it: the part `plash run` needs.

    $PLASH_DATA/
      layer/0/                 image 0 (the empty root); children nest inside
      layer/0/1/               image 1: root/ (its layer), meta (run settings), inuse, children
      layer/0/1/5/             image 5, child of 1
      index/<id> -> ../layer/0/1/5      relative symlinks (the store can move)
      map/<name> -> ../index/<id>
      keys/<sha256> -> ../index/<id>   build cache: layer key -> image
      locks/<key>              flock per key while a layer or import is made (then unlinked)
      tmp/<pid>.<start>.<rand>/ staging dirs; the name records the owner (see owners)
      mnt/                     fixed mount point, used only in private mount ns
      next_id                  the next id to hand out
      lock                     flock: held briefly to publish, delete or create the skeleton
      purge-<pid>.<start>.<rand>/  what `purge` moved aside and is deleting (clean reclaims it)

The Store's writes live beside this module and are imported when first
used: publishing (publish), removal (rm, purge, clean); staging holds a
layer being made, rmtree removes trees. Queries open the store with
`open_store(create=False)`: they never create it.

Only the standard library is imported: this runs on `plash run`'s path.
"""

from __future__ import annotations

import fcntl
import os
import stat

from plash.errors import NoImage, PlashError, StoreError
from plash.store.names import valid_map_name

# The file in each image dir whose shared flock marks the image in use.
INUSE = "inuse"


def parse_image_id(text: str) -> int:
    """An image argument as a positive id, or NoImage saying what is wrong."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18 or int(text) == 0:
        raise NoImage(f"image must be a positive number, got: {text!r}")
    return int(text)


def decode_meta(text: str) -> dict[str, list[str]]:
    """An image's meta file as a dict (written by publishing.encode_meta)."""
    meta: dict[str, list[str]] = {}
    for line in text.split("\n"):
        key, sep, v = line.partition("\t")
        if sep:
            v = v.replace("%09", "\t").replace("%0A", "\n").replace("%25", "%")
            meta.setdefault(key, []).append(v)
    return meta


class Store:
    """The store at one path; `ensure()` creates its skeleton on first write."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.layer = os.path.join(path, "layer")
        self.index = os.path.join(path, "index")
        self.maps = os.path.join(path, "map")
        self.keys = os.path.join(path, "keys")
        self.locks = os.path.join(path, "locks")
        self.tmp = os.path.join(path, "tmp")
        self.mnt = os.path.join(path, "mnt")
        self.root0 = os.path.join(self.layer, "0")

    # -- creation -------------------------------------------------------

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def private(self) -> Store:
        """Make sure no other user can reach into the store (0700), as podman's storage is.

        Imported setuid files and file capabilities live in it: reachable, any
        local user could run them with the owner's powers. A store made open
        (by an older plash, or a umask) is closed on first use, and said once.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return self
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            os.chmod(self.path, 0o700)
            import sys

            sys.stderr.write(f"plash: made the store private (mode 700, it was {stat.S_IMODE(st.st_mode):o}): "
                             f"{self.path}\n")
        return self

    def ensure(self) -> Store:
        """Create the store's skeleton if it is missing (idempotent, race-free; see publishing.make_skeleton)."""
        if os.path.isdir(self.locks):  # made last: the skeleton is complete
            return self.private()
        from plash.store.publishing import make_skeleton

        make_skeleton(self)
        return self

    # -- lookups --------------------------------------------------------

    def image_dir(self, image: int) -> str:
        """The directory of an existing image, or NoImage."""
        link = os.path.join(self.index, str(image))
        try:
            target = os.readlink(link)
        except OSError:
            raise NoImage(f"no image: {image}") from None
        path = os.path.normpath(os.path.join(self.index, target))
        if not os.path.isdir(path):
            raise NoImage(f"no image: {image}")
        return path

    def chain(self, image: int) -> list[int]:
        """Ids from 0 down to the image, from its place in the tree."""
        rel = os.path.relpath(self.image_dir(image), self.layer)
        return [int(p) for p in rel.split(os.sep)]

    def parent(self, image: int) -> int:
        return self.chain(image)[-2]

    def meta(self, image: int) -> dict[str, list[str]]:
        """The image's effective meta (run-time settings, merged at publish time)."""
        if image == 0:
            return {}
        try:
            with open(os.path.join(self.image_dir(image), "meta")) as f:
                return decode_meta(f.read())
        except FileNotFoundError:
            return {}

    def created(self, image: int) -> float:
        try:
            return float(self.meta(image).get("created", ["0"])[0])
        except ValueError:
            return 0.0

    def ids(self) -> list[int]:
        """Every image id that is indexed and present, ascending (0 excluded)."""
        out = []
        try:
            names = os.listdir(self.index)
        except FileNotFoundError:
            return []  # a store whose skeleton is not made (yet, or again after a purge)
        for name in names:
            if name.isdigit() and name != "0":
                try:
                    self.image_dir(int(name))
                except NoImage:
                    continue
                out.append(int(name))
        return sorted(out)

    def children(self, image: int) -> list[int]:
        d = self.image_dir(image) if image else self.root0
        return sorted(int(n) for n in os.listdir(d) if n.isdigit())

    def descendants(self, image: int) -> list[int]:
        """The image and everything below it, parents before children (breadth first: no recursion)."""
        out = [image]
        i = 0
        while i < len(out):
            out.extend(self.children(out[i]))
            i += 1
        return out

    # -- in use --------------------------------------------------------

    def hold(self, image: int, inherit: bool = False) -> int:
        """Mark an image in use: an fd with a shared lock on the regular file `inuse` in its dir.

        `rm`, `shrink` and `clean` need the exclusive lock to delete an image
        (or any of its ancestors, since they delete descendants too). A
        regular file, not the image dir: a container inherits the fd
        (inherit), and an fd on a directory of the store would let it
        reach the store (/proc/self/fd/N/..); one on a file reaches nothing.
        Raises NoImage when the image is gone, or went while locking.
        """
        path = self.inuse_file(self.image_dir(image))
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            # look again: `rm` may have moved the image away between the open and the lock
            st, now = os.fstat(fd), os.stat(self.inuse_file(self.image_dir(image)))
            if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino):
                raise NoImage(f"no image: {image}")
        except (OSError, NoImage):
            os.close(fd)
            raise NoImage(f"no image: {image}") from None
        if inherit:
            os.set_inheritable(fd, True)
        return fd

    @staticmethod
    def hold_staged(staged: str) -> int:
        """Hold an image from birth: the in-use lock taken in its staged dir travels with publish's rename."""
        fd = os.open(Store.inuse_file(staged), os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    @staticmethod
    def inuse_file(image_dir: str) -> str:
        """The file whose flock marks an image in use (see hold)."""
        return os.path.join(image_dir, INUSE)

    def layer_root(self, image: int) -> str:
        """The dir of an image's own layer (its files; the overlay lower dir it adds)."""
        return os.path.join(self.image_dir(image), "root")

    def packed_record(self, image: int) -> str:
        """The file where push remembers the blobs it made of an image's layer (see plash.engine.push)."""
        return os.path.join(self.image_dir(image), "packed.json")

    # -- locking and temp dirs -----------------------------------------

    def key_lock(self, key: str) -> str:
        """The lock file of one cache key, held while its layer or import is made."""
        return os.path.join(self.locks, key)

    @property
    def run_root(self) -> str:
        """Where `run` mounts a container's root, in its private mount namespace (on a tmpfs at mnt/)."""
        return os.path.join(self.mnt, "root")

    @property
    def run_upper(self) -> str:
        return os.path.join(self.mnt, "upper")

    @property
    def run_work(self) -> str:
        return os.path.join(self.mnt, "work")

    @property
    def lock_file(self) -> str:
        return os.path.join(self.path, "lock")

    def locked(self) -> _Lock:
        """Hold the store's lock (a short critical section across processes)."""
        return _Lock(self.lock_file)

    def mkdtemp(self, kind: str = "tmp") -> str:
        """A new staging dir in tmp/, named after this process so clean knows its owner."""
        from plash.store.owners import owned_name, token

        path = os.path.join(self.tmp, owned_name(f"{kind}-{token()}"))
        try:
            os.mkdir(path, 0o755)
        except OSError as e:
            raise StoreError(f"cannot create a temp dir in {self.tmp}: {e.strerror}") from e
        return path

    def replace_link(self, target: str, link: str) -> None:
        """Make link a symlink to target, atomically (whatever it was before)."""
        tmp = f"{link}.{os.getpid()}.{os.urandom(4).hex()}.new"
        os.symlink(target, tmp)
        os.replace(tmp, link)

    # -- publishing (in plash.store.publishing), keys and maps ---------

    def publish(self, staged: str, parent: int, meta: dict[str, list[str]] | None = None,
                key: str | None = None) -> int:
        """Turn a staged image dir (with root/) into a new child of parent; return its id (see publishing)."""
        from plash.store.publishing import publish

        return publish(self, staged, parent, meta, key)

    def key_of(self, image: int) -> str:
        """An image's content identity (random for images made by `create` or imports)."""
        keys = self.meta(image).get("key")
        return keys[0] if keys else f"image-{image}"

    def record_key(self, key: str, image: int) -> None:
        """Point a further cache key at an existing image (an import's source key, say)."""
        self.image_dir(image)
        self.replace_link(f"../index/{image}", os.path.join(self.keys, key))

    def lookup_key(self, key: str) -> int | None:
        """The image built for a cache key, if it is still there."""
        return self.follow(os.path.join(self.keys, key))

    def follow(self, link: str) -> int | None:
        """The image a keys/ or map/ symlink points to, None if missing or dangling."""
        try:
            target = os.readlink(link)
        except OSError:
            return None
        name = os.path.basename(target)
        if not (name.isascii() and name.isdigit()):
            return None  # not made by plash (fsck reports it)
        image = int(name)
        try:
            self.image_dir(image)
        except NoImage:
            return None
        return image

    def resolve(self, text: str) -> int:
        """An image argument as an existing image's id: a decimal id, or a map name (one readlink of map/NAME).

        Digits are always an id (a map named "5" is not looked up for "5").
        A word that cannot be a map name ("../x", "-1", "") gets the id's error.
        """
        if not valid_map_name(text) or (text.isascii() and text.isdigit()):
            image = parse_image_id(text)
            self.image_dir(image)
            return image
        found = self.follow(os.path.join(self.maps, text))
        if found is None:
            raise NoImage(f"no image or name: {text}")
        return found

    def check_map_name(self, name: str) -> None:
        if not valid_map_name(name):
            raise PlashError(
                f"invalid map name: {name!r}",
                hint="use letters, digits and _ . @ + - (not starting with . or -)",
            )

    def map_get(self, name: str) -> int | None:
        self.check_map_name(name)
        return self.follow(os.path.join(self.maps, name))

    def map_set(self, name: str, image: int) -> None:
        self.check_map_name(name)
        if name.isdigit():  # an image argument of digits is always an id: such a name could never be used
            raise PlashError(f"invalid map name: {name!r} (digits alone are an image id)",
                             hint="use a name with a letter in it")
        self.image_dir(image)
        self.replace_link(f"../index/{image}", os.path.join(self.maps, name))

    def map_del(self, name: str) -> bool:
        self.check_map_name(name)
        try:
            os.unlink(os.path.join(self.maps, name))
        except FileNotFoundError:
            return False
        return True

    # -- removal (in plash.store.removal) ------------------------------

    def detach(self, image: int, at_most: int | None = None) -> tuple[str, list[int]]:
        """Unlink an image and its descendants from the tree and index; return the trash dir and their ids."""
        from plash.store.removal import detach

        return detach(self, image, at_most)

    def empty_into_trash(self) -> str:
        """Move every entry of the store but its lock file into a new purge-* dir; return it."""
        from plash.store.removal import empty_into_trash

        return empty_into_trash(self)

    def clean_plan(self) -> tuple[list[str], list[str]]:
        """Drop dangling links; return the entries removed and the dirs to delete (left by crashes)."""
        from plash.store.removal import clean_plan

        return clean_plan(self)


def open_store(path: str | None = None, create: bool = True) -> Store:
    """The store at path ($PLASH_DATA by default).

    With create (for commands that write), its skeleton is made when missing.
    Without (for queries), nothing is created: a store dir that does not
    exist is a StoreError, and one without a skeleton reads as empty.
    """
    from plash.config import data_dir

    store = Store(path or data_dir())
    if create:
        return store.ensure()
    if not store.exists():
        raise StoreError(f"no store at {store.path} (nothing has been built or imported yet)")
    return store.private()


class _Lock:
    """flock on the store's lock file, as a context manager."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
