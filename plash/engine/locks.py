"""Locks of the engine: one per cache key across processes, and the in-use marks of a build."""

from __future__ import annotations

import fcntl
import os

import trio

from plash.engine.events import note
from plash.errors import NoImage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.events import Emit
    from plash.store.layout import Store


# the key locks this process holds: waiting for one of them is waiting for another job of this run
_held: set[str] = set()


class KeyLock:
    """An exclusive lock per cache key across processes (flock), polled so that trio can cancel it.

    Whoever holds it makes the layer or import; the others wait, then look
    the key up again and reuse what was made.
    """

    def __init__(self, store: Store, key: str, emit: Emit, what: str) -> None:
        self.path = store.key_lock(key)
        self.emit, self.what = emit, what
        self.fd = -1

    async def __aenter__(self) -> None:
        told = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if not told:
                    who = "another job of this run" if self.path in _held else "another plash process"
                    self.emit(note(f"waiting for {who} making {self.what}"))
                    told = True
                await trio.sleep(0.05)
                continue
            try:  # the holder before us unlinks the file when done: is ours still the one in place?
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                _held.add(self.path)
                return
            os.close(fd)

    async def __aexit__(self, *exc: object) -> None:
        # unlink before unlocking, so the lock file does not outlive its use
        _held.discard(self.path)
        try:
            os.unlink(self.path)
        finally:
            os.close(self.fd)


class Holds:
    """The in-use marks (Store.hold) a build keeps on every image it made or uses, until it ends.

    So `rm` and `shrink` cannot take a finished layer from under the next
    step, nor the base image before its first step starts.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.fds: list[int] = []

    def image(self, image: int) -> bool:
        """Hold an existing image; False if it is gone (or went while locking)."""
        try:
            self.fds.append(self.store.hold(image))
        except NoImage:
            return False
        return True

    def staged(self, staged: str) -> None:
        self.fds.append(self.store.hold_staged(staged))

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
