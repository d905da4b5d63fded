"""The `plash` entry point: every command declared once, routed without click.

COMMANDS names every command, in `plash help`'s order, with its handler:

- a fast command (run, build, b, eval, help-macros) is a function here that
  takes the words after its name, runs without click (70 ms) and returns the
  command to run next, if any (plash b); its docstring is its help, which
  plash.cli.helps renders with click and nothing else;
- every other command is a click command, named by where it lives
  ("module:attribute") and loaded with click only when it is used.

`plash run`, a cached build or plash executable, `plash` alone and an unknown
command never load click, trio, rich or httpx. The original's other forms are
routed here too: -h/--help, --help-macros, `plash -X...` (plash b run -X...)
and `plash PATH ARGS...` (a build file's entrypoint).
"""

from __future__ import annotations

import os
import sys

from plash.errors import PlashError, UsageError, no_such_command

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from plash.engine.events import Emit
    from plash.lang.tokens import Where
    from plash.store.layout import Store

    Handler = Callable[[list[str]], list[str] | None]  # the words after the name -> the command to run next

NO_ARGUMENTS = "plash is a container build and run tool, try plash help"
HELP_FLAGS = (["-h"], ["--help"])
ALIASES = {"-h": "help", "--help": "help", "--help-macros": "help-macros"}  # the original's spellings


class Fast:
    """A command run without click: its handler, and the arguments click shows in its help."""

    __slots__ = ("arguments", "handler", "help_flag")

    def __init__(self, handler: Handler, arguments: tuple[str, ...] = (), help_flag: bool = True) -> None:
        self.handler = handler  # its docstring is the command's help
        self.arguments = arguments  # argument names for the usage line; "name..." takes any number
        self.help_flag = help_flag  # a first -h/--help shows the help instead of running the handler


def run_command(args: list[str]) -> None:
    """Run CMD in IMAGE (default: its login shell).

    The container shares /home, /root, /tmp, /dev, /proc, /sys and the
    network with the host; changes to its root file system are discarded.
    NAME=value words before CMD set variables. The exit status is CMD's own.
    """
    if "trio" in sys.modules:  # plash b run, after a build that ran trio
        run_afresh(args)
    from plash.launch import run

    run.main(args)


def build_command(args: list[str]) -> None:
    """Build an image from MACROS and print its id (plash --help-macros lists them).

    Cached layers are reused silently. Options come first: --quiet (-q,
    also among the macros) hides build progress and steps' output but a
    failed step's; --progress auto|tty|plain|json says how progress is
    shown (default PLASH_PROGRESS, else auto: tty on a terminal, json: one
    event per line for CI); --cache-from REPO looks for missing layers in a layer
    cache (an OCI registry repository) before building them, --cache-to
    REPO pushes the layers built there (both repeatable; PLASH_CACHE_FROM
    and PLASH_CACHE_TO by default); --no-cache builds every layer again (the
    new layers replace the cached ones); --pull checks the base image's
    source again and imports it if it changed; --no-package-cache keeps
    package managers off the store's download caches (plash clean --caches).
    Example: plash build --from-debootstrap bookworm --apt cowsay

    Build steps share the host's home (/home, /root), as in the original
    plash: they see it and may write it; they do not see the host's /tmp.
    There is no isolation: as root,

    \b
        plash build --from 1 --run 'useradd -m carol'

    creates /home/carol on the host.
    """
    image = build_argv(args)
    sys.stdout.write(f"{image}\n")


def b_command(args: list[str]) -> list[str]:
    """Build MACROS, then run `plash PLASHCMD <id> ARGS...` (ARGS after --).

    `plash -X ...` (any first argument that is an option) means `plash b run -X ...`.
    The options of build (--quiet, --progress, --no-cache, --pull, --no-package-cache, --cache-from,
    --cache-to) come right after PLASHCMD.
    """
    if not args:
        raise UsageError("missing PLASHCMD", "plash b PLASHCMD MACROS... [-- ARGS...]")
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        raise unknown_command(command)  # before building, not after
    macros, after = rest, []
    if "--" in rest:
        i = rest.index("--")
        macros, after = rest[:i], rest[i + 1:]
    return [command, str(build_argv(macros)), *after]


def eval_command(args: list[str]) -> None:
    """Print the shell script MACROS expand to (hints included as comments)."""
    from plash.lang.macros import expand_argv, script_text

    text = script_text(expand_argv(args))
    sys.stdout.write(text + ("\n" if text else ""))


def help_macros_command(args: list[str]) -> None:
    """List every macro with a one-line description."""
    from plash.lang.macros import help_text

    sys.stdout.write(help_text() + "\n")


COMMANDS: dict[str, str | Fast] = {
    "help": "plash.cli.helps:help_cmd",
    "version": "plash.cli.helps:version",
    "init": "plash.cli.store:init",
    "build": Fast(build_command, ("macros...",)),
    "b": Fast(b_command, ("plashcmd", "macros...")),
    "warm": "plash.cli.images:warm",
    "eval": Fast(eval_command, ("macros...",)),
    # as in the original, `plash help-macros --help` lists the macros too
    "help-macros": Fast(help_macros_command, help_flag=False),
    "run": Fast(run_command, ("image", "cmd...")),
    "create": "plash.cli.images:create",
    "import-tar": "plash.cli.images:import_tar",
    "import-lxc": "plash.cli.images:import_lxc",
    "import-url": "plash.cli.images:import_url",
    "import-docker": "plash.cli.images:import_docker",
    "push": "plash.cli.push:push",
    "login": "plash.cli.registry:login",
    "logout": "plash.cli.registry:logout",
    "export-tar": "plash.cli.store:export_tar",
    "copy": "plash.cli.store:copy",
    "mount": "plash.cli.store:mount",
    "with-mount": "plash.cli.store:with_mount",
    "nodepath": "plash.cli.store:nodepath",
    "parent": "plash.cli.store:parent",
    "map": "plash.cli.store:map_cmd",
    "images": "plash.cli.listing:images",
    "ls": "plash.cli.listing:images",
    "inspect": "plash.cli.listing:inspect",
    "history": "plash.cli.listing:history",
    "df": "plash.cli.listing:df",
    "rm": "plash.cli.store:rm",
    "clean": "plash.cli.store:clean",
    "fsck": "plash.cli.store:fsck",
    "shrink": "plash.cli.store:shrink",
    "purge": "plash.cli.store:purge",
    "sudo": "plash.cli.store:sudo",
    "data": "plash.cli.store:data",
    "completion": "plash.cli.completion:completion",
    "manpage": "plash.cli.completion:manpage",
    "__complete": "plash.cli.completion:complete",
}


def build_argv(words: list[str]) -> int:
    """Build the image OPTIONS MACROS (command-line words) describe; trio and the UI load only if a layer is missing.

    A command line built before in the same directory, with all its layers
    in place, is not expanded again: plash.store.execmemo remembers its image.
    """
    from plash.config import split_build_options
    from plash.store import execmemo

    options, macros = split_build_options(words)
    store = open_store()
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = ""
    memo = execmemo.for_words(macros, cwd) if cwd and not (options.no_cache or options.pull) else None
    image = execmemo.lookup(store, *memo) if memo else None
    if image is not None:
        return image
    from plash.engine.build import build
    from plash.lang.macros import expand_argv

    lines = expand_argv(macros)
    image = build(store, lines, _renderer(options.quiet, options.progress), options=options)
    if memo:
        remember(store, memo, image, lines, macros)
    return image


def run_executable(path: str, args: list[str]) -> None:
    """plash PATH ARGS...: build a plash executable (a build file) and run its entrypoint with ARGS.

    A build file run before, unchanged and with all its layers in place, is
    not read again: plash.store.execmemo remembers its image.
    """
    from plash.lang.tokens import unquote_words
    from plash.launch.container import start
    from plash.launch.run import image_spec
    from plash.store import execmemo

    store = open_store()
    try:
        image = execmemo.lookup(store, *execmemo.for_file(path))
    except OSError:
        image = None  # expand_file says what is wrong with the file
    if image is None:
        image = build_executable(store, path)
    entry = store.meta(image).get("entrypoint")
    if not entry:
        raise PlashError(f"{path}: no entrypoint", hint="add a line '--entrypoint CMD' or '--entrypoint-script'")
    argv = list(unquote_words(entry[-1])) + args
    if "trio" in sys.modules:
        run_afresh([str(image), *argv])
    start(image_spec(store, image, argv))


def build_executable(store: Store, path: str) -> int:
    """Build a plash executable's image; remember it (execmemo) where the answer can be checked without building."""
    from plash.engine.build import build
    from plash.lang.macros import expand_file, read_build_file
    from plash.lang.tokens import words_from_file_text
    from plash.store import execmemo

    try:
        snap: execmemo.Snapshot | None = execmemo.Snapshot(path)
    except OSError:
        snap = None  # expand_file says what is wrong with the file
    lines = expand_file(path)
    # an executable's steps run in its own directory, whatever the caller's cwd
    cwd = os.path.dirname(os.path.abspath(path))
    image = build(store, lines, _renderer(), cwd=cwd)
    if snap and snap.settled():
        words = [w[0] for w in words_from_file_text(read_build_file(path), path)]
        remember(store, snap.state, image, lines, words, cwd)
    return image


def remember(store: Store, memo: tuple[str, list[str]], image: int, lines: list[tuple[str, Where]],
             words: list[str], cwd: str | None = None) -> None:
    """Record in execmemo the checks that give image again for lines, if their macros (words) read nothing else."""
    from plash.engine.plan import Kinds, prepare
    from plash.lang.expand import MACROS
    from plash.store import execmemo

    if not execmemo.pure(words, set(MACROS)):
        return
    done = prepare(store, lines, cwd)
    if done.complete and done.final_id == image and done.source.kind != Kinds.MAP:
        checks = [] if done.source.kind == Kinds.ID else [(done.base_key, done.base_id)]
        keys = [(k, i) for k, i in [*checks, *((layer.key, i) for layer, i in zip(done.layers, done.ids, strict=True))]
                if i is not None]
        execmemo.record(store, *memo, image, keys)


def _renderer(quiet: bool = False, progress: str | None = None) -> Callable[[], Emit]:
    """plash.ui's renderer factory, loaded only when the engine asks for a renderer (a cached build never does)."""

    def make() -> Emit:
        from plash.ui import renderer_factory

        return renderer_factory(quiet, progress)()

    return make


def run_afresh(args: list[str]) -> NoReturn:
    """Run `plash run ARGS...` in a fresh process (this one ran trio).

    unshare(CLONE_NEWUSER) fails in a multi-threaded process, and trio leaves
    worker threads behind, so a build that ran trio re-executes `plash run`.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    # -I -S and this process's import path: nothing from the current directory, which -m would put first
    path = [p for p in sys.path if os.path.isabs(p)]
    boot = f"import sys; sys.path += {path!r}; from plash.__main__ import entry; entry(sys.argv[1:])"
    os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", boot, "run", *args])


def open_store() -> Store:
    from plash.store.layout import open_store

    return open_store()


def unknown_command(word: str) -> PlashError:
    """The error for a first word that is no command, with the nearest command as a hint."""
    return no_such_command(word, COMMANDS)


def route(args: list[str]) -> list[str] | None:
    """Run the command args names; return the words of the command to run next, if there is one (plash b)."""
    first, rest = ALIASES.get(args[0], args[0]), args[1:]
    if "/" in first:
        run_executable(first, rest)
        return None
    if first.startswith("-") and first != "--version":
        return ["b", "run", *args]
    command = COMMANDS.get(first)
    if isinstance(command, Fast) and not (command.help_flag and rest[:1] in HELP_FLAGS):
        return command.handler(rest)
    if command is None and first != "--version":
        raise unknown_command(first)
    from plash.cli.app import main as click_main  # plash --version, a fast command's help, and the rest

    click_main([first, *rest], COMMANDS)
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
        from plash.store.space import full_store_note

        report(PlashError(os_message(e) + full_store_note()))
        sys.exit(1)
    except Exception as e:
        from plash.config import debug

        if debug():
            raise
        sys.stderr.write(f"plash error: internal error: {type(e).__name__}: {e}\n")
        sys.stderr.write("hint: run again with PLASH_DEBUG=1 for a traceback\n")
        sys.exit(1)


def entry(argv: list[str] | None = None) -> NoReturn:
    """The process's entry (bin/plash, bin/plash-exec, python -m plash): main(), then a quick exit.

    The interpreter's teardown of trio, httpx, rich and click costs 20-50 ms (a tenth of a cold build),
    and nothing plash leaves needs it: files are closed by with blocks, threads are daemons. So the
    process ends with os._exit after what matters of an exit: atexit callbacks, flushing stdout and
    stderr; or normally where a thread that is not a daemon runs, or the status is not a number.
    """
    try:
        main(argv)
    except SystemExit as e:
        quick_exit(e.code)
    quick_exit(0)


def _threads_running() -> bool:
    """A thread that is not a daemon runs (the teardown waits for it); no threading module, no thread."""
    threading = sys.modules.get("threading")  # (3 ms to import it)
    return threading is not None and any(t.is_alive() and not t.daemon and t is not threading.main_thread()
                                         for t in threading.enumerate())


def quick_exit(code: str | int | None) -> NoReturn:
    """Exit as sys.exit(code) would, without the interpreter's teardown where that is safe (see entry)."""
    import atexit

    code, run_exitfuncs = 0 if code is None else code, getattr(atexit, "_run_exitfuncs", None)  # CPython's
    if not isinstance(code, int) or run_exitfuncs is None or _threads_running():
        sys.exit(code)
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a reader gone (`plash images | head -1`): a failure, without a traceback
            code = code or 1
    os._exit(code & 0xFF)


if __name__ == "__main__":
    entry()
