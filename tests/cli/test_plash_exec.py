"""plash-exec FILE ARGS...: the 2022 shebang `#!/usr/bin/env plash-exec`, run like `plash FILE ARGS...`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import PLASH, Plash

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def exec_path(shared_dir: Path) -> str:
    """A PATH with bin/plash-exec installed as pip installs it (`#!python` made this python)."""
    d = shared_dir / "plash-exec-bin"
    d.mkdir(mode=0o755)
    script = (REPO / "bin" / "plash-exec").read_text()
    assert script.startswith("#!python\n")
    (d / "plash-exec").write_text(f"#!{sys.executable}\n" + script.split("\n", 1)[1])
    (d / "plash-exec").chmod(0o755)
    return f"{d}:{Path(PLASH).parent}:/usr/bin:/bin"


def test_plash_exec_runs_a_build_file(plash: Plash, busybox_tgz: Path, exec_path: str) -> None:
    tools = plash.work / "tools"
    exe = tools / "tool"
    plash.sh(["sh", "-c", f"mkdir {tools} && cat > {exe} && chmod 755 {exe}"],
             input=f"#!/usr/bin/env plash-exec\n--from-tarball {busybox_tgz}\n"
                   "--entrypoint-script\nprintf '<%s>' \"$@\"\npwd\nexit 3\n")
    env = {"PATH": exec_path}
    runs = {
        "by its shebang": ([str(exe), "a b", "c"], plash.work, "<a b><c>"),
        "by its shebang, from its directory": (["./tool", "x"], tools, "<x>"),
        "named without a slash": (["plash-exec", "tool", "y", ""], tools, "<y><>"),
        "named by its path, no arguments": (["plash-exec", str(exe)], plash.work, "<>"),
    }
    for what, (argv, cwd, printed) in runs.items():
        r = plash.sh(argv, env=env, cwd=cwd)
        assert (r.returncode, r.stdout) == (3, f"{printed}{cwd}\n"), f"{what}: {r.stderr}"


def test_plash_exec_usage(plash: Plash, exec_path: str) -> None:
    env = {"PATH": exec_path}
    r = plash.sh(["plash-exec"], env=env)
    assert (r.returncode, r.stdout, r.stderr.splitlines()) == (
        1, "", ["usage: plash-exec FILE [ARGS...]", "plash error: missing the build file"])
    r = plash.sh(["plash-exec", "--help"], env=env)
    assert (r.returncode, r.stdout.splitlines()[0]) == (0, "usage: plash-exec FILE [ARGS...]")
    r = plash.sh(["plash-exec", "nosuch", "a"], env=env)
    assert r.returncode == 1
    assert r.stderr.startswith("plash error: ") and "./nosuch" in r.stderr, r.stderr
