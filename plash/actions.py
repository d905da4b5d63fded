"""What each store and container command does; the CLI only parses and calls these.

Synchronous on purpose: work inside namespaces happens in forked children,
which needs a single-threaded caller (no trio here).
"""

from __future__ import annotations

import os
import sys
import time
from typing import BinaryIO

from plash import config
from plash.errors import ExitStatus, PlashError, StoreError
from plash.launch import container, userns
from plash.launch.child import in_namespace, rmtree_anywhere
from plash.launch.run import image_spec
from plash.store.layout import Store, full_store_note, open_store, parse_image_id
from plash.store.staging import finish_staging, new_staging


def store() -> Store:
    return open_store()


def image_arg(s: Store, text: str) -> int:
    """Parse an image argument and check that it exists."""
    image = parse_image_id(text)
    s.image_dir(image)
    return image


def _staging(s: Store, kind: str) -> str:
    return new_staging(s, kind, with_work=False)


def _discard(path: str) -> None:
    try:
        rmtree_anywhere(path)
    except (OSError, PlashError):
        pass  # left for `plash clean`, which reclaims dirs whose owner is gone


# -- create ---------------------------------------------------------------


def run_to_staging(s: Store, image: int, argv: list[str], stdin: int | None = None) -> tuple[int, str]:
    """Run argv in image with changes kept in a staging dir; return (exit status, staging)."""
    staging = new_staging(s, "create")
    residue = os.path.join(staging, "residue")
    spec = image_spec(
        s, image, argv, binds=config.BUILD_BINDS, staging=staging, residue_file=residue
    )
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            if stdin is not None:
                os.dup2(stdin, 0)
            container.start(spec)
        except PlashError as e:
            from plash.errors import report

            report(e)
        except BaseException as e:
            from plash.errors import os_message

            sys.stderr.write(f"plash error: {os_message(e) if isinstance(e, OSError) else e}\n")
        finally:
            os._exit(1)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except (InterruptedError, KeyboardInterrupt):
            continue
    return os.waitstatus_to_exitcode(status), staging


def commit_staging(s: Store, image: int, staging: str, meta: dict[str, list[str]] | None = None,
                   key: str | None = None) -> int:
    """Publish a staging dir made by run_to_staging as a new child of image."""
    try:
        finish_staging(staging)
    except OSError:
        if in_namespace(lambda: finish_staging(staging)):
            raise StoreError("cannot clean up the new layer") from None
    new = s.publish(os.path.join(staging, "img"), image, meta, key)
    _discard(staging)
    return new


def create(image_text: str, argv: list[str]) -> int:
    s = store()
    image = image_arg(s, image_text)
    if not argv:
        argv = ["sh", "-e"]
    code, staging = run_to_staging(s, image, argv)
    if code != 0:
        full = full_store_note(s.path)  # before discarding frees the room
        _discard(staging)
        raise PlashError(f"command failed in image {image} (exit {code}); nothing was saved{full}")
    return commit_staging(s, image, staging)


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
            stream = open(path, "rb")
        except OSError as e:
            raise PlashError(f"cannot open {path}: {e.strerror}") from None
    return import_stream(s, stream)


def import_stream(s: Store, stream: BinaryIO, meta: dict[str, list[str]] | None = None) -> int:
    """Unpack a tarball stream (in the user namespace, to keep ownership) as a new image."""
    from plash.store.unpack import unpack

    staging = _staging(s, "import")
    root = os.path.join(staging, "img", "root")
    code = in_namespace(lambda: (unpack(stream, root), None)[1])
    if code != 0:
        _discard(staging)
        raise ExitStatus(code)
    image = s.publish(os.path.join(staging, "img"), 0, meta)
    _discard(staging)
    return image


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
    s = store()
    image = image_arg(s, image_text)
    argv = ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-cf", "-", "."]
    if dest == "-":
        if sys.stdout.isatty():
            raise PlashError("refusing to write a tarball to a terminal", hint="plash export-tar IMAGE FILE")
        code = _run_on_mounted(s, image, argv, stdout=1)
        if code:
            raise PlashError(f"export failed (tar exit {code})")
        return
    dest = os.path.abspath(dest)
    tmp = f"{dest}.plash-{os.getpid()}.part"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as e:
        raise PlashError(f"cannot write {dest}: {e.strerror}") from None
    try:
        code = _run_on_mounted(s, image, argv, stdout=fd)
    finally:
        os.close(fd)
    if code:
        os.unlink(tmp)
        raise PlashError(f"export failed (tar exit {code})")
    os.replace(tmp, dest)


def copy(image_text: str, dest: str) -> None:
    s = store()
    image = image_arg(s, image_text)
    dest = os.path.abspath(dest)
    if os.path.lexists(dest):
        raise PlashError(f"cannot copy to {dest}: it exists already")
    try:
        os.mkdir(dest, 0o755)
    except OSError as e:
        raise PlashError(f"cannot create {dest}: {e.strerror}") from None
    argv = ["cp", "-a"]
    if os.getuid() != 0:
        argv.append("--no-preserve=ownership")  # files the caller can delete
    code = _run_on_mounted(s, image, argv + ["--", ".", dest])
    if code:
        rmtree_anywhere(dest)
        raise PlashError(f"copy failed (cp exit {code}); {dest} was removed")


def mount(image_text: str, target: str, changes: str | None) -> None:
    """Mount an image at target in the current mount namespace (for `plash sudo`)."""
    from plash.launch import syscalls

    s = store()
    image = image_arg(s, image_text)
    target = os.path.abspath(target)
    if not os.path.isdir(target):
        raise PlashError(f"mount point is not a directory: {target}")
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
    os.chdir(s.index)
    try:
        syscalls.mount("overlay", target, "overlay", 0 if changes else syscalls.MS_RDONLY, ",".join(opts))
    except OSError as e:
        raise PlashError(
            f"cannot mount image {image} at {target}: {e.strerror}",
            hint="outside 'plash sudo' only root may mount; try: plash sudo plash mount ...",
        ) from None


def with_mount(image_text: str, argv: list[str]) -> None:
    s = store()
    image = image_arg(s, image_text)
    argv = argv or [os.environ.get("SHELL") or "/bin/sh"]
    userns.enter()
    root = container.mount_readonly(s.path, _layer_dirs(s, image))
    container.exec_host(argv, root)


def sudo(argv: list[str], cwd: str | None = None) -> None:
    argv = argv or [os.environ.get("SHELL") or "/bin/sh"]
    here = cwd or os.getcwd()
    userns.enter()
    container.exec_host(argv, here)


# -- store bookkeeping --------------------------------------------------------


def remove(image_text: str) -> list[int]:
    s = store()
    image = image_arg(s, image_text)
    trash, gone = s.detach(image)
    rmtree_anywhere(trash)
    return gone


def clean() -> list[str]:
    s = store()
    removed, dirs = s.clean_plan()
    for d in dirs:
        try:
            rmtree_anywhere(d)
        except (OSError, PlashError):
            removed.append(f"(could not delete all of {os.path.relpath(d, s.path)} yet; run clean again)")
    return removed


def shrink() -> list[int]:
    """Delete about half of the images, oldest first, with their descendants."""
    s = store()
    ids = s.ids()
    target = (len(ids) + 1) // 2

    removed: list[int] = []
    for i in sorted(ids, key=lambda i: (s.created(i), i)):
        if len(removed) >= target:
            break
        if i in removed:
            continue
        try:
            trash, gone = s.detach(i)
        except PlashError:
            continue
        rmtree_anywhere(trash)
        removed.extend(gone)
    return removed


def purge() -> bool:
    path = config.data_dir()
    if not os.path.lexists(path):
        return False
    s = Store(path)
    aside = f"{path}.purge-{os.getpid()}-{int(time.time())}"
    if os.path.isdir(s.path):
        with s.locked():
            os.rename(path, aside)
    rmtree_anywhere(aside)
    return True


def fsck(repair: bool) -> tuple[list[str], list[str], list[str]]:
    """Check the store; with repair, fix what can be fixed safely.

    Returns (broken, leftovers, repaired). Broken is what a reader could trip
    on: entries pointing to nothing or to the wrong place, images without
    their root or with unreadable meta. Leftovers are what killed processes
    leave behind and `clean` reclaims; no reader ever sees them.
    """
    import fcntl

    from plash.store.layout import owner_alive

    s = store()
    broken: list[str] = []
    leftovers: list[str] = []
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
        d = s.image_dir(image)
        missing = [x for x in ("root", "meta") if not os.path.lexists(os.path.join(d, x))]
        if missing:
            broken.append(f"image {image}: missing {' and '.join(missing)}")
            bad_images.append(image)
        elif "key" not in s.meta(image):
            broken.append(f"image {image}: meta has no key (written by something else than plash)")
            bad_images.append(image)
    indexed = {os.path.realpath(s.image_dir(i)) for i in s.ids()}
    for dirpath, dirnames, _ in os.walk(s.root0):
        for dn in list(dirnames):
            if dn.isdigit() and os.path.realpath(os.path.join(dirpath, dn)) not in indexed:
                leftovers.append(f"{os.path.relpath(os.path.join(dirpath, dn), s.path)}: image dir without index entry")
        dirnames[:] = [dn for dn in dirnames if dn.isdigit()]
    for name in sorted(os.listdir(s.locks)):
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
    for name in sorted(os.listdir(s.tmp)):
        if not owner_alive(name):
            leftovers.append(f"tmp/{name}: left by a process that is gone")
    repaired: list[str] = []
    if repair and (broken or leftovers):
        for image in bad_images:
            try:
                repaired += [f"removed broken image {i}" for i in remove(str(image))]
            except PlashError:
                pass
        for d in (s.index, s.maps, s.keys):
            for name in os.listdir(d) if os.path.isdir(d) else []:
                p = os.path.join(d, name)
                if not os.path.islink(p) and os.path.isfile(p):
                    os.unlink(p)
                    repaired.append(f"removed {os.path.relpath(p, s.path)}")
        repaired += [f"removed {r}" for r in clean()]
    return broken, leftovers, repaired
