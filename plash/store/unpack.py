"""Unpack an untrusted root file system tarball into a layer directory.

Every member is checked and created relative to the layer root through
directory file descriptors opened with O_NOFOLLOW, so no member can reach
outside the layer: `..` components are refused, leading `/` is dropped,
a symlink on the way to a member is refused, hard links must point at a
member already inside. Device nodes are skipped. Ownership is kept where the
current user namespace maps it, otherwise files belong to the caller (and
lose setuid/setgid bits). Directory modes are applied last, deepest first,
so read-only directories do not break extraction. A later member replaces
an earlier one (a directory tree included), as tar does; OCI whiteouts hide
lower layers only, in whatever order they come.

Memory stays bounded (under about 200 MB) whatever the input:
- xz: at most XZ_MEMLIMIT (130 MiB) for the decoder, enough for a 128 MiB
  dictionary; xz -9, the most real images use, needs 65 MiB.
- zstd: windows up to ZSTD_MAX_WINDOW (128 MiB, --long=27), which is also
  the most `zstd -d` accepts without --memory.
- gzip (32 KiB window) and bzip2 (under 4 MiB) are bounded by design.
- decompressed data is read at most 8 MiB ahead; a member's extra headers
  (PAX records, GNU long names, sparse maps) may not exceed MAX_HEADERS
  (1 MiB); the paths made are remembered in a fixed 2 MiB bitmap.

The end of the archive is where GNU tar sees it: a zero block ends it (and
what follows is ignored), an archive may end without zero blocks or with a
partial block, but a corrupt header or a truncated member is an error.
After the end, at most MAX_TRAILING (16 MiB) more are read, and no more once
DRAIN_IDLE (2 s) pass without data: enough for the padding and compressed
trailers real writers add (so a feeding pipe is not cut short), never a
hang on input that does not end (/dev/zero, a pipe left open).
"""

from __future__ import annotations

import errno
import functools
import io
import os
import stat
import tarfile
from typing import Any, BinaryIO, Callable, Iterator

from plash.errors import UnpackError

# Limits that hold memory and time for any input (see the module docstring).
XZ_MEMLIMIT = 130 << 20
ZSTD_MAX_WINDOW = 1 << 27
MAX_HEADERS = 1 << 20
MAX_TRAILING = 16 << 20
DRAIN_IDLE = 2.0

_CHUNK = 1 << 20
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "user.overlay.opaque"
_InvalidHeader: type[Exception] = tarfile.InvalidHeaderError  # type: ignore[attr-defined]  # not in typeshed
_KEEP_DIRS = 32  # open levels a walk down to a directory keeps, at most
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_decompressed(raw: BinaryIO) -> ReadAhead:
    """A reader of the tarball's plain bytes, whatever its compression.

    The input is read and decompressed by a thread of its own, ahead of the
    tar reader: zlib, lzma, bz2 and zstd release the GIL while they work, so
    decompressing overlaps with creating the files (as tar does with a
    separate xz process).
    """
    buf = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type,type-var]
    magic = buf.peek(6)[:6]
    read: Callable[[], bytes]
    if magic.startswith(b"\x1f\x8b"):
        import gzip

        gz = gzip.GzipFile(fileobj=_Available(buf), mode="rb")  # type: ignore[call-overload]
        read = functools.partial(gz.read1, _CHUNK)
    elif magic.startswith(b"BZh"):
        import bz2

        read = functools.partial(bz2.BZ2File(_Available(buf)).read1, _CHUNK)  # type: ignore[call-overload]
    elif magic.startswith(b"\xfd7zXZ\x00"):
        chunks = _xz_chunks(buf)
        read = functools.partial(next, chunks, b"")
    elif magic.startswith(b"\x28\xb5\x2f\xfd"):
        import zstandard

        zst = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(
            _Available(buf), read_across_frames=True)
        read = functools.partial(_zstd_read, zst)
    else:
        read = functools.partial(buf.read1, _CHUNK)  # what a pipe has, without waiting for a full chunk
    return ReadAhead(read)


class _Available:
    """A file whose read(n) gives what the input has (at least a byte), as a pipe does.

    For the decompressors: a buffered read(n) waits for n bytes, and so would
    hold back the end of the archive while the input stays open.
    """

    def __init__(self, buf: io.BufferedReader[Any]) -> None:
        self.read = buf.read1


def _xz_chunks(buf: io.BufferedReader[Any]) -> Iterator[bytes]:
    """The plain bytes of an xz file, decoded within XZ_MEMLIMIT.

    Like lzma.LZMAFile (which has no memory limit): concatenated streams
    follow on; data after a stream that is not a stream is ignored.
    """
    import lzma

    def decoder() -> lzma.LZMADecompressor:
        return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)

    dec = decoder()
    try:
        while True:
            if dec.eof:
                rest = dec.unused_data or buf.read1(_CHUNK)
                if not rest:
                    return
                dec = decoder()
                try:
                    out = dec.decompress(rest, _CHUNK)
                except lzma.LZMAError as e:
                    if _xz_memory(e):
                        raise
                    return
            else:
                data = buf.read1(_CHUNK) if dec.needs_input else b""
                if dec.needs_input and not data:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
                out = dec.decompress(data, _CHUNK)  # bounded output: a small input may expand hugely
            if out:
                yield out
    except lzma.LZMAError as e:
        if _xz_memory(e):
            raise UnpackError(
                f"the xz stream needs more than {XZ_MEMLIMIT >> 20} MiB of memory to unpack (dictionary too large)"
            ) from None
        raise


def _xz_memory(e: Exception) -> bool:
    return "memory usage limit" in str(e).lower()


def _zstd_read(stream: BinaryIO) -> bytes:
    try:
        return stream.read1(_CHUNK)  # type: ignore[attr-defined]
    except Exception as e:  # zstandard.ZstdError, imported lazily
        if "too much memory" in str(e):
            raise UnpackError(
                f"the zstd stream needs a window of more than {ZSTD_MAX_WINDOW >> 20} MiB to unpack"
            ) from None
        raise


class ReadAhead:
    """Reads chunks in a daemon thread, a bounded number ahead (at most 8 MB).

    Decompressors are read with read1, which hands out what one read of the
    input gave: read, which fills its whole buffer first, would hold back
    the end of the archive while, say, gzip skips zero padding that never ends.
    """

    def __init__(self, read: Callable[[], bytes]) -> None:
        import queue
        import threading

        self.chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=8)
        self.pending = b""
        self.pos = 0  # in self.pending
        self.offset = 0  # bytes handed out so far
        self.limit: int | None = None  # handing out more than this raises (see Header)
        self.done = False
        self.stopped = False
        threading.Thread(target=self._pump, args=(read,), daemon=True).start()

    def _pump(self, read: Callable[[], bytes]) -> None:
        try:
            while not self.stopped:
                chunk = read()
                self.chunks.put(chunk)
                if not chunk:
                    return
        except BaseException as e:  # handed to the reader, raised there
            self.chunks.put(e)

    def _next(self, timeout: float | None = None) -> bool:
        """Take the next chunk; False at the end of the input."""
        got = self.chunks.get(timeout=timeout)
        if isinstance(got, BaseException):
            self.done = True
            raise got
        if not got:
            self.done = True
            return False
        self.pending, self.pos = got, 0
        return True

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes, fewer when that is what has come so far; b"" at the end.

        (Never waiting for more than one byte: the end of the archive may be
        followed by input that never comes.)
        """
        if n == 0 or (self.pos == len(self.pending) and (self.done or not self._next())):
            return b""
        end = len(self.pending) if n < 0 else self.pos + n
        data = self.pending[self.pos:end]
        self.pos += len(data)
        self.offset += len(data)
        if self.limit is not None and self.offset > self.limit:
            raise UnpackError(f"a tarball member's headers are larger than {MAX_HEADERS >> 20} MiB")
        return data

    def drain(self) -> None:
        """Read on after the end of the archive, within bounds.

        That takes the padding of the last record and a compressed stream's
        trailer (checked), so a pipe feeding us is not cut off early; but it
        stops after MAX_TRAILING bytes, or DRAIN_IDLE seconds without data,
        so that input which never ends never hangs the unpacker.
        """
        import queue

        left = MAX_TRAILING - (len(self.pending) - self.pos)
        try:
            while left > 0 and not self.done and self._next(timeout=DRAIN_IDLE):
                left -= len(self.pending)
        except queue.Empty:
            pass
        self.pending, self.pos = b"", 0

    def close(self) -> None:
        """Stop the thread: it reads at most one more chunk."""
        import queue

        self.stopped = True
        try:
            while True:
                self.chunks.get_nowait()
        except queue.Empty:
            pass


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
                raise UnpackError(f"tarball member refers to a missing path: {member}") from None
            os.mkdir(name, 0o755, dir_fd=parent)
            self.made.add(parts)
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as e:
            if e.errno == errno.ENOTDIR and create and self._is_whiteout(parent, name):
                # a directory added where this layer whited out the lower one
                os.unlink(name, dir_fd=parent)
                os.mkdir(name, 0o755, dir_fd=parent)
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
                os.setxattr(fd, OPAQUE_XATTR, b"y")
                return fd
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnpackError(
                    f"unsafe tarball member (goes through a symlink or file): {member}"
                ) from None
            raise

    def _is_whiteout(self, pfd: int, name: str) -> bool:
        """Whether name is a whiteout this unpacker made (device nodes from the tarball are skipped)."""
        if not self.oci:
            return False
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0

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
        if stat.S_ISDIR(st.st_mode):
            if not want_dir:
                self._forget_below(parts)
                self._rmtree_at(pfd, name)
        else:
            os.unlink(name, dir_fd=pfd)
        return st.st_mode

    @staticmethod
    def _rmtree_at(pfd: int, name: str) -> None:
        """Remove a directory tree, without recursion and with two fds open at most.

        It climbs back up through "..", checking that it arrives where it came from.
        """
        fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        # per level: the directory's name, (dev, ino) of its parent, its subdirectories left to remove
        stack: list[tuple[str, tuple[int, int], list[str]]] = []
        here = name
        try:
            while True:
                os.fchmod(fd, 0o700)
                subdirs = []
                for entry in os.listdir(fd):
                    if stat.S_ISDIR(os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode):
                        subdirs.append(entry)
                    else:
                        os.unlink(entry, dir_fd=fd)
                st = os.fstat(fd)
                stack.append((here, (st.st_dev, st.st_ino), subdirs))
                while stack and not stack[-1][2]:
                    here, _, _ = stack.pop()
                    if not stack:
                        os.close(fd)
                        fd = -1
                        os.rmdir(here, dir_fd=pfd)
                        return
                    up = os.open("..", _DIR_FLAGS, dir_fd=fd)
                    os.close(fd)
                    fd = up
                    st = os.fstat(fd)
                    if (st.st_dev, st.st_ino) != stack[-1][1]:
                        raise UnpackError("a directory being replaced was moved while unpacking")
                    os.rmdir(here, dir_fd=fd)
                here = stack[-1][2].pop()
                down = os.open(here, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = down
        finally:
            if fd >= 0:
                os.close(fd)

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
            self._whiteout(pfd, name, parts, info.name)
            return
        self._add(tar, info, parts, pfd, name)
        self.made.add(parts)

    def _add(self, tar: tarfile.TarFile, info: tarfile.TarInfo, parts: tuple[str, ...], pfd: int, name: str) -> None:
        if info.isdir():
            was = self._clear(pfd, name, parts, want_dir=True)
            if stat.S_ISDIR(was):
                fd = self.dir_fd(parts, info.name)
                os.fchmod(fd, os.fstat(fd).st_mode & 0o7777 | 0o700)
            else:
                os.mkdir(name, 0o700, dir_fd=pfd)
                if was and self.oci and stat.S_ISCHR(was):
                    # replaces this layer's whiteout: the lower directory stays hidden
                    os.setxattr(self.dir_fd(parts, info.name), OPAQUE_XATTR, b"y")
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
            self._clear(pfd, name, parts, want_dir=False)
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
            if src_parts[:len(parts)] == parts:
                raise UnpackError(f"hard link replaces the directory that holds its target in tarball: {info.name}")
            self._clear(pfd, name, parts, want_dir=False)
            os.link(src_parts[-1], name, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
        elif info.isfifo():
            self._clear(pfd, name, parts, want_dir=False)
            os.mkfifo(name, 0o600, dir_fd=pfd)
            owned = self._own(name, info, pfd)
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=pfd)
            try:
                os.fchmod(fd, self._mode(info, owned))
            finally:
                os.close(fd)
        # other member types (sparse handled as regular by tarfile) are ignored

    def _whiteout(self, pfd: int, name: str, parts: tuple[str, ...], member: str) -> None:
        """An OCI whiteout becomes its overlayfs form in the layer.

        Whiteouts hide what lower layers hold, never what this layer adds, in
        whatever order they come (OCI image spec, "Whiteouts"): a name this
        layer adds stays (a directory is made opaque), otherwise a whiteout
        device stands in for it, to be replaced should the layer add it later.
        """
        if name == OPAQUE:
            # the directory hides everything below it in lower layers
            os.setxattr(pfd, OPAQUE_XATTR, b"y")
            return
        hidden = name[len(WHITEOUT):]
        if not hidden or hidden in (".", "..") or "/" in hidden:
            raise UnpackError(f"invalid whiteout in layer: {member}")
        target = parts[:-1] + (hidden,)
        if not self.fresh or target in self.made:
            try:
                st = os.stat(hidden, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                if stat.S_ISDIR(st.st_mode):
                    os.setxattr(self.dir_fd(target, member), OPAQUE_XATTR, b"y")
                return  # a file (or whiteout) of this layer hides the lower one already
        # a 0:0 character device: unprivileged users may make this one (Linux >= 5.8)
        os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
        self.made.add(target)

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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _header_type(reader: ReadAhead) -> type[tarfile.TarInfo]:
    """tarfile's header parser, held to GNU tar's rules and to MAX_HEADERS.

    tarfile quietly ends an archive at a header with a bad checksum (past
    the first): GNU tar reports it and fails, and so do we. A member's extra
    headers (PAX records, GNU long names, sparse maps) are read into memory
    whole, so they may not be larger than MAX_HEADERS.
    """

    class Header(tarfile.TarInfo):
        __slots__ = ()

        @classmethod
        def fromtarfile(cls, tar: tarfile.TarFile) -> Header:
            if reader.limit is not None:  # the real header after a PAX or long-name one
                return super().fromtarfile(tar)
            reader.limit = reader.offset + MAX_HEADERS + tarfile.RECORDSIZE  # tarfile reads whole records
            try:
                return super().fromtarfile(tar)
            except _InvalidHeader as e:
                raise UnpackError(f"not a valid tarball: corrupt header at byte {tar.offset} ({e})") from None
            except RecursionError:
                raise UnpackError("not a valid tarball: too many extended headers in a row") from None
            finally:
                reader.limit = None

    return Header


def unpack(stream: BinaryIO, dest: str, oci: bool = False) -> int:
    """Unpack a (possibly compressed) tarball stream into dest; return the member count.

    With oci=True, the tarball is an OCI layer: its whiteouts become overlayfs
    whiteouts and opaque directories, and an empty layer is fine.
    """
    unpacker = Unpacker(dest, oci)
    count = 0
    old_umask = os.umask(0)
    plain: ReadAhead | None = None
    try:
        try:
            plain = open_decompressed(stream)
            with tarfile.open(fileobj=plain, mode="r|", tarinfo=_header_type(plain)) as tar:  # type: ignore[call-overload]
                while (info := tar.next()) is not None:
                    tar.members.clear()  # tarfile keeps every member: memory would grow with the input
                    unpacker.add(tar, info)
                    count += 1
            plain.drain()
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
        if plain is not None:
            plain.close()
        os.umask(old_umask)
        unpacker.close()
    return count
