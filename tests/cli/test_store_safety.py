"""What real users hit: store commands never delete more than asked, queries create nothing,
and scripts written for the original plash keep working."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import PLASH, Plash, need

NO_STORE = "plash error: no store at {} (nothing has been built or imported yet)"


def uid_of(plash: Plash) -> int:
    return pwd.getpwnam(plash.name).pw_uid


def host_mount_ns(plash: Plash) -> str:
    """The mount namespace the user's processes live in outside plash."""
    return plash.sh(["readlink", "/proc/self/ns/mnt"]).stdout.strip()


def visible_entries(store: Path) -> list[str]:
    """What is left in a store dir, leaving out its (empty) lock file."""
    return sorted(n for n in os.listdir(store) if n != "lock")


# -- map ----------------------------------------------------------------------


def test_map_of_an_unset_key_prints_nothing(plash: Plash, image: str) -> None:
    r = plash("map", "unset")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    plash.ok("map", "k", image)
    for _ in range(2):  # deleting twice is fine
        r = plash("map", "k", "")
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert plash("map", "k").stdout == ""


# -- shrink -------------------------------------------------------------------


def test_shrink_never_takes_a_subtree_past_half(plash: Plash, image: str) -> None:
    """The usual store: everything descends from one imported base; shrink must not empty it."""
    a = plash.ok("create", image, "touch", "/a")
    b = plash.ok("create", a, "touch", "/b")
    c = plash.ok("create", b, "touch", "/c")
    r = plash("shrink")
    assert r.returncode == 0, r.stderr
    # 4 images, at most 2 go: image (4 with descendants) and a (3) would overshoot, b (2) fits.
    assert r.stdout == f"{b} {c}\n"
    assert sorted(os.listdir(plash.store / "index"), key=int) == ["0", image, a]
    assert plash.ok("run", a, "ls", "/a") == "/a"


def test_shrink_skips_images_in_use_and_goes_on(plash: Plash, image: str, busybox_tgz: Path) -> None:
    child = plash.ok("create", image, "touch", "/child")
    other = plash.import_tar(busybox_tgz)
    proc = subprocess.Popen(plash.command([PLASH, "run", child, "sh", "-c", "echo up; read line"]),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=plash.work)
    assert proc.stdout is not None
    assert proc.stdin is not None
    try:
        assert proc.stdout.readline() == "up\n"
        r = plash("shrink")  # 3 images, 1 may go: image has 2 with its child, child is in use, other fits
        assert (r.returncode, r.stdout) == (0, f"{other}\n"), r.stderr
    finally:
        proc.stdin.write("done\n")
        proc.stdin.close()
        proc.wait(timeout=20)
    assert plash.ok("run", child, "ls", "/child") == "/child"


# -- purge --------------------------------------------------------------------


def test_purge_empties_the_store_in_place(plash: Plash, image: str, busybox_tgz: Path) -> None:
    plash.store.chmod(0o750)
    plash.work.chmod(0o555)  # the store's parent is not writable
    try:
        r = plash("purge", "--yes")
        assert (r.returncode, r.stdout) == (0, ""), r.stderr
    finally:
        plash.work.chmod(0o755)
    assert plash.store.is_dir()
    assert stat.S_IMODE(plash.store.stat().st_mode) == 0o750
    assert visible_entries(plash.store) == []
    assert not any(p.name != "store" for p in plash.work.iterdir())
    assert plash("nodepath", image).stderr == f"plash error: no image: {image}\n"
    r = plash("map", "k")
    assert (r.returncode, r.stdout) == (0, "")
    assert plash.import_tar(busybox_tgz) == "1"
    assert plash.ok("run", "1", "cat", "/etc/os-release").startswith("NAME=busybox")


def test_purge_of_a_store_that_is_a_mount_point(root_plash: Plash, busybox_tgz: Path) -> None:
    plash = root_plash
    plash.store.mkdir(mode=0o700)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", str(plash.store)],
                       capture_output=True, text=True)
    need(r.returncode == 0, f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        image = plash.import_tar(busybox_tgz)
        plash.ok("map", "k", image)
        r = plash("purge", "--yes")
        assert (r.returncode, r.stdout) == (0, ""), r.stderr
        assert os.path.ismount(plash.store)
        assert visible_entries(plash.store) == []
        assert plash.import_tar(busybox_tgz) == "1"
        assert plash.ok("run", "1", "cat", "/etc/os-release").startswith("NAME=busybox")
    finally:
        subprocess.run(["umount", "-l", str(plash.store)])


def test_purge_reads_the_answer_from_stdin(plash: Plash, image: str) -> None:
    for answer in ("", "no\n", "n\n", "yess\n"):
        r = plash("purge", input=answer)
        assert (r.returncode, r.stdout) == (1, ""), answer
        assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("plash error: "), r.stderr
        assert plash.ok("run", image, "true") == ""
    r = plash.sh(["sh", "-c", f"echo yes | {PLASH} purge"])
    assert (r.returncode, r.stdout) == (0, ""), r.stderr
    assert plash.store.is_dir()
    assert visible_entries(plash.store) == []


@pytest.mark.parametrize("moved", [["locks"], "all"])
def test_store_left_by_a_crashed_purge_is_usable(plash: Plash, image: str, busybox_tgz: Path,
                                                 moved: list[str] | str) -> None:
    """A purge killed while moving entries into its trash dir leaves a usable store; clean reclaims the trash."""
    trash = plash.store / "purge-999999999.1.x"  # named after a process that is gone
    plash.sh(["mkdir", str(trash)])
    names = [n for n in os.listdir(plash.store) if n not in ("lock", trash.name)] if moved == "all" else moved
    for n in names:
        plash.sh(["mv", str(plash.store / n), str(trash / n)])
    if moved == "all":
        assert plash("nodepath", image).stderr == f"plash error: no image: {image}\n"
        new = plash.import_tar(busybox_tgz)
    else:
        assert plash.ok("run", image, "true") == ""
        new = plash.ok("create", image, "touch", "/new")
    assert plash.ok("run", new, "cat", "/etc/os-release").startswith("NAME=busybox")
    r = plash("fsck")
    assert r.returncode == 0 and f"leftover: {trash.name}: left by a purge that was killed" in r.stderr, r.stderr
    r = plash("clean")
    assert r.returncode == 0, r.stderr
    assert not trash.exists()
    assert plash("fsck").returncode == 0
    assert plash.ok("run", new, "true") == ""


# -- queries on a store that does not exist -----------------------------------


@pytest.mark.parametrize("args", [
    ["nodepath", "3"], ["parent", "3"], ["rm", "3"], ["export-tar", "3", "out.tar"], ["export-tar", "3"],
    ["copy", "3", "c"], ["with-mount", "3", "true"], ["mount", "3", "."], ["create", "3", "true"],
    ["map", "key", "3"], ["map", "key"], ["data"], ["fsck"],
])
def test_queries_on_a_missing_store_create_nothing(root_plash: Plash, args: list[str]) -> None:
    plash = root_plash
    r = plash(*args)
    expected = NO_STORE.format(plash.store) if "3" not in args else "plash error: no image: 3"
    assert (r.returncode, r.stdout, r.stderr.splitlines()) == (1, "", [expected])
    assert not plash.store.exists()
    assert sorted(os.listdir(plash.work)) == []


def test_run_on_a_missing_store_creates_nothing(plash: Plash) -> None:
    r = plash("run", "3", "true")
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 1
    assert not plash.store.exists()


@pytest.mark.parametrize("args", [["map", "key", ""], ["shrink"], ["clean"], ["purge", "--yes"]])
def test_nothing_to_delete_in_a_missing_store(plash: Plash, args: list[str]) -> None:
    r = plash(*args)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert not plash.store.exists()


def test_writes_create_the_store_private(plash: Plash, busybox_tgz: Path) -> None:
    assert plash("map", "key").returncode == 1
    assert not plash.store.exists()
    assert plash.import_tar(busybox_tgz) == "1"
    assert stat.S_IMODE(plash.store.stat().st_mode) == 0o700
    assert plash.ok("data") == str(plash.store)


# -- scripts written for the original -------------------------------------------


def test_copy_into_an_existing_empty_dir(plash: Plash, image: str) -> None:
    dest = Path(plash.sh(["mktemp", "-d", "-p", str(plash.work)]).stdout.strip())  # the `copy 1 "$(mktemp -d)"` habit
    assert dest.is_dir()
    r = plash("copy", image, str(dest))
    assert (r.returncode, r.stdout) == (0, ""), r.stderr
    assert (dest / "etc" / "os-release").read_text().startswith("NAME=busybox")
    r = plash("copy", image, str(dest))  # not empty now
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"plash error: cannot copy to {dest}: it is not empty"]
    assert (dest / "etc" / "os-release").exists()
    plash.sh(["touch", str(plash.work / "file")])
    r = plash("copy", image, str(plash.work / "file"))
    assert r.returncode == 1
    assert str(plash.work / "file") in r.stderr


def test_clean_accepts_the_original_options(plash: Plash, image: str) -> None:
    r = plash("clean", "--clean-cache-keys", "--clean-tmp", "--clean-index")
    assert (r.returncode, r.stdout) == (0, ""), r.stderr
    assert plash.ok("run", image, "true") == ""


def test_no_unshare_sudo_keeps_the_callers_namespaces(plash: Plash) -> None:
    host = host_mount_ns(plash)
    r = plash("sudo", "sh", "-c", "readlink /proc/self/ns/mnt; id -u", env={"PLASH_NO_UNSHARE": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [host, str(uid_of(plash))]  # no namespace: the command runs as the caller
    r = plash("sudo", "sh", "-c", "readlink /proc/self/ns/mnt; id -u")
    assert r.stdout.splitlines()[0] != host
    assert r.stdout.splitlines()[1] == "0"
    assert "PLASH_NO_UNSHARE" in plash.ok("help", "sudo")


def test_no_unshare_mount_as_root_is_visible_on_the_host(root_plash: Plash, busybox_tgz: Path) -> None:
    plash = root_plash
    image = plash.import_tar(busybox_tgz)
    mnt = plash.work / "mnt"
    mnt.mkdir()
    try:
        plash.ok("mount", image, str(mnt), env={"PLASH_NO_UNSHARE": "1"})
        assert os.path.ismount(mnt)
        assert (mnt / "etc" / "os-release").read_text().startswith("NAME=busybox")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_no_unshare_with_mount_uses_the_callers_namespace(plash: Plash, image: str) -> None:
    script = "readlink /proc/self/ns/mnt; pwd; head -n1 etc/os-release"
    if plash.user == "root":
        r = plash("with-mount", image, "sh", "-c", script, env={"PLASH_NO_UNSHARE": "1"})
        assert r.returncode == 0, r.stderr
        ns, where, name = r.stdout.splitlines()
        try:
            assert ns == host_mount_ns(plash)
            assert name == "NAME=busybox"
            assert not os.path.ismount(where)
            assert not os.path.exists(where)
        finally:
            if os.path.ismount(where):
                subprocess.run(["umount", "-l", where])
    else:
        r = plash("with-mount", image, "true", env={"PLASH_NO_UNSHARE": "1"})
        assert (r.returncode, r.stdout) == (1, "")
        assert r.stderr.startswith(f"plash error: cannot mount image {image}"), r.stderr
    # inside `plash sudo` (a namespace of its own), any user can: the inner with-mount stays in it
    r = plash("sudo", "sh", "-c", f"readlink /proc/self/ns/mnt; PLASH_NO_UNSHARE=1 {PLASH} with-mount {image} "
              f"sh -c '{script}'")
    assert r.returncode == 0, r.stderr
    outer, inner, _, name = r.stdout.splitlines()
    assert (inner, name) == (outer, "NAME=busybox")
    assert os.listdir(plash.store / "tmp") == []
