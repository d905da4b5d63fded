"""A map name wherever a command takes IMAGE (run, export-tar, rm, parent, ...), and the errors of words that are neither."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from conftest import PLASH, Plash


@pytest.fixture
def mybox(plash: Plash, image: str) -> str:
    """An image with a file of its own, named mybox."""
    new = plash.ok("create", image, "sh", "-c", "echo hi > /f")
    plash.ok("map", "mybox", new)
    return new


def test_names_in_place_of_ids(plash: Plash, image: str, mybox: str) -> None:
    assert plash.ok("run", "mybox", "cat", "/f") == "hi"
    assert plash.ok("run", "--", "mybox", "cat", "/f") == "hi"
    assert plash.ok("parent", "mybox") == image
    assert plash.ok("nodepath", "mybox") == plash.ok("nodepath", mybox)
    assert json.loads(plash.ok("inspect", "mybox"))["id"] == int(mybox)
    assert plash.ok("history", "mybox").splitlines()[-1].split()[0] == mybox
    plash.ok("export-tar", "mybox", "out.tar")
    with tarfile.open(plash.work / "out.tar") as t:
        assert t.extractfile("./f").read() == b"hi\n"  # type: ignore[union-attr]
    plash.ok("copy", "mybox", "copied")
    assert (plash.work / "copied" / "f").read_text() == "hi\n"
    assert plash.ok("with-mount", "mybox", "cat", "f") == "hi"
    child = plash.ok("create", "mybox", "sh", "-c", "cat /f > /g")
    assert plash.ok("parent", child) == mybox
    plash.ok("map", "copyname", "mybox")  # a name for the image another name points to
    assert plash.ok("map", "copyname") == mybox
    assert plash.ok("build", "--from-map", "copyname", "--run", "cat /f > /h") != mybox


def test_rm_by_name(plash: Plash, image: str, mybox: str) -> None:
    child = plash.ok("create", "mybox", "true")
    r = plash("rm", "mybox")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stderr.split(": ")[1].split()) == sorted([mybox, child])
    assert plash.ok("map") == ""  # the name went with its image
    r = plash("run", "mybox", "true")
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "plash error: no image or name: mybox\n")
    assert plash.ok("run", image, "true") == ""


@pytest.mark.parametrize("args", [
    ["run", "nosuch", "true"], ["export-tar", "nosuch", "f.tar"], ["rm", "nosuch"], ["parent", "nosuch"],
    ["nodepath", "nosuch"], ["copy", "nosuch", "c"], ["with-mount", "nosuch", "true"], ["create", "nosuch", "true"],
    ["inspect", "nosuch"], ["history", "nosuch"], ["map", "new", "nosuch"], ["mount", "nosuch", "."],
])
def test_a_word_that_is_neither_id_nor_name(root_plash: Plash, busybox_tgz: Path, args: list[str]) -> None:
    plash = root_plash
    plash.ok("map", "mybox", plash.import_tar(busybox_tgz))
    before = plash.snapshot()
    r = plash(*args)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "plash error: no image or name: nosuch\n")
    assert plash.snapshot() == before
    assert sorted(os.listdir(plash.work)) == ["store"]


def test_unknown_names_for_each_user(plash: Plash, image: str) -> None:
    before = plash.snapshot()
    for args in (["run", "nosuch", "true"], ["parent", "nosuch"], ["rm", "nosuch"], ["inspect", "nosuch"]):
        r = plash(*args)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", "plash error: no image or name: nosuch\n"), args
    assert plash.snapshot() == before


def test_names_in_a_missing_store(plash: Plash) -> None:
    for args in (["run", "mybox", "true"], ["parent", "mybox"], ["inspect", "mybox"], ["history", "mybox"]):
        r = plash(*args)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", "plash error: no image or name: mybox\n"), args
    assert not plash.store.exists()


def test_numbers_stay_ids(plash: Plash, image: str) -> None:
    r = plash("map", "99", image)  # a name of digits could never be used: refused
    assert r.returncode == 1 and "digits alone are an image id" in r.stderr
    for args in (["run", "99", "true"], ["parent", "99"], ["inspect", "99"]):
        r = plash(*args)
        assert (r.returncode, r.stderr) == (1, "plash error: no image: 99\n"), args
    r = plash("run", "0", "true")
    assert (r.returncode, r.stderr) == (1, "plash error: image must be a positive number, got: '0'\n")


@pytest.mark.parametrize("hostile", ["../x", "a/b", "../index/1", "..", ".", "/etc", "a\nb", ".hidden", "x" * 300])
def test_hostile_names_are_refused(plash: Plash, image: str, hostile: str) -> None:
    # things a lookup of map/NAME could reach if NAME were not checked: the index, a dir, a link out of the store
    os.symlink("../index/1", plash.store / "x")
    plash.ok("map", "ok", image)
    before = plash.snapshot()
    for args in (["run", hostile, "true"], ["parent", hostile], ["inspect", hostile], ["export-tar", hostile, "t.tar"]):
        r = plash(*args)
        assert (r.returncode, r.stdout) == (1, ""), (args, r.stdout)
        assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("plash error: "), r.stderr
        assert "no image or name" in r.stderr or "image must be a positive number" in r.stderr, r.stderr
    r = plash("map", hostile, image)
    assert r.returncode == 1
    assert r.stderr.startswith("plash error: invalid map name") or hostile == "a\nb"
    assert plash.snapshot() == before
    assert not (plash.work / "t.tar").exists()


def test_dangling_and_odd_map_entries(root_plash: Plash, busybox_tgz: Path) -> None:
    """A map entry whose image is gone, or that plash did not write, is no image (and `map` does not list it)."""
    plash = root_plash
    image = plash.import_tar(busybox_tgz)
    plash.ok("map", "good", image)
    os.symlink("../index/12345", plash.store / "map" / "gone")
    os.symlink("/etc", plash.store / "map" / "outside")
    (plash.store / "map" / "plainfile").write_text("1\n")
    for name in ("gone", "outside", "plainfile"):
        r = plash("run", name, "true")
        assert (r.returncode, r.stderr) == (1, f"plash error: no image or name: {name}\n")
    assert plash.ok("map") == f"good {image}"


def test_run_by_name_stays_fast(plash: Plash, mybox: str) -> None:
    """plash run NAME imports no click, trio, rich or httpx (the name is one readlink)."""
    r = plash.sh([str(Path(PLASH).parent / "python"), "-X", "importtime", "-m", "plash", "run", "mybox", "true"])
    assert r.returncode == 0, r.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines() if "|" in line}
    assert not imported & {"click", "trio", "rich", "httpx"}, imported


def test_a_name_of_digits_alone_is_refused(root_plash: Plash, busybox_tgz: Path) -> None:
    image = root_plash.import_tar(busybox_tgz)
    before = root_plash.snapshot()
    for name in ("5", "0"):
        r = root_plash("map", name, image)
        assert (r.returncode, r.stdout) == (1, "")
        assert r.stderr.splitlines()[0] == f"plash error: invalid map name: '{name}' (digits alone are an image id)"
    assert root_plash.snapshot() == before
