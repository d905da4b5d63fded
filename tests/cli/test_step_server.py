"""Build steps run in a step server (plash.launch.steps): one launcher for many steps, none left behind.

Each step's shell is the child of its supervisor, whose parent is the
server; a step reads that pid from /proc (the pid namespace is the host's)
and writes it into its layer, so the test sees which server ran each step.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from conftest import PLASH, Plash

SERVER_PID = "s=$(awk '/^PPid:/ {print $2}' /proc/$PPID/status); echo $s > /server-$N"


def servers_of(plash: Plash, image: str, layers: int) -> list[str]:
    cat = " ".join(f"/server-{n}" for n in range(1, layers + 1))
    return plash.ok("run", image, "cat", *cat.split()).split()


def test_the_steps_of_a_build_share_one_server_which_ends_with_the_build(plash: Plash, image: str) -> None:
    macros: list[str] = []
    for n in range(1, 5):
        macros += ["--run", SERVER_PID.replace("$N", str(n)), "--layer"]
    built = plash.ok("build", "--from", image, *macros)
    pids = servers_of(plash, built, 4)
    assert len(set(pids)) == 1, pids
    assert pids[0] != str(os.getpid())
    # the build is over: its server has ended (not even a zombie of a live plash is left)
    try:
        left = Path(f"/proc/{pids[0]}/cmdline").read_bytes()
    except FileNotFoundError:
        left = b""
    assert b"plash" not in left, left


def test_a_failed_step_leaves_the_server_usable_for_the_next(plash: Plash, image: str) -> None:
    bad = plash.work / "bad"
    good = plash.work / "good"
    report = "s=$(awk '/^PPid:/ {print $2}' /proc/$PPID/status); echo server=$s"
    for path, text in ((bad, f"--from {image}\n--run\n{report}; exit 7\n"),
                       (good, f"--from {image}\n--run\n{SERVER_PID.replace('$N', '1')}\n--layer\n--run\n"
                              f"{SERVER_PID.replace('$N', '2')}\n")):
        r = plash.sh(["sh", "-c", f"cat > {path}"], input=text)
        assert r.returncode == 0, r.stderr
    # -j 1: one step at a time, every one of them in the same server, the failed one's included
    r = plash.sh([PLASH, "warm", "-j", "1", "--keep-going", "--progress", "plain", str(bad), str(good)])
    assert r.returncode == 1, r.stderr
    assert "exit 7" in r.stderr
    failed_in = [line.rsplit("server=", 1)[1] for line in r.stderr.splitlines() if "] server=" in line]
    built = dict(line.split()[::-1] for line in r.stdout.splitlines())[str(good)]
    pids = servers_of(plash, built, 2)
    assert len(failed_in) == 1, r.stderr
    assert set(pids) == set(failed_in), (pids, failed_in)


def test_step_output_and_exit_status_come_through_the_server(plash: Plash, image: str) -> None:
    r = plash("build", "--from", image, "--run", "echo to-out; echo to-err >&2; exit 3")
    assert r.returncode == 1
    assert r.stdout == ""
    assert "to-out" in r.stderr and "to-err" in r.stderr
    assert r.stderr.splitlines()[-1] == "plash error: build failed at argument 3 (exit 3)", r.stderr
    r = plash("build", "--from", image, "--run", "kill -9 $$")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == "plash error: build failed at argument 3 (exit 137)", r.stderr


def test_modules_in_the_current_directory_are_never_imported(plash: Plash, image: str) -> None:
    """A launcher child (`python -c`) and `plash b run`'s fresh process would put the current directory first."""
    where = plash.work / "hostile-dir"
    hijack = "import sys; sys.stderr.write('HIJACKED\\n'); sys.exit(99)\n"
    for name in ("socket.py", "json.py", "select.py", "plash/__init__.py", "plash/launch/__init__.py"):
        r = plash.sh(["sh", "-c", f"mkdir -p $(dirname {where / name}) && cat > {where / name}"], input=hijack)
        assert r.returncode == 0, r.stderr
    r = plash.sh([PLASH, "build", "--no-cache", "--from", image, "--run", "echo fine"], cwd=where)
    assert r.returncode == 0 and "HIJACKED" not in r.stderr, r.stderr
    r = plash.sh([PLASH, "b", "run", "--from", image, "--run", "echo step", "--", "echo", "ran"], cwd=where)
    assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
    assert "HIJACKED" not in r.stderr


def processes_with(argv: list[str]) -> list[int]:
    want = b"\0".join(a.encode() for a in argv) + b"\0"
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if Path(f"/proc/{name}/cmdline").read_bytes() == want:
                    found.append(int(name))
            except OSError:
                continue
    return found


def test_what_a_step_leaves_running_is_killed_when_it_ends(plash: Plash, image: str) -> None:
    """A daemon started by a step would go on writing into a layer already published (and live on)."""
    seconds = f"{900000 + os.getpid() % 1000}{len(str(plash.work))}"  # this test's own, among suites run at once
    r = plash("build", "--no-cache", "--from", image, "--run", f"sleep {seconds} >/dev/null 2>&1 & echo started")
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 10
    while processes_with(["sleep", seconds]) and time.monotonic() < deadline:
        time.sleep(0.05)  # SIGKILL was sent before the build ended: waiting for the kernel to end it
    assert processes_with(["sleep", seconds]) == [], "a step's daemon outlived its step"


def test_a_server_that_cannot_enter_the_namespaces_gives_one_error_and_leaves_the_store(plash: Plash,
                                                                                         image: str) -> None:
    """Inside a user namespace whose limit of nested ones is 0, as its root without capabilities."""
    no_userns = ("echo 0 > /proc/sys/user/max_user_namespaces && "
                 'exec setpriv --bounding-set=-all --inh-caps=-all "$@"')
    r = plash.sh(["unshare", "-r", "sh", "-c", no_userns, "sh", PLASH, "build", "--from", image, "--run", "true"])
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("plash error:")]
    assert errors == ["plash error: cannot create a namespace: unshare: No space left on device"], r.stderr
    assert "hint: the limit of user namespaces is reached" in r.stderr
    assert os.listdir(plash.store / "tmp") == []


def test_steps_that_run_at_once_share_one_server(plash: Plash, image: str) -> None:
    # three own steps wait for each other (a meeting dir in the shared home), so they run at once
    meet = plash.home / f".plash-test-meet-{os.getpid()}-{time.monotonic_ns()}"
    assert plash.sh(["mkdir", str(meet)]).returncode == 0
    try:
        files = []
        for n in range(1, 4):
            wait = (f"touch {meet}/{n}; i=0; while [ $(ls {meet} | wc -l) -lt 3 ]; do "
                    f"i=$((i + 1)); [ $i -lt 1200 ] || exit 9; sleep 0.05; done")
            path = plash.work / f"exe{n}"
            text = f"--from {image}\n--run\n{wait}\n{SERVER_PID.replace('$N', '1')}\n"
            assert plash.sh(["sh", "-c", f"cat > {path}"], input=text).returncode == 0
            files.append(str(path))
        r = plash.sh([PLASH, "warm", "-j", "4", *files])
        assert r.returncode == 0, r.stderr
        built = dict(line.split()[::-1] for line in r.stdout.splitlines())
        pids = {servers_of(plash, built[f], 1)[0] for f in files}
        assert len(pids) == 1, pids
    finally:
        plash.sh(["rm", "-rf", str(meet)])
