"""The `plash` entry point: `run` goes straight to the launcher, the rest to click."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    from plash.errors import PlashError, report

    try:
        first = args[0] if args else ""
        if first == "run" and args[1:2] not in (["-h"], ["--help"]):
            from plash.launch import run

            run.main(args[1:])
        elif "/" in first:
            from plash import frontend

            frontend.run_executable(first, args[1:])
        elif first in ("--help-macros", "help-macros"):
            from plash.lang.macros import help_text

            sys.stdout.write(help_text() + "\n")
        elif first.startswith("-") and first not in ("-h", "--help", "--version"):
            from plash import frontend

            frontend.b(["run", *args])
        elif first in ("build", "eval", "b") and args[1:2] not in (["-h"], ["--help"]):
            from plash import frontend

            {"build": frontend.main_build, "eval": frontend.main_eval, "b": frontend.b}[first](args[1:])
        else:
            from plash.cli import main as cli_main

            cli_main(args)
    except PlashError as e:
        report(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("plash error: interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except OSError as e:
        if not e.errno or os.environ.get("PLASH_DEBUG", "") not in ("", "0"):
            raise
        from plash.errors import os_message
        from plash.store.layout import full_store_note

        sys.stderr.write(f"plash error: {os_message(e)}{full_store_note()}\n")
        sys.exit(1)
    except Exception as e:
        if os.environ.get("PLASH_DEBUG", "") not in ("", "0"):
            raise
        sys.stderr.write(f"plash error: internal error: {type(e).__name__}: {e}\n")
        sys.stderr.write("hint: run again with PLASH_DEBUG=1 for a traceback\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
