"""Where build steps and containers run, what they see of the host, and which host values reach them.

For each kind of user: build steps start in the caller's directory (or a plash
executable's own), the cwd is not part of a layer's key, PLASH_EXPORT names
never reach build steps, a $HOME outside /home and /root is shared too, and
`plash run IMAGE CMD` starts from the image's /etc/profile.
"""

from __future__ import annotations

import functools
import http.server
import os
import pwd
import shutil
import threading
import uuid
from pathlib import Path

import pytest
from conftest import PLASH, Plash


def owned_dir(plash: Plash, parent: Path) -> Path:
    """A new directory under parent that the test user owns; removed by the caller."""
    d = parent / f"plash-test-{uuid.uuid4().hex[:10]}"
    d.mkdir(mode=0o755)
    if plash.user != "root":
        pw = pwd.getpwnam(plash.name)
        os.chown(d, pw.pw_uid, pw.pw_gid)
    return d


@pytest.fixture
def in_home(plash: Plash):
    """A project directory under the user's home (shared with build steps, unlike /tmp)."""
    d = owned_dir(plash, plash.home)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write(plash: Plash, path: Path, text: str, mode: int = 0o644) -> None:
    plash.sh(["sh", "-c", f"cat > '{path}' && chmod {mode:o} '{path}'"], input=text)


def test_build_steps_run_in_the_callers_directory(plash: Plash, image: str, in_home: Path) -> None:
    write(plash, in_home / "in.txt", "from the project dir\n")
    r = plash("build", "--from", image, "--run", "cat in.txt > /copied; pwd > /where", cwd=in_home)
    assert r.returncode == 0, r.stderr
    built = r.stdout.strip()
    assert plash.ok("run", built, "cat", "/copied") == "from the project dir"
    assert plash.ok("run", built, "cat", "/where") == str(in_home)


def test_the_cwd_is_not_part_of_the_key(plash: Plash, image: str, in_home: Path) -> None:
    other = in_home / "other"
    plash.sh(["mkdir", str(other)])
    macros = ["build", "--from", image, "--run", "echo same > /same"]
    first = plash(*macros, cwd=in_home)
    again = plash(*macros, cwd=other)
    assert first.returncode == 0, first.stderr
    assert (again.returncode, again.stdout, again.stderr) == (0, first.stdout, "")


def test_a_cwd_missing_inside_falls_back_to_the_root(plash: Plash, image: str) -> None:
    # the work dir lies under the host's /tmp, which build steps do not see
    built = plash.ok("build", "--from", image, "--run", "pwd > /where")
    assert plash.ok("run", built, "cat", "/where") == "/"


def test_executable_steps_run_in_its_directory(plash: Plash, image: str, in_home: Path) -> None:
    """The original README's pattern: --hash-path ./requirements.txt, then a step that reads it."""
    write(plash, in_home / "requirements.txt", "cowsay==1\n")
    exe = in_home / "tool"
    write(plash, exe, "#!/usr/bin/env plash\n"
          f"--from {image}\n--hash-path ./requirements.txt\n--run\ncp ./requirements.txt /req\n"
          "--entrypoint cat /req\n", mode=0o755)
    env = {"PATH": f"{Path(PLASH).parent}:/usr/bin:/bin"}
    r = plash.sh([str(exe)], env=env)  # called from the work dir, elsewhere
    assert (r.returncode, r.stdout) == (0, "cowsay==1\n"), r.stderr
    write(plash, in_home / "requirements.txt", "cowsay==2\n")  # a new content rebuilds
    r = plash.sh([str(exe)], env=env)
    assert (r.returncode, r.stdout) == (0, "cowsay==2\n"), r.stderr


def test_plash_export_never_reaches_build_steps(plash: Plash, image: str) -> None:
    macros = ["build", "--from", image, "--run", 'echo "${A-unset}" > /a']
    one = plash(*macros, env={"PLASH_EXPORT": "A", "A": "1"})
    two = plash(*macros, env={"PLASH_EXPORT": "A", "A": "2"})
    assert one.returncode == 0, one.stderr
    assert two.stdout == one.stdout  # same key, same layer ...
    assert plash.ok("run", one.stdout.strip(), "cat", "/a") == "unset"  # ... which knows no host value
    # containers still get them, and --import-env is the way to bake a value in
    assert plash.ok("run", image, "sh", "-c", "echo $A", env={"PLASH_EXPORT": "A", "A": "3"}) == "3"
    baked = plash.ok("build", "--from", image, "--import-env", "A", "--run", "echo $A > /a", env={"A": "4"})
    assert plash.ok("run", baked, "cat", "/a") == "4"


def test_image_env_names_do_not_reach_build_steps(plash: Plash, image: str) -> None:
    with_env = plash.ok("build", "--from", image, "--env", "MYVAR")
    built = plash.ok("build", "--from", with_env, "--run", 'echo "${MYVAR-unset}" > /v', env={"MYVAR": "host"})
    assert plash.ok("run", built, "cat", "/v") == "unset"
    assert plash.ok("run", built, "sh", "-c", "echo $MYVAR", env={"MYVAR": "host"}) == "host"


@pytest.fixture
def odd_home(plash: Plash):
    """A home outside /home and /root (like /var/lib/jenkins), given to plash as $HOME."""
    base = Path("/var/tmp")
    d = owned_dir(plash, base)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_home_outside_home_and_root_is_shared(plash: Plash, image: str, odd_home: Path) -> None:
    env = {"HOME": str(odd_home)}
    write(plash, odd_home / "note", "in my home\n")
    project = odd_home / "project"
    plash.sh(["mkdir", str(project)])
    # run: the home is there, and so is the cwd inside it
    assert plash.ok("run", image, "sh", "-c", "cat $HOME/note; pwd", env=env, cwd=project) == f"in my home\n{project}"
    # build steps: they see and may write the home, and start in the cwd inside it
    r = plash("build", "--from", image, "--run", "cat ../note > /copied; echo from-build > $HOME/written",
              env=env, cwd=project)
    assert r.returncode == 0, r.stderr
    built = r.stdout.strip()
    assert (odd_home / "written").read_text() == "from-build\n"
    assert plash.ok("run", built, "cat", "/copied", env=env) == "in my home"
    # the mount point made for the home is not left in the layer
    layer = Path(plash.ok("nodepath", built)) / "root"
    assert not os.path.lexists(layer / odd_home.relative_to("/"))
    assert plash("run", built, "test", "!", "-e", str(odd_home)).returncode == 0  # with the usual HOME: not there
    # an executable in that home builds and runs from there
    exe = odd_home / "tool"
    write(plash, exe, f"#!/usr/bin/env plash\n--from {image}\n--run\ncp ./note /n\n--entrypoint cat /n\n", mode=0o755)
    r = plash.sh([str(exe)], env={**env, "PATH": f"{Path(PLASH).parent}:/usr/bin:/bin"})
    assert (r.returncode, r.stdout) == (0, "in my home\n"), r.stderr


def test_run_cmd_starts_from_the_images_profile(plash: Plash, image: str) -> None:
    new = plash.ok("create", image, "sh", "-c", "echo 'export V=yes' >> /etc/profile")
    assert plash.ok("run", new, "sh", "-c", "echo $V") == "yes"
    assert plash.ok("run", new, "V=mine", "sh", "-c", "echo $V") == "mine"  # the command line wins
    r = plash("run", new, "no-such-cmd")
    assert (r.returncode, r.stderr) == (127, "no-such-cmd: command not found\n")
    assert plash("run", new, "sh", "-c", "exit 9").returncode == 9


def test_run_argument_errors(plash: Plash, image: str) -> None:
    r = plash("run", image, "")
    assert (r.returncode, r.stderr) == (1, "plash error: the command is an empty string\n")
    r = plash("run", "--", "-1")
    assert (r.returncode, r.stderr) == (1, "plash error: image must be a positive number, got: '-1'\n")


@pytest.fixture
def mirror(tmp_path: Path):
    """A Debian-style mirror on 127.0.0.1 that has one suite (its Release file and nothing else)."""
    (tmp_path / "debian/dists/bookworm").mkdir(parents=True)
    (tmp_path / "debian/dists/bookworm/Release").write_text("Suite: stable\nCodename: bookworm\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/debian"
    server.shutdown()


def test_debootstrap_of_an_unknown_suite_says_so(root_plash: Plash, mirror: str) -> None:
    r = root_plash("build", "--from-debootstrap", "nosuchsuite", mirror)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("plash error:")]
    assert errors == [f"plash error: --from-debootstrap: unknown suite 'nosuchsuite': {mirror} has no dists/nosuchsuite/Release"]
    assert "tarball" not in r.stderr
    before = root_plash.snapshot()
    again = root_plash("build", "--from-debootstrap", "nosuchsuite", mirror)
    assert again.returncode == 1
    assert root_plash.snapshot() == before


def test_debootstrap_failure_is_blamed_on_the_tool(root_plash: Plash, mirror: str) -> None:
    """A suite the mirror lists but cannot serve: the error names the tool, not an empty tarball."""
    r = root_plash("build", "--from-debootstrap", "bookworm", mirror, timeout=300)
    assert r.returncode == 1
    tool = "mmdebstrap" if shutil.which("mmdebstrap") else "debootstrap"
    assert f"plash error: {tool} failed for suite bookworm" in r.stderr, r.stderr
    assert "not a valid tarball" not in r.stderr
