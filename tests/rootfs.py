"""Make real root file system tarballs for tests and demos, from Debian's busybox-static.

    python tests/rootfs.py > busybox.tar.gz     # a busybox root file system
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

BUSYBOX = "/bin/busybox"


def applets() -> list[str]:
    out = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    return [a for a in out.stdout.split() if a and a != "busybox"]


def _add(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.DIRTYPE, data: bytes = b"",
         mode: int = 0o755, link: str = "", uid: int = 0, gid: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = 1_700_000_000
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def busybox_tar(out: io.BufferedIOBase | io.BytesIO, compression: str = "gz", full: bool = True,
                filler: int = 0) -> None:
    """Write a busybox root file system tarball.

    full=False leaves out /home, /root, /tmp, /proc, /sys, /dev and
    /etc/resolv.conf, so the launcher must create its mount points.
    filler adds that many small files in nested dirs under /usr/share/filler,
    to make unpacking take a while.
    """
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    mode = "w|" + (compression if compression in ("gz", "bz2", "xz") else "")
    with tarfile.open(fileobj=out, mode=mode) as tar:  # type: ignore[call-overload]
        _add(tar, "./")
        dirs = ["bin", "etc", "usr", "usr/bin", "var"]
        if full:
            dirs += ["home", "root", "tmp", "proc", "sys", "dev"]
        for d in dirs:
            _add(tar, f"./{d}/", mode=0o1777 if d == "tmp" else 0o755)
        _add(tar, "./bin/busybox", tarfile.REGTYPE, busybox)
        for a in applets():
            _add(tar, f"./bin/{a}", tarfile.SYMTYPE, link="busybox", mode=0o777)
        _add(tar, "./etc/passwd", tarfile.REGTYPE, b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n", 0o644)
        _add(tar, "./etc/group", tarfile.REGTYPE, b"root:x:0:\n", 0o644)
        _add(tar, "./etc/os-release", tarfile.REGTYPE, b"NAME=busybox\nID=busybox\n", 0o644)
        _add(tar, "./etc/profile", tarfile.REGTYPE, b"export PROFILE_LOADED=yes\n", 0o644)
        _add(tar, "./etc/owned-by-7", tarfile.REGTYPE, b"seven\n", 0o644, uid=7, gid=7)
        if filler:
            _add(tar, "./usr/share/")
            _add(tar, "./usr/share/filler/")
        for i in range(filler):
            if i % 100 == 0:
                _add(tar, f"./usr/share/filler/{i // 100}/")
            _add(tar, f"./usr/share/filler/{i // 100}/{i}", tarfile.REGTYPE, b"%d\n" % i * 50, 0o644)


def busybox_dir(dest: str) -> None:
    """Unpack the busybox root file system into dest (as plain files)."""
    buf = io.BytesIO()
    busybox_tar(buf, "")
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        tar.extractall(dest, filter="fully_trusted")


if __name__ == "__main__":
    busybox_tar(sys.stdout.buffer, "gz")
    os.close(1)
