"""The store commands: ids, maps, rm, clean, shrink, purge, nodepath, parent, data, sudo."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PLASH, Plash
from procs import Exits, descendants, own_pid, wait_for_descendant


def test_store_is_created_on_first_write(plash: Plash, busybox_tgz: Path) -> None:
    assert not plash.store.exists()
    assert plash("data").returncode == 1  # a query creates nothing
    assert not plash.store.exists()
    plash.import_tar(busybox_tgz)
    assert plash.ok("data") == str(plash.store)
    assert (plash.store / "index" / "0").is_symlink()


def test_ids_count_up_and_index_links_are_relative(plash: Plash, busybox_tgz: Path) -> None:
    a = plash.import_tar(busybox_tgz)
    b = plash.import_tar(busybox_tgz)
    assert (a, b) == ("1", "2")
    for i in (a, b):
        link = os.readlink(plash.store / "index" / i)
        assert not link.startswith("/")
    assert plash.ok("parent", a) == "0"
    assert plash.ok("nodepath", a) == str(plash.store / "layer" / "0" / "1")


def test_store_can_be_moved(plash: Plash, image: str) -> None:
    moved = plash.work / "moved"
    os.rename(plash.store, moved)
    plash.store = moved
    assert plash.ok("run", image, "cat", "/etc/os-release").startswith("NAME=busybox")


def test_concurrent_imports_get_distinct_ids(plash: Plash, busybox_tgz: Path) -> None:
    plash.ok("data", "true")  # a write: creates the store, so the imports race only for ids
    procs = [
        subprocess.Popen(plash.command([PLASH, "import-tar", str(busybox_tgz)]), stdout=subprocess.PIPE, text=True, cwd=plash.work)
        for _ in range(6)
    ]
    ids = sorted(int(p.communicate(timeout=120)[0]) for p in procs)
    assert ids == [1, 2, 3, 4, 5, 6]


def test_map_set_get_delete(plash: Plash, image: str) -> None:
    assert plash.ok("map", "mine", image) == ""
    assert plash.ok("map", "mine") == image
    assert not os.readlink(plash.store / "map" / "mine").startswith("/")
    plash.ok("map", "mine", "")
    r = plash("map", "mine")  # an unset key prints nothing, as in the original
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert plash.ok("map", "mine", "") == ""  # deleting again is fine
    r = plash("map", "../evil", image)
    assert r.returncode == 1
    assert r.stderr.startswith("plash error: invalid map name")


def test_rm_removes_descendants_and_their_maps(plash: Plash, image: str) -> None:
    child = plash.ok("create", image, "touch", "/c")
    grandchild = plash.ok("create", child, "touch", "/g")
    other = plash.ok("create", image, "touch", "/o")
    plash.ok("map", "g", grandchild)
    plash.ok("rm", child)
    for gone in (child, grandchild):
        r = plash("run", gone, "true")
        assert (r.returncode, r.stderr) == (1, f"plash error: no image: {gone}\n")
    assert plash.ok("map", "g") == ""  # the key went with its image
    assert plash.ok("run", other, "ls", "/o") == "/o"
    assert os.listdir(plash.store / "tmp") == []


def test_clean_reclaims_dead_owners_only(plash: Plash, image: str) -> None:
    tmp = plash.store / "tmp"
    dead = tmp / "999999999.1.create-dead"
    # a temp dir of a process that is gone, holding a read-only dir
    plash.sh(["sh", "-c", f"mkdir -p {dead}/img/root/ro && touch {dead}/img/root/ro/f && chmod 555 {dead}/img/root/ro"])
    # a temp dir whose owner (pid 1, with its real start time) is alive
    with open("/proc/1/stat") as f:
        start = f.read().rsplit(")", 1)[1].split()[19]
    alive = tmp / f"1.{start}.create-alive"
    plash.sh(["mkdir", str(alive)])
    # a dangling index entry and map entry
    plash.sh(["ln", "-s", "../layer/0/77", str(plash.store / "index" / "77")])
    plash.sh(["ln", "-s", "../index/77", str(plash.store / "map" / "stale")])
    # an image dir without index entry, as a crash while publishing leaves it
    orphan = plash.store / "layer" / "0" / "88"
    plash.sh(["mkdir", "-p", str(orphan / "root")])
    # all of it is there (else what clean must remove below would be missing anyway)
    assert sorted(os.listdir(tmp)) == sorted([dead.name, alive.name])
    assert (dead / "img" / "root" / "ro" / "f").exists()
    assert (plash.store / "index" / "77").is_symlink()
    assert (plash.store / "map" / "stale").is_symlink()
    assert (orphan / "root").is_dir()
    r = plash("clean")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert sorted(os.listdir(tmp)) == [alive.name]
    assert not (plash.store / "index" / "77").is_symlink()
    assert not (plash.store / "map" / "stale").is_symlink()
    assert not orphan.exists()
    assert plash.ok("run", image, "true") == ""


def test_shrink_removes_about_half_oldest_first(plash: Plash, busybox_tgz: Path) -> None:
    ids = [plash.import_tar(busybox_tgz) for _ in range(4)]
    assert plash.ok("shrink") == f"{ids[0]} {ids[1]}"  # the removed ids are the result
    left = sorted(os.listdir(plash.store / "index"))
    assert left == ["0", ids[2], ids[3]]


def test_purge(plash: Plash, image: str) -> None:
    r = plash("purge")  # no terminal, no --yes: refuse
    assert r.returncode == 1
    assert "--yes" in r.stderr
    assert plash.ok("run", image, "true") == ""
    plash.ok("purge", "--yes")
    assert plash.store.is_dir()  # emptied in place: it may be a mount point
    assert [n for n in os.listdir(plash.store) if n != "lock"] == []
    assert [p.name for p in plash.work.iterdir()] == ["store"]


def test_sudo_and_data(plash: Plash, image: str) -> None:
    assert plash.ok("sudo", "id", "-u") == "0"
    assert plash.ok("sudo", "sh", "-c", "cat /proc/self/uid_map | wc -l") == ("2" if plash.user == "sub" else "1")
    assert plash.ok("data", "pwd") == str(plash.store)
    assert "index" in plash.ok("data", "ls").split()


def test_mount_inside_sudo(plash: Plash, image: str) -> None:
    mnt = plash.work / "mnt"
    changes = plash.work / "changes"
    plash.sh(["mkdir", str(mnt)])
    out = plash.ok("sudo", "sh", "-c", f"{PLASH} mount {image} {mnt} && cat {mnt}/etc/os-release && touch {mnt}/x 2>/dev/null || echo read-only")
    assert out.splitlines() == ["NAME=busybox", "ID=busybox", "read-only"]
    out = plash.ok("sudo", "sh", "-c", f"{PLASH} mount {image} {mnt} {changes} && echo new > {mnt}/etc/new")
    assert (changes / "upper" / "etc" / "new").read_text() == "new\n"
    r = plash("mount", image, str(mnt))
    if plash.user != "root":
        assert r.returncode == 1
        assert "plash sudo" in r.stderr
    else:
        subprocess.run(["umount", str(mnt)], check=True)


def test_with_mount_runs_a_host_command_on_the_image(plash: Plash, image: str) -> None:
    out = plash.ok("with-mount", image, "sh", "-c", "pwd; ls")
    lines = out.splitlines()
    assert lines[0].endswith("/mnt/root")
    assert {"bin", "etc"} <= set(lines[1:])
    assert plash("with-mount", image, "sh", "-c", "touch x").returncode != 0  # read-only


def test_export_tar_and_reimport(plash: Plash, image: str) -> None:
    child = plash.ok("create", image, "sh", "-c", "echo v > /etc/v; rm /etc/os-release")
    out = plash.work / "out.tar"
    plash.ok("export-tar", child, "out.tar")  # relative to the caller's cwd
    again = plash.import_tar(out)
    assert plash.ok("run", again, "cat", "/etc/v") == "v"
    assert plash("run", again, "test", "-e", "/etc/os-release").returncode == 1
    r = plash.sh(["sh", "-c", f"{PLASH} export-tar {child} | tar -tf - | grep -c etc/v"])
    assert r.stdout.strip() == "1"


def test_copy(plash: Plash, image: str) -> None:
    dest = plash.work / "copy"
    plash.ok("copy", image, str(dest))
    assert (dest / "etc" / "os-release").read_text().startswith("NAME=busybox")
    assert (dest / "bin" / "sh").is_symlink()
    r = plash("copy", image, str(dest))
    assert r.returncode == 1
    assert f"cannot copy to {dest}: it is not empty" in r.stderr


def test_help_and_version(plash: Plash) -> None:
    assert plash.ok("version") == plash.ok("--version")
    assert "import-tar" in plash.ok("help")
    assert "import-tar" in plash.ok("--help")
    for cmd in ("run", "create", "import-tar", "export-tar", "copy", "mount", "with-mount", "nodepath",
                "parent", "map", "rm", "clean", "shrink", "purge", "sudo", "data", "help", "version"):
        assert plash.ok("help", cmd).startswith(f"Usage: plash {cmd}")
    r = plash("help", "nope")
    assert r.returncode == 1
    assert r.stderr.startswith("plash error: no such command: nope")


@pytest.mark.parametrize("bad", ["0", "99999", "x", "-1", "", "1.5"])
@pytest.mark.parametrize("cmd", ["run", "create", "export-tar", "copy", "with-mount", "nodepath", "parent", "rm", "map"])
def test_bad_image_ids(root_plash: Plash, busybox_tgz: Path, cmd: str, bad: str) -> None:
    plash = root_plash
    plash.import_tar(busybox_tgz)
    before = plash.snapshot()
    args = {"copy": [bad, str(plash.work / "c")], "map": ["key", bad]}.get(cmd, [bad])
    r = plash(cmd, *args)
    if cmd == "map" and bad == "":  # `map KEY ''` deletes KEY, set or not
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
        assert plash.snapshot() == before
        return
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    if bad == "99999":
        assert lines[0] == "plash error: no image: 99999"
    elif bad in ("x", "1.5"):  # could be map names
        assert lines[0] == f"plash error: no image or name: {bad}"
    else:
        assert lines[0] == f"plash error: image must be a positive number, got: {bad!r}"
    assert plash.snapshot() == before
    assert not (plash.work / "c").exists()


def test_bad_ids_as_unprivileged_users(plash: Plash, image: str) -> None:
    before = plash.snapshot()
    for bad in ("0", "99999", "x", "-1", ""):
        r = plash("run", bad, "true")
        assert r.returncode == 1
        assert len(r.stderr.splitlines()) == 1
        assert r.stderr.startswith("plash error:")
    assert plash.snapshot() == before


def test_usage_errors(plash: Plash) -> None:
    r = plash("nodepath")
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == "usage: plash nodepath IMAGE"
    r = plash("no-such-command")
    assert r.returncode == 1
    assert r.stderr.startswith("plash error: no such command: no-such-command")
    r = plash("run")
    assert r.returncode == 1
    assert r.stderr.startswith("usage: plash run")


def test_created_times_order_shrink(plash: Plash, busybox_tgz: Path) -> None:
    a = plash.import_tar(busybox_tgz)
    b = plash.ok("create", a, "true")
    # a is oldest, but removing it would remove b too: more than half of the 2
    assert plash.ok("shrink") == b
    assert sorted(os.listdir(plash.store / "index")) == ["0", a]


def test_killed_import_leaves_nothing_visible(plash: Plash, busybox_tgz: Path) -> None:
    """SIGKILL in the middle of an import: no new image, and clean reclaims the leftovers."""
    image = plash.import_tar(busybox_tgz)
    before = sorted(os.listdir(plash.store / "index"))
    proc = subprocess.Popen(plash.command([PLASH, "import-tar", "-"]), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=plash.work)
    assert proc.stdin is not None
    data = busybox_tgz.read_bytes()
    proc.stdin.write(data[: len(data) // 2])  # half a tarball: the import is under way
    proc.stdin.flush()
    deadline = time.time() + 20
    while not os.listdir(plash.store / "tmp") and time.time() < deadline:
        time.sleep(0.02)
    assert os.listdir(plash.store / "tmp"), "the import never started"
    owner = int(os.listdir(plash.store / "tmp")[0].split(".")[0])  # temp dirs are named after their owner
    assert owner == own_pid(proc)
    wait_for_descendant(owner, bool)  # the unpacking child, forked once the temp dir is there
    with Exits(descendants(owner)) as exits:
        os.kill(owner, 9)
        proc.communicate(timeout=20)  # closes stdin; returns once nothing holds plash's stdout and stderr
        assert exits.wait(timeout=20) == [], "a child of the killed import runs on"
    assert sorted(os.listdir(plash.store / "index")) == before
    assert plash.ok("clean") == ""
    assert os.listdir(plash.store / "tmp") == []
    assert plash.ok("run", image, "true") == ""
    assert plash.import_tar(busybox_tgz) == "2"


def test_rm_and_shrink_leave_images_in_use_alone(plash: Plash, image: str) -> None:
    child = plash.ok("create", image, "touch", "/child")
    proc = subprocess.Popen(plash.command([PLASH, "run", child, "sh", "-c", "echo up; read line"]),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=plash.work)
    assert proc.stdout is not None
    assert proc.stdin is not None
    assert proc.stdout.readline() == "up\n"
    for target in (child, image):  # the running image, and an ancestor of it
        r = plash("rm", target)
        assert r.returncode == 1
        assert r.stderr.splitlines()[0] == f"plash error: image {child} is in use by a running container or build"
    assert plash.ok("shrink") == ""  # image has 2 with its child, which is in use
    assert plash.ok("run", child, "ls", "/child") == "/child"
    proc.stdin.write("done\n")
    proc.stdin.close()
    assert proc.wait(timeout=20) == 0
    plash.ok("rm", image)
    assert plash("run", child, "true").returncode == 1
