"""Shell completion and the man page: `plash completion bash|zsh|fish`, `plash manpage`.

The completion scripts ask plash itself for the candidates (`plash
__complete INDEX WORDS...`, one per line), so they know the commands, the
macros and this store's image ids and map names as plash does: commands
first; macro names after the command word of build, b and the -X form, and
after `--`-less macro words; image ids and names where a command takes an
image.
"""

from __future__ import annotations

import inspect

import click

from plash.cli import out

# the commands whose first argument (map: second) is an image
IMAGE_FIRST = frozenset(("run", "create", "export-tar", "copy", "mount", "with-mount", "nodepath", "parent", "rm",
                         "push", "inspect", "history"))
BUILD_OPTIONS = ("--quiet", "-q", "--progress", "--no-cache", "--pull", "--no-package-cache", "--cache-from", "--cache-to")

BASH = """# plash completion for bash: eval "$(plash completion bash)", or save it in
# /etc/bash_completion.d/plash (or ~/.local/share/bash-completion/completions/plash)
_plash() {
    local IFS=$'\\n'
    COMPREPLY=($(compgen -W "$(plash __complete "$COMP_CWORD" "${COMP_WORDS[@]}" 2>/dev/null)" \\
                 -- "${COMP_WORDS[COMP_CWORD]}"))
    [ ${#COMPREPLY[@]} -eq 0 ] && COMPREPLY=($(compgen -f -- "${COMP_WORDS[COMP_CWORD]}"))
    return 0
}
complete -F _plash plash
"""
ZSH = """#compdef plash
# plash completion for zsh: eval "$(plash completion zsh)", or save it as _plash in a dir of $fpath
_plash() {
    local -a found
    found=("${(@f)$(plash __complete $((CURRENT - 1)) "${words[@]}" 2>/dev/null)}")
    if (( ${#found} )) && [[ -n "${found[1]}" ]]; then
        compadd -a found
    else
        _files
    fi
}
compdef _plash plash
"""
FISH = """# plash completion for fish: plash completion fish > ~/.config/fish/completions/plash.fish
function __plash_complete
    set -l words (commandline -opc) (commandline -ct)
    plash __complete (math (count $words) - 1) $words 2>/dev/null
end
complete -c plash -f -a '(__plash_complete)'
"""
SCRIPTS = {"bash": BASH, "zsh": ZSH, "fish": FISH}


@click.command()
@click.argument("shell", type=click.Choice(sorted(SCRIPTS)))
def completion(shell: str) -> None:
    """Print a completion script for SHELL: commands, macros, image ids and map names.

    bash: eval "$(plash completion bash)" in ~/.bashrc; zsh: the same with
    zsh; fish: plash completion fish > ~/.config/fish/completions/plash.fish
    """
    click.echo(SCRIPTS[shell], nl=False)


@click.command(hidden=True, context_settings={"ignore_unknown_options": True})
@click.argument("index", type=int)
@click.argument("words", nargs=-1, type=click.UNPROCESSED)
def complete(index: int, words: tuple[str, ...]) -> None:
    """The candidates for word INDEX of WORDS (WORDS[0] is plash), one per line."""
    for candidate in candidates(list(words), index):
        out(candidate)


def candidates(words: list[str], index: int) -> list[str]:
    """What may stand at words[index] (words[0] being plash), before filtering by what is typed."""
    typed = words[index] if index < len(words) else ""
    before = words[1:index]
    if "--" in before:
        return []  # the command's own words: files
    if not before:
        if typed.startswith("-"):  # the -X form: plash --from ... -- CMD
            return [*BUILD_OPTIONS, *macro_flags(), "--help", "--help-macros", "--version"]
        return commands()
    command = before[0]
    macro_words: list[str] | None = None
    if command.startswith("-"):
        macro_words = before
    elif command in ("build", "eval"):
        macro_words = before[1:]
    elif command == "b":
        if len(before) == 1:
            return commands()
        macro_words = before[2:]
    if macro_words is not None:
        if macro_words and macro_words[-1] == "--progress":
            return ["auto", "tty", "plain", "json"]
        if macro_words and macro_words[-1] in ("--from", "-f"):
            return images()
        if macro_words and macro_words[-1] == "--from-map":
            return names()
        return [*BUILD_OPTIONS, *macro_flags()] if not typed or typed.startswith("-") else []
    if command == "map":
        return names() if len(before) == 1 else images() if len(before) == 2 else []
    if command in IMAGE_FIRST and len(before) == 1:
        return images()
    if command == "help" and len(before) == 1:
        return commands()
    if command == "completion" and len(before) == 1:
        return sorted(SCRIPTS)
    if command == "warm" and before[-1] == "--progress":
        return ["auto", "tty", "plain", "json"]
    return []


def commands() -> list[str]:
    from plash.__main__ import COMMANDS

    return [name for name in COMMANDS if not name.startswith("_")]


def macro_flags() -> list[str]:
    from plash.lang import macros  # noqa: F401  (importing it registers the macros)
    from plash.lang.expand import MACROS

    return [("-" if len(name) == 1 else "--") + name for name in MACROS]


def names() -> list[str]:
    from plash.config import data_dir
    from plash.store.layout import Store
    from plash.store.names import map_entries

    return list(map_entries(Store(data_dir())))


def images() -> list[str]:
    from plash.config import data_dir
    from plash.store.layout import Store

    s = Store(data_dir())
    try:
        ids = [str(i) for i in s.ids() if i]
    except OSError:
        ids = []
    return [*ids, *names()]


@click.command()
@click.pass_context
def manpage(ctx: click.Context) -> None:
    """Print plash's man page (roff), made from the same help texts: man -l <(plash manpage).

    The README's set-up command installs it as /usr/local/share/man/man1/plash.1.
    """
    click.echo(render(ctx), nl=False)


def _roff(text: str) -> str:
    """Text as roff lines: backslashes escaped, no line starting with a control character."""
    lines = []
    for line in text.replace("\\", "\\e").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


ENVIRONMENT = [
    ("PLASH_DATA", "the store (default ~/.plashdata)"),
    ("PLASH_PROGRESS", "auto, tty, plain or json: how progress is shown on stderr"),
    ("PLASH_CACHE_FROM, PLASH_CACHE_TO", "layer cache repositories of builds (comma or space separated)"),
    ("PLASH_EXPORT", "host variables containers get (colon separated)"),
    ("PLASH_NO_UNSHARE", "with-mount, sudo: stay in the caller's namespaces"),
    ("PLASH_DOWNLOADS", "downloads at once (default 4)"),
    ("PLASH_LXC_URL", "the LXC image server"),
    ("PLASH_DEBIAN_MIRROR", "the mirror of --from-debootstrap"),
    ("PLASH_INSECURE_REGISTRIES", "registries reached over plain http"),
    ("PLASH_DEBUG", "tracebacks instead of one-line internal errors"),
]


def render(ctx: click.Context) -> str:
    """The man page: name, synopsis, description, every command's help, the macros, the environment."""
    from plash import __version__
    from plash.cli.helps import _group
    from plash.lang.macros import help_text

    group = _group(ctx)
    parts = [
        f'.TH PLASH 1 "" "plash {__version__}" "User Commands"',
        ".SH NAME", "plash \\- build and run layered root file systems, unprivileged and without a daemon",
        ".SH SYNOPSIS",
        ".B plash", "COMMAND [ARGS...]", ".br",
        ".B plash", "[OPTIONS] MACROS... [-- CMD...]", ".br",
        ".I ./file.plash", "[ARGS...]",
        ".SH DESCRIPTION", _roff(inspect.cleandoc(group.help or "")),
        ".PP", "The first argument being an option means plash b run: build the image the macros describe, each "
        "layer cached, then run CMD in it, e.g.", ".PP", ".nf", "plash --from alpine:edge --apk git -- git status",
        ".fi", ".PP", "A build file starting with #!/usr/bin/env plash is a program: running it builds it and runs "
        "its --entrypoint with the arguments.",
        ".SH COMMANDS",
    ]
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        sub = click.Context(cmd, info_name=name, parent=ctx.parent or ctx)
        parts += [f".SS {name}", ".nf", _roff(cmd.get_help(sub)), ".fi"]
    parts += [".SH MACROS", ".nf", _roff(help_text()), ".fi", ".SH ENVIRONMENT"]
    for var, what in ENVIRONMENT:
        parts += [".TP", f".B {var}", what]
    parts += [".SH FILES", ".TP", ".B ~/.plashdata", "the store: images, layers, maps, keys, temp dirs",
              ".SH SEE ALSO", "podman(1), buildah(1), unshare(1)"]
    return "\n".join(parts) + "\n"
