"""plash completion bash|zsh|fish and plash manpage, used as a shell and man would use them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import PLASH, Plash, need


def bash_complete(plash: Plash, line: str) -> list[str]:
    """What bash offers for the last word of line, with plash's completion script loaded."""
    words = line.split(" ")
    script = (f'plash() {{ {PLASH} "$@"; }}\n'  # the script calls `plash`: the one under test
              f'eval "$({PLASH} completion bash)"\n'
              f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
              '_plash; printf "%s\\n" "${COMPREPLY[@]}"\n')
    r = plash.sh(["bash", "--norc", "-c", script])
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_bash_completes_commands_macros_ids_and_names(plash: Plash, image: str) -> None:
    need(shutil.which("bash") is not None, "bash is not installed")
    plash.ok("map", "mybox", image)
    assert bash_complete(plash, "plash imp") == ["import-tar", "import-lxc", "import-url", "import-docker"]
    assert "inspect" in bash_complete(plash, "plash in")
    assert bash_complete(plash, "plash run ") == [image, "mybox"]
    assert bash_complete(plash, "plash run my") == ["mybox"]
    assert "--apt" in bash_complete(plash, "plash build --from 1 --ap")
    assert bash_complete(plash, "plash --from ") == [image, "mybox"]
    assert set(bash_complete(plash, "plash -A vim --no")) >= {"--no-cache"}
    assert bash_complete(plash, "plash b ru") == ["run"]
    assert bash_complete(plash, "plash map ") == ["mybox"]
    assert "--" not in bash_complete(plash, "plash --from 1 -- ")  # after --: the command's words, files


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_ask_plash(plash: Plash, shell: str) -> None:
    script = plash.ok("completion", shell)
    assert "plash __complete" in script
    if shutil.which(shell):
        check = [shell, "-n", "-c", script] if shell == "zsh" else [shell, "--no-execute", "-c", script]
        r = subprocess.run(check, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_the_hidden_helper_is_not_in_the_help(plash: Plash) -> None:
    listing = plash.ok("help")
    assert "__complete" not in listing
    assert "plash completion " in listing and "plash manpage" in listing


def test_a_bad_shell_is_one_line(plash: Plash) -> None:
    r = plash("completion", "tcsh")
    assert r.returncode == 1 and r.stdout == ""
    assert [line for line in r.stderr.splitlines() if line.startswith("plash error:")], r.stderr


def test_the_man_page_renders_and_covers_every_command(plash: Plash, tmp_path: Path) -> None:
    page = plash.ok("manpage")
    assert page.startswith(".TH PLASH 1")
    need(shutil.which("man") is not None, "man (man-db) is not installed")
    path = plash.work / "plash.1"
    path.write_text(page + "\n")
    r = subprocess.run(["man", "-l", str(path)], capture_output=True, text=True,
                       env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "MAN_KEEP_FORMATTING": ""})
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr.lower(), r.stderr
    text = r.stdout
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "MACROS", "ENVIRONMENT"):
        assert f"\n{section}\n" in text, section
    commands = [line.split()[1] for line in plash.ok("help").splitlines()
                if line.startswith("plash ") and not line.startswith("plash is ")]
    for cmd in commands:
        assert f"Usage: plash {cmd}" in text, cmd
    assert "--apt" in text and "PLASH_DATA" in text
    assert "plash --from alpine:edge --apk git -- git status" in text
