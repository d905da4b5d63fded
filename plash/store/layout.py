"""All paths of the store, and the atomic operations that change it.

    $PLASH_DATA/
      layer/0/                 image 0 (the empty root); children nest inside
      layer/0/1/               image 1: root/ (its layer), meta (run settings), children
      layer/0/1/5/             image 5, child of 1
      index/<id> -> ../layer/0/1/5      relative symlinks (the store can move)
      map/<name> -> ../index/<id>
      keys/<sha256> -> ../index/<id>   build cache: layer key -> image
      locks/<key>              flock per key while a layer or import is made (then unlinked)
      tmp/<pid>.<start>.<rand>/ staging dirs; the name records the owner
      mnt/                     fixed mount point, used only in private mount ns
      next_id                  the next id to hand out
      lock                     flock: held briefly to publish, delete or create the skeleton
      purge-<pid>.<start>.<rand>/  what `purge` moved aside and is deleting (clean reclaims it)

Publishing is: stage in tmp/, then under the lock allocate an id, rename the
staged dir into place and add the index symlink. A crash between the two
leaves an unindexed dir, which `clean` removes (under the same lock), so a
half-made image is never visible.

`purge` empties the store in place: under the lock it moves every entry
but the lock file into a purge-* dir, locks/ (the mark of a complete
skeleton) first and the index right after, then deletes that dir. A purge
killed half-way leaves either a store with all its images or an empty one;
the next write rebuilds the skeleton and `clean` reclaims the purge-* dir.

Queries open the store with `open_store(create=False)`: they never create it.

Only the standard library is imported: this runs on `plash run`'s path.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time

from plash.errors import NoImage, PlashError, StoreError

TYPE_CHECKING = False  # typing is not imported at run time: this is on plash run's path
if TYPE_CHECKING:
    from typing import Callable

TRASH_PREFIX = "purge-"

# Moved first by purge: without locks/ the skeleton counts as incomplete (the
# next write rebuilds it), without index/ no image is visible any more.
_PURGE_FIRST = ("locks", "index", "map", "keys")

_MAP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@+-")

# Keys of an image's meta whose values accumulate from parent to child; the
# others are replaced by the child's value.
ACCUMULATING = frozenset(("env", "env_prefix", "mount", "oci_env"))


# The file in each image dir whose shared flock marks the image in use.
INUSE = "inuse"

# The deepest chain of layers an image may have (image 0 not counted): the
# overlay mount takes all of them as lower dirs in one page of options, and
# the kernel stacks at most 500. Docker's own limit is 127.
MAX_LAYERS = 250


def parse_image_id(text: str) -> int:
    """An image argument as a positive id, or NoImage saying what is wrong."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18 or int(text) == 0:
        raise NoImage(f"image must be a positive number, got: {text!r}")
    return int(text)


def _token() -> str:
    return os.urandom(4).hex()


def encode_meta(meta: dict[str, list[str]]) -> str:
    """Meta as lines of `key<TAB>value`; a key with several values has several lines."""
    out = []
    for key, values in meta.items():
        for v in values:
            v = v.replace("%", "%25").replace("\n", "%0A").replace("\t", "%09")
            out.append(f"{key}\t{v}\n")
    return "".join(out)


def decode_meta(text: str) -> dict[str, list[str]]:
    meta: dict[str, list[str]] = {}
    for line in text.split("\n"):
        key, sep, v = line.partition("\t")
        if sep:
            v = v.replace("%09", "\t").replace("%0A", "\n").replace("%25", "%")
            meta.setdefault(key, []).append(v)
    return meta


def merge_meta(parent: dict[str, list[str]], own: dict[str, list[str]]) -> dict[str, list[str]]:
    """An image's effective meta: its parent's, with its own accumulated or replacing."""
    merged = {k: list(v) for k, v in parent.items() if k != "created"}
    for k, v in own.items():
        if k in ACCUMULATING:
            merged[k] = merged.get(k, []) + [x for x in v if x not in merged.get(k, [])]
        else:
            merged[k] = list(v)
    return merged


def _proc_start_time(pid: int) -> str | None:
    """The start time of a process (field 22 of /proc/PID/stat), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None  # a zombie has finished: its temp dirs are reclaimable
    return fields[19].decode()


def owner_alive(tmp_name: str) -> bool:
    """Whether the process recorded in a temp dir's name still runs."""
    parts = tmp_name.split(".")
    if len(parts) < 3 or not parts[0].isdigit():
        return False
    return _proc_start_time(int(parts[0])) == parts[1]


def rmtree(path: str) -> None:
    """Remove a tree, making read-only directories writable on the way.

    Iterative, one open directory at a time (it climbs back through ".."):
    no recursion limit and no descriptor limit, however deep the tree is (a
    hostile tarball may nest thousands of levels), so the store always stays
    cleanable.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    cur = _open_fixing(path, flags, None)
    stack: list[tuple[str, list[str] | None]] = [(os.path.basename(os.path.normpath(path)), None)]
    try:
        while stack:
            name, pending = stack[-1]
            if pending is None:
                pending = []
                for entry in _listdir_fixing(cur):
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.name)
                        else:
                            _fixing(cur, os.unlink, entry.name)
                    except FileNotFoundError:
                        pass
                stack[-1] = (name, pending)
            if pending:
                sub = pending.pop()
                try:
                    nxt = _open_fixing(sub, flags, cur)
                except FileNotFoundError:
                    continue
                os.close(cur)
                cur = nxt
                stack.append((sub, None))
                continue
            up = os.open("..", flags & ~os.O_NOFOLLOW, dir_fd=cur)
            os.close(cur)
            cur = up
            stack.pop()
            try:
                _fixing(cur, os.rmdir, name)
            except FileNotFoundError:
                pass
    finally:
        os.close(cur)


def _fixing(dir_fd: int, op: Callable[..., None], name: str) -> None:
    """op(name, dir_fd=dir_fd) (an unlink or rmdir); on a permission error make the dir writable and retry."""
    try:
        op(name, dir_fd=dir_fd)
    except PermissionError:
        os.fchmod(dir_fd, stat.S_IRWXU)
        op(name, dir_fd=dir_fd)


def _open_fixing(name: str, flags: int, dir_fd: int | None) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except PermissionError:
        if dir_fd is not None:
            os.fchmod(dir_fd, stat.S_IRWXU)  # no search permission on the parent, perhaps
        os.chmod(name, stat.S_IRWXU, dir_fd=dir_fd)
        return os.open(name, flags, dir_fd=dir_fd)


def _listdir_fixing(fd: int) -> list[os.DirEntry]:
    try:
        return list(os.scandir(fd))
    except PermissionError:
        os.fchmod(fd, stat.S_IRWXU)
        return list(os.scandir(fd))


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

    def private(self) -> "Store":
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

    def ensure(self) -> "Store":
        """Create the store's skeleton if it is missing (idempotent, race-free).

        The store dir itself is made private (0700): imported setuid files
        live in it. The skeleton is made under the lock, so it never
        interleaves with a purge moving it away.
        """
        if os.path.isdir(self.locks):  # made last: the skeleton is complete
            return self.private()
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)  # the mode is for the last component only
            self.private()
            with self.locked():
                if os.path.isdir(self.locks):
                    return self
                for d in (self.index, self.maps, self.keys, self.tmp, self.mnt):
                    os.makedirs(d, exist_ok=True)
                os.makedirs(os.path.join(self.root0, "root"), exist_ok=True)
                if not os.path.lexists(os.path.join(self.index, "0")):
                    self._symlink_atomic("../layer/0", os.path.join(self.index, "0"))
                os.makedirs(self.locks, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the store at {self.path}: {e.strerror}") from e
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
        path = os.path.join(self.image_dir(image), INUSE)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            # look again: `rm` may have moved the image away between the open and the lock
            st, now = os.fstat(fd), os.stat(os.path.join(self.image_dir(image), INUSE))
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
        fd = os.open(os.path.join(staged, INUSE), os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

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

    def locked(self) -> "_Lock":
        """Hold the store's lock (a short critical section across processes)."""
        return _Lock(self.lock_file)

    def mkdtemp(self, kind: str = "tmp") -> str:
        """A new staging dir in tmp/, named after this process so clean knows its owner."""
        pid = os.getpid()
        name = f"{pid}.{_proc_start_time(pid)}.{kind}-{_token()}"
        path = os.path.join(self.tmp, name)
        try:
            os.mkdir(path, 0o755)
        except OSError as e:
            raise StoreError(f"cannot create a temp dir in {self.tmp}: {e.strerror}") from e
        return path

    def _symlink_atomic(self, target: str, link: str) -> None:
        tmp = f"{link}.{os.getpid()}.{_token()}.new"
        os.symlink(target, tmp)
        os.replace(tmp, link)

    # -- publishing ---------------------------------------------------

    def _allocate_id(self) -> int:
        """The next id (call with the lock held)."""
        counter = os.path.join(self.path, "next_id")
        try:
            with open(counter) as f:
                n = int(f.read().strip() or "1")
        except FileNotFoundError:
            n = 1
        # Never hand out an id that is still indexed (a counter lost to a crash).
        while os.path.lexists(os.path.join(self.index, str(n))):
            n += 1
        tmp = f"{counter}.{os.getpid()}.new"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600), "w") as f:
            f.write(f"{n + 1}\n")
        os.replace(tmp, counter)
        return n

    def publish(self, staged: str, parent: int, meta: dict[str, list[str]] | None = None,
                key: str | None = None) -> int:
        """Turn a staged image dir (with root/) into a new child of parent; return its id.

        The staged dir is renamed, so it must live inside this store. Its meta
        is stored merged with the parent's, so running needs one read. `key`
        is the image's content identity (the build cache key); without one it
        gets a random identity, and only a key given here is indexed in keys/.
        """
        merged = merge_meta(self.meta(parent), meta or {})
        merged["created"] = [repr(time.time())]
        merged["key"] = [key or "random-" + os.urandom(16).hex()]
        with open(os.path.join(staged, "meta"), "w") as f:
            f.write(encode_meta(merged))
        # made here, so that holding the image (see hold) changes nothing in the store
        os.close(os.open(os.path.join(staged, INUSE), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        with self.locked():
            parent_dir = self.image_dir(parent) if parent else self.root0
            depth = len(self.chain(parent)) if parent else 1  # of the new image
            if depth > MAX_LAYERS:
                raise StoreError(f"an image has at most {MAX_LAYERS} layers; image {parent} has {depth - 1} already",
                                 hint="join build steps into fewer layers")
            n = self._allocate_id()
            dest = os.path.join(parent_dir, str(n))
            try:
                os.rename(staged, dest)
            except OSError as e:
                raise StoreError(f"cannot publish image {n}: {e.strerror}") from e
            try:
                rel = os.path.relpath(dest, self.index)
                self._symlink_atomic(rel, os.path.join(self.index, str(n)))
                if key:
                    self._symlink_atomic(f"../index/{n}", os.path.join(self.keys, key))
            except OSError as e:
                # undo: back into the staging dir, which the caller discards
                for link in (os.path.join(self.index, str(n)),):
                    if os.path.islink(link):
                        os.unlink(link)
                os.rename(dest, staged)
                raise StoreError(f"cannot publish image {n}: {e.strerror}") from e
        return n

    def key_of(self, image: int) -> str:
        """An image's content identity (random for images made by `create` or imports)."""
        keys = self.meta(image).get("key")
        return keys[0] if keys else f"image-{image}"

    def record_key(self, key: str, image: int) -> None:
        """Point a further cache key at an existing image (an import's source key, say)."""
        self.image_dir(image)
        self._symlink_atomic(f"../index/{image}", os.path.join(self.keys, key))

    def lookup_key(self, key: str) -> int | None:
        """The image built for a cache key, if it is still there."""
        return self._follow(os.path.join(self.keys, key))

    def _follow(self, link: str) -> int | None:
        """The image a keys/ or map/ symlink points to, None if missing or dangling."""
        try:
            target = os.readlink(link)
        except OSError:
            return None
        image = int(os.path.basename(target))
        try:
            self.image_dir(image)
        except NoImage:
            return None
        return image

    # -- maps -----------------------------------------------------------

    def check_map_name(self, name: str) -> None:
        if not name or name[0] in ".-" or not set(name) <= _MAP_CHARS:
            raise PlashError(
                f"invalid map name: {name!r}",
                hint="use letters, digits and _ . @ + - (not starting with . or -)",
            )

    def map_get(self, name: str) -> int | None:
        self.check_map_name(name)
        return self._follow(os.path.join(self.maps, name))

    def map_set(self, name: str, image: int) -> None:
        self.check_map_name(name)
        self.image_dir(image)
        self._symlink_atomic(f"../index/{image}", os.path.join(self.maps, name))

    def map_del(self, name: str) -> bool:
        self.check_map_name(name)
        try:
            os.unlink(os.path.join(self.maps, name))
        except FileNotFoundError:
            return False
        return True

    # -- removal ----------------------------------------------------------

    def detach(self, image: int, at_most: int | None = None) -> tuple[str, list[int]]:
        """Unlink an image and its descendants from the tree and index.

        Returns the temp path now holding their files (to be deleted by the
        caller, possibly inside the user namespace) and the removed ids.
        With at_most, an image with more descendants than that (counting
        itself) is left alone: PlashError.
        """
        with self.locked():
            src = self.image_dir(image)
            gone = self.descendants(image)
            if at_most is not None and len(gone) > at_most:
                raise PlashError(f"image {image} has {len(gone)} image(s) with its descendants, more than {at_most}")
            held = [self._try_exclusive(i) for i in gone]
            try:
                busy = [i for i, fd in zip(gone, held, strict=True) if fd is None]
                if busy:
                    raise PlashError(f"image {busy[0]} is in use by a running container or build",
                                     hint="wait for it to end, then try again")
                trash = self.mkdtemp("rm")
                os.rename(src, os.path.join(trash, "tree"))
            finally:
                for fd in held:
                    if fd is not None:
                        os.close(fd)
            for i in gone:
                try:
                    os.unlink(os.path.join(self.index, str(i)))
                except FileNotFoundError:
                    pass
            self._drop_dangling(self.maps)
            self._drop_dangling(self.keys)
        return trash, gone

    def _try_exclusive(self, image: int) -> int | None:
        """An fd holding the exclusive lock of an image (see hold), None if a container or build holds it."""
        fd = os.open(os.path.join(self.image_dir(image), INUSE), os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @staticmethod
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
        try:
            os.unlink(path)  # waiters that opened it see another inode in place and retry
        except FileNotFoundError:
            pass
        os.close(fd)
        return True

    def _drop_dangling(self, directory: str) -> list[str]:
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

    def empty_into_trash(self) -> str:
        """Under the lock, move every entry of the store but its lock file into a new purge-* dir; return it.

        The store dir itself stays (it may be a mount point, or its parent
        read-only) with its mode. The lock file stays too: processes waiting
        for it must keep meeting each other on one inode.
        """
        pid = os.getpid()
        trash = os.path.join(self.path, f"{TRASH_PREFIX}{pid}.{_proc_start_time(pid)}.{_token()}")
        with self.locked():
            try:
                os.mkdir(trash, 0o700)
                names = [n for n in os.listdir(self.path) if n != "lock" and os.path.join(self.path, n) != trash
                         and not (n.startswith(TRASH_PREFIX) and owner_alive(n[len(TRASH_PREFIX):]))]
                names.sort(key=lambda n: (_PURGE_FIRST.index(n) if n in _PURGE_FIRST else len(_PURGE_FIRST), n))
                for name in names:
                    os.rename(os.path.join(self.path, name), os.path.join(trash, name))
            except OSError as e:
                raise StoreError(f"cannot purge {self.path}: {e.strerror}") from e
        return trash

    def clean_plan(self) -> tuple[list[str], list[str]]:
        """Under the lock: drop dangling links; list reclaimable temp and orphan dirs.

        Returns (removed entry names, directories to delete). Orphans (image
        dirs without an index entry, left by a crash while publishing) are
        moved into a fresh temp dir so deleting them later races with nothing.
        """
        removed: list[str] = []
        trash_dirs: list[str] = []
        with self.locked():
            for d, label in ((self.index, "index"), (self.maps, "map"), (self.keys, "keys")):
                removed += [f"{label}/{n}" for n in self._drop_dangling(d)]
            indexed = set()
            for name in os.listdir(self.index):
                if name.isdigit():
                    try:
                        indexed.add(os.path.realpath(self.image_dir(int(name))))
                    except NoImage:
                        pass
            orphans = []
            for dirpath, dirnames, _ in os.walk(self.root0):
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
                trash = self.mkdtemp("orphans")
                for i, p in enumerate(orphans):
                    os.rename(p, os.path.join(trash, str(i)))
                    removed.append(os.path.relpath(p, self.path))
                trash_dirs.append(trash)
            for name in os.listdir(self.locks) if os.path.isdir(self.locks) else []:
                if self._drop_stale_lock(os.path.join(self.locks, name)):
                    removed.append(f"locks/{name}")
            for name in os.listdir(self.tmp):
                p = os.path.join(self.tmp, name)
                if p in trash_dirs:
                    continue
                if not owner_alive(name):
                    trash_dirs.append(p)
                    removed.append(f"tmp/{name}")
            for name in os.listdir(self.path):  # what a killed purge had moved aside
                if name.startswith(TRASH_PREFIX) and not owner_alive(name[len(TRASH_PREFIX):]):
                    trash_dirs.append(os.path.join(self.path, name))
                    removed.append(name)
        return removed, trash_dirs


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
