"""Shared fixtures: a busybox root file system, test users and a `plash` runner.

Tests run plash for real (namespaces, overlay mounts) as root and as two
unprivileged users: one with a subuid/subgid range and one without. Where the
kernel or machine forbids something they skip, unless PLASH_MUST_WORK=1 (set
in CI), where every such skip is a failure.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import rootfs

MUST_WORK = os.environ.get("PLASH_MUST_WORK") == "1"
PLASH = str(Path(sys.executable).parent / "plash")
USERS = {
    "sub": os.environ.get("PLASH_TEST_USER_SUB", "plashsub"),
    "nosub": os.environ.get("PLASH_TEST_USER_NOSUB", "plashnosub"),
}


def need(condition: bool, reason: str) -> None:
    """Skip when a precondition is missing, or fail under PLASH_MUST_WORK=1."""
    if condition:
        return
    if MUST_WORK:
        pytest.fail(f"PLASH_MUST_WORK=1 but: {reason}")
    pytest.skip(reason)


def _has_range(name: str) -> bool:
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path) as f:
                if not any(line.split(":")[0] == name for line in f):
                    return False
        except FileNotFoundError:
            return False
    return True


@pytest.fixture(scope="session")
def shared_dir():
    """A world-readable temp dir (pytest's own tmp dirs are private to root)."""
    d = tempfile.mkdtemp(prefix="plash-tests-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    subprocess.run(["rm", "-rf", d])


@pytest.fixture(scope="session")
def busybox_tgz(shared_dir: Path) -> Path:
    need(os.path.exists(rootfs.BUSYBOX), "busybox-static is not installed")
    path = shared_dir / "busybox.tar.gz"
    with open(path, "wb") as f:
        rootfs.busybox_tar(f, "gz")
    path.chmod(0o644)
    return path


@pytest.fixture(scope="session")
def bare_tgz(shared_dir: Path) -> Path:
    """A busybox rootfs without /home, /proc, /etc/resolv.conf and other mount points."""
    path = shared_dir / "bare.tar.gz"
    with open(path, "wb") as f:
        rootfs.busybox_tar(f, "gz", full=False)
    path.chmod(0o644)
    return path


@dataclass
class Plash:
    """Runs plash as one user against one store."""

    user: str  # "root", "sub" or "nosub"
    name: str
    store: Path
    home: Path
    work: Path  # a dir the user owns, usable as cwd and scratch space
    env: dict[str, str] = field(default_factory=dict)

    def command(self, args: list[str], env: dict[str, str] | None = None) -> list[str]:
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "PLASH_DATA": str(self.store),
            "LANG": "C.UTF-8",
        }
        base.update(self.env)
        base.update(env or {})
        envlist = [f"{k}={v}" for k, v in base.items()]
        cmd = ["env", "-i", *envlist, *args]
        if self.user != "root":
            cmd = ["runuser", "-u", self.name, "--", *cmd]
        return cmd

    def sh(self, args: list[str], input: str | bytes | None = None, cwd: str | Path | None = None,
           env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        text = not isinstance(input, bytes)
        return subprocess.run(
            self.command(args, env),
            input=input,
            capture_output=True,
            text=text,
            cwd=str(cwd or self.work),
            timeout=timeout,
        )

    def many(self, runs: list[list[str]], env: dict[str, str] | None = None,
             timeout: float = 120) -> list[subprocess.CompletedProcess]:
        """Start every plash command line at once; wait for all of them."""
        procs = [subprocess.Popen(self.command([PLASH, *args], env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, cwd=self.work) for args in runs]
        done = []
        for args, proc in zip(runs, procs, strict=True):
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
        return done

    def __call__(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.sh([PLASH, *args], **kw)

    def ok(self, *args: str, **kw) -> str:
        """Run plash, require success, return stdout stripped."""
        r = self(*args, **kw)
        assert r.returncode == 0, f"plash {' '.join(args)} failed ({r.returncode}): {r.stderr}"
        return r.stdout.strip() if isinstance(r.stdout, str) else r.stdout

    def import_tar(self, path: Path) -> str:
        out = self.ok("import-tar", str(path))
        assert out.isdigit(), out
        return out

    def snapshot(self) -> list[tuple[str, str]]:
        """Every path of the store with its kind and link target, to compare before/after."""
        out = []
        for dirpath, dirnames, filenames in os.walk(self.store):
            for n in sorted(dirnames + filenames):
                p = os.path.join(dirpath, n)
                rel = os.path.relpath(p, self.store)
                if rel in ("lock",):
                    continue
                out.append((rel, os.readlink(p) if os.path.islink(p) else ""))
        return sorted(out)


def make_plash(user: str, base: Path) -> Plash:
    if user == "root":
        name, home = "root", Path(pwd.getpwuid(0).pw_dir)
    else:
        name = USERS[user]
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            need(False, f"test user {name} does not exist (see .ci/run)")
        home = Path(pw.pw_dir)
        need(home.is_dir(), f"test user {name} has no home directory")
        if user == "sub":
            need(_has_range(name), f"test user {name} has no subuid/subgid range")
            need(shutil.which("newuidmap") is not None, "uidmap (newuidmap) is not installed")
        else:
            need(not _has_range(name), f"test user {name} must not have a subuid range")
    work = Path(tempfile.mkdtemp(prefix=f"{user}-", dir=base))
    store = work / "store"
    if user != "root":
        pw = pwd.getpwnam(name)
        os.chown(work, pw.pw_uid, pw.pw_gid)
    p = Plash(user, name, store, home, work)
    if user != "root":
        r = p.sh([PLASH, "version"])
        need(r.returncode == 0, f"{name} cannot run {PLASH}: {r.stderr.strip()} (install plash where it can read it)")
    return p


DEBIAN_CACHE = Path("/var/tmp/plash-test-cache")  # stores kept between runs: the debootstrap base is made once


def debian_plash(user: str, base: Path) -> Plash:
    """make_plash(user, base) with the user's store kept in DEBIAN_CACHE (needs mmdebstrap or debootstrap)."""
    need(shutil.which("mmdebstrap") is not None or shutil.which("debootstrap") is not None,
         "mmdebstrap or debootstrap is not installed")
    p = make_plash(user, base)
    store = DEBIAN_CACHE / user
    store.mkdir(parents=True, exist_ok=True)
    DEBIAN_CACHE.chmod(0o755)
    if p.user != "root":
        pw = pwd.getpwnam(p.name)
        os.chown(store, pw.pw_uid, pw.pw_gid)
    p.store = store / "store"
    return p


@pytest.fixture(scope="session")
def users_base(shared_dir: Path) -> Path:
    d = shared_dir / "users"
    d.mkdir()
    d.chmod(0o755)
    return d


@pytest.fixture(params=["root", "sub", "nosub"])
def plash(request, users_base: Path) -> Plash:
    """plash as root, as a user with a subuid range, and as one without."""
    p = make_plash(request.param, users_base)
    yield p
    subprocess.run(["rm", "-rf", str(p.work)])


@pytest.fixture
def root_plash(users_base: Path) -> Plash:
    p = make_plash("root", users_base)
    yield p
    subprocess.run(["rm", "-rf", str(p.work)])


@pytest.fixture
def image(plash: Plash, busybox_tgz: Path) -> str:
    """A busybox image in the user's store."""
    return plash.import_tar(busybox_tgz)
