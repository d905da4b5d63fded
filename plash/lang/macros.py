"""Every macro of SPEC 4.2, and the entry points that expand a command line or a build file.

The engine (registry, context, expansion, hints) is plash.lang.expand; the
build file reader and every macro, grouped by kind, are here. Expansion is pure except where a macro's meaning is to read the
world (eval-file, eval-stdin, import-env, hash-path, ...).
"""

from __future__ import annotations

import os

from plash.errors import MacroError
from plash.lang import caches
from plash.lang.expand import (
    HINT,
    MACROS,
    MAX_MACRO_TEXT,
    PACKAGE_MANAGERS,
    Context,
    Located,
    Macro,
    check_size,
    expand_calls,
    help_text,
    hint,
    macro,
    script_text,
)
from plash.lang.tokens import Call, parse, quote, words_from_argv, words_from_file_text, words_from_split

TYPE_CHECKING = False  # typing itself is not imported: it slows plash's start
if TYPE_CHECKING:
    from plash.lang.expand import Expander, LocatedLine
    from plash.lang.tokens import Where, Word

# importable from here, where they were before the engine had a module of its own
__all__ = ["HINT", "MACROS", "expand_argv", "expand_file", "help_text", "quote", "read_build_file", "script_text"]

# -- reading macros from elsewhere: build files, and the macros that include a file, a string, stdin or a URL

MAX_DEPTH = 50


def read_build_file(path: str, where: Where | None = None) -> str:
    """The text of a build file, or a MacroError located at where (the including call, if any)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read(MAX_MACRO_TEXT + 1)
            check_size(text, f"build file {path}", where)
            return text
    except IsADirectoryError:
        raise MacroError(where, f"cannot read build file {path}: it is a directory") from None
    except OSError as e:
        raise MacroError(where, f"cannot read build file {path}: {e.strerror}") from None


def read_url(url: str, flag: str, where: Where) -> str:
    """The text at url, for the macro flag (`--eval-url`) written at where."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            raw: bytes = r.read(MAX_MACRO_TEXT + 1)
            check_size(raw, url, where)
            return raw.decode("utf-8", "surrogateescape")
    except Exception as e:  # urllib raises many kinds
        raise MacroError(where, f"{flag}: cannot fetch {url}: {e}") from None


def _include(ctx: Context, words: list[Word], base_dir: str, call: Call) -> Located:
    if ctx.depth > MAX_DEPTH:
        raise MacroError(call.where, "macros included too deeply (a loop?)")
    sub = Context(base_dir, ctx.depth + 1)
    sub.pms, sub.stdin_used = ctx.pms, ctx.stdin_used
    out = expand_calls(sub, parse(words))
    ctx.stdin_used = sub.stdin_used
    return Located(out)


@macro("eval-file", "include the macros of a build file", "including", 1)
def _eval_file(ctx: Context, call: Call) -> Located:
    out = Located()
    for f in call.args:
        path = ctx.path(f)
        out += _include(ctx, words_from_file_text(read_build_file(path, call.where), f), os.path.dirname(path), call)
    return out


@macro("eval-string", "include macros from a string, split like a POSIX shell: --eval-string \"--run 'echo hi'\"",
       "including", 1, multiline=True)
def _eval_string(ctx: Context, call: Call) -> Located:
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
def _eval_stdin(ctx: Context, call: Call) -> Located:
    return _include(ctx, words_from_file_text(ctx.take_stdin(call), "<stdin>"), ctx.base_dir, call)


@macro("eval-url", "include macros downloaded from URL", "including", 1)
def _eval_url(ctx: Context, call: Call) -> Located:
    out = Located()
    for url in call.args:
        out += _include(ctx, words_from_file_text(read_url(url, "--eval-url", call.where), url), ctx.base_dir, call)
    return out


# -- image sources ---------------------------------------------------------------

# Current releases for the distro shortcuts (LXC image server names).
UBUNTU_LTS = "noble"
FEDORA_CURRENT = "42"
CENTOS_CURRENT = "9-Stream"


def _source(kind: str, *args: str) -> list[str]:
    return [hint("image", " ".join([kind, *args]))]


@macro("from", "base image: an image id, or DISTRO:RELEASE from the LXC image server", "image sources", 1, 1,
       aliases=("f",))
def _from(ctx: Context, call: Call) -> list[str]:
    (arg,) = call.args
    if arg.isdigit() or arg.isdecimal() or arg.isnumeric():
        return _from_id(ctx, call)
    if ":" not in arg:
        suggested = RELEASES.get(arg.lower())
        raise MacroError(call.where, f"--from needs an image id or DISTRO:RELEASE, got {arg!r}",
                         hint=f"give a release: --from {suggested}" if suggested else
                         "give a release, e.g. --from alpine:edge or --from debian:bookworm; a name of "
                         "plash map: --from-map NAME")
    return _source("lxc", arg)


# A release to suggest when --from names a distribution only (the LXC image server's names).
RELEASES = {"alpine": "alpine:edge", "debian": "debian:bookworm", "ubuntu": f"ubuntu:{UBUNTU_LTS}",
            "fedora": f"fedora:{FEDORA_CURRENT}", "centos": f"centos:{CENTOS_CURRENT}",
            "archlinux": "archlinux:current", "arch": "archlinux:current", "opensuse": "opensuse:tumbleweed",
            "rockylinux": "rockylinux:9", "almalinux": "almalinux:9", "voidlinux": "voidlinux:current"}


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
       "but not its /tmp", "build steps", aliases=("x",), multiline=True)
def _run(ctx: Context, call: Call) -> list[str]:
    return list(call.args)


@macro("inline", "shell code: all arguments joined by spaces as one line", "build steps", multiline=True)
def _inline(ctx: Context, call: Call) -> list[str]:
    return [" ".join(call.args)] if call.args else []


@macro("run-stdin", "shell code read from stdin", "build steps", 0, 0)
def _run_stdin(ctx: Context, call: Call) -> list[str]:
    # the newline that ends the input (and any empty lines after the code) is not a line of code:
    # `printf 'a\n'` and `printf 'a'` are the same script, and the same layer
    text = ctx.take_stdin(call).rstrip("\n")
    return text.split("\n") if text else []


@macro("layer", "start a new layer; --layer MACRO A B gives each argument its own layer of MACRO", "build steps",
       aliases=("l",))
def _layer(ctx: Context, call: Call) -> list[str] | Located:
    if not call.args:
        return [hint("layer")]
    name, *args = call.args
    # located: the lines of an including MACRO (eval-string, ...) keep their own locations
    out = Located()
    for a in args:
        out.append((hint("layer"), call.where))
        out += expand_calls(ctx, [Call(name, (a,), call.where)])
    return out


# -- package managers ----------------------------------------------------------------


for _pm in PACKAGE_MANAGERS:
    MACROS[_pm] = Macro(_pm, caches.install, f"install packages with {_pm}", "package managers")


@macro("defpm", "define a package manager macro NAME; {} in TEMPLATE lines becomes the packages", "package managers", 2)
def _defpm(ctx: Context, call: Call) -> list[str]:
    name, *template = call.args
    ctx.pms[name] = tuple(template)
    return []


# -- files and environment -------------------------------------------------------------


@macro("write-file", "write lines to a file in the image: PATH LINE...", "files and environment", 1, multiline=True)
def _write_file(ctx: Context, call: Call) -> list[str]:
    path, *lines = call.args
    if not lines:
        return [f": > {quote(path)}"]
    return ["printf '%s\\n' " + " ".join(quote(x) for x in lines) + f" > {quote(path)}"]


@macro("write-script", "write an executable script (mode 755): PATH LINE...", "files and environment", 1,
       multiline=True)
def _write_script(ctx: Context, call: Call) -> list[str]:
    return [*_write_file(ctx, call), f"chmod 755 {quote(call.args[0])}"]


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


# -- cache -------------------------------------------------------------------------------


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


# -- run settings: hints for the containers of the image -----------------------------------


@macro("entrypoint", "the command a plash executable runs: CMD [ARGS...]", "run settings", 1)
def _entrypoint(ctx: Context, call: Call) -> list[str]:
    return [hint("entrypoint", " ".join(quote(a) for a in call.args))]


@macro("entrypoint-script", "write /entrypoint (sh) from LINEs and use it as entrypoint", "run settings", 1,
       multiline=True)
def _entrypoint_script(ctx: Context, call: Call) -> list[str]:
    lines = ["#!/bin/sh", *call.args]
    return [*_write_script(ctx, Call("write-script", ("/entrypoint", *lines), call.where)),
            hint("entrypoint", "/entrypoint")]


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


# -- shortcuts: an LXC image and its package manager in one letter -------------------------


def _shortcut(image: str, pm: str) -> Expander:
    def expand(ctx: Context, call: Call) -> list[str]:
        return [*_source("lxc", image), *caches.install(ctx, Call(pm, call.args, call.where))]

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


# -- entry points ----------------------------------------------------------------------------


def expand_argv(argv: list[str], base_dir: str | None = None) -> list[LocatedLine]:
    """The located script lines that command-line macros expand to."""
    return expand_calls(Context(base_dir), parse(words_from_argv(argv)))


def expand_file(path: str) -> list[LocatedLine]:
    """The located script lines of a build file (relative paths against its directory)."""
    text = read_build_file(path)
    ctx = Context(os.path.dirname(os.path.abspath(path)))
    return expand_calls(ctx, parse(words_from_file_text(text, path)))
