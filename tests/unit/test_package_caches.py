"""Caches of build steps, pure parts: the macro's checks, the hints, the step's shell and mounts, and keys.

apk, dnf, yum and pacman cannot run here (no such images, no network for
them): their part is proved on the script and mounts plash generates.
"""

from __future__ import annotations

import pytest

from plash.engine.plan import layer_keys, split_script
from plash.errors import MacroError
from plash.lang.caches import RECIPES, key_text, step_shell
from plash.lang.macros import expand_argv, expand_file, script_text
from plash.store.caches import name_problem


def ev(*argv: str) -> str:
    return script_text(expand_argv(list(argv)))


def keys(*argv: str) -> list[str]:
    _, raw = split_script(expand_argv(["--from", "1", *argv]))
    return [layer.key for layer in layer_keys("base", raw)]


def test_cache_mount_is_a_hint_and_no_part_of_the_key() -> None:
    assert ev("--cache-mount", "go:/go/pkg//mod/", "a.b-c_1:/x") == (
        "### plash hint: cache-mount=go:/go/pkg/mod\n### plash hint: cache-mount=a.b-c_1:/x")
    assert keys("--cache-mount", "go:/go", "--run", "go build") == keys("--run", "go build")
    # on its own, after a layer break, it makes no layer
    assert keys("--run", "a", "--layer", "--cache-mount", "go:/go") == keys("--run", "a")


def test_package_managers_keys_are_as_before_caches() -> None:
    # the key of an --apt layer is its text without the cache hints: the key plash made before them
    _, raw = split_script(expand_argv(["--from", "1", "--apt", "cowsay"]))
    assert key_text(raw[0][0]) == "apt-get update\napt-get install -y cowsay"
    assert keys("--apt", "cowsay") == keys("--run", "apt-get update", "apt-get install -y cowsay")


@pytest.mark.parametrize(("arg", "problem"), [
    ("..:/x", "starts with '.'"),
    (".x:/x", "starts with '.'"),
    ("a/b:/x", "characters other than"),
    (":/x", "the cache name is empty"),
    ("/x", "it is not NAME:PATH"),
    ("a", "it is not NAME:PATH"),
    ("a:", "is not absolute"),
    ("a:x/y", "is not absolute"),
    ("a:/", "the image's root"),
    ("a://", "the image's root"),
    ("a:/x/../etc", "'.' or '..'"),
    ("a:/root/.cache/pip", "the host's /root"),
    ("a:/home", "the host's /home"),
    ("a:/proc/x", "the host's /proc"),
    ("x" * 65 + ":/x", "longer than 64"),
])
def test_bad_cache_mounts_are_one_located_error(arg: str, problem: str) -> None:
    with pytest.raises(MacroError) as e:
        expand_argv(["--run", "x", "--cache-mount", arg])
    assert str(e.value.where) == "argument 3"
    assert problem in e.value.message and "\n" not in e.value.message


def test_a_bad_cache_mount_in_a_build_file_names_its_line(tmp_path) -> None:
    f = tmp_path / "b.plash"
    f.write_text("--from 1\n--run true\n--cache-mount ../x:/x\n")
    with pytest.raises(MacroError) as e:
        expand_file(str(f))
    assert str(e.value.where) == f"{f}:3"


def test_two_caches_at_one_path_are_refused_where_the_layer_is() -> None:
    _, raw = split_script(expand_argv(["--from", "1", "--cache-mount", "a:/c", "--run", "x",
                                       "--cache-mount", "b:/c"]))
    with pytest.raises(MacroError) as e:
        layer_keys("base", raw)
    assert "two caches at /c" in e.value.message and str(e.value.where) == "argument 5"
    # the same cache twice is one mount
    shell, mounts = step_shell(ev("--cache-mount", "a:/c", "--run", "x", "--cache-mount", "a:/c"), True)
    assert shell == "x" and [(m.name, m.path) for m in mounts] == [("a", "/c")]


def test_the_step_shell_of_apt_points_apt_at_the_caches() -> None:
    text = ev("--apt", "cowsay", "--run", "apt-get clean")
    shell, mounts = step_shell(text, True)
    lines = shell.split("\n")
    assert [(m.name, m.path) for m in mounts] == [("apt", "/var/cache/plash/apt"),
                                                  ("apt-lists", "/var/cache/plash/apt-lists")]
    assert lines[0].startswith("for f in /var/cache/plash/apt-lists/*;")  # the lists are seeded
    opts = "-o Dir::Cache::Archives=/var/cache/plash/apt/ -o APT::Keep-Downloaded-Packages=true"
    assert lines[1:3] == [f"apt-get {opts} update", f"apt-get {opts} install -y cowsay"]
    assert lines[3].startswith("for f in /var/lib/apt/lists/*;")  # and kept
    assert lines[4] == "apt-get clean"  # the user's own apt-get is left alone
    # off: the lines as written, no mount
    assert step_shell(text, False) == ("apt-get update\napt-get install -y cowsay\napt-get clean", [])


@pytest.mark.parametrize(("macro", "lines", "mounts"), [
    ("apk", ["apk update", "apk add git"], [("apk", "/etc/apk/cache")]),
    ("dnf", ["dnf --setopt=keepcache=1 install -y git"], [("dnf", "/var/cache/dnf"), ("dnf5", "/var/cache/libdnf5")]),
    ("yum", ["yum --setopt=keepcache=1 install -y git"], [("dnf", "/var/cache/dnf"), ("dnf5", "/var/cache/libdnf5")]),
    ("pacman", ["pacman -Sy --noconfirm git"], [("pacman", "/var/cache/pacman/pkg")]),
    ("pip", ["pip --cache-dir=/var/cache/plash/pip install git"], [("pip", "/var/cache/plash/pip")]),
    ("pip3", ["pip3 --cache-dir=/var/cache/plash/pip install git"], [("pip", "/var/cache/plash/pip")]),
    ("npm", ["npm --cache=/var/cache/plash/npm install -g git"], [("npm", "/var/cache/plash/npm")]),
])
def test_the_step_shell_of_each_package_manager(macro: str, lines: list[str], mounts: list[tuple[str, str]]) -> None:
    shell, found = step_shell(ev(f"--{macro}", "git"), True)
    assert shell.split("\n")[:len(lines)] == lines
    assert [(m.name, m.path) for m in found] == mounts
    if macro == "apk":  # apk's indexes land where apk looks without the cache too
        assert shell.split("\n")[2].startswith("mkdir -p /var/cache/apk && for f in /etc/apk/cache/APKINDEX.")
    else:
        assert len(shell.split("\n")) == len(lines)


def test_apks_cache_copies_its_indexes_with_a_real_shell(tmp_path) -> None:
    # the line after apk's, run by sh on a tree standing in for the image's root
    import subprocess

    (after,) = RECIPES["apk"].after
    cache = tmp_path / "etc/apk/cache"
    cache.mkdir(parents=True)
    (cache / "APKINDEX.1234abcd.tar.gz").write_text("index")
    (cache / "git-2.45.apk").write_text("pkg")
    script = after.replace("/etc/apk/cache", str(cache)).replace("/var/cache/apk", str(tmp_path / "var/cache/apk"))
    subprocess.run(["sh", "-e", "-c", script], check=True)
    assert sorted(p.name for p in (tmp_path / "var/cache/apk").iterdir()) == ["APKINDEX.1234abcd.tar.gz"]
    cache.joinpath("APKINDEX.1234abcd.tar.gz").unlink()
    cache.joinpath("git-2.45.apk").unlink()
    subprocess.run(["sh", "-e", "-c", script], check=True)  # nothing cached: nothing copied, no failure


def test_a_redefined_package_manager_gets_no_cache() -> None:
    assert ev("--defpm", "apt", "myapt {}", "--apt", "x") == "myapt x"
    assert ev("--apt") == ""  # no packages: nothing, not even hints


def test_cache_names() -> None:
    for good in ("apt", "a.b", "A-1_x"):
        assert name_problem(good) is None
    for bad in ("", ".", "..", ".hidden", "a/b", "a b", "ü", "x" * 65):
        assert name_problem(bad)
