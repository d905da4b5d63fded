"""One layer's files as the tar stream of an OCI layer: reproducible, with overlayfs whiteouts as `.wh.` files.

The inverse of unpack's OCI mode (OCI image spec, "Representing Changes"):
a whiteout (either form, see plash.store.whiteouts) becomes an empty
`.wh.NAME` file, a directory marked opaque (user.overlay.opaque "y") gets
a `.wh..wh..opq` member right after its own, and overlayfs' own xattrs are
left out.

The same files give the same bytes on every machine: members in byte order
of their names, each directory before what it holds; numeric owners, no
owner names; modification times clamped to `clamp` (seconds since the
epoch: SOURCE_DATE_EPOCH's rule); xattrs in name order; PAX records only
where ustar cannot hold a value (long names, big sizes or ids, xattrs);
hard links (one inode seen twice in the layer) as links to the first name.
Owners are read as the process sees them: run inside the user namespace,
they are the ids the container sees.

Only the standard library: this runs in a launcher child.
"""

from __future__ import annotations

import errno
import os
import stat

from plash.errors import PlashError
from plash.store.whiteouts import OPAQUE, OPAQUE_XATTR, WHITEOUT, is_file_whiteout

BLOCK = 512
OVERLAY_XATTRS = (b"user.overlay.", b"trusted.overlay.")
REG, LNK, SYM, CHR, BLK, DIR, FIFO, PAX = b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"x"
# The largest value of an octal field of each width (NUL-terminated): beyond it, a PAX record.
MAX_8 = 0o7777777
MAX_12 = 0o77777777777


def pax_record(key: bytes, value: bytes) -> bytes:
    """Pure: one PAX record, `LEN key=value\\n`, LEN counting itself."""
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while n != len(str(n)) + len(body):
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def header(name: bytes, kind: bytes, mode: int = 0, uid: int = 0, gid: int = 0, size: int = 0, mtime: int = 0,
           link: bytes = b"", dev: tuple[int, int] = (0, 0), xattrs: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """Pure: the blocks that start one member: a PAX header where ustar falls short, then the ustar header."""
    records = []
    if len(name) > 100:
        records.append(pax_record(b"path", name))
        name = name[:100]
    if len(link) > 100:
        records.append(pax_record(b"linkpath", link))
        link = link[:100]
    if size > MAX_12:
        records.append(pax_record(b"size", b"%d" % size))
    if uid > MAX_8:
        records.append(pax_record(b"uid", b"%d" % uid))
    if gid > MAX_8:
        records.append(pax_record(b"gid", b"%d" % gid))
    records.extend(pax_record(b"SCHILY.xattr." + k, v) for k, v in xattrs or ())
    out = b""
    if records:
        data = b"".join(records)
        out = _ustar(b"PaxHeader", PAX, 0o644, 0, 0, len(data), 0, b"", (0, 0)) + data + _pad(len(data))
    return out + _ustar(name, kind, mode, uid if uid <= MAX_8 else 0, gid if gid <= MAX_8 else 0,
                        size if size <= MAX_12 else 0, min(mtime, MAX_12), link, dev)


def _ustar(name: bytes, kind: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, link: bytes,
           dev: tuple[int, int]) -> bytes:
    fields = [
        name.ljust(100, b"\0"), _octal(mode, 8), _octal(uid, 8), _octal(gid, 8), _octal(size, 12),
        _octal(mtime, 12), b" " * 8, kind, link.ljust(100, b"\0"), b"ustar\x0000", b"\0" * 32, b"\0" * 32,
        _octal(dev[0], 8) if kind in (CHR, BLK) else b"\0" * 8,
        _octal(dev[1], 8) if kind in (CHR, BLK) else b"\0" * 8, b"\0" * 155, b"\0" * 12,
    ]
    block = bytearray(b"".join(fields))
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _pad(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


class Packer:
    """Writes the members of one layer dir to an fd, in order; headers are buffered, file contents sent by the kernel."""

    def __init__(self, out: int, clamp: int) -> None:
        self.out, self.clamp = out, max(0, clamp)
        self.buf = bytearray()
        self.links: dict[tuple[int, int], bytes] = {}

    def flush(self) -> None:
        with memoryview(self.buf) as whole:
            view = whole
            while view:
                view = view[os.write(self.out, view):]
            view.release()
        self.buf.clear()

    def add(self, block: bytes) -> None:
        self.buf += block
        if len(self.buf) >= 1 << 16:
            self.flush()

    def member(self, path: bytes, st: os.stat_result, kind: bytes, size: int = 0, link: bytes = b"",
               xattrs: list[tuple[bytes, bytes]] | None = None) -> None:
        dev = (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in (CHR, BLK) else (0, 0)
        self.add(header(path, kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size,
                        min(max(int(st.st_mtime), 0), self.clamp), link, dev, xattrs))

    def marker(self, path: bytes) -> None:
        """An empty `.wh.` file: owned by 0:0, mode 0, at the clamp time."""
        self.add(header(path, REG, 0, 0, 0, 0, self.clamp))

    def tree(self, dfd: int, prefix: bytes) -> None:
        """The members under the directory at dfd, their names starting with prefix."""
        for name in sorted(os.listdir(dfd), key=os.fsencode):
            raw = os.fsencode(name)
            path = prefix + raw
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            mode = st.st_mode
            if (stat.S_ISCHR(mode) and st.st_rdev == 0) or is_file_whiteout(dfd, name, st):
                self.marker(prefix + WHITEOUT.encode() + raw)
            elif stat.S_ISDIR(mode):
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                try:
                    xattrs, opaque = read_xattrs(fd)
                    self.member(path + b"/", st, DIR, xattrs=xattrs)
                    if opaque:
                        self.marker(path + b"/" + OPAQUE.encode())
                    self.tree(fd, path + b"/")
                finally:
                    os.close(fd)
            elif stat.S_ISREG(mode):
                self.file(dfd, name, path, st)
            elif stat.S_ISLNK(mode):
                self.member(path, st, SYM, link=os.fsencode(os.readlink(name, dir_fd=dfd)))
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                self.member(path, st, CHR if stat.S_ISCHR(mode) else BLK)
            elif stat.S_ISFIFO(mode):
                self.member(path, st, FIFO)
            # a socket has no place in a tarball (tar leaves them out too)

    def file(self, dfd: int, name: str, path: bytes, st: os.stat_result) -> None:
        if st.st_nlink > 1:
            first = self.links.setdefault((st.st_dev, st.st_ino), path)
            if first != path:
                self.member(path, st, LNK, link=first)
                return
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            xattrs, _ = read_xattrs(fd)
            size = os.fstat(fd).st_size
            self.member(path, st, REG, size=size, xattrs=xattrs)
            self.flush()
            sent = 0
            while sent < size:
                n = os.sendfile(self.out, fd, sent, size - sent)
                if n == 0:
                    raise PlashError(f"{os.fsdecode(path)} changed while it was packed (it shrank)")
                sent += n
            self.add(_pad(size))
        finally:
            os.close(fd)

    def end(self) -> None:
        self.add(b"\0" * (2 * BLOCK))
        self.flush()


def read_xattrs(fd: int) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The xattrs to keep of the file at fd, in name order, and whether it is an opaque directory."""
    try:
        names = os.listxattr(fd)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return [], False
        raise
    kept, opaque = [], False
    for name in sorted(names, key=os.fsencode):
        raw = os.fsencode(name)
        if raw.startswith(OVERLAY_XATTRS):
            opaque = opaque or (name == OPAQUE_XATTR and os.getxattr(fd, name) == b"y")
            continue
        try:
            kept.append((raw, os.getxattr(fd, name)))
        except OSError as e:
            if e.errno != errno.ENODATA:  # removed since it was listed
                raise
    return kept, opaque


def pack(root: str, out: int, clamp: int) -> None:
    """Write the layer at root (an image's root/ dir) to fd out as an OCI layer tarball."""
    packer = Packer(out, clamp)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _, opaque = read_xattrs(fd)
        if opaque:  # the layer hides everything below it
            packer.marker(OPAQUE.encode())
        packer.tree(fd, b"")
    finally:
        os.close(fd)
    packer.end()
