"""The click group: the commands of plash.__main__.COMMANDS (handed over by main), each loaded when asked for."""

from __future__ import annotations

import importlib
import sys

import click

from plash import __version__
from plash.cli.helps import help_only
from plash.errors import PlashError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from plash.__main__ import Fast

# plash.__main__.COMMANDS, handed over by main() (plash.__main__ imports this module, not the other way)
COMMANDS: dict[str, str | Fast] = {}


def use(commands: Mapping[str, str | Fast]) -> None:
    COMMANDS.clear()
    COMMANDS.update(commands)


class PlashGroup(click.Group):
    """The commands of plash.__main__.COMMANDS, in its order, each loaded when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        if not isinstance(where, str):
            return help_only(cmd_name, where)
        module, _, name = where.partition(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command), where
        return command


@click.group(cls=PlashGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", message="%(version)s")
def cli() -> None:
    """plash builds and runs layered root file systems, unprivileged and without a daemon.

    A container is an ordinary process on another distribution's root file
    system; it shares your home, /tmp, network and kernel.
    """


def _usage(ctx: click.Context | None) -> str:
    if ctx is None:
        return "plash COMMAND [ARGS]..."
    pieces = [p for p in ctx.command.collect_usage_pieces(ctx) if p != "[OPTIONS]"]
    if any(p.opts for p in ctx.command.params if isinstance(p, click.Option) and p.name != "help"):
        pieces.insert(0, "[OPTIONS]")
    return " ".join([ctx.command_path, *pieces])


def main(args: list[str], commands: Mapping[str, str | Fast]) -> None:
    use(commands)
    try:
        cli.main(args, prog_name="plash", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:
        raise UsageError("missing arguments", _usage(e.ctx)) from None
    except click.UsageError as e:
        raise UsageError(e.format_message().rstrip("."), _usage(e.ctx)) from None
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, KeyboardInterrupt):  # Ctrl-C: `plash error: interrupted`, exit 130
            raise KeyboardInterrupt from None
        raise PlashError("aborted") from None
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
