"""Launcher entry for the engine, which cannot fork (trio runs): python -m plash.launch OP ARGS.

    serve FD        the step server: run the build steps the engine sends on
                    the socket FD (plash.launch.steps)
    finish STAGING  remove launcher residue and the work dir of a staging dir
    rmtree PATH     delete a tree that may hold files of subordinate ids
    unpack DIR      unpack a tarball from stdin into DIR, in the user namespace
    unpack-oci DIR  the same for an OCI layer (whiteouts become overlayfs whiteouts)
    pack DIR CLAMP  write the layer DIR to stdout as an OCI layer tarball, in the user namespace

With `--errors FD` (after --parent), a failure is written to FD as JSON
{"message", "hint"} instead of to stderr: the engine reads it as data.

With `--parent PID` first (the plash engine), a launcher ends when that
process is gone, and so do the steps a server runs, so that a plash killed
with SIGKILL leaves nothing running on. (Not PR_SET_PDEATHSIG: it fires
when the *thread* that forked exits, and trio forks from worker threads.)
"""

from __future__ import annotations

import os
import sys

from plash.errors import PlashError, os_message, report

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def _with_namespace_fallback(work: Callable[[], None]) -> None:
    try:
        work()
    except PermissionError:
        from plash.launch import userns

        if userns.privileged():
            raise

        userns.enter(mount_ns=False)
        work()


def die_with(engine: int) -> None:
    """End this process when the engine does (a thread with a pidfd: the engine forks from threads,
    so PR_SET_PDEATHSIG would fire when that thread ends, not the process)."""
    import select
    import threading

    watch = os.pidfd_open(engine)
    if os.getppid() != engine:
        os._exit(1)

    def wait() -> None:
        select.select([watch], [], [])
        os._exit(1)

    threading.Thread(target=wait, daemon=True).start()


def main(argv: list[str]) -> int:
    errors = -1
    try:
        parent = 0
        if argv[:1] == ["--parent"]:
            parent, argv = int(argv[1]), argv[2:]
        if argv[:1] == ["--errors"]:  # a pipe: a failure goes there as JSON (message, hint)
            errors, argv = int(argv[1]), argv[2:]
        op, *args = argv
        if op == "serve":
            from plash.launch.steps import serve

            serve(int(args[0]), parent)
        elif op == "finish":
            from plash.store.staging import Staging

            _with_namespace_fallback(Staging.at(args[0]).finish)
        elif op in ("unpack", "unpack-oci"):
            from plash.launch import userns
            from plash.store.unpack import unpack

            userns.enter(mount_ns=False)  # inside, ownership from the tarball can be kept
            if parent:
                die_with(parent)
            unpack(sys.stdin.buffer, args[0], oci=op == "unpack-oci")
        elif op == "pack":
            from plash.launch import userns
            from plash.store.packing import pack

            userns.enter(mount_ns=False)  # inside, owners read as the container sees them
            if parent:
                die_with(parent)
            pack(args[0], sys.stdout.fileno(), int(args[1]))
        elif op == "rmtree":
            from plash.store.rmtree import rmtree

            _with_namespace_fallback(lambda: rmtree(args[0]))
        else:
            sys.stderr.write(f"plash.launch: unknown operation {op}\n")
            return 2
    except PlashError as e:
        if errors < 0 or not _report_to(errors, e.message, e.hint):
            report(e)
        return e.exit_code
    except OSError as e:
        if errors < 0 or not _report_to(errors, os_message(e), None):
            sys.stderr.write(f"plash error: {os_message(e)}\n")
        return 1
    return 0


def _report_to(fd: int, message: str, hint: str | None) -> bool:
    """Send a failure to the engine as data; False if the pipe is gone."""
    import json

    try:
        os.write(fd, json.dumps({"message": message, "hint": hint}).encode())
    except OSError:
        return False
    return True


def entry() -> None:
    """Run main on this process's arguments and exit (how the engine starts a launcher child)."""
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # not sys.exit: an unpacker's reader thread may still be blocked on stdin


if __name__ == "__main__":
    entry()
