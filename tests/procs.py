"""Child processes for tests: run in a process group of their own, killed whole when they overrun."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


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
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(), err.decode())
