"""Render engine events on stderr: rich bars on a terminal, plain lines otherwise, nothing with --quiet."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from plash.engine.events import Event

if TYPE_CHECKING:
    from plash.engine.events import Emit


# how a transfer is told: (going on, done, what the end says), by the events' text
VERBS = {"": ("downloading", "downloaded", ", verified"), "pack": ("packing", "packed", ""),
         "upload": ("uploading", "uploaded", "")}


class Plain:
    """One line per start and end: for logs and CI."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    def __call__(self, e: Event) -> None:
        if e.kind == "download-start":
            self.started[e.label] = time.monotonic()
            size = f" ({e.total / 1e6:.1f} MB)" if e.total else ""
            sys.stderr.write(f"plash: {VERBS.get(e.text, VERBS[''])[0]} {e.label}{size}\n")
        elif e.kind == "download-done":
            secs = time.monotonic() - self.started.pop(e.label, time.monotonic())
            _, done, end = VERBS.get(e.text, VERBS[""])
            sys.stderr.write(f"plash: {done} {e.label} ({e.done / 1e6:.1f} MB in {secs:.1f}s{end})\n")
        elif e.kind == "note":
            sys.stderr.write(f"plash: {e.label}\n")
        sys.stderr.flush()


class Rich:
    """Live bars per download (bytes, rate, ETA) and a row per build step with its latest output."""

    wants_output = True  # build steps' output is read and shown through this display

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        self.console = Console(stderr=True)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=self.console, transient=False)
        self.tasks: dict[str, Any] = {}
        self.progress.start()

    def __call__(self, e: Event) -> None:
        if e.kind == "download-start":
            verb = f"{e.text} " if e.text else ""
            self.tasks[e.label] = self.progress.add_task(verb + _short(e.label), total=e.total)
        elif e.kind == "download-progress" and e.label in self.tasks:
            self.progress.update(self.tasks[e.label], completed=e.done, total=e.total)
        elif e.kind == "download-done" and e.label in self.tasks:
            self.progress.update(self.tasks[e.label], completed=e.done, total=e.done)
        elif e.kind == "note":
            self.progress.console.print(f"plash: {e.label}", highlight=False, markup=False)
        elif e.kind == "step-output":
            line = e.text.expandtabs()
            self.progress.console.print(line, highlight=False, markup=False, style="dim")
            row = f"{e.label}: {line[:60]}"
            if e.label in self.tasks:
                self.progress.update(self.tasks[e.label], description=row)
            else:
                self.tasks[e.label] = self.progress.add_task(row, total=None)
        elif e.kind == "step-done" and e.label in self.tasks:
            self.progress.remove_task(self.tasks.pop(e.label))  # its output is above the bars

    def close(self) -> None:
        self.progress.stop()


def _short(url: str) -> str:
    return url if len(url) <= 48 else "…" + url[-47:]


def renderer(quiet: bool) -> Emit:
    """The event sink for this process's stderr."""
    if quiet:
        return lambda e: None
    if sys.stderr.isatty():
        return Rich()
    return Plain()
