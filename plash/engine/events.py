"""Events the engine emits; only plash/ui renders them."""

from __future__ import annotations


class Event:
    """kind: download-start, download-progress, download-done, note, step-output or step-done."""

    __slots__ = ("kind", "label", "done", "total", "text")

    def __init__(self, kind: str, label: str, done: int = 0, total: int | None = None, text: str = "") -> None:
        self.kind, self.label, self.done, self.total, self.text = kind, label, done, total, text

    def __repr__(self) -> str:
        return f"Event({self.kind!r}, {self.label!r}, {self.done}, {self.total}, {self.text!r})"
