"""What the kernel refused and what helps, one sentence per errno (as bubblewrap's die_with_error calls).

These are the hints of the LaunchErrors raised when unshare(2), the id
maps of a new user namespace or mount(2) fail. This module is imported
only after such a failure: it is not on `plash run`'s path.
"""

from __future__ import annotations

import errno

UNSHARE = {
    errno.ENOSPC: "the kernel's limit of user or mount namespaces is reached (0 allows none, 32 may nest): "
    "raise the sysctls user.max_user_namespaces and user.max_mnt_namespaces",
    errno.EUSERS: "the kernel's limit of nested user namespaces is reached: run plash fewer namespaces deep",
    errno.EPERM: "the kernel does not let unprivileged users create user namespaces: "
    "on Debian, sysctl -w kernel.unprivileged_userns_clone=1; in a container, its seccomp profile must allow unshare",
    errno.EACCES: "AppArmor denies this program user namespaces (Ubuntu >= 23.10): "
    "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile for it that allows userns",
    errno.EINVAL: "this kernel has no user namespaces: plash needs one built with CONFIG_USER_NS",
    errno.ENOSYS: "unshare(2) is not available, most likely blocked by a seccomp filter: "
    "in a container, its seccomp profile must allow unshare",
}
UNSHARE_OTHER = "plash needs user namespaces: see the sysctls user.max_user_namespaces and kernel.unprivileged_userns_clone"

# Root needs no user namespace, only a mount namespace, and so CAP_SYS_ADMIN.
UNSHARE_AS_ROOT = {
    errno.EPERM: "creating a mount namespace needs CAP_SYS_ADMIN: "
    "in a container, run it with --cap-add SYS_ADMIN and a seccomp profile that allows unshare",
    errno.EINVAL: "this kernel has no mount namespaces: plash needs one built with CONFIG_NAMESPACES",
}

# Under Ubuntu's AppArmor restriction, unshare succeeds but the new user
# namespace gets no capabilities: writing its uid_map is what fails.
ID_MAP = {
    errno.EACCES: "AppArmor confines this program's new user namespace (Ubuntu >= 23.10): "
    "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile for it that allows userns",
    errno.EPERM: "the kernel does not let the new user namespace map this user's ids, as under Ubuntu's "
    "AppArmor userns restriction: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0",
}

OVERLAY = {
    errno.EINVAL: "the kernel refused the overlay options: plash needs Linux >= 5.11, "
    "and a store that is not itself on overlayfs (set PLASH_DATA to another file system)",
    errno.ENODEV: "this kernel has no overlayfs: load its module (modprobe overlay)",
    errno.EPERM: "the kernel does not allow overlay mounts in a user namespace: plash needs Linux >= 5.11",
}
OVERLAY_OTHER = "plash needs Linux >= 5.11 with overlayfs, and a store that is not itself on overlayfs"

MOUNT = {
    errno.EPERM: "the kernel does not allow this mount here: in a container, "
    "its seccomp and AppArmor profiles must allow mount (or run it with --cap-add SYS_ADMIN)",
    errno.EACCES: "a directory on the way is not accessible to this user, or an LSM (AppArmor, SELinux) denied the mount",
    errno.ENOSPC: "the kernel's limit of mounts is reached: raise the sysctl fs.mount-max",
    errno.ENOSYS: "mount(2) is not available, most likely blocked by a seccomp filter: "
    "in a container, its seccomp profile must allow mount",
}


def unshare_hint(err: int | None, as_root: bool = False) -> str:
    """The hint for unshare(2) failing with err; as_root: only a mount namespace was asked for."""
    if as_root and err in UNSHARE_AS_ROOT:
        return UNSHARE_AS_ROOT[err]
    return UNSHARE.get(err or 0, UNSHARE_OTHER)


def id_map_hint(err: int | None) -> str | None:
    """The hint for writing a new user namespace's setgroups, uid_map or gid_map failing with err."""
    return ID_MAP.get(err or 0)


def mount_hint(err: int | None, fstype: str | None = None) -> str | None:
    """The hint for mount(2) of fstype (None: a bind) failing with err."""
    if fstype == "overlay":
        return OVERLAY.get(err or 0) or MOUNT.get(err or 0) or OVERLAY_OTHER
    return MOUNT.get(err or 0)
