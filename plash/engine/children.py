"""Child processes of the engine: launcher children, host tools, and how their errors come back.

The engine runs trio, so it must not fork or unshare itself: work inside
namespaces happens in `python -m plash.launch` children. Each child runs in
its own session, so cancelling kills its whole process group. A launcher
child reports a failure as data (message and hint, JSON on a pipe of its
own), not as text the engine would have to parse from its stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import trio

from plash.engine.launcher import launcher
from plash.errors import PlashError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from plash.store.staging import Staging


async def _kill_group(proc: trio.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


async def run_child(argv: list[str], stdin: int | None = None, stdout: int | None = None,
                    on_line: Callable[[str], None] | None = None, errors: bool = False) -> int:
    """Run a child in its own session; kill its whole group if cancelled; return its exit status.

    stdout defaults to this process's stderr (a child's output is never a
    result). With on_line, its stdout and stderr are read line by line
    instead (only stderr when stdout is given). With errors, argv is a launcher's and a failure it reports
    (message and hint) is raised here as a PlashError.
    """
    report_r = report_w = -1
    crash: list[str] = []
    if errors:
        report_r, report_w = os.pipe()
        at = argv.index("--parent") + 2  # after the launcher's `--parent PID`
        argv = [*argv[:at], "--errors", str(report_w), *argv[at:]]
    try:
        try:
            if on_line is None:
                proc = await trio.run_process(argv, stdin=subprocess.DEVNULL if stdin is None else stdin,
                                              stdout=sys.stderr.fileno() if stdout is None else stdout, check=False,
                                              capture_stderr=errors, start_new_session=True,
                                              deliver_cancel=_kill_group, pass_fds=(report_w,) if errors else ())
                code: int = proc.returncode
                crash = (proc.stderr or b"").decode(errors="replace").strip().splitlines()
            else:
                code = await _run_lines(argv, on_line, stdout)
        finally:
            if errors:
                os.close(report_w)
        if not errors:
            return code
        raw = await trio.to_thread.run_sync(os.read, report_r, 1 << 20)
    finally:
        if errors:
            os.close(report_r)
    if code and raw:
        data = json.loads(raw)
        raise PlashError(data["message"], hint=data.get("hint"))
    if code:  # no report: it crashed; its last words are all there is
        raise PlashError(crash[-1] if crash else f"exit status {code}")
    return code


async def _run_lines(argv: list[str], on_line: Callable[[str], None], stdout: int | None = None) -> int:
    """Run argv with its output read line by line (with stdout given, that is where stdout goes: stderr is read)."""
    proc = await trio.lowlevel.open_process(argv, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE if stdout is None else stdout,
                                            stderr=subprocess.STDOUT if stdout is None else subprocess.PIPE,
                                            start_new_session=True)
    stream = proc.stdout if stdout is None else proc.stderr
    assert stream is not None
    try:
        await read_lines(stream, on_line)
        return int(await proc.wait())
    except BaseException:
        with trio.CancelScope(shield=True):
            await _kill_group(proc)
            await proc.wait()
        raise
    finally:
        await stream.aclose()


async def read_lines(stream: trio.abc.ReceiveStream, on_line: Callable[[str], None]) -> None:
    """Call on_line with each line of stream (without its newline) until its end."""
    pending = b""
    while chunk := await stream.receive_some(65536):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            on_line(line.decode(errors="replace"))
    if pending:
        on_line(pending.decode(errors="replace"))


async def unpack_child(root: str, stdin: int, what: str | Callable[[], str], oci: bool = False) -> None:
    """Unpack a tarball from stdin into root in a launcher child; its error, if any, names `what`."""
    try:
        await run_child(launcher("unpack-oci" if oci else "unpack", root), stdin=stdin, errors=True)
    except PlashError as e:
        raise PlashError(f"{what if isinstance(what, str) else what()}: {e.message}", hint=e.hint) from None


async def discard(staging: Staging) -> None:
    """Delete a staging dir even while being cancelled (shielded).

    Once its image is published, what is left is a few empty dirs and small
    files of ours: removed without a launcher process. Otherwise a launcher
    child deletes it, in the user namespace when files of other ids are in it.
    """
    with trio.CancelScope(shield=True):
        if staging.published is not None and await trio.to_thread.run_sync(staging.discard_published):
            return
        await run_child(launcher("rmtree", staging.path))
