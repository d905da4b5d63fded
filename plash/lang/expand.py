"""The macro registry and the expansion engine: a macro call expands to shell lines and hint lines.

A hint is a line `### plash hint: NAME=VALUE` (or `### plash hint: NAME`),
so `plash eval` can print the whole expansion as one script and the build
planner can read it back. The macros themselves are defined in
plash.lang.macros, which registers here; this
module imports neither.
"""

from __future__ import annotations

import os
import sys

from plash.errors import MacroError
from plash.lang.tokens import quote

TYPE_CHECKING = False  # typing itself is not imported: it slows plash's start
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import TypeAlias, TypeVar

    from plash.lang.tokens import Call, Where

    LocatedLine = tuple[str, Where]  # a script line and the macro call it came from
    Expansion: TypeAlias = "list[str] | Located"  # a call's lines: located at the call unless Located
    Expander = Callable[["Context", Call], Expansion]
    AnyExpander = TypeVar("AnyExpander", bound=Expander)  # the decorated function keeps its own type

HINT = "### plash hint: "

# Build files, stdin and URLs of macros are read whole: bounded, so that
# /dev/zero or a hostile server cannot exhaust memory.
MAX_MACRO_TEXT = 16 << 20

# The groups of --help-macros, in its order.
GROUPS = ("image sources", "build steps", "package managers", "files and environment", "cache", "run settings",
          "including", "shortcuts")

PACKAGE_MANAGERS: dict[str, tuple[str, ...]] = {
    "apt": ("apt-get update", "apt-get install -y {}"),
    "apk": ("apk update", "apk add {}"),
    "yum": ("yum install -y {}",),
    "dnf": ("dnf install -y {}",),
    "pacman": ("pacman -Sy --noconfirm {}",),
    "emerge": ("emerge {}",),
    "pip": ("pip install {}",),
    "pip3": ("pip3 install {}",),
    "npm": ("npm install -g {}",),
    "add-apt-repository": (
        "apt-get install -y software-properties-common",
        "rm -rf /var/lib/apt/lists/*",
        "add-apt-repository -y {}",
        "apt-get update",
    ),
}


def check_size(text: str | bytes, what: str, where: Where | None) -> None:
    """Refuse macro or shell text larger than MAX_MACRO_TEXT (read with one byte more, to tell)."""
    if len(text) > MAX_MACRO_TEXT:
        raise MacroError(where, f"{what} is larger than the {MAX_MACRO_TEXT >> 20} MiB plash reads as macros or shell text")


def hint(name: str, value: str | None = None) -> str:
    if value is not None and "\n" in value:
        raise ValueError("hint values are one line")
    return HINT + name + ("" if value is None else "=" + value)


class Context:
    """State of one expansion: defined package managers, the including file's dir, stdin use."""

    def __init__(self, base_dir: str | None = None, depth: int = 0) -> None:
        self.base_dir = base_dir or os.getcwd()
        self.pms: dict[str, tuple[str, ...]] = dict(PACKAGE_MANAGERS)
        self.depth = depth
        self.stdin_used = False

    def path(self, p: str) -> str:
        """A path argument, relative to the including file's directory."""
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(p)))

    def install(self, call: Call) -> list[str]:
        """The lines of package manager call.name installing call.args."""
        if not call.args:
            return []
        pkgs = " ".join(quote(p) for p in call.args)
        return [line.replace("{}", pkgs) for line in self.pms[call.name]]

    def take_stdin(self, call: Call) -> str:
        """Stdin, for the one macro of an expansion that may read it."""
        if self.stdin_used:
            raise MacroError(call.where, "stdin was already read by another macro")
        self.stdin_used = True
        if sys.stdin is None or sys.stdin.isatty():
            raise MacroError(call.where, f"--{call.name} reads stdin, but stdin is a terminal")
        text = sys.stdin.read(MAX_MACRO_TEXT + 1)
        check_size(text, "stdin", call.where)
        return text


class Macro:
    """A macro: how it expands, its --help-macros line and group, and what arguments it takes."""

    __slots__ = ("func", "group", "help", "max_args", "min_args", "multiline", "name")

    def __init__(self, name: str, func: Expander, help: str, group: str,
                 min_args: int = 0, max_args: int | None = None, multiline: bool = False) -> None:
        if group not in GROUPS:
            raise ValueError(f"macro {name}: unknown group {group!r}")
        self.name, self.func, self.help, self.group = name, func, help, group
        self.min_args, self.max_args = min_args, max_args
        self.multiline = multiline  # its arguments may hold newlines (shell code, file lines)


MACROS: dict[str, Macro] = {}


def macro(name: str, help: str, group: str, min_args: int = 0, max_args: int | None = None,
          aliases: tuple[str, ...] = (), multiline: bool = False) -> Callable[[AnyExpander], AnyExpander]:
    """Register the decorated function as macro name (and its aliases)."""

    def register(func: AnyExpander) -> AnyExpander:
        MACROS[name] = Macro(name, func, help, group, min_args, max_args, multiline)
        for a in aliases:
            MACROS[a] = Macro(a, func, f"shortcut for --{name}", group, min_args, max_args, multiline)
        return func

    return register


class Located(list["LocatedLine"]):
    """Lines that already carry their own locations (included macros): (line, Where) pairs."""


def suggest(name: str) -> str | None:
    """The nearest macro name, for `did you mean`."""
    import difflib

    close = difflib.get_close_matches(name, list(MACROS), n=1, cutoff=0.6)
    return close[0] if close else None


def expand_call(ctx: Context, call: Call) -> Expansion:
    """The lines of one call, or a located error (unknown macro, wrong arguments)."""
    m = MACROS.get(call.name)
    if m is None and call.name in ctx.pms:
        return ctx.install(call)
    if m is None:
        near = suggest(call.name)
        extra = f" (did you mean '{near}'?)" if near else ""
        raise MacroError(call.where, f"unknown macro '{call.name}'{extra}", hint="plash --help-macros lists them")
    n = len(call.args)
    if n < m.min_args:
        raise MacroError(call.where, f"--{call.name} needs at least {m.min_args} argument(s), got {n}")
    if m.max_args is not None and n > m.max_args:
        raise MacroError(call.where, f"--{call.name} takes at most {m.max_args} argument(s), got {n}")
    if not m.multiline and any("\n" in a for a in call.args):
        raise MacroError(call.where, f"--{call.name}: arguments must not contain newlines")
    return m.func(ctx, call)


def expand_calls(ctx: Context, calls: list[Call]) -> list[LocatedLine]:
    """Expand calls to (line, where) pairs: each line knows the macro it came from."""
    out: list[LocatedLine] = []
    for call in calls:
        lines = expand_call(ctx, call)
        if isinstance(lines, Located):
            out += lines
        else:
            out += [(line, call.where) for line in lines]
    return out


def script_text(lines: Iterable[LocatedLine]) -> str:
    """The shell script of located lines, as `plash eval` prints it."""
    return "\n".join(line for line, _ in lines)


def help_text() -> str:
    """Every macro with a one-line description, grouped."""
    groups: dict[str, list[Macro]] = {g: [] for g in GROUPS}
    for m in MACROS.values():
        groups[m.group].append(m)
    out: list[str] = []
    for group, ms in groups.items():
        if not ms:
            continue
        out.append(f"{group}:")
        for m in ms:
            flag = f"-{m.name}" if len(m.name) == 1 else f"--{m.name}"
            out.append(f"  {flag:<22} {m.help}")
    return "\n".join(out)
