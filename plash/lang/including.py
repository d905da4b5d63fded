"""Reading macros from elsewhere: build files, and the macros that include a file, a string, stdin or a URL."""

from __future__ import annotations

import os

from plash.errors import MacroError
from plash.lang.expand import MAX_MACRO_TEXT, Context, Located, check_size, expand_calls, macro
from plash.lang.tokens import Call, parse, words_from_file_text, words_from_split

TYPE_CHECKING = False  # typing itself is not imported: it slows plash's start
if TYPE_CHECKING:
    from plash.lang.tokens import Where, Word

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
