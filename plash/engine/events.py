"""Events the engine emits; only plash/ui renders them."""

from __future__ import annotations


class Event:
    __slots__ = ("kind", "label", "detail")

    def __init__(self, kind: str, label: str, detail: str = "") -> None:
        self.kind = kind  # "start", "done", "fail"
        self.label = label
        self.detail = detail

    def __repr__(self) -> str:
        return f"Event({self.kind!r}, {self.label!r}, {self.detail!r})"
