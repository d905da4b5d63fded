"""README's set-up command 1, typed by a newcomer: then `plash` and `plash-exec` are on PATH.

The command runs as it reads, from a clone the user owns, in the user's login
bash, minus its main job (the Debian build, tested in test_debian.py). The
user is the test user without a subuid range, with a fresh home; `sudo` is
played by a root process (tests/newcomer.py), in a mount namespace where
/usr/local/bin and the home are temporary directories, so the machine's own
/usr/local/bin is never touched and two test runs at once do not meet.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import newcomer
import pytest
from conftest import USERS, need

REPO = Path(__file__).resolve().parents[2]


def setup_commands() -> list[str]:
    """The fenced code blocks of README's "Set up" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Set up\n", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"^ *```\n(.*?)^ *```$", section, re.M | re.S)]


def install_part() -> tuple[str, list[str]]:
    """Command 1 without its main job, and the apt packages it installs."""
    steps = setup_commands()[0].split(" && ")
    main_job = steps.pop()
    assert " --from-debootstrap " in main_job, main_job
    packages = []
    for step in steps:
        words = step.split()
        if words[:3] == ["sudo", "apt-get", "install"]:
            packages += [w for w in words[3:] if not w.startswith("-")]
    return " && ".join(steps), packages


def installed(package: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return r.stdout.endswith(" installed")


def copy_worktree(dest: Path) -> None:
    """The working tree as a clone would have it (tracked and new files, no ignored ones)."""
    r = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       capture_output=True)
    need(r.returncode == 0, f"cannot list the files of {REPO}: {r.stderr.decode().strip()}")
    for name in r.stdout.decode().split("\0"):
        src = REPO / name
        if name and src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name, follow_symlinks=False)


def test_readme_has_two_setup_commands() -> None:
    commands = setup_commands()
    assert len(commands) == 2, commands
    assert ["\n" in c for c in commands] == [False, False], commands


@pytest.mark.slow
def test_readme_install_as_a_newcomer(shared_dir: Path, busybox_tgz: Path) -> None:
    need(os.geteuid() == 0, "the install test runs as root: it plays sudo for the test user")
    need(shutil.which("unshare") is not None and shutil.which("runuser") is not None, "util-linux is not installed")
    try:
        user = pwd.getpwnam(USERS["nosub"])
    except KeyError:
        need(False, f"test user {USERS['nosub']} does not exist (see .ci/run)")
    need(os.path.isdir(user.pw_dir), f"test user {user.pw_name} has no home directory")
    install, packages = install_part()
    missing = [p for p in packages if not installed(p)]
    need(not missing, f"README's apt packages are not installed: {' '.join(missing)}")

    base = Path(tempfile.mkdtemp(prefix="newcomer-", dir=shared_dir))
    base.chmod(0o755)
    try:
        home = base / "home"
        shutil.copytree("/etc/skel", home, symlinks=True)
        copy_worktree(home / "plash")
        (home / "proj").mkdir()
        for name, shebang, entry in [("greet", "plash", "--entrypoint printf [%s]"),
                                     ("old", "plash-exec", "--entrypoint-script\nprintf '<%s>' \"$@\"\npwd")]:
            exe = home / "proj" / name
            exe.write_text(f"#!/usr/bin/env {shebang}\n--from-tarball {busybox_tgz}\n{entry}\n")
            exe.chmod(0o755)
        subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(home)], check=True)
        (base / "usr-local-bin").mkdir(mode=0o755)
        (base / "usr-local-man").mkdir(mode=0o755)
        (base / "shim").mkdir(mode=0o755)
        (base / "sock").mkdir(mode=0o700)
        os.chown(base / "sock", user.pw_uid, user.pw_gid)
        sock = str(base / "sock" / "sudo")
        newcomer.write_shim(str(base / "shim" / "sudo"), sock)
        config = {
            "user": user.pw_name, "home": str(home), "usr_local_bin": str(base / "usr-local-bin"),
            "usr_local_man": str(base / "usr-local-man"),
            "sock": sock, "shim_dir": str(base / "shim"),
            # twice: running it again must work too; then plash in the same shell
            "session": f"cd plash && {install} && {install} && plash --version && command -v plash-exec",
            "logins": ["plash --version", "cd proj && ./greet a 'b c'", "cd proj && plash-exec old a 'b c'",
                       "~/proj/old x", "cd proj && ./old 'p q'", "man -w plash"],
        }
        (base / "config.json").write_text(json.dumps(config))
        r = subprocess.run(["unshare", "--mount", sys.executable, newcomer.__file__, str(base / "config.json")],
                           capture_output=True, text=True, timeout=1500)
        assert r.returncode == 0, r.stderr
        session, *logins = json.loads(r.stdout)
        assert session["rc"] == 0, f"README's command 1 in {user.pw_name}'s shell:\n{session['err'][-3000:]}"
        assert session["out"].splitlines()[-1].endswith("/plash-exec"), session["out"]
        results = {x["cmd"]: (x["rc"], x["out"]) for x in logins}
        errors = "\n".join(f"$ {x['cmd']}\n{x['err'][-1500:]}" for x in logins if x["rc"])
        version = results["plash --version"][1]
        assert version.strip(), errors
        assert results == {
            "plash --version": (0, version),
            "cd proj && ./greet a 'b c'": (0, "[a][b c]"),
            "cd proj && plash-exec old a 'b c'": (0, f"<a><b c>{user.pw_dir}/proj\n"),
            "~/proj/old x": (0, f"<x>{user.pw_dir}\n"),
            "cd proj && ./old 'p q'": (0, f"<p q>{user.pw_dir}/proj\n"),
            # man plash works (Debian's /usr/local/man links to share/man: man may name either)
            "man -w plash": (0, results["man -w plash"][1]),
        }, errors
        assert os.path.realpath(results["man -w plash"][1].strip()).endswith("/man/man1/plash.1"), errors
    finally:
        subprocess.run(["rm", "-rf", str(base)])
    # the machine's own /usr/local/bin has no link into the deleted directory
    assert not [n for n in os.listdir("/usr/local/bin") if str(base) in os.path.realpath(f"/usr/local/bin/{n}")]
