"""Events the engine emits; only plash/ui renders them."""

from __future__ import annotations

import enum


class Kind(enum.StrEnum):
    """The closed set of event kinds (string-valued, so a renderer may compare with the text)."""

    # a transfer: text "" for a download, "pack" for a layer packed, "upload" for a blob sent
    DOWNLOAD_START = "download-start"  # label: what is downloaded; total: its size if known
    DOWNLOAD_PROGRESS = "download-progress"  # done bytes of total
    DOWNLOAD_DONE = "download-done"  # done: the bytes received, verified
    NOTE = "note"  # label: one line for the user
    # a build step: label names it ("layer N/M (FILE:LINE)"), unique among the run's steps
    STEP_START = "step-start"  # text: the first line of what it runs
    STEP_OUTPUT = "step-output"  # text: one line of its output (carriage returns and all)
    STEP_DONE = "step-done"  # done: its exit status (0: it worked); text "cancelled": stopped, not failed


class Event:
    """One thing that happened: kind, what it is about (label), progress (done of total), a text line."""

    __slots__ = ("done", "kind", "label", "text", "total")

    def __init__(self, kind: Kind, label: str, done: int = 0, total: int | None = None, text: str = "") -> None:
        self.kind, self.label, self.done, self.total, self.text = kind, label, done, total, text

    def __repr__(self) -> str:
        return f"Event({self.kind.value!r}, {self.label!r}, {self.done}, {self.total}, {self.text!r})"


def note(text: str) -> Event:
    return Event(Kind.NOTE, text)


TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Emit = Callable[[Event], None]  # where the engine sends its events
