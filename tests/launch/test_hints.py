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
    hints = [refusals.unshare_hint(err) for err in REFUSED]
    assert len(set(hints)) == len(hints)
    assert refusals.UNSHARE_OTHER not in hints
    assert all("\n" not in hint for hint in hints)
    assert "user.max_user_namespaces" in refusals.unshare_hint(errno.ENOSPC)
    assert "user.max_mnt_namespaces" in refusals.unshare_hint(errno.ENOSPC)
    assert "kernel.unprivileged_userns_clone=1" in refusals.unshare_hint(errno.EPERM)
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in refusals.unshare_hint(errno.EACCES)
    assert "CONFIG_USER_NS" in refusals.unshare_hint(errno.EINVAL)
    assert "seccomp" in refusals.unshare_hint(errno.ENOSYS)


def test_root_is_told_about_capabilities_not_unprivileged_namespaces() -> None:
    hint = refusals.unshare_hint(errno.EPERM, as_root=True)
    assert "CAP_SYS_ADMIN" in hint
    assert "unprivileged" not in hint
    assert refusals.unshare_hint(errno.ENOSPC, as_root=True) == refusals.unshare_hint(errno.ENOSPC)


def test_apparmor_is_named_when_the_id_map_is_refused() -> None:
    for err in (errno.EACCES, errno.EPERM):
        assert "kernel.apparmor_restrict_unprivileged_userns=0" in (refusals.id_map_hint(err) or "")
    assert refusals.id_map_hint(errno.ENOENT) is None


def test_every_mount_errno_has_its_own_sentence() -> None:
    overlay = [refusals.mount_hint(err, "overlay") for err in (*REFUSED, errno.ENODEV)]
    assert len(set(overlay)) == len(overlay)
    assert refusals.OVERLAY_OTHER not in overlay
    assert "Linux >= 5.11" in (refusals.mount_hint(errno.EINVAL, "overlay") or "")
    assert "modprobe overlay" in (refusals.mount_hint(errno.ENODEV, "overlay") or "")
    assert "fs.mount-max" in (refusals.mount_hint(errno.ENOSPC) or "")
    assert refusals.mount_hint(errno.ENOENT, "overlay") == refusals.OVERLAY_OTHER
    assert refusals.mount_hint(errno.ENOENT) is None
    hints = [*overlay, *(refusals.mount_hint(err) for err in REFUSED)]
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
    assert info.value.hint == refusals.UNSHARE[errno.ENOSYS]
