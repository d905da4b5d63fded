"""Images that try to make plash act on the host: mount points, leaked descriptors, deletion while in use.

Each malicious image is made here, with plash itself (create) from the busybox image.
"""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from pathlib import Path

import pytest
from conftest import Plash


@pytest.fixture
def bait() -> Path:
    """A path under the host's /tmp that no one has made (yet)."""
    p = Path(f"/tmp/plash-bait-{uuid.uuid4().hex[:12]}")
    yield p
    os.system(f"rm -rf '{p}'")


def doctored(busybox_tgz: Path, dest: Path, drop: str, links: dict[str, str]) -> Path:
    """The busybox tarball without the members under `drop`, plus symlinks name -> target."""
    with tarfile.open(busybox_tgz) as src, tarfile.open(dest, "w") as out:
        for m in src.getmembers():
            name = m.name.removeprefix("./")
            if name == drop or name.startswith(drop + "/"):
                continue
            out.addfile(m, src.extractfile(m) if m.isfile() else None)
        for name, target in links.items():
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            out.addfile(link, io.BytesIO())
    dest.chmod(0o644)
    return dest


@pytest.mark.parametrize("how", ["etc-dir", "resolv-conf", "relative"])
def test_mount_points_never_lead_onto_the_host(plash: Plash, busybox_tgz: Path, bait: Path, how: str) -> None:
    drop, links = {
        # /etc is a symlink into the host's /tmp (bound before /etc/resolv.conf is)
        "etc-dir": ("etc", {"etc": f"{bait}/deep"}),
        # /etc/resolv.conf itself points there
        "resolv-conf": ("etc/resolv.conf", {"etc/resolv.conf": f"{bait}/a/b/resolv.conf"}),
        # the same with a relative symlink that climbs out
        "relative": ("etc/resolv.conf", {"etc/resolv.conf": f"../../../../..{bait}/r/resolv.conf"}),
    }[how]
    bad = plash.import_tar(doctored(busybox_tgz, plash.work / "evil.tar", drop, links))
    r = plash("run", bad, "/bin/echo", "ran")
    assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
    assert not os.path.lexists(bait), "plash created a path of the image's choosing on the host"
    # a build step on it neither writes the host nor keeps the mount points it made
    built = plash.ok("build", "--from", bad, "--run", "/bin/echo step")
    assert not os.path.lexists(bait)
    layer = Path(plash.ok("nodepath", built)) / "root"
    assert sorted(os.listdir(layer)) == []
