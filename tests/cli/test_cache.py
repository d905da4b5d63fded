"""The layer cache through a registry, as a CI fleet uses it: one machine fills it, a fresh one builds nothing.

Machines are stores of different users; the registry is Debian's
docker-registry on 127.0.0.1 behind the counting proxy of test_push.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import Plash, make_plash, need
from servers import Registry
from test_push import Counting

NAMES = ("one", "two", "three", "four")


@pytest.fixture
def registry(tmp_path: Path) -> tuple[Counting, Path]:
    need(shutil.which("docker-registry") is not None, "docker-registry is not installed")
    reg = Registry(str(tmp_path))
    proxy = Counting(reg.host)
    yield proxy, tmp_path / "data"
    proxy.close()
    reg.close()


def executables(where: Path, tarball: Path, last: str = "") -> list[str]:
    """Four plash executables on one base: a shared layer, then one of their own each."""
    where.mkdir(exist_ok=True)
    where.chmod(0o755)
    files = []
    for name in NAMES:
        f = where / name
        f.write_text(f"#!/usr/bin/env plash\n--from-tarball {tarball}\n--run\necho shared > /shared\n--layer\n"
                     f"--run\necho {name}{last if name == 'four' else ''} > /own\n--entrypoint /bin/cat\n")
        f.chmod(0o755)
        files.append(str(f))
    return files


def steps_run(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("plash: building layer")]


def blob_gets(proxy: Counting, since: int = 0) -> list[str]:
    return [p for m, p in proxy.requests[since:] if m == "GET" and "/blobs/" in p]


def test_a_fresh_machine_builds_nothing_with_the_cache(root_plash: Plash, users_base: Path, busybox_tgz: Path,
                                                       registry: tuple[Counting, Path]) -> None:
    proxy, _ = registry
    cache = f"{proxy.host}/ci/cache"
    files = executables(users_base / "exes", busybox_tgz)
    a = root_plash
    made = a("warm", "--cache-to", cache, *files)
    assert made.returncode == 0, made.stderr
    assert len(steps_run(made.stderr)) == 5  # the shared layer once, and one each
    assert "warning" not in made.stderr
    want = {name: a.ok(str(f), "/own") for name, f in zip(NAMES, files, strict=True)}
    assert want == {name: name for name in NAMES}

    b = make_plash("sub", users_base)  # another machine: a fresh store, another user
    at = len(proxy.requests)
    warmed = b("warm", "--cache-from", cache, *files)
    assert warmed.returncode == 0, warmed.stderr
    assert steps_run(warmed.stderr) == [], warmed.stderr  # no build step ran
    assert "importing" not in warmed.stderr  # nor was the base imported: it came with the cache
    # each blob came once: the base layer, the shared layer and the four own ones
    gets = blob_gets(proxy, at)
    assert len(gets) == len(set(gets)) == 6, gets
    for name, f in zip(NAMES, files, strict=True):
        assert b.ok(str(f), "/own") == want[name]
    # later builds on B reuse what came from the cache, with no cache at all
    again = b("warm", *files)
    assert again.returncode == 0 and again.stderr == "", again.stderr


def test_a_changed_last_layer_builds_and_pushes_only_that(root_plash: Plash, users_base: Path, busybox_tgz: Path,
                                                          registry: tuple[Counting, Path]) -> None:
    proxy, _ = registry
    cache = f"{proxy.host}/ci/cache"
    files = executables(users_base / "exes2", busybox_tgz)
    assert root_plash("warm", "--cache-to", cache, *files).returncode == 0
    b = make_plash("sub", users_base)
    changed = executables(users_base / "exes2", busybox_tgz, last=" again")
    at = len(proxy.requests)
    r = b("warm", "--cache-from", cache, "--cache-to", cache, *changed)
    assert r.returncode == 0, r.stderr
    assert len(steps_run(r.stderr)) == 1, r.stderr
    manifests = [p for m, p in proxy.requests[at:] if m == "PUT" and "/manifests/" in p]
    assert len(manifests) == 1, proxy.requests[at:]
    assert b.ok(changed[3], "/own") == "four again"
    # and a third machine gets that one from the cache too
    c = make_plash("nosub", users_base)
    r = c("warm", "--cache-from", cache, changed[3])
    assert r.returncode == 0 and steps_run(r.stderr) == [], r.stderr
    assert c.ok(changed[3], "/own") == "four again"


def test_build_b_and_the_x_form_take_the_cache_options(root_plash: Plash, users_base: Path, busybox_tgz: Path,
                                                       registry: tuple[Counting, Path]) -> None:
    proxy, _ = registry
    cache = f"{proxy.host}/ci/x"
    a = root_plash
    macros = ["--from-tarball", str(busybox_tgz), "--run", "echo x > /x"]
    made = a("build", "--cache-to", cache, *macros)
    assert made.returncode == 0 and len(steps_run(made.stderr)) == 1, made.stderr
    for args in (["b", "run", f"--cache-from={cache}", *macros, "--", "cat", "/x"],
                 ["--cache-from", cache, *macros, "--", "cat", "/x"]):
        b = make_plash("root", users_base)
        r = b(*args)
        assert (r.returncode, r.stdout) == (0, "x\n"), r.stderr
        assert steps_run(r.stderr) == [], r.stderr
    # and from the environment, as CI sets it
    b = make_plash("root", users_base)
    r = b("build", *macros, env={"PLASH_CACHE_FROM": cache})
    assert r.returncode == 0 and steps_run(r.stderr) == [], r.stderr


def test_a_corrupted_cached_blob_is_refused_and_the_step_built(root_plash: Plash, users_base: Path,
                                                             busybox_tgz: Path,
                                                             registry: tuple[Counting, Path]) -> None:
    proxy, data = registry
    cache = f"{proxy.host}/ci/bad"
    a = root_plash
    macros = ["--from-tarball", str(busybox_tgz), "--run", "echo good > /x"]
    assert a("build", "--cache-to", cache, *macros).returncode == 0
    # the registry's copy of the step's layer (the small blob that is not the base) changes a byte
    blobs = [p for p in data.rglob("data") if p.parent.parent.parent.name == "sha256"]
    small = min(blobs, key=lambda p: p.stat().st_size)
    raw = bytearray(small.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    small.chmod(stat.S_IMODE(small.stat().st_mode) | 0o200)
    small.write_bytes(bytes(raw))
    b = make_plash("root", users_base)
    before = b.snapshot()
    r = b("build", "--cache-from", cache, *macros)
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "sha256 mismatch" in r.stderr, r.stderr
    assert len(steps_run(r.stderr)) == 1
    assert b.ok("run", r.stdout.strip(), "cat", "/x") == "good"
    assert before != b.snapshot()  # it built


def test_a_cache_that_refuses_is_a_warning(root_plash: Plash, busybox_tgz: Path) -> None:
    a = root_plash
    r = a("build", "--cache-to", "127.0.0.1:1/no/cache", "--cache-from", "127.0.0.1:1/no/cache",
          "--from-tarball", str(busybox_tgz), "--run", "echo y > /y")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().isdigit()
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 3, r.stderr  # the look-up once, the push of the base and of the layer
    assert all("127.0.0.1:1/no/cache" in w for w in warnings)


@pytest.mark.parametrize(("args", "words"), [
    (["build", "--cache-from"], "--cache-from needs a repository"),
    (["build", "--cache-to", "--from", "1"], "--cache-to needs a repository"),
    (["build", "--cache-from", "127.0.0.1:5000/x:tag", "--from-tarball", "T", "--run", "true"], "without a tag"),
    (["warm", "--cache-to", "127.0.0.1:5000/x@sha256:" + "0" * 64, "F"], "without a tag"),
])
def test_bad_cache_options_are_one_line(root_plash: Plash, busybox_tgz: Path, args: list[str], words: str) -> None:
    exe = root_plash.work / "F"
    exe.write_text(f"--from-tarball {busybox_tgz}\n--run true\n")
    args = [str(busybox_tgz) if a == "T" else str(exe) if a == "F" else a for a in args]
    r = root_plash(*args)
    errors = [line for line in r.stderr.splitlines() if line.startswith("plash error")]
    assert r.returncode == 1 and len(errors) == 1 and words in errors[0], r.stderr


def test_a_cache_entry_is_an_image_podman_and_skopeo_can_read(root_plash: Plash, busybox_tgz: Path,
                                                              registry: tuple[Counting, Path]) -> None:
    proxy, _ = registry
    cache = f"{proxy.host}/ci/open"
    a = root_plash
    image = a.ok("build", "--cache-to", cache, "--from-tarball", str(busybox_tgz), "--run", "echo z > /z")
    meta = (a.store / "index" / image / "meta").read_text()
    key = next(line.split("\t")[1] for line in meta.splitlines() if line.startswith("key\t"))
    info = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{cache}:{key}"],
                                     check=True, capture_output=True, text=True).stdout)
    assert len(info["Layers"]) == 2  # the whole chain: the base and the step
    config = json.loads(subprocess.run(["skopeo", "inspect", "--config", "--tls-verify=false",
                                        f"docker://{cache}:{key}"], check=True, capture_output=True, text=True).stdout)
    assert config["history"][-1]["created_by"] == "echo z > /z"
    assert config["history"][-1]["comment"] == f"plash layer {key}"
