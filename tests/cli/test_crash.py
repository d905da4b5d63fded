"""SIGKILL at random moments of builds, downloads and unpacks: the store stays consistent.

After every kill, fsck must find nothing broken (leftovers of the killed
process are allowed: `clean` reclaims them), and at the end the same
commands succeed and give working images. PLASH_KILLS sets the number of
kills per user (default 50: 20 builds, 15 downloads, 15 unpacks).
"""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import rootfs
from conftest import PLASH, Plash
from procs import Exits, wait_for_descendant
from servers import Server, add_lxc_image

KILLS = int(os.environ.get("PLASH_KILLS", "50"))
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def test_fsck_finds_and_repairs(plash: Plash, image: str) -> None:
    assert plash("fsck").returncode == 0
    store = plash.store
    plash.sh(["ln", "-s", "../layer/0/77", str(store / "index" / "77")])
    plash.sh(["mkdir", "-p", str(store / "layer" / "0" / "88" / "root")])
    plash.sh(["mkdir", str(store / "tmp" / "999999999.1.create-x")])
    broken = plash.ok("create", image, "true")
    plash.sh(["rm", str(Path(plash.ok("nodepath", broken)) / "meta")])
    r = plash("fsck")
    assert r.returncode == 1
    for text in ("broken: index/77: points to nothing", "leftover: layer/0/88: image dir without index entry",
                 "leftover: tmp/999999999.1.create-x: left by a process that is gone",
                 f"broken: image {broken}: missing meta"):
        assert text in r.stderr, r.stderr
    assert plash("fsck", "--repair").returncode == 0
    r = plash("fsck")
    assert (r.returncode, r.stderr) == (0, "")
    assert plash.ok("run", image, "true") == ""


def test_fsck_leftovers_alone_are_not_damage(plash: Plash, image: str) -> None:
    plash.sh(["mkdir", str(plash.store / "tmp" / "999999999.1.layer-x")])
    r = plash("fsck")
    assert r.returncode == 0
    assert "leftover: tmp/999999999.1.layer-x" in r.stderr
    assert "plash clean reclaims" in r.stderr
    plash.ok("clean")
    assert plash("fsck").stderr == ""


def kill_at_random(plash: Plash, args: list[str], times: int, rng: random.Random,
                   env: dict[str, str] | None = None) -> None:
    """Run plash ARGS `times` times, each killed (SIGKILL to it and its process group) at a random moment."""
    start = time.monotonic()
    plash.ok(*args, env=env)  # how long one uninterrupted run takes (later ones may find more cached)
    took = time.monotonic() - start
    for i in range(times):
        proc = subprocess.Popen(plash.command([PLASH, *args], env), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd=plash.work, start_new_session=True)
        time.sleep(rng.uniform(0.0, took))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        r = plash("fsck")
        assert r.returncode == 0, f"after kill {i}: {r.stderr}"
        assert "broken" not in r.stderr, f"after kill {i}: {r.stderr}"
        if i % 5 == 4:
            plash.ok("clean")
            r = plash("fsck")
            assert "leftover" not in r.stderr or "tmp/" in r.stderr, r.stderr  # a dying child may still hold one


@pytest.fixture(scope="module")
def filler_tgz(shared_dir: Path) -> Path:
    """A busybox root file system with 4000 more files: unpacking takes a while."""
    path = shared_dir / "filler.tar.gz"
    with open(path, "wb") as f:
        rootfs.busybox_tar(f, "gz", filler=4000)
    path.chmod(0o644)
    return path


def test_sigkill_during_builds_downloads_and_unpacks(plash: Plash, image: str, filler_tgz: Path) -> None:
    rng = random.Random(1234)
    builds, downloads = KILLS * 2 // 5, KILLS * 3 // 10
    unpacks = KILLS - builds - downloads
    # builds: each kill may land in a step, in publishing, or in the cache lookup
    macros = ["--from", image, "--run", "echo one > /one; sleep 0.05", "--layer", "--run", "echo two > /two",
              "--layer", "--run", "echo three > /three"]
    kill_at_random(plash, ["build", "--invalidate-layer", *macros], builds, rng)
    # downloads (streamed into the unpacker as they arrive), from a slow server
    buf = io.BytesIO()
    rootfs.busybox_tar(buf, "xz", filler=4000)
    server = Server()
    try:
        path = add_lxc_image(server, "busybox", "big", ARCH, buf.getvalue())
        server.state.faults[path] = "throttle"
        env = {"PLASH_LXC_URL": server.url}
        kill_at_random(plash, ["import-lxc", "busybox:big"], downloads, rng, env)
        # unpacks: a local tarball of many files
        kill_at_random(plash, ["import-tar", str(filler_tgz)], unpacks, rng)
        plash.ok("clean")
        r = plash("fsck")
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        assert os.listdir(plash.store / "tmp") == []
        assert os.listdir(plash.store / "locks") == []
        built = plash.ok("build", *macros)
        assert plash.ok("run", built, "cat", "/one", "/two", "/three") == "one\ntwo\nthree"
        assert plash.ok("build", *macros) == built
        for args in (["import-lxc", "busybox:big"], ["import-tar", str(filler_tgz)]):
            new = plash.ok(*args, env=env)
            assert plash.ok("run", new, "cat", "/usr/share/filler/39/3999").startswith("3999\n3999")
    finally:
        server.close()


def test_killed_build_leaves_no_step_running(plash: Plash, image: str) -> None:
    proc = subprocess.Popen(plash.command([PLASH, "build", "--from", image, "--run", "sleep 300; touch /never"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=plash.work,
                            start_new_session=True)
    # the step's sleep, in this build's own process tree (not plash's command line, nor another test's)
    step = wait_for_descendant(proc.pid, lambda argv: argv == ["sleep", "300"], timeout=20)
    with Exits([step]) as exits:
        os.killpg(proc.pid, signal.SIGKILL)  # plash's group: the step runs in a session of its own
        proc.wait()
        assert exits.wait(timeout=5) == [], "the build step outlived plash"
    plash.ok("clean")
    assert plash("fsck").stderr == ""


def test_clean_and_rm_while_a_build_runs(plash: Plash, image: str) -> None:
    """clean reclaims nothing a running build uses; rm refuses the image a step runs on."""
    base = plash.ok("create", image, "sh", "-c", "echo base > /base")
    proc = subprocess.Popen(plash.command([PLASH, "build", "--from-id", base, "--run", "sleep 300 || :; cat /base > /copy"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=plash.work)
    # the step runs (its sleep is in this build's process tree) until the test ends the sleep: however
    # slow the machine, clean and rm below happen while the build is in its step
    step = wait_for_descendant(proc.pid, lambda argv: argv == ["sleep", "300"], timeout=20)
    plash.ok("clean")
    r = plash("rm", base)
    assert r.returncode == 1, r.stderr
    assert "in use" in r.stderr, r.stderr
    os.kill(step, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert plash.ok("run", out.strip(), "cat", "/copy") == "base"
