"""What users of the original plash type: eval-string, import-env, init, help, unknown commands, run-stdin."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import Plash

# The subcommands of SPEC 3, each of which `plash help` must list.
SPEC_COMMANDS = ["build", "run", "warm", "b", "create", "eval", "help", "help-macros", "version", "import-tar", "import-url",
                 "import-lxc", "import-docker", "export-tar", "copy", "mount", "with-mount", "nodepath", "parent", "map",
                 "rm", "clean", "shrink", "purge", "sudo", "data", "init"]


@pytest.fixture
def root_image(root_plash: Plash, busybox_tgz: Path) -> str:
    return root_plash.import_tar(busybox_tgz)


def test_eval_string_is_split_like_a_shell(plash: Plash) -> None:
    assert plash.ok("eval", "--eval-string", "--run 'echo from string'") == "echo from string"
    r = plash("eval", "--from", "1", "--eval-string", "--run ok --aptt x")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.splitlines()[0] == "plash error: argument 3: eval-string:3: unknown macro 'aptt' (did you mean 'apt'?)"


def test_eval_string_in_a_build_file(plash: Plash) -> None:
    f = plash.work / "build"
    f.write_text("--eval-string --run 'echo from string'\n")
    assert plash.ok("eval", "--eval-file", str(f)) == "echo from string"


def test_import_env_of_an_unset_variable_adds_nothing(plash: Plash) -> None:
    assert plash("eval", "--import-env", "PLASH_SURELY_UNSET").stdout == ""
    assert plash.ok("eval", "--import-env", "HOME:H") == f"export H={plash.home}"
    r = plash("eval", "--run", "x", "--import-env", "HOME:1H")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.startswith("plash error: argument 3: --import-env: '1H' is not a shell variable name")


@pytest.mark.parametrize(("word", "hint"), [
    ("frobnicate", "hint: plash help lists the commands"),
    ("biuld", "hint: did you mean 'build'?"),
])
def test_unknown_command_is_one_error_line(plash: Plash, word: str, hint: str) -> None:
    r = plash(word, "x")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.splitlines() == [f"plash error: no such command: {word}", hint]


def test_no_arguments_prints_a_hint(plash: Plash) -> None:
    r = plash()
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "plash is a container build and run tool, try plash help\n")


def test_no_arguments_and_unknown_commands_do_not_load_click() -> None:
    code = ("import sys\nfrom plash.__main__ import main\n"
            "for argv in ([], ['frobnicate']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('click', 'trio', 'rich') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout == "[]\n", r.stderr


def test_help_lists_every_command_on_one_line(plash: Plash) -> None:
    listing = plash.ok("help")
    assert plash.ok("--help") == listing == plash.ok("-h")
    lines = listing.splitlines()
    for cmd in SPEC_COMMANDS:
        found = [line for line in lines if line.startswith(f"plash {cmd} ") or line == f"plash {cmd}"]
        assert len(found) == 1, (cmd, listing)
        assert "  " in found[0].rstrip(), found  # usage, then what it does
    # the two forms people type most come first: build-and-run, and a build file run as a program
    assert any(line.strip().startswith("plash --from alpine:edge --apk git -- git status") for line in lines[:5])
    assert any(line.strip().startswith("./app.plash ARGS...") for line in lines[:5])
    run = next(line for line in lines if line.startswith("plash run "))
    assert run.startswith("plash run IMAGE [CMD...]  ")
    assert "run CMD in IMAGE" in run
    assert plash.ok("help", "run").startswith("Usage: plash run")


def test_every_command_is_declared_once() -> None:
    """plash.__main__.COMMANDS is the one list: click lists it in its order, finds each command, and has no other."""
    import click

    from plash.__main__ import COMMANDS, Fast
    from plash.cli import app, completion, helps, images, listing, push, registry, store
    from plash.cli.app import cli

    app.use(COMMANDS)
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == list(COMMANDS)
    found = {name: cli.get_command(ctx, name) for name in COMMANDS}
    assert all(isinstance(cmd, click.Command) for cmd in found.values()), found
    for name, cmd in found.items():
        if isinstance(COMMANDS[name], Fast):
            assert cmd.callback is None, name  # click only renders a fast command's help
    defined = [v for m in (completion, helps, images, listing, push, registry, store) for v in vars(m).values()
               if isinstance(v, click.Command)]
    # an alias (ls for images) names the same command twice
    assert len(defined) == len({where for where in COMMANDS.values() if not isinstance(where, Fast)}), defined
    assert {id(v) for v in defined} <= {id(cmd) for cmd in found.values()}, "a click command that is not in COMMANDS"


def test_help_of_an_unknown_command_suggests(plash: Plash) -> None:
    r = plash("help", "biuld")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.splitlines() == ["plash error: no such command: biuld", "hint: did you mean 'build'?"]


def test_init_creates_the_store_quietly(plash: Plash) -> None:
    assert not plash.store.exists()
    for _ in range(2):
        r = plash("init")
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert (plash.store / "index" / "0").is_symlink()
    assert plash.ok("help", "init").startswith("Usage: plash init")


def test_eval_run_stdin_keeps_the_input_newline(plash: Plash) -> None:
    r = plash("eval", "--run-stdin", input="a\nb\n")
    assert (r.returncode, r.stdout) == (0, "a\nb\n")
    assert plash.ok("eval", "--run-stdin", "--run", "c", input="a\n\n") == "a\nc"


def test_build_run_stdin_ignores_trailing_empty_lines(root_plash: Plash, root_image: str) -> None:
    first = root_plash.ok("build", "--from", root_image, "--run-stdin", input="echo hi > /f\n")
    for text in ("echo hi > /f", "echo hi > /f\n\n"):
        r = root_plash("build", "--from", root_image, "--run-stdin", input=text)
        assert (r.returncode, r.stdout.strip(), r.stderr) == (0, first, "")
    assert root_plash.ok("run", first, "cat", "/f") == "hi"


def test_help_says_build_steps_share_home_not_tmp(plash: Plash) -> None:
    run_line = next(line for line in plash.ok("--help-macros").splitlines() if line.lstrip().startswith("--run "))
    build_help = " ".join(plash.ok("help", "build").split())
    for text in (run_line, build_help):
        assert all(path in text for path in ("/home", "/root", "/tmp")), text
    assert "useradd -m carol" in build_help
    assert "/home/carol" in build_help


def test_build_steps_write_the_host_home_and_not_its_tmp(root_plash: Plash, root_image: str) -> None:
    name = f"plash-compat-{uuid.uuid4().hex}"
    in_home, in_tmp = root_plash.home / name, Path("/tmp") / name
    in_tmp.write_text("host\n")
    try:
        root_plash.ok("build", "--from", root_image, "--run", f"test ! -e {in_tmp}", f"echo step > {in_home}")
        assert in_home.read_text() == "step\n"
    finally:
        in_tmp.unlink()
        if os.path.lexists(in_home):
            in_home.unlink()
