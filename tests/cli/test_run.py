"""plash run and create on real namespaces and overlay mounts, for each kind of user."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import PLASH, Plash
from procs import own_pid


def mountinfo() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split(" ", 4)[4] for line in f)


def test_output_and_exit_status_pass_through(plash: Plash, image: str) -> None:
    r = plash("run", image, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")
    assert plash("run", image, "true").returncode == 0
    assert plash("run", image, "false").returncode == 1


def test_stdin_reaches_the_command(plash: Plash, image: str) -> None:
    r = plash("run", image, "cat", input="piped data\n")
    assert r.stdout == "piped data\n"


def test_default_command_is_a_login_shell_reading_stdin(plash: Plash, image: str) -> None:
    r = plash("run", image, input="echo $PROFILE_LOADED; exit 3\n")
    assert r.returncode == 3
    assert r.stdout == "yes\n"


def test_missing_command_gives_127(plash: Plash, image: str) -> None:
    r = plash("run", image, "no-such-cmd", "x")
    assert r.returncode == 127
    assert r.stderr == "no-such-cmd: command not found\n"


def test_runs_as_root_inside_with_the_users_mapping(plash: Plash, image: str) -> None:
    out = plash.ok("run", image, "sh", "-c", "id -u; cat /proc/self/uid_map")
    lines = out.splitlines()
    assert lines[0] == "0"
    maps = [line.split() for line in lines[1:]]
    if plash.user == "root":
        assert maps == [["0", "0", "4294967295"]]
    elif plash.user == "sub":
        assert len(maps) == 2
        assert maps[1][0] == "1"
        assert int(maps[1][2]) > 1000
    else:
        assert len(maps) == 1
        assert maps[0][0] == "0"
        assert maps[0][2] == "1"


def test_ownership_from_the_tarball_where_mapped(plash: Plash, image: str) -> None:
    owner = plash.ok("run", image, "stat", "-c", "%u", "/etc/owned-by-7")
    assert owner == ("0" if plash.user == "nosub" else "7")


def test_changes_are_discarded(plash: Plash, image: str) -> None:
    assert plash("run", image, "sh", "-c", "echo x > /etc/new; rm /etc/os-release").returncode == 0
    assert plash("run", image, "test", "-e", "/etc/new").returncode == 1
    assert plash.ok("run", image, "cat", "/etc/os-release").startswith("NAME=busybox")
    assert os.listdir(plash.store / "tmp") == []


def test_create_keeps_changes_and_only_them(plash: Plash, bare_tgz: Path) -> None:
    base = plash.import_tar(bare_tgz)
    new = plash.ok("create", base, "sh", "-c", "echo kept > /etc/new; rm /etc/os-release")
    assert new.isdigit()
    assert new != base
    assert plash.ok("parent", new) == base
    assert plash.ok("run", new, "cat", "/etc/new") == "kept"
    assert plash("run", new, "test", "-e", "/etc/os-release").returncode == 1
    layer = Path(plash.ok("nodepath", new)) / "root"
    found = sorted(str(p.relative_to(layer)) for p in layer.rglob("*"))
    # no mount points (home, proc, dev, tmp, resolv.conf ...) left in the layer
    assert found == ["etc", "etc/new", "etc/os-release"]
    assert plash.ok("run", base, "sh", "-c", "test -e /etc/new || echo absent") == "absent"
    assert os.listdir(plash.store / "tmp") == []


def test_create_reads_a_script_on_stdin(plash: Plash, image: str) -> None:
    r = plash("create", image, input="echo one > /one\nfalse\necho two > /two\n")
    # the script runs with sh -e, so it fails at `false` and nothing is saved
    assert (r.returncode, r.stdout) == (1, "")
    new = plash.ok("create", image, input="echo one > /one\n")
    assert plash.ok("run", new, "cat", "/one") == "one"


def test_failed_create_saves_nothing(plash: Plash, image: str) -> None:
    before = plash.snapshot()
    r = plash("create", image, "sh", "-c", "touch /x; exit 3")
    assert r.returncode == 1
    assert r.stderr.startswith("plash error: command failed in image")
    assert r.stdout == ""
    assert plash.snapshot() == before


def test_home_and_tmp_are_shared(plash: Plash, image: str) -> None:
    shared = plash.work / "shared.txt"
    shared.write_text("from host\n")
    os.chmod(shared, 0o644)
    assert plash.ok("run", image, "cat", str(shared)) == "from host"
    out = plash.work / "from-container"
    plash.ok("run", image, "sh", "-c", f"echo hi > {out}")
    assert out.read_text() == "hi\n"
    assert plash.ok("run", image, "sh", "-c", "test -d $HOME && echo $HOME") == str(plash.home)


def test_tmp_is_not_shared_while_creating(plash: Plash, image: str) -> None:
    marker = Path("/tmp") / f"plash-marker-{os.getpid()}-{plash.user}"
    marker.write_text("host\n")
    try:
        new = plash.ok("create", image, "sh", "-c", f"test ! -e {marker} && touch {marker}.inside")
        assert not Path(f"{marker}.inside").exists()
        # at run time /tmp is the host's again
        assert plash.ok("run", new, "cat", str(marker)) == "host"
        assert plash("run", new, "test", "-e", f"{marker}.inside").returncode == 1
        layer = Path(plash.ok("nodepath", new)) / "root" / "tmp"
        assert os.listdir(layer) == [f"{marker.name}.inside"]
    finally:
        marker.unlink()


def test_cwd_is_kept_or_root(plash: Plash, image: str) -> None:
    sub = plash.work / "deep" / "dir"
    sub.mkdir(parents=True)
    os.chmod(plash.work / "deep", 0o755)
    os.chmod(sub, 0o755)
    assert plash.ok("run", image, "pwd", cwd=sub) == str(sub)
    # /usr/share exists on the host but not in the image: fall back to /
    assert plash.ok("run", image, "pwd", cwd="/usr/share") == "/"


def test_no_mount_is_left_on_the_host(plash: Plash, image: str) -> None:
    before = mountinfo()
    plash.ok("run", image, "true")
    plash.ok("create", image, "touch", "/x")
    plash.ok("with-mount", image, "true")
    plash.ok("export-tar", image, str(plash.work / "out.tar"))
    assert mountinfo() == before


def test_environment_policy(plash: Plash, image: str) -> None:
    env = {"TERM": "xterm-test", "SECRET": "no", "PLASH_EXPORT": "EXPORTED:ALSO", "EXPORTED": "yes"}
    out = plash.ok("run", image, "A=1", "B=two words", "env", env=env)
    got = dict(line.split("=", 1) for line in out.splitlines())
    assert got["TERM"] == "xterm-test"
    assert got["EXPORTED"] == "yes"
    assert got["A"] == "1"
    assert got["B"] == "two words"
    assert got["HOME"] == str(plash.home)
    assert got["PLASH_DATA"] == str(plash.store)
    assert got["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert "SECRET" not in got
    assert "LANG" not in got
    assert "ALSO" not in got


def test_signals_reach_the_command(plash: Plash, image: str) -> None:
    proc = subprocess.Popen(
        plash.command([PLASH, "run", image, "sh", "-c", "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.05; done"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=plash.work,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    # runuser sits between us and plash for the test users: signal plash's process itself
    os.kill(own_pid(proc), 15)
    out, _ = proc.communicate(timeout=20)
    assert out == "got-term\n"
    assert proc.returncode == 9


def test_no_python_parent_is_left(plash: Plash, image: str) -> None:
    # the container command replaces the plash process itself
    proc = subprocess.Popen(
        plash.command([PLASH, "run", image, "sh", "-c", "echo $$; cat /proc/$PPID/comm"]),
        stdout=subprocess.PIPE, text=True, cwd=plash.work,
    )
    out, _ = proc.communicate(timeout=30)
    pid, parent = out.split()
    if plash.user == "root":
        assert int(pid) == proc.pid  # env -> plash -> sh: one process all along
    else:
        assert parent == "runuser"


def test_deep_image_runs(plash: Plash, image: str) -> None:
    """200 layers: the overlay option string must stay below the kernel's one-page limit."""
    script = f"""
import os, sys
from plash.store.layout import open_store
s = open_store()
parent = {image}
for i in range(200):
    staged = s.mkdtemp("deep")
    os.makedirs(staged + "/img/root/layers")
    open(staged + "/img/root/layers/%d" % i, "w").close()
    parent = s.publish(staged + "/img", parent)
    os.rmdir(staged)
print(parent)
"""
    r = plash.sh([str(Path(PLASH).parent / "python"), "-c", script])
    assert r.returncode == 0, r.stderr
    top = r.stdout.strip()
    out = plash.ok("run", top, "sh", "-c", "ls /layers | wc -l; cat /etc/os-release")
    assert out.splitlines()[0].strip() == "200"
    assert "busybox" in out


def test_run_does_not_import_heavy_modules(plash: Plash, image: str) -> None:
    r = plash.sh([str(Path(PLASH).parent / "python"), "-X", "importtime", "-m", "plash", "run", image, "true"])
    assert r.returncode == 0
    modules = {line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines() if "|" in line}
    assert "plash" in modules
    assert not modules & {"trio", "rich", "httpx", "click", "anyio"}
