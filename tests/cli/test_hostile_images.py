"""Images that try to make plash act on the host: mount points, leaked descriptors, deletion while in use.

Each malicious image is made here, with plash itself (create) from the busybox image.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest
from conftest import PLASH, Plash


@pytest.fixture
def bait() -> Path:
    """A path under the host's /tmp that no one has made (yet)."""
    p = Path(f"/tmp/plash-bait-{uuid.uuid4().hex[:12]}")
    yield p
    os.system(f"rm -rf '{p}'")


def doctored(busybox_tgz: Path, dest: Path, drop: str, links: dict[str, str]) -> Path:
    """The busybox tarball without the members under `drop`, plus symlinks name -> target."""
    with tarfile.open(busybox_tgz) as src, tarfile.open(dest, "w") as out:
        for m in src.getmembers():
            name = m.name.removeprefix("./")
            if name == drop or name.startswith(drop + "/"):
                continue
            out.addfile(m, src.extractfile(m) if m.isfile() else None)
        for name, target in links.items():
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            out.addfile(link, io.BytesIO())
    dest.chmod(0o644)
    return dest


@pytest.mark.parametrize("how", ["etc-dir", "resolv-conf", "relative"])
def test_mount_points_never_lead_onto_the_host(plash: Plash, busybox_tgz: Path, bait: Path, how: str) -> None:
    drop, links = {
        # /etc is a symlink into the host's /tmp (bound before /etc/resolv.conf is)
        "etc-dir": ("etc", {"etc": f"{bait}/deep"}),
        # /etc/resolv.conf itself points there
        "resolv-conf": ("etc/resolv.conf", {"etc/resolv.conf": f"{bait}/a/b/resolv.conf"}),
        # the same with a relative symlink that climbs out
        "relative": ("etc/resolv.conf", {"etc/resolv.conf": f"../../../../..{bait}/r/resolv.conf"}),
    }[how]
    bad = plash.import_tar(doctored(busybox_tgz, plash.work / "evil.tar", drop, links))
    r = plash("run", bad, "/bin/echo", "ran")
    assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
    assert not os.path.lexists(bait), "plash created a path of the image's choosing on the host"
    # a build step on it neither writes the host nor keeps the mount points it made
    built = plash.ok("build", "--from", bad, "--run", "/bin/echo step")
    assert not os.path.lexists(bait)
    layer = Path(plash.ok("nodepath", built)) / "root"
    assert sorted(os.listdir(layer)) == []


def descendants(pid: int) -> list[int]:
    """Every live process below pid (from /proc, not a machine-wide pgrep)."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            ppid = int(data[data.rindex(b")") + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def wait_gone(pids: list[int], timeout: float = 20) -> list[int]:
    """Wait (on pidfds, not by polling) until the processes have ended; return those still alive."""
    import select

    fds = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fds.append(os.pidfd_open(pid))
    try:
        deadline = time.monotonic() + timeout
        pending = list(fds)
        while pending and time.monotonic() < deadline:
            ready, _, _ = select.select(pending, [], [], max(0, deadline - time.monotonic()))
            pending = [fd for fd in pending if fd not in ready]
        return [pid for pid in pids if os.path.exists(f"/proc/{pid}") and
                open(f"/proc/{pid}/stat").read().split(") ")[1][0] not in "ZX"]
    finally:
        for fd in fds:
            os.close(fd)


def plash_pid(proc: subprocess.Popen, plash: Plash) -> int:
    """The plash process itself (for test users, runuser sits between)."""
    if plash.user == "root":
        return proc.pid
    return first_child(proc.pid)


def first_child(pid: int, timeout: float = 30) -> int:
    """Wait for pid's first child process (forked at once by runuser, or by plash when it starts work)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = descendants(pid)
        if kids:
            return kids[0]
    raise AssertionError(f"process {pid} started no child")


def test_no_child_outlives_a_killed_plash(plash: Plash, busybox_tgz: Path) -> None:
    """SIGKILL of plash alone: the unpacker of import-tar, fed by a pipe that stays open, ends too."""
    r, w = os.pipe()
    proc = subprocess.Popen(plash.command([PLASH, "import-tar", "-"]), stdin=r, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=plash.work)
    os.close(r)
    try:
        data = busybox_tgz.read_bytes()
        os.write(w, data[: len(data) // 2])  # the unpacker is now at work, waiting for the rest
        top = plash_pid(proc, plash)
        first_child(top)
        kids = descendants(top)
        os.kill(top, signal.SIGKILL)
        assert wait_gone(kids) == [], "a child of the killed plash runs on"
    finally:
        os.close(w)
        proc.wait(timeout=30)



def test_no_descriptor_leads_into_the_store(plash: Plash, image: str) -> None:
    """The in-use mark a container holds is an fd on a regular file: no directory of the store is reachable."""
    probe = ("for f in /proc/self/fd/*; do if [ -d \"$f\" ]; then echo \"directory fd: $f\"; fi; done; "
             "echo x > /proc/self/fd/3/root/etc/passwd 2>/dev/null && echo 'wrote through fd 3'; "
             "cd -P /proc/self/fd/3/.. 2>/dev/null && echo 'left the root through fd 3'; echo done")
    assert plash.ok("run", image, "sh", "-c", probe) == "done"
    built = plash("build", "--from", image, "--run", probe + " >&2")
    assert built.returncode == 0, built.stderr
    assert "directory fd" not in built.stderr
    assert "through fd 3" not in built.stderr
    assert plash.ok("run", image, "head", "-c", "5", "/etc/passwd") == "root:"


class Pause:
    """plash's pause point (plash/testhook.py): a FIFO the test reads when plash is inside the window."""

    def __init__(self, plash: Plash, name: str) -> None:
        self.fifo = plash.work / f"pause-{uuid.uuid4().hex[:8]}"
        os.mkfifo(self.fifo)
        if plash.user != "root":
            import pwd

            pw = pwd.getpwnam(plash.name)
            os.chown(self.fifo, pw.pw_uid, pw.pw_gid)
        self.env = {"PLASH_TEST_PAUSE": f"{name}:{self.fifo}"}

    def reached(self, timeout: float = 60) -> str:
        import threading

        got: list[str] = []
        t = threading.Thread(target=lambda: got.append(self.fifo.open().readline().strip()), daemon=True)
        t.start()
        t.join(timeout)
        assert got, "plash never reached the pause point"
        return got[0]

    def go(self) -> None:
        with self.fifo.open("wb") as f:
            f.write(b"g")


def test_rm_leaves_an_image_alone_from_before_its_container_mounts_it(plash: Plash, image: str) -> None:
    pause = Pause(plash, "container-held")
    proc = subprocess.Popen(plash.command([PLASH, "run", image, "cat", "/etc/os-release"], pause.env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=plash.work)
    try:
        assert pause.reached() == "container-held"  # the image is held, nothing mounted yet
        r = plash("rm", image)
        assert r.returncode == 1 and "in use" in r.stderr, r.stderr
        assert plash("shrink").stdout == ""
        pause.go()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and out, err
    finally:
        proc.kill()
        proc.wait()
    assert plash.ok("rm", image) == ""  # free again once the container has ended


def test_rm_leaves_a_builds_layers_alone_until_it_ends(plash: Plash, image: str) -> None:
    pause = Pause(plash, "layer-made")
    macros = ["build", "--from", image, "--run", "echo one > /one", "--layer", "--run", "cat /one"]
    proc = subprocess.Popen(plash.command([PLASH, *macros], pause.env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=plash.work)
    try:
        first = pause.reached().split()[1]  # layer 1 is made, layer 2 not started
        for victim in (first, image):  # the finished layer, and the base the build stands on
            r = plash("rm", victim)
            assert r.returncode == 1 and "in use" in r.stderr, r.stderr
        pause.go()
        last = pause.reached().split()[1]
        pause.go()
        out, err = proc.communicate(timeout=60)
        assert (proc.returncode, out.strip()) == (0, last), err
    finally:
        proc.kill()
        proc.wait()
    assert plash.ok("run", last, "cat", "/one") == "one"
    assert plash("rm", first).returncode == 0  # the build has ended: nothing holds it now


def test_deep_trees_and_long_chains_stay_removable(plash: Plash, image: str) -> None:
    """No recursion on trees or chains: a 1200-level directory tree and a 250-layer chain are removed."""
    deep = plash.ok("create", image, "sh", "-c",
                    "d=/deep; i=0; while [ $i -lt 1200 ]; do d=$d/d; i=$((i+1)); done; mkdir -p $d; touch $d/leaf")
    assert plash("rm", deep).returncode == 0
    # hint-only layers are made without a container: quick to stack up to the limit
    layers = [w for i in range(260) for w in ("--layer", "--env", f"V{i}")]
    r = plash("build", "--quiet", "--from", image, *layers)
    assert r.returncode == 1
    first = r.stderr.splitlines()[0]
    assert first.startswith("plash error: an image has at most 250 layers; image ")
    assert first.endswith(" has 250 already")
    assert plash("fsck").returncode == 0
    r = plash("rm", image)
    assert r.returncode == 0 and "removed 250 image(s)" in r.stderr, r.stderr
    plash.ok("clean")
    assert (plash("fsck").returncode, os.listdir(plash.store / "tmp")) == (0, [])


@pytest.mark.parametrize("user", ["sub", "nosub"])
def test_a_failed_publish_leaves_nothing(user: str, users_base: Path, busybox_tgz: Path) -> None:
    """Publishing fails after the rename (the index is not writable): the image goes back and is discarded."""
    from conftest import make_plash

    p = make_plash(user, users_base)
    image = p.import_tar(busybox_tgz)
    before = p.snapshot()
    (p.store / "index").chmod(0o555)
    try:
        for args in (["import-tar", str(busybox_tgz)], ["create", image, "touch", "/x"]):
            r = p(*args)
            assert r.returncode == 1 and r.stderr.startswith("plash error: cannot publish image"), r.stderr
            assert len(r.stderr.splitlines()) == 1, r.stderr
    finally:
        (p.store / "index").chmod(0o755)
    assert p.snapshot() == before
    assert (p("fsck").returncode, p("fsck").stderr) == (0, "")


def test_fsck_beside_an_rm(plash: Plash, image: str) -> None:
    """fsck looks at the store under its lock: an rm running meanwhile is seen before or after, not half-way."""
    child = plash.ok("create", image, "touch", "/x")
    pause = Pause(plash, "fsck-locked")
    fsck = subprocess.Popen(plash.command([PLASH, "fsck"], pause.env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=plash.work)
    try:
        pause.reached()
        rm = subprocess.Popen(plash.command([PLASH, "rm", child]), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=plash.work)
        pause.go()
        _out, err = fsck.communicate(timeout=60)
        assert (fsck.returncode, err) == (0, ""), err
        assert rm.wait(timeout=60) == 0
    finally:
        fsck.kill()
        fsck.wait()
    assert (plash("fsck").returncode, plash("fsck").stderr) == (0, "")
