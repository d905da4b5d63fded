"""The only module that calls libc (through _ctypes, ctypes' core): unshare, mount, umount, prctl, statfs."""

from __future__ import annotations

import _ctypes  # ctypes' own core: the ctypes package costs a millisecond more on every plash run
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 2


# The C types these calls take, declared as ctypes declares its c_int & co.
class _Int(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "i"


class _ULong(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "L"


class _Str(_ctypes._SimpleCData):  # type: ignore[type-arg]  # char *, from bytes or None
    _type_ = "z"


class _Char(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "c"


class _StatfsBuf(_ctypes.Array):  # type: ignore[type-arg]
    _type_ = _Char
    _length_ = 256  # struct statfs is 120 bytes on 64-bit Linux


class _Function(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _Int


class _Libc:
    _handle = _ctypes.dlopen(None, 0)  # type: ignore[arg-type]  # None: the program itself, libc included


def _function(name: str, *argtypes: type) -> _Function:
    f = _Function((name, _Libc))  # type: ignore[arg-type]  # ctypes takes any object with a _handle
    f.argtypes = argtypes
    return f


_mount = _function("mount", _Str, _Str, _Str, _ULong, _Str)
_umount2 = _function("umount2", _Str, _Int)
_unshare = _function("unshare", _Int)
_prctl = _function("prctl", _Int, _ULong, _ULong, _ULong, _ULong)
_statfs = _function("statfs", _Str, _StatfsBuf)

PR_SET_PDEATHSIG = 1


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = _ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    def b(s: str | None) -> bytes | None:
        return None if s is None else os.fsencode(s)

    _check(_mount(b(source), b(target), b(fstype), flags, b(data)), f"mount {target}")


OVERLAYFS_MAGIC = 0x794C7630


def fs_type(path: str) -> int:
    """The f_type (magic number) of the file system holding path (statfs(2))."""
    buf = _StatfsBuf()
    _check(_statfs(os.fsencode(path), buf), f"statfs {path}")
    return int.from_bytes(bytes(buf)[:8], sys.byteorder, signed=True)  # f_type comes first, a long (__fsword_t)


def die_with_parent(sig: int) -> None:
    """Get sig when the parent *thread* ends (so: only for children of single-threaded parents)."""
    _check(_prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def umount(target: str, flags: int = 0) -> None:
    _check(_umount2(os.fsencode(target), flags), f"umount {target}")
