"""Caches of build steps across builds, for real: --cache-mount on busybox, apt on Debian.

The caches must never show: not in a layer (same tree as without them, but
for the downloads a package manager leaves in its default cache), not in a
key (a build with them and one without reuse each other's layers), not at
run time. apk, dnf and pacman have no image here, and pip and npm are not
run for real yet: tests/unit/test_package_caches.py checks what plash runs
for them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import PLASH, Plash, debian_plash

BASE = ["--from-debootstrap", "bookworm"]


def layer_paths(p: Plash, image: str) -> set[str]:
    """The paths a layer holds (its own files, not its parents'), relative to its root."""
    root = Path(p.ok("nodepath", image)) / "root"
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


def cache_files(p: Plash, name: str) -> list[str]:
    d = p.store / "cache" / name
    return sorted(os.listdir(d)) if d.is_dir() else []


def test_cache_mount_binds_for_the_steps_of_its_layer_only(plash: Plash, image: str) -> None:
    made = plash.ok("build", "--from", image, "--cache-mount", "c1:/var/c", "--run",
                    "echo one > /var/c/f", "echo x > /x")
    assert (plash.store / "cache/c1/f").read_text() == "one\n"
    assert layer_paths(plash, made) == {"x"}  # not the file, not the mount point (nor /var, made for it)
    r = plash("run", made, "sh", "-c", "test -e /var/c || echo absent")
    assert r.stdout == "absent\n", r.stderr
    # a later build's step finds it there
    later = plash.ok("build", "--from", image, "--invalidate-layer", "--cache-mount", "c1:/var/c", "--run",
                     "cat /var/c/f > /got")
    assert plash.ok("run", later, "cat", "/got") == "one"
    # the cache is no part of the key: the same step without it is the layer made with it
    again = plash("build", "--from", image, "--run", "echo one > /var/c/f", "echo x > /x")
    assert (again.returncode, again.stdout.strip(), again.stderr) == (0, made, "")
    # --no-package-cache leaves an explicit cache alone
    r = plash("build", "--no-package-cache", "--from", image, "--invalidate-layer", "--cache-mount", "c1:/c",
              "--run", "test -f /c/f")
    assert r.returncode == 0, r.stderr


def test_a_bad_cache_mount_is_one_line_at_its_place(plash: Plash, image: str) -> None:
    f = plash.work / "bad.plash"
    f.write_text(f"--from {image}\n--run true\n--cache-mount ../up:/x\n")
    before = plash.snapshot()
    r = plash("build", "--eval-file", str(f))
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == f"plash error: {f}:3: --cache-mount '../up:/x': the cache name '../up' starts with '.'"
    assert len(r.stderr.splitlines()) <= 2  # the message, and a hint line
    for arg, why in (("c:relative", "is not absolute"), ("c:/", "the image's root"), ("/x", "not NAME:PATH"),
                     (":/x", "the cache name is empty"), ("c:/root/x", "the host's /root")):
        r = plash("build", "--from", image, "--run", "true", "--cache-mount", arg)
        assert r.returncode == 1 and r.stderr.startswith("plash error: argument 5: --cache-mount"), r.stderr
        assert why in r.stderr.splitlines()[0], r.stderr
    assert plash.snapshot() == before
    assert not (plash.store / "cache").exists()


def test_df_shows_the_caches_and_clean_empties_them(plash: Plash, image: str) -> None:
    plash.ok("build", "--from", image, "--invalidate-layer", "--cache-mount", "big:/big", "--run",
             "dd if=/dev/zero of=/big/file bs=1024 count=300 2>/dev/null")
    usage = json.loads(plash.ok("df", "--format", "json"))
    assert usage["caches"]["count"] == 1 and usage["caches"]["names"]["big"] >= 300 * 1024, usage
    assert usage["total"] >= usage["images"]["bytes"] + usage["caches"]["bytes"]
    assert "big" not in usage["other"]
    text = plash.ok("df")
    assert re.search(r"^caches\s+1\s+\d+\s+\(cache/: big; plash clean --caches\)$", text, re.M), text
    r = plash("clean", "--caches")
    assert r.returncode == 0 and "emptied cache big" in r.stderr, r.stderr
    assert cache_files(plash, "big") == []
    assert json.loads(plash.ok("df", "--format", "json"))["caches"]["names"]["big"] < 300 * 1024
    # plain clean leaves caches alone
    plash.ok("build", "--from", image, "--invalidate-layer", "--cache-mount", "big:/big", "--run", "echo > /big/f")
    plash.ok("clean")
    assert cache_files(plash, "big") == ["f"]


def test_concurrent_builds_that_share_a_cache_take_turns(plash: Plash, image: str) -> None:
    step = ("if [ -e /c/busy ]; then echo overlap; exit 3; fi", "touch /c/busy", "sleep 2", "rm /c/busy",
            "echo done >> /c/log")
    runs = [["build", "--from", image, "--invalidate-layer", "--cache-mount", "shared:/c", "--run", *step]
            for _ in range(2)]
    done = plash.many(runs)
    for r in done:
        assert r.returncode == 0, r.stderr
    assert (plash.store / "cache/shared/log").read_text() == "done\ndone\n"
    assert any("waits for another step using the cache shared" in r.stderr for r in done), [r.stderr for r in done]


# -- Debian: apt for real ---------------------------------------------------------------


@pytest.fixture(params=["root", "sub", "nosub"])
def deb(request, users_base: Path) -> Plash:
    p = debian_plash(request.param, users_base)
    r = p("build", *BASE, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    p.ok("clean", "--caches")
    return p


def need_to_get(stderr: str) -> str:
    found = re.findall(r"^Need to get (.*) of archives\.$", stderr, re.M)
    assert len(found) == 1, stderr[-3000:]
    return found[0]


@pytest.mark.slow
def test_apt_downloads_a_package_once(deb: Plash) -> None:
    job = ["--progress", "plain", *BASE, "--apt", "cowsay", "--invalidate-layer"]
    first = deb("build", *job, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert not need_to_get(first.stderr).startswith("0 B/")
    debs = [f for f in cache_files(deb, "apt") if f.endswith(".deb")]
    assert any(f.startswith("cowsay_") for f in debs), debs
    assert cache_files(deb, "apt-lists"), "apt's lists are kept for the next update"
    second = deb("build", *job, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert need_to_get(second.stderr).startswith("0 B/"), second.stderr[-3000:]  # every .deb from the cache
    assert not re.search(r"^Get:\d+ .*/(main|contrib) amd64 (Packages|Translation)", second.stderr, re.M)
    assert deb.ok("run", second.stdout.strip(), "/usr/games/cowsay", "moo").count("moo") == 1
    # no trace in the layer: the tree of a build without caches, less the .debs apt leaves in its own cache dir
    plain = deb("build", "--no-package-cache", *job, timeout=600)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert not need_to_get(plain.stderr).startswith("0 B/")  # it downloaded them itself

    def outside_archives(paths: set[str]) -> set[str]:
        return {p for p in paths if not p.startswith("var/cache/apt/archives")}

    cached, uncached = layer_paths(deb, second.stdout.strip()), layer_paths(deb, plain.stdout.strip())
    assert not [p for p in cached if p.startswith(("var/cache/plash", "var/cache/apt/archives"))], sorted(cached)
    assert outside_archives(cached) == outside_archives(uncached)
    assert any(p.startswith("var/cache/apt/archives/cowsay_") for p in uncached)
    assert [p for p in cached if "apt.conf.d" in p] == []
    history = [json.loads(deb.ok("inspect", i.stdout.strip()))["layers"][-1]["created_by"].splitlines()[:2]
               for i in (second, plain)]
    assert history[0] == history[1] == ["apt-get update", "apt-get install -y cowsay"]  # the cache's words not
    # the key is the same with and without caches: each reuses the other's layer
    made = deb.ok("build", "--no-package-cache", *BASE, "--apt", "cowsay")
    again = deb("build", *BASE, "--apt", "cowsay")
    assert (again.stdout.strip(), again.stderr) == (made, "")
    # emptied (as each user: apt hands its partial dir to _apt, which may be a subordinate id)
    r = deb("clean", "--caches")
    assert r.returncode == 0 and "emptied cache apt" in r.stderr, r.stderr
    assert cache_files(deb, "apt") == [] and cache_files(deb, "apt-lists") == []


@pytest.mark.slow
def test_two_apt_builds_at_once_share_the_cache(deb: Plash) -> None:
    runs = [["build", *BASE, "--apt", "cowsay", "--invalidate-layer"] for _ in range(2)]
    for r in deb.many(runs, timeout=900):
        assert r.returncode == 0, r.stderr[-3000:]
    assert any(f.startswith("cowsay_") for f in cache_files(deb, "apt"))


def test_warm_takes_no_package_cache_too(plash: Plash, image: str) -> None:
    """A stand-in apk (busybox has none) reports whether apk's cache dir is bound when it runs."""
    fake = ('printf \'#!/bin/sh\\ngrep -q " /etc/apk/cache " /proc/self/mountinfo && echo bound > /result '
            '|| echo unbound > /result\\n\' > /bin/apk && chmod 755 /bin/apk')
    base = plash.ok("build", "--from", image, "--run", fake)
    exe = plash.work / "with-apk"
    r = plash.sh(["sh", "-c", f"cat > {exe}"], input=f"--from {base}\n--apk tool\n")
    assert r.returncode == 0, r.stderr
    seen = []
    for flags in ([], ["--no-cache", "--no-package-cache"], ["--no-cache"]):
        r = plash.sh([PLASH, "warm", "-q", *flags, str(exe)])
        assert r.returncode == 0, r.stderr
        seen.append(plash.ok("run", r.stdout.split()[0], "cat", "/result"))
    assert seen == ["bound", "unbound", "bound"]
