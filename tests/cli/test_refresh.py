"""--no-cache and --pull: rebuild a build's layers, and look at its base's source again.

--no-cache makes every layer again and the new layers replace the old ones
under their keys, so later builds without the flag reuse the new ones;
--pull asks the registry for the base's manifest again: an unchanged one
downloads nothing, a changed one is imported (only the blobs the store
lacks) and the layers on it are made again. The registry is Debian's
docker-registry behind the counting proxy of test_push.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
import rootfs
from conftest import Plash, make_plash, need
from servers import Registry, Server
from test_push import Counting

RANDOM = "cat /proc/sys/kernel/random/uuid > /r"


def steps_run(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("plash: building layer")]


def blob_gets(proxy: Counting, since: int = 0) -> list[str]:
    return [p for m, p in proxy.requests[since:] if m == "GET" and "/blobs/" in p]


@pytest.fixture
def registry(tmp_path: Path) -> Counting:
    need(shutil.which("docker-registry") is not None, "docker-registry is not installed")
    reg = Registry(str(tmp_path))
    proxy = Counting(reg.host)
    yield proxy
    proxy.close()
    reg.close()


def test_no_cache_builds_again_and_later_builds_reuse_the_new_layers(plash: Plash, image: str) -> None:
    macros = ["--from", image, "--run", RANDOM, "--layer", "--run", "cp /r /s"]
    first = plash("build", *macros)
    assert first.returncode == 0 and len(steps_run(first.stderr)) == 2, first.stderr
    old = first.stdout.strip()
    cached = plash("build", *macros)
    assert (cached.stdout.strip(), cached.stderr) == (old, "")
    fresh = plash("build", "--no-cache", *macros)
    assert fresh.returncode == 0 and len(steps_run(fresh.stderr)) == 2, fresh.stderr
    new = fresh.stdout.strip()
    assert new != old
    assert plash.ok("run", new, "cat", "/s") != plash.ok("run", old, "cat", "/s")  # the old image stays
    # the new layers replaced the old ones under their keys
    later = plash("build", *macros)
    assert (later.stdout.strip(), later.stderr) == (new, "")
    # another build on the first layer makes its own layer again, on the new first layer
    other = ["--from", image, "--run", RANDOM, "--layer", "--run", "cp /r /t"]
    made = plash("build", *other)
    assert made.returncode == 0 and len(steps_run(made.stderr)) == 1, made.stderr
    assert plash.ok("run", made.stdout.strip(), "cat", "/t") == plash.ok("run", new, "cat", "/r")


def test_b_and_the_x_form_take_no_cache(plash: Plash, image: str) -> None:
    macros = ["--from", image, "--run", RANDOM]
    seen = [plash.ok("b", "run", *macros, "--", "cat", "/r")]
    for args in (["b", "run", "--no-cache", *macros, "--", "cat", "/r"],
                 ["--no-cache", *macros, "--", "cat", "/r"],
                 ["b", "run", "--quiet", "--no-cache", *macros, "--", "cat", "/r"]):
        r = plash(*args)
        assert r.returncode == 0, r.stderr
        assert len(steps_run(r.stderr)) == (0 if "--quiet" in args else 1), r.stderr
        assert r.stdout.strip() not in seen
        seen.append(r.stdout.strip())
        again = plash("b", "run", *macros, "--", "cat", "/r")  # cached: the new one
        assert (again.stdout.strip(), again.stderr) == (seen[-1], "")


def test_warm_no_cache_builds_shared_layers_once_again(plash: Plash, image: str) -> None:
    files = []
    for name in ("one", "two"):
        f = plash.work / name
        f.write_text(f"--from {image}\n--run\n{RANDOM}\n--layer\n--run\necho {name} > /own\n")
        files.append(str(f))
    first = plash("warm", *files)
    assert first.returncode == 0 and len(steps_run(first.stderr)) == 3, first.stderr
    fresh = plash("warm", "--no-cache", *files)
    assert fresh.returncode == 0 and len(steps_run(fresh.stderr)) == 3, fresh.stderr  # the shared one once
    assert set(fresh.stdout.split()) & set(first.stdout.split()) == set(files)  # new ids only
    later = plash("warm", *files)
    assert (later.stdout, later.stderr) == (fresh.stdout, "")
    ids = [line.split()[0] for line in fresh.stdout.splitlines()]
    assert plash.ok("run", ids[0], "cat", "/r") == plash.ok("run", ids[1], "cat", "/r")


def test_a_build_option_among_the_macros_is_a_one_line_error(plash: Plash, image: str) -> None:
    for args in (["build", "--from", image, "--no-cache", "--run", "true"],
                 ["b", "run", "--from", image, "--pull", "--", "true"],
                 ["--from", image, "--run", "true", "--no-cache", "--", "true"],
                 ["build", "--from", image, "--cache-from=127.0.0.1:9/c"]):
        r = plash(*args)
        name = next(a for a in args[1:] if a.split("=")[0] in ("--no-cache", "--pull", "--cache-from"))
        assert r.returncode == 1 and r.stdout == "", r.stderr
        assert r.stderr.splitlines() == [f"plash error: {name.split('=')[0]} is an option of the build, not a "
                                         f"macro: give it first, before the macros (plash build "
                                         f"{name.split('=')[0]} --from ...)"], r.stderr
    # in the -X form a misplaced one after -- is the command's own
    assert plash.ok("--from", image, "--", "echo", "--no-cache") == "--no-cache"


def test_pull_of_an_image_of_the_store_or_a_tarball_builds_nothing(plash: Plash, image: str,
                                                                   busybox_tgz: Path) -> None:
    for base in (["--from", image], ["--from-tarball", str(busybox_tgz)]):
        macros = [*base, "--run", RANDOM]
        made = plash.ok("build", *macros)
        again = plash("build", "--pull", *macros)
        assert (again.returncode, again.stdout.strip(), steps_run(again.stderr)) == (0, made, []), again.stderr


def test_no_cache_builds_of_one_key_at_once_make_it_once(plash: Plash, image: str) -> None:
    macros = ["--from", image, "--run", f"sleep 2; {RANDOM}"]
    old = plash.ok("build", *macros)
    both = plash.many([["build", "--no-cache", *macros], ["build", "--no-cache", *macros]])
    assert [r.returncode for r in both] == [0, 0], [r.stderr for r in both]
    ids = {r.stdout.strip() for r in both}
    assert len(ids) == 1 and old not in ids, [r.stderr for r in both]  # one waited for the other's fresh layer
    assert sum(len(steps_run(r.stderr)) for r in both) == 1
    assert plash.ok("build", *macros) in ids


def pushed(p: Plash, image: str, ref: str, text: str) -> str:
    """Push image with one layer writing text to /v to ref; return the layer's image."""
    top = p.ok("build", "--from", image, "--run", f"echo {text} > /v")
    p.ok("push", "--quiet", top, ref)
    return top


def test_pull_downloads_nothing_for_an_unchanged_image_and_picks_up_a_changed_one(
        root_plash: Plash, users_base: Path, busybox_tgz: Path, registry: Counting) -> None:
    ref = f"{registry.host}/team/base:latest"
    pusher = root_plash
    base = pusher.import_tar(busybox_tgz)
    pushed(pusher, base, ref, "one")
    p = make_plash("sub", users_base)  # the machine that builds on it
    macros = ["--from-docker", ref, "--run", "cp /v /w"]
    first = p("build", *macros)
    assert first.returncode == 0 and len(steps_run(first.stderr)) == 1, first.stderr
    old = first.stdout.strip()
    assert len(blob_gets(registry)) == 3  # the config, busybox and the layer of /v

    at = len(registry.requests)
    same = p("build", "--pull", *macros)
    assert (same.returncode, same.stdout.strip(), steps_run(same.stderr)) == (0, old, []), same.stderr
    asked = registry.requests[at:]
    assert blob_gets(registry, at) == [] and any("/manifests/latest" in path for _, path in asked), asked
    assert "nothing to download" in same.stderr

    pushed(pusher, base, ref, "two")  # the tag now names another image
    at = len(registry.requests)
    assert p.ok("build", *macros) == old  # without --pull: the cached base, and no request
    assert registry.requests[at:] == []
    changed = p("build", "--pull", *macros)
    assert changed.returncode == 0 and len(steps_run(changed.stderr)) == 1, changed.stderr
    new = changed.stdout.strip()
    assert new != old and p.ok("run", new, "cat", "/w") == "two"
    assert len(blob_gets(registry, at)) == 2  # the config and the new layer: busybox is in the store
    assert p.ok("run", old, "cat", "/w") == "one"  # the old image stays
    later = p("build", *macros)  # later builds use the new base
    assert (later.stdout.strip(), later.stderr) == (new, "")


def test_b_the_x_form_and_warm_take_pull(root_plash: Plash, users_base: Path, busybox_tgz: Path,
                                         registry: Counting, tmp_path: Path) -> None:
    ref = f"{registry.host}/team/app:1"
    pusher = root_plash
    base = pusher.import_tar(busybox_tgz)
    p = make_plash("root", users_base)
    macros = ["--from-docker", ref, "--run", "cp /v /w"]
    build_file = p.work / "app"
    build_file.write_text(f"--from-docker {ref}\n--run\ncp /v /w\n")
    for n, args in enumerate((["b", "run", "--pull", *macros, "--", "cat", "/w"],
                              ["--pull", *macros, "--", "cat", "/w"],
                              ["warm", "--pull", str(build_file)])):
        pushed(pusher, base, ref, f"v{n}")
        r = p(*args)
        assert r.returncode == 0 and len(steps_run(r.stderr)) == 1, r.stderr
        if args[0] == "warm":
            made = r.stdout.split()[0]
            assert p.ok("run", made, "cat", "/w") == f"v{n}"
        else:
            assert r.stdout.strip() == f"v{n}"
        at = len(registry.requests)
        again = p(*args)  # unchanged: nothing built, no blob fetched
        assert again.returncode == 0 and steps_run(again.stderr) == [], again.stderr
        assert blob_gets(registry, at) == []


def test_no_cache_takes_nothing_from_a_layer_cache(root_plash: Plash, users_base: Path, busybox_tgz: Path,
                                                   registry: Counting) -> None:
    cache = f"{registry.host}/ci/cache"
    macros = ["--from-tarball", str(busybox_tgz), "--run", RANDOM]
    filled = root_plash("build", "--cache-to", cache, *macros)
    assert filled.returncode == 0, filled.stderr
    b = make_plash("root", users_base)
    at = len(registry.requests)
    r = b("build", "--no-cache", "--cache-from", cache, *macros)
    assert r.returncode == 0 and len(steps_run(r.stderr)) == 1, r.stderr
    assert registry.requests[at:] == []
    assert b.ok("run", r.stdout.strip(), "cat", "/r") != root_plash.ok("run", filled.stdout.strip(), "cat", "/r")
    # --no-cache --cache-to replaces the cache's entry with the new layer
    again = b("build", "--no-cache", "--cache-to", cache, *macros)
    assert again.returncode == 0 and "pushed layer" in again.stderr, again.stderr
    c = make_plash("root", users_base)
    got = c("build", "--cache-from", cache, *macros)
    assert got.returncode == 0 and steps_run(got.stderr) == [], got.stderr
    assert c.ok("run", got.stdout.strip(), "cat", "/r") == b.ok("run", again.stdout.strip(), "cat", "/r")


def test_pull_of_a_url_keeps_the_base_when_its_content_is_the_same(plash: Plash, busybox_tgz: Path) -> None:
    server = Server()
    try:
        server.state.files["/root.tgz"] = busybox_tgz.read_bytes()
        macros = ["--from-url", f"{server.url}/root.tgz", "--run", RANDOM]
        old = plash.ok("build", *macros)
        same = plash("build", "--pull", *macros)  # fetched and hashed again: the same tarball
        assert (same.returncode, same.stdout.strip(), steps_run(same.stderr)) == (0, old, []), same.stderr
        assert server.state.hits["/root.tgz"] == 2 and "is unchanged" in same.stderr
        assert plash.ok("build", *macros) == old
        other = io.BytesIO()
        rootfs.busybox_tar(other, "xz")  # the same tree, another tarball
        server.state.files["/root.tgz"] = other.getvalue()
        assert plash.ok("build", *macros) == old and server.state.hits["/root.tgz"] == 2  # no --pull: not looked at
        changed = plash("build", "--pull", *macros)
        assert changed.returncode == 0 and len(steps_run(changed.stderr)) == 1, changed.stderr
        new = changed.stdout.strip()
        assert new != old and plash.ok("build", *macros) == new
    finally:
        server.close()
