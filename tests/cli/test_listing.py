"""plash images (ls), inspect, history, map alone and df on real stores, after imports of each kind and builds."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import rootfs
from conftest import PLASH, Plash, need
from oci_images import Layout, layer_tar
from servers import Registry, Server, add_lxc_image

RFC3339 = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")
KEYS = {"id", "parent", "names", "source", "size", "created"}
MIB = 1 << 20
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def rows(plash: Plash, *args: str) -> list[dict]:
    """`plash images --format json`: each line one JSON object with exactly the documented keys."""
    r = plash("images", "--format", "json", *args)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    for row in out:
        assert set(row) == KEYS, row
    return out


def created_near_now(text: str) -> None:
    assert RFC3339.match(text), text
    t = time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(t - time.time()) < 600, text


def build(plash: Plash, *macros: str) -> str:
    r = plash("build", "--quiet", *macros)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


# -- images ---------------------------------------------------------------------


def test_images_after_a_tarball_import_and_builds(plash: Plash, busybox_tgz: Path) -> None:
    base = plash.import_tar(busybox_tgz)
    big = build(plash, "--from", base, "--run", "dd if=/dev/zero of=/big bs=1024 count=1024 2>/dev/null")
    top = build(plash, "--from", base, "--run", "dd if=/dev/zero of=/big bs=1024 count=1024 2>/dev/null",
                "--layer", "--run", "echo one > /one", "echo two > /two")
    plash.ok("map", "mybox", big)
    plash.ok("map", "also", big)
    found = {r["id"]: r for r in rows(plash)}
    assert list(found) == sorted(int(i) for i in (base, big, top))
    b, m, t = found[int(base)], found[int(big)], found[int(top)]
    assert (b["parent"], b["names"], b["source"]) == (0, [], f"tarball {busybox_tgz}")
    assert (m["parent"], m["names"]) == (int(base), ["also", "mybox"])
    assert m["source"] == "dd if=/dev/zero of=/big bs=1024 count=1024 2>/dev/null"
    assert (t["parent"], t["source"]) == (int(big), "echo one > /one; echo two > /two")  # one line per listing
    assert m["size"] >= MIB > t["size"] > 0
    assert b["size"] > 100_000  # busybox
    for row in found.values():
        created_near_now(row["created"])
    r = plash("ls", "--format", "json")  # ls is images
    assert [json.loads(line) for line in r.stdout.splitlines()] == list(found.values())

    # the table: a header, then one aligned row per image; bytes and RFC 3339 times when not on a terminal
    r = plash("images")
    assert (r.returncode, r.stderr) == (0, "")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "PARENT", "NAMES", "SIZE", "CREATED", "SOURCE"]
    cells = [line.split(None, 5) for line in lines[1:]]
    assert [c[:4] for c in cells] == [[str(x["id"]), str(x["parent"]), ",".join(x["names"]) or "-", str(x["size"])]
                                      for x in found.values()]
    assert [c[4] for c in cells] == [x["created"] for x in found.values()]
    assert [c[5] for c in cells] == [x["source"] for x in found.values()]
    starts = {line.index(c[5]) for line, c in zip(lines[1:], cells, strict=True)}
    assert starts == {lines[0].index("SOURCE")}  # aligned


def test_images_on_a_terminal_are_relative_and_human(root_plash: Plash, busybox_tgz: Path) -> None:
    plash = root_plash
    need(shutil.which("script") is not None, "script (util-linux) is not installed")
    plash.import_tar(busybox_tgz)
    r = plash.sh(["script", "-qec", f"{PLASH} images", "/dev/null"], env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    line = r.stdout.replace("\r", "").splitlines()[1]
    assert re.search(r" (just now|\d+ seconds? ago) ", line), line
    assert re.search(r" \d+\.\d (KiB|MiB) ", line), line


def test_images_tree(plash: Plash, busybox_tgz: Path) -> None:
    a = plash.import_tar(busybox_tgz)
    b = plash.ok("create", a, "touch", "/b")
    c = plash.ok("create", b, "touch", "/c")
    other = build(plash, "--from-tarball", str(busybox_tgz), "--run", "touch /other")
    imported = plash.ok("parent", other)  # a base of its own (import-tar's image has no cache key)
    d = plash.ok("create", a, "touch", "/d")
    r = plash("images", "--tree")
    assert (r.returncode, r.stderr) == (0, "")
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["ID", "NAMES"]
    tree = [(len(line) - len(line.lstrip()), line.split()[0]) for line in lines[1:]]
    assert tree == [(0, a), (2, b), (4, c), (2, d), (0, imported), (2, other)]  # each image below its parent
    r = plash("images", "--tree", "--format", "json")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1].startswith("plash error: --tree")


def test_images_of_create_is_what_it_ran(plash: Plash, image: str) -> None:
    new = plash.ok("create", image, "touch", "/x")
    assert rows(plash)[-1]["source"] == "create touch /x"
    assert rows(plash)[-1]["id"] == int(new)


def test_an_empty_or_missing_store_lists_nothing_and_is_not_created(plash: Plash) -> None:
    for args in (["images"], ["ls"], ["images", "--format", "json"], ["images", "--tree"], ["map"]):
        r = plash(*args)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), args
    r = plash("df", "--format", "json")
    assert (r.returncode, r.stderr) == (0, "")
    u = json.loads(r.stdout)
    assert (u["images"], u["total"], u["reclaimable"]["count"]) == ({"count": 0, "bytes": 0}, 0, 0)
    assert plash("df").returncode == 0
    assert not plash.store.exists()
    plash.ok("init")
    for args in (["images"], ["images", "--format", "json"], ["map"]):
        assert plash.ok(*args) == ""


def test_unreadable_dirs_and_foreign_owners_do_not_stop_a_listing(plash: Plash, image: str) -> None:
    """Layers hold files of other ids and dirs of mode 000: sizes come from lstat, unlistable dirs are skipped."""
    new = plash.ok("create", image, "sh", "-c", "mkdir -p /locked/deep && dd if=/dev/zero of=/locked/deep/f bs=1024 count=64"
                   " 2>/dev/null && chmod 000 /locked/deep/f /locked && touch /etc/x-7 && { chown 7:7 /etc/x-7 2>/dev/null; true; }"
                   " && echo x > /etc/x")
    r = plash("images", "--format", "json")
    assert r.returncode == 0, r.stderr
    size = json.loads(r.stdout.splitlines()[-1])["size"]
    if plash.user == "root":
        assert r.stderr == ""
        assert size >= 64 * 1024
    else:  # a dir of mode 000 the user cannot list, even as its owner
        assert r.stderr.splitlines() == ["plash: 1 directory could not be listed; sizes leave out what they hold"]
        assert 0 < size < 64 * 1024
    for args in (["inspect", new], ["history", new], ["df"], ["images"], ["images", "--tree"]):
        r = plash(*args)
        assert r.returncode == 0, (args, r.stderr)


# -- imports of other kinds -------------------------------------------------------


@pytest.fixture(scope="module")
def registry():
    need(shutil.which("docker-registry") is not None and shutil.which("skopeo") is not None,
         "docker-registry and skopeo are not installed")
    work = tempfile.mkdtemp(prefix="plash-registry-")
    reg = Registry(work)
    layout = Layout(Path(work) / "layout")
    buf = io.BytesIO()
    rootfs.busybox_tar(buf, "")
    layout.image([(buf.getvalue(), "gzip"), (layer_tar([("etc/three", "file", "three\n")]), "gzip")],
                 env=["PATH=/bin", "FOO=bar"], cmd=["cat", "/etc/three"], workdir="/opt", tag="two")
    layout.write()
    reg.push(str(layout.path), "two", "test/two:1")
    os.chmod(work, 0o755)
    yield reg
    reg.close()
    shutil.rmtree(work, ignore_errors=True)


def test_images_and_inspect_after_a_docker_import(plash: Plash, registry: Registry) -> None:
    ref = f"{registry.host}/test/two:1"
    top = plash.ok("import-docker", ref)
    plash.ok("map", "two", top)
    found = rows(plash)
    assert found[-1]["id"] == int(top)
    assert (found[-1]["source"], found[-1]["names"]) == (f"docker {ref}", ["two"])
    assert [r["source"] for r in found[:-1]] == [f"docker {ref} layer 1/2", f"docker {ref} layer 2/2"]
    assert [r["parent"] for r in found] == [0, found[0]["id"], found[1]["id"]]
    assert found[0]["size"] > 100_000
    for r in found:
        created_near_now(r["created"])

    info = json.loads(plash.ok("inspect", "two"))
    assert {k: info[k] for k in KEYS} == found[-1]
    assert info["chain"] == [r["id"] for r in found]
    assert (info["oci_env"], info["oci_workdir"], info["oci_cmd"]) == (["PATH=/bin", "FOO=bar"], "/opt",
                                                                        ["cat", "/etc/three"])
    assert info["created_by"].startswith(f"docker {ref} config sha256:")
    by = [layer["created_by"] for layer in info["layers"]]
    assert by[0].startswith(f"docker {ref} layer 1/2 sha256:") and by[1].startswith(f"docker {ref} layer 2/2 sha256:")
    assert [layer["id"] for layer in info["layers"]] == info["chain"]
    assert [layer["size"] for layer in info["layers"]] == [r["size"] for r in found]
    assert isinstance(info["key"], str) and info["key"]

    lines = plash.ok("history", "two").splitlines()
    assert [line.split()[0] for line in lines] == [str(r["id"]) for r in found]
    assert lines[0].split(None, 2)[1:] == [str(found[0]["size"]), by[0]]
    assert plash.ok("run", "two") == "three"  # the name runs the image's OCI command


@pytest.fixture
def lxc_server():
    buf = io.BytesIO()
    rootfs.busybox_tar(buf, "xz")
    s = Server()
    add_lxc_image(s, "busybox", "1", ARCH, buf.getvalue())
    yield s
    s.close()


def test_images_after_an_lxc_import(plash: Plash, lxc_server: Server) -> None:
    r = plash("import-lxc", "busybox:1", env={"PLASH_LXC_URL": lxc_server.url})
    assert r.returncode == 0, r.stderr
    (row,) = rows(plash)
    assert (row["id"], row["parent"], row["names"]) == (int(r.stdout), 0, [])
    assert row["source"] == "lxc busybox:1"
    created_near_now(row["created"])
    assert json.loads(plash.ok("inspect", r.stdout.strip()))["layers"][0]["created_by"] == "lxc busybox:1"


def test_images_after_a_url_import_and_a_url_build(plash: Plash, lxc_server: Server) -> None:
    path = next(p for p in lxc_server.state.files if p.endswith("rootfs.tar.xz"))
    url = f"{lxc_server.url}{path}"
    r = plash("import-url", url)
    assert r.returncode == 0, r.stderr
    built = plash.ok("build", "--from-url", url, "--run", "touch /u")
    found = {row["id"]: row for row in rows(plash)}
    base = found[int(r.stdout)]["source"]
    assert len(base) <= 80 and (base == f"url {url}" or (base.endswith("…") and f"url {url}".startswith(base[:-1])))
    assert found[int(built)]["source"] == "touch /u"
    assert found[int(built)]["parent"] == int(r.stdout)  # the same download: the build's base is the import
    info = json.loads(plash.ok("inspect", built))
    assert [layer["created_by"] for layer in info["layers"]] == [f"url {url}", "touch /u"]  # in full


# -- inspect, history, map, df ----------------------------------------------------


def test_inspect_a_build(plash: Plash, image: str) -> None:
    top = build(plash, "--from", image, "--env", "TERM", "--env-prefix", "LC_", "--mount", "/srv:/data",
                "--run", "echo a > /a", "--layer", "--entrypoint", "cat", "/a", "--run", "echo b > /b")
    plash.ok("map", "app", top)
    info = json.loads(plash.ok("inspect", "app"))
    layers = info["layers"]
    assert info["chain"] == [layer["id"] for layer in layers] == [int(image), layers[1]["id"], int(top)]
    assert (info["id"], info["parent"], info["names"]) == (int(top), layers[1]["id"], ["app"])
    assert [layer["created_by"] for layer in layers][1:] == ["echo a > /a", "echo b > /b"]
    assert layers[0]["created_by"].startswith("tarball ")
    assert info["created_by"] == "echo b > /b" == info["source"]
    assert (info["env"], info["env_prefix"], info["mount"]) == (["TERM"], ["LC_"], ["/srv:/data"])
    assert info["entrypoint"] == "cat /a"
    assert (info["oci_env"], info["oci_workdir"], info["oci_cmd"]) == ([], None, None)
    assert re.fullmatch("[0-9a-f]{64}", info["key"])
    base = json.loads(plash.ok("inspect", image))
    assert base["key"].startswith("random-") and base["chain"] == [int(image)]
    created_near_now(info["created"])
    assert all(RFC3339.match(layer["created"]) for layer in layers)
    assert info["size"] == layers[-1]["size"] > 0
    assert "key" not in rows(plash)[0]  # listing keys stay the documented ones


def test_history(plash: Plash, image: str) -> None:
    top = build(plash, "--from", image, "--run", "dd if=/dev/zero of=/m bs=1024 count=1024 2>/dev/null",
                "--layer", "--run", "touch /t", "echo multi")
    r = plash("history", top)
    assert (r.returncode, r.stderr) == (0, "")
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    cols = [line.split(None, 2) for line in lines]
    assert cols[0][0] == image and cols[0][2].startswith("tarball ")
    assert cols[1][2] == "dd if=/dev/zero of=/m bs=1024 count=1024 2>/dev/null"
    assert int(cols[1][1]) >= MIB
    assert cols[2] == [top, cols[2][1], "touch /t; echo multi"]
    as_json = [json.loads(line) for line in plash.ok("history", "--format", "json", top).splitlines()]
    assert [(str(h["id"]), str(h["size"])) for h in as_json] == [(c[0], c[1]) for c in cols]
    assert as_json[2]["created_by"] == "touch /t\necho multi"


def test_map_alone_lists_every_name_sorted(plash: Plash, image: str) -> None:
    other = plash.ok("create", image, "true")
    for name, target in (("zeta", image), ("alpha", other), ("Mid.1", image), ("5a", other)):
        plash.ok("map", name, target)
    assert plash.ok("map").splitlines() == [f"5a {other}", f"Mid.1 {image}", f"alpha {other}", f"zeta {image}"]
    assert plash.ok("map", "alpha") == other  # one and two arguments as before
    plash.ok("map", "alpha", "")
    plash.ok("rm", other)  # leaves a dangling 5a: not listed
    assert plash.ok("map").splitlines() == [f"Mid.1 {image}", f"zeta {image}"]


def test_df_numbers_follow_the_files(plash: Plash, image: str) -> None:
    def df() -> dict:
        r = plash("df", "--format", "json")
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        return json.loads(r.stdout)

    before = df()
    assert before["images"]["count"] == 1
    assert before["images"]["bytes"] == sum(r["size"] for r in rows(plash))
    assert before["reclaimable"] == {"count": 0, "bytes": 0, "paths": {}}
    build(plash, "--from", image, "--run", "dd if=/dev/zero of=/m bs=1024 count=1024 2>/dev/null")
    after = df()
    assert after["images"]["count"] == 2
    assert after["images"]["bytes"] - before["images"]["bytes"] >= MIB
    assert after["path"] == str(plash.store)

    # what killed processes leave: a temp dir whose owner is gone, an image dir without index entry
    gone = plash.store / "tmp" / "1.0.import-dead"
    orphan = plash.store / "layer" / "0" / "999"
    plash.sh(["sh", "-c", f"mkdir -p {gone}/root {orphan}/root/sub && "
              f"dd if=/dev/zero of={gone}/root/f bs=1024 count=1024 2>/dev/null && "
              f"dd if=/dev/zero of={orphan}/root/sub/g bs=1024 count=512 2>/dev/null"])
    left = df()
    paths = left["reclaimable"]["paths"]
    assert set(paths) == {"tmp/1.0.import-dead", "layer/0/999"}
    assert paths["tmp/1.0.import-dead"] >= MIB and paths["layer/0/999"] >= MIB // 2
    assert left["reclaimable"]["count"] == 2 and left["reclaimable"]["bytes"] == sum(paths.values())
    assert left["tmp"]["count"] == 1 and left["tmp"]["bytes"] >= MIB
    assert left["images"] == after["images"]  # an orphan is no image
    assert left["total"] >= after["total"] + MIB + MIB // 2
    text = plash.ok("df").splitlines()
    assert text[0].split()[:3] == ["images", "2", str(after["images"]["bytes"])]
    assert text[2].split()[:3] == ["reclaimable", "2", str(left["reclaimable"]["bytes"])]
    assert "plash clean" in text[2]
    plash.ok("clean")
    cleaned = df()
    assert cleaned["reclaimable"]["count"] == 0 and cleaned["tmp"]["count"] == 0
    assert cleaned["images"] == after["images"]


def test_listing_commands_have_help(plash: Plash) -> None:
    for cmd in ("images", "ls", "inspect", "history", "df"):
        assert plash.ok("help", cmd).startswith("Usage: plash ")
    r = plash("inspect")
    assert r.returncode == 1 and r.stderr.startswith("usage: plash inspect")


def test_listing_does_not_change_the_store(plash: Plash, image: str) -> None:
    plash.ok("map", "x", image)
    before = plash.snapshot()
    for args in (["images"], ["images", "--tree"], ["inspect", "x"], ["history", "x"], ["map"], ["df"],
                 ["df", "--format", "json"]):
        assert plash(*args).returncode == 0
    assert plash.snapshot() == before


def test_a_json_row_per_line_even_for_odd_build_text(plash: Plash, image: str) -> None:
    top = build(plash, "--from", image, "--run", 'echo "tab\there" > /q', "printf '%s\\n' x" + " y" * 60)
    row = rows(plash)[-1]
    assert row["id"] == int(top)
    assert len(row["source"]) <= 80 and row["source"].endswith("…")
    assert json.loads(plash.ok("inspect", top))["created_by"].endswith(" y" * 60)


def test_images_made_before_created_by_show_what_is_known(root_plash: Plash, busybox_tgz: Path) -> None:
    plash = root_plash
    image = plash.import_tar(busybox_tgz)
    meta = Path(plash.ok("nodepath", image)) / "meta"
    meta.write_text("".join(line + "\n" for line in meta.read_text().splitlines()
                            if not line.startswith(("created_by\t", "created\t"))))
    (row,) = rows(plash)
    assert (row["source"], row["created"]) == (None, None)
    assert plash.ok("images").splitlines()[1].split()[4:] == ["-", "-"]
    info = json.loads(plash.ok("inspect", image))
    assert (info["created_by"], info["layers"][0]["created_by"]) == (None, None)
    assert plash.ok("history", image).split()[2] == "-"
