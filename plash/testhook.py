"""A pause point for tests of race windows, off unless PLASH_TEST_PAUSE names it.

PLASH_TEST_PAUSE=NAME:FIFO makes plash, on reaching the point NAME, write
"NAME [DETAIL]\\n" into FIFO (blocking until the test opens it for reading), then read
from FIFO until the test writes a byte back. The test thereby acts exactly
inside the window, with no timing. Imports nothing: it is on `plash run`'s path.
"""

from __future__ import annotations

import os


def pause(name: str, detail: str = "") -> None:
    wanted = os.environ.get("PLASH_TEST_PAUSE")
    if not wanted or wanted.partition(":")[0] != name:
        return
    fifo = wanted.partition(":")[2]
    with open(fifo, "w") as f:
        f.write(f"{name} {detail}".rstrip() + "\n")
    with open(fifo, "rb") as f:
        f.read(1)
