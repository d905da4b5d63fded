"""Quoting words for the shell, and reading back words plash quoted (hints, entrypoints)."""

from __future__ import annotations

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
