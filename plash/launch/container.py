"""Start a container: a plan of mount operations, then apply it and exec.

`plan()` is pure: it turns a ContainerSpec into an ordered list of MountOp.
`apply()` executes the list inside fresh namespaces, and `exec_command()`
replaces this process with the container's command, so no Python parent is
left waiting: stdin, signals and the exit status are the command's own.
"""

from __future__ import annotations

import os
import stat
import sys

from plash import config, testhook
from plash.errors import LaunchError
from plash.launch import syscalls, userns
from plash.store.layout import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.store.staging import Staging

OVERLAY_HINT = (
    "the kernel refused the overlay mount; plash needs Linux >= 5.11 with overlayfs "
    "(inside a container, the store must not itself be on overlayfs: set PLASH_DATA to another file system)"
)


class MountOp:
    """One step of setting up a container's root; `why` says what it is for.

    Plain classes rather than dataclasses: `plash run` must start fast, and
    importing dataclasses alone costs several milliseconds.
    """

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


class ContainerSpec:
    """Everything needed to start a container process."""

    def __init__(
        self,
        store: str,
        layer_dirs: tuple[str, ...],  # image chain, topmost first, relative to store/index
        argv: tuple[str, ...],
        cwd: str = "/",
        env: tuple[tuple[str, str], ...] = (),
        binds: tuple[tuple[str, str], ...] = (),  # (host source, path inside)
        staging: Staging | None = None,  # keep changes in the staging's upper dir (create, build)
        readonly: bool = False,
        fallback_cwd: str = "/",  # where to start when the caller's cwd is not in the image
        supervise: int = 0,  # a pid: stay as the command's parent, kill its group when that pid is gone
        profile: bool = False,  # start argv from the image's /etc/profile environment
        assigned: tuple[tuple[str, str], ...] = (),  # NAME=value words of the command line (set last)
    ) -> None:
        self.store = store
        self.layer_dirs = layer_dirs
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.binds = binds
        self.staging = staging
        self.readonly = readonly
        self.fallback_cwd = fallback_cwd
        self.supervise = supervise
        self.profile = profile
        self.assigned = assigned


def root_dir(spec: ContainerSpec) -> str:
    if spec.staging:
        return spec.staging.mnt
    return Store(spec.store).run_root


def overlay_options(spec: ContainerSpec) -> str:
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


def plan(spec: ContainerSpec) -> list[MountOp]:
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


def apply(spec: ContainerSpec, ops: list[MountOp]) -> list[str]:
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


def container_env(
    names: list[str],
    prefixes: list[str],
    image_env: list[str],
    host: dict[str, str] | None = None,
    exports: bool = True,
) -> dict[str, str]:
    """The container's environment: image defaults plus the allowed host names (PLASH_EXPORT's with exports)."""
    host = dict(os.environ) if host is None else host
    env = {"PATH": config.DEFAULT_PATH}
    for item in image_env:  # KEY=VALUE defaults of the image (OCI config Env)
        k, sep, v = item.partition("=")
        if sep:
            env[k] = v
    allowed = list(config.PASSED_ENV) + (config.exported_names() if exports else []) + names
    for k in allowed:
        if k in host:
            env[k] = host[k]
    for p in prefixes:
        for k, v in host.items():
            if k.startswith(p):
                env[k] = v
    return env


_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")


def _is_assignment(word: str) -> bool:
    name, sep, _ = word.partition("=")
    return bool(sep and name and name[0] in _NAME_START and set(name) <= _NAME_CHARS)


def split_assignments(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Leading NAME=value words of a command, and the rest."""
    env: dict[str, str] = {}
    i = 0
    while i < len(argv) and _is_assignment(argv[i]):
        k, _, v = argv[i].partition("=")
        env[k] = v
        i += 1
    return env, argv[i:]


def login_shell(root: str) -> list[str]:
    """The image's login shell for root, as argv."""
    shell = "/bin/sh"
    try:
        with open(os.path.join(root, "etc/passwd")) as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 7 and parts[2] == "0" and parts[6]:
                    shell = parts[6]
                    break
    except OSError:
        pass
    if not os.path.exists(root + shell):
        shell = "/bin/sh"
    return [shell, "-l"]


def exec_command(argv: list[str], env: dict[str, str]) -> None:
    """Replace this process with argv; 127 with `<cmd>: command not found` if absent.

    The PATH search is done here rather than by os.execvpe, which imports
    `warnings` lazily: after chroot, the host's standard library is gone.
    """
    sys.stdout.flush()
    name = argv[0]
    if "/" in name:
        candidates = [name]
    else:
        path = env.get("PATH", config.DEFAULT_PATH)
        candidates = [os.path.join(d or ".", name) for d in path.split(":")]
    denied: OSError | None = None
    for cand in candidates:
        try:
            os.execve(cand, argv, env)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            denied = denied or e
    if denied is None:
        sys.stderr.write(f"{name}: command not found\n")
        os._exit(127)
    sys.stderr.write(f"{name}: {denied.strerror.lower() if denied.strerror else denied}\n")
    os._exit(126)


def hold_image(spec: ContainerSpec) -> None:
    """Mark the image in use (Store.hold) for as long as the exec'd command runs, before mounting it.

    The descriptor is inherited across exec on purpose: while any container
    (or build step) of an image runs, `rm`, `shrink` and `clean` leave it and
    its ancestors alone. It is on a regular file: it leads nowhere.
    """
    if not spec.layer_dirs:
        return
    Store(spec.store).hold(int(spec.layer_dirs[0]), inherit=True)


def start(spec: ContainerSpec) -> None:
    """Enter namespaces, mount, chroot and exec the command. Does not return."""
    hold_image(spec)  # before anything is mounted: from here on, rm leaves the image alone
    testhook.pause("container-held")
    try:
        userns.enter()
        ops = plan(spec)
        created = apply(spec, ops)
        if spec.staging:
            with open(spec.staging.residue, "w") as f:
                f.write("\n".join(created))
    except OSError as e:
        raise LaunchError(f"cannot set up the container: {e.strerror or e}") from e
    root = root_dir(spec)
    if spec.supervise:
        supervise(spec.supervise, root, spec.staging)
    argv = list(spec.argv) or login_shell(root)
    env = dict(spec.env)
    os.chroot(root)
    cwd = next((d for d in (spec.cwd, spec.fallback_cwd) if os.path.isdir(d)), "/")
    os.chdir(cwd)
    if "PWD" in env:
        env["PWD"] = cwd
    if spec.argv and spec.profile and os.path.isfile("/etc/profile") and os.access("/bin/sh", os.X_OK):
        argv = with_profile(argv, spec.assigned)
    else:
        env.update(spec.assigned)
    exec_command(argv, env)


# Runs a command the way the image's login shell would see it: /etc/profile
# first, then the NAME=value words of the command line, then the command
# (exec'd, so its status and signals are its own).
PROFILE_SCRIPT = """. /etc/profile
n=$1; shift
while [ "$n" -gt 0 ]; do export "$1"; shift; n=$((n - 1)); done
command -v "$1" >/dev/null 2>&1 || { printf '%s: command not found\\n' "$1" >&2; exit 127; }
exec "$@"
"""


def with_profile(argv: list[str], assigned: tuple[tuple[str, str], ...]) -> list[str]:
    """argv wrapped in /bin/sh so that it starts with the image's /etc/profile environment."""
    return ["/bin/sh", "-c", PROFILE_SCRIPT, "plash", str(len(assigned)), *(f"{k}={v}" for k, v in assigned), *argv]


def supervise(engine: int, root: str, staging: Staging | None) -> None:
    """Fork: the child returns (to exec the command); this process waits and exits as it does.

    If the engine process dies first (say, SIGKILL), it kills the process
    group, which is the step's session: the command and all it started.
    After a successful command it also finishes the staging dir (unmount,
    residue and work dir gone), which spares the engine a process.
    """
    import select
    import signal

    watch = os.pidfd_open(engine)
    if os.getppid() != engine:  # gone already (and perhaps its pid reused)
        os.killpg(0, signal.SIGKILL)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(watch)
        return
    child = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(watch, select.POLLIN)
    poller.register(child, select.POLLIN)
    while True:
        ready = {fd for fd, _ in poller.poll()}
        if child in ready:
            break
        if watch in ready:
            os.killpg(0, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0 and staging:
        try:
            syscalls.umount(root, syscalls.MNT_DETACH)
            staging.finish()
        except OSError:
            pass  # the engine sees the work dir still there and finishes it itself
    os._exit(code if code >= 0 else 128 - code)


def mount_readonly(store: str, layer_dirs: tuple[str, ...]) -> str:
    """In the current (private) mount namespace, mount an image read-only; return its root."""
    spec = ContainerSpec(store=store, layer_dirs=layer_dirs, argv=(), readonly=True)
    hold_image(spec)  # the host command exec'd on it keeps the image from rm
    apply(spec, plan(spec))
    return root_dir(spec)


def exec_host(argv: list[str], cwd: str) -> None:
    """chdir and exec a host command with the caller's environment."""
    os.chdir(cwd)
    env = dict(os.environ)
    env["PWD"] = cwd
    exec_command(argv, env)
