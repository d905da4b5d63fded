"""Staging dirs: where a new layer is made before it is published.

    tmp/<owner>.<kind>-<token>/
      img/         the image dir to be: publish renames it into layer/
      img/root/    the layer's files (the overlay upper dir of a container step)
      work/        overlayfs's work dir (container steps only)
      mnt/         the container's root mount point (container steps only)
      scratch/     a store on overlayfs only: a tmpfs with the step's upper and work dirs
                   (the kernel refuses them on overlayfs), copied into img/root/ after it
      residue      the mount points the launcher had to create, one per line
      step.json    a build step's spec for the launcher

A `Staging` is made (`Staging.new`), filled by a producer (a container
step, an unpacker), finished (`finish`: residue and work dir gone, so the
layer holds only what the command changed), published and discarded;
`with Staging.new(...) as st:` discards it on the way out, published or
not. Only this module knows the names inside a staging dir.
"""

from __future__ import annotations

import contextlib
import os
import stat

from plash.errors import PlashError
from plash.store.layout import Store
from plash.store.rmtree import rmtree

TYPE_CHECKING = False  # typing is not imported at run time: a step's launcher starts with this
if TYPE_CHECKING:
    from collections.abc import Callable

    Remover = Callable[[str], None]


class Staging:
    """One staging dir of a store; its inner paths are properties."""

    def __init__(self, store: Store, path: str, remove: Remover | None = None) -> None:
        self.store, self.path = store, path
        self.remove = remove or rmtree  # how to delete it when files of other ids may be inside
        self.published: int | None = None

    @classmethod
    def new(cls, store: Store, kind: str, container: bool = False, remove: Remover | None = None) -> Staging:
        """A fresh staging dir in the store's tmp/; container: with the work and mount dirs a step needs."""
        staging = cls(store, store.mkdtemp(kind), remove)
        os.makedirs(staging.upper)
        if container:
            os.mkdir(staging.work)
            os.mkdir(staging.mnt)
        return staging

    @classmethod
    def at(cls, path: str) -> Staging:
        """The staging dir at path, in the store it lies in (tmp/NAME of the store)."""
        return cls(Store(os.path.dirname(os.path.dirname(os.path.abspath(path)))), path)

    @property
    def img(self) -> str:
        return os.path.join(self.path, "img")

    @property
    def upper(self) -> str:
        return os.path.join(self.path, "img", "root")

    @property
    def work(self) -> str:
        return os.path.join(self.path, "work")

    @property
    def mnt(self) -> str:
        return os.path.join(self.path, "mnt")

    @property
    def scratch(self) -> str:
        """A tmpfs's mount point holding the overlay's upper and work dirs where the store is on overlayfs."""
        return os.path.join(self.path, "scratch")

    @property
    def residue(self) -> str:
        return os.path.join(self.path, "residue")

    @property
    def step_file(self) -> str:
        return os.path.join(self.path, "step.json")

    @property
    def finished(self) -> bool:
        """No work dir left: the layer is ready to publish."""
        return not os.path.lexists(self.work)

    def finish(self) -> None:
        """Remove the mount points the launcher created (and dirs copied up only for them) and the work dir.

        The work dir may hold files of the namespace's ids: call it where they can be deleted.
        """
        try:
            with open(self.residue) as f:
                created = [line for line in f.read().split("\n") if line]
        except FileNotFoundError:
            created = []
        remove_residue(self.upper, created)
        rmtree(self.work)

    def publish(self, parent: int, meta: dict[str, list[str]] | None = None, key: str | None = None) -> int:
        """Publish the finished layer as a new child of parent (see Store.publish); return its id."""
        self.published = self.store.publish(self.img, parent, meta, key)
        return self.published

    def discard_published(self) -> bool:
        """After publish only a few empty dirs and small files of ours are left: remove them; False if more is."""
        try:
            for name in os.listdir(self.path):
                p = os.path.join(self.path, name)
                if os.path.isdir(p) and not os.path.islink(p):
                    os.rmdir(p)
                else:
                    os.unlink(p)
            os.rmdir(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True

    def discard(self) -> None:
        """Delete the staging dir, published or not; what cannot be deleted now is left for `plash clean`."""
        if self.published is not None and self.discard_published():
            return
        with contextlib.suppress(OSError, PlashError):  # clean reclaims dirs whose owner is gone
            self.remove(self.path)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def remove_residue(upper: str, created: list[str]) -> None:
    """Remove mount points the launcher created, and dirs copied up only for them."""
    parents: set[str] = set()
    for rel in reversed(created):
        p = upper + rel
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(p)
            except OSError:
                continue
        elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
            os.unlink(p)
        else:
            continue
        parents.add(os.path.dirname(rel))
    for rel in sorted(parents, key=len, reverse=True):
        while rel not in ("", "/"):
            p = upper + rel
            try:
                if os.listdir(p) or is_opaque(p):
                    break
                os.rmdir(p)
            except OSError:
                break
            rel = os.path.dirname(rel)


def is_opaque(path: str) -> bool:
    for name in ("user.overlay.opaque", "trusted.overlay.opaque"):
        try:
            if os.getxattr(path, name, follow_symlinks=False):
                return True
        except OSError:
            pass
    return False
