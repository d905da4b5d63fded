"""Launcher children's command lines, and a step server started before trio loads.

Without trio (or anything heavy) on purpose: a build that has steps to
run starts its first step server (plash.launch.steps) here, before it
imports trio, so that the server's start (a Python start, its imports,
the user namespace) runs on the other core while trio's import runs on
this one. The trio run's pool (plash.engine.stepservers) adopts it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

# `python -m plash.launch` without the site module (2 ms a child), given this process's
# import path instead (plash, and the decompressors the launcher's unpacker imports),
# and without runpy (6 ms): plash.launch.__main__ is imported as a module and entered.
# -I: nothing from the current directory (`-c` would put it first on the path, so a
# json.py or plash/ where the user builds would be imported) and no PYTHON* variables.
_BOOT = (f"import sys; sys.path += [p for p in {[p for p in sys.path if os.path.isabs(p)]!r} if p not in sys.path]; "
         "from plash.launch.__main__ import entry; entry()")


def launcher(*args: str) -> list[str]:
    """A launcher child's command line; it dies with this process (see plash.launch)."""
    return [sys.executable, "-I", "-S", "-c", _BOOT, "--parent", str(os.getpid()), *args]


def spawn_server() -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Start a step server: its process (a session of its own) and this side of its socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        proc = subprocess.Popen(launcher("serve", str(theirs.fileno())), stdin=subprocess.DEVNULL,
                                stdout=sys.stderr.fileno(), pass_fds=(theirs.fileno(),), start_new_session=True)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, ours


early: list[tuple[subprocess.Popen[bytes], socket.socket]] = []  # started by prestart, not yet adopted


def prestart() -> None:
    """Start a step server now, for the trio run about to begin (see the module's doc)."""
    if not early:
        early.append(spawn_server())


def drop_early() -> None:
    """End a server started early that no run adopted (the build ended before its steps)."""
    import contextlib
    import signal

    while early:
        proc, sock = early.pop()
        sock.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # it has run no step: nothing to finish
        proc.wait()
