"""Every macro of SPEC 4.2: a macro call expands to shell lines and hint lines.

A hint is a line `### plash hint: NAME=VALUE` (or `### plash hint: NAME`),
so `plash eval` can print the whole expansion as one script and the build
planner can read it back. Expansion is pure except where a macro's meaning
is to read the world (eval-file, eval-stdin, import-env, hash-path, ...).
"""

from __future__ import annotations

import os
import sys

from plash.errors import MacroError
from plash.lang.quoting import quote
from plash.lang.tokens import Call, Where, parse, words_from_argv, words_from_file_text, words_from_split

TYPE_CHECKING = False  # typing itself is not imported: it slows plash's start
if TYPE_CHECKING:
    from typing import Callable

    Expander = Callable[["Context", Call], list[str]]

HINT = "### plash hint: "

# Current releases for the distro shortcuts (LXC image server names).
UBUNTU_LTS = "noble"
FEDORA_CURRENT = "42"
CENTOS_CURRENT = "9-Stream"

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




class Macro:
    __slots__ = ("name", "func", "help", "group", "min_args", "max_args")

    def __init__(self, name: str, func: Expander, help: str, group: str,
                 min_args: int = 0, max_args: int | None = None) -> None:
        self.name, self.func, self.help, self.group = name, func, help, group
        self.min_args, self.max_args = min_args, max_args


MACROS: dict[str, Macro] = {}


def macro(name: str, help: str, group: str, min_args: int = 0, max_args: int | None = None,
          aliases: tuple[str, ...] = ()) -> Callable[[Expander], Expander]:
    def register(func: Expander) -> Expander:
        MACROS[name] = Macro(name, func, help, group, min_args, max_args)
        for a in aliases:
            MACROS[a] = Macro(a, func, f"shortcut for --{name}", group, min_args, max_args)
        return func

    return register


# -- image sources ---------------------------------------------------------------


def _source(kind: str, *args: str) -> list[str]:
    return [hint("image", " ".join([kind, *args]))]


@macro("from", "base image: an image id, or DISTRO:RELEASE from the LXC image server", "image sources", 1, 1,
       aliases=("f",))
def _from(ctx: Context, call: Call) -> list[str]:
    (arg,) = call.args
    if arg.isdigit() or arg.isdecimal() or arg.isnumeric():
        return _from_id(ctx, call)
    if ":" not in arg:
        raise MacroError(call.where, f"--from needs an image id or DISTRO:RELEASE, got {arg!r}")
    return _source("lxc", arg)


@macro("from-id", "base image: an image id of this store", "image sources", 1, 1)
def _from_id(ctx: Context, call: Call) -> list[str]:
    arg = call.args[0]
    # ASCII digits only (int() takes '٣' as 3), not 0, and short enough for int()
    if not (arg.isascii() and arg.isdigit()) or len(arg) > 18 or int(arg) == 0:
        raise MacroError(call.where, f"image must be a positive number, got: {arg!r}")
    return _source("id", str(int(arg)))


@macro("from-map", "base image: the image a map name points to", "image sources", 1, 1)
def _from_map(ctx: Context, call: Call) -> list[str]:
    return _source("map", call.args[0])


@macro("from-lxc", "base image: DISTRO:RELEASE from the LXC image server ($PLASH_LXC_URL)", "image sources", 1, 1)
def _from_lxc(ctx: Context, call: Call) -> list[str]:
    return _source("lxc", call.args[0])


@macro("from-url", "base image: a root file system tarball downloaded from URL [SHA256]", "image sources", 1, 2)
def _from_url(ctx: Context, call: Call) -> list[str]:
    return _source("url", *call.args)


@macro("from-tarball", "base image: a root file system tarball file", "image sources", 1, 1)
def _from_tarball(ctx: Context, call: Call) -> list[str]:
    return _source("tarball", quote(ctx.path(call.args[0])))


@macro("from-docker", "base image: an OCI/Docker reference, docker-archive:FILE or oci:DIR", "image sources", 1, 1)
def _from_docker(ctx: Context, call: Call) -> list[str]:
    ref = call.args[0]
    for prefix in ("docker-archive:", "oci:"):
        if ref.startswith(prefix):
            ref = prefix + ctx.path(ref[len(prefix):])
    return _source("docker", quote(ref))


@macro("from-debootstrap", "base image: Debian/Ubuntu SUITE [MIRROR] made on the host with mmdebstrap or debootstrap",
       "image sources", 1, 2)
def _from_debootstrap(ctx: Context, call: Call) -> list[str]:
    return _source("debootstrap", *call.args)


# -- shell code --------------------------------------------------------------------


@macro("run", "shell code, one line per argument; steps share the host's home (/home, /root) and may write it, "
       "but not its /tmp", "build steps", aliases=("x",))
def _run(ctx: Context, call: Call) -> list[str]:
    return list(call.args)


@macro("inline", "shell code: all arguments joined by spaces as one line", "build steps")
def _inline(ctx: Context, call: Call) -> list[str]:
    return [" ".join(call.args)] if call.args else []


@macro("run-stdin", "shell code read from stdin", "build steps", 0, 0)
def _run_stdin(ctx: Context, call: Call) -> list[str]:
    # the newline that ends the input (and any empty lines after the code) is not a line of code:
    # `printf 'a\n'` and `printf 'a'` are the same script, and the same layer
    text = _read_stdin(ctx, call).rstrip("\n")
    return text.split("\n") if text else []


def _read_stdin(ctx: Context, call: Call) -> str:
    if ctx.stdin_used:
        raise MacroError(call.where, "stdin was already read by another macro")
    ctx.stdin_used = True
    if sys.stdin is None or sys.stdin.isatty():
        raise MacroError(call.where, f"--{call.name} reads stdin, but stdin is a terminal")
    text = sys.stdin.read(MAX_MACRO_TEXT + 1)
    _bounded(text, "stdin", call.where)
    return text


@macro("layer", "start a new layer; --layer MACRO A B gives each argument its own layer of MACRO", "build steps",
       aliases=("l",))
def _layer(ctx: Context, call: Call) -> list[str]:
    if not call.args:
        return [hint("layer")]
    name, *args = call.args
    out: list[str] = []
    for a in args:
        out.append(hint("layer"))
        out.extend(expand_call(ctx, Call(name, (a,), call.where)))
    return out


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


def _package_manager(ctx: Context, call: Call) -> list[str]:
    if not call.args:
        return []
    pkgs = " ".join(quote(p) for p in call.args)
    return [line.replace("{}", pkgs) for line in ctx.pms[call.name]]


for _pm in PACKAGE_MANAGERS:
    MACROS[_pm] = Macro(_pm, _package_manager, f"install packages with {_pm}", "package managers")


@macro("defpm", "define a package manager macro NAME; {} in TEMPLATE lines becomes the packages", "package managers", 2)
def _defpm(ctx: Context, call: Call) -> list[str]:
    name, *template = call.args
    ctx.pms[name] = tuple(template)
    return []


# -- files and environment -------------------------------------------------------------


@macro("write-file", "write lines to a file in the image: PATH LINE...", "files and environment", 1)
def _write_file(ctx: Context, call: Call) -> list[str]:
    path, *lines = call.args
    if not lines:
        return [f": > {quote(path)}"]
    return ["printf '%s\\n' " + " ".join(quote(x) for x in lines) + f" > {quote(path)}"]


@macro("write-script", "write an executable script (mode 755): PATH LINE...", "files and environment", 1)
def _write_script(ctx: Context, call: Call) -> list[str]:
    return _write_file(ctx, call) + [f"chmod 755 {quote(call.args[0])}"]


_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")


def _is_shell_name(s: str) -> bool:
    return bool(s) and s[0] in _NAME_START and set(s) <= _NAME_CHARS


@macro("import-env", "bake host variables into the layer (exported): NAME[:ALIAS]...; an unset NAME adds nothing",
       "files and environment", 1)
def _import_env(ctx: Context, call: Call) -> list[str]:
    out = []
    for item in call.args:
        name, sep, alias = item.partition(":")
        alias = alias if sep else name
        for n in (name, alias):
            if not _is_shell_name(n):
                raise MacroError(call.where, f"--import-env: {n!r} is not a shell variable name",
                                 hint="names are letters, digits and _, not starting with a digit: NAME[:ALIAS]")
        if name in os.environ:  # unset on the host: nothing to bake, as in the original
            out.append(f"export {alias}={quote(os.environ[name])}")
    return out


@macro("invalidate-layer", "rebuild the current layer on every build", "cache", 0, 0)
def _invalidate_layer(ctx: Context, call: Call) -> list[str]:
    return [f": plash invalidate-layer {os.urandom(16).hex()}"]


@macro("hash-path", "rebuild from here when the files' names, modes or contents change: PATH...", "cache", 1)
def _hash_path(ctx: Context, call: Call) -> list[str]:
    from plash.lang.hashpath import hash_paths

    paths = [ctx.path(p) for p in call.args]
    try:
        digest = hash_paths(paths)
    except OSError as e:
        raise MacroError(call.where, f"--hash-path: cannot read {e.filename}: {e.strerror}") from None
    return [f": plash hash-path {digest}"]


@macro("entrypoint", "the command a plash executable runs: CMD [ARGS...]", "run settings", 1)
def _entrypoint(ctx: Context, call: Call) -> list[str]:
    return [hint("entrypoint", " ".join(quote(a) for a in call.args))]


@macro("entrypoint-script", "write /entrypoint (sh) from LINEs and use it as entrypoint", "run settings", 1)
def _entrypoint_script(ctx: Context, call: Call) -> list[str]:
    lines = ["#!/bin/sh", *call.args]
    return _write_script(ctx, Call("write-script", ("/entrypoint", *lines), call.where)) + [
        hint("entrypoint", "/entrypoint")
    ]


@macro("env", "pass these host variables to containers of this image: NAME...", "run settings", 1)
def _env(ctx: Context, call: Call) -> list[str]:
    return [hint("env", n) for n in call.args]


@macro("env-prefix", "pass host variables starting with PREFIX to containers: PREFIX...", "run settings", 1)
def _env_prefix(ctx: Context, call: Call) -> list[str]:
    return [hint("env-prefix", n) for n in call.args]


@macro("mount", "bind host paths into containers of this image: SRC[:DST]...", "run settings", 1)
def _mount(ctx: Context, call: Call) -> list[str]:
    out = []
    for m in call.args:
        src, sep, dst = m.partition(":")
        out.append(hint("mount", ctx.path(src) + (sep + dst if sep else "")))
    return out


@macro("hint", "a raw hint: NAME [VALUE]", "run settings", 1, 2)
def _hint(ctx: Context, call: Call) -> list[str]:
    return [hint(*call.args)]


# -- including macros -------------------------------------------------------------------


class Located(list):
    """Lines that already carry their own locations: (line, Where) pairs."""


def _include(ctx: Context, words: list, base_dir: str, call: Call) -> Located:
    if ctx.depth > 50:
        raise MacroError(call.where, "macros included too deeply (a loop?)")
    sub = Context(base_dir, ctx.depth + 1)
    sub.pms, sub.stdin_used = ctx.pms, ctx.stdin_used
    out = expand_calls(sub, parse(words))
    ctx.stdin_used = sub.stdin_used
    return Located(out)


# Build files, stdin and URLs of macros are read whole: bounded, so that
# /dev/zero or a hostile server cannot exhaust memory.
MAX_MACRO_TEXT = 16 << 20


def _bounded(text: str | bytes, what: str, where: Where | None) -> None:
    if len(text) > MAX_MACRO_TEXT:
        raise MacroError(where, f"{what} is larger than the {MAX_MACRO_TEXT >> 20} MiB plash reads as macros or shell text")


def read_build_file(path: str, where: Where | None = None) -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read(MAX_MACRO_TEXT + 1)
            _bounded(text, f"build file {path}", where)
            return text
    except IsADirectoryError:
        raise MacroError(where, f"cannot read build file {path}: it is a directory") from None
    except OSError as e:
        raise MacroError(where, f"cannot read build file {path}: {e.strerror}") from None


@macro("eval-file", "include the macros of a build file", "including", 1)
def _eval_file(ctx: Context, call: Call) -> list[str]:
    out = Located()
    for f in call.args:
        path = ctx.path(f)
        out += _include(ctx, words_from_file_text(read_build_file(path, call.where), f), os.path.dirname(path), call)
    return out


@macro("eval-string", "include macros from a string, split like a POSIX shell: --eval-string \"--run 'echo hi'\"",
       "including", 1)
def _eval_string(ctx: Context, call: Call) -> list[str]:
    import shlex  # imports re: only here, off the start path of plash executables

    # Several arguments are one string: a build file line `--eval-string --run 'a b'` arrives
    # split on whitespace, and joining it again lets the quotes pair up as the user wrote them.
    text = " ".join(call.args)
    try:
        words = shlex.split(text)
    except ValueError as e:
        reason = str(e)
        raise MacroError(call.where, f"--eval-string: cannot split {text!r} like a shell: "
                                     f"{reason[:1].lower()}{reason[1:]}") from None
    return _include(ctx, words_from_split(words, f"{call.where}: eval-string"), ctx.base_dir, call)


@macro("eval-stdin", "include macros read from stdin", "including", 0, 0)
def _eval_stdin(ctx: Context, call: Call) -> list[str]:
    return _include(ctx, words_from_file_text(_read_stdin(ctx, call), "<stdin>"), ctx.base_dir, call)


@macro("eval-url", "include macros downloaded from URL", "including", 1)
def _eval_url(ctx: Context, call: Call) -> list[str]:
    import urllib.request

    out = Located()
    for url in call.args:
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                raw = r.read(MAX_MACRO_TEXT + 1)
                _bounded(raw, url, call.where)
                text = raw.decode("utf-8", "surrogateescape")
        except Exception as e:  # urllib raises many kinds
            raise MacroError(call.where, f"--eval-url: cannot fetch {url}: {e}") from None
        out += _include(ctx, words_from_file_text(text, url), ctx.base_dir, call)
    return out


# -- shortcuts ----------------------------------------------------------------------------


def _shortcut(image: str, pm: str) -> Expander:
    def expand(ctx: Context, call: Call) -> list[str]:
        return _source("lxc", image) + _package_manager(ctx, Call(pm, call.args, call.where))

    return expand


for _letter, _image, _pm, _what in (
    ("A", "alpine:edge", "apk", "Alpine edge"),
    ("D", "debian:sid", "apt", "Debian sid"),
    ("U", f"ubuntu:{UBUNTU_LTS}", "apt", "Ubuntu (current LTS)"),
    ("F", f"fedora:{FEDORA_CURRENT}", "dnf", "Fedora (current)"),
    ("C", f"centos:{CENTOS_CURRENT}", "yum", "CentOS (current stream)"),
    ("R", "archlinux:current", "pacman", "Arch Linux"),
    ("G", "gentoo:current", "emerge", "Gentoo"),
):
    MACROS[_letter] = Macro(_letter, _shortcut(_image, _pm), f"{_what} ({_image}) and --{_pm} PACKAGES", "shortcuts")


# -- expansion -------------------------------------------------------------------------------


def suggest(name: str) -> str | None:
    """The nearest macro name, for `did you mean`."""
    import difflib

    close = difflib.get_close_matches(name, list(MACROS), n=1, cutoff=0.6)
    return close[0] if close else None


def expand_call(ctx: Context, call: Call) -> list[str]:
    m = MACROS.get(call.name)
    if m is None and call.name in ctx.pms:
        return _package_manager(ctx, call)
    if m is None:
        near = suggest(call.name)
        extra = f" (did you mean '{near}'?)" if near else ""
        raise MacroError(call.where, f"unknown macro '{call.name}'{extra}", hint="plash --help-macros lists them")
    n = len(call.args)
    if n < m.min_args:
        raise MacroError(call.where, f"--{call.name} needs at least {m.min_args} argument(s), got {n}")
    if m.max_args is not None and n > m.max_args:
        raise MacroError(call.where, f"--{call.name} takes at most {m.max_args} argument(s), got {n}")
    for a in call.args:
        if "\n" in a and call.name not in ("run", "x", "write-file", "write-script", "entrypoint-script",
                                             "eval-string", "inline"):
            raise MacroError(call.where, f"--{call.name}: arguments must not contain newlines")
    return m.func(ctx, call)


def expand_calls(ctx: Context, calls: list[Call]) -> list[tuple[str, Where]]:
    """Expand calls to (line, where) pairs: each line knows the macro it came from."""
    out: list[tuple[str, Where]] = []
    for call in calls:
        lines = expand_call(ctx, call)
        if isinstance(lines, Located):
            out += lines
        else:
            out += [(line, call.where) for line in lines]
    return out


def expand_argv(argv: list[str], base_dir: str | None = None) -> list[tuple[str, Where]]:
    """The located script lines that command-line macros expand to."""
    return expand_calls(Context(base_dir), parse(words_from_argv(argv)))


def expand_file(path: str) -> list[tuple[str, Where]]:
    """The located script lines of a build file (relative paths against its directory)."""
    text = read_build_file(path)
    ctx = Context(os.path.dirname(os.path.abspath(path)))
    return expand_calls(ctx, parse(words_from_file_text(text, path)))


def script_text(lines: list[tuple[str, Where]]) -> str:
    return "\n".join(line for line, _ in lines)


def help_text() -> str:
    """Every macro with a one-line description, grouped."""
    groups: dict[str, list[Macro]] = {}
    for m in MACROS.values():
        groups.setdefault(m.group, []).append(m)
    out = []
    for group, ms in groups.items():
        out.append(f"{group}:")
        for m in ms:
            flag = f"-{m.name}" if len(m.name) == 1 else f"--{m.name}"
            out.append(f"  {flag:<22} {m.help}")
    return "\n".join(out)
