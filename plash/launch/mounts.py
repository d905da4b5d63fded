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
    from plash.store.staging import Staging

OVERLAY_HINT = (
    "the kernel refused the overlay mount; plash needs Linux >= 5.11 with overlayfs "
    "(inside a container, the store must not itself be on overlayfs: set PLASH_DATA to another file system)"
)


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
    ) -> None:
        self.store = store
        self.layer_dirs = layer_dirs
        self.binds = binds
        self.staging = staging
        self.readonly = readonly


class MountOp:
    """One step of setting up a container's root; `why` says what it is for."""

    __slots__ = ("kind", "target", "source", "options", "readonly", "why")

    def __init__(self, kind: str, target: str, source: str = "", options: str = "",
                 readonly: bool = False, why: str = "") -> None:
        self.kind = kind  # "tmpfs", "mkdirs", "overlay" or "bind"
        self.target = target  # absolute host path, or path inside the root for "bind"
        self.source = source
        self.options = options
        self.readonly = readonly
        self.why = why

    def __repr__(self) -> str:
        return f"MountOp({self.kind!r}, {self.target!r}, source={self.source!r}, options={self.options!r})"


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
        upper, work = (spec.staging.upper, spec.staging.work) if spec.staging else (store.run_upper, store.run_work)
        opts += [f"upperdir={os.path.relpath(upper, store.index)}", f"workdir={os.path.relpath(work, store.index)}"]
    # userxattr: overlay metadata lives in user.overlay.* for root and non-root alike,
    # so layers mean the same whoever made them.
    opts.append("userxattr")
    return ",".join(opts)


def plan(spec: RootSpec) -> list[MountOp]:
    """The ordered mount operations for a container (no I/O)."""
    ops: list[MountOp] = []
    store = Store(spec.store)
    root = root_dir(spec)
    if not spec.staging:
        ops.append(MountOp("tmpfs", store.mnt, why="throw-away upper dir, freed with the namespace"))
        names = " ".join(os.path.relpath(d, store.mnt) for d in (store.run_upper, store.run_work, store.run_root))
        ops.append(MountOp("mkdirs", store.mnt, options=names))
    ops.append(
        MountOp(
            "overlay",
            root,
            options=overlay_options(spec),
            readonly=spec.readonly,
            why="the image's layers (lower) plus a writable upper dir",
        )
    )
    for src, dst in spec.binds:
        ops.append(MountOp("bind", dst, source=src, why="host path shared with the container"))
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


def apply(spec: RootSpec, ops: list[MountOp]) -> list[str]:
    """Carry out the mount plan; return paths created as mount points (for cleanup)."""
    created: list[str] = []
    root = root_dir(spec)
    root_fd = -1
    try:
        for op in ops:
            if op.kind == "tmpfs":
                # A tmpfs private to this namespace: nothing is left on disk after the run.
                syscalls.mount("tmpfs", op.target, "tmpfs", syscalls.MS_NOSUID, "mode=0755")
            elif op.kind == "mkdirs":
                for d in op.options.split():
                    os.mkdir(os.path.join(op.target, d), 0o755)
            elif op.kind == "overlay":
                # Relative lower/upper paths are resolved from store/index by mount(2).
                os.chdir(Store(spec.store).index)
                flags = syscalls.MS_RDONLY if op.readonly else 0
                try:
                    syscalls.mount("overlay", op.target, "overlay", flags, op.options)
                except OSError as e:
                    raise LaunchError(f"cannot mount the image: {e.strerror}", hint=OVERLAY_HINT) from e
                root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            elif op.kind == "bind":
                bind(op, root_fd, spec.readonly, created)
    finally:
        if root_fd >= 0:
            os.close(root_fd)
    return created


def bind(op: MountOp, root_fd: int, readonly: bool, created: list[str]) -> None:
    """Bind a host path at a mount point resolved strictly inside the image (see open_in_root)."""
    if not os.path.exists(op.source):
        return  # a path missing on the host (or a dangling symlink) is skipped
    kind = "dir" if os.path.isdir(op.source) else "file"
    try:
        fd, _ = open_in_root(root_fd, op.target, None if readonly else kind, created)
    except (FileNotFoundError, NotADirectoryError, Refused):
        return  # not there (read-only), or placed by the image where plash will not follow
    except OSError as e:
        if readonly:
            return
        raise LaunchError(f"cannot create mount point {op.target}: {e.strerror}") from e
    try:
        # Through the fd: the mount lands on the very inode resolved above,
        # whatever was bound meanwhile on the way to it.
        syscalls.mount(op.source, f"/proc/self/fd/{fd}", None, syscalls.MS_BIND | syscalls.MS_REC)
    except OSError as e:
        raise LaunchError(f"cannot bind {op.source} to {op.target}: {e.strerror}") from e
    finally:
        os.close(fd)
