"""What the kernel refused and what helps, one sentence per errno (as bubblewrap's die_with_error calls).

These are the hints of the LaunchErrors raised when unshare(2), the id
maps of a new user namespace or mount(2) fail. This module is imported
only after such a failure: it is not on `plash run`'s path.
"""

from __future__ import annotations

import errno
import os

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

# Inside a container (Docker, podman, a CI runner's job container) the sysctls
# are the host's business: what helps is how the container is started.
CONTAINER_FLAGS = ("--security-opt seccomp=unconfined, or --cap-add SYS_ADMIN, or --privileged "
                   "(podman's default seccomp profile allows user namespaces; Docker's does not)")
UNSHARE_IN_CONTAINER = {
    errno.EPERM: "this container's seccomp profile refuses user namespaces (Docker's default does): "
    "start it with " + CONTAINER_FLAGS,
    errno.ENOSYS: "unshare(2) is blocked by this container's seccomp profile: start it with " + CONTAINER_FLAGS,
    errno.ENOSPC: "the limit of user namespaces is reached, or set to 0 for this container: raise "
    "user.max_user_namespaces (a sysctl of the host, or of the container's user namespace)",
}
UNSHARE_AS_ROOT_IN_CONTAINER = {
    errno.EPERM: "this container lets root keep CAP_SYS_ADMIN but its seccomp profile refuses unshare: "
    "start it with --security-opt seccomp=unconfined as well, or --privileged",
}
MOUNT_IN_CONTAINER = {
    errno.EPERM: "this container's seccomp or AppArmor profile refuses mount: start it with "
    "--security-opt seccomp=unconfined --security-opt apparmor=unconfined, or --privileged",
    errno.EACCES: "an LSM (AppArmor, SELinux) of this container denied the mount: start it with "
    "--security-opt apparmor=unconfined (or label=disable for SELinux), or --privileged",
}


def inside_container() -> bool:
    """Whether plash runs inside a container (Docker, podman, systemd-nspawn, LXC)."""
    return (os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
            or bool(os.environ.get("container")))  # noqa: SIM112 (lower case: systemd's container interface)


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


def unshare_hint(err: int | None, as_root: bool = False, container: bool | None = None) -> str:
    """The hint for unshare(2) failing with err; as_root: only a mount namespace was asked for.

    container: whether plash runs inside one (None: find out).
    """
    if container is None:
        container = inside_container()
    if as_root and container and err in UNSHARE_AS_ROOT_IN_CONTAINER:
        return UNSHARE_AS_ROOT_IN_CONTAINER[err]
    if as_root and err in UNSHARE_AS_ROOT:
        return UNSHARE_AS_ROOT[err]
    if container and err in UNSHARE_IN_CONTAINER:
        return UNSHARE_IN_CONTAINER[err]
    return UNSHARE.get(err or 0, UNSHARE_OTHER)


def id_map_hint(err: int | None) -> str | None:
    """The hint for writing a new user namespace's setgroups, uid_map or gid_map failing with err."""
    return ID_MAP.get(err or 0)


def mount_hint(err: int | None, fstype: str | None = None, container: bool | None = None) -> str | None:
    """The hint for mount(2) of fstype (None: a bind) failing with err (container: as for unshare_hint)."""
    if container is None:
        container = inside_container()
    mount = {**MOUNT, **MOUNT_IN_CONTAINER} if container else MOUNT
    if fstype == "overlay":
        return OVERLAY.get(err or 0) or mount.get(err or 0) or OVERLAY_OTHER
    return mount.get(err or 0)
