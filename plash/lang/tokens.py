"""Words -> tokens -> macro calls (SPEC 4.1), for command lines and build files alike.

Pure functions over small immutable values; every token knows where it came
from, so errors can say `FILE:LINE:` or `argument N:`.
"""

from __future__ import annotations

# its home is plash.errors; re-exported (the `as` form) for older imports from here
from plash.errors import MacroError as MacroError


class Where(tuple[str | None, int]):
    """Where a word came from: (file, line), or (None, position) on the command line.

    Typed tuples rather than NamedTuple/dataclasses: importing typing or
    dataclasses would slow the start of every plash executable.
    """

    __slots__ = ()

    def __new__(cls, file: str | None, line: int) -> Where:
        return tuple.__new__(cls, (file, line))

    @property
    def file(self) -> str | None:
        return self[0]

    @property
    def line(self) -> int:
        return self[1]

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.file is not None else f"argument {self.line}"


class Word(tuple[str, Where]):
    """A word and where it came from."""

    __slots__ = ()

    def __new__(cls, text: str, where: Where) -> Word:
        return tuple.__new__(cls, (text, where))

    @property
    def text(self) -> str:
        return self[0]

    @property
    def where(self) -> Where:
        return self[1]


class Call(tuple[str, tuple[str, ...], Where]):
    """A macro call: its name, its arguments, and where it was written."""

    __slots__ = ()

    def __new__(cls, name: str, args: tuple[str, ...], where: Where) -> Call:
        return tuple.__new__(cls, (name, args, where))

    @property
    def name(self) -> str:
        return self[0]

    @property
    def args(self) -> tuple[str, ...]:
        return self[1]

    @property
    def where(self) -> Where:
        return self[2]


def words_from_argv(argv: list[str], offset: int = 1) -> list[Word]:
    return [Word(a, Where(None, i + offset)) for i, a in enumerate(argv)]


def words_from_file_text(text: str, filename: str) -> list[Word]:
    """One word per line; the first line is skipped when it starts with #!.

    A line that starts a macro (`--apk git curl`) has its arguments split on
    whitespace; that split happens here so the line number stays attached.
    """
    out: list[Word] = []
    for n, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        if n == 1 and line.startswith("#!"):
            continue
        where = Where(filename, n)
        if "\0" in line:
            raise MacroError(where, "a NUL byte (no argument or shell line can hold one)",
                             hint="is this a build file? binary data cannot be passed this way")
        if line.startswith("-") and not line.startswith("--\\") and not line.startswith("--#"):
            head, *rest = line.split()
            out.append(Word(head, where))
            out.extend(Word("--\\ " + r, where) for r in rest)  # literal arguments
        else:
            out.append(Word(line, where))
    return out


def words_from_split(words: list[str], origin: str) -> list[Word]:
    """Words already split (eval-string's shell split), numbered from 1 after their origin."""
    return [Word(w, Where(origin, i)) for i, w in enumerate(words, 1)]


def _has_space(word: str) -> bool:
    return any(c.isspace() for c in word)


def _is_letter_group(word: str) -> bool:
    return len(word) > 1 and word[0] == "-" and word[1] != "-" and word[1:].isalpha()


def parse(words: list[Word]) -> list[Call]:
    """Group words into macro calls, or raise a located MacroError."""
    calls: list[tuple[str, list[str], Where]] = []
    for text, where in words:
        if text == "" or text.startswith("--#"):
            continue
        if text.startswith("--\\"):
            literal = text[3:]
            if literal.startswith(" "):
                literal = literal[1:]
            arg = literal
        elif _has_space(text):
            # macro names never contain spaces: `--run 'echo hi'` in one word is an argument
            # (of --eval-string, say), as it would be after a shell split
            arg = text
        elif text.startswith("--"):
            name = text[2:]
            if not name:
                raise MacroError(where, "empty macro name '--'", hint="write '--\\' for an empty argument")
            calls.append((name, [], where))
            continue
        elif _is_letter_group(text):
            for letter in text[1:]:
                calls.append((letter, [], where))
            continue
        elif text.startswith("-") and len(text) > 1:
            raise MacroError(where, f"invalid macro {text!r}", hint="macros are --name or single letters like -A")
        else:
            arg = text
        if not calls:
            raise MacroError(where, f"argument {arg!r} before any macro",
                             hint="start with a macro such as --from or --run")
        calls[-1][1].append(arg)
    return [Call(n, tuple(a), w) for n, a, w in calls]


# -- quoting words for the shell, and reading back words plash quoted (hints, entrypoints) --

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_")


def quote(s: str) -> str:
    """Shell-quote one word (no shlex: it imports re, and this is on the start path)."""
    if s and set(s) <= _SAFE:
        return s
    return "'" + s.replace("'", "'\"'\"'") + "'"


def unquote_words(text: str) -> tuple[str, ...]:
    """Split words written with quote (hint arguments, an entrypoint) back into a tuple."""
    out: list[str] = []
    word: list[str] = []
    i, quoted, has = 0, False, False
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "'":
                quoted = False
            else:
                word.append(c)
        elif c == "'":
            quoted, has = True, True
        elif c == '"' and text.startswith('"\'"', i):
            word.append("'")
            i += 2
        elif c == " ":
            if word or has:
                out.append("".join(word))
            word, has = [], False
        else:
            word.append(c)
        i += 1
    if word or has:
        out.append("".join(word))
    return tuple(out)
