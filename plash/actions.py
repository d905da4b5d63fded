"""What each store and container command does; the CLI only parses and calls these.

Synchronous on purpose: work inside namespaces happens in forked children,
which needs a single-threaded caller (no trio here).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from typing import BinaryIO

from plash import config
from plash.errors import ExitStatus, PlashError, StoreError, os_message, report
from plash.launch import container, userns
from plash.launch.child import in_namespace, rmtree_anywhere, wait_exit
from plash.launch.run import image_spec
from plash.store.layout import Store, open_store
from plash.store.space import full_store_note
from plash.store.staging import Staging


def store() -> Store:
    """The store, created on first use: for commands that write."""
    return open_store()


def existing_store() -> Store:
    """The store for a query: a missing one is an error, and nothing is created."""
    return open_store(create=False)


def image_store(text: str, write: bool = False) -> tuple[Store, int]:
    """The store and an existing image of it, named by its id or a map name (see Store.resolve).

    A missing store has no images and is not created. With write, the
    store's skeleton is completed for the change to come (it exists: the
    image does).
    """
    s = Store(config.data_dir())
    image = s.resolve(text)
    if write:
        s.ensure()
    return s, image


def no_unshare() -> bool:
    """PLASH_NO_UNSHARE set (non-empty, as in the original): stay in the caller's namespaces."""
    return bool(os.environ.get("PLASH_NO_UNSHARE"))


def _discard(path: str) -> None:
    with contextlib.suppress(OSError, PlashError):  # left for `plash clean`, which reclaims dirs whose owner is gone
        rmtree_anywhere(path)


# -- create ---------------------------------------------------------------


def create(image_text: str, argv: list[str]) -> int:
    """Run argv in image (a shell script from stdin by default), its changes kept as a new child image."""
    s, image = image_store(image_text, write=True)
    with Staging.new(s, "create", container=True, remove=rmtree_anywhere) as staging:
        code = _run_in_staging(s, image, argv or ["sh", "-e"], staging)
        if code != 0:
            full = full_store_note(s.path)  # before discarding frees the room
            raise PlashError(f"command failed in image {image} (exit {code}); nothing was saved{full}")
        try:
            staging.finish()
        except OSError:
            if in_namespace(staging.finish):  # the work dir holds files of the namespace's ids
                raise StoreError("cannot clean up the new layer") from None
        return staging.publish(image, {"created_by": ["create " + " ".join(argv) if argv else "create (a script)"]})


def _run_in_staging(s: Store, image: int, argv: list[str], staging: Staging) -> int:
    """Run argv in image with its changes kept in the staging's upper dir; return its exit status."""
    spec = image_spec(s, image, argv, binds=config.BUILD_BINDS, staging=staging)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            container.start(spec)
        except PlashError as e:
            report(e)
        except BaseException as e:
            sys.stderr.write(f"plash error: {os_message(e) if isinstance(e, OSError) else e}\n")
        finally:
            os._exit(1)
    return wait_exit(pid)


# -- tarballs ---------------------------------------------------------------


def import_tar(path: str) -> int:
    s = store()
    if path == "-":
        if sys.stdin.isatty():
            raise PlashError("refusing to read a tarball from a terminal", hint="plash import-tar FILE, or pipe one in")
        stream: BinaryIO = sys.stdin.buffer
    else:
        try:
            if os.path.isdir(path):
                raise PlashError(f"cannot import {path}: it is a directory")
            stream = open(path, "rb")  # noqa: SIM115 (read to its end by import_stream, closed with the process)
        except OSError as e:
            raise PlashError(f"cannot open {path}: {e.strerror}") from None
    return import_stream(s, stream, {"created_by": [f"tarball {os.path.abspath(path) if path != '-' else '-'}"]})


def import_stream(s: Store, stream: BinaryIO, meta: dict[str, list[str]] | None = None) -> int:
    """Unpack a tarball stream (in the user namespace, to keep ownership) as a new image."""
    from plash.store.unpack import unpack

    with Staging.new(s, "import", remove=rmtree_anywhere) as staging:
        code = in_namespace(lambda: (unpack(stream, staging.upper), None)[1])
        if code != 0:
            raise ExitStatus(code)
        return staging.publish(0, meta)


def _layer_dirs(s: Store, image: int) -> tuple[str, ...]:
    return tuple(str(i) for i in reversed(s.chain(image)[1:]))


def _run_on_mounted(s: Store, image: int, argv: list[str], stdout: int | None = None) -> int:
    """Run a host command with cwd at the read-only mounted image; return its status."""
    dirs = _layer_dirs(s, image)

    def work() -> None:
        root = container.mount_readonly(s.path, dirs)
        if stdout is not None:
            os.dup2(stdout, 1)
        container.exec_host(argv, root)

    return in_namespace(work, mount_ns=True)


def export_tar(image_text: str, dest: str) -> None:
    s, image = image_store(image_text)
    argv = ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-cf", "-", "."]
    if dest == "-":
        if sys.stdout.isatty():
            raise PlashError("refusing to write a tarball to a terminal", hint="plash export-tar IMAGE FILE")
        code = _run_on_mounted(s, image, argv, stdout=1)
        if code:
            raise PlashError(f"export failed (tar exit {code})")
        return
    dest = os.path.abspath(dest)
    import tempfile

    # An unpredictable name, made with O_EXCL|O_NOFOLLOW: no one can plant a
    # symlink there to turn the export onto another file; the rename at the
    # end replaces whatever is at dest itself, never where a symlink leads.
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", suffix=".plash-part",
                                   dir=os.path.dirname(dest))
    except OSError as e:
        raise PlashError(f"cannot write {dest}: {e.strerror}") from None
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # the mode a plain new file would get
    try:
        try:
            code = _run_on_mounted(s, image, argv, stdout=fd)
        finally:
            os.close(fd)
        if code:
            raise PlashError(f"export failed (tar exit {code})")
        os.replace(tmp, dest)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def copy(image_text: str, dest: str) -> None:
    """Copy the image's files to dest: a new dir, or an existing empty one (`copy 1 "$(mktemp -d)"`)."""
    s, image = image_store(image_text)
    dest = os.path.abspath(dest)
    made = not os.path.lexists(dest)
    if made:
        try:
            os.mkdir(dest, 0o755)
        except OSError as e:
            raise PlashError(f"cannot create {dest}: {e.strerror}") from None
    else:
        st = os.lstat(dest)
        if not stat.S_ISDIR(st.st_mode):
            # a symlink too: whoever planted it would get the image's files (setuid ones included)
            raise PlashError(f"cannot copy to {dest}: it exists already and is not a directory")
        if st.st_uid != os.getuid():
            raise PlashError(f"cannot copy to {dest}: it belongs to another user")
        if os.listdir(dest):
            raise PlashError(f"cannot copy to {dest}: it is not empty")
    argv = ["cp", "-a"]
    if os.getuid() != 0:
        argv.append("--no-preserve=ownership")  # files the caller can delete
    code = _run_on_mounted(s, image, [*argv, "--", ".", dest])
    if code:
        if made:
            rmtree_anywhere(dest)
            raise PlashError(f"copy failed (cp exit {code}); {dest} was removed")
        for name in os.listdir(dest):  # the dir was the caller's: keep it, as empty as it was
            rmtree_anywhere(os.path.join(dest, name))
        raise PlashError(f"copy failed (cp exit {code}); {dest} was emptied")


MOUNT_HINT = "outside 'plash sudo' only root may mount; try: plash sudo plash mount ..."


def mount(image_text: str, target: str, changes: str | None) -> None:
    """Mount an image at target in the current mount namespace (for `plash sudo`)."""
    s, image = image_store(image_text)
    target = os.path.abspath(target)
    if not os.path.isdir(target):
        raise PlashError(f"mount point is not a directory: {target}")
    _mount_overlay(s, image, target, changes, MOUNT_HINT)


def _mount_overlay(s: Store, image: int, target: str, changes: str | None, hint: str) -> None:
    """Mount the image's overlay at target in this process's mount namespace."""
    from plash.launch import syscalls

    lowers = [f"{d}/root" for d in _layer_dirs(s, image)] + ["0/root"]
    opts = ["lowerdir=" + ":".join(lowers)]
    if changes:
        changes = os.path.abspath(changes)
        if any(c in changes for c in ",:\\"):
            raise PlashError(f"CHANGESDIR must not contain ',', ':' or '\\': {changes}")
        for d in ("upper", "work"):
            os.makedirs(os.path.join(changes, d), exist_ok=True)
        opts += [f"upperdir={changes}/upper", f"workdir={changes}/work"]
    opts.append("userxattr")
    here = os.getcwd()
    os.chdir(s.index)
    try:
        syscalls.mount("overlay", target, "overlay", 0 if changes else syscalls.MS_RDONLY, ",".join(opts))
    except OSError as e:
        raise PlashError(f"cannot mount image {image} at {target}: {e.strerror}", hint=hint) from None
    finally:
        os.chdir(here)


def with_mount(image_text: str, argv: list[str]) -> None:
    s, image = image_store(image_text)
    argv = argv or [os.environ.get("SHELL") or "/bin/sh"]
    if no_unshare():
        _with_mount_here(s, image, argv)
        return
    userns.enter()
    root = container.mount_readonly(s.path, _layer_dirs(s, image))
    container.exec_host(argv, root)


def _with_mount_here(s: Store, image: int, argv: list[str]) -> None:
    """with-mount in the caller's mount namespace: mount at a temp dir, run argv there, unmount.

    The mount is visible to the caller's other processes while argv runs
    (that is what PLASH_NO_UNSHARE asks for), so a parent stays to take it
    down afterwards instead of leaking it on the host.
    """
    import signal

    from plash.launch import syscalls

    s.ensure()
    tmp = s.mkdtemp("with-mount")
    target = os.path.join(tmp, "root")
    os.mkdir(target, 0o755)
    try:
        _mount_overlay(s, image, target, None, hint="without a namespace of its own (PLASH_NO_UNSHARE) only root "
                       "may mount; inside 'plash sudo' anyone may")
    except PlashError:
        _discard(tmp)
        raise
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            container.exec_host(argv, target)
        finally:
            os._exit(127)
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the command has them; this process only cleans up after it
    code = wait_exit(pid)
    try:
        syscalls.umount(target, syscalls.MNT_DETACH)
        os.rmdir(target)
        os.rmdir(tmp)
    except OSError:
        pass  # left for `plash clean`
    if code:
        raise ExitStatus(code if code > 0 else 128 - code)


def sudo(argv: list[str], cwd: str | None = None) -> None:
    """Exec argv as "root" in plash's user and mount namespace; with PLASH_NO_UNSHARE, exec it as it is."""
    argv = argv or [os.environ.get("SHELL") or "/bin/sh"]
    here = cwd or os.getcwd()
    if not no_unshare():
        userns.enter()
    container.exec_host(argv, here)
