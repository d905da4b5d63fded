"""Fixtures of the in-process engine tier: a real store in tmp_path, tarballs made here, an event log.

Everything runs in the test process on trio (pytest-trio); the only child
processes are the launcher's unpacker and rmtree, which the engine starts
itself. Every store lives in tmp_path, so two suites can run at once.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from plash.engine.events import Event
from plash.store.layout import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A fresh store with its skeleton made."""
    return Store(str(tmp_path / "store")).ensure()


class EventLog:
    """An Emit that keeps every event, to look at afterwards."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind.value for e in self.events]


@pytest.fixture
def emit() -> EventLog:
    return EventLog()


def make_tar(files: dict[str, bytes], mode: str = "w") -> bytes:
    """A tarball (mode "w", "w:gz", ...) holding regular files, their parent dirs made implicitly."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), 0o644
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


@pytest.fixture
def tar_of():
    return make_tar


def store_snapshot(store: Store) -> list[tuple[str, str]]:
    """Every path of the store with its link target: equal before and after means nothing changed."""
    out = []
    for dirpath, dirnames, filenames in os.walk(store.path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out.append((os.path.relpath(p, store.path), os.readlink(p) if os.path.islink(p) else ""))
    return sorted(out)


@pytest.fixture
def snapshot():
    return store_snapshot


def open_fds() -> dict[int, str]:
    """The file descriptors this process has open, with what each is (the listing's own is gone by then)."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


def leaked(before: dict[int, str], after: dict[int, str]) -> dict[int, str]:
    return {fd: what for fd, what in after.items() if before.get(fd) != what}


class Fds:
    """Open file descriptors now, and those opened since."""

    now = staticmethod(open_fds)
    leaked = staticmethod(leaked)


@pytest.fixture
def fds() -> Fds:
    return Fds()
