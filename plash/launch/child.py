"""Do work inside plash's namespaces in a forked child (the caller stays outside)."""

from __future__ import annotations

import os
import sys

from plash import config
from plash.errors import PlashError, os_message, report

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def in_namespace(work: Callable[[], None], mount_ns: bool = False) -> int:
    """Fork; the child enters the namespaces and calls work(); return its exit status.

    The caller must be single-threaded (no trio running). Errors in the child
    are reported there, as one line, and give exit status 1.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            import signal

            from plash.launch import syscalls, userns

            # plash is single-threaded here, so the signal comes when it dies
            # (SIGKILL included): no unpacker goes on writing into a staging
            # dir that `clean` already counts as abandoned.
            syscalls.die_with_parent(signal.SIGKILL)
            if os.getppid() != parent:
                os._exit(1)  # gone before the signal was armed

            userns.enter(mount_ns=mount_ns)
            work()
        except PlashError as e:
            report(e)
            code = e.exit_code
        except KeyboardInterrupt:
            code = 130
        except BaseException as e:  # the child must never return into the caller's code
            if config.debug():
                import traceback

                traceback.print_exc()
            sys.stderr.write(f"plash error: {os_message(e) if isinstance(e, OSError) else e}\n")
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return wait_exit(pid)


def wait_exit(pid: int) -> int:
    """A child's exit status (-N when signal N killed it), waited for through Ctrl-C.

    The child got the same SIGINT; the caller must not go on before it has ended.
    """
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        except (InterruptedError, KeyboardInterrupt):
            continue


def rmtree_anywhere(path: str) -> None:
    """Delete a tree that may hold files owned by subordinate ids."""
    from plash.store.rmtree import rmtree

    try:
        rmtree(path)
        return
    except OSError:
        from plash.launch.userns import privileged

        if privileged():
            raise
    code = in_namespace(lambda: rmtree(path))
    if code != 0:
        raise PlashError(f"cannot delete {path}")
