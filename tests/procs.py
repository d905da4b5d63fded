"""Child processes for tests: run in a process group of their own, killed whole when they overrun;
found in the test's own process tree; waited for by their exits."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from plash.launch.steps import proc_stat


def run_group(argv: list[str], timeout: float = 60, stdin: bytes | None = None, hold_stdin: bool = False,
              cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run argv in a process group of its own, killed whole when it overruns (or when done)."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, cwd=cwd)
    assert proc.stdin is not None
    try:
        if hold_stdin:  # write, then keep the pipe open while waiting
            proc.stdin.write(stdin or b"")
            proc.stdin.flush()
            proc.wait(timeout=timeout)
        out, err = proc.communicate(None if hold_stdin else stdin, timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(), err.decode())


# -- the test's own process tree ------------------------------------------------
# Tests look for processes below the Popen they started, read from /proc: a
# machine-wide `pgrep -f` would also find another test suite's processes.


def descendants(pid: int) -> list[int]:
    """Every live process below pid, parents before their children (from /proc, not a machine-wide pgrep)."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        fields = proc_stat(name) if name.isdigit() else None  # None: gone meanwhile
        if fields and fields[0] not in (b"Z", b"X"):
            kids.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for kid in sorted(kids.get(todo.pop(0), [])):
            out.append(kid)
            todo.append(kid)
    return out


def cmdline(pid: int) -> list[str]:
    """The process's argv; [] once it has ended (or for a zombie)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            data = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in data.split(b"\0")[:-1]]


def wait_for_descendant(pid: int, match: Callable[[list[str]], bool], timeout: float = 30) -> int:
    """The first process below pid whose argv satisfies match, once there is one.

    No event tells that a process has started, so this polls, but only the
    tree of pid, and with a deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        for kid in descendants(pid):
            if match(cmdline(kid)):
                return kid
        if time.monotonic() > deadline:
            raise AssertionError(f"no process below {pid} matches ({[cmdline(k) for k in descendants(pid)]})")
        time.sleep(0.02)


def own_pid(proc: subprocess.Popen, timeout: float = 30) -> int:
    """The pid of the command proc runs: proc's own, or under `runuser -u USER -- ...` the child runuser forks."""
    if proc.args[0] != "runuser":
        return proc.pid
    return wait_for_descendant(proc.pid, lambda argv: argv[:1] not in ([], ["runuser"]), timeout)


class Exits:
    """pidfds of running processes, to wait on their exits (an event, not a poll).

    Opened while the processes run, so a pid used again later is no concern.
    """

    def __init__(self, pids: list[int]) -> None:
        self.fds: dict[int, int] = {}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # ended already
                self.fds[pid] = os.pidfd_open(pid)

    def wait(self, timeout: float) -> list[int]:
        """Wait until every process has ended, at most timeout seconds; return those still running."""
        deadline = time.monotonic() + timeout
        pending = dict(self.fds)
        while pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select(list(pending.values()), [], [], max(0.0, left))
            for fd in ready:
                del pending[next(p for p, f in pending.items() if f == fd)]
            if left <= 0:
                break
        return sorted(pending)

    def running(self) -> list[int]:
        """Those still running now (no wait)."""
        return self.wait(0)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}

    def __enter__(self) -> Exits:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
