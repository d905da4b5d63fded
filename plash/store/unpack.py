"""Unpack an untrusted root file system tarball into a layer directory.

Every member is checked and created relative to the layer root through
directory file descriptors opened with O_NOFOLLOW, so no member can reach
outside the layer: `..` components are refused, leading `/` is dropped,
a symlink on the way to a member is refused, hard links must point at a
member already inside. Device nodes are skipped. Ownership is kept where the
current user namespace maps it, otherwise files belong to the caller (and
lose setuid/setgid bits). Directory modes are applied last, deepest first,
so read-only directories do not break extraction.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
from typing import BinaryIO

from plash.errors import UnpackError

_CHUNK = 1 << 20
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_decompressed(raw: BinaryIO) -> BinaryIO:
    """A stream of the tarball's plain bytes, whatever its compression.

    Compressed input is decompressed by a thread of its own, ahead of the
    reader: zlib, lzma, bz2 and zstd release the GIL while they work, so
    decompressing overlaps with creating the files (as tar does with a
    separate xz process).
    """
    buf = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type,type-var]
    magic = buf.peek(6)[:6]
    stream: BinaryIO
    if magic.startswith(b"\x1f\x8b"):
        import gzip

        stream = gzip.GzipFile(fileobj=buf, mode="rb")  # type: ignore[assignment]
    elif magic.startswith(b"BZh"):
        import bz2

        stream = bz2.BZ2File(buf)  # type: ignore[assignment]
    elif magic.startswith(b"\xfd7zXZ\x00"):
        import lzma

        stream = lzma.LZMAFile(buf)  # type: ignore[assignment]
    elif magic.startswith(b"\x28\xb5\x2f\xfd"):
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(buf, read_across_frames=True)  # type: ignore[assignment]
    else:
        return buf  # type: ignore[return-value]
    return ReadAhead(stream)  # type: ignore[return-value]


class ReadAhead:
    """Reads a stream in a daemon thread, a bounded number of chunks ahead (about 8 MB)."""

    CHUNK = 1 << 20

    def __init__(self, stream: BinaryIO) -> None:
        import queue
        import threading

        self.chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=8)
        self.pending = b""
        self.pos = 0
        self.done = False
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: BinaryIO) -> None:
        try:
            while chunk := stream.read(self.CHUNK):
                self.chunks.put(chunk)
            self.chunks.put(b"")
        except BaseException as e:  # handed to the reader, raised there
            self.chunks.put(e)

    def read(self, n: int = -1) -> bytes:
        out = []
        want = n if n >= 0 else 1 << 62
        while want > 0 and not self.done:
            if self.pos == len(self.pending):
                got = self.chunks.get()
                if isinstance(got, BaseException):
                    self.done = True
                    raise got
                if not got:
                    self.done = True
                    break
                self.pending, self.pos = got, 0
            part = self.pending[self.pos:self.pos + want]
            self.pos += len(part)
            want -= len(part)
            out.append(part)
        return b"".join(out)


def member_parts(name: str) -> list[str]:
    """The path components of a member name inside the layer, or UnpackError."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnpackError(f"unsafe path in tarball (contains '..'): {name}")
    return parts


class Unpacker:
    """Creates members below one root directory, never following symlinks."""

    def __init__(self, dest: str, oci: bool = False) -> None:
        self.oci = oci  # convert OCI whiteouts (.wh.NAME, .wh..wh..opq) to overlayfs form
        self.root_fd = os.open(dest, _DIR_FLAGS)
        self.dirs: dict[tuple[str, ...], int] = {(): self.root_fd}
        self.deferred: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []
        self.mapped = True  # turns False once a chown is refused
        # In a fresh (empty) layer dir only what this tarball made can stand in
        # the way of a member: remembering that saves a stat per member.
        self.fresh = not os.listdir(self.root_fd)
        self.made: set[tuple[str, ...]] = set()
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

    def dir_fd(self, parts: tuple[str, ...], member: str, create: bool = True) -> int:
        """An fd of the directory `parts` (created as needed), refusing symlinks."""
        fd = self.dirs.get(parts)
        if fd is not None:
            return fd
        parent = self.dir_fd(parts[:-1], member, create)
        name = parts[-1]
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise UnpackError(f"tarball member refers to a missing path: {member}") from None
            os.mkdir(name, 0o755, dir_fd=parent)
            self.made.add(parts)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnpackError(
                    f"unsafe tarball member (goes through a symlink or file): {member}"
                ) from None
            raise
        self.dirs[parts] = fd
        return fd

    def _clear(self, pfd: int, name: str, want_dir: bool, parts: tuple[str, ...] | None = None) -> bool:
        """Make room for a new entry; True if a directory already stands there (kept)."""
        if self.fresh and parts is not None and parts not in self.made:
            return False
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if want_dir:
                return True
            self._rmtree_at(pfd, name)
            self._forget_dirs()
            return False
        os.unlink(name, dir_fd=pfd)
        return False

    def _rmtree_at(self, pfd: int, name: str) -> None:
        fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        try:
            os.fchmod(fd, 0o700)
            for entry in os.listdir(fd):
                st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    self._rmtree_at(fd, entry)
                else:
                    os.unlink(entry, dir_fd=fd)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=pfd)

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

    def add(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        if len(self.dirs) > 128:
            self._forget_dirs()  # keep open directory fds well below the process limit
        parts = tuple(member_parts(info.name))
        if not parts:
            if info.isdir():
                self.deferred.append(((), info))
            return
        if info.ischr() or info.isblk():
            return  # device nodes are skipped (whiteouts included in a plain rootfs)
        pfd = self.dir_fd(parts[:-1], info.name)
        name = parts[-1]
        if self.oci and name.startswith(WHITEOUT):
            self._whiteout(pfd, name, info.name)
            return
        self._add(tar, info, parts, pfd, name)
        self.made.add(parts)

    def _add(self, tar: tarfile.TarFile, info: tarfile.TarInfo, parts: tuple[str, ...], pfd: int, name: str) -> None:
        if info.isdir():
            if not self._clear(pfd, name, True, parts):
                os.mkdir(name, 0o700, dir_fd=pfd)
            else:
                fd = self.dir_fd(parts, info.name)
                os.fchmod(fd, os.fstat(fd).st_mode & 0o7777 | 0o700)
            self.deferred.append((parts, info))
        elif info.isreg():
            self._clear(pfd, name, False, parts)
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
                src = tar.extractfile(info)
                if src is not None:
                    while chunk := src.read(_CHUNK):
                        _write_all(fd, chunk)
                owned = self._own(fd, info)
                if not simple:
                    os.fchmod(fd, self._mode(info, owned))
                self._xattrs(fd, info)
                os.utime(fd, (info.mtime, info.mtime))
            finally:
                os.close(fd)
        elif info.issym():
            self._clear(pfd, name, False, parts)
            os.symlink(info.linkname, name, dir_fd=pfd)
            self._own(name, info, pfd)
            try:
                os.utime(name, (info.mtime, info.mtime), dir_fd=pfd, follow_symlinks=False)
            except OSError:
                pass
        elif info.islnk():
            src_parts = tuple(member_parts(info.linkname))
            if not src_parts:
                raise UnpackError(f"hard link to the root in tarball: {info.name}")
            sfd = self.dir_fd(src_parts[:-1], info.name, create=False)
            try:
                st = os.stat(src_parts[-1], dir_fd=sfd, follow_symlinks=False)
            except FileNotFoundError:
                raise UnpackError(
                    f"hard link to a missing member in tarball: {info.name} -> {info.linkname}"
                ) from None
            if stat.S_ISDIR(st.st_mode):
                raise UnpackError(f"hard link to a directory in tarball: {info.name}")
            if (sfd, src_parts[-1]) == (pfd, name):
                return
            self._clear(pfd, name, want_dir=False)
            os.link(src_parts[-1], name, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
        elif info.isfifo():
            self._clear(pfd, name, want_dir=False)
            os.mkfifo(name, 0o600, dir_fd=pfd)
            owned = self._own(name, info, pfd)
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=pfd)
            try:
                os.fchmod(fd, self._mode(info, owned))
            finally:
                os.close(fd)
        # other member types (sparse handled as regular by tarfile) are ignored

    def _whiteout(self, pfd: int, name: str, member: str) -> None:
        """An OCI whiteout becomes its overlayfs form in the layer."""
        if name == OPAQUE:
            # the directory hides everything below it in lower layers
            os.setxattr(pfd, "user.overlay.opaque", b"y")
            return
        hidden = name[len(WHITEOUT):]
        if not hidden or hidden in (".", ".."):
            raise UnpackError(f"invalid whiteout in layer: {member}")
        self._clear(pfd, hidden, want_dir=False)
        # a 0:0 character device: unprivileged users may make this one (Linux >= 5.8)
        os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)

    @staticmethod
    def _xattrs(fd: int, info: tarfile.TarInfo) -> None:
        for key, value in info.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                try:
                    os.setxattr(fd, key[len("SCHILY.xattr.") :], value.encode("utf-8", "surrogateescape"))
                except OSError:
                    pass  # xattrs are kept where the file system and namespace allow

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

            owned = self._own(fd, info)
            os.fchmod(fd, self._mode(info, owned))
            os.utime(fd, (info.mtime, info.mtime))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def unpack(stream: BinaryIO, dest: str, oci: bool = False) -> int:
    """Unpack a (possibly compressed) tarball stream into dest; return the member count.

    With oci=True, the tarball is an OCI layer: its whiteouts become overlayfs
    whiteouts and opaque directories, and an empty layer is fine.
    """
    unpacker = Unpacker(dest, oci)
    count = 0
    old_umask = os.umask(0)
    try:
        try:
            plain = open_decompressed(stream)
            with tarfile.open(fileobj=plain, mode="r|") as tar:
                for info in tar:
                    unpacker.add(tar, info)
                    count += 1
            while plain.read(1 << 20):  # to the end (padding), so the reader thread ends too
                pass
        except UnpackError:
            raise
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise UnpackError("no space left on device while unpacking: the store's file system is full") from e
            if e.errno:
                raise UnpackError(f"cannot unpack: {e.strerror}") from e
            raise UnpackError(f"not a valid tarball: {e}") from e
        except Exception as e:  # tarfile, gzip, lzma and zstandard each raise their own
            raise UnpackError(f"not a valid tarball: {e}") from e
        if count == 0 and not oci:
            raise UnpackError("the tarball is empty")
        unpacker.finish()
    finally:
        os.umask(old_umask)
        unpacker.close()
    return count
