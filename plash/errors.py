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
