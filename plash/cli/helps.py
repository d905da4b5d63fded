"""plash help: the command list and one command's help, for click commands and fast ones alike; plash version."""

from __future__ import annotations

import click

from plash import __version__
from plash.cli import IMAGE_CMD, out
from plash.errors import no_such_command

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.__main__ import Fast


def help_only(name: str, fast: Fast) -> click.Command:
    """A fast command as click sees it: for its help alone, as plash.__main__ runs it."""
    params: list[click.Parameter] = [
        click.Argument([arg.removesuffix("...")], nargs=-1, type=click.UNPROCESSED) if arg.endswith("...")
        else click.Argument([arg]) for arg in fast.arguments]
    return click.Command(name, context_settings=IMAGE_CMD, help=fast.handler.__doc__, params=params)


def _synopsis(cmd: click.Command) -> str:
    """A command's arguments as `plash help` shows them: options first, then `IMAGE [CMD...]`."""
    opts, args = [], []
    for p in cmd.params:
        if isinstance(p, click.Option):
            if p.name == "help" or not p.opts:
                continue
            flag = p.opts[0]
            if p.is_flag:
                opts.append(f"[{flag}]")
            else:
                longest = max(p.opts, key=len).lstrip("-")
                opts.append(f"[{flag} {p.metavar or longest.upper()}]")
        elif isinstance(p, click.Argument):
            name = p.human_readable_name
            if p.nargs == -1:
                name += "..."
            args.append(name if p.required else f"[{name}]")
    return " ".join(opts + args)


def _what(cmd: click.Command) -> str:
    """The first paragraph of a command's help, as a phrase: `run CMD in IMAGE (...)`."""
    first = " ".join((cmd.help or "").split("\n\n")[0].split()).rstrip(".")
    if first[1:2].islower():
        first = first[0].lower() + first[1:]
    return first


def _group(ctx: click.Context) -> click.Group:
    """The plash group, which ctx is a context below."""
    group = ctx.find_root().command
    assert isinstance(group, click.Group)
    return group


def command_list(ctx: click.Context) -> str:
    """Every command on one line, `plash CMD ARGS  what it does`, as the original's plash help."""
    group = _group(ctx)
    commands = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    rows = [(f"plash {name} {_synopsis(cmd)}".rstrip(), _what(cmd)) for name, cmd in commands if cmd and not cmd.hidden]
    width = min(36, max(len(u) for u, _ in rows))
    lines = [f"{usage:<{width}}  {what}" for usage, what in rows]
    return "\n".join([
        "plash is a container build and run tool. Build and run in one go, each layer cached:", "",
        "  plash --from alpine:edge --apk git -- git status   (plash -X... [-- CMD...]: plash b run -X...)",
        "  ./app.plash ARGS...                                 (a build file starting #!/usr/bin/env plash:",
        "                                                       builds it and runs its --entrypoint with ARGS)",
        "", "Its commands:", "", *lines, "",
        "Use plash help CMD to explain one command, plash --help-macros to list the macros.",
    ])


@click.command()
@click.argument("command", required=False)
@click.pass_context
def help_cmd(ctx: click.Context, command: str | None) -> None:
    """List the commands, or explain one: plash help CMD."""
    if command is None:
        out(command_list(ctx))
        return
    group = _group(ctx)
    cmd = group.get_command(ctx, command)
    if cmd is None:
        raise no_such_command(command, group.list_commands(ctx))
    sub = click.Context(cmd, info_name=command, parent=ctx.parent)
    click.echo(cmd.get_help(sub))


@click.command()
def version() -> None:
    """Print plash's version."""
    out(__version__)
