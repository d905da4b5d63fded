"""When the kernel refuses user namespaces, plash says so in one line with a hint."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PLASH, Plash, make_plash

# Runs as the test user: enter a user namespace mapped to the same ids, set
# its (per-namespace) limit of nested user namespaces to 0, then exec plash,
# which thereby meets a kernel that refuses unshare(CLONE_NEWUSER).
REFUSE_USERNS = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.getuid(), os.getgid()
if libc.unshare(0x10000000) != 0:
    sys.exit("cannot unshare: %d" % ctypes.get_errno())
open("/proc/self/setgroups", "w").write("deny")
open("/proc/self/uid_map", "w").write("%d %d 1" % (uid, uid))
open("/proc/self/gid_map", "w").write("%d %d 1" % (gid, gid))
open("/proc/sys/user/max_user_namespaces", "w").write("0")
os.execv(sys.argv[1], sys.argv[1:])
"""


@pytest.mark.parametrize("user", ["sub", "nosub"])
def test_userns_refused_gives_a_hint(user: str, users_base: Path, busybox_tgz: Path) -> None:
    p: Plash = make_plash(user, users_base)
    image = p.import_tar(busybox_tgz)
    before = p.snapshot()
    python = str(Path(PLASH).parent / "python")
    r = p.sh([python, "-c", REFUSE_USERNS, PLASH, "run", image, "true"])
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0].startswith("plash error: cannot create a namespace:"), r.stderr
    assert lines[1].startswith("hint: unprivileged user namespaces seem disabled")
    assert len(lines) == 2
    assert p.snapshot() == before
    assert p.ok("run", image, "echo", "back") == "back"
