"""A store that is itself on overlayfs, as ~/.plashdata is inside any container, for each kind of user.

The kernel refuses an overlay upper dir on overlayfs, and the outer overlay
refuses to create whiteout devices (they would be its own). Here the store
lies on a real overlayfs mounted on the host, so the container's situation
is met without a container; tests/integration/test_containers.py meets it
in real podman containers. Each result is compared with the same work done
in a store on a plain file system.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import PLASH, Plash, make_plash, need

from plash.launch import syscalls

NOTE = "is on overlayfs, which the kernel refuses as an overlay's upper dir"
LAYER_ONE = ("echo one > /f; ln /f /f2; mkdir -p /d/sub; echo x > /d/sub/x; echo keep > /etc/keep; "
             "chown 7:7 /etc/keep 2>/dev/null || true")  # only uid 0 exists for a user without a subuid range
LAYER_TWO = "rm /etc/owned-by-7 /bin/ls; rm -r /d; mkdir /d; echo new > /d/n; echo two > /f; mkdir /e"
# What a person would look at: every path of the tree with its kind, mode, owners, size and content digest.
LISTING = ("find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /tmp -o -path /root -o -path /home \\) "
           "-prune -o -print | sort | while read -r p; do "
           "stat -c '%n %F %a %u %g %s' \"$p\"; [ -f \"$p\" ] && [ ! -L \"$p\" ] && md5sum \"$p\"; done; true")


@pytest.fixture(scope="module")
def overlay_dir():
    """A directory on a real overlayfs (lower, upper and work on the host's /var/tmp), writable by the test users."""
    need(os.getuid() == 0, "mounting an overlayfs for the test needs root")
    base = Path(tempfile.mkdtemp(prefix="plash-ovl-", dir="/var/tmp"))
    for d in ("lower", "upper", "work", "merged"):
        (base / d).mkdir()
    base.chmod(0o755)
    try:
        syscalls.mount("overlay", str(base / "merged"), "overlay", 0,
                       f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work")
    except OSError as e:
        need(False, f"cannot mount an overlayfs here: {e}")
    merged = base / "merged"
    merged.chmod(0o755)
    yield merged
    syscalls.umount(str(merged), syscalls.MNT_DETACH)
    subprocess.run(["rm", "-rf", str(base)])


def on_overlay(p: Plash, overlay_dir: Path) -> Plash:
    """The same user with a store on the overlayfs."""
    home = overlay_dir / f"{p.user}-{os.getpid()}-{p.work.name}"
    home.mkdir()
    if p.user != "root":
        pw = pwd.getpwnam(p.name)
        os.chown(home, pw.pw_uid, pw.pw_gid)
    return Plash(p.user, p.name, home / "store", p.home, p.work, dict(p.env))


def listing(p: Plash, image: str) -> str:
    return p.ok("run", image, "sh", "-c", LISTING)


@pytest.mark.parametrize("user", ["root", "sub", "nosub"])
def test_builds_on_an_overlayfs_store_give_the_same_tree(user: str, users_base: Path, busybox_tgz: Path,
                                                         overlay_dir: Path) -> None:
    plain = make_plash(user, users_base)
    ovl = on_overlay(plain, overlay_dir)
    assert syscalls.fs_type(str(overlay_dir)) == syscalls.OVERLAYFS_MAGIC
    trees, tops = [], []
    for p in (plain, ovl):
        base = p.import_tar(busybox_tgz)
        r = p("build", "--from", base, "--run", LAYER_ONE, "--layer", "--run", LAYER_TWO)
        assert r.returncode == 0, r.stderr
        assert (NOTE in r.stderr) == (p is ovl), r.stderr  # said where the slower path is taken
        top = r.stdout.strip()
        tops.append(top)
        again = p("build", "--from", base, "--run", LAYER_ONE, "--layer", "--run", LAYER_TWO)
        assert (again.returncode, again.stdout.strip(), again.stderr) == (0, top, "")  # cached, and said once
        parent = p.ok("build", "--from", base, "--run", LAYER_ONE)
        trees.append((listing(p, parent), listing(p, top)))
        shown = p.ok("run", top, "sh", "-c", "ls /d; cat /f /f2; ls /etc/owned-by-7 /bin/ls 2>&1; ls -d /e")
        assert shown.splitlines() == ["n", "two", "one", "ls: /etc/owned-by-7: No such file or directory",
                                      "ls: /bin/ls: No such file or directory", "/e"]
    assert trees[0] == trees[1]
    if user != "nosub":  # an owner other than 0 survives the copy into the store
        assert "/etc/keep regular file 644 7 7 5" in trees[1][0].splitlines()
    # on the overlay store the whiteout is a whiteout file: the outer overlay refuses whiteout devices
    hidden = ovl.store / "index" / tops[1] / "root" / "etc" / "owned-by-7"
    assert hidden.is_file() and hidden.stat().st_size == 0
    assert os.getxattr(hidden, "user.overlay.whiteout") == b""
    assert os.getxattr(hidden.parent, "user.overlay.opaque") == b"x"
    plain_hidden = plain.store / "index" / tops[0] / "root" / "etc" / "owned-by-7"
    assert plain_hidden.is_char_device() and plain_hidden.stat().st_rdev == 0


def test_create_with_mount_and_push_on_an_overlayfs_store(plash: Plash, busybox_tgz: Path,
                                                          overlay_dir: Path) -> None:
    p = on_overlay(plash, overlay_dir)
    base = p.import_tar(busybox_tgz)
    made = p.ok("create", base, "sh", "-c", "rm /etc/passwd; echo c > /c; mkdir -p /x/y")
    assert p.ok("run", made, "sh", "-c", "cat /c; ls /etc/passwd 2>&1; ls -d /x/y").splitlines() == [
        "c", "ls: /etc/passwd: No such file or directory", "/x/y"]
    r = p.sh([PLASH, "with-mount", made, "sh", "-c", "test -e etc/passwd || echo gone; cat c"])  # the host's sh
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["gone", "c"]
    # pushed from the overlay store, the whiteout is an OCI .wh. file; imported back, it hides again
    out = p.work / "layout"
    p.ok("push", "--quiet", made, f"oci:{out}:v1")
    back = p.ok("import-docker", "--quiet", f"oci:{out}:v1")
    assert p.ok("run", back, "sh", "-c", "cat /c; ls /etc/passwd 2>&1; true") == (
        "c\nls: /etc/passwd: No such file or directory")
    # and a plain store given the same layout gets the same tree
    plain = Plash(plash.user, plash.name, plash.store, plash.home, plash.work, dict(plash.env))
    there = plain.ok("import-docker", "--quiet", f"oci:{out}:v1")
    assert listing(plain, there) == listing(p, back)
