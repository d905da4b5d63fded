"""Render engine events on stderr: `--progress tty|plain|json`, or nothing but failures with --quiet.

    tty    rich rows: one per download (bar, bytes, rate, ETA), one per build
           step (spinner, the step, its latest output line, elapsed time);
           the rows go when the run ends, what was done stays as lines above
    plain  one line per start and end, and the steps' output lines: for logs
    json   one JSON object per event and line: kind, job, layer, bytes,
           total, line, status, elapsed (the README lists the kinds)
    auto   tty on a terminal, else plain (docker buildx's convention)

Child programs' carriage-return progress (apt, pip, curl) is shown as its
latest state, never glued to the next line. With prefix (warm, where steps
run side by side), each output line names its step, and a failed step's
last lines are shown again, together, at the end.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from plash.engine.events import Event

if TYPE_CHECKING:
    from plash.engine.events import Emit


# how a transfer is told: (going on, done, what the end says), by the events' text
VERBS = {"": ("downloading", "downloaded", ", verified"), "pack": ("packing", "packed", ""),
         "upload": ("uploading", "uploaded", "")}
MODES = ("auto", "tty", "plain", "json")
KEPT_LINES = 30  # of each step, shown again when it fails


def latest(line: str) -> str:
    """A line of output as a terminal would leave it: the state after its last carriage return."""
    if "\r" not in line:
        return line
    parts = [p for p in line.split("\r") if p.strip()]
    return parts[-1] if parts else ""


class Sink:
    """What every renderer shares: each step's last lines and start time, and which steps failed."""

    wants_output = True  # build steps' output is read and shown through the renderer

    def __init__(self, prefix: bool = False) -> None:
        self.prefix = prefix
        self.kept: dict[str, collections.deque[str]] = {}
        self.started: dict[str, float] = {}
        self.failed: list[str] = []

    def track(self, e: Event) -> float:
        """Bookkeeping of e; the seconds since its job started (0 for a start)."""
        now = time.monotonic()
        if e.kind in ("download-start", "step-start"):
            self.started[e.label] = now
            if e.kind == "step-start":
                self.kept[e.label] = collections.deque(maxlen=KEPT_LINES)
            return 0.0
        if e.kind == "step-output":
            self.kept.setdefault(e.label, collections.deque(maxlen=KEPT_LINES)).append(latest(e.text))
        if e.kind == "step-done" and e.done and e.text != "cancelled":
            self.failed.append(e.label)
        since = self.started.get(e.label, now)
        if e.kind in ("download-done", "step-done"):
            self.started.pop(e.label, None)
        return now - since

    def failures(self) -> list[str]:
        """The lines that show the failed steps' last output again, grouped by step."""
        out = []
        for label in self.failed:
            lines = [line for line in self.kept.get(label, ()) if line]
            if lines:
                out.append(f"plash: the last {len(lines)} line(s) of {label}, which failed:")
                out.extend(f"  {line}" for line in lines)
        return out

    def __call__(self, e: Event) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def ended(e: Event) -> str:
    """How a step-done event's step ended: built, failed or cancelled."""
    return "cancelled" if e.text == "cancelled" else "failed" if e.done else "built"


class Quiet(Sink):
    """Nothing but what a failure needs: a failed step's last lines."""

    def __call__(self, e: Event) -> None:
        self.track(e)
        if e.kind == "step-done" and ended(e) == "failed":
            _write("\n".join(self.failures()[-(KEPT_LINES + 1):]))
            self.failed.clear()


class Plain(Sink):
    """One line per start and end, and the steps' output: for logs and CI."""

    def __call__(self, e: Event) -> None:
        secs = self.track(e)
        if e.kind == "download-start":
            size = f" ({e.total / 1e6:.1f} MB)" if e.total else ""
            _write(f"plash: {VERBS.get(e.text, VERBS[''])[0]} {e.label}{size}")
        elif e.kind == "download-done":
            _, done, end = VERBS.get(e.text, VERBS[""])
            _write(f"plash: {done} {e.label} ({e.done / 1e6:.1f} MB in {secs:.1f}s{end})")
        elif e.kind == "note":
            _write(f"plash: {e.label}")
        elif e.kind == "step-start":
            _write(f"plash: building {e.label}")
        elif e.kind == "step-output":
            _write(f"[{e.label}] {latest(e.text)}" if self.prefix else latest(e.text))
        elif e.kind == "step-done":
            _write(f"plash: {ended(e)} {e.label} ({secs:.1f}s)")

    def close(self) -> None:
        if self.prefix and self.failed:
            _write("\n".join(self.failures()))


class Json(Sink):
    """One JSON object per line on stderr, for CI systems."""

    def __call__(self, e: Event) -> None:
        secs = self.track(e)
        step = e.kind.startswith("step-")
        record: dict[str, Any] = {"kind": e.kind.value, "job": e.label,
                                  "layer": e.label.split(" (", 1)[0] if step else None}
        if e.kind.startswith("download-"):
            record.update(bytes=e.done, total=e.total, action=e.text or "download")
        if e.kind == "step-start":
            record["line"] = e.text  # what the step runs, its first line
        elif e.kind == "step-output":
            record["line"] = latest(e.text)
        elif e.kind == "note":
            record["line"] = e.label
            record["job"] = None
        if e.kind in ("download-done", "step-done"):
            record["status"] = {"built": "done"}.get(ended(e), ended(e)) if step else "done"
            record["elapsed"] = round(secs, 3)
            if step:
                record["exit"] = e.done
        _write(json.dumps(record, ensure_ascii=False))


class Rich(Sink):
    """Live rows per download (bytes, rate, ETA) and per build step (spinner, latest line, elapsed)."""

    def __init__(self, prefix: bool = False) -> None:
        super().__init__(prefix)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            ProgressColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.text import Text

        class Only(ProgressColumn):
            """A column shown for one kind of row (a download's bytes mean nothing for a step)."""

            def __init__(self, column: ProgressColumn, kind: str) -> None:
                super().__init__()
                self.column, self.kind = column, kind

            def render(self, task: Any) -> Any:
                return self.column.render(task) if task.fields.get("kind") == self.kind else Text("")

        self.console = Console(stderr=True)
        self.progress = Progress(Only(SpinnerColumn(), "step"), TextColumn("{task.description}"),
                                 Only(BarColumn(), "transfer"), Only(DownloadColumn(), "transfer"),
                                 Only(TransferSpeedColumn(), "transfer"), Only(TimeRemainingColumn(), "transfer"),
                                 Only(TimeElapsedColumn(), "step"), console=self.console, transient=True)
        self.tasks: dict[str, Any] = {}
        self.progress.start()

    def print(self, line: str, style: str | None = None) -> None:
        self.progress.console.print(line, highlight=False, markup=False, style=style, soft_wrap=True)

    def __call__(self, e: Event) -> None:
        secs = self.track(e)
        if e.kind == "download-start":
            verb = f"{e.text} " if e.text else ""
            self.tasks[e.label] = self.progress.add_task(verb + _short(e.label), total=e.total, kind="transfer")
        elif e.kind == "download-progress" and e.label in self.tasks:
            self.progress.update(self.tasks[e.label], completed=e.done, total=e.total)
        elif e.kind == "download-done":
            if e.label in self.tasks:
                self.progress.remove_task(self.tasks.pop(e.label))
            _, done, end = VERBS.get(e.text, VERBS[""])
            self.print(f"plash: {done} {_short(e.label)} ({e.done / 1e6:.1f} MB in {secs:.1f}s{end})")
        elif e.kind == "note":
            self.print(f"plash: {e.label}")
        elif e.kind == "step-start":
            self.print(f"plash: building {e.label}")
            self.tasks[e.label] = self.progress.add_task(self._row(e.label, e.text), total=None, kind="step")
        elif e.kind == "step-output":
            line = latest(e.text).expandtabs()
            if line:
                self.print(f"[{e.label}] {line}" if self.prefix else line, style="dim")
            if e.label in self.tasks:
                self.progress.update(self.tasks[e.label], description=self._row(e.label, line))
        elif e.kind == "step-done" and e.label in self.tasks:
            self.progress.remove_task(self.tasks.pop(e.label))  # its output is above the rows
            if self.prefix or ended(e) != "built":
                self.print(f"plash: {ended(e)} {e.label} ({secs:.1f}s)")

    def _row(self, label: str, line: str) -> str:
        width = max(20, self.console.width - len(label) - 40)
        line = line.strip()
        return f"{label}: {line[:width]}" if line else label

    def close(self) -> None:
        self.progress.stop()  # the live rows go (transient); the cursor comes back
        if self.prefix and self.failed:
            for line in self.failures():
                self.print(line)


def _write(text: str) -> None:
    if text:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _short(url: str) -> str:
    return url if len(url) <= 48 else "…" + url[-47:]


def mode(quiet: bool = False, progress: str | None = None) -> str:
    """The renderer to use: quiet, or --progress's mode (else PLASH_PROGRESS's, else auto) resolved."""
    if quiet:
        return "quiet"
    chosen = progress or os.environ.get("PLASH_PROGRESS", "") or "auto"
    if chosen not in MODES:
        chosen = "auto"  # a bad PLASH_PROGRESS is not worth failing a build for
    if chosen == "auto":
        return "tty" if sys.stderr.isatty() and os.environ.get("TERM") != "dumb" else "plain"
    return chosen


def renderer(quiet: bool = False, progress: str | None = None, prefix: bool = False) -> Emit:
    """The event sink for this process's stderr."""
    kinds: dict[str, type[Sink]] = {"quiet": Quiet, "tty": Rich, "plain": Plain, "json": Json}
    return kinds[mode(quiet, progress)](prefix)
