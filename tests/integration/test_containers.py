"""plash inside real containers: podman (runc) started the ways CI runners start them, root and a user inside.

The container image is made here, by plash, from the cached Debian root file
system (the one tests/integration/test_debian.py uses) with Debian's python3;
plash itself is this test run's venv, mounted read-only at its own path. In
each container the script below imports a busybox root file system, runs it,
builds two layers whose steps create, change and delete files (the deletion
must survive the move into the store), runs a plash executable and warms two
executables, with the store on the container's own overlayfs root and on a
volume. A container that refuses user namespaces must give the one-line
error with the hint naming the flags that help.

The root of a default container lacks CAP_SYS_ADMIN; the last test meets that
on the host too, under `capsh --drop=cap_sys_admin`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import PLASH, Plash, make_plash, need

import plash as plash_package
from plash.launch import refusals

CACHE = Path("/var/tmp/plash-test-cache")
VENV = Path(PLASH).parent.parent
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]

# The ways a container is started (the table), plus one whose seccomp
# profile refuses unshare(2) as Docker's default profile does.
KINDS = {
    "default": [],
    "cap-add-sys-admin": ["--cap-add", "SYS_ADMIN"],
    "unconfined": ["--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"],
    "privileged": ["--privileged"],
}
TESTER = 1234  # the ordinary user of the image

SCRIPT = r"""
set -e
say() { echo "RESULT $*"; }
mkdir -p "$HOME" && cd "$HOME"
volume=${PLASH_DATA:+/store}
say fs "$(stat -f -c %T "${volume:-$HOME}")"
base=$(plash import-tar /in/busybox.tar.gz)
say run "$(plash run "$base" cat /etc/os-release | head -1)"
top=$(plash build --from "$base" \
    --run 'echo one > /f; mkdir -p /d/sub; echo x > /d/sub/x; rm /etc/owned-by-7' --layer \
    --run 'rm -r /d; echo two > /f; rm /bin/ls')
say build "$(plash run "$top" sh -c '{ cat /f; ls /d /etc/owned-by-7 /bin/ls; } 2>&1 | tr "\n" " "')"
printf '#!/usr/bin/env plash\n--from %s\n--run\necho exe > /exe\n--entrypoint /bin/cat\n' "$base" > exe
printf '#!/usr/bin/env plash\n--from %s\n--run\necho exe > /exe\n--layer\n--run\necho two > /two\n' "$base" > exe2
chmod +x exe exe2
say exe "$(./exe /exe)"
say warm "$(plash warm --quiet ./exe ./exe2 | wc -l)"
say done yes
"""
EXPECTED = {
    "run": "NAME=busybox",
    "build": "two ls: /d: No such file or directory ls: /etc/owned-by-7: No such file or directory "
             "ls: /bin/ls: No such file or directory ",
    "exe": "exe",
    "warm": "2",
    "done": "yes",
}


def podman(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def podman_env(shared_dir: Path):
    need(os.getuid() == 0, "the container tests start rootful podman containers")
    need(shutil.which("podman") is not None and shutil.which("runc") is not None, "podman and runc are not installed")
    conf = shared_dir / "containers.conf"
    # This machine may itself be a container without CAP_SYS_RESOURCE: no ulimits of podman's own.
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    os.environ["CONTAINERS_CONF"] = str(conf)
    yield env
    del os.environ["CONTAINERS_CONF"]


@pytest.fixture(scope="module")
def python_image(podman_env: dict[str, str], users_base: Path, shared_dir: Path) -> str:
    """A podman image: the cached Debian root file system with python3 and an ordinary user."""
    need(shutil.which("mmdebstrap") is not None, "mmdebstrap is not installed")
    p = make_plash("root", users_base)
    (CACHE / "root").mkdir(parents=True, exist_ok=True)
    CACHE.chmod(0o755)
    p.store = CACHE / "root" / "store"
    r = p("build", "--from-debootstrap", "bookworm", "--apt", "python3",
          # no -m: /home is the host's in a build step; the home is made in the container (/tmp is its own)
          "--run", f"useradd -M -d /tmp/tester -u {TESTER} -s /bin/sh tester", timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    image = r.stdout.strip()
    tar = shared_dir / "python-image.tar"
    p.ok("export-tar", image, str(tar), timeout=600)
    tag = f"localhost/plash-test-python:{os.getpid()}"
    made = podman("import", str(tar), tag, env=podman_env, timeout=600)
    tar.unlink()
    assert made.returncode == 0, made.stderr
    yield tag
    podman("rmi", "--force", tag, env=podman_env)


def volumes(tmp: Path) -> list[str]:
    """plash (this venv, and its package where that is a link to a source tree) and the inputs, read-only."""
    out = ["-v", f"{VENV}:{VENV}:ro", "-v", f"{tmp}:/in:ro"]
    package = Path(plash_package.__file__).resolve().parent
    if not package.is_relative_to(VENV):
        out += ["-v", f"{package}:{package}:ro"]
    return out


def in_container(image: str, kind: list[str], user: str, store: str, busybox_tgz: Path,
                 env: dict[str, str]) -> subprocess.CompletedProcess:
    tmp = Path(tempfile.mkdtemp(prefix="plash-ctr-", dir="/var/tmp"))
    try:
        shutil.copy(busybox_tgz, tmp / "busybox.tar.gz")
        (tmp / "run.sh").write_text(SCRIPT)
        tmp.chmod(0o755)
        args = ["run", "--rm", "--network", "host", *kind, *volumes(tmp),
                "-e", f"PATH={VENV}/bin:/usr/local/bin:/usr/bin:/bin"]
        if user == "tester":
            args += ["--user", f"{TESTER}:{TESTER}", "-e", "HOME=/tmp/tester"]
        if store == "volume":
            vol = tmp / "store"
            vol.mkdir()
            os.chown(vol, TESTER if user == "tester" else 0, TESTER if user == "tester" else 0)
            args += ["-v", f"{vol}:/store", "-e", "PLASH_DATA=/store/data"]
        return podman(*args, image, "sh", "/in/run.sh", env=env, timeout=300)
    finally:
        subprocess.run(["rm", "-rf", str(tmp)])


def results(out: str) -> dict[str, str]:
    found = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            key, _, value = line[len("RESULT "):].partition(" ")
            found[key] = value
    return found


@pytest.mark.slow
@pytest.mark.parametrize("store", ["overlay", "volume"])
@pytest.mark.parametrize("user", ["root", "tester"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_plash_works_in_a_container(kind: str, user: str, store: str, python_image: str, busybox_tgz: Path,
                                    podman_env: dict[str, str]) -> None:
    r = in_container(python_image, KINDS[kind], user, store, busybox_tgz, podman_env)
    found = results(r.stdout)
    assert r.returncode == 0, r.stderr[-3000:]
    assert found["fs"] == ("overlayfs" if store == "overlay" else "ext2/ext3"), found  # the case meant is met
    assert {k: found.get(k) for k in EXPECTED} == EXPECTED, r.stderr[-3000:]
    slower = "is on overlayfs, which the kernel refuses as an overlay's upper dir"
    assert r.stderr.count(slower) == (1 if store == "overlay" else 0), r.stderr  # said once, where it applies


@pytest.mark.slow
@pytest.mark.parametrize("user", ["root", "tester"])
def test_a_container_refusing_user_namespaces_gets_the_flags_that_help(user: str, python_image: str,
                                                                        busybox_tgz: Path, shared_dir: Path,
                                                                        podman_env: dict[str, str]) -> None:
    profile = shared_dir / "no-unshare.json"
    # as Docker's default profile does for a process without CAP_SYS_ADMIN
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM}]}))
    r = in_container(python_image, ["--security-opt", f"seccomp={profile}"], user, "volume", busybox_tgz,
                     podman_env)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    assert lines[0].startswith("plash error: ") and "cannot create a namespace: unshare: Operation not permitted" in (
        lines[0]), r.stderr
    assert lines[1] == "hint: " + refusals.unshare_hint(errno.EPERM, container=True)
    assert "--security-opt seccomp=unconfined" in lines[1]


def test_root_without_cap_sys_admin_works_as_a_user_does(root_plash: Plash, busybox_tgz: Path) -> None:
    """The root of a default container, simulated on the host: capsh drops CAP_SYS_ADMIN."""
    need(shutil.which("capsh") is not None, "capsh (libcap2-bin) is not installed")
    p = root_plash

    def dropped(*args: str) -> subprocess.CompletedProcess:
        quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in [PLASH, *args])
        return p.sh(["capsh", "--drop=cap_sys_admin", "--", "-c", quoted])

    r = dropped("import-tar", str(busybox_tgz))
    assert r.returncode == 0, r.stderr
    base = r.stdout.strip()
    r = dropped("run", base, "sh", "-c", "cat /proc/self/uid_map; stat -c %u /etc/owned-by-7")
    assert r.returncode == 0, r.stderr
    uid_map, owner = r.stdout.split("\n")[:2]
    assert uid_map.split()[:2] == ["0", "0"], r.stdout  # its own ids, one to one: owners as on the host
    assert owner == "7"
    r = dropped("build", "--from", base, "--run", "rm /etc/owned-by-7; echo new > /new")
    assert r.returncode == 0, r.stderr
    top = r.stdout.strip()
    r = dropped("run", top, "sh", "-c", "cat /new; test -e /etc/owned-by-7 || echo gone")
    assert (r.returncode, r.stdout) == (0, "new\ngone\n"), r.stderr
    # the same store, used by a root that has CAP_SYS_ADMIN, sees the same
    assert p.ok("run", top, "stat", "-c", "%u", "/etc/passwd") == "0"
    assert p.ok("build", "--from", base, "--run", "rm /etc/owned-by-7; echo new > /new") == top
