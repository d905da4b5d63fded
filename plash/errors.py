"""The error tree of plash; imports nothing of plash.

    PlashError              message + optional hint, exit status 1
    ├── UsageError          bad command-line form ("usage: plash ..." first)
    ├── MacroError          a macro or build file error, located (FILE:LINE: or argument N:)
    ├── FetchError          a download failed (the URL named; status: the HTTP status, if any)
    │   └── DigestMismatch  the bytes (or a catalogue) disagree with the expected digest
    ├── NoImage             an image argument that names no image
    ├── StoreError          the store is missing, corrupt or unwritable
    ├── LaunchError         the kernel refused a namespace, mount or exec
    ├── UnpackError         a tarball is unreadable or unsafe
    └── ExitStatus          not an error message: exit with this status
                            (the message was already shown by a child)
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


class PlashError(Exception):
    """An error shown to the user as one line: `plash error: <message>`."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def lines(self) -> list[str]:
        out = [f"plash error: {self.message}"]
        if self.hint:
            out.append(f"hint: {self.hint}")
        return out


class UsageError(PlashError):
    """A command used with the wrong arguments."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage

    def lines(self) -> list[str]:
        return [f"usage: {self.usage}", f"plash error: {self.message}"]


class MacroError(PlashError):
    """An error located in a build file or on the command line (where: a plash.lang.tokens.Where)."""

    def __init__(self, where: object | None, message: str, hint: str | None = None) -> None:
        super().__init__(f"{where}: {message}" if where else message, hint)
        self.where = where


class FetchError(PlashError):
    """A download failed; the message names the URL, status is the HTTP status when there was one."""

    def __init__(self, message: str, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


class DigestMismatch(FetchError):
    """What arrived, or what a catalogue lists, is not what the given digest says."""


class NoImage(PlashError):
    """An image id that does not exist or is not a valid id."""


class StoreError(PlashError):
    """The store cannot be read or changed as needed."""


class LaunchError(PlashError):
    """Setting up namespaces, mounts or the container process failed."""


class UnpackError(PlashError):
    """A tarball could not be unpacked safely."""


class ExitStatus(PlashError):
    """Leave with a given status; whatever had to be said was said already."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exit status {code}")
        self.exit_code = code

    def lines(self) -> list[str]:
        return []


def os_message(e: OSError) -> str:
    """An OSError as the tail of a one-line message: `No space left on device: /path`."""
    text = e.strerror or str(e)
    return f"{text}: {e.filename}" if e.filename else text


def report(err: PlashError) -> None:
    """Write an error's lines to stderr (used where rich is not loaded)."""
    import sys

    for line in err.lines():
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _distance(a: str, b: str) -> int:
    """Edits (insert, delete, replace, swap two neighbours) that turn a into b."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            d = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                d = min(d, prev2[j - 2] + 1)
            cur.append(d)
        prev2, prev = prev, cur
    return prev[-1]


def no_such_command(word: str, names: Iterable[str]) -> PlashError:
    """The error for a word that names no command, with the nearest of names as a hint."""
    limit = 1 if len(word) <= 4 else 2
    near = min(names, key=lambda c: _distance(word, c))
    hint = f"did you mean '{near}'?" if _distance(word, near) <= limit else "plash help lists the commands"
    return PlashError(f"no such command: {word or repr(word)}", hint=hint)
