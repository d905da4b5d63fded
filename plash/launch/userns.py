"""Enter plash's user and mount namespace.

Who needs what is decided once per process, from /proc/self (no trial
syscalls): `privileged()` callers (uid 0 with CAP_SYS_ADMIN, a root on a
host or in a --privileged container) get only a private mount namespace.
Everyone else, root of a default Docker or podman container included,
gets a user namespace where they are uid/gid 0:

- an ordinary user with a subuid/subgid range (and newuidmap/newgidmap
  that can work here) has ids 1..N mapped to that range;
- a root without CAP_SYS_ADMIN maps its own ids (it has CAP_SETUID): the
  ranges of /etc/subuid for root where present, else every id of the
  container's own range, one to one;
- otherwise only 0 is mapped. Where the helpers were expected to work and
  do not, plash falls back to that single mapping with a one-line note.
"""

from __future__ import annotations

import os

from plash.errors import LaunchError, os_message
from plash.launch import syscalls

CAP_SETGID = 6
CAP_SETUID = 7
CAP_SYS_ADMIN = 21

_status_cache: dict[str, str] = {}


def _status() -> dict[str, str]:
    """The fields of /proc/self/status that the decision reads (read once)."""
    if not _status_cache:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("CapEff", "NoNewPrivs"):
                        _status_cache[key] = value.strip()
        except OSError:
            pass
        _status_cache.setdefault("read", "")
    return _status_cache


def has_cap(cap: int) -> bool:
    """Whether this process has capability cap in its own user namespace."""
    try:
        return bool(int(_status().get("CapEff", "0"), 16) >> cap & 1)
    except ValueError:
        return False


def privileged() -> bool:
    """uid 0 with CAP_SYS_ADMIN: mounts need no user namespace of plash's own."""
    return os.getuid() == 0 and has_cap(CAP_SYS_ADMIN)


def mapped_ranges(path: str = "/proc/self/uid_map") -> list[tuple[int, int]]:
    """The (first id, count) ranges of this user namespace that map to ids of its parent."""
    out: list[tuple[int, int]] = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    out.append((int(parts[0]), int(parts[2])))
    except (OSError, ValueError):
        pass
    return out


def _within(start: int, count: int, ranges: list[tuple[int, int]]) -> bool:
    return any(s <= start and start + count <= s + c for s, c in ranges)


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


def _sub_ranges() -> tuple[tuple[int, int], tuple[int, int]] | None:
    """This user's (subuid, subgid) ranges, when both exist."""
    import pwd

    uid = os.getuid()
    try:
        name: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    u = _sub_range("/etc/subuid", uid, name)
    g = _sub_range("/etc/subgid", uid, name)
    return (u, g) if u and g else None


def _find(name: str) -> str | None:
    for d in [*(os.environ.get("PATH") or "/usr/bin:/bin").split(":"), "/usr/bin", "/usr/sbin"]:
        path = os.path.join(d, name) if d else ""
        if path and os.access(path, os.X_OK):
            return path
    return None


def _helpers_refusal(ranges: tuple[tuple[int, int], tuple[int, int]]) -> str | None:
    """Why newuidmap/newgidmap cannot map ranges here (None: they can), from cheap checks."""
    if _status().get("NoNewPrivs", "0") != "0":
        return "no_new_privs is set, so their setuid bit is ignored"
    (us, uc), (gs, gc) = ranges
    if not (_within(us, uc, mapped_ranges()) and _within(gs, gc, mapped_ranges("/proc/self/gid_map"))):
        return "the subordinate range is not mapped in this (container's) user namespace"
    for tool in ("newuidmap", "newgidmap"):
        path = _find(tool) or tool
        st = os.stat(path)
        try:
            file_caps = bool(os.getxattr(path, "security.capability"))
        except OSError:
            file_caps = False
        if not (st.st_mode & 0o4000 and st.st_uid == 0) and not file_caps:
            return f"{path} is neither setuid root nor has file capabilities"
        if os.statvfs(path).f_flag & os.ST_NOSUID:
            return f"{path} is on a file system mounted nosuid"
    return None


class Mapping:
    """The id maps of plash's user namespace and who writes them.

    how: "self" (the process itself, after unshare: only its own id, as 0),
    "helpers" (newuidmap/newgidmap, from outside the new namespace) or
    "direct" (a root with CAP_SETUID writes the maps from outside).
    """

    def __init__(self, uid_map: str, gid_map: str, how: str) -> None:
        self.uid_map, self.gid_map, self.how = uid_map, gid_map, how

    @property
    def single(self) -> bool:
        return self.how == "self"


def _single() -> Mapping:
    return Mapping(f"0 {os.getuid()} 1\n", f"0 {os.getgid()} 1\n", "self")


_mapping_cache: list[Mapping] = []


def mapping() -> Mapping | None:
    """The id maps this process's user namespace gets (None: a privileged root makes none)."""
    if _mapping_cache:
        return _mapping_cache[0]
    if privileged():
        return None
    ranges = _sub_ranges()
    if os.getuid() != 0:
        helpers = ranges is not None and _find("newuidmap") is not None and _find("newgidmap") is not None
        why = _helpers_refusal(ranges) if ranges and helpers else None
        if ranges and helpers and why is None:
            (us, uc), (gs, gc) = ranges
            found = Mapping(f"0 {os.getuid()} 1 1 {us} {uc}", f"0 {os.getgid()} 1 1 {gs} {gc}", "helpers")
        else:
            if why:
                _note(f"newuidmap/newgidmap cannot map this user's subordinate ids here: {why}")
            found = _single()
    elif has_cap(CAP_SETUID) and has_cap(CAP_SETGID):
        # A root without CAP_SYS_ADMIN (a default container): its own ids, one to one.
        uids, gids = mapped_ranges(), mapped_ranges("/proc/self/gid_map")
        if ranges and _within(*ranges[0], uids) and _within(*ranges[1], gids):
            (us, uc), (gs, gc) = ranges
            found = Mapping(f"0 0 1\n1 {us} {uc}\n", f"0 0 1\n1 {gs} {gc}\n", "direct")
        elif uids and gids:
            found = Mapping("".join(f"{s} {s} {c}\n" for s, c in uids), "".join(f"{s} {s} {c}\n" for s, c in gids),
                            "direct")
        else:
            found = _single()
    else:
        found = _single()
    _mapping_cache.append(found)
    return found


def id_ranges() -> tuple[tuple[int, int], tuple[int, int]] | None:
    """An ordinary user's (subuid, subgid) ranges when newuidmap/newgidmap can map them here."""
    m = mapping()
    if m is None or m.how != "helpers" or os.getuid() == 0:
        return None
    return _sub_ranges()


def single_mapping() -> bool:
    """Whether plash's user namespace holds only uid 0 (files of other owners show as nobody)."""
    m = mapping()
    return m is not None and m.single


def _note(why: str) -> None:
    """Say once per store why only uid 0 is mapped."""
    from plash import config
    from plash.launch import notes

    notes.once(config.data_dir(), "single-mapping",
               f"{why}; only uid 0 is mapped, so files of other owners show as nobody (said once per store)")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _map_from_outside(pid: int, m: Mapping) -> None:
    """In the forked helper (still in the parent namespace): write pid's maps; exit 0 if both were written."""
    ok = True
    if m.how == "helpers":
        children = [
            os.posix_spawnp(tool, [tool, str(pid), *line.split()], os.environ)
            for tool, line in (("newuidmap", m.uid_map), ("newgidmap", m.gid_map))
        ]
        for child in children:
            _, status = os.waitpid(child, 0)
            ok = ok and os.waitstatus_to_exitcode(status) == 0
    else:
        for name, text in (("uid_map", m.uid_map), ("gid_map", m.gid_map)):
            try:
                _write(f"/proc/{pid}/{name}", text)
            except OSError:
                ok = False
    os._exit(0 if ok else 1)


def _map_self(single: Mapping) -> None:
    """Write the single mapping (made before unshare: the ids read as 65534 after it) of the maps still empty."""
    try:
        gids_missing = not mapped_ranges("/proc/self/gid_map")
        if gids_missing:
            _write("/proc/self/setgroups", "deny")
        if not mapped_ranges():
            _write("/proc/self/uid_map", single.uid_map)
        if gids_missing:
            _write("/proc/self/gid_map", single.gid_map)
    except OSError as e:
        from plash.launch.refusals import id_map_hint  # only on a failure: not on plash run's path

        raise LaunchError(f"cannot map ids in the new user namespace: {os_message(e)}",
                          hint=id_map_hint(e.errno)) from e


_inside: list[bool] = []


def enter(mount_ns: bool = True) -> None:
    """Move this (single-threaded) process into plash's namespaces.

    Once inside the user namespace (a step server's children), only a new
    mount namespace is made.
    """
    m = mapping()
    if m is None or _inside:
        if mount_ns:
            _unshare(syscalls.CLONE_NEWNS)
            _make_mounts_private()
        return
    flags = syscalls.CLONE_NEWUSER | (syscalls.CLONE_NEWNS if mount_ns else 0)
    single = m if m.single else _single()
    if m.single:
        _unshare(flags)
        _map_self(single)
    else:
        # The maps are written from outside the new namespace (newuidmap's
        # setuid bit, or root's CAP_SETUID, means nothing inside), so a helper
        # is forked first and told when to act.
        rfd, wfd = os.pipe()
        me = os.getpid()
        helper = os.fork()
        if helper == 0:
            os.close(wfd)
            try:
                if os.read(rfd, 1) != b"1":
                    os._exit(2)
                _map_from_outside(me, m)
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
            _note("newuidmap/newgidmap failed to map this user's subordinate ids" if m.how == "helpers"
                  else "root could not map its own ids in a user namespace of plash's")
            _map_self(single)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    _inside.append(True)
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
