"""When the kernel refuses a namespace, plash says so in one line, with the hint for that errno."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from conftest import PLASH, Plash, make_plash

from plash.launch import refusals

# Runs as the test user: enter a user namespace mapped to the same ids (as a
# container's user meets it), set one of its (per-namespace) limits of nested
# namespaces to 0 unless the limit is "-", then exec plash, which thereby
# meets a kernel that refuses its unshare with ENOSPC.
REFUSE_NAMESPACES = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.getuid(), os.getgid()
if libc.unshare(0x10000000) != 0:
    sys.exit("cannot unshare: %d" % ctypes.get_errno())
open("/proc/self/setgroups", "w").write("deny")
open("/proc/self/uid_map", "w").write("%d %d 1" % (uid, uid))
open("/proc/self/gid_map", "w").write("%d %d 1" % (gid, gid))
if sys.argv[1] != "-":
    open("/proc/sys/user/" + sys.argv[1], "w").write("0")
os.execv(sys.argv[2], sys.argv[2:])
"""

# the hint of this machine: a host's names the sysctls, a container's says they are whose to set
ENOSPC_HINT = "hint: " + refusals.unshare_hint(errno.ENOSPC)


@pytest.mark.parametrize(
    ("user", "limit"),
    [
        ("sub", "max_user_namespaces"),
        ("nosub", "max_user_namespaces"),
        ("sub", "max_mnt_namespaces"),
        ("nosub", "max_mnt_namespaces"),
        ("root", "max_mnt_namespaces"),  # root asks for a mount namespace only
    ],
)
def test_namespaces_refused_give_the_hint_of_their_errno(user: str, limit: str, users_base: Path,
                                                         busybox_tgz: Path) -> None:
    p: Plash = make_plash(user, users_base)
    image = p.import_tar(busybox_tgz)
    before = p.snapshot()
    python = str(Path(PLASH).parent / "python")
    r = p.sh([python, "-c", REFUSE_NAMESPACES, limit, PLASH, "run", image, "true"])
    assert r.returncode == 1, r.stderr
    # Here (a namespace of the test's that maps only the user's own id) the subordinate
    # range cannot be mapped: plash says so once per store, before the error.
    lines = [line for line in r.stderr.splitlines() if not line.startswith("plash: note: newuidmap")]
    assert lines == [
        "plash error: cannot create a namespace: unshare: No space left on device",
        ENOSPC_HINT,
    ]
    assert [e for e in p.snapshot() if e[0] != ".noted-single-mapping"] == before  # the note's marker aside
    assert p.ok("run", image, "echo", "back") == "back"


def test_a_subordinate_range_that_cannot_be_mapped_gives_one_id_and_a_note_once(users_base: Path,
                                                                                busybox_tgz: Path) -> None:
    p: Plash = make_plash("sub", users_base)
    image = p.import_tar(busybox_tgz)
    python = str(Path(PLASH).parent / "python")
    shown = "cat /proc/self/uid_map; stat -c %u /etc/owned-by-7"
    first = p.sh([python, "-c", REFUSE_NAMESPACES, "-", PLASH, "run", image, "sh", "-c", shown])
    assert first.returncode == 0, first.stderr
    assert first.stderr.startswith("plash: note: newuidmap/newgidmap cannot map this user's subordinate ids here: "
                                   "the subordinate range is not mapped in this (container's) user namespace; "
                                   "only uid 0 is mapped"), first.stderr
    assert len(first.stderr.splitlines()) == 1
    uid_map, owner = first.stdout.splitlines()
    assert uid_map.split()[0::2] == ["0", "1"]  # one id, as 0
    assert owner == "65534"  # a subordinate id is nobody here
    again = p.sh([python, "-c", REFUSE_NAMESPACES, "-", PLASH, "run", image, "sh", "-c", shown])
    assert (again.returncode, again.stdout, again.stderr) == (0, first.stdout, "")  # said once per store
    assert p.ok("run", image, "stat", "-c", "%u", "/etc/owned-by-7") == "7"  # outside, the range is there again
