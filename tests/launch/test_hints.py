"""Each errno of a refused unshare or mount gets its own one-line hint, naming what helps."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from plash.errors import LaunchError
from plash.launch import mounts, refusals, syscalls, userns

REFUSED = (errno.ENOSPC, errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENOSYS)


def test_every_unshare_errno_has_its_own_sentence() -> None:
    hints = [refusals.unshare_hint(err, container=False) for err in REFUSED]
    assert len(set(hints)) == len(hints)
    assert refusals.UNSHARE_OTHER not in hints
    assert all("\n" not in hint for hint in hints)
    assert "user.max_user_namespaces" in refusals.unshare_hint(errno.ENOSPC, container=False)
    assert "user.max_mnt_namespaces" in refusals.unshare_hint(errno.ENOSPC, container=False)
    assert "kernel.unprivileged_userns_clone=1" in refusals.unshare_hint(errno.EPERM, container=False)
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in refusals.unshare_hint(errno.EACCES, container=False)
    assert "CONFIG_USER_NS" in refusals.unshare_hint(errno.EINVAL, container=False)
    assert "seccomp" in refusals.unshare_hint(errno.ENOSYS, container=False)


def test_root_is_told_about_capabilities_not_unprivileged_namespaces() -> None:
    hint = refusals.unshare_hint(errno.EPERM, as_root=True, container=False)
    assert "CAP_SYS_ADMIN" in hint
    assert "unprivileged" not in hint
    assert refusals.unshare_hint(errno.ENOSPC, as_root=True, container=False) == refusals.unshare_hint(errno.ENOSPC, container=False)


def test_inside_a_container_the_hints_name_the_flags_that_help() -> None:
    """A container's user cannot set the host's sysctls: each errno names how to start the container."""
    eperm = refusals.unshare_hint(errno.EPERM, container=True)
    assert "--security-opt seccomp=unconfined" in eperm and "--cap-add SYS_ADMIN" in eperm
    assert "--privileged" in eperm and "sysctl" not in eperm
    assert "user.max_user_namespaces" in refusals.unshare_hint(errno.ENOSPC, container=True)
    assert "CONFIG_USER_NS" in refusals.unshare_hint(errno.EINVAL, container=True)
    hints = [refusals.unshare_hint(err, container=True) for err in (errno.EPERM, errno.ENOSPC, errno.EINVAL)]
    assert len(set(hints)) == 3 and all("\n" not in h for h in hints)
    as_root = refusals.unshare_hint(errno.EPERM, as_root=True, container=True)
    assert "seccomp=unconfined" in as_root and as_root != eperm
    mount = refusals.mount_hint(errno.EPERM, container=True) or ""
    assert "apparmor=unconfined" in mount and "--privileged" in mount
    # the overlay's own refusals keep their sentences (the kernel, not the container, decides those)
    assert refusals.mount_hint(errno.EINVAL, "overlay", container=True) == refusals.OVERLAY[errno.EINVAL]


def test_a_container_is_recognised_by_its_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("container", "podman")
    assert refusals.inside_container()


def test_apparmor_is_named_when_the_id_map_is_refused() -> None:
    for err in (errno.EACCES, errno.EPERM):
        assert "kernel.apparmor_restrict_unprivileged_userns=0" in (refusals.id_map_hint(err) or "")
    assert refusals.id_map_hint(errno.ENOENT) is None


def test_every_mount_errno_has_its_own_sentence() -> None:
    overlay = [refusals.mount_hint(err, "overlay", container=False) for err in (*REFUSED, errno.ENODEV)]
    assert len(set(overlay)) == len(overlay)
    assert refusals.OVERLAY_OTHER not in overlay
    assert "Linux >= 5.11" in (refusals.mount_hint(errno.EINVAL, "overlay", container=False) or "")
    assert "modprobe overlay" in (refusals.mount_hint(errno.ENODEV, "overlay", container=False) or "")
    assert "fs.mount-max" in (refusals.mount_hint(errno.ENOSPC, container=False) or "")
    assert refusals.mount_hint(errno.ENOENT, "overlay", container=False) == refusals.OVERLAY_OTHER
    assert refusals.mount_hint(errno.ENOENT, container=False) is None
    hints = [*overlay, *(refusals.mount_hint(err, container=False) for err in REFUSED)]
    assert all("\n" not in hint for hint in hints if hint)


def refused_unshare(err: int) -> Callable[[int], None]:
    def unshare(flags: int) -> None:
        raise OSError(err, f"unshare: {errno.errorcode[err]}")  # as syscalls words it

    return unshare


def refused_mount(err: int) -> Callable[..., None]:
    def mount(source: str | None, target: str, *args: object) -> None:
        raise OSError(err, f"mount {target}: {errno.errorcode[err]}")

    return mount


@pytest.mark.parametrize("err", [errno.EINVAL, errno.ENODEV, errno.EPERM])
def test_a_refused_overlay_mount_gives_the_hint_of_its_errno(err: int, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    monkeypatch.setattr(syscalls, "mount", refused_mount(err))
    op = mounts.Overlay("/s/mnt/root", "lowerdir=1/root", cwd=str(tmp_path))
    with pytest.raises(LaunchError) as info:
        mounts.apply([op])
    assert info.value.message == f"cannot mount the image: mount /s/mnt/root: {errno.errorcode[err]}"
    assert info.value.hint == refusals.OVERLAY[err]


def test_a_refused_unshare_gives_the_hint_of_its_errno(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syscalls, "unshare", refused_unshare(errno.ENOSYS))
    with pytest.raises(LaunchError) as info:
        userns.enter()
    assert info.value.message == "cannot create a namespace: unshare: ENOSYS"
    assert info.value.hint == refusals.unshare_hint(errno.ENOSYS, as_root=userns.mapping() is None)
