"""Writing tarball members below a layer root, through directory fds, never following a symlink.

See plash.store.unpack for the rules; Unpacker applies them member by member.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tarfile

from plash.errors import UnpackError
from plash.store.rmtree import rmtree_at
from plash.store.tarstream import TarStream
from plash.store.whiteouts import (
    OPAQUE,
    WHITEOUT,
    hidden_name,
    is_file_whiteout,
    is_whiteout,
    make_opaque,
    make_whiteout,
)

_LABEL = b"V"  # a GNU volume label (tar -V): a name, not a file
_KEEP_DIRS = 32  # open levels a walk down to a directory keeps, at most
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def shown(name: str) -> str:
    """A member name for a one-line message: as it is if printable, else with escapes."""
    return name if name.isprintable() else ascii(name)[1:-1]


def member_error(member: str, e: OSError | ValueError | OverflowError) -> UnpackError:
    """What the system refused while making a member (or what it made of the member's fields), naming the member."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return UnpackError("no space left on device while unpacking: the store's file system is full")
    text = (e.strerror or str(e)) if isinstance(e, OSError) else str(e)
    return UnpackError(f"cannot unpack member {shown(member)}: {text}")


def member_parts(name: str) -> list[str]:
    """The path components of a member name inside the layer, or UnpackError."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnpackError(f"unsafe path in tarball (contains '..'): {shown(name)}")
    return parts


_OVERLAY_XATTRS = ("SCHILY.xattr.user.overlay.", "SCHILY.xattr.trusted.overlay.")


class Unpacker:
    """Creates members below one root directory, never following symlinks."""

    def __init__(self, dest: str, oci: bool = False) -> None:
        self.oci = oci  # convert OCI whiteouts (.wh.NAME, .wh..wh..opq) to overlayfs form
        self.root_fd = os.open(dest, _DIR_FLAGS)
        # Open directory fds by path. An fd handed out stays open until the
        # next member (or until the directory itself is removed).
        self.dirs: dict[tuple[str, ...], int] = {(): self.root_fd}
        self.deferred: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []
        self.mapped = True  # turns False once a chown is refused
        # In a fresh (empty) layer dir only what this tarball made can stand in
        # the way of a member: remembering that saves a stat per member.
        self.fresh = not os.listdir(self.root_fd)
        self.made = _PathSet()
        self.ids = (os.geteuid(), os.getegid())

    def close(self) -> None:
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs = {}

    def _forget_dirs(self) -> None:
        for key, fd in list(self.dirs.items()):
            if key:
                os.close(fd)
                del self.dirs[key]

    def _forget_below(self, parts: tuple[str, ...]) -> None:
        """Close the fds of a removed directory and of those inside it (and only those)."""
        n = len(parts)
        for key in [k for k in self.dirs if k[:n] == parts]:
            os.close(self.dirs.pop(key))

    def dir_fd(self, parts: tuple[str, ...], member: str, create: bool = True) -> int:
        """An fd of the directory `parts` (created as needed), refusing symlinks.

        Walks down from the deepest open ancestor, without recursion, and keeps
        only the last _KEEP_DIRS levels open, whatever the depth.
        """
        fd = self.dirs.get(parts)
        if fd is not None:
            return fd
        i = len(parts) - 1
        while (fd := self.dirs.get(parts[:i])) is None:
            i -= 1
        spare = -1  # an fd of ours that is not kept: closed once its child is open
        try:
            for j in range(i + 1, len(parts) + 1):
                child = self._open_dir(fd, parts[:j], member, create)
                if spare >= 0:
                    os.close(spare)
                    spare = -1
                if len(parts) - j < _KEEP_DIRS:
                    self.dirs[parts[:j]] = child
                else:
                    spare = child
                fd = child
        finally:
            if spare >= 0:
                os.close(spare)
        return fd

    def _open_dir(self, parent: int, parts: tuple[str, ...], member: str, create: bool) -> int:
        name = parts[-1]
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise UnpackError(f"tarball member refers to a missing path: {shown(member)}") from None
            os.mkdir(name, 0o755, dir_fd=parent)
            self.made.add(parts)
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as e:
            if e.errno == errno.ENOTDIR and create and self.oci and is_whiteout(parent, name):
                # a directory added where this layer whited out the lower one
                os.unlink(name, dir_fd=parent)
                os.mkdir(name, 0o755, dir_fd=parent)
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
                make_opaque(fd)
                return fd
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnpackError(
                    f"unsafe tarball member (goes through a symlink or file): {shown(member)}"
                ) from None
            raise

    def _clear(self, pfd: int, name: str, parts: tuple[str, ...], want_dir: bool) -> int:
        """Make room for a new entry; return the mode of what stood there (0: nothing).

        A directory is kept when want_dir, otherwise whatever stands there is removed.
        """
        if self.fresh and parts not in self.made:
            return 0
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return 0
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            if not want_dir:
                self._forget_below(parts)
                rmtree_at(pfd, name)
        else:
            if self.oci and is_file_whiteout(pfd, name, st):
                mode = stat.S_IFCHR  # a whiteout of this layer, in its file form: told apart as a device is
            os.unlink(name, dir_fd=pfd)
        return mode

    def _own(self, target: int | str, info: tarfile.TarInfo, pfd: int | None = None) -> bool:
        """chown where the namespace maps the ids; False when refused."""
        if (info.uid, info.gid) == self.ids:
            return True  # new entries are ours already
        if not self.mapped and (info.uid or info.gid):
            return False
        try:
            if isinstance(target, int):
                os.fchown(target, info.uid, info.gid)
            else:
                os.chown(target, info.uid, info.gid, dir_fd=pfd, follow_symlinks=False)
            return True
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EINVAL):
                raise
            if info.uid or info.gid:
                self.mapped = False
            return False

    @staticmethod
    def _mode(info: tarfile.TarInfo, owned: bool) -> int:
        mode = info.mode & 0o7777
        return mode if owned else mode & ~0o6000

    def add(self, tar: TarStream, info: tarfile.TarInfo) -> None:
        if len(self.dirs) > 128:
            self._forget_dirs()  # keep open directory fds well below the process limit
        parts = tuple(member_parts(info.name))
        if info.ischr() or info.isblk() or info.type == _LABEL:
            return  # device nodes are skipped (whiteouts included in a plain rootfs), as labels are by GNU tar
        if info.type not in tarfile.SUPPORTED_TYPES:  # tarfile skipped its data: refused, never dropped quietly
            raise UnpackError(f"unsupported member type {info.type.decode('latin-1')!a} in tarball: {shown(info.name)}")
        if not parts:
            if info.isdir():
                self.deferred.append(((), info))
            return
        pfd = self.dir_fd(parts[:-1], info.name)
        name = parts[-1]
        if self.oci and name.startswith(WHITEOUT):
            self._whiteout(pfd, name, parts, info.name)
            return
        self._add(tar, info, parts, pfd, name)
        self.made.add(parts)

    def _add(self, tar: TarStream, info: tarfile.TarInfo, parts: tuple[str, ...], pfd: int, name: str) -> None:
        if info.isdir():
            was = self._clear(pfd, name, parts, want_dir=True)
            if stat.S_ISDIR(was):
                fd = self.dir_fd(parts, info.name)
                os.fchmod(fd, os.fstat(fd).st_mode & 0o7777 | 0o700)
            else:
                os.mkdir(name, 0o700, dir_fd=pfd)
                if was and self.oci and stat.S_ISCHR(was):
                    # replaces this layer's whiteout: the lower directory stays hidden
                    make_opaque(self.dir_fd(parts, info.name))
            self.deferred.append((parts, info))
        elif info.isreg():
            self._clear(pfd, name, parts, want_dir=False)
            mode = info.mode & 0o7777
            # created with its final mode when that is simple (the umask is 0 here)
            simple = mode & 0o200 and not mode & 0o7000
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                mode if simple else 0o600,
                dir_fd=pfd,
            )
            try:
                tar.copy(info, fd)
                owned = self._own(fd, info)
                if not simple:
                    os.fchmod(fd, self._mode(info, owned))
                self._xattrs(fd, info)
                os.utime(fd, (info.mtime, info.mtime))
            finally:
                os.close(fd)
        elif info.issym():
            self._clear(pfd, name, parts, want_dir=False)
            os.symlink(info.linkname, name, dir_fd=pfd)
            self._own(name, info, pfd)
            with contextlib.suppress(OSError):
                os.utime(name, (info.mtime, info.mtime), dir_fd=pfd, follow_symlinks=False)
        elif info.islnk():
            src_parts = tuple(member_parts(info.linkname))
            if not src_parts:
                raise UnpackError(f"hard link to the root in tarball: {shown(info.name)}")
            sfd = self.dir_fd(src_parts[:-1], info.name, create=False)
            try:
                st = os.stat(src_parts[-1], dir_fd=sfd, follow_symlinks=False)
            except FileNotFoundError:
                raise UnpackError(
                    f"hard link to a missing member in tarball: {shown(info.name)} -> {shown(info.linkname)}"
                ) from None
            if stat.S_ISDIR(st.st_mode):
                raise UnpackError(f"hard link to a directory in tarball: {shown(info.name)}")
            if (sfd, src_parts[-1]) == (pfd, name):
                return
            if src_parts[:len(parts)] == parts:
                raise UnpackError(f"hard link replaces the directory that holds its target in tarball: {shown(info.name)}")
            self._clear(pfd, name, parts, want_dir=False)
            os.link(src_parts[-1], name, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
        elif info.isfifo():
            self._clear(pfd, name, parts, want_dir=False)
            os.mkfifo(name, 0o600, dir_fd=pfd)
            owned = self._own(name, info, pfd)
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=pfd)
            try:
                os.fchmod(fd, self._mode(info, owned))
                os.utime(fd, (info.mtime, info.mtime))
            finally:
                os.close(fd)
        # no other type comes here (see add): tarfile reads sparse and contiguous files as regular ones

    def _whiteout(self, pfd: int, name: str, parts: tuple[str, ...], member: str) -> None:
        """An OCI whiteout becomes its overlayfs form in the layer.

        Whiteouts hide what lower layers hold, never what this layer adds, in
        whatever order they come (OCI image spec, "Whiteouts"): a name this
        layer adds stays (a directory is made opaque), otherwise a whiteout
        device stands in for it, to be replaced should the layer add it later.
        """
        if name == OPAQUE:
            make_opaque(pfd)  # the directory hides everything below it in lower layers
            return
        hidden = hidden_name(name)
        if hidden is None:
            raise UnpackError(f"invalid whiteout in layer: {shown(member)}")
        target = (*parts[:-1], hidden)
        if not self.fresh or target in self.made:
            try:
                st = os.stat(hidden, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                if stat.S_ISDIR(st.st_mode):
                    make_opaque(self.dir_fd(target, member))
                return  # a file (or whiteout) of this layer hides the lower one already
        make_whiteout(pfd, hidden)
        self.made.add(target)

    @staticmethod
    def _xattrs(fd: int, info: tarfile.TarInfo) -> None:
        for key, value in info.pax_headers.items():
            # overlayfs's own xattrs would make whiteouts or redirects of a tarball's files: never set
            if key.startswith("SCHILY.xattr.") and not key.startswith(_OVERLAY_XATTRS):
                with contextlib.suppress(OSError):  # xattrs are kept where the file system and namespace allow
                    os.setxattr(fd, key[len("SCHILY.xattr.") :], value.encode("utf-8", "surrogateescape"))

    def finish(self) -> None:
        """Apply directory ownership, modes and times, deepest first."""
        self.deferred.sort(key=lambda item: len(item[0]), reverse=True)
        for parts, info in self.deferred:
            if len(self.dirs) > 128:
                self._forget_dirs()
            try:
                fd = self.dir_fd(parts, info.name, create=False)
            except UnpackError:
                continue  # a later member replaced this directory
            try:
                owned = self._own(fd, info)
                os.fchmod(fd, self._mode(info, owned))
                os.utime(fd, (info.mtime, info.mtime))
            except (OSError, ValueError, OverflowError) as e:
                raise member_error(info.name, e) from e


class _PathSet:
    """The paths this unpacker made, in fixed memory: a bit per path hash.

    A set bit may be another path's (a collision costs one stat); a clear bit
    is certain. A set of the paths themselves would grow with the tarball.
    """

    BITS = 1 << 24  # 2 MiB: about 1% collisions at 150 000 paths

    def __init__(self) -> None:
        self.bits = bytearray(self.BITS >> 3)

    def add(self, parts: tuple[str, ...]) -> None:
        h = hash(parts) & (self.BITS - 1)
        self.bits[h >> 3] |= 1 << (h & 7)

    def __contains__(self, parts: tuple[str, ...]) -> bool:
        h = hash(parts) & (self.BITS - 1)
        return bool(self.bits[h >> 3] & (1 << (h & 7)))

