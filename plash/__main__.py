"""The `plash` entry point: `run` goes straight to the launcher, the rest to click."""

from __future__ import annotations

import sys

from plash.errors import PlashError

# Every subcommand of plash.cli, in its order: `plash` alone and a mistyped command are answered
# without loading click (70 ms). tests/cli/test_original_compat.py checks it against the click group.
COMMANDS = (
    "help", "version", "init", "build", "b", "warm", "eval", "help-macros", "run", "create", "import-tar",
    "import-lxc", "import-url", "import-docker", "export-tar", "copy", "mount", "with-mount", "nodepath",
    "parent", "map", "rm", "clean", "fsck", "shrink", "purge", "sudo", "data",
)

NO_ARGUMENTS = "plash is a container build and run tool, try plash help"


def _distance(a: str, b: str) -> int:
    """Edits (insert, delete, replace, swap two neighbours) that turn a into b."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            d = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                d = min(d, prev2[j - 2] + 1)
            cur.append(d)
        prev2, prev = prev, cur
    return prev[-1]


def unknown_command(word: str) -> PlashError:
    """The error for a first word that is no command, with the nearest command as a hint."""
    limit = 1 if len(word) <= 4 else 2
    near = min(COMMANDS, key=lambda c: _distance(word, c))
    hint = f"did you mean '{near}'?" if _distance(word, near) <= limit else "plash help lists the commands"
    return PlashError(f"no such command: {word or repr(word)}", hint=hint)


def route(args: list[str]) -> list[str] | None:
    """Run the command args names; return the words of the command to run next, if there is one (plash b)."""
    first = args[0]
    if first in ("-h", "--help"):
        return ["help", *args[1:]]
    if first == "run" and args[1:2] not in (["-h"], ["--help"]):
        if "trio" in sys.modules:  # plash b run: the build ran trio, the container needs a fresh process
            from plash import frontend

            frontend.run_afresh(args[1:])
        from plash.launch import run

        run.main(args[1:])
    elif "/" in first:
        from plash import frontend

        frontend.run_executable(first, args[1:])
    elif first in ("--help-macros", "help-macros"):
        from plash.lang.macros import help_text

        sys.stdout.write(help_text() + "\n")
    elif first.startswith("-") and first != "--version":
        return ["b", "run", *args]
    elif first in ("build", "eval", "b") and args[1:2] not in (["-h"], ["--help"]):
        from plash import frontend

        if first == "b":
            return frontend.b(args[1:], COMMANDS)
        {"build": frontend.main_build, "eval": frontend.main_eval}[first](args[1:])
    elif first not in COMMANDS and first != "--version":
        raise unknown_command(first)
    else:
        from plash.cli import main as cli_main

        cli_main(args)
    return None


def main(argv: list[str] | None = None) -> None:
    args: list[str] | None = sys.argv[1:] if argv is None else argv
    from plash.errors import report

    try:
        if not args:
            sys.stderr.write(NO_ARGUMENTS + "\n")
            sys.exit(1)
        while args:  # plash b: build, then the command it names, here rather than in a second main()
            args = route(args)
    except PlashError as e:
        report(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("plash error: interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except OSError as e:
        # the one place an OSError becomes a message: click's commands and the fast ones alike
        from plash.config import debug

        if not e.errno or debug():
            raise
        from plash.errors import os_message
        from plash.store.layout import full_store_note

        report(PlashError(os_message(e) + full_store_note()))
        sys.exit(1)
    except Exception as e:
        from plash.config import debug

        if debug():
            raise
        sys.stderr.write(f"plash error: internal error: {type(e).__name__}: {e}\n")
        sys.stderr.write("hint: run again with PLASH_DEBUG=1 for a traceback\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
