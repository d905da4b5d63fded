"""The mount plan of a container: what its root is made of, the ordered mount operations, applying them.

`plan()` is pure: it turns a RootSpec into an ordered list of MountOp.
`apply()` executes the list in the caller's (fresh, private) mount
namespace. Host binds land on mount points resolved strictly inside the
image (`open_in_root`), so an image's symlinks never lead a bind out of it.
"""

from __future__ import annotations

import os
import stat

from plash.errors import LaunchError
from plash.launch import syscalls
from plash.store.layout import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar, Never

    from plash.store.staging import Staging

class RootSpec:
    """What a container's root file system is made of: the input of the mount plan.

    Plain classes rather than dataclasses: `plash run` must start fast, and
    importing dataclasses alone costs several milliseconds.
    """

    def __init__(
        self,
        store: str,
        layer_dirs: tuple[str, ...],  # image chain, topmost first, relative to store/index
        binds: tuple[tuple[str, str], ...] = (),  # (host source, path inside)
        staging: Staging | None = None,  # keep changes in the staging's upper dir (create, build)
        readonly: bool = False,
        scratch: bool = False,  # with staging: the changes land on a tmpfs first (a store on overlayfs)
    ) -> None:
        self.store = store
        self.layer_dirs = layer_dirs
        self.binds = binds
        self.staging = staging
        self.readonly = readonly
        self.scratch = scratch


class MountOp:
    """One step of setting up a container's root; `why` says what it is for.

    The kinds are a closed set, one class each: Tmpfs, MakeDirs, Overlay and
    Bind (AnyMountOp is their union, which lets mypy check that `apply`
    handles every one). `kind` names a kind in reprs and tests; code tells
    kinds apart by class, never by that name.
    """

    __slots__ = ("target", "why")
    kind: ClassVar[str] = ""

    def __init__(self, target: str, why: str = "") -> None:
        self.target = target
        self.why = why

    def __repr__(self) -> str:
        names = [n for cls in reversed(type(self).__mro__) for n in getattr(cls, "__slots__", ()) if n != "why"]
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"


class Tmpfs(MountOp):
    """A tmpfs at target (an absolute host path), private to the mount namespace."""

    __slots__ = ()
    kind = "tmpfs"


class MakeDirs(MountOp):
    """Directories made under target (names relative to it), on a file system mounted just before."""

    __slots__ = ("names",)
    kind = "mkdirs"

    def __init__(self, target: str, names: tuple[str, ...], why: str = "") -> None:
        super().__init__(target, why)
        self.names = names


class Overlay(MountOp):
    """The overlay mount of the image at target; its options' relative paths resolve from cwd."""

    __slots__ = ("cwd", "options", "readonly")
    kind = "overlay"

    def __init__(self, target: str, options: str, cwd: str, readonly: bool = False, why: str = "") -> None:
        super().__init__(target, why)
        self.options = options
        self.cwd = cwd
        self.readonly = readonly


class Bind(MountOp):
    """A recursive bind of the host path source at target, a path inside the root mounted before.

    With create, a missing mount point is made (in the root's upper dir);
    without (a read-only root), a bind whose mount point is missing is left out.
    """

    __slots__ = ("create", "source")
    kind = "bind"

    def __init__(self, target: str, source: str, create: bool = True, why: str = "") -> None:
        super().__init__(target, why)
        self.source = source
        self.create = create


if TYPE_CHECKING:
    AnyMountOp = Tmpfs | MakeDirs | Overlay | Bind


def root_dir(spec: RootSpec) -> str:
    if spec.staging:
        return spec.staging.mnt
    return Store(spec.store).run_root


def overlay_options(spec: RootSpec) -> str:
    """Overlay options with paths relative to store/index (mount(2) resolves them from cwd).

    Relative paths keep the option string short (a 200-layer image fits the
    one-page limit) and immune to ':' or ',' in $PLASH_DATA.
    """
    lowers = [f"{d}/root" for d in spec.layer_dirs] + ["0/root"]
    opts = ["lowerdir=" + ":".join(lowers)]
    if not spec.readonly:
        store = Store(spec.store)
        if spec.staging and spec.scratch:
            upper, work = scratch_dirs(spec.staging)
        elif spec.staging:
            upper, work = spec.staging.upper, spec.staging.work
        else:
            upper, work = store.run_upper, store.run_work
        opts += [f"upperdir={os.path.relpath(upper, store.index)}", f"workdir={os.path.relpath(work, store.index)}"]
    # userxattr: overlay metadata lives in user.overlay.* for root and non-root alike,
    # so layers mean the same whoever made them.
    opts.append("userxattr")
    return ",".join(opts)


def scratch_dirs(staging: Staging) -> tuple[str, str]:
    """The upper and work dirs on the staging's scratch tmpfs."""
    return os.path.join(staging.scratch, "upper"), os.path.join(staging.scratch, "work")


_overlay_stores: dict[str, bool] = {}


def on_overlayfs(path: str) -> bool:
    """Whether path (a store) is on overlayfs, where the kernel refuses an overlay's upper dir."""
    if path not in _overlay_stores:
        try:
            _overlay_stores[path] = syscalls.fs_type(path) == syscalls.OVERLAYFS_MAGIC
        except OSError:
            _overlay_stores[path] = False
    return _overlay_stores[path]


def plan(spec: RootSpec) -> list[AnyMountOp]:
    """The ordered mount operations for a container (no I/O)."""
    ops: list[AnyMountOp] = []
    store = Store(spec.store)
    if spec.staging and spec.scratch:
        ops.append(Tmpfs(spec.staging.scratch, why="the step's upper dir, off the store's overlayfs"))
        ops.append(MakeDirs(spec.staging.scratch, ("upper", "work"), why="the overlay's upper and work dirs"))
    if not spec.staging:
        ops.append(Tmpfs(store.mnt, why="throw-away upper dir, freed with the namespace"))
        names = tuple(os.path.relpath(d, store.mnt) for d in (store.run_upper, store.run_work, store.run_root))
        ops.append(MakeDirs(store.mnt, names, why="the overlay's upper, work and mount dirs, on that tmpfs"))
    ops.append(Overlay(root_dir(spec), overlay_options(spec), cwd=store.index, readonly=spec.readonly,
                       why="the image's layers (lower) plus a writable upper dir"))
    ops.extend(Bind(dst, src, create=not spec.readonly, why="host path shared with the container")
               for src, dst in spec.binds)
    return ops


class Refused(Exception):
    """A mount point the image placed where plash must not follow (through a symlink into a bind)."""


def open_in_root(root_fd: int, path: str, create: str | None, created: list[str]) -> tuple[int, str]:
    """An O_PATH fd on `path` inside the root that root_fd opens, resolved as if chrooted.

    Symlinks are followed one component at a time relative to the root (an
    absolute target restarts at it, `..` stops at it), so the walk never
    leaves the root. It may enter a host bind only by its own name: a symlink
    that leads into a different file system than the root's (a bind made
    before) raises Refused. Missing components are created (directories, and
    for the last one a file or directory as `create` says), only on the
    root's own file system (the container's throw-away upper dir, or the
    build's layer), and listed in `created` as paths inside the root.
    Returns the fd (for mount(2) through /proc/self/fd) and the inside path.
    """
    root_dev = os.fstat(root_fd).st_dev
    parts = [p for p in path.split("/") if p]
    stack: list[tuple[int, str]] = [(os.dup(root_fd), "")]  # open dirs from the root down, with inside paths
    hops = 0
    via_symlink = False
    try:
        while parts:
            name = parts.pop(0)
            cur_fd, cur = stack[-1]
            if name == ".":
                continue
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop()[0])
                continue
            nxt = f"{cur}/{name}"
            try:
                st = os.stat(name, dir_fd=cur_fd, follow_symlinks=False)
            except FileNotFoundError:
                if create is None:
                    raise
                if os.fstat(cur_fd).st_dev != root_dev:
                    raise Refused(f"{path}: {cur or '/'} is not the image's own") from None
                if parts or create == "dir":
                    os.mkdir(name, 0o755, dir_fd=cur_fd)
                else:
                    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     0o644, dir_fd=cur_fd))
                created.append(nxt)
                st = os.stat(name, dir_fd=cur_fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > 40:
                    raise LaunchError(f"too many symlinks resolving {path} in the image")
                target = os.readlink(name, dir_fd=cur_fd)
                parts = [p for p in target.split("/") if p] + parts
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop()[0])
                via_symlink = True
                continue
            if parts and not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(f"{nxt} is not a directory")
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur_fd)
            stack.append((fd, nxt))
            if via_symlink and stat.S_ISDIR(st.st_mode) and st.st_dev != root_dev:
                raise Refused(f"{path}: a symlink of the image leads into the host's {nxt}")
        fd, inside = stack.pop()  # no longer in the stack: the caller closes it
        return fd, inside or "/"
    finally:
        for fd, _ in stack:
            os.close(fd)


def resolve_in_root(root: str, path: str, create: str | None, created: list[str]) -> str:
    """The host path of `path` inside root (see open_in_root), for callers that want a path."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd, inside = open_in_root(root_fd, path, create, created)
        os.close(fd)
    finally:
        os.close(root_fd)
    return root.rstrip("/") + ("" if inside == "/" else inside)


def apply(ops: list[AnyMountOp]) -> list[str]:
    """Carry out the mount plan; return paths created as mount points (for cleanup)."""
    created: list[str] = []
    root_fd = -1  # the root, once mounted: binds are placed relative to it
    try:
        for op in ops:
            if isinstance(op, Tmpfs):
                # A tmpfs private to this namespace: nothing is left on disk after the run.
                mount("tmpfs", op.target, "tmpfs", syscalls.MS_NOSUID, "mode=0755",
                      failed=f"cannot mount a tmpfs on {op.target}")
            elif isinstance(op, MakeDirs):
                for name in op.names:
                    os.mkdir(os.path.join(op.target, name), 0o755)
            elif isinstance(op, Overlay):
                # Relative lower/upper paths are resolved from op.cwd (store/index) by mount(2).
                os.chdir(op.cwd)
                flags = syscalls.MS_RDONLY if op.readonly else 0
                mount("overlay", op.target, "overlay", flags, op.options, failed="cannot mount the image")
                root_fd = os.open(op.target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            elif isinstance(op, Bind):
                if root_fd < 0:
                    raise AssertionError(f"{op!r} comes before the root is mounted")
                bind(op, root_fd, created)
            else:
                unhandled: Never = op  # mypy: every kind of the closed set is handled above
                raise AssertionError(f"unknown mount operation {unhandled!r}")
    finally:
        if root_fd >= 0:
            os.close(root_fd)
    return created


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None,
          failed: str = "cannot mount") -> None:
    """syscalls.mount, a refusal raised as LaunchError: `FAILED: strerror`, with the errno's hint."""
    try:
        syscalls.mount(source, target, fstype, flags, data)
    except OSError as e:
        from plash.launch.refusals import mount_hint  # only on a failure: not on plash run's path

        raise LaunchError(f"{failed}: {e.strerror}", hint=mount_hint(e.errno, fstype)) from e


def bind(op: Bind, root_fd: int, created: list[str]) -> None:
    """Bind a host path at a mount point resolved strictly inside the image (see open_in_root)."""
    if not os.path.exists(op.source):
        return  # a path missing on the host (or a dangling symlink) is skipped
    kind = "dir" if os.path.isdir(op.source) else "file"
    try:
        fd, _ = open_in_root(root_fd, op.target, kind if op.create else None, created)
    except (FileNotFoundError, NotADirectoryError, Refused):
        return  # not there (read-only), or placed by the image where plash will not follow
    except OSError as e:
        if not op.create:
            return
        raise LaunchError(f"cannot create mount point {op.target}: {e.strerror}") from e
    try:
        # Through the fd: the mount lands on the very inode resolved above,
        # whatever was bound meanwhile on the way to it.
        mount(op.source, f"/proc/self/fd/{fd}", None, syscalls.MS_BIND | syscalls.MS_REC,
              failed=f"cannot bind {op.source} to {op.target}")
    finally:
        os.close(fd)
