"""Enter plash's user and mount namespace.

Root callers get only a private mount namespace. Others get a user namespace
where they are uid/gid 0; with a subuid/subgid range (and newuidmap and
newgidmap installed), ids 1..N map to that range, otherwise only 0 is mapped.
"""

from __future__ import annotations

import os

from plash.errors import LaunchError, os_message
from plash.launch import syscalls


def _sub_range(path: str, uid: int, name: str | None) -> tuple[int, int] | None:
    """The first `start:count` range of /etc/subuid or /etc/subgid for this user."""
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (name, str(uid)):
                    start, count = int(parts[1]), int(parts[2])
                    if count > 0:
                        return start, count
    except (OSError, ValueError):
        pass
    return None


def id_ranges() -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The caller's (subuid, subgid) ranges when both exist and the helpers are installed."""
    import pwd

    uid = os.getuid()
    try:
        name: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    u = _sub_range("/etc/subuid", uid, name)
    g = _sub_range("/etc/subgid", uid, name)
    if not (u and g):
        return None
    if not (_which("newuidmap") and _which("newgidmap")):
        return None
    return u, g


def _which(name: str) -> bool:
    for d in [*(os.environ.get("PATH") or "/usr/bin:/bin").split(":"), "/usr/bin", "/usr/sbin"]:
        if d and os.access(os.path.join(d, name), os.X_OK):
            return True
    return False


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _map_with_helpers(pid: int, ranges: tuple[tuple[int, int], tuple[int, int]]) -> None:
    """In the forked helper: run newuidmap and newgidmap side by side, exit 0 if both worked."""
    (us, uc), (gs, gc) = ranges
    uid, gid = os.getuid(), os.getgid()
    children = [
        os.posix_spawnp(tool, [tool, str(pid), *args], os.environ)
        for tool, args in (
            ("newuidmap", ["0", str(uid), "1", "1", str(us), str(uc)]),
            ("newgidmap", ["0", str(gid), "1", "1", str(gs), str(gc)]),
        )
    ]
    ok = True
    for child in children:
        _, status = os.waitpid(child, 0)
        ok = ok and os.waitstatus_to_exitcode(status) == 0
    os._exit(0 if ok else 1)


def enter(mount_ns: bool = True) -> None:
    """Move this (single-threaded) process into plash's namespaces."""
    if os.getuid() == 0:
        if mount_ns:
            _unshare(syscalls.CLONE_NEWNS)
            _make_mounts_private()
        return
    uid, gid = os.getuid(), os.getgid()
    flags = syscalls.CLONE_NEWUSER | (syscalls.CLONE_NEWNS if mount_ns else 0)
    ranges = id_ranges()
    if ranges is None:
        _unshare(flags)
        try:
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"0 {uid} 1\n")
            _write("/proc/self/gid_map", f"0 {gid} 1\n")
        except OSError as e:
            from plash.launch.refusals import id_map_hint  # only on a failure: not on plash run's path

            raise LaunchError(f"cannot map ids in the new user namespace: {os_message(e)}",
                              hint=id_map_hint(e.errno)) from e
    else:
        # newuidmap must run outside the new namespace (its setuid bit means
        # nothing inside), so a helper is forked first and told when to act.
        rfd, wfd = os.pipe()
        me = os.getpid()
        helper = os.fork()
        if helper == 0:
            os.close(wfd)
            try:
                if os.read(rfd, 1) != b"1":
                    os._exit(2)
                _map_with_helpers(me, ranges)
            finally:
                os._exit(1)
        os.close(rfd)
        try:
            _unshare(flags)
        except BaseException:
            os.close(wfd)
            os.waitpid(helper, 0)
            raise
        os.write(wfd, b"1")
        os.close(wfd)
        _, status = os.waitpid(helper, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise LaunchError(
                "newuidmap/newgidmap could not map this user's subordinate id range",
                hint="check /etc/subuid and /etc/subgid, or remove this user's entries there",
            )
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    if mount_ns:
        _make_mounts_private()


def _unshare(flags: int) -> None:
    try:
        syscalls.unshare(flags)
    except OSError as e:
        from plash.launch.refusals import unshare_hint  # only on a failure: not on plash run's path

        as_root = not flags & syscalls.CLONE_NEWUSER
        raise LaunchError(f"cannot create a namespace: {e.strerror}", hint=unshare_hint(e.errno, as_root)) from e


def _make_mounts_private() -> None:
    """Keep this namespace's mounts from propagating back to the host's."""
    try:
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    except OSError as e:
        from plash.launch.refusals import mount_hint  # only on a failure: not on plash run's path

        raise LaunchError(f"cannot make the mounts private: {e.strerror}", hint=mount_hint(e.errno)) from e
