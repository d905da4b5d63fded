"""Build-and-run entry points that must start fast: no click, no trio unless a layer is missing.

    plash build MACROS...            -> build_ids
    plash b CMD MACROS... [-- ARGS]  -> b
    plash -X... [-- CMD...]          -> b run ...
    plash ./file ARGS...             -> run_executable
"""

from __future__ import annotations

import os
import sys

from plash.errors import PlashError


def _store():  # type: ignore[no-untyped-def]
    from plash.store.layout import open_store

    return open_store()


def build_argv(macros: list[str], quiet: bool = False) -> int:
    from plash.engine.build import build
    from plash.lang.macros import expand_argv

    lines = expand_argv(macros)
    return build(_store(), lines, emitter(quiet))


def emitter(quiet: bool = False):  # type: ignore[no-untyped-def]
    """A factory of the event renderer, so the UI is loaded only when something is built."""

    def make():  # type: ignore[no-untyped-def]
        from plash.ui.progress import renderer

        return renderer(quiet)

    return make


def split_dashdash(args: list[str]) -> tuple[list[str], list[str]]:
    if "--" in args:
        i = args.index("--")
        return args[:i], args[i + 1:]
    return args, []


def b(args: list[str], commands: tuple[str, ...]) -> list[str]:
    """plash b PLASHCMD MACROS... [-- ARGS...]: build, then return the command to run next, PLASHCMD <id> ARGS..."""
    from plash.errors import UsageError

    if not args:
        raise UsageError("missing PLASHCMD", "plash b PLASHCMD MACROS... [-- ARGS...]")
    cmd, rest = args[0], args[1:]
    if cmd not in commands:
        from plash.__main__ import unknown_command

        raise unknown_command(cmd)  # before building, not after
    macros, after = split_dashdash(rest)
    image = build_argv(macros)
    return [cmd, str(image), *after]


def run_executable(path: str, args: list[str]) -> None:
    """Build a plash executable (a build file) and run its entrypoint with args."""
    from plash.engine.build import build
    from plash.lang.macros import expand_file
    from plash.lang.quoting import unquote_words
    from plash.launch.container import start
    from plash.launch.run import image_spec

    lines = expand_file(path)
    store = _store()
    # an executable's steps run in its own directory, whatever the caller's cwd
    image = build(store, lines, emitter(), cwd=os.path.dirname(os.path.abspath(path)))
    entry = store.meta(image).get("entrypoint")
    if not entry:
        raise PlashError(f"{path}: no entrypoint", hint="add a line '--entrypoint CMD' or '--entrypoint-script'")
    argv = list(unquote_words(entry[-1])) + args
    if "trio" in sys.modules:
        run_afresh([str(image), *argv])
    start(image_spec(store, image, argv))


def run_afresh(args: list[str]) -> None:
    """Run `plash run ARGS...` in a fresh process (this one ran trio).

    unshare(CLONE_NEWUSER) fails in a multi-threaded process, and trio leaves
    worker threads behind, so a build that ran trio re-executes `plash run`.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "plash", "run", *args])


def main_build(args: list[str]) -> None:
    quiet = False
    if args[:1] == ["--quiet"]:
        quiet, args = True, args[1:]
    image = build_argv(args, quiet)
    sys.stdout.write(f"{image}\n")


def main_eval(args: list[str]) -> None:
    from plash.lang.macros import expand_argv, script_text

    text = script_text(expand_argv(args))
    sys.stdout.write(text + ("\n" if text else ""))


def looks_like_build_file(arg: str) -> bool:
    return "/" in arg


def cwd_or_root() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "/"
