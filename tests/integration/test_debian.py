"""The main job: a real Debian image from --from-debootstrap, with --apt, for each kind of user.

The store of each user lives in /var/tmp/plash-test-cache/<user>, kept between
test runs, so only the first run on a machine pays for mmdebstrap and apt.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Plash, debian_plash

MAIN_JOB = ["--from-debootstrap", "bookworm", "--apt", "cowsay", "--", "/usr/games/cowsay", "hello"]


@pytest.fixture(params=["root", "sub", "nosub"])
def deb_plash(request, users_base: Path) -> Plash:
    return debian_plash(request.param, users_base)


@pytest.mark.slow
def test_debootstrap_and_apt(deb_plash: Plash) -> None:
    r = deb_plash(*MAIN_JOB, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    if "root file system with mmdebstrap" in r.stderr:  # made now, not cached: its stages were shown as they came
        assert "I: running apt-get update..." in r.stderr.splitlines(), r.stderr[-3000:]
    assert "< hello >" in r.stdout
    image = deb_plash.ok("build", *MAIN_JOB[:4])
    again = deb_plash("build", *MAIN_JOB[:4])
    assert (again.stdout.strip(), again.stderr) == (image, "")
    assert "Debian GNU/Linux 12" in deb_plash.ok("run", image, "cat", "/etc/os-release")
    # what made it, as plash images and inspect tell
    chain = json.loads(deb_plash.ok("inspect", image))["layers"]
    assert chain[0]["created_by"].startswith("debootstrap bookworm"), chain
    assert "apt-get" in chain[-1]["created_by"] and "cowsay" in chain[-1]["created_by"], chain
    # apt works again in a new layer (as the user, through apt's privilege drop)
    r = deb_plash("build", "--from", image, "--apt", "sl", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert deb_plash.ok("run", r.stdout.strip(), "ls", "/usr/games/sl") == "/usr/games/sl"
