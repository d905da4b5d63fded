"""SIGKILL at random moments of builds and imports: the store stays consistent; fsck finds and repairs leftovers."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

from conftest import PLASH, Plash


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
    for text in ("index/77: points to nothing", "layer/0/88: image dir without index entry",
                 "tmp/999999999.1.create-x: left by a process that is gone", f"image {broken}: missing meta"):
        assert text in r.stderr, r.stderr
    assert plash("fsck", "--repair").returncode == 0
    assert plash("fsck").returncode == 0, plash("fsck").stderr
    assert plash.ok("run", image, "true") == ""


def test_sigkill_at_random_moments_of_a_build(plash: Plash, image: str) -> None:
    rng = random.Random(1234)
    macros = ["--from", image, "--run", "echo one > /one; sleep 0.05", "--layer", "--run", "echo two > /two",
              "--layer", "--run", "echo three > /three"]
    for _ in range(25):
        proc = subprocess.Popen(plash.command([PLASH, "build", *macros]), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=plash.work, start_new_session=True)
        time.sleep(rng.uniform(0.0, 0.6))
        os.killpg(proc.pid, signal.SIGKILL)  # plash (its build step runs on in its own session...)
        proc.wait()
        time.sleep(0.3)  # ...and ends by itself: the steps here are short
        plash.ok("fsck", "--repair")
        r = plash("fsck")
        assert r.returncode == 0, r.stderr
    built = plash.ok("build", *macros)
    assert plash.ok("run", built, "cat", "/one", "/two", "/three") == "one\ntwo\nthree"
    assert plash.ok("build", *macros) == built
    assert os.listdir(plash.store / "tmp") == []
