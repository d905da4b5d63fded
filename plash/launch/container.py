"""Start a container: enter namespaces, apply the mount plan, chroot and exec the command.

`start()` replaces this process with the container's command, so no Python
parent is left waiting: stdin, signals and the exit status are the
command's own. A build step's launcher (`supervise`) stays as its parent
instead, to end the step with the engine. The mount plan itself is
plash.launch.mounts'.
"""

from __future__ import annotations

import os
import sys

from plash import config
from plash.errors import LaunchError
from plash.launch import syscalls, userns
from plash.launch.mounts import RootSpec, apply, on_overlayfs, plan, root_dir
from plash.store.layout import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.store.staging import Staging


class ContainerSpec(RootSpec):
    """Everything needed to start a container process: its root (RootSpec) and the command."""

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
        super().__init__(store, layer_dirs, binds, staging, readonly)
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.fallback_cwd = fallback_cwd
        self.supervise = supervise
        self.profile = profile
        self.assigned = assigned


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


def hold_image(spec: RootSpec) -> None:
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
    if "PLASH_TEST_PAUSE" in os.environ:  # tests of race windows only: plash.testhook stays off plash run's path
        from plash import testhook

        testhook.pause("container-held")
    if spec.staging and on_overlayfs(spec.store):
        use_scratch(spec)
    try:
        userns.enter()
        ops = plan(spec)
        created = apply(ops)
        if spec.staging:
            with open(spec.staging.residue, "w") as f:
                f.write("\n".join(created))
    except OSError as e:
        raise LaunchError(f"cannot set up the container: {e.strerror or e}") from e
    root = root_dir(spec)
    if spec.supervise:
        supervise(spec.supervise, root, spec.staging, spec.scratch)
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


def use_scratch(spec: ContainerSpec) -> None:
    """Make the changes land on a tmpfs (the store is on overlayfs), to be copied in by supervise()."""
    from plash.launch import notes
    from plash.store.whiteouts import NEEDS_FILE_WHITEOUTS, file_whiteouts_work

    assert spec.staging is not None
    if not file_whiteouts_work():
        raise LaunchError(NEEDS_FILE_WHITEOUTS.format(release=os.uname().release),
                          hint="set PLASH_DATA to a directory on another file system (a volume)")
    spec.scratch = True
    os.makedirs(spec.staging.scratch, exist_ok=True)
    if not spec.supervise:
        spec.supervise = os.getppid()  # `create`: a parent must stay in the namespace to copy the changes
    notes.once(spec.store, "overlayfs-store",
               f"the store {spec.store} is on overlayfs, which the kernel refuses as an overlay's upper dir: "
               "each new layer is made on a tmpfs and copied in (slower); for speed, set PLASH_DATA to a "
               "directory on a volume")


def supervise(engine: int, root: str, staging: Staging | None, scratch: bool = False) -> None:
    """Fork: the child returns (to exec the command); this process waits and exits as it does.

    The command gets a process group of its own (unless stdin is a terminal). When it has ended, what it
    left running in that group (a daemon it started) is killed, so nothing
    goes on writing into a layer about to be published. If the engine
    process dies first (say, SIGKILL), both groups are killed: the command
    and all it started. After a successful command it also finishes the
    staging dir (unmount, residue and work dir gone), which spares the
    engine a process; with scratch, it first copies the changes from the
    tmpfs into the staging dir.
    """
    import contextlib  # here, not at the top: plash run imports this module and never supervises
    import select
    import signal

    watch = os.pidfd_open(engine)
    if os.getppid() != engine:  # gone already (and perhaps its pid reused)
        os.killpg(0, signal.SIGKILL)
    sys.stdout.flush()
    sys.stderr.flush()
    # not with a terminal on stdin (`plash create IMAGE sh` on a store on overlayfs): a group of
    # its own would not be the terminal's foreground group, and reading it would stop the command
    own_group = not os.isatty(0)
    pid = os.fork()
    if pid == 0:
        os.close(watch)
        if own_group:
            os.setpgid(0, 0)
        return
    if own_group:
        with contextlib.suppress(OSError):  # EACCES: it has exec'd, after its own setpgid
            os.setpgid(pid, pid)  # here too, so that it holds before either side goes on
    child = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(watch, select.POLLIN)
    poller.register(child, select.POLLIN)
    while True:
        ready = {fd for fd, _ in poller.poll()}
        if child in ready:
            break
        if watch in ready:
            _kill_group(pid)
            os.killpg(0, signal.SIGKILL)
    if own_group:
        _kill_group(pid)  # what the command left running (the group outlives its leader while used)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0 and staging and scratch:
        try:
            syscalls.umount(root, syscalls.MNT_DETACH)
            copy_scratch(staging)
        except OSError as e:
            from plash.errors import os_message

            sys.stderr.write(f"plash error: cannot copy the new layer into the store: {os_message(e)}\n")
            os._exit(1)
    elif code == 0 and staging:
        try:
            syscalls.umount(root, syscalls.MNT_DETACH)
            staging.finish()
        except OSError:
            pass  # the engine sees the work dir still there and finishes it itself
    os._exit(code if code >= 0 else 128 - code)


def _kill_group(pgid: int) -> None:
    import contextlib
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def copy_scratch(staging: Staging) -> None:
    """Move the changes on the scratch tmpfs into the staging's upper dir, then finish the staging dir."""
    from plash.launch.mounts import scratch_dirs
    from plash.store.layercopy import copy_layer
    from plash.store.staging import remove_residue

    upper, _ = scratch_dirs(staging)
    try:
        with open(staging.residue) as f:
            remove_residue(upper, [line for line in f.read().split("\n") if line])
        os.unlink(staging.residue)
    except FileNotFoundError:
        pass
    copy_layer(upper, staging.upper)
    staging.finish()


def mount_readonly(store: str, layer_dirs: tuple[str, ...]) -> str:
    """In the current (private) mount namespace, mount an image read-only; return its root."""
    spec = RootSpec(store, layer_dirs, readonly=True)
    hold_image(spec)  # the host command exec'd on it keeps the image from rm
    apply(plan(spec))
    return root_dir(spec)


def exec_host(argv: list[str], cwd: str) -> None:
    """chdir and exec a host command with the caller's environment."""
    os.chdir(cwd)
    env = dict(os.environ)
    env["PWD"] = cwd
    exec_command(argv, env)
