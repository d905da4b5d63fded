"""plash.__main__.entry: the process ends without the interpreter's teardown, and loses nothing by it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as it is for users
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=env)


@pytest.mark.parametrize(("words", "status"), [(["--version"], 0), (["no-such-command"], 1), ([], 1),
                                               (["images", "--no-such-flag"], 1)])
def test_the_exit_status_is_the_commands(words: list[str], status: int) -> None:
    p = python(f"from plash.__main__ import entry; entry({words!r})")
    assert p.returncode == status, p.stderr
    assert "Traceback" not in p.stderr


def version_after(prelude: str) -> subprocess.CompletedProcess[str]:
    """`plash --version` through entry(), in a python that ran prelude first; it must succeed."""
    p = python(f"import atexit, sys, threading\nfrom plash.__main__ import entry\n{prelude}entry(['--version'])\n")
    assert p.returncode == 0, p.stderr
    return p


def test_atexit_callbacks_still_run_and_output_is_flushed() -> None:
    p = version_after("atexit.register(lambda: sys.stdout.write('from atexit\\n'))\n"
                      "sys.stdout.write('unflushed ')\n")
    assert p.stdout.startswith("unflushed ")
    assert p.stdout.endswith("from atexit\n")


def test_a_thread_that_is_not_a_daemon_gets_a_normal_exit() -> None:
    # the thread waits for the main thread to end, then writes: a quick exit would cut it off
    p = version_after("def late():\n"
                      "    threading.main_thread().join()\n"
                      "    sys.stdout.write('after the main thread\\n')\n"
                      "threading.Thread(target=late).start()\n")
    assert p.stdout.endswith("after the main thread\n")


def test_a_reader_that_is_gone_is_a_failure_without_a_traceback() -> None:
    # stdout is a pipe whose reader has closed it: the last flush fails
    code = ("import os, sys; from plash.__main__ import quick_exit\n"
            "sys.stdout.write('lost')\n"
            "r, w = os.pipe(); os.close(r); os.dup2(w, 1)\n"
            "quick_exit(0)\n")
    p = python(code)
    assert p.returncode == 1
    assert p.stderr == ""


def test_an_exit_message_is_printed_as_python_prints_it() -> None:
    p = python("from plash.__main__ import quick_exit; quick_exit('a message')")
    assert p.returncode == 1
    assert p.stderr.strip() == "a message"
