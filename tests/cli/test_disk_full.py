"""A store on a small file system (a size-limited tmpfs): running out of space is a clear error, nothing half-made."""

from __future__ import annotations

import io
import os
import pwd
import subprocess
from pathlib import Path

import pytest
import rootfs
from conftest import Plash, need
from servers import Server, add_lxc_image

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
FULL = "the store's file system is full"


@pytest.fixture
def small(plash: Plash) -> Plash:
    """The same user, with its store on an 8 MB tmpfs."""
    need(os.getuid() == 0, "mounting a small tmpfs needs root")
    mnt = plash.work / "small"
    mnt.mkdir()
    pw = pwd.getpwnam(plash.name)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=8m,mode=0755,uid={pw.pw_uid},gid={pw.pw_gid}", "tmpfs",
                        str(mnt)], capture_output=True, text=True)
    need(r.returncode == 0, f"cannot mount a tmpfs: {r.stderr.strip()}")
    plash.store = mnt / "store"
    try:
        yield plash
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def fill(p: Plash) -> None:
    p.sh(["sh", "-c", f"dd if=/dev/zero of={p.store.parent}/fill bs=64k 2>/dev/null; true"])


def unfill(p: Plash) -> None:
    p.sh(["rm", "-f", f"{p.store.parent}/fill"])


def failing(p: Plash, *args: str, env: dict[str, str] | None = None) -> str:
    """Run plash, expect exit 1 with the store as it was; return the last stderr line."""
    before = p.snapshot()
    r = p(*args, env=env)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert p.snapshot() == before
    return r.stderr.splitlines()[-1]


def test_out_of_space(small: Plash, busybox_tgz: Path, shared_dir: Path) -> None:
    p = small
    big = shared_dir / "filler-big.tar.gz"
    if not big.exists():
        with open(big, "wb") as f:  # 4000 files take about 16 MB of tmpfs pages
            rootfs.busybox_tar(f, "gz", filler=4000)
        big.chmod(0o644)
    p.ok("init")
    line = failing(p, "import-tar", str(big))
    assert line == f"plash error: no space left on device while unpacking: {FULL}"
    image = p.import_tar(busybox_tgz)
    line = failing(p, "build", "--from-id", image, "--run", "dd if=/dev/zero of=/big bs=1M count=20")
    assert line.startswith("plash error: build failed at argument 3 (exit 1)")
    assert line.endswith(f"{FULL} ({p.store})")
    line = failing(p, "create", image, "dd", "if=/dev/zero", "of=/big", "bs=1M", "count=20")
    assert "nothing was saved" in line
    assert FULL in line
    # a full file system before anything starts: builds, downloads, creates
    fill(p)
    assert FULL in failing(p, "build", "--from-id", image, "--run", "echo hi > /x")
    assert FULL in failing(p, "create", image, "true")
    assert FULL in failing(p, "import-tar", str(busybox_tgz))
    buf = io.BytesIO()
    rootfs.busybox_tar(buf, "xz")
    server = Server()
    try:
        add_lxc_image(server, "busybox", "1", ARCH, buf.getvalue())
        line = failing(p, "import-lxc", "busybox:1", env={"PLASH_LXC_URL": server.url})
        assert "space" in line, line
    finally:
        server.close()
    assert p.ok("run", image, "cat", "/etc/os-release").startswith("NAME=busybox")  # running needs no room
    r = p("fsck")
    assert (r.returncode, r.stderr) == (0, "")
    unfill(p)
    built = p.ok("build", "--from-id", image, "--run", "echo hi > /x")
    assert p.ok("run", built, "cat", "/x") == "hi"
    assert p("fsck").stderr == ""
